"""Rotation: a link that reaches ``max_connection_age`` is replaced before the server's cap.

Servers of the exchange kind end every connection after a fixed time (Binance: 24 hours). A
link that is simply cut there loses what arrives while the service reconnects. With
``Config.max_connection_age`` set below that cap, :class:`Rotation` replaces the link first:

1. it opens a new link to the same endpoint, with fresh credentials from the auth handler;
2. it writes the resume request and the subscriptions on the new link; the old link is
   written to no more, and the outbox waits;
3. while the old link goes on being dispatched, it waits (at most ``close_timeout``) until
   the new link has delivered its first frame (the subscriptions are live) and the old link
   has answered what was sent on it (acks of the messages in flight, replies to requests),
   so the server sees the old link's messages before any of the new link's;
4. it switches the dispatch and the writer: the old link's frames are dropped from now on,
   the new link's (held since its handshake) are dispatched, without those the old link
   already dispatched, and the outbox drains on the new link;
5. it closes the old link with a close handshake (1000).

Nothing is dispatched twice: with a :class:`~bgws.ResumePolicy` the sequence numbers drop
what both links carried; without one, a frame held on the new link whose payload the old link
already delivered during the overlap is dropped (each copy once), for a short grace after the
switch too. Nothing is sent twice without its id: a message in flight that the old link did
not acknowledge in time is sent again by the ack timer with the same id, as after any
reconnect. The machine stays ``CONNECTED`` throughout; a rotation that fails (the new link
cannot be opened, or dies at once) keeps the old link and is tried again after
``initial_reconnect_delay``; if the old link goes first (the cap came early, or the service
stops), the new link is dropped and the service reconnects as after any loss.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..config import Config
from ..errors import BgwsError, LinkError
from ..message import Codec
from ..transport import Link, Transport
from .clock import SYSTEM_CLOCK, Clock
from .connect import Connection, Screen, open_link
from .delivery import Delivery
from .hooks import Hooks
from .inbox import Inbox
from .observe import describe

__all__ = ["Current", "Rotation"]

_POLL: Final = 0.01
"""How often (seconds) the overlap looks whether the old link answered what it was sent."""

_OVERLAP_FRAMES: Final = 100_000
"""The most frames of the old link remembered during one overlap (bounds the memory)."""


@dataclass(slots=True)
class Current:
    """The link a supervisor serves now, with its sink and keepalive (a rotation swaps them).

    Attributes:
        link: the open link.
        conn: its sink.
        keepalive: its keepalive task.
    """

    link: Link
    conn: Connection
    keepalive: asyncio.Task[None]


class Rotation:
    """Serves a link until it drops, replacing it whenever it reaches ``max_connection_age``.

    Args:
        config: the service's configuration.
        transport: the WebSocket library seam.
        inbox: where the frames of every link go.
        codec: the service's codec.
        delivery: the outgoing path (its writer moves to the new link).
        hooks: the application's handlers (the auth handler gives fresh credentials).
        ssl_context: the caller's own TLS context, or ``None``.
        connection_data: returns what the auth handler gets on each attempt.
        switched: called with the new link and keepalive after each rotation.
        before_connect: awaited before each new link is opened (a connect quota's gate: a
            rotation is a connect too), or ``None``.
        clock: the service's clock: the link's age, the overlap's bounds and the new link's
            keepalive read it.
    """

    __slots__ = (
        "_before_connect",
        "_clock",
        "_codec",
        "_config",
        "_connection_data",
        "_delivery",
        "_hooks",
        "_inbox",
        "_now",
        "_ssl_context",
        "_switched",
        "_timeout",
        "_transport",
    )

    def __init__(
        self,
        config: Config,
        transport: Transport,
        inbox: Inbox,
        codec: Codec,
        delivery: Delivery,
        hooks: Hooks,
        ssl_context: ssl.SSLContext | None,
        connection_data: Callable[[], Mapping[str, Any] | None],
        switched: Callable[[Link, asyncio.Task[None]], None],
        before_connect: Callable[[], Awaitable[None]] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._config = config
        self._transport = transport
        self._inbox = inbox
        self._codec = codec
        self._delivery = delivery
        self._hooks = hooks
        self._ssl_context = ssl_context
        self._connection_data = connection_data
        self._switched = switched
        self._before_connect = before_connect
        self._clock = clock
        self._now = clock.monotonic
        self._timeout = clock.timeout

    async def serve(self, current: Current) -> LinkError:
        """Serve ``current`` (rotating it when due) until the link in it is lost.

        Returns:
            Why the link was lost.
        """
        age = self._config.max_connection_age
        if age is None:
            return await current.conn.lost
        now = self._now
        due = now() + age
        while True:
            lost = current.conn.lost
            with contextlib.suppress(TimeoutError):
                async with self._timeout(max(due - now(), 0)):
                    return await asyncio.shield(lost)
            if lost.done():
                return lost.result()
            if await self._rotate(current):
                self._hooks.counters.rotations += 1
                due = now() + age
            else:
                due = now() + self._config.initial_reconnect_delay

    async def _rotate(self, current: Current) -> bool:
        """Replace ``current``'s link with a fresh one; ``False``: the old one is kept."""
        config, hooks = self._config, self._hooks
        conn = Connection(self._inbox, config.auth_close_codes, hooks.report_soon)
        if self._before_connect is not None:
            await self._before_connect()
            if current.conn.lost.done():  # lost while the gate held the rotation back
                return False
        # The server may send on the new link as soon as it accepted it, so what the old link
        # delivers is remembered from before the handshake (after an earlier rotation's screen).
        old_conn = current.conn
        previous = old_conn.screening
        seen: collections.Counter[bytes] = collections.Counter()
        old_conn.screen(_recorder(seen, previous))
        try:
            link = await open_link(
                config,
                self._transport,
                conn,
                hooks.auth,
                self._connection_data(),
                self._codec,
                self._ssl_context,
            )
        except Exception as exc:  # the old link stays; the next try comes later
            hooks.log.warning(
                "rotation: the new link failed, keeping the old one: %s", describe(exc)
            )
            old_conn.screen(previous)
            if isinstance(exc, BgwsError):
                await hooks.report(exc)
            return False
        except BaseException:
            old_conn.screen(previous)
            raise
        try:
            switched = await self._switch(current, link, conn, seen)
        except BaseException:
            link.abort()
            raise
        if not switched:
            old_conn.screen(previous)
        elif hooks.auth is not None:  # the fresh credentials worked, as after a reconnect
            await hooks.guarded(hooks.auth.on_auth_success, "auth handler")
        return switched

    async def _switch(
        self,
        current: Current,
        link: Link,
        conn: Connection,
        seen: collections.Counter[bytes],
    ) -> bool:
        """Move the writer, then the dispatch, to ``link``; ``False``: it was given up."""
        old_link, old_conn = current.link, current.conn
        writer = self._delivery.writer
        # The old link is written to no more; the new one gets resume and subscriptions, and
        # the outbox waits until the old link answered what it carried (order is kept).
        outstanding = self._delivery.outstanding()
        await writer.detach(requeue=False)
        writer.prime(link, self._delivery.control_frames())
        deadline = self._now() + self._config.close_timeout
        first = asyncio.ensure_future(conn.arrived.wait())
        try:
            async with self._timeout(self._config.close_timeout):
                either: list[asyncio.Future[Any]] = [first, conn.lost, old_conn.lost]
                await asyncio.wait(either, return_when="FIRST_COMPLETED")
                # Acks and replies have no one event to wait on; the wait is bounded above.
                still = self._delivery.outstanding
                while outstanding & still() and not old_conn.lost.done():  # noqa: ASYNC110
                    await asyncio.sleep(_POLL)
        except TimeoutError:
            pass
        finally:
            first.cancel()
        if old_conn.lost.done():  # the old link went first (or the service stops): no switch
            link.abort()
            return False
        if conn.lost.done():  # the new link died at once: back to the old one
            writer.attach(old_link, [], requeue=False)
            link.abort()
            return False
        # The switch: the old link's frames stop, the new link's (held so far) flow.
        old_conn.retire()
        current.keepalive.cancel()
        await asyncio.gather(current.keepalive, return_exceptions=True)
        old_conn.detach()
        dedupe = _dedupe(seen)
        conn.screen(dedupe)
        conn.attach(link)
        writer.attach(link, [], requeue=False)
        keepalive = asyncio.create_task(
            conn.keepalive(
                self._config,
                self._hooks.heartbeat,
                self._codec,
                writer,
                clock=self._clock,
                rtt=self._hooks.counters.rtt,
            )
        )
        current.link, current.conn, current.keepalive = link, conn, keepalive
        self._switched(link, keepalive)
        grace = max(deadline - self._now(), 0) + self._config.close_timeout
        asyncio.get_running_loop().call_later(grace, _lift, conn, dedupe, seen)
        self._hooks.log.info("rotated the link before max_connection_age")
        old_link.close(1000, "rotated")
        with contextlib.suppress(TimeoutError):
            async with self._timeout(self._config.close_timeout):
                await old_link.wait_closed()
        if not old_link.closed:
            old_link.abort()
        return True


def _recorder(seen: collections.Counter[bytes], then: Screen | None) -> Screen:
    """A screen that remembers each frame of the old link that ``then`` lets through.

    ``then`` is the screen already up (the dedupe of the rotation before, in its grace).
    """

    def record(payload: bytes) -> bool:
        if then is not None and not then(payload):
            return False
        if len(seen) < _OVERLAP_FRAMES:
            seen[payload] += 1
        return True

    return record


def _dedupe(seen: collections.Counter[bytes]) -> Screen:
    """A screen that drops a frame of the new link the old link already delivered, once."""

    def keep(payload: bytes) -> bool:
        if seen[payload] > 0:
            seen[payload] -= 1
            return False
        return True

    return keep


def _lift(conn: Connection, dedupe: Screen, seen: collections.Counter[bytes]) -> None:
    """The overlap's grace is over: nothing more to drop; the screen comes down if still up.

    A later rotation may have put its recorder in front of it: that one stays (it lets
    everything through once ``seen`` is empty) until that rotation retires the link.
    """
    seen.clear()
    if conn.screening is dedupe:
        conn.screen(None)
