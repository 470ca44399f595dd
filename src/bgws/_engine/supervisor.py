"""The connect loop of one service: open a link, serve it until it drops, back off, retry.

:class:`Supervisor` owns the link-level tasks of a :class:`bgws.Service`: the connect loop (one
per run) and, per open link, the keepalive. Each attempt goes through
:func:`~bgws._engine.connect.open_link`; what happens next (which state, how long to wait) is
asked of the :class:`~bgws.machine.Machine`, and the supervisor carries it out. It talks back
to the service through two callables: ``announce`` (the machine moved: tell the listeners) and
``remember`` (keep a piece of connection info in storage). The application's hooks come in
the :class:`~bgws._engine.hooks.Hooks` bundle and are called directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..config import Config
from ..errors import BgwsError, DeadLink, LinkError
from ..machine import Decision, Machine, State, Verdict
from ..message import Codec
from ..transport import Link, Transport
from . import connect as _connect
from .clock import SYSTEM_CLOCK, Clock
from .delivery import Delivery
from .flag import Flag
from .hooks import Hooks, wrap
from .inbox import Inbox
from .observe import describe
from .quota import ConnectQuota, QuotaGate
from .rotation import Current, Rotation

__all__ = ["Announce", "Remember", "Supervisor"]

Announce = Callable[[State, BaseException | None, float | None], Awaitable[None]]
"""``announce(old, reason, delay)``: the machine moved from ``old``; tell who listens."""
Remember = Callable[[str, str], Awaitable[None]]
"""``remember(logical_key, value)``: keep a piece of connection info in storage."""


class Supervisor:
    """Keeps one service's link up: connects, serves, reconnects, as the machine decides.

    Args:
        config: the service's configuration.
        machine: the service's state machine (the supervisor fires its link events).
        transport: the WebSocket library seam.
        inbox: where the frames of every link go.
        codec: the service's codec (for auth messages and the application heartbeat).
        delivery: the outgoing path (told when a link comes up and goes down).
        hooks: the application's handlers and plugins, and the error reporter.
        classify: the service's error classifier (an ``"auth"`` verdict asks the auth
            handler to refresh its credentials).
        ssl_context: the caller's own TLS context, or ``None``.
        announce: called after each state change the supervisor makes.
        remember: keeps connection info (``last_connected_at``) in storage.
        clock: every timer and timestamp of the loop and the keepalive.
    """

    __slots__ = (
        "_announce",
        "_classify",
        "_codec",
        "_config",
        "_delivery",
        "_hooks",
        "_inbox",
        "_keepalive",
        "_machine",
        "_quota",
        "_remember",
        "_rotation",
        "_ssl_context",
        "_task",
        "_transport",
        "_wake",
        "clock",
        "connection_data",
        "link",
    )

    def __init__(
        self,
        config: Config,
        machine: Machine,
        transport: Transport,
        inbox: Inbox,
        codec: Codec,
        delivery: Delivery,
        hooks: Hooks,
        *,
        classify: Callable[[BaseException], Verdict],
        ssl_context: ssl.SSLContext | None,
        announce: Announce,
        remember: Remember,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._config = config
        self._machine = machine
        self._transport = transport
        self._inbox = inbox
        self._codec = codec
        self._delivery = delivery
        self._hooks = hooks
        self._classify = classify
        self._ssl_context = ssl_context
        self._announce = announce
        self._remember = remember
        self.clock = clock
        """Where every timer and timestamp of the loop and the keepalive reads the time."""
        hooks.counters.wall = clock.wall  # uptime in stats, on the same clock
        quota = config.connect_quota
        self._quota = (
            None
            if quota is None
            else QuotaGate(ConnectQuota(int(quota[0]), quota[1]), clock, delivery.store, hooks)
        )
        self._keepalive: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = Flag()
        self.connection_data: Mapping[str, Any] | None = None
        """Handed to the auth handler's ``get_auth_data`` on every attempt."""
        self.link: Link | None = None
        """The open link, or ``None`` while not connected."""
        self._rotation = Rotation(
            config,
            transport,
            inbox,
            codec,
            delivery,
            hooks,
            ssl_context,
            lambda: self.connection_data,
            self._switched,
            before_connect=None if self._quota is None else self._quota.admit,
            clock=clock,
        )

    def start(self) -> None:
        """Start the connect loop (the machine is already ``CONNECTING``)."""
        self._task = asyncio.create_task(
            self._connect_loop(), name=f"bgws-connect-{self._config.service_tag}"
        )

    def wake(self) -> bool:
        """End the backoff wait now, so the next attempt starts at once.

        Returns:
            Whether the machine was backing off (``False``: nothing to skip).
        """
        if self._machine.state not in (State.BACKING_OFF, State.SUSPENDED):
            return False
        self._wake.set()
        return True

    async def stop(self, deadline: float) -> None:
        """Close the link (after the outbox drains), end the loop, close the transport.

        Called once the machine is ``CLOSING``; every wait is bounded by ``deadline`` seconds.
        """
        link = self.link
        run_task = self._task
        if link is not None and run_task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline):
                    await self._delivery.outbox.wait_empty()
            # Closing is bounded by ``deadline``; an unanswered probe during the closing
            # handshake proves nothing and must not count as a dead link.
            if self._keepalive is not None:
                self._keepalive.cancel()
            link.close(1000, "bye")
        if run_task is not None:
            if link is not None:  # let the loop see the close and run its hooks
                await asyncio.wait([run_task], timeout=deadline)
            run_task.cancel()
            await asyncio.gather(run_task, return_exceptions=True)
        # Connect attempts cut short by the stop finish and close.
        await self._hooks.guarded(functools.partial(self._transport.aclose, deadline), "transport")

    async def _connect_loop(self) -> None:
        machine = self._machine
        config = self._config
        while machine.state is State.CONNECTING:
            self._hooks.counters.connect_attempts += 1
            link: Link | None = None
            conn = _connect.Connection(
                self._inbox, config.auth_close_codes, self._hooks.report_soon
            )
            if self._quota is not None:
                await self._quota.admit()
            try:
                link = await _connect.open_link(
                    config,
                    self._transport,
                    conn,
                    self._hooks.auth,
                    self.connection_data,
                    self._codec,
                    self._ssl_context,
                )
            except Exception as exc:  # every failure is classified, none escapes
                error = exc if isinstance(exc, BgwsError) else LinkError(str(exc))
                if error is not exc:
                    error.__cause__ = exc
                decision = await self._failed(error, connected=False)
            else:
                decision = await self._run_link(link, conn)
            if decision is None or decision.state is State.FAILED:
                return
            self._hooks.log.info(
                "reconnecting in %.3fs (attempt %d): %s",
                decision.delay,
                decision.attempt,
                describe(decision.reason),
            )
            if await self._backoff(decision.delay):
                self._hooks.log.info("reconnecting now, as asked (the backoff wait was skipped)")
            old = machine.state
            machine.retry()
            await self._announce(old, None, None)

    async def _backoff(self, delay: float) -> bool:
        """Wait ``delay`` seconds, or less when :meth:`wake` is called; returns whether it was."""
        wake = self._wake  # set only while backing off, cleared once used
        try:
            async with self.clock.timeout(delay):
                await wake.wait()
        except TimeoutError:
            return False
        finally:
            wake.clear()
        return True

    async def _run_link(self, link: Link, conn: _connect.Connection) -> Decision | None:
        """Serve one open link until it drops; returns what to do next."""
        now = self.clock.monotonic()
        counters = self._hooks.counters
        self.link = link
        counters.link_up()
        old = self._machine.state
        self._machine.connected(now)
        conn.attach(link)  # frames that came with the handshake are dispatched from now on
        await self._announce(old, None, None)
        self._delivery.link_up(link)
        keepalive = asyncio.create_task(
            conn.keepalive(
                self._config,
                self._hooks.heartbeat,
                self._codec,
                self._delivery.writer,
                clock=self.clock,
                rtt=counters.rtt,
            )
        )
        self._keepalive = keepalive
        current = Current(link, conn, keepalive)
        try:
            await self._on_connected()
            if self._config.max_connection_age is None:  # no rotation: no frame for it
                error = await conn.lost
            else:  # replaced before max_connection_age
                error = await self._rotation.serve(current)
        finally:
            link, conn, keepalive = current.link, current.conn, current.keepalive
            self.link = None
            self._keepalive = None
            counters.connected_since = None
            conn.detach()
            keepalive.cancel()
            await asyncio.gather(keepalive, return_exceptions=True)
            await self._delivery.link_down()
            if self._machine.state is State.CLOSING:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._config.close_timeout):
                        await link.wait_closed()
        if isinstance(error, DeadLink):
            counters.dead_links += 1
        await self._on_disconnected()
        if self._machine.state is State.CLOSING:
            return None
        return await self._failed(error, connected=True)

    def _switched(self, link: Link, keepalive: asyncio.Task[None]) -> None:
        """A rotation replaced the link."""
        self.link, self._keepalive = link, keepalive

    async def _failed(self, error: BaseException, *, connected: bool) -> Decision | None:
        if self._machine.state is State.CLOSING:
            return None
        hooks = self._hooks
        hooks.counters.note_error(error)
        refreshed = False
        if self._classify(error) == "auth" and hooks.auth is not None:
            try:
                refreshed = bool(await hooks.auth.on_auth_failure(str(error)))
            except Exception as exc:
                await hooks.report(wrap(exc, "auth handler on_auth_failure"))
        now = self.clock.monotonic()
        old = self._machine.state
        decision = self._machine.failed(error, now, auth_refreshed=refreshed)
        counters = hooks.counters
        if not connected:
            counters.attempts += 1
        counters.link_down(decision.delay if decision.state is State.BACKING_OFF else None)
        await self._announce(old, error, decision.delay)
        if connected or decision.state is State.FAILED:
            hooks.log.warning("link %s: %s", "lost" if connected else "failed", describe(error))
        if decision.state is State.FAILED and isinstance(error, BgwsError):
            await hooks.report(error)
        return decision

    async def _on_connected(self) -> None:
        hooks = self._hooks
        if hooks.auth is not None:
            await hooks.guarded(hooks.auth.on_auth_success, "auth handler")
        await self._remember("last_connected_at", repr(self.clock.wall()))
        if hooks.message is not None:
            await hooks.guarded(hooks.message.on_connection_established, "message handler")
        for plugin in hooks.chain.plugins:
            await hooks.guarded(functools.partial(plugin.on_connection_changed, True), plugin.name)

    async def _on_disconnected(self) -> None:
        hooks = self._hooks
        if hooks.message is not None:
            await hooks.guarded(hooks.message.on_connection_lost, "message handler")
        for plugin in hooks.chain.plugins:
            await hooks.guarded(functools.partial(plugin.on_connection_changed, False), plugin.name)
