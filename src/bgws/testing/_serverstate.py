"""The test server's private bookkeeping: its listener, counters, refusals and change signal.

:class:`ServerState` holds what :class:`bgws.testing.Server` keeps for itself and a test never
sets: the listening socket and its port, whether it is stopping, the handshake numbering, the
queued refusals, the stall-new-connections flag, the open-socket count, the connections in
the order they closed, and the event that wakes the ``wait_*`` methods after every change.
Grouping them here keeps the server's own attributes to its documented options and records.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from picows import ws_create_server

from bgws.testing._connection import Connection

__all__ = ["DEFAULT_TIMEOUT", "ServerState"]

DEFAULT_TIMEOUT: Final = 5.0
"""Default timeout, in seconds, of the ``wait_*`` methods."""


class ServerState:
    """The test server's bookkeeping, and the one place that waits for it to change.

    Args:
        port: The port to listen on; 0 picks a free one at the first :meth:`listen`.
        ssl_context: A server TLS context, or ``None`` for plain ``ws://``.

    Attributes:
        port: The port asked for, then the one bound (kept across stop and start).
        ssl_context: As the argument.
        listener: The listening server, or ``None`` when not listening.
        stopping: Whether a stop is under way (new handshakes are refused, new
            connections dropped).
        stall_new: Whether connections accepted from now on are stalled at once.
        open_count: How many accepted connections still have a socket.
        closed_connections: The accepted connections that lost their socket, in that order.
    """

    def __init__(self, port: int, ssl_context: ssl.SSLContext | None) -> None:
        self.port = port
        self.ssl_context = ssl_context
        self.listener: asyncio.Server | None = None
        self.stopping = False
        self.stall_new = False
        self.open_count = 0
        self.closed_connections: list[Connection] = []
        self._listener_closed: asyncio.Task[None] | None = None
        self._last_id = 0
        self._refusals: deque[int] = deque()
        self._changed = asyncio.Event()

    # -- listening ---------------------------------------------------------------------------

    async def listen(self, accept: Callable[[Any], Any], host: str) -> None:
        """Bind and listen on :attr:`port`, answering upgrade requests with ``accept``.

        Raises:
            RuntimeError: It is already listening.
            OSError: The port cannot be bound.
        """
        if self.listener is not None:
            raise RuntimeError("the server is already listening")
        listener: asyncio.Server = await ws_create_server(
            accept,
            host,
            self.port,
            enable_auto_pong=False,
            use_aiofastnet=False,
            reuse_address=True,
            ssl=self.ssl_context,
        )
        self.listener = listener
        self.port = int(listener.sockets[0].getsockname()[1])
        # Register a wait_closed() waiter while the server is open: on Python 3.11 a call made
        # after close() returns at once instead of waiting for every socket to be gone.
        self._listener_closed = asyncio.get_running_loop().create_task(listener.wait_closed())
        await asyncio.sleep(0)

    async def wait_listener_closed(self, timeout: float) -> None:
        """Wait, at most ``timeout`` seconds, until the closed listener has no socket left.

        Bounded: a client that connected but never sent its upgrade request keeps its socket
        until picows' handshake timeout.
        """
        closed = self._listener_closed
        if closed is not None:
            await asyncio.wait({closed}, timeout=timeout)
            closed.cancel()
            await asyncio.wait({closed})

    def forget_listener(self) -> None:
        """Mark the server as not listening (the end of a stop, whatever happened)."""
        self.listener = self._listener_closed = None
        self.stopping = False

    # -- handshakes --------------------------------------------------------------------------

    def next_handshake_id(self) -> int:
        """The number of the next upgrade request: 1, 2, ... since the server was created."""
        self._last_id += 1
        return self._last_id

    def refuse(self, n: int, status: int) -> None:
        """Queue ``n`` refusals with this HTTP status, after those already queued.

        Raises:
            ValueError: ``n`` is negative or ``status`` is not in 400-599.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if not 400 <= status <= 599:
            raise ValueError(f"a refusal status must be in 400-599, got {status}")
        self._refusals.extend([status] * n)

    def next_refusal(self) -> int | None:
        """Take the status of the next queued refusal, or ``None`` when none is queued."""
        return self._refusals.popleft() if self._refusals else None

    # -- connections -------------------------------------------------------------------------

    def opened(self) -> None:
        """Count an accepted connection that got its socket."""
        self.open_count += 1

    def closed(self, connection: Connection) -> None:
        """Count an accepted connection that lost its socket."""
        self.open_count -= 1
        self.closed_connections.append(connection)

    # -- waiting -----------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake every :meth:`wait_until` so it checks its predicate again."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float | None,
        describe: Callable[[], str],
    ) -> None:
        """Wait until ``predicate()`` is true, checking it now and after every :meth:`notify`.

        Args:
            predicate: The condition waited for.
            timeout: Seconds before giving up; ``None`` waits forever.
            describe: Says what was waited for and what the server saw, for the error.

        Raises:
            TimeoutError: The predicate was still false after ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout}s waiting for {describe()}") from None
