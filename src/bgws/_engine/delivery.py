"""Delivery: the outgoing path and everything that makes it safe.

:class:`Delivery` owns the outbox and the store, and carries out the promises of the design:
a message accepted by ``send()`` is on disk (SQLite store) before ``send()`` returns; one
writer task per link drains the outbox in priority order; with an ack policy each message
stays in flight until acknowledged and is resent with the same id after a reconnect or an ack
timeout; requests wait for the reply that carries their id; subscriptions are re-sent after
every reconnect, before the outbox; the resume position of an inbound feed is kept and sent.

It also sees every incoming message before the handlers (:meth:`Delivery.intercept`), to take
acks, replies and duplicates out of the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from ..config import Config
from ..errors import (
    AckTimeout,
    BgwsError,
    LinkError,
    MessageDropped,
    QueueFull,
    RequestTimeout,
    SequenceGap,
    ServiceClosed,
    ServiceError,
)
from ..message import Codec, Message
from ..storage import legacy_store_path, store_endpoint, store_path
from ..transport import Link
from .outbox import Entry, Outbox
from .store import DeliveryStore, MemoryStore, SqliteStore

__all__ = ["Delivery"]

_WRITE_BATCH = 256
_CHECKPOINT_DELAY = 0.05
"""Resume positions are written at most this often (seconds): batched, not per message."""

_key_encoder = msgspec.json.Encoder(order="sorted")


class Delivery:
    """The outgoing path of one service.

    Args:
        config: the service's config.
        codec: encodes messages.
        report: reports an error without waiting (the service's error path).
    """

    # Slots: see Dispatcher (a full instance dict per service otherwise).
    __slots__ = (
        "_ack",
        "_burst",
        "_checkpoint",
        "_codec",
        "_config",
        "_intercepts_changed",
        "_keeper",
        "_link",
        "_loop",
        "_opening",
        "_pending",
        "_position",
        "_reply_field",
        "_report",
        "_resume",
        "_resume_key",
        "_subscriptions",
        "_sweep_at",
        "_sweeper",
        "_wake",
        "_writer",
        "dropped",
        "duplicates",
        "durable",
        "expired",
        "gaps",
        "intercepts",
        "opened",
        "outbox",
        "resent",
        "sent",
        "store",
    )

    def __init__(self, config: Config, codec: Codec, report: Callable[[BgwsError], None]) -> None:
        self._config = config
        self._codec = codec
        self._report = report
        self.store: DeliveryStore
        if config.storage == "sqlite":
            tag = config.service_tag or "bgws"
            self.store = SqliteStore(
                store_path(config),
                sync=config.storage_sync,
                endpoint=store_endpoint(config.url, tag),
                legacy_path=None if config.storage_path else legacy_store_path(tag),
            )
        else:
            self.store = MemoryStore()
        self.durable = config.storage == "sqlite"
        self._ack = config.ack
        self.outbox = Outbox(
            config.max_queue_size,
            config.overflow,
            report=self._count_and_report,
            on_done=self.store.forget,
            acks=config.ack is not None,
            max_in_flight=config.max_in_flight,
        )
        self._link: Link | None = None
        self._writer: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._opening: asyncio.Future[None] | None = None
        self.opened = False
        """Whether :meth:`open` has finished without error (checked on every send)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._burst = False
        self._wake = asyncio.Event()
        # Pending requests: id -> (reply future, dispatch the reply too, deadline). One timer
        # sweeps the deadlines (a timer per request cost a tenth of an echo round trip).
        self._pending: dict[Any, tuple[asyncio.Future[Message], bool, float]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_at = 0.0
        self._reply_field = config.reply_id_field or config.id_field
        self._subscriptions: dict[str, Entry] = {}
        self._resume = config.resume
        self.intercepts = config.ack is not None or config.resume is not None
        """Whether :meth:`intercept` may consume anything now (the dispatcher skips it if not)."""
        self._intercepts_changed: Callable[[], None] = _nothing
        self._position: int | None = None
        self._checkpoint: asyncio.TimerHandle | None = None
        self._resume_key = config.storage_keys.get("resume_position", "resume_position")
        self.sent = 0
        self.dropped = 0
        self.expired = 0
        self.duplicates = 0
        self.gaps = 0
        self.resent = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store and load what it kept (once; later calls wait for the first).

        Raises:
            StoreError: the store is corrupt, locked by another process, or unwritable.
        """
        if self.opened:
            return
        # The loop, kept: asyncio.get_running_loop() costs a getpid() system call per call on
        # Python 3.11 (about 1 us here), and the send path needs the loop every time.
        self._loop = asyncio.get_running_loop()
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        await asyncio.shield(self._opening)

    async def _open(self) -> None:
        loaded = await self.store.open()
        self.outbox.restore(loaded.entries)
        self.opened = True
        self._subscriptions = dict(loaded.subscriptions)
        position = loaded.kv.get(self._resume_key)
        if position is not None:
            self._position = int(position)
        if self._ack is not None or self.outbox.next_expiry() is not None:
            self._start_housekeeping()

    def _start_housekeeping(self) -> None:
        """Start the ack-timeout and TTL timer task (only services that need it have one)."""
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._housekeeping(), name="bgws-housekeeping")

    async def close(self) -> None:
        """Persist the resume position, report what cannot be kept, close the store."""
        if self._opening is None or not self._opening.done() or self._opening.exception():
            return
        for task in (self._writer, self._keeper):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._checkpoint is not None:
            self._checkpoint.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._resume is not None and self._position is not None:
            await self.store.set(self._resume_key, str(self._position))
        for entry in self.outbox.drain_volatile():
            self._count_and_report(
                MessageDropped("service stopped before it could be sent", entry.payload)
            )
        for future, _, _ in self._pending.values():
            if not future.done():
                future.set_exception(ServiceClosed("the service stopped before the reply came"))
        await self.store.close()

    # -- sending ----------------------------------------------------------------------------

    def submit(
        self,
        message: Mapping[str, Any] | str | bytes,
        priority: int = 0,
        ttl: float | None = None,
        wait_for_ack: bool = False,
        durable: bool = True,
        request: bool = False,
    ) -> tuple[Any, Entry | None]:
        """Encode and check a message, and send it at once when nothing stands in the way.

        A request (``request=True``) that goes out at once does not open a burst: requests
        are latency-bound, each is written as it comes (like a raw socket write), and the
        loop is spared a callback per round trip.

        Returns:
            ``(message id, entry)``; ``entry`` is ``None`` when the message already went out,
            else it must be passed to :meth:`enqueue`.
        """
        payload, binary, msg_id = self._codec.encode(message)
        durable = durable and self.durable
        link = self._link
        if (
            not self._burst
            and link is not None
            and ttl is None
            and not durable
            and self._ack is None
            and not self.outbox.queued
            and not link.write_paused
            and not link.closed
        ):
            try:
                link.send(payload, binary)
            except Exception:  # the link is breaking: queue it like any offline send
                pass
            else:
                # One message per loop turn goes straight out (lowest latency); the rest of
                # a burst waits for the writer, which sends it as one corked batch.
                if not request:
                    self._burst = True
                    (self._loop or asyncio.get_running_loop()).call_soon(self._end_burst)
                self.sent += 1
                return msg_id, None
        entry = Entry(payload, binary, msg_id, priority, _expires_at(ttl), durable)
        if wait_for_ack:
            if self._ack is None:
                raise ServiceError("wait_for_ack needs an ack policy (Config.ack)")
            if msg_id is None:
                raise ServiceError("wait_for_ack needs a message id (a mapping with id_field)")
            entry.waiter = (self._loop or asyncio.get_running_loop()).create_future()
        return msg_id, entry

    def _end_burst(self) -> None:
        self._burst = False

    def enqueue_now(self, entry: Entry) -> bool:
        """Queue an entry at once when that needs no wait (no disk, no room to wait for, no
        ack to wait for, no deadline); ``False``: :meth:`enqueue` must do it."""
        if entry.durable or entry.waiter is not None or entry.expires_at is not None:
            return False
        outbox = self.outbox
        if not outbox.try_reserve():
            return False
        outbox.add(entry)
        return True

    async def enqueue(self, entry: Entry, timeout: float | None = None) -> None:
        """Queue an entry from :meth:`submit`: on disk first when durable, then the outbox."""
        outbox = self.outbox
        if not outbox.try_reserve():
            await outbox.reserve()
        if entry.durable:
            outbox.number(entry)
            try:
                await self.store.stage([entry], self._committed)
            except BaseException:
                outbox.release()
                raise
        else:
            outbox.add(entry)
        if entry.expires_at is not None:
            self._start_housekeeping()
            self._wake.set()
        if entry.waiter is not None:
            await self._wait_ack(entry, timeout)

    async def send_many(
        self,
        messages: Iterable[Mapping[str, Any] | str | bytes],
        *,
        priority: int = 0,
        ttl: float | None = None,
    ) -> list[Any]:
        """Accept many messages at once: one reservation pass and one commit for all."""
        expires_at = _expires_at(ttl)
        # submit() per message, without its checks for a direct write (a burst never writes
        # directly): encode and wrap, in a loop of its own.
        encode = self._codec.encode
        durable = self.durable
        entries: list[Entry] = []
        ids: list[Any] = []
        for message in messages:
            payload, binary, msg_id = encode(message)
            ids.append(msg_id)
            entries.append(Entry(payload, binary, msg_id, priority, expires_at, durable))
        if not entries:
            return ids
        outbox = self.outbox
        reserved = outbox.try_reserve_many(len(entries))
        try:
            while reserved < len(entries):
                await outbox.reserve()
                reserved += 1
            if durable:
                outbox.number_many(entries)
                await self.store.stage(entries, self._committed)
            else:
                for entry in entries:
                    outbox.add(entry)
            reserved = 0
        except BaseException:
            for _ in range(reserved):
                outbox.release()
            raise
        if ttl is not None:
            self._start_housekeeping()
            self._wake.set()
        return ids

    def _committed(self, entries: list[Entry]) -> None:
        add = self.outbox.add
        for entry in entries:
            add(entry)

    async def _wait_ack(self, entry: Entry, timeout: float | None) -> None:
        assert entry.waiter is not None
        limit = timeout if timeout is not None else self._config.ack_timeout
        try:
            async with asyncio.timeout(limit):
                await asyncio.shield(entry.waiter)
        except TimeoutError:
            raise AckTimeout(
                f"message {entry.id!r} not acknowledged within {limit:g}s; it stays queued "
                "and is sent again until acknowledged"
            ) from None

    async def request(
        self,
        message: Mapping[str, Any],
        *,
        timeout: float | None = None,
        priority: int = 0,
        dispatch_reply: bool = False,
    ) -> Message:
        """Send ``message`` with a fresh id and return the reply carrying it."""
        if not self.opened:
            await self.open()
        id_field = self._codec.id_field
        if id_field is None or self._reply_field is None:
            raise ServiceError("request() needs id_field (or reply_id_field) in the config")
        if type(message) is not dict and not isinstance(message, Mapping):
            raise TypeError("request() takes a mapping")
        if len(self._pending) >= self._config.max_pending_requests:
            raise QueueFull(f"{len(self._pending)} requests are waiting (max_pending_requests)")
        loop = self._loop or asyncio.get_running_loop()
        limit = timeout if timeout is not None else self._config.request_timeout
        deadline = loop.time() + limit
        msg_id = self._codec.new_id()
        future: asyncio.Future[Message] = loop.create_future()
        self._pending[msg_id] = (future, dispatch_reply, deadline)
        if not self.intercepts:
            self._set_intercepts(True)
        if self._sweeper is None or deadline < self._sweep_at:
            self._arm_sweeper(loop, deadline)
        try:
            _, entry = self.submit(
                {**message, id_field: msg_id}, priority, durable=False, request=True
            )
            if entry is not None and not self.enqueue_now(entry):
                async with asyncio.timeout_at(deadline):  # waiting for room in the outbox
                    await self.enqueue(entry)
            return await future
        except TimeoutError:
            raise RequestTimeout(f"no reply to request {msg_id!r} within {limit:g}s") from None
        finally:
            # intercepts stays on: the next message that finds nothing to intercept turns it
            # off, so back-to-back requests do not flip it twice each.
            self._pending.pop(msg_id, None)

    def _arm_sweeper(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._sweep_at = when
        self._sweeper = loop.call_at(when, self._sweep)

    def _sweep(self) -> None:
        """Fail the requests whose deadline passed; wake again at the next deadline."""
        self._sweeper = None
        loop = self._loop or asyncio.get_running_loop()
        now = loop.time()
        soonest: float | None = None
        for future, _, deadline in self._pending.values():
            if future.done():
                continue
            if deadline <= now:
                future.set_exception(TimeoutError())
                future.exception()  # retrieved: a request cancelled meanwhile logs nothing
            elif soonest is None or deadline < soonest:
                soonest = deadline
        if soonest is not None:
            self._arm_sweeper(loop, soonest)

    # -- subscriptions ----------------------------------------------------------------------

    def subscription_key(self, message: Mapping[str, Any] | str | bytes) -> str:
        """The default key of a subscription: the message without its type and id fields.

        So ``{"type": "subscribe", "channel": "ticks"}`` and
        ``{"type": "unsubscribe", "channel": "ticks"}`` share the key ``{"channel":"ticks"}``.
        """
        if isinstance(message, Mapping):
            skip = {self._codec.type_field, self._codec.id_field}
            body = {k: v for k, v in message.items() if k not in skip}
            return _key_encoder.encode(body).decode()
        return message if isinstance(message, str) else message.hex()

    async def subscribe(self, message: Mapping[str, Any] | str | bytes, key: str | None) -> str:
        """Keep ``message`` and send it now (if connected) and after every reconnect."""
        key = key if key is not None else self.subscription_key(message)
        payload, binary, _ = self._codec.encode(message, assign_id=False)
        entry = Entry(payload, binary)
        await self.store.put_subscription(key, entry)
        self._subscriptions.pop(key, None)
        self._subscriptions[key] = entry
        if self._link is not None:
            self._link.send(payload, binary)
        return key

    async def unsubscribe(
        self, message: Mapping[str, Any] | str | bytes | None, key: str | None
    ) -> bool:
        """Forget a subscription; send ``message`` if connected. Returns whether it existed."""
        if key is None:
            if message is None:
                raise TypeError("unsubscribe() needs a message or a key")
            key = self.subscription_key(message)
        existed = self._subscriptions.pop(key, None) is not None
        await self.store.drop_subscription(key)
        if message is not None and self._link is not None:
            _, entry = self.submit(message, durable=False)
            if entry is not None:
                await self.enqueue(entry)
        return existed

    @property
    def subscriptions(self) -> list[str]:
        """The keys of the kept subscriptions, in the order they are re-sent."""
        return list(self._subscriptions)

    # -- the link ---------------------------------------------------------------------------

    def link_up(self, link: Link) -> None:
        """A link is up: resume, resubscribe, then flush the outbox (in that order)."""
        self._link = link
        self.outbox.requeue_in_flight()
        if self._resume is not None and self._position is not None:
            resume = self._resume.resume_message(self._position, self._codec.type_field)
            payload, binary, _ = self._codec.encode(resume, assign_id=False)
            link.send(payload, binary)
        for entry in self._subscriptions.values():
            link.send(entry.payload, entry.binary)
        self._writer = asyncio.create_task(self._write(link), name="bgws-writer")
        self._writer.add_done_callback(lambda task: self._writer_ended(task, link))

    def _writer_ended(self, task: asyncio.Task[None], link: Link) -> None:
        """A writer that stopped with an error drops its link, so the service reconnects."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        failure = LinkError(f"the writer stopped: {error!r}")
        failure.__cause__ = error
        self._report(failure)
        link.abort()

    async def link_down(self) -> None:
        """The link is gone: stop writing; what was in flight will be sent again."""
        self._link = None
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        self.outbox.requeue_in_flight()

    async def _write(self, link: Link) -> None:
        outbox = self.outbox
        acks = self._ack is not None
        while True:
            await outbox.wait_sendable()
            if link.write_paused:
                await link.wait_writable()
                continue
            if link.closed:  # the loop is about to hear of it; keep the messages queued
                return
            batch = outbox.take(_WRITE_BATCH, time.time())
            done = link.send_many([(e.payload, e.binary) for e in batch])
            if done < len(batch):
                # The link broke under us: what was not written goes back, in order, and the
                # link is dropped so the service reconnects (never a writer that died silently).
                outbox.sent(batch[:done], time.monotonic())
                outbox.put_back(batch[done:])
                self.sent += done
                self._report(LinkError("writing to the connection failed; reconnecting"))
                link.abort()
                return
            outbox.sent(batch, time.monotonic())
            self.sent += len(batch)
            if acks:
                self.resent += sum(1 for entry in batch if entry.attempts > 1)
                self._wake.set()

    async def _housekeeping(self) -> None:
        """Resend messages whose ack is overdue and expire messages whose TTL passed."""
        outbox = self.outbox
        ack_timeout = self._config.ack_timeout
        while True:
            deadlines: list[float] = []
            ack_due = outbox.next_ack_deadline(ack_timeout)
            if ack_due is not None:
                deadlines.append(ack_due - time.monotonic())
            expiry = outbox.next_expiry()
            if expiry is not None:
                deadlines.append(expiry - time.time())
            self._wake.clear()
            if deadlines:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, min(deadlines))):
                        await self._wake.wait()
            else:
                await self._wake.wait()
            if self._link is not None:
                outbox.requeue_stale(time.monotonic(), ack_timeout)
            outbox.expire(time.time())

    # -- incoming ---------------------------------------------------------------------------

    def watch(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` whenever :attr:`intercepts` changes (the dispatcher's fast path)."""
        self._intercepts_changed = changed

    def _set_intercepts(self, on: bool) -> None:
        if on != self.intercepts:
            self.intercepts = on
            self._intercepts_changed()

    def intercept(self, message: Message) -> bool:
        """Look at an incoming message first; ``True`` means it was consumed here."""
        ack = self._ack
        if ack is not None:
            ids = ack.acked_ids(message)
            if ids is not None:
                self.outbox.ack(_hashable(ids))
                return True
        pending = self._pending
        if pending:
            field = self._reply_field
            data = message.data
            if type(data) is dict:  # the usual case, without Message.get's checks
                reply_id = data.get(field) if field else None
            else:
                reply_id = message.get(field) if field else None
            if type(reply_id) is str or _is_hashable(reply_id):
                waiting = pending.get(reply_id)
                if waiting is not None:
                    future, dispatch, _ = waiting
                    if not future.done():
                        future.set_result(message)
                    return not dispatch
        resume = self._resume
        if resume is None:
            if ack is None and not pending:  # the last request is answered: stop looking
                self._set_intercepts(False)
        else:
            seq = message.get(resume.seq_field)
            if type(seq) is int:
                last = self._position
                if last is not None:
                    if seq <= last:
                        self.duplicates += 1
                        return True
                    if seq > last + 1:
                        self.gaps += 1
                        self._report(SequenceGap(last + 1, seq - 1))
                self._position = seq
                if self._checkpoint is None:
                    self._checkpoint = (self._loop or asyncio.get_running_loop()).call_later(
                        _CHECKPOINT_DELAY, self._save_position
                    )
        return False

    def _save_position(self) -> None:
        self._checkpoint = None
        if self._position is not None:
            self.store.set_soon(self._resume_key, str(self._position))

    @property
    def position(self) -> int | None:
        """The last processed inbound sequence number (resume), or ``None``."""
        return self._position

    def _count_and_report(self, error: BgwsError) -> None:
        if isinstance(error, MessageDropped):
            self.dropped += 1
        else:
            self.expired += 1
        self._report(error)


def _is_hashable(value: Any) -> bool:
    return value is not None and not isinstance(value, list | dict)


def _hashable(ids: list[Any]) -> list[Any]:
    return [i for i in ids if _is_hashable(i)]


def _expires_at(ttl: float | None) -> float | None:
    """When a message with this time-to-live expires (``time.time()``), or ``None``."""
    if ttl is None:
        return None
    if not ttl > 0:
        raise ValueError("ttl must be > 0 seconds")
    return time.time() + ttl


def _nothing() -> None:
    return None
