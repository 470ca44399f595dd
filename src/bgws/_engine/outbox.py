"""The outgoing queue: priority lanes, time-to-live, and messages in flight until acknowledged.

:class:`Outbox` is the in-memory structure every service uses; the durable SQLite store
(:mod:`bgws._engine.sqlite`) writes each message to disk before it enters the outbox, and removes it
once delivered, so after a crash the outbox is rebuilt from the file.

* **Lanes.** Each message has a priority; higher priorities are sent first, and order is kept
  within a priority.
* **Bound.** ``max_size`` counts every message not yet delivered (queued and in flight). When
  full, the overflow policy decides: raise :class:`bgws.QueueFull` (``"raise"``), drop the
  oldest message of the lowest priority and report it (``"drop_oldest"``), or wait (``"wait"``).
* **Time-to-live.** A message whose ``expires_at`` passed before it could be sent is removed
  and reported as :class:`bgws.MessageExpired`: never dropped silently.
* **In flight.** With acknowledgements on, a sent message waits in flight (at most
  ``max_in_flight``) until :meth:`Outbox.ack`; :meth:`Outbox.requeue_in_flight` puts all of
  them back at the front of their lanes after a reconnect, and :meth:`Outbox.requeue_stale`
  those whose ack is overdue, to be sent again with the same id.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from ..config import Overflow  # one definition, with the option it types
from ..errors import AckTimeout, BgwsError, MessageDropped, MessageExpired, QueueFull
from .flag import Flag

__all__ = ["Entry", "Outbox", "Overflow"]


class Entry(msgspec.Struct, eq=False):
    """One outgoing message, already encoded.

    A :class:`msgspec.Struct` (built in C: a third of what a plain class with ``__slots__``
    costs per message here); ``eq=False`` keeps identity comparison.

    Attributes:
        payload: the frame's payload.
        binary: whether it goes out as a binary frame.
        id: the message id (``None`` for str/bytes messages or when ids are off).
        priority: its lane; higher is sent first.
        expires_at: the outbox clock's time after which it is not sent, or ``None``.
        durable: whether it is kept in the store until delivered.
        seq: its order of acceptance (the store's row id for durable messages).
        sent_at: when it was last handed to the transport (in flight, the outbox clock's
            time), else ``None``.
        attempts: how many times it was handed to the transport.
        accepted_at: when ``send()`` accepted it (the outbox clock's time; for a message
            restored from the store, when the store wrote it).
        waiter: a future resolved when it is acknowledged (``send(wait_for_ack=True)``).
    """

    payload: bytes | str
    binary: bool = False
    id: Any = None
    priority: int = 0
    expires_at: float | None = None
    durable: bool = False
    seq: int = 0
    sent_at: float | None = None
    attempts: int = 0
    waiter: asyncio.Future[None] | None = None
    accepted_at: float = 0.0

    def __repr__(self) -> str:
        return f"Entry(id={self.id!r}, priority={self.priority}, size={len(self.payload)})"


class Outbox:
    """Queued and in-flight outgoing messages, bounded.

    Args:
        max_size: the most undelivered messages it holds.
        overflow: what :meth:`reserve` does when full.
        report: called with each :class:`MessageDropped` / :class:`MessageExpired`.
        on_done: called with entries that left for good (delivered, dropped, expired), so a
            durable store can delete them.
        acks: whether sent messages wait in flight for an acknowledgement.
        max_in_flight: the in-flight window when ``acks`` is on.
        clock: the one clock of the outbox (seconds): time-to-live deadlines and ack timeouts
            are both read on it. Wall-clock time by default, since deadlines are kept in the
            store across restarts; tests pass their own to drive it.
    """

    def __init__(
        self,
        max_size: int,
        overflow: Overflow = "raise",
        *,
        report: Callable[[BgwsError], None] | None = None,
        on_done: Callable[[list[Entry]], None] | None = None,
        acks: bool = False,
        max_in_flight: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        """The outbox's clock: ``expires_at`` and ``sent_at`` are times on it."""
        self._lanes: dict[int, deque[Entry]] = {}
        self._order: list[int] = []  # priorities, ascending; served from the end
        self._queued = 0
        self._reserved = 0
        self._in_flight: dict[Any, Entry] = {}
        self._max = max_size
        self._overflow = overflow
        self._report = report or _ignore
        self._on_done = on_done or _ignore
        self.acks = acks
        self._window = max_in_flight
        self._seq = 0
        self._sendable = Flag()
        self._room = Flag()
        self._room.set()
        self._empty = Flag()
        self._empty.set()
        # Mirrors of _sendable and _empty, so add() (once per message) tests a bool instead
        # of calling into the events.
        self._can_send = False
        self._is_empty = True

    # -- size -------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Messages not yet delivered: queued plus in flight."""
        return self._queued + len(self._in_flight)

    @property
    def queued(self) -> int:
        """Messages waiting to be sent."""
        return self._queued

    @property
    def in_flight(self) -> int:
        """Messages sent and waiting for their acknowledgement."""
        return len(self._in_flight)

    def in_flight_ids(self) -> set[Any]:
        """The ids of the messages in flight."""
        return set(self._in_flight)

    def queued_ids(self) -> set[Any]:
        """The ids of the messages waiting to be sent."""
        return {entry.id for lane in self._lanes.values() for entry in lane}

    # -- adding -----------------------------------------------------------------------------

    async def reserve(self) -> None:
        """Make room for one message under the overflow policy; pair with :meth:`add`.

        Raises:
            QueueFull: the outbox is full and the policy is ``"raise"``.
        """
        while len(self) + self._reserved >= self._max:
            if self._overflow == "raise":
                raise QueueFull(f"outbox holds max_queue_size ({self._max}) messages")
            if self._overflow == "drop_oldest" and self._queued:
                victim = self._pop_oldest_lowest()
                self._on_done([victim])
                self._report(MessageDropped("outbox full: oldest message dropped", victim.payload))
                continue
            self._room.clear()
            await self._room.wait()
        self._reserved += 1

    def try_reserve(self) -> bool:
        """Reserve room for one message if there is some now, without waiting or dropping."""
        if self._queued + len(self._in_flight) + self._reserved >= self._max:  # len(self)
            return False
        self._reserved += 1
        return True

    def try_reserve_many(self, count: int) -> int:
        """Reserve room for up to ``count`` messages now; returns how many were reserved."""
        free = self._max - (self._queued + len(self._in_flight) + self._reserved)
        taken = min(count, max(free, 0))
        self._reserved += taken
        return taken

    def number_many(self, entries: list[Entry]) -> None:
        """:meth:`number` for each entry, in order."""
        seq = self._seq
        now = self.clock()
        for entry in entries:
            seq += 1
            entry.seq = seq
            entry.accepted_at = now
        self._seq = seq

    def release(self) -> None:
        """Give back a reservation that will not be used (the message was refused)."""
        self._reserved -= 1
        self._room.set()

    def number(self, entry: Entry) -> Entry:
        """Give ``entry`` the next sequence number (its place in the order of acceptance)."""
        self._seq += 1
        entry.seq = self._seq
        entry.accepted_at = self.clock()
        return entry

    def add(self, entry: Entry, *, reserved: bool = True) -> None:
        """Queue ``entry`` at the back of its lane (after :meth:`reserve`)."""
        if reserved:
            self._reserved -= 1
        if not entry.seq:
            self.number(entry)
        elif entry.seq > self._seq:
            self._seq = entry.seq
        lane = self._lanes.get(entry.priority)
        if lane is None:
            lane = self._lane(entry.priority)
        lane.append(entry)
        self._queued += 1
        if self._is_empty:
            self._set_empty(False)
        if not self._can_send:
            self._update_sendable()

    def restore(self, entries: Iterable[Entry]) -> None:
        """Load entries kept by a store (at start), in their original order."""
        for entry in sorted(entries, key=_by_seq):
            self.add(entry, reserved=False)

    # -- sending ----------------------------------------------------------------------------

    async def wait_sendable(self) -> None:
        """Return once a message may be sent (queued, and the in-flight window has room)."""
        await self._sendable.wait()

    async def wait_empty(self) -> None:
        """Return once every message was delivered (or left otherwise)."""
        await self._empty.wait()

    def take(
        self, limit: int, now: float | None = None, lanes: dict[int, int] | None = None
    ) -> list[Entry]:
        """Remove up to ``limit`` messages to send, highest priority first.

        Expired messages met on the way are removed and reported. With acks on, the in-flight
        window bounds how many are taken.

        Args:
            limit: the most messages to take.
            now: the time to judge expiry by (default: :attr:`clock`).
            lanes: the most messages to take from some lanes, by priority (send rates).
        """
        if now is None:
            now = self.clock()
        if self.acks:
            limit = min(limit, self._window - len(self._in_flight))
        batch: list[Entry] = []
        expired: list[Entry] = []
        order = self._order
        i = len(order) - 1
        while len(batch) < limit and i >= 0:
            lane = self._lanes[order[i]]
            stop = limit if lanes is None else min(limit, len(batch) + lanes.get(order[i], limit))
            while lane and len(batch) < stop:
                entry = lane.popleft()
                self._queued -= 1
                if entry.expires_at is not None and entry.expires_at <= now:
                    expired.append(entry)
                else:
                    batch.append(entry)
            i -= 1
        if expired:
            self._expire(expired)
        self._update_sendable()
        return batch

    def sent(self, batch: list[Entry], now: float | None = None) -> None:
        """The transport took ``batch``: it goes in flight, or leaves for good without acks.

        Args:
            batch: the messages taken by the transport.
            now: their send time (default: :attr:`clock`), read only with acks on.
        """
        for entry in batch:
            entry.attempts += 1
        if self.acks:
            if now is None:
                now = self.clock()
            flight = self._in_flight
            for entry in batch:
                entry.sent_at = now
                flight[entry.id] = entry
            self._update_sendable()
        else:
            self._finish(batch)

    def put_back(self, batch: list[Entry]) -> None:
        """Return messages that could not be sent to the front of their lanes, in order."""
        for entry in reversed(batch):
            self._lane(entry.priority).appendleft(entry)
            self._queued += 1
        if batch:
            self._set_empty(False)
        self._update_sendable()

    def withdraw(self, entry: Entry) -> bool:
        """Remove a queued message that is no longer wanted (its request timed out).

        Returns:
            Whether it was still queued (not yet sent).
        """
        lane = self._lanes.get(entry.priority)
        if lane is None or entry not in lane:
            return False
        lane.remove(entry)
        self._queued -= 1
        self._finish([entry], delivered=False)
        self._update_sendable()
        return True

    # -- acknowledgements -------------------------------------------------------------------

    def ack(self, ids: Iterable[Any]) -> int:
        """Mark messages delivered; returns how many of ``ids`` were in flight."""
        flight = self._in_flight
        done = [entry for msg_id in ids if (entry := flight.pop(msg_id, None)) is not None]
        if done:
            self._finish(done)
            self._update_sendable()
        return len(done)

    def requeue_in_flight(self) -> int:
        """After a reconnect: every message in flight goes back to be sent again (same id)."""
        entries = list(self._in_flight.values())
        self._in_flight.clear()
        self._requeue(entries)
        return len(entries)

    def requeue_stale(self, now: float, ack_timeout: float) -> int:
        """Messages whose ack is overdue go back to be sent again; returns how many."""
        stale = [
            e
            for e in self._in_flight.values()
            if e.sent_at is not None and now - e.sent_at >= ack_timeout
        ]
        for entry in stale:
            del self._in_flight[entry.id]
        self._requeue(stale)
        return len(stale)

    def next_ack_deadline(self, ack_timeout: float) -> float | None:
        """When the oldest in-flight message's ack becomes overdue, or ``None``."""
        sent = [e.sent_at for e in self._in_flight.values() if e.sent_at is not None]
        return min(sent) + ack_timeout if sent else None

    def next_expiry(self) -> float | None:
        """The earliest ``expires_at`` among queued messages, or ``None``."""
        times = [e.expires_at for lane in self._lanes.values() for e in lane if e.expires_at]
        return min(times) if times else None

    def expire(self, now: float) -> int:
        """Remove and report queued messages whose time-to-live passed; returns how many."""
        expired: list[Entry] = []
        for lane in self._lanes.values():
            keep = [e for e in lane if e.expires_at is None or e.expires_at > now]
            if len(keep) != len(lane):
                expired.extend(e for e in lane if e.expires_at is not None and e.expires_at <= now)
                lane.clear()
                lane.extend(keep)
        self._queued -= len(expired)
        if expired:
            self._expire(expired)
            self._update_sendable()
        return len(expired)

    def drain_volatile(self) -> list[Entry]:
        """At stop: remove and return the messages no store keeps, oldest first.

        Durable messages stay (and stay counted): the store sends them after the next start.
        Whoever waits for an acknowledgement stops waiting with :class:`bgws.AckTimeout`.
        """
        self.requeue_in_flight()
        volatile: list[Entry] = []
        for lane in self._lanes.values():
            keep = [e for e in lane if e.durable]
            if len(keep) != len(lane):
                volatile.extend(e for e in lane if not e.durable)
                lane.clear()
                lane.extend(keep)
        self._queued -= len(volatile)
        everything = [e for lane in self._lanes.values() for e in lane] + volatile
        self._fail_waiters(everything, "the service stopped before the message was acknowledged")
        self._update_sendable()
        if not len(self):
            self._set_empty(True)
        return sorted(volatile, key=_by_seq)

    # -- inspection (bgws outbox) -----------------------------------------------------------

    def oldest_accepted(self) -> float | None:
        """When the oldest undelivered message was accepted (outbox clock), or ``None``."""
        # Each lane is in order of acceptance, messages put back go to its front: the heads
        # and the messages in flight hold the oldest.
        times = [lane[0].accepted_at for lane in self._lanes.values() if lane]
        times.extend(e.accepted_at for e in self._in_flight.values())
        return min(times) if times else None

    def entries(self) -> list[tuple[Entry, bool]]:
        """Every undelivered message with whether it is in flight, in order of acceptance."""
        out = [(e, False) for lane in self._lanes.values() for e in lane]
        out.extend((e, True) for e in self._in_flight.values())
        out.sort(key=_by_seq_pair)
        return out

    def purge(self, seqs: Iterable[int] | None = None) -> list[Entry]:
        """Remove messages (all, or those whose ``seq`` is in ``seqs``); returns them.

        Removed messages leave for good (the store forgets them) and whoever waits for their
        acknowledgement stops waiting with :class:`bgws.AckTimeout`.
        """
        chosen = None if seqs is None else set(seqs)
        removed: list[Entry] = []
        for lane in self._lanes.values():
            keep = [e for e in lane if chosen is not None and e.seq not in chosen]
            if len(keep) != len(lane):
                removed.extend(e for e in lane if chosen is None or e.seq in chosen)
                lane.clear()
                lane.extend(keep)
        self._queued -= len(removed)
        for msg_id, entry in list(self._in_flight.items()):
            if chosen is None or entry.seq in chosen:
                del self._in_flight[msg_id]
                removed.append(entry)
        if removed:
            self._on_done(removed)
            self._fail_waiters(removed, "the message was purged from the outbox")
            self._room.set()
            if not len(self):
                self._set_empty(True)
            self._update_sendable()
        return sorted(removed, key=_by_seq)

    # -- internals --------------------------------------------------------------------------

    def _lane(self, priority: int) -> deque[Entry]:
        lane = self._lanes.get(priority)
        if lane is None:
            lane = self._lanes[priority] = deque()
            bisect.insort(self._order, priority)
        return lane

    def _requeue(self, entries: list[Entry]) -> None:
        for entry in sorted(entries, key=_by_seq, reverse=True):
            entry.sent_at = None
            self._lane(entry.priority).appendleft(entry)
            self._queued += 1
        if entries:
            self._update_sendable()

    def _pop_oldest_lowest(self) -> Entry:
        for priority in self._order:
            lane = self._lanes[priority]
            if lane:
                self._queued -= 1
                return lane.popleft()
        raise AssertionError("no queued message to drop")

    def _expire(self, expired: list[Entry]) -> None:
        self._finish(expired, delivered=False)
        for entry in expired:
            self._report(MessageExpired("time-to-live passed before it could be sent", entry))

    def _finish(self, entries: list[Entry], *, delivered: bool = True) -> None:
        self._on_done(entries)
        if delivered:
            for entry in entries:
                waiter = entry.waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        else:
            self._fail_waiters(entries, "the message expired before it was acknowledged")
        self._room.set()
        if not len(self):
            self._set_empty(True)

    def _fail_waiters(self, entries: list[Entry], why: str) -> None:
        for entry in entries:
            waiter = entry.waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(AckTimeout(why))
                waiter.exception()  # the sender may have stopped waiting: mark it retrieved

    def _update_sendable(self) -> None:
        ready = self._queued > 0 and (not self.acks or len(self._in_flight) < self._window)
        self._can_send = ready
        if ready:
            self._sendable.set()
        else:
            self._sendable.clear()

    def _set_empty(self, empty: bool) -> None:
        self._is_empty = empty
        if empty:
            self._empty.set()
        else:
            self._empty.clear()


def _by_seq(entry: Entry) -> int:
    return entry.seq


def _by_seq_pair(item: tuple[Entry, bool]) -> int:
    return item[0].seq


def _ignore(*_: Any) -> None:
    return None
