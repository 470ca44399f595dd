"""The inbound half of the bridge: incoming WebSocket messages, published to JetStream in order.

:class:`Publisher` holds every message taken from the service in one ordered queue, bounded
by ``max_buffer``: the first ``max_in_flight`` are published and wait for JetStream's ack, the
rest wait their turn. Publishing is pipelined: each message goes out with a reply subject of
its own under one inbox subscription, and acks are matched by token as they come, so there is
no round trip per message and no future per message.

Nothing is dropped. A publish that gets no ack within ``ack_timeout``, an error reply, and
every publish in flight when the connection to NATS drops are published again, with the same
``Nats-Msg-Id``, so JetStream keeps one copy. When the queue reaches ``max_buffer`` the
WebSocket read pauses (the server's TCP window fills, so the server slows down) and resumes
at half. The saved resume position follows the acks: ``release(seq)`` is called with a
message's sequence once it and everything before it are in the stream.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import BgwsError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ["BridgeError", "Pending", "Publisher"]

_MSG_ID = "Nats-Msg-Id"
_STATUS = "Status"
_RETRY_DELAY = 0.5
"""Seconds before publishing again after JetStream refused a publish."""


class BridgeError(BgwsError):
    """The bridge could not reach NATS, or JetStream refused a publish or a consumer call.

    The bridge keeps trying (nothing is dropped); this reports what went wrong meanwhile.
    """


class Pending:
    """One message waiting for JetStream: its subject, body, headers and sequence."""

    __slots__ = ("acked", "headers", "payload", "sent_at", "seq", "subject", "token")

    def __init__(
        self, subject: str, payload: bytes, headers: dict[str, str] | None, seq: int | None
    ) -> None:
        self.subject = subject
        self.payload = payload
        self.headers = headers
        self.seq = seq  # the resume sequence to release once this is acked
        self.token = 0  # its reply token while in flight (0: not in flight)
        self.sent_at = 0.0
        self.acked = False


class Publisher:
    """Publishes queued messages to JetStream, pipelined, and follows the acks.

    Args:
        max_buffer: messages held (queued and in flight) before reading pauses.
        max_in_flight: publishes waiting for an ack at once.
        ack_timeout: seconds before an unacked publish is sent again.
        release: advances the saved resume position (``None``: no resume policy).
        reading: pauses the WebSocket read (``False``) or lets it go on (``True``).
        report: reports an error.
    """

    __slots__ = (
        "_by_token",
        "_client",
        "_drained",
        "_inbox",
        "_next",
        "_queue",
        "_release",
        "_report",
        "_wake",
        "ack_timeout",
        "acked",
        "duplicates",
        "errors",
        "last_error",
        "max_buffer",
        "max_in_flight",
        "paused",
        "reading",
        "resent",
        "sent",
    )

    def __init__(
        self,
        *,
        max_buffer: int,
        max_in_flight: int,
        ack_timeout: float,
        release: Callable[[int], None] | None,
        reading: Callable[[bool], None],
        report: Callable[[BgwsError], None],
    ) -> None:
        self.max_buffer = max_buffer
        self.max_in_flight = max_in_flight
        self.ack_timeout = ack_timeout
        self._release = release
        self.reading = reading
        self._report = report
        self._queue: deque[Pending] = deque()
        self._by_token: dict[int, Pending] = {}
        self._next = 0
        self._client: Client | None = None
        self._inbox = ""
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self.sent = 0  # how many at the head of the queue are in flight
        self.acked = self.duplicates = self.resent = self.errors = 0
        self.paused = False
        self.last_error: str | None = None

    # -- the service's side (sync, called from the plugin's handle_message) -----------------

    def add(self, subject: str, payload: bytes, msg_id: str | None, seq: int | None) -> None:
        """Queue one message; pause reading when the queue is full."""
        headers = {_MSG_ID: msg_id} if msg_id is not None else None
        queue = self._queue
        queue.append(Pending(subject, payload, headers, seq))
        self._drained.clear()
        if len(queue) >= self.max_buffer and not self.paused:
            self.paused = True
            self.reading(False)
        if self.sent < self.max_in_flight:
            self._wake.set()

    def skip(self, seq: int) -> None:
        """A message not published (its type is not bridged): release ``seq`` in order."""
        queue = self._queue
        if not queue:
            if self._release is not None:
                self._release(seq)
            return
        tail = queue[-1]
        if tail.seq is None or seq > tail.seq:
            tail.seq = seq

    @property
    def buffered(self) -> int:
        """Messages not yet published."""
        return len(self._queue) - self.sent

    @property
    def lag(self) -> int:
        """Messages taken from the WebSocket that JetStream has not acked yet."""
        return len(self._queue)

    # -- the NATS side ----------------------------------------------------------------------

    async def attach(self, client: Client) -> None:
        """Publish through ``client`` (connected): subscribe to the ack inbox, start sending."""
        self._client = client
        self._inbox = client.new_inbox() + "."
        await client.subscribe(self._inbox + "*", cb=self._on_ack)
        self._wake.set()

    def resend_all(self) -> None:
        """Forget the acks in flight: publish them again (reconnected, or an ack timed out)."""
        if self.sent:
            self.resent += self.sent
            for pending in self._by_token.values():
                pending.token = 0
            self._by_token.clear()
            self.sent = 0
        self._wake.set()

    async def run(self, connected: Callable[[], bool]) -> None:
        """Publish what is queued, forever (cancelled at stop).

        Args:
            connected: whether the NATS connection is up now.
        """
        wake = self._wake
        queue = self._queue
        # Started after attach(); ends once detached, also when nats-py swallowed its cancel.
        while self._client is not None:
            await wake.wait()
            wake.clear()
            client = self._client
            if client is None or not connected():
                continue  # the reconnect callback wakes us
            limit = self.max_in_flight
            try:
                while self.sent < len(queue) and self.sent < limit and self._client is not None:
                    pending = queue[self.sent]
                    self._next = token = self._next + 1
                    pending.token = token
                    pending.sent_at = time.monotonic()
                    self._by_token[token] = pending
                    self.sent += 1
                    await client.publish(
                        pending.subject,
                        pending.payload,
                        reply=self._inbox + str(token),
                        headers=pending.headers,
                    )
            except Exception as exc:  # the connection dropped under us: resent when back
                self.note(BridgeError(f"publish failed: {type(exc).__name__}: {exc}"))

    async def watch_acks(self, connected: Callable[[], bool]) -> None:
        """Publish again what waited longer than ``ack_timeout`` for its ack (forever)."""
        timeout = self.ack_timeout
        while self._client is not None:
            await asyncio.sleep(timeout / 4)
            queue = self._queue
            if not self.sent or not queue or not connected():
                continue
            head = queue[0]
            if head.token and time.monotonic() - head.sent_at > timeout:
                self.note(
                    BridgeError(f"no ack from JetStream within {timeout:g}s: publishing again")
                )
                self.resend_all()

    async def _on_ack(self, msg: Msg) -> None:
        try:
            token = int(msg.subject[len(self._inbox) :])
        except ValueError:
            return
        pending = self._by_token.pop(token, None)
        if pending is None:  # an ack for a publish already sent again
            return
        error = _ack_error(msg)
        if error is not None:
            self.note(BridgeError(f"JetStream refused a publish to {pending.subject}: {error}"))
            # Keep the order: everything in flight goes again, after a pause (the acks still
            # to come are ignored; JetStream drops the copies it already has).
            self._by_token.clear()
            asyncio.get_running_loop().call_later(_RETRY_DELAY, self.resend_all)
            return
        pending.acked = True
        if msg.data.find(b'"duplicate"') >= 0:
            self.duplicates += 1
        self._advance()

    def _advance(self) -> None:
        """Drop the acked messages at the head of the queue; release their position."""
        queue = self._queue
        release = self._release
        seq = None
        while queue and queue[0].acked:
            pending = queue.popleft()
            self.sent -= 1
            self.acked += 1
            if pending.seq is not None:
                seq = pending.seq
        if seq is not None and release is not None:
            release(seq)
        if not queue:
            self._drained.set()
        if self.paused and len(queue) <= self.max_buffer >> 1:
            self.paused = False
            self.reading(True)
        if self.sent < self.max_in_flight and self.sent < len(queue):
            self._wake.set()

    def note(self, error: BridgeError) -> None:
        """Count and keep ``error``; report it unless the same error was the last one."""
        self.errors += 1
        text = str(error)
        if text != self.last_error:
            self.last_error = text
            self._report(error)

    async def flush(self, timeout: float | None) -> bool:
        """Wait until everything queued is acked, or ``timeout`` passes; whether it was."""
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                await self._drained.wait()
        except TimeoutError:
            return False
        return True

    def detach(self) -> None:
        """The client is closing: stop using it, and end :meth:`run` and :meth:`watch_acks`."""
        self._client = None
        self._wake.set()

    def snapshot(self) -> dict[str, Any]:
        """The publisher's counters, for :meth:`NatsBridge.status`."""
        return {
            "lag": self.lag,
            "buffered": self.buffered,
            "in_flight": self.sent,
            "published": self.acked,
            "duplicates": self.duplicates,
            "resent": self.resent,
            "reading_paused": self.paused,
        }


def _ack_error(msg: Msg) -> str | None:
    """Why JetStream refused a publish, or ``None`` for an ack."""
    data = msg.data
    if data and b'"error"' not in data:  # an ack: {"stream":"BGWS","seq":7}, not decoded
        return None
    headers = msg.headers
    if not data:
        status = headers.get(_STATUS) if headers else None
        return "no stream answers (no responders)" if status == "503" else "empty reply"
    try:
        reply = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return "a reply that is not JSON"
    if isinstance(reply, dict):
        error = reply.get("error")
        if error is None:
            return None
        if isinstance(error, dict):
            return str(error.get("description", error))
        return str(error)
    return "an unexpected reply"
