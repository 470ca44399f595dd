"""The test server's side of delivery: it acks, answers requests, publishes and replays.

:class:`Responder` looks at every message the server receives: it records the message's id
(to count duplicates), acknowledges it (:class:`AckReply` or an :data:`AckFunction`), answers
it (:class:`Reply`) and, for a resume request, replays the published messages after the
position asked (:class:`Feed`). Everything it sends goes through the connection's ordered
outbox, so ``delay`` and ``stall`` apply. It reads the options from the server each time, so a
test may change them at any moment.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from bgws.testing._connection import Connection
from bgws.testing._delivery import AckFunction, AckGate, AckReply, Feed, IdLedger, Reply, SeqLog
from bgws.testing._records import (
    ConnectionReport,
    Message,
    ReceivedMessage,
    encode,
    split_payload,
)

__all__ = ["Responder", "ServerOptions"]


class ServerOptions(Protocol):
    """The options a :class:`Responder` reads from its server, each time (a test may change
    them at any moment). :class:`~bgws.testing.Server` has them; typed here so that this
    module does not import the server module, which imports it."""

    @property
    def id_field(self) -> str | None: ...

    @property
    def ack(self) -> AckReply | AckFunction | None: ...

    @property
    def reply(self) -> Reply | None: ...

    @property
    def feed(self) -> Feed: ...

    @property
    def connections(self) -> list[Connection]: ...


@dataclasses.dataclass
class _Tally:
    """What happened on one connection (mutable; frozen into a ConnectionReport)."""

    ids: list[Any] = dataclasses.field(default_factory=list)
    duplicates: list[Any] = dataclasses.field(default_factory=list)
    acked: list[Any] = dataclasses.field(default_factory=list)
    not_acked: list[Any] = dataclasses.field(default_factory=list)
    acks_sent: int = 0
    resumes: list[int] = dataclasses.field(default_factory=list)
    replayed: list[int] = dataclasses.field(default_factory=list)
    published: list[int] = dataclasses.field(default_factory=list)
    replies_sent: int = 0
    batch: list[Any] = dataclasses.field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _Held:
    """An ack held by ``pause_acks(hold=True)``: an id to batch, or a ready message."""

    connection: Connection
    msg_id: Any
    message: Message | None


class Responder:
    """Acks, replies, duplicate counts, the published feed and per-connection tallies.

    Args:
        server: The server whose options (``id_field``, ``ack``, ``reply``, ``feed``) apply.
        record_error: Called with every exception an ack or reply function raises.
    """

    def __init__(self, server: ServerOptions, record_error: Callable[[Exception], None]) -> None:
        self._server = server
        self._record_error = record_error
        self.ledger = IdLedger()
        self.log = SeqLog(server.feed)
        self.gate = AckGate()
        self._tallies: dict[int, _Tally] = {}
        self._held: list[_Held] = []

    # -- incoming ----------------------------------------------------------------------------

    def received(self, connection: Connection, message: ReceivedMessage) -> None:
        """Record the message's id, then ack it, answer it and honour a resume request."""
        try:
            data = message.json()
        except ValueError:
            return  # not JSON: nothing to ack, answer or resume
        tally = self._tally(connection)
        id_field = self._server.id_field
        msg_id = data.get(id_field) if id_field and isinstance(data, dict) else None
        if msg_id is not None:
            tally.ids.append(msg_id)
            if self.ledger.add(msg_id):
                tally.duplicates.append(msg_id)
        self._ack(connection, tally, data, msg_id)
        self._reply(connection, tally, data, msg_id)
        self.log.configure(self._server.feed)
        position = self.log.feed.resume_position(data)
        if position is not None:
            self.replay(connection, position)

    def connection_closed(self, connection: Connection) -> None:
        """Forget the connection's unsent batch of acks (its ids count as not acked)."""
        tally = self._tallies.get(connection.id)
        if tally is None:
            return
        if tally.timer is not None:
            tally.timer.cancel()
            tally.timer = None
        tally.not_acked.extend(tally.batch)
        tally.batch.clear()

    # -- acks --------------------------------------------------------------------------------

    def _ack(self, connection: Connection, tally: _Tally, data: Any, msg_id: Any) -> None:
        ack = self._server.ack
        if ack is None:
            return
        ready: Message | None = None
        if isinstance(ack, AckReply):
            if msg_id is None:
                return
            fraction = ack.fraction
        else:
            try:
                ready = ack(data)
            except Exception as exc:
                self._record_error(exc)
                return
            if ready is None:
                return
            fraction = 1.0
        decision = self.gate.decide(fraction)
        if decision == "hold":
            self._held.append(_Held(connection, msg_id, ready))
        elif decision == "skip":
            if msg_id is not None:
                tally.not_acked.append(msg_id)
        else:
            self._send_ack(connection, msg_id, ready)

    def _send_ack(self, connection: Connection, msg_id: Any, ready: Message | None) -> None:
        tally = self._tally(connection)
        if ready is not None:
            if self._send(connection, ready):
                tally.acks_sent += 1
                if msg_id is not None:
                    tally.acked.append(msg_id)
            return
        ack = self._server.ack
        if not isinstance(ack, AckReply) or not connection.is_open:
            tally.not_acked.append(msg_id)
            return
        tally.batch.append(msg_id)
        if len(tally.batch) >= ack.batch:
            self._flush(connection)
        elif ack.batch_delay is not None and tally.timer is None:
            loop = asyncio.get_running_loop()
            tally.timer = loop.call_later(ack.batch_delay, self._flush, connection)

    def _flush(self, connection: Connection) -> int:
        tally = self._tally(connection)
        if tally.timer is not None:
            tally.timer.cancel()
            tally.timer = None
        ids, tally.batch = tally.batch, []
        ack = self._server.ack
        if not ids:
            return 0
        if isinstance(ack, AckReply) and self._send(connection, ack.message(ids)):
            tally.acks_sent += 1
            tally.acked.extend(ids)
            return 1
        tally.not_acked.extend(ids)
        return 0

    def flush_acks(self) -> int:
        """Send every partial batch of acks now; return how many acks were queued."""
        return sum(
            self._flush(connection)
            for connection in self._server.connections
            if self._tallies.get(connection.id, _Tally()).batch
        )

    def resume_acks(self) -> int:
        """Ack again; send the held acks whose connection is still open; return how many."""
        self.gate.resume()
        held, self._held = self._held, []
        released = 0
        for entry in held:
            if entry.connection.is_open:
                self._send_ack(entry.connection, entry.msg_id, entry.message)
                released += 1
            elif entry.msg_id is not None:
                self._tally(entry.connection).not_acked.append(entry.msg_id)
        return released

    # -- replies and the feed ----------------------------------------------------------------

    def _reply(self, connection: Connection, tally: _Tally, data: Any, msg_id: Any) -> None:
        reply = self._server.reply
        if reply is None or msg_id is None or not isinstance(data, Mapping):
            return
        try:
            answer = reply.answer(data, msg_id)
        except Exception as exc:
            self._record_error(exc)
            return
        if answer is not None and self._send(connection, answer):
            tally.replies_sent += 1

    def publish(
        self, message: Mapping[str, Any], connections: Iterable[Connection], fragments: int
    ) -> int:
        """Number and keep a message, then send it to ``connections``; return its seq.

        Raises:
            TypeError: ``message`` is not a mapping, or cannot be encoded as JSON.
            ValueError: ``fragments`` is below 1 or larger than the payload.
        """
        self.log.configure(self._server.feed)
        if not isinstance(message, Mapping):
            raise TypeError(f"only a mapping can be published, not {type(message).__name__}")
        # Encode (and split) once, before numbering, so that a bad message takes no seq.
        opcode, payload = encode({**message, self.log.feed.seq_field: self.log.next_seq})
        parts = split_payload(payload, fragments)
        seq, _ = self.log.append(message)
        for connection in connections:
            if connection.send_frames(opcode, parts):
                self._tally(connection).published.append(seq)
        return seq

    def replay(self, connection: Connection, position: int) -> int:
        """Send the kept published messages after ``position``, in order; return how many."""
        tally = self._tally(connection)
        tally.resumes.append(position)
        sent = 0
        for seq, message in self.log.after(position):
            if connection.send(message):
                tally.replayed.append(seq)
                sent += 1
        return sent

    # -- reporting ---------------------------------------------------------------------------

    def report(self, connections: Iterable[Connection]) -> list[ConnectionReport]:
        """One record per connection, in the order given."""
        return [self._report(connection) for connection in connections]

    def _report(self, connection: Connection) -> ConnectionReport:
        tally = self._tallies.get(connection.id, _Tally())
        return ConnectionReport(
            connection_id=connection.id,
            target=connection.handshake.target,
            messages=len(connection.messages),
            ids=tuple(tally.ids),
            duplicates=tuple(tally.duplicates),
            acked=tuple(tally.acked),
            not_acked=tuple(tally.not_acked),
            acks_sent=tally.acks_sent,
            resumes=tuple(tally.resumes),
            replayed=tuple(tally.replayed),
            published=tuple(tally.published),
            replies_sent=tally.replies_sent,
            closed=connection.is_closed,
            close_code=connection.close_code,
        )

    # -- internals ---------------------------------------------------------------------------

    def _tally(self, connection: Connection) -> _Tally:
        tally = self._tallies.get(connection.id)
        if tally is None:
            tally = self._tallies[connection.id] = _Tally()
        return tally

    def _send(self, connection: Connection, message: Message) -> bool:
        try:
            return connection.send(message)
        except Exception as exc:  # a message built by a test's function that cannot be sent
            self._record_error(exc)
            return False
