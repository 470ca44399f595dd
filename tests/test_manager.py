"""ServiceManager: several services started, watched and stopped together."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import bgws
from bgws.manager import ServiceManager
from bgws.testing import Handshake, Server

from .conftest import ServiceFactory, fast_config

CONNECTED = bgws.State.CONNECTED


def refuse_bad_path(handshake: Handshake) -> int | None:
    """Refuse the upgrade of ``/bad`` with 404 (fatal), accept every other path."""
    return 404 if handshake.path == "/bad" else None


async def test_a_refused_service_leaves_the_other_running(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """One service refused with 404 ends FAILED; the other connects, sends, and reports so."""
    bgws_server.on_handshake = refuse_bad_path
    manager = ServiceManager()
    good = manager.add("good", make_service(bgws_server.url + "good"))
    manager.add("bad", make_service(bgws_server.url + "bad"))
    assert await manager.start() == {}
    await manager.wait_for("bad", bgws.State.FAILED, timeout=5)
    await manager.wait_for("good", CONNECTED, timeout=5)
    await good.send({"type": "still-here"})
    received = await bgws_server.wait_for_messages(1)
    assert received[0].json()["type"] == "still-here"

    status = manager.status()
    assert list(status) == ["good", "bad"]
    assert status["good"].state is CONNECTED
    assert status["good"].stats.sent == 1
    assert status["good"].error is None
    assert status["bad"].state is bgws.State.FAILED
    assert "404" in (status["bad"].stats.last_error or "")

    await manager.stop()
    assert {s.state for s in manager.status().values()} == {bgws.State.CLOSED}
    assert not manager.is_running


async def test_a_corrupt_store_is_reported_and_the_rest_start(
    tmp_path: Path, bgws_server: Server, make_service: ServiceFactory
) -> None:
    """A service that cannot open its store is returned and shown as failed; others run."""
    path = tmp_path / "corrupt.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    manager = ServiceManager(
        {
            "broken": make_service(bgws_server.url, storage="sqlite", storage_path=str(path)),
            "fine": make_service(bgws_server.url),
        }
    )
    async with manager:
        failures = manager.status()
        await manager.wait_for("fine", CONNECTED, timeout=5)
        assert manager.status()["fine"].error is None
    assert failures["broken"].state is bgws.State.CLOSED
    assert (failures["broken"].error or "").startswith("StoreError: ")
    assert manager["fine"].state is bgws.State.CLOSED


async def test_start_returns_the_failures_by_name(
    tmp_path: Path, make_service: ServiceFactory
) -> None:
    """start() returns each service that could not start with its exception."""
    path = tmp_path / "corrupt.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    manager = ServiceManager()
    manager.add(
        "broken", make_service("ws://127.0.0.1:9/", storage="sqlite", storage_path=str(path))
    )
    failures = await manager.start()
    assert list(failures) == ["broken"]
    assert isinstance(failures["broken"], bgws.StoreError)
    await manager.stop()


def test_shared_store_file_is_refused(tmp_path: Path, make_service: ServiceFactory) -> None:
    """Two services that would open the same SQLite file cannot both be added."""
    path = str(tmp_path / "one.sqlite3")
    manager = ServiceManager()
    manager.add("a", make_service("ws://127.0.0.1:9/", storage="sqlite", storage_path=path))
    with pytest.raises(bgws.ConfigError, match="share the store file of 'a'"):
        manager.add("b", make_service("ws://127.0.0.1:9/", storage="sqlite", storage_path=path))
    manager.add("c", make_service("ws://127.0.0.1:9/"))  # memory stores never clash
    manager.add("d", make_service("ws://127.0.0.1:9/"))
    assert manager.names == ["a", "c", "d"]


def test_names_are_checked(make_service: ServiceFactory) -> None:
    """Duplicate and malformed names, and one service under two names, are refused."""
    manager = ServiceManager()
    first = manager.add("chat.eu-1_a", make_service("ws://127.0.0.1:9/"))
    with pytest.raises(bgws.ConfigError, match="already added"):
        manager.add("chat.eu-1_a", make_service("ws://127.0.0.1:9/"))
    with pytest.raises(bgws.ConfigError, match="not a service name"):
        manager.add("chat eu", make_service("ws://127.0.0.1:9/"))
    with pytest.raises(bgws.ConfigError, match="not a service name"):
        manager.add("", make_service("ws://127.0.0.1:9/"))
    with pytest.raises(bgws.ConfigError, match=r"already added as 'chat\.eu-1_a'"):
        manager.add("again", first)
    with pytest.raises(TypeError):
        manager.add("x", object())  # type: ignore[arg-type]
    assert manager.names == ["chat.eu-1_a"]


def test_mapping_view(make_service: ServiceFactory) -> None:
    """Names iterate in insertion order; lookup, ``in`` and ``len`` work; unknown is KeyError."""
    a, b = make_service("ws://127.0.0.1:9/"), make_service("ws://127.0.0.1:9/")
    manager = ServiceManager({"b": b, "a": a})
    assert list(manager) == ["b", "a"]
    assert len(manager) == 2
    assert manager["a"] is a
    assert "b" in manager
    assert "c" not in manager
    with pytest.raises(KeyError):
        manager["c"]


async def test_add_while_running_is_refused_and_remove_stops(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """A running manager refuses add(); remove() stops that service and keeps the others."""
    manager = ServiceManager(
        {"a": make_service(bgws_server.url), "b": make_service(bgws_server.url)}
    )
    async with manager:
        with pytest.raises(bgws.ServiceError, match="running"):
            manager.add("c", make_service(bgws_server.url))
        await manager.wait_for("a", CONNECTED, timeout=5)
        await manager.wait_for("b", CONNECTED, timeout=5)
        removed = await manager.remove("a")
        assert removed.state is bgws.State.CLOSED
        assert manager.names == ["b"]
        assert manager["b"].state is CONNECTED
    with pytest.raises(bgws.ServiceClosed):
        manager.add("c", make_service(bgws_server.url))
    with pytest.raises(bgws.ServiceClosed):
        await manager.start()


async def test_remove_before_start_leaves_the_service_untouched(
    make_service: ServiceFactory,
) -> None:
    """A service removed from a manager that has not started is handed back unstarted."""
    service = make_service("ws://127.0.0.1:9/")
    manager = ServiceManager({"a": service})
    assert await manager.remove("a") is service
    assert service.state is bgws.State.IDLE
    assert len(manager) == 0


async def test_stop_stops_every_service(bgws_server: Server, make_service: ServiceFactory) -> None:
    """Leaving ``async with`` closes every link cleanly."""
    async with ServiceManager({n: make_service(bgws_server.url) for n in "xyz"}) as manager:
        for name in manager:
            await manager.wait_for(name, CONNECTED, timeout=5)
    closed = await bgws_server.wait_for_disconnects(3)
    assert [c.close_code for c in closed] == [1000, 1000, 1000]
    assert all(manager[n].state is bgws.State.CLOSED for n in manager)
    await manager.stop()  # a second stop is harmless


async def test_status_is_redacted_and_json_ready(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """Status records hide credentials in the URL and turn into plain JSON."""
    manager = ServiceManager({"s": make_service(bgws_server.url + "?token=s3cret")})
    async with manager:
        await manager.wait_for("s", CONNECTED, timeout=5)
        record = manager.status()["s"]
    text = json.dumps(record.to_dict())
    assert "s3cret" not in text
    assert "token=***" in record.url
    assert json.loads(text)["state"] == "CONNECTED"
    assert json.loads(text)["name"] == "s"


async def test_manager_runs_on_its_own_thread(bgws_server: Server) -> None:
    """start_in_thread() runs every service on one thread; blocking calls route by name."""
    manager = ServiceManager(
        {
            "a": bgws.Service(fast_config(bgws_server.url + "a")),
            "b": bgws.Service(fast_config(bgws_server.url + "b")),
        }
    )
    handle = manager.start_in_thread(name="bgws-two")
    try:
        assert handle.start_errors == {}
        await asyncio.to_thread(handle.wait_for, "a", CONNECTED, 5)
        await asyncio.to_thread(handle.wait_for, "b", CONNECTED, 5)
        await asyncio.to_thread(handle.send, "b", {"type": "for-b"})
        received = await bgws_server.wait_for_messages(1)
        by_id = {h.connection_id: h.path for h in bgws_server.handshakes}
        assert by_id[received[0].connection_id] == "/b"
        assert {name: s.state for name, s in handle.status().items()} == {
            "a": CONNECTED,
            "b": CONNECTED,
        }
        with pytest.raises(KeyError):
            handle.send("c", {"type": "nowhere"})
    finally:
        await asyncio.to_thread(handle.stop)
    assert not handle.thread.is_alive()
    assert handle.thread.name == "bgws-two"
    assert all(manager[n].state is bgws.State.CLOSED for n in manager)
    with pytest.raises(bgws.ServiceClosed):
        handle.send("a", {"type": "late"})
