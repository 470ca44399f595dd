"""The bgws pytest plugin: the ``bgws_server`` and ``bgws_clock`` fixtures.

Registered through the ``pytest11`` entry point, so it is loaded in every pytest run of anyone
who installs bgws. It therefore imports nothing heavy at load time, and defines the fixture
only when pytest-asyncio is installed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bgws.testing._clock import VirtualClock
    from bgws.testing._server import Server

__all__: list[str] = []

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised by a test that hides pytest_asyncio
    pytest_asyncio = None  # type: ignore[assignment]

if pytest_asyncio is not None:
    __all__ += ["bgws_server", "bgws_clock"]

    @pytest_asyncio.fixture
    async def bgws_server() -> AsyncIterator[Server]:
        """A started :class:`bgws.testing.Server` on 127.0.0.1, stopped after the test.

        Configure it in the test (``bgws_server.echo = True``, ``bgws_server.on_message =
        ...``). At teardown every connection is closed, and an exception raised by a hook
        during the test is re-raised.
        """
        from bgws.testing._server import Server

        async with Server() as server:
            yield server

    @pytest_asyncio.fixture
    async def bgws_clock() -> VirtualClock:
        """A fresh :class:`bgws.testing.VirtualClock`: pass it as ``bgws.Service(config,
        clock=bgws_clock)`` and move time on with ``await bgws_clock.advance(seconds)``."""
        from bgws.testing._clock import VirtualClock

        return VirtualClock()
