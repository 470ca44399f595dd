"""One bgws service against one hostile server, reused across fuzz cases: a case per connection.

The service runs with a SQLite outbox holding :data:`QUEUED` messages that the server never
acknowledges, so they stay in the outbox and are sent again on every connection. Each case
waits for the service's next connection, sends the case's bytes (then a close frame, unless
the case cuts the stream short), and when the service has dropped that link checks:

* the service did not crash: it is not ``FAILED`` or ``CLOSED`` and it connects again;
* every handler call got a message the case really sent, unchanged, in order, within the
  size limit, and nothing after the first broken rule;
* the outbox is intact: the queued messages are all still there, and what the client sent on
  the connection is those messages and nothing else.

The harness keeps its own event loop, so hypothesis's (synchronous) examples can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import bgws
from bgws.testing import Frames, HostileConnection, HostileServer

from ._budget import Figures
from ._wire_cases import MAX_MESSAGE_SIZE, Built, Expected, Item, build

__all__ = ["QUEUED", "Harness", "InvalidCalls", "OutboxBroken"]

QUEUED = 3
"""Messages waiting in the outbox during every case."""
CASE_TIMEOUT = 5.0
"""Seconds a case may take to be served and checked."""
LINGER = 0.3
"""Seconds the server waits for the client to close after the case's bytes, then hangs up."""

_DOWN = (bgws.State.FAILED, bgws.State.CLOSED)


class InvalidCalls(AssertionError):
    """A handler got a message the case did not send, changed, or sent after a broken rule."""


class OutboxBroken(AssertionError):
    """The queued messages are not all in the outbox, or something else went out."""


class _Quiet(bgws.ErrorHandler):
    """Counts reported errors by type instead of logging each one."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    async def on_error(self, error: bgws.BgwsError) -> None:
        name = type(error).__name__
        self.counts[name] = self.counts.get(name, 0) + 1


class Harness:
    """A service and a hostile server on a private event loop; :meth:`run` plays one case.

    Args:
        transport: ``"picows"`` or ``"websockets"``.
        folder: where the SQLite outbox lives.
        style: ``"def"`` (a plain catch-all) or ``"async"`` (an ``async def`` catch-all that
            suspends on every other message: driven inline, then finished by the dispatcher).
    """

    def __init__(self, transport: str, folder: Path, style: str = "def") -> None:
        self.transport = transport
        self.style = style
        self.loop = asyncio.new_event_loop()
        self.figures = Figures()
        self.errors = _Quiet()
        self._pending: asyncio.Queue[tuple[Built, asyncio.Future[HostileConnection]]]
        self._server = HostileServer(self._script)
        self._dispatched: list[bgws.Message] = []
        self._links_lost = 0
        self._lost = asyncio.Event()
        self._case = 0
        self._broken: str | None = None
        self._queued_ids: set[Any] = set()
        self.service: bgws.Service | None = None
        self.loop.run_until_complete(self._start(transport, folder))

    async def _start(self, transport: str, folder: Path) -> None:
        self._pending = asyncio.Queue()
        await self._server.start()
        config = bgws.Config(
            app_name="fuzz",
            url=self._server.url,
            transport=transport,
            storage="sqlite",
            storage_path=str(folder / f"fuzz-{transport}.db"),
            ack=bgws.AckPolicy(),  # the server never acks: the queued messages stay
            ack_timeout=600,
            max_message_size=MAX_MESSAGE_SIZE,
            heartbeat_interval=30,
            initial_reconnect_delay=0.001,
            max_reconnect_delay=0.005,
            min_uptime=0,
            connect_timeout=2,
            close_timeout=0.5,
            auth_close_codes=(),
        )
        service = bgws.Service(config, error_handler=self.errors)
        if self.style == "async":
            calls = 0

            async def dispatched(message: bgws.Message) -> None:
                nonlocal calls
                calls += 1
                if calls % 2:
                    await asyncio.sleep(0)  # really suspends: the rest waits behind it
                self._dispatched.append(message)

            service.on()(dispatched)
        else:
            service.on()(self._dispatched.append)
        service.on_state_change(self._watch)
        for n in range(QUEUED):
            self._queued_ids.add(await service.send({"type": "queued", "n": n}))
        self.service = service
        await service.connect()

    def _watch(self, change: bgws.StateChange) -> None:
        if change.old is bgws.State.CONNECTED:
            self._links_lost += 1
            self._lost.set()

    async def _script(self, connection: HostileConnection) -> None:
        """Serve the next case on this connection (the server calls it per connection)."""
        connection.answer()
        built, done = await self._pending.get()
        try:
            for chunk in built.chunks:
                if chunk:
                    connection.send(chunk)
                else:
                    await connection.drain()
            if not built.hang_up:
                connection.send(Frames.close(1000))
            await connection.drain()
            with contextlib.suppress(TimeoutError):
                await connection.wait_gone(timeout=LINGER)
            connection.hang_up()
        finally:
            if not done.done():
                done.set_result(connection)

    def run(self, items: list[Item], figures: Figures) -> None:
        """Play one case and check it, counting into ``figures``.

        Raises:
            InvalidCalls: a handler got data the case did not send as it was.
            OutboxBroken: the outbox lost or gained messages.
            AssertionError: the service crashed, stopped or did not reconnect (now or before).
        """
        self.figures = figures
        if self._broken is not None:
            raise AssertionError(f"the service crashed in an earlier case: {self._broken}")
        self._case += 1
        self.figures.cases += 1
        built = build(items, self._case)
        try:
            self.loop.run_until_complete(self._play(built))
        except (InvalidCalls, OutboxBroken):
            raise
        except (TimeoutError, AssertionError) as exc:  # dead, stuck or stopped: a crash
            self.figures.crashes += 1
            self._broken = f"case {self._case}: {type(exc).__name__}: {exc}"
            raise

    async def _play(self, built: Built) -> None:
        case = self._case
        done: asyncio.Future[HostileConnection] = self.loop.create_future()
        await self._pending.put((built, done))
        async with asyncio.timeout(CASE_TIMEOUT):
            connection = await done
            while self._links_lost < case:
                self._lost.clear()
                await self._lost.wait()
            assert self.service is not None
            await self.service._inbox.wait_idle()  # handlers that suspended have finished
        service = self.service
        assert service is not None
        assert service.state not in _DOWN, f"service is {service.state.name}"
        self._check_dispatched(built, case)
        self._check_outbox(service, connection)

    def _check_dispatched(self, built: Built, case: int) -> None:
        got = [m for m in self._dispatched if _case_of(m) == case]
        stray = [m for m in self._dispatched if _case_of(m) is None]
        invalid = len(stray) + sum(1 for m in got if len(m.raw) > MAX_MESSAGE_SIZE)
        wanted = built.expected
        if [_seen(m) for m in got] != wanted[: len(got)]:
            invalid += max(1, len(got))
        if not built.broken and len(got) != len(wanted):
            invalid += 1
        self._dispatched.clear()
        if invalid:
            self.figures.invalid_handler_calls += invalid
            raise InvalidCalls(
                f"handler calls in case {case}: got {[_seen(m) for m in got]}, "
                f"wanted {wanted} (rule broken: {built.broken}); stray {stray}"
            )

    def _check_outbox(self, service: bgws.Service, connection: HostileConnection) -> None:
        self.figures.outbox_checked += 1
        stats = service.stats
        sent_ids = []
        for received in connection.data_frames:
            with contextlib.suppress(ValueError, TypeError):
                sent_ids.append(json.loads(received.payload)["id"])
        held = stats.queued + stats.in_flight
        if held != QUEUED:
            raise OutboxBroken(f"the outbox holds {held} messages, not {QUEUED}")
        unknown = set(sent_ids) - self._queued_ids
        if unknown:
            raise OutboxBroken(f"the client sent messages that were never queued: {unknown}")
        if len(sent_ids) != len(set(sent_ids)):
            raise OutboxBroken("a queued message went twice on one link")
        self.figures.outbox_intact += 1

    def close(self) -> None:
        """Stop the service and the server and close the loop."""
        try:
            self.loop.run_until_complete(self._stop())
        finally:
            self.loop.close()

    async def _stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
        await self._server.stop()


def _case_of(message: bgws.Message) -> int | None:
    """The case number a dispatched message carries (``None``: not one the cases sent)."""
    data = message.data
    if isinstance(data, dict) and isinstance(data.get("case"), int):
        return int(data["case"])
    if isinstance(data, list) and len(data) == 4 and isinstance(data[1], int):
        return int(data[1])
    if isinstance(data, bytes):
        head = data.split(b":", 1)[0]
        return int(head) if head.isdigit() else None
    return None


def _seen(message: bgws.Message) -> Expected:
    """A dispatched message in the shape of :class:`Expected`."""
    return Expected(message.is_binary, message.data)
