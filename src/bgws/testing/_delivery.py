"""The server side of delivery protocols, as pure data: acks, replies, ids and sequenced feeds.

No sockets and no event loop. :class:`AckReply`, :class:`Reply` and :class:`Feed` are the
immutable options a test gives :class:`~bgws.testing.Server`; :class:`IdLedger`,
:class:`SeqLog` and :class:`AckGate` are the state the server keeps for them, each testable on
its own.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from fractions import Fraction
from typing import Any, Literal, TypeAlias

import msgspec

from bgws.testing._records import Message

__all__ = [
    "AckDecision",
    "AckFunction",
    "AckGate",
    "AckReply",
    "Feed",
    "IdLedger",
    "Reply",
    "SeqLog",
]

AckFunction: TypeAlias = Callable[[Any], Message | None]
"""``ack(data)``: the function form of acks. Called with every received message that decodes as
JSON; returns the ack to send back on that connection, or ``None`` to send none."""

AckDecision: TypeAlias = Literal["ack", "skip", "hold"]
"""What :meth:`AckGate.decide` says to do with one ack."""


def _check_name(owner: str, name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{owner}.{name} must be a non-empty string, got {value!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class AckReply:
    """Acknowledge every received message that carries an id: ``{"type": "ack", "id": <id>}``.

    The id is read from :attr:`Server.id_field` of the received message; the fields here shape
    the ack, mirroring ``bgws.AckPolicy(message_type=..., id_field=...)``.

    Args:
        message_type: The value of the ack's type field.
        id_field: The field of the ack that carries the id (or the list of ids).
        type_field: The name of the ack's type field.
        batch: Acknowledge this many ids in one ack, as a list (with 1, the id alone). A
            partial batch waits for :meth:`Server.flush_acks`, ``batch_delay`` or more ids.
        batch_delay: Seconds after which a partial batch is sent anyway; ``None``: never.
        fraction: Acknowledge only this fraction of the messages, spread evenly and
            deterministically: with 0.5 the 1st, 3rd, 5th, ... message is acked.

    Raises:
        ValueError: An empty field name, ``batch`` below 1, a negative ``batch_delay`` or a
            ``fraction`` outside 0-1.
    """

    message_type: str = "ack"
    id_field: str = "id"
    type_field: str = "type"
    batch: int = 1
    batch_delay: float | None = None
    fraction: float = 1.0

    def __post_init__(self) -> None:
        for name in ("message_type", "id_field", "type_field"):
            _check_name("AckReply", name, getattr(self, name))
        if self.batch < 1:
            raise ValueError(f"AckReply.batch must be at least 1, got {self.batch}")
        if self.batch_delay is not None and self.batch_delay < 0:
            raise ValueError(f"AckReply.batch_delay must be >= 0, got {self.batch_delay}")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"AckReply.fraction must be in 0-1, got {self.fraction}")

    def message(self, ids: Sequence[Any]) -> dict[str, Any]:
        """The ack of these ids: the id alone when ``batch`` is 1 and there is one, else a list."""
        value = ids[0] if self.batch == 1 and len(ids) == 1 else list(ids)
        return {self.type_field: self.message_type, self.id_field: value}


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """Answer requests: ``{"type": "reply", "id": <the request's id>, **body(request)}``.

    Only received JSON objects that carry an id (in :attr:`Server.id_field`) are answered.

    Args:
        request_type: Answer only messages whose type field has this value; ``None``: every
            message with an id.
        message_type: The value of the reply's type field.
        id_field: The field of the reply that carries the request's id (the engine's
            ``reply_id_field``, or its ``id_field`` when that is unset).
        type_field: The name of the type field, in requests and replies.
        body: Given the request (a dict), return the other fields of the reply, or ``None``
            to send no reply. Its fields may override the type, not the id.

    Raises:
        ValueError: An empty field name or type, or a ``body`` that is not callable.
    """

    request_type: str | None = None
    message_type: str = "reply"
    id_field: str = "id"
    type_field: str = "type"
    body: Callable[[Any], Mapping[str, Any] | None] | None = None

    def __post_init__(self) -> None:
        for name in ("message_type", "id_field", "type_field"):
            _check_name("Reply", name, getattr(self, name))
        if self.request_type is not None:
            _check_name("Reply", "request_type", self.request_type)
        if self.body is not None and not callable(self.body):
            raise ValueError("Reply.body must be callable")

    def answer(self, request: Mapping[str, Any], request_id: Any) -> dict[str, Any] | None:
        """The reply to ``request`` (whose id is ``request_id``), or ``None`` for no reply."""
        if self.request_type is not None and request.get(self.type_field) != self.request_type:
            return None
        fields = {} if self.body is None else self.body(request)
        if fields is None:
            return None
        return {self.type_field: self.message_type, **fields, self.id_field: request_id}


@dataclasses.dataclass(frozen=True, slots=True)
class Feed:
    """A sequence-numbered feed: how :meth:`Server.publish` numbers and how resumes are asked.

    The defaults match ``bgws.ResumePolicy()``: published messages carry ``"seq"`` (1, 2, ...)
    and ``{"type": "resume", "after": N}`` replays every kept message with a seq above N.

    Args:
        seq_field: The field each published message gets its sequence number in.
        request_type: The type of resume requests; ``None``: resume requests are not answered.
        position_field: The field of a resume request that carries the position.
        type_field: The name of the type field of resume requests.
        history: How many published messages are kept for replay (the newest ones).
        start: The sequence number of the first published message.

    Raises:
        ValueError: An empty field name or type, or ``history`` below 1.
    """

    seq_field: str = "seq"
    request_type: str | None = "resume"
    position_field: str = "after"
    type_field: str = "type"
    history: int = 1000
    start: int = 1

    def __post_init__(self) -> None:
        for name in ("seq_field", "position_field", "type_field"):
            _check_name("Feed", name, getattr(self, name))
        if self.request_type is not None:
            _check_name("Feed", "request_type", self.request_type)
        if self.history < 1:
            raise ValueError(f"Feed.history must be at least 1, got {self.history}")

    def resume_position(self, data: object) -> int | None:
        """The position ``data`` asks to resume after, or ``None`` if it is no resume request."""
        if self.request_type is None or not isinstance(data, Mapping):
            return None
        if data.get(self.type_field) != self.request_type:
            return None
        position = data.get(self.position_field)
        return position if type(position) is int else None


def _key(msg_id: Any) -> Hashable:
    """A key that tells ids apart as JSON does: ``1`` and ``"1"`` differ, lists are allowed."""
    return msgspec.json.encode(msg_id)


class IdLedger:
    """Every message id the server received, to find duplicates.

    Attributes:
        ids: Every id received, in order, repeats included.
        duplicates: Every repeat, in order: an id received three times is in it twice.
    """

    def __init__(self) -> None:
        self.ids: list[Any] = []
        self.duplicates: list[Any] = []
        self._counts: dict[Hashable, int] = {}
        self._unique: list[Any] = []

    def add(self, msg_id: Any) -> bool:
        """Record one received id; return whether it was seen before.

        Raises:
            TypeError: The id cannot be encoded as JSON.
        """
        key = _key(msg_id)
        count = self._counts.get(key, 0)
        self._counts[key] = count + 1
        self.ids.append(msg_id)
        if count:
            self.duplicates.append(msg_id)
        else:
            self._unique.append(msg_id)
        return count > 0

    def count(self, msg_id: Any) -> int:
        """How many times this id was received."""
        return self._counts.get(_key(msg_id), 0)

    @property
    def unique_count(self) -> int:
        """How many distinct ids were received."""
        return len(self._unique)

    def unique(self) -> list[Any]:
        """Every distinct id, in the order each was first received."""
        return list(self._unique)


class SeqLog:
    """The published messages of a :class:`Feed`: numbered, the newest ``history`` kept.

    Args:
        feed: Field names, history size and first sequence number.
    """

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.published = 0
        self._next = feed.start
        self._history: deque[tuple[int, dict[str, Any]]] = deque(maxlen=feed.history)

    def configure(self, feed: Feed) -> None:
        """Use other options; the kept history is cut to the new size, numbering goes on."""
        if feed is self.feed:
            return
        if not self.published:
            self._next = feed.start
        self.feed = feed
        self._history = deque(self._history, maxlen=feed.history)

    def append(self, message: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """Number a message and keep it: return its seq and a copy carrying it.

        Raises:
            TypeError: ``message`` is not a mapping.
        """
        if not isinstance(message, Mapping):
            raise TypeError(f"only a mapping can be published, not {type(message).__name__}")
        seq = self._next
        stamped = {**message, self.feed.seq_field: seq}
        self._next += 1
        self.published += 1
        self._history.append((seq, stamped))
        return seq, stamped

    @property
    def next_seq(self) -> int:
        """The seq the next published message will get."""
        return self._next

    @property
    def last_seq(self) -> int | None:
        """The seq of the last published message, or ``None`` before the first."""
        return self._next - 1 if self.published else None

    def messages(self) -> list[dict[str, Any]]:
        """The kept messages, oldest first."""
        return [message for _, message in self._history]

    def after(self, position: int) -> list[tuple[int, dict[str, Any]]]:
        """The kept messages with a seq above ``position``, oldest first, with their seqs."""
        return [(seq, message) for seq, message in self._history if seq > position]


class AckGate:
    """Decides, for each ack the server could send, whether to send, skip or hold it.

    In order: while paused, every ack is held (or skipped); then :meth:`skip` counts down;
    then the ``fraction`` of :class:`AckReply` lets an evenly spread share through.
    """

    def __init__(self) -> None:
        self.paused = False
        self.holding = False
        self._skip = 0
        self._seen = 0

    @property
    def skipping(self) -> int:
        """How many of the next acks will be skipped."""
        return self._skip

    def skip(self, n: int) -> None:
        """Skip the next ``n`` acks (on top of those already to skip).

        Raises:
            ValueError: ``n`` is negative.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self._skip += n

    def pause(self, *, hold: bool) -> None:
        """Stop acking: hold acks to send on :meth:`resume` (``hold``) or skip them."""
        self.paused, self.holding = True, hold

    def resume(self) -> None:
        """Ack again."""
        self.paused = self.holding = False

    def decide(self, fraction: float = 1.0) -> AckDecision:
        """What to do with the next ack."""
        if self.paused:
            return "hold" if self.holding else "skip"
        if self._skip:
            self._skip -= 1
            return "skip"
        self._seen += 1
        share = Fraction(repr(fraction))
        if math.ceil(self._seen * share) > math.ceil((self._seen - 1) * share):
            return "ack"
        return "skip"
