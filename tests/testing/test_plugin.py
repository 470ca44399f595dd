"""The bgws pytest plugin and its bgws_server and bgws_clock fixtures."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import bgws
import bgws.testing.pytest_plugin
from bgws.testing import Server, VirtualClock

from ._client import connect


async def test_bgws_server_fixture_is_started(bgws_server: Server) -> None:
    """The bgws_server fixture yields a started server a client can reach."""
    assert bgws_server.is_serving
    async with connect(bgws_server.url):
        await bgws_server.wait_for_connections(1)


async def test_bgws_server_fixture_is_configurable(bgws_server: Server) -> None:
    """The fixture's server can be configured inside the test, e.g. to echo."""
    bgws_server.echo = True
    async with connect(bgws_server.url) as client:
        client.send_text("back")
        (frame,) = await client.wait_data(1)
        assert frame.text == "back"


async def test_bgws_clock_fixture_drives_a_service(
    bgws_server: Server, bgws_clock: VirtualClock
) -> None:
    """The bgws_clock fixture is a VirtualClock: an hour of backoff passes in a moment."""
    bgws_server.on_handshake = lambda handshake: 503
    config = bgws.Config(
        app_name="t",
        url=bgws_server.url,
        storage="memory",
        initial_reconnect_delay="1h",
        max_reconnect_delay="1h",
    )
    async with bgws.Service(config, clock=bgws_clock) as service:
        await service.wait_for(bgws.State.BACKING_OFF, timeout=5.0)
        assert len(bgws_server.handshakes) == 1
        await bgws_clock.advance(3600.0)
        assert len(bgws_server.handshakes) >= 2


def test_plugin_loads_without_pytest_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pytest-asyncio the plugin still imports, and defines no fixture."""
    monkeypatch.setitem(sys.modules, "pytest_asyncio", None)  # makes the import fail
    path = Path(bgws.testing.pytest_plugin.__file__)
    spec = importlib.util.spec_from_file_location("_bgws_plugin_without_asyncio", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert not hasattr(module, "bgws_server")
    assert module.__all__ == []


def test_plugin_is_import_light() -> None:
    """Loading the plugin does not import the server or its connection module."""
    assert bgws.testing.pytest_plugin.__all__ == ["bgws_server", "bgws_clock"]
    heavy = ("bgws.testing._server", "bgws.testing._connection")
    code = (
        f"import sys, bgws.testing.pytest_plugin; print([m for m in {heavy!r} if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == "[]"
