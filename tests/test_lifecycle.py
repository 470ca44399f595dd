"""The service lifecycle: start, connect, stop, hooks in order, and state observation."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

import bgws
from bgws import service as service_module
from bgws._engine import hooks as hooks_module
from bgws.testing import Server

from .conftest import Changes, Errors, ServiceFactory


class Events(bgws.LifecycleHandler, bgws.MessageHandler):
    """Records lifecycle and connection hooks in the order they ran."""

    def __init__(self) -> None:
        self.log: list[str] = []

    async def on_service_started(self) -> None:
        self.log.append("started")

    async def on_service_stopped(self) -> None:
        self.log.append("stopped")

    async def on_state_changed(self, old: object, new: object) -> None:
        self.log.append(f"{old}>{new}")

    def on_connection_established(self) -> None:
        self.log.append("up")

    def on_connection_lost(self) -> None:
        self.log.append("down")


class Lifecycle(bgws.Plugin):
    """A plugin that records its hooks."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def initialize(self) -> None:
        self.log.append("plugin:init")

    def on_service_started(self) -> None:
        self.log.append("plugin:started")

    def on_connection_changed(self, is_connected: bool) -> None:
        self.log.append(f"plugin:{'up' if is_connected else 'down'}")

    def on_service_stopped(self) -> None:
        self.log.append("plugin:stopped")

    def dispose(self) -> None:
        self.log.append("plugin:dispose")


async def test_hooks_run_in_order(bgws_server: Server, make_service: ServiceFactory) -> None:
    """Start, connect, stop: every hook runs once, in a sensible order."""
    events = Events()
    service = make_service(
        bgws_server.url,
        lifecycle_handler=events,
        message_handler=events,
        plugins=[Lifecycle(events.log)],
    )
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
    assert events.log == [
        "plugin:init",
        "started",
        "plugin:started",
        "IDLE>CONNECTING",
        "CONNECTING>CONNECTED",
        "up",
        "plugin:up",
        "CONNECTED>CLOSING",
        "down",
        "plugin:down",
        "plugin:stopped",
        "plugin:dispose",
        "stopped",
        "CLOSING>CLOSED",
    ]
    assert service.state is bgws.State.CLOSED


async def test_entering_does_not_wait_for_the_connection(make_service: ServiceFactory) -> None:
    """async with returns at once even when the server is unreachable; sends queue."""
    async with Server() as server:
        await server.stop()
        service = make_service(server.url)
        async with service:
            assert service.state in (bgws.State.CONNECTING, bgws.State.BACKING_OFF)
            await service.send({"type": "offline"})
            assert service.stats.queued == 1
            with pytest.raises(TimeoutError, match="not CONNECTED"):
                await service.wait_for(bgws.State.CONNECTED, timeout=0.1)


async def test_services_are_single_use(bgws_server: Server, make_service: ServiceFactory) -> None:
    """A stopped service refuses to start, connect or send again; stop twice is fine."""
    service = make_service(bgws_server.url)
    async with service:
        pass
    await service.stop()
    with pytest.raises(bgws.ServiceError, match="starts once"):
        await service.start()
    with pytest.raises(bgws.ServiceClosed):
        await service.connect()
    with pytest.raises(bgws.ServiceClosed):
        await service.send({"type": "late"})


async def test_stop_before_connect(make_service: ServiceFactory) -> None:
    """A service that was started but never connected stops cleanly."""
    service = make_service("ws://127.0.0.1:9/")
    await service.start()
    await service.stop()
    assert service.state is bgws.State.CLOSED


async def test_plugins_are_fixed_at_start(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """Adding a plugin after start raises; before start it is accepted."""
    service = make_service(bgws_server.url)
    service.add_plugin(Lifecycle([]))
    async with service:
        with pytest.raises(bgws.ServiceError, match="before start"):
            service.add_plugin(Lifecycle([]))


async def test_failing_plugin_initialize_stops_start(make_service: ServiceFactory) -> None:
    """A plugin whose initialize raises makes start() raise HandlerError."""

    class Bad(bgws.Plugin):
        def initialize(self) -> None:
            raise OSError("no device")

    service = make_service("ws://127.0.0.1:9/", plugins=[Bad()])
    with pytest.raises(bgws.HandlerError, match=r"Bad\.initialize"):
        await service.start()


async def test_state_changes_iterator(bgws_server: Server, make_service: ServiceFactory) -> None:
    """state_changes() yields every move and ends after CLOSED."""
    service = make_service(bgws_server.url)
    seen: list[tuple[bgws.State, bgws.State]] = []

    async def watch() -> None:
        async for change in service.state_changes():
            seen.append((change.old, change.new))

    watcher = asyncio.ensure_future(watch())
    await asyncio.sleep(0)  # let the iterator register before anything happens
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
    await asyncio.wait_for(watcher, timeout=5)
    S = bgws.State
    assert seen == [
        (S.IDLE, S.CONNECTING),
        (S.CONNECTING, S.CONNECTED),
        (S.CONNECTED, S.CLOSING),
        (S.CLOSING, S.CLOSED),
    ]


async def test_state_callbacks_can_unsubscribe(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """on_state_change returns a function that stops the callbacks."""
    service = make_service(bgws_server.url)
    calls: list[bgws.State] = []
    unsubscribe = service.on_state_change(lambda change: calls.append(change.new))
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        unsubscribe()
    assert calls == [bgws.State.CONNECTING, bgws.State.CONNECTED]


async def test_raising_state_callback_is_reported(
    bgws_server: Server, make_service: ServiceFactory, errors: object
) -> None:
    """A state callback that raises does not break the service."""
    service = make_service(bgws_server.url)

    def bad(change: bgws.StateChange) -> None:
        raise RuntimeError("observer bug")

    service.on_state_change(bad)
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
    assert service.stats.errors >= 2


async def test_stats_snapshot(bgws_server: Server, make_service: ServiceFactory) -> None:
    """stats reports real counters and converts to plain data."""
    service = make_service(bgws_server.url)
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
        await service.send({"type": "a"})
        await bgws_server.wait_for_messages(1)
        stats = service.stats
        assert stats.state is bgws.State.CONNECTED
        assert stats.sent == 1
        assert stats.connected_since is not None
        assert stats.uptime >= 0
        data = stats.to_dict()
    assert data["state"] == "CONNECTED"
    assert data["url"] == bgws_server.url


def test_service_requires_a_config() -> None:
    """Passing something else than a Config is a TypeError."""
    with pytest.raises(TypeError, match=r"bgws\.Config"):
        bgws.Service({"url": "ws://x"})  # type: ignore[arg-type]


async def test_a_service_stopped_before_it_started_cannot_start(
    make_service: ServiceFactory,
) -> None:
    """stop() before start() closes the service for good: start() then raises, nothing runs."""
    service = make_service("ws://127.0.0.1:9/")
    await service.stop()
    assert service.state is bgws.State.CLOSED
    with pytest.raises(bgws.ServiceError):
        await service.start()
    with pytest.raises(bgws.ServiceError):
        service.add_plugin(bgws.Plugin())
    assert service.state is bgws.State.CLOSED


async def test_a_plugin_that_will_not_stop_cannot_hold_the_stop(
    bgws_server: Server,
    make_service: ServiceFactory,
    errors: Errors,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plugin whose ``on_service_stopped`` swallows every cancel (as some client libraries
    do) is reported and left behind after the deadline and the grace; the stop ends, and the
    plugins after it still get their hooks."""
    monkeypatch.setattr(hooks_module, "HOOK_STOP_GRACE", 0.1)
    monkeypatch.setattr(service_module, "HOOK_STOP_GRACE", 0.1)
    release = asyncio.Event()
    later: list[str] = []

    class Stubborn(bgws.Plugin):
        name = "stubborn"

        async def on_service_stopped(self) -> None:
            while not release.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await release.wait()

    class After(bgws.Plugin):
        name = "after"

        async def on_service_stopped(self) -> None:
            later.append("stopped")

    service = make_service(bgws_server.url, plugins=[Stubborn(), After()])
    await service.start()
    await service.connect()
    try:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
        async with asyncio.timeout(5):  # hung for ever before
            await service.stop(timeout=0.2)
        assert service.state is bgws.State.CLOSED
        assert later == ["stopped"]
        (error,) = [e for e in errors.of(bgws.HandlerError) if "did not finish" in str(e)]
        assert "plugin stubborn" in str(error)
    finally:
        release.set()
