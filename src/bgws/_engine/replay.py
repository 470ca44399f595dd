"""What goes out again on every fresh link, before the outbox: the resume request and the
subscriptions.

:class:`Resume` follows the sequence numbers of incoming messages (a
:class:`~bgws.ResumePolicy`): it drops duplicates, reports gaps as :class:`bgws.SequenceGap`,
writes the position to the store at most every 50 ms (batched, not per message), and after
every reconnect gives the resume request. With an ``epoch_field`` it follows the feed's epoch
too: a message of another epoch is a :class:`bgws.StreamReset`, the position restarts from it,
and the store keeps the position with its epoch (as JSON ``{"epoch": ..., "position": ...}``;
a bare number, as kept without an epoch, is read too). A gap is remembered as a *hole* for
:data:`_HOLE_TTL` seconds: a message that fills it (a replay that comes after a live message
sent on the fresh link before the resume request was answered) is taken, not dropped as a
duplicate, and until the hole is filled the saved position and the resume request stay below
it, so a crash or another reconnect asks for the hole again. A plugin that forwards messages
elsewhere (the NATS bridge) may :meth:`Resume.hold` the saved position: it is then written only
as far as the plugin has released it, so a crash before the forward replays the message.

:class:`Subscriptions` holds a service's subscriptions by key, in the order they were made,
kept in the store. The writer sends the resume request, then the subscriptions, then the
outbox on every fresh link.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import BgwsError, SequenceGap, ServiceError, StreamReset
from ..message import Codec, Message
from ..policies import ResumePolicy
from .outbox import Entry

if TYPE_CHECKING:
    from .store import Store
    from .writer import Frame, Writer

__all__ = ["Resume", "Subscriptions"]

_CHECKPOINT_DELAY = 0.05
"""Resume positions are written at most this often (seconds): batched, not per message."""
_HOLE_TTL = 30.0
"""Seconds a gap waits for the replay that fills it; then it is given up."""
_MAX_HOLES = 64
"""At most this many gaps wait at once (the oldest is given up first)."""


class Resume:
    """The resume position of one service's inbound feed.

    Args:
        policy: the resume policy.
        key: the store key the position is kept under.
        store: where it is kept.
        report: reports a gap without waiting.
    """

    __slots__ = (
        "_caps",
        "_checkpoint",
        "_closed",
        "_held",
        "_holes",
        "_key",
        "_ordinals",
        "_policy",
        "_report",
        "_seen",
        "_store",
        "duplicates",
        "epoch",
        "gaps",
        "position",
        "resets",
    )

    def __init__(
        self,
        policy: ResumePolicy,
        key: str,
        store: Store,
        report: Callable[[BgwsError], None],
    ) -> None:
        self._policy = policy
        self._key = key
        self._store = store
        self._report = report
        self._checkpoint: asyncio.TimerHandle | None = None
        self._closed = False
        # With a holder: the position it released (what may be saved); None: no holder.
        self._held: list[int | None] | None = None
        # Gaps waiting for their replay: (first, last, give-up time), oldest first.
        self._holes: list[tuple[int, int, float]] = []
        # With a holder: (saved position cap, arrival ordinal) of each message that filled a
        # hole, until the holder releases a message that arrived no earlier than it.
        self._caps: deque[tuple[int, int]] = deque()
        self._ordinals: dict[int, int] = {}  # seq -> arrival ordinal of what was taken
        self._seen = 0
        self.position: int | None = None
        """The last processed inbound sequence number, or ``None``."""
        self.epoch: Any = None
        """The epoch of :attr:`position` (with ``epoch_field``), or ``None``."""
        self.duplicates = 0
        self.gaps = 0
        self.resets = 0

    def load(self, kv: dict[str, str]) -> None:
        """Take the position (and its epoch) the store kept."""
        kept = kv.get(self._key)
        if kept is None:
            return
        if kept.startswith("{"):
            data = msgspec.json.decode(kept)
            self.epoch = data.get("epoch")
            self.position = int(data["position"])
        else:
            self.position = int(kept)

    def frame(self, codec: Codec) -> Frame | None:
        """The resume request for a fresh link, or ``None`` before the first message."""
        if self.position is None:
            return None
        position = self.position
        if self._holes and self._expire():  # ask again for what a gap is still missing
            position = min(position, min(hole[0] for hole in self._holes) - 1)
        message = self._policy.resume_message(position, codec.type_field, self.epoch)
        payload, binary, _ = codec.encode(message, assign_id=False)
        return payload, binary

    def see(self, message: Message, loop: asyncio.AbstractEventLoop) -> bool:
        """Follow an incoming message's sequence number; ``True``: a duplicate, consumed."""
        seq = message.get(self._policy.seq_field)
        if type(seq) is not int:
            return False
        last = self.position
        epoch_field = self._policy.epoch_field
        if epoch_field is not None:
            epoch = message.get(epoch_field)
            if epoch is not None and epoch != self.epoch:
                old, self.epoch = self.epoch, epoch
                if old is not None:  # another epoch: the old position means nothing now
                    self.resets += 1
                    self._report(StreamReset(old, epoch, last, seq))
                    last = None
                    self._holes.clear()
                    self._caps.clear()
                    self._ordinals.clear()
                    if self._held is not None:  # nothing of the new epoch is released yet
                        self._held[0] = None
        if last is not None:
            if seq <= last:
                if not self._holes or not self._fill(seq):
                    self.duplicates += 1
                    return True
                ordinal = self._arrived(seq)
                if self._held is not None:  # saved only below it until the holder releases it
                    self._caps.append((seq - 1, ordinal))
                if self._checkpoint is None and self._held is None:
                    self._checkpoint = loop.call_later(_CHECKPOINT_DELAY, self._save)
                return False
            if seq > last + 1:
                self.gaps += 1
                self._report(SequenceGap(last + 1, seq - 1))
                self._holes.append((last + 1, seq - 1, time.monotonic() + _HOLE_TTL))
                if len(self._holes) > _MAX_HOLES:
                    del self._holes[0]
        if self._holes or self._caps:
            self._arrived(seq)
        self.position = seq
        if self._checkpoint is None and self._held is None:
            self._checkpoint = loop.call_later(_CHECKPOINT_DELAY, self._save)
        return False

    def _expire(self) -> bool:
        """Give up the holes past their time; whether any is left."""
        holes = self._holes
        now = time.monotonic()
        while holes and holes[0][2] < now:
            del holes[0]
        return bool(holes)

    def _fill(self, seq: int) -> bool:
        """Whether ``seq`` fills a hole (then the hole shrinks); holes past their time go."""
        holes = self._holes
        self._expire()
        for index, (first, last, deadline) in enumerate(holes):
            if first <= seq <= last:
                rest = [(a, b, deadline) for a, b in ((first, seq - 1), (seq + 1, last)) if a <= b]
                holes[index : index + 1] = rest
                return True
        return False

    def _arrived(self, seq: int) -> int:
        """Number a message taken while holes or caps are open (for the holder's releases)."""
        self._seen += 1
        if self._held is not None:
            self._ordinals[seq] = self._seen
        return self._seen

    def hold(self) -> Callable[[int], None]:
        """Save the position only as far as the caller releases it, from now on.

        The position that deduplicates and goes into the resume request is unchanged (it
        follows every message seen); only what is written to the store waits, so after a crash
        the feed resumes from the last released sequence and the rest is replayed.

        Returns:
            ``release(seq)``: every message up to ``seq`` is safe elsewhere; the saved
            position may advance to it (never backwards; batched like the checkpoint).

        Raises:
            ServiceError: the position is already held (one holder per service).
        """
        if self._held is not None:
            raise ServiceError("the resume position is already held by another plugin")
        held: list[int | None] = [None]
        self._held = held
        loop = asyncio.get_running_loop()

        def release(seq: int) -> None:
            last = held[0]
            if self._closed:  # the store is closed; a restart replays from the saved position
                return
            if self._ordinals:
                self._released(seq)
            if last is None or seq > last:
                held[0] = seq
                if self._checkpoint is None:
                    self._checkpoint = loop.call_later(_CHECKPOINT_DELAY, self._save)

        return release

    def _released(self, seq: int) -> None:
        """The holder released ``seq``: the caps of fills that arrived no later go."""
        ordinal = self._ordinals.get(seq)
        if ordinal is None:
            return
        caps = self._caps
        while caps and caps[0][1] <= ordinal:
            caps.popleft()
        ordinals = self._ordinals
        while ordinals:  # in arrival order: drop what arrived up to ``seq``
            first = next(iter(ordinals))
            if ordinals[first] > ordinal:
                break
            del ordinals[first]

    def _saved_position(self) -> int | None:
        """What may be written: the position, or what its holder released, kept below the
        holes still open and the fills not yet released."""
        position = self.position if self._held is None else self._held[0]
        if self._holes:
            self._expire()
        if position is None or not (self._holes or self._caps):
            if not self._holes and not self._caps:
                self._ordinals.clear()
            return position
        floor = min([hole[0] - 1 for hole in self._holes] + [cap for cap, _ in self._caps])
        return min(position, floor)

    def _save(self) -> None:
        self._checkpoint = None
        position = self._saved_position()
        if position is not None:
            self._store.set_soon(self._key, self._kept(position))

    def _kept(self, position: int) -> str:
        """A position as the store keeps it: a number, or JSON with its epoch."""
        if self.epoch is None:
            return str(position)
        return msgspec.json.encode({"epoch": self.epoch, "position": position}).decode()

    async def close(self) -> None:
        """Write the position now (the service stops)."""
        self._closed = True
        if self._checkpoint is not None:
            self._checkpoint.cancel()
            self._checkpoint = None
        position = self._saved_position()
        if position is not None:
            await self._store.set(self._key, self._kept(position))


_key_encoder = msgspec.json.Encoder(order="sorted")


class Subscriptions:
    """The kept subscriptions of one service.

    Args:
        codec: encodes the subscription messages.
        store: where they are kept.
        writer: sends a new subscription at once when connected.
    """

    __slots__ = ("_codec", "_kept", "_store", "_writer")

    def __init__(self, codec: Codec, store: Store, writer: Writer) -> None:
        self._codec = codec
        self._store = store
        self._writer = writer
        self._kept: dict[str, Entry] = {}

    def load(self, kept: list[tuple[str, Entry]]) -> None:
        """Take the subscriptions the store kept."""
        self._kept = dict(kept)

    def key(self, message: Mapping[str, Any] | str | bytes) -> str:
        """The default key of a subscription: the message without its type and id fields.

        So ``{"type": "subscribe", "channel": "ticks"}`` and
        ``{"type": "unsubscribe", "channel": "ticks"}`` share the key ``{"channel":"ticks"}``.
        """
        if isinstance(message, Mapping):
            skip = {self._codec.type_field, self._codec.id_field}
            body = {k: v for k, v in message.items() if k not in skip}
            return _key_encoder.encode(body).decode()
        return message if isinstance(message, str) else message.hex()

    async def add(self, message: Mapping[str, Any] | str | bytes, key: str | None) -> str:
        """Keep ``message`` and send it now (if connected) and after every reconnect."""
        key = key if key is not None else self.key(message)
        payload, binary, _ = self._codec.encode(message, assign_id=False)
        entry = Entry(payload, binary)
        await self._store.put_subscription(key, entry)
        self._kept.pop(key, None)
        self._kept[key] = entry
        self._writer.control((payload, binary))
        return key

    async def remove(self, key: str) -> bool:
        """Forget the subscription under ``key``; returns whether it existed."""
        existed = self._kept.pop(key, None) is not None
        await self._store.drop_subscription(key)
        return existed

    def frames(self) -> list[Frame]:
        """The subscription messages, in the order they are re-sent."""
        return [(entry.payload, entry.binary) for entry in self._kept.values()]

    @property
    def keys(self) -> list[str]:
        """The keys of the kept subscriptions, in the order they are re-sent."""
        return list(self._kept)
