"""Resuming an inbound feed: the last sequence number seen, kept and asked for again.

:class:`Resume` follows the sequence numbers of incoming messages (a
:class:`~bgws.ResumePolicy`): it drops duplicates, reports gaps as :class:`bgws.SequenceGap`,
writes the position to the store at most every 50 ms (batched, not per message), and after
every reconnect gives the resume request the writer sends before anything queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import BgwsError, SequenceGap
from ..message import Codec, Message
from ..policies import ResumePolicy

if TYPE_CHECKING:
    from .store import Store
    from .writer import Frame

__all__ = ["Resume"]

_CHECKPOINT_DELAY = 0.05
"""Resume positions are written at most this often (seconds): batched, not per message."""


class Resume:
    """The resume position of one service's inbound feed.

    Args:
        policy: the resume policy.
        key: the store key the position is kept under.
        store: where it is kept.
        report: reports a gap without waiting.
    """

    __slots__ = (
        "_checkpoint",
        "_key",
        "_policy",
        "_report",
        "_store",
        "duplicates",
        "gaps",
        "position",
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
        self.position: int | None = None
        """The last processed inbound sequence number, or ``None``."""
        self.duplicates = 0
        self.gaps = 0

    def load(self, kv: dict[str, str]) -> None:
        """Take the position the store kept."""
        position = kv.get(self._key)
        if position is not None:
            self.position = int(position)

    def frame(self, codec: Codec) -> Frame | None:
        """The resume request for a fresh link, or ``None`` before the first message."""
        if self.position is None:
            return None
        message = self._policy.resume_message(self.position, codec.type_field)
        payload, binary, _ = codec.encode(message, assign_id=False)
        return payload, binary

    def see(self, message: Message, loop: asyncio.AbstractEventLoop) -> bool:
        """Follow an incoming message's sequence number; ``True``: a duplicate, consumed."""
        seq = message.get(self._policy.seq_field)
        if type(seq) is not int:
            return False
        last = self.position
        if last is not None:
            if seq <= last:
                self.duplicates += 1
                return True
            if seq > last + 1:
                self.gaps += 1
                self._report(SequenceGap(last + 1, seq - 1))
        self.position = seq
        if self._checkpoint is None:
            self._checkpoint = loop.call_later(_CHECKPOINT_DELAY, self._save)
        return False

    def _save(self) -> None:
        self._checkpoint = None
        if self.position is not None:
            self._store.set_soon(self._key, str(self.position))

    async def close(self) -> None:
        """Write the position now (the service stops)."""
        if self._checkpoint is not None:
            self._checkpoint.cancel()
            self._checkpoint = None
        if self.position is not None:
            await self._store.set(self._key, str(self.position))
