"""The writer: the one place that puts frames on a link.

:class:`Writer` is the only caller of ``link.send`` and ``link.send_many`` in the engine. On a
fresh link it writes, in this order: the auth message (:meth:`Writer.hello`, during the
connect), the control frames (the resume request, then the subscriptions, at
:meth:`Writer.attach`), then the outbox, drained by one task per link in priority order,
corked in batches. Between those, :meth:`Writer.control` writes a frame that must not wait
behind the outbox (a subscription made while connected, an application heartbeat), and
:meth:`Writer.direct` is the send path's shortcut: one message per loop turn goes straight out
when nothing is queued (lowest latency); the rest of a burst waits for the drain task.
With a send rate (:class:`~bgws._engine.pacing.Pacer`) every message waits its turn in the
outbox instead, and the drain task takes only as many as the rate allows. Control frames count
against the rate too, and the ones it does not allow yet are held (in order, ahead of the
outbox) and written by a small task as tokens come: an exchange that counts subscriptions
(Binance does) would drop a link that sent twenty of them at once. An application heartbeat is
counted but never held, so the keepalive's timing stays true.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable

from ..errors import BgwsError, LinkError
from ..transport import Link
from .outbox import Entry, Outbox
from .pacing import Pacer

__all__ = ["Frame", "Writer"]

Frame = tuple[bytes | str, bool]
"""One frame to write: ``(payload, binary)``."""

_WRITE_BATCH = 256


class Writer:
    """Writes one service's frames on its current link.

    Args:
        outbox: the queue it drains.
        report: reports an error without waiting (the service's error path).
        written: called after each batch the link took (the ack timer's wake-up), or ``None``.
        pacer: the send rates to keep (every message then goes through the outbox), or
            ``None``.
    """

    # Slots: one writer per service, touched on every send.
    __slots__ = (
        "_burst",
        "_held",
        "_held_link",
        "_held_task",
        "_link",
        "_loop",
        "_outbox",
        "_pacer",
        "_report",
        "_task",
        "_written",
        "sent",
    )

    def __init__(
        self,
        outbox: Outbox,
        report: Callable[[BgwsError], None],
        written: Callable[[list[Entry]], None] | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self._outbox = outbox
        self._report = report
        self._written = written
        self._link: Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._burst = False
        self._pacer = pacer
        # Control frames the send rate holds back, for one link, and the task writing them.
        self._held: deque[Frame] = deque()
        self._held_link: Link | None = None
        self._held_task: asyncio.Task[None] | None = None
        self.sent = 0
        """Messages the link took (direct writes and drained batches)."""

    @property
    def connected(self) -> bool:
        """Whether a link is attached."""
        return self._link is not None

    @staticmethod
    def hello(link: Link, frame: Frame) -> None:
        """Write the first frame of a fresh link (the auth message), before anything else.

        Args:
            link: the link, just opened and not yet attached.
            frame: ``(payload, binary)``.
        """
        link.send(frame[0], frame[1])

    def attach(self, link: Link, control: Iterable[Frame], *, requeue: bool = True) -> None:
        """A link is up: write the control frames, then start draining the outbox.

        Args:
            link: the open link.
            control: frames that go before any queued message (resume, subscriptions).
            requeue: send the messages in flight again first (``False`` when the writer
                moves to a new link while the old one is still open to acknowledge them).
        """
        self._link = link
        self._loop = asyncio.get_running_loop()
        if requeue:
            self._outbox.requeue_in_flight()
        self._write_control(link, control)
        self._task = asyncio.create_task(self._drain(link), name="bgws-writer")
        self._task.add_done_callback(lambda task: self._ended(task, link))

    def prime(self, link: Link, control: Iterable[Frame]) -> None:
        """Write control frames on a link that is not attached yet (a rotation's new link).

        Args:
            link: the new link, open and not attached.
            control: the resume request and the subscriptions.
        """
        self._write_control(link, control)

    async def detach(self, *, requeue: bool = True) -> None:
        """The link is gone: stop writing; what was in flight goes back to be sent again.

        Args:
            requeue: put the messages in flight back (``False``: the link stays open a while
                and may still acknowledge them).
        """
        self._link = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if requeue:  # the link is gone: the next link gets its own resume and subscriptions
            self._drop_held()
            self._outbox.requeue_in_flight()

    def control(self, frame: Frame, *, paced: bool = True) -> bool:
        """Write a frame now, ahead of the outbox, if a link is attached.

        Args:
            frame: ``(payload, binary)``.
            paced: under a send rate, hold the frame until the rate allows it (``False``:
                write it now and only count it, for an application heartbeat).

        Returns:
            Whether it was handed to a link (written, or held for it).
        """
        link = self._link
        if link is None:
            return False
        if paced:
            self._write_control(link, (frame,))
            return True
        link.send(frame[0], frame[1])
        if self._pacer is not None:
            self._pacer.control()
        return True

    def _write_control(self, link: Link, frames: Iterable[Frame]) -> None:
        """Write ``frames`` on ``link`` as far as the send rate allows; hold the rest, in order."""
        pacer = self._pacer
        if pacer is None:
            for payload, binary in frames:
                link.send(payload, binary)
            return
        held = self._held
        if self._held_link is not link:  # frames held for an earlier link are not sent
            self._drop_held()
            self._held_link = link
        held.extend(frames)
        while held and pacer.control_room():
            payload, binary = held.popleft()
            link.send(payload, binary)
            pacer.control()
        if held and (self._held_task is None or self._held_task.done()):
            self._held_task = asyncio.create_task(self._write_held(link), name="bgws-control")

    def _drop_held(self) -> None:
        """Forget the held control frames (their link is gone or replaced)."""
        self._held.clear()
        self._held_link = None
        if self._held_task is not None:
            self._held_task.cancel()
            self._held_task = None

    async def _write_held(self, link: Link) -> None:
        """Write the held control frames as the rate allows, while ``link`` is theirs."""
        pacer = self._pacer
        assert pacer is not None
        held = self._held
        while held and self._held_link is link and not link.closed:
            if not pacer.control_room():
                await pacer.hold()
                continue
            payload, binary = held.popleft()
            try:
                link.send(payload, binary)
            except Exception:  # the link is breaking: the next one gets its own control frames
                return
            pacer.control()

    def direct(self, payload: bytes | str, binary: bool, request: bool) -> bool:
        """Write a message straight away if nothing stands in the way; ``False`` if not.

        Nothing stands in the way when a link is attached and writable, no burst is under
        way and the outbox has nothing queued (order is kept). A request does not open a
        burst: requests are latency-bound, each is written as it comes.

        Args:
            payload: the encoded message.
            binary: whether it goes out as a binary frame.
            request: whether it is a request (no burst).
        """
        link = self._link
        if self._burst or link is None or self._outbox.queued or link.write_paused or link.closed:
            return False
        if self._pacer is not None:  # paced: every message waits its turn in the outbox
            return False
        try:
            link.send(payload, binary)
        except Exception:  # the link is breaking: queue it like any offline send
            return False
        if not request:
            # One message per loop turn goes straight out; the rest of a burst waits for the
            # drain task, which writes it as one corked batch.
            self._burst = True
            (self._loop or asyncio.get_running_loop()).call_soon(self._end_burst)
        self.sent += 1
        return True

    def _end_burst(self) -> None:
        self._burst = False

    def _ended(self, task: asyncio.Task[None], link: Link) -> None:
        """A drain task that stopped with an error drops its link, so the service reconnects."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        failure = LinkError(f"the writer stopped: {error!r}")
        failure.__cause__ = error
        self._report(failure)
        link.abort()

    async def _drain(self, link: Link) -> None:
        outbox = self._outbox
        written = self._written
        while True:
            await outbox.wait_sendable()
            if link.write_paused:
                await link.wait_writable()
                continue
            if link.closed:  # the loop is about to hear of it; keep the messages queued
                return
            pacer = self._pacer
            if pacer is None:
                batch = outbox.take(_WRITE_BATCH)
            elif self._held and self._held_link is link:  # held control frames go first
                await pacer.hold()
                continue
            else:
                limit, lanes = pacer.room(_WRITE_BATCH)
                batch = outbox.take(limit, lanes=lanes) if limit else []
                if not batch:  # the rate holds back what is queued: wait for a token
                    await pacer.hold()
                    continue
                pacer.spent(batch)
            done = link.send_many([(e.payload, e.binary) for e in batch])
            if done < len(batch):
                # The link broke under us: what was not written goes back, in order, and the
                # link is dropped so the service reconnects (never a writer that died silently).
                outbox.sent(batch[:done])
                outbox.put_back(batch[done:])
                self.sent += done
                self._report(LinkError("writing to the connection failed; reconnecting"))
                link.abort()
                return
            outbox.sent(batch)
            self.sent += len(batch)
            if written is not None:
                written(batch)
