"""What the inbox holds, and the flow control that keeps it within its bounds.

:class:`InboxLoad` counts the messages and payload bytes the inbox holds (queued, or in the
batch being dispatched), pauses the link's reading when either bound is reached and resumes it
once both have fallen to half; a plugin (the NATS bridge) may also hold reading paused.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["InboxLoad"]


class InboxLoad:
    """What the inbox holds, and the flow control that keeps it within its bounds.

    It does no I/O: it calls the link's ``pause_reading`` and ``resume_reading`` that it is
    given. Only the queued route pays for it (two calls per queued message); a message routed
    straight from the read callback is never counted, because it is never held.

    A message counts from the moment it is queued until its handlers are done (so the batch
    being dispatched counts too), in messages and in payload bytes. Reading pauses when
    either bound is reached and resumes once both have fallen to half.

    The bounds hold exactly, give or take the network read that crossed one: a transport
    may still hand over the rest of that read (picows does; the websockets reader stops
    before its next message). So at any time ``count <= size + late`` and
    ``held < max_bytes + (1 + late) * largest message``.

    A plugin that forwards messages elsewhere (the NATS bridge) may pause reading too
    (:meth:`hold_reading`): the link reads again only once neither wants it paused.

    Args:
        size: the bound in messages (``inbox_size``).
        max_bytes: the bound in payload bytes (``inbox_max_bytes``).

    Attributes:
        count: messages held.
        held: payload bytes held.
        paused: whether this load has paused the link's reading.
        holding: whether a plugin holds the reading paused.
        pauses: how many times it has.
        peak: the most messages held at once.
        peak_bytes: the most payload bytes held at once.
        late: the most messages that arrived during one pause (the rest of a read).
    """

    __slots__ = (
        "_arrived",
        "_pause",
        "_resume",
        "count",
        "held",
        "holding",
        "late",
        "max_bytes",
        "paused",
        "pauses",
        "peak",
        "peak_bytes",
        "size",
    )

    def __init__(self, size: int, max_bytes: int) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.count = self.held = 0
        self.peak = self.peak_bytes = self.late = self._arrived = 0
        self.paused = self.holding = False
        self.pauses = 0
        self._pause: Callable[[], None] | None = None
        self._resume: Callable[[], None] | None = None

    def attach(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """Drive a new link's reading."""
        self._pause, self._resume = pause, resume
        self.paused = False
        if self.holding:
            pause()

    def detach(self) -> None:
        """The link is gone: nothing to pause or resume."""
        self._pause = self._resume = None
        self.paused = False

    def take(self, size: int) -> None:
        """Count one more message of ``size`` payload bytes; pause reading at a bound."""
        count = self.count = self.count + 1
        held = self.held = self.held + size
        if count > self.peak:
            self.peak = count
        if held > self.peak_bytes:
            self.peak_bytes = held
        if self.paused:  # the rest of the read that crossed a bound
            self._arrived += 1
            if self._arrived > self.late:
                self.late = self._arrived
        elif (count >= self.size or held >= self.max_bytes) and self._pause is not None:
            self.paused = True
            self.pauses += 1
            self._arrived = 0
            if not self.holding:
                self._pause()

    def done(self, size: int) -> None:
        """One message of ``size`` payload bytes is dispatched; resume at half the bounds."""
        count = self.count = self.count - 1
        held = self.held = self.held - size
        if (
            self.paused
            and count <= self.size >> 1
            and held <= self.max_bytes >> 1
            and self._resume is not None
        ):
            self.paused = False
            if not self.holding:
                self._resume()

    def hold_reading(self) -> None:
        """A plugin pauses reading (until :meth:`release_reading`), on this link and the next."""
        if not self.holding:
            self.holding = True
            self.pauses += 1
            if not self.paused and self._pause is not None:
                self._pause()

    def release_reading(self) -> None:
        """The plugin lets reading go on (once the inbox's own bounds allow it too)."""
        if self.holding:
            self.holding = False
            if not self.paused and self._resume is not None:
                self._resume()
