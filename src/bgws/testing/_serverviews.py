"""What a test reads from the test server, and waits for: counts, ids, reports, ``wait_*``.

:class:`ServerViews` is the read-only half of :class:`bgws.testing.Server`: views derived from
its records (messages, connections, the responder's id ledger and feed) and the ``wait_*``
methods that block until one of them reaches a count. It is a mixin, so that these stay
methods of the server itself (``server.wait_for_messages(3)``, as documented); it sets no
attribute and changes nothing, and the server it is mixed into provides the attributes
declared on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bgws.testing._connection import Connection
from bgws.testing._records import ConnectionReport, Handshake, ReceivedMessage
from bgws.testing._responder import Responder
from bgws.testing._serverstate import DEFAULT_TIMEOUT, ServerState

__all__ = ["ServerViews"]


class ServerViews:
    """Read-only views of a :class:`bgws.testing.Server` and the waits on them (a mixin).

    The class that mixes it in provides the attributes declared below.
    """

    handshakes: list[Handshake]
    connections: list[Connection]
    messages: list[ReceivedMessage]
    _state: ServerState
    _responder: Responder

    # -- counts ------------------------------------------------------------------------------

    @property
    def open_connections(self) -> list[Connection]:
        """The connections that are connected and not closing."""
        return [c for c in self.connections if c.is_open]

    @property
    def connections_accepted(self) -> int:
        """How many handshakes were accepted since the server was created."""
        return len(self.connections)

    @property
    def connections_open(self) -> int:
        """How many accepted connections still have a socket (including closing ones)."""
        return self._state.open_count

    @property
    def disconnects(self) -> int:
        """How many accepted connections have lost their socket since the server was created."""
        return len(self._state.closed_connections)

    # -- records -----------------------------------------------------------------------------

    def received_json(self) -> list[Any]:
        """Every received text message decoded as JSON, in order (binary ones are skipped).

        Raises:
            msgspec.DecodeError: A text message is not JSON (a ``ValueError``).
        """
        return [message.json() for message in self.messages if message.is_text]

    @property
    def duplicates(self) -> list[Any]:
        """Every repeated id received since the server was created, in order.

        Repeats on any connection count, across restarts: an id received three times is listed
        twice. ``len()`` is the count.
        """
        return list(self._responder.ledger.duplicates)

    def unique_ids(self) -> list[Any]:
        """Every distinct id received since the server was created, in first-seen order."""
        return self._responder.ledger.unique()

    def received_ids(self) -> list[Any]:
        """Every id received since the server was created, in order, repeats included."""
        return list(self._responder.ledger.ids)

    @property
    def published(self) -> list[dict[str, Any]]:
        """The published messages kept for replay (the newest ``feed.history``), with seqs."""
        return self._responder.log.messages()

    def report(self) -> list[ConnectionReport]:
        """One record per accepted connection, in order, to assert on or print.

        Each says what the connection received and what the server answered: ids, duplicates,
        acks, resumes, replays, close code. ``str()`` of a record is one readable line.
        """
        return self._responder.report(self.connections)

    # -- waiting -----------------------------------------------------------------------------

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        what: str = "the condition",
    ) -> None:
        """Wait until ``predicate()`` is true, checking it after every server event.

        Events are handshakes, connections opened and closed, messages received and hook errors.

        Args:
            predicate: Checked now and after each event.
            timeout: Seconds before giving up; ``None`` waits forever.
            what: Named in the timeout message.

        Raises:
            TimeoutError: The predicate was still false after ``timeout`` seconds.
        """

        def describe() -> str:
            return (
                f"{what} ({len(self.messages)} messages, {self.connections_accepted} connections "
                f"accepted, {self.connections_open} open, {self.disconnects} disconnects, "
                f"{len(self.handshakes)} handshakes)"
            )

        await self._state.wait_until(predicate, timeout, describe)

    async def wait_for_messages(
        self,
        n: int,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> list[ReceivedMessage]:
        """Wait until at least ``n`` data messages were received in total.

        Returns:
            Every message received so far (at least ``n``), in order.

        Raises:
            TimeoutError: Fewer than ``n`` after ``timeout`` seconds.
        """
        await self.wait_until(
            lambda: len(self.messages) >= n, timeout=timeout, what=f"{n} messages"
        )
        return list(self.messages)

    async def wait_for_connections(
        self,
        n: int,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> list[Connection]:
        """Wait until at least ``n`` handshakes were accepted in total.

        Returns:
            Every accepted connection so far (at least ``n``), in order.

        Raises:
            TimeoutError: Fewer than ``n`` after ``timeout`` seconds.
        """
        await self.wait_until(
            lambda: len(self.connections) >= n, timeout=timeout, what=f"{n} connections"
        )
        return list(self.connections)

    async def wait_for_disconnects(
        self,
        n: int,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> list[Connection]:
        """Wait until at least ``n`` accepted connections have lost their socket in total.

        Returns:
            The closed connections so far (at least ``n``), in the order they closed.

        Raises:
            TimeoutError: Fewer than ``n`` after ``timeout`` seconds.
        """
        closed = self._state.closed_connections
        await self.wait_until(lambda: len(closed) >= n, timeout=timeout, what=f"{n} disconnects")
        return list(closed)

    async def wait_for_ids(
        self,
        n: int,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> list[Any]:
        """Wait until at least ``n`` distinct ids were received in total.

        Returns:
            Every distinct id so far (at least ``n``), in first-seen order.

        Raises:
            TimeoutError: Fewer than ``n`` after ``timeout`` seconds.
        """
        ledger = self._responder.ledger
        await self.wait_until(
            lambda: ledger.unique_count >= n, timeout=timeout, what=f"{n} distinct ids"
        )
        return ledger.unique()
