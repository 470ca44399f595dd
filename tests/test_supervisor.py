"""The service's seams: the connect loop's Supervisor and the Hooks bundle, on their own."""

from __future__ import annotations

import asyncio
import logging

import pytest

import bgws
from bgws._engine.delivery import Delivery
from bgws._engine.hooks import Hooks
from bgws._engine.inbox import Inbox
from bgws._engine.observe import Counters
from bgws._engine.router import Router
from bgws._engine.supervisor import Supervisor
from bgws.backoff import Backoff
from bgws.machine import Machine, State, classify_error
from bgws.message import Codec
from bgws.testing import Server
from bgws.transport import Transport

from .conftest import Errors, fast_config


class Host:
    """What a supervisor talks back to: it records every announced move and remembered value."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.moves: list[tuple[State, State, float | None]] = []
        self.remembered: list[str] = []
        self._changed = asyncio.Event()

    async def announce(self, old: State, reason: BaseException | None, delay: float | None) -> None:
        self.moves.append((old, self.machine.state, delay))
        self._changed.set()

    async def remember(self, key: str, value: str) -> None:
        self.remembered.append(key)

    async def until(self, state: State, count: int = 1) -> None:
        async with asyncio.timeout(5.0):
            while sum(new is state for _, new, _ in self.moves) < count:
                self._changed.clear()
                await self._changed.wait()


def _hooks(errors: bgws.ErrorHandler, counters: Counters) -> Hooks:
    return Hooks(
        message=None,
        notifier=None,
        auth=None,
        lifecycle=None,
        errors=errors,
        heartbeat=None,
        plugins=[],
        counters=counters,
        log=logging.getLogger("bgws.test-supervisor"),
    )


async def test_supervisor_connects_reconnects_and_stops_through_its_callables(
    bgws_server: Server, transport: Transport, errors: Errors
) -> None:
    """The supervisor keeps a link up and tells its host each move only through announce."""
    config = fast_config(bgws_server.url)
    codec = Codec(config.codec, type_field=config.type_field, id_field=config.id_field)
    counters = Counters()
    hooks = _hooks(errors, counters)
    machine = Machine(
        Backoff(config.initial_reconnect_delay, config.max_reconnect_delay),
        max_attempts=None,
        min_uptime=config.min_uptime,
    )
    router = Router(hooks.report)
    inbox = Inbox(codec, router, config.inbox_size, config.inbox_max_bytes)
    delivery = Delivery(config, codec, hooks.report_soon, None)
    await delivery.open()
    router.configure(
        plugins=hooks.chain, message_handler=None, heartbeat=None, interceptor=delivery
    )
    host = Host(machine)
    supervisor = Supervisor(
        config,
        machine,
        transport,
        inbox,
        codec,
        delivery,
        hooks,
        classify=classify_error,
        ssl_context=None,
        announce=host.announce,
        remember=host.remember,
    )
    machine.start()
    machine.connect()
    supervisor.start()
    try:
        await host.until(State.CONNECTED)
        assert supervisor.link is not None
        assert counters.connected_since is not None
        assert host.remembered == ["last_connected_at"]
        bgws_server.drop()
        await host.until(State.CONNECTED, count=2)
        assert [new for _, new, _ in host.moves] == [
            State.CONNECTED,
            State.BACKING_OFF,
            State.CONNECTING,
            State.CONNECTED,
        ]
        assert host.moves[1][2] is not None  # the backoff delay is announced with the move
        assert counters.reconnects == 1
        assert isinstance(counters.last_error, bgws.ConnectionClosed)
    finally:
        machine.stop()
        await supervisor.stop(1.0)
        await delivery.close()
    assert supervisor.link is None
    assert counters.connected_since is None
    assert errors.seen == []


class Raising(bgws.ErrorHandler):
    """An error handler that fails every time."""

    async def on_error(self, error: bgws.BgwsError) -> None:
        raise RuntimeError("the error handler broke")


async def test_hooks_count_reports_and_survive_a_failing_error_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A report is counted and kept as the last error even when the error handler raises."""
    counters = Counters()
    hooks = _hooks(Raising(), counters)
    error = bgws.HandlerError("boom")
    with caplog.at_level(logging.ERROR, logger="bgws.test-supervisor"):
        hooks.report_soon(error)
        await hooks.settle()
    assert (counters.errors, counters.last_error) == (1, error)
    assert not hooks.side_tasks
    assert "the error handler raised while reporting HandlerError" in caplog.text


async def test_a_hook_that_raises_is_reported_under_its_handlers_name(errors: Errors) -> None:
    """Hooks.hook calls a handler's method directly and names it in the HandlerError."""

    class Lifecycle(bgws.LifecycleHandler):
        async def on_service_started(self) -> None:
            raise ValueError("no")

    hooks = _hooks(errors, Counters())
    await hooks.hook(Lifecycle().on_service_started)
    (reported,) = errors.of(bgws.HandlerError)
    assert "Lifecycle.on_service_started" in str(reported)
    assert isinstance(reported.__cause__, ValueError)
