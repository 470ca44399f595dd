"""Delivery: the outgoing path of a service, put together from small collaborators.

:class:`Delivery` carries out the promises of the design with the parts it holds:

* the :class:`~bgws._engine.store.Store` (a message accepted by ``send()`` is on disk,
  with the SQLite store, before ``send()`` returns) and the :class:`~bgws._engine.outbox.Outbox`;
* the :class:`~bgws._engine.writer.Writer`, the one place that writes frames on the link
  (control frames first, then the outbox in priority order);
* :class:`~bgws._engine.acks.Acks` (acknowledgements, resend on ack timeout, time-to-live),
  :class:`~bgws._engine.requests.Requests` (replies matched by id),
  :class:`~bgws._engine.replay.Subscriptions` (re-sent after every reconnect, before
  the outbox) and :class:`~bgws._engine.replay.Resume` (the inbound feed's position).

It also sees every incoming message before the handlers (:meth:`Delivery.intercept`), to take
acks, replies and duplicates out of the stream.

How one message is sent is one struct, :class:`SendOptions`, that :meth:`Delivery.submit` takes
instead of a row of flags; :class:`SendArgs` and :class:`RequestArgs` type the same options as
keyword arguments, so the thread runner, the manager's facade and the local client pass them on
(``**options: Unpack[SendArgs]``) instead of declaring ``send()``'s signature again.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from ..config import Config
from ..errors import (
    AckTimeout,
    BgwsError,
    MessageDropped,
    RequestTimeout,
    ServiceError,
)
from ..message import Codec, Message
from ..transport import Link
from .acks import Acks
from .clock import SYSTEM_CLOCK, Clock
from .outbox import Entry, Outbox
from .pacing import Pacer
from .replay import Resume, Subscriptions
from .requests import Requests
from .sqlite import store_for
from .store import Store
from .writer import Frame, Writer

__all__ = ["PLAIN", "REQUEST", "Delivery", "RequestArgs", "SendArgs", "SendOptions"]


@dataclass(frozen=True, slots=True)
class SendOptions:
    """How one message is sent.

    Attributes:
        priority: its lane; higher priorities are sent first.
        ttl: seconds after which it is not sent any more, or ``None``.
        wait_for_ack: ``send()`` returns only once the server acknowledged it.
        timeout: how long ``wait_for_ack`` waits (``None``: ``ack_timeout``).
        durable: kept in the store until delivered (when the store is durable).
        request: a request: written as it comes, never opening a burst.
    """

    priority: int = 0
    ttl: float | None = None
    wait_for_ack: bool = False
    timeout: float | None = None
    durable: bool = True
    request: bool = False


PLAIN = SendOptions()
"""``send(message)`` with every default (shared: no struct per message)."""

REQUEST = SendOptions(durable=False, request=True)
"""A request at priority 0 (shared)."""


class SendArgs(TypedDict, total=False):
    """The keyword arguments of ``send()``, for facades that pass them on."""

    priority: int
    ttl: float | None
    wait_for_ack: bool
    timeout: float | None


class RequestArgs(TypedDict, total=False):
    """The keyword arguments of ``request()``, for facades that pass them on."""

    timeout: float | None
    priority: int
    dispatch_reply: bool


class Delivery:
    """The outgoing path of one service.

    Args:
        config: the service's config.
        codec: encodes messages.
        report: reports an error without waiting (the service's error path).
        clock: the service's clock (default: the system's): a send rate's waits, ack
            timeouts, ``wait_for_ack`` and time-to-live (on its wall time) read it; request
            deadlines are on the event loop's clock.
    """

    # Slots: past about 30 attributes CPython 3.11 gives each instance a full dict.
    __slots__ = (
        "_clock",
        "_codec",
        "_config",
        "_direct",
        "_intercepts_changed",
        "_loop",
        "_opening",
        "_report",
        "acks",
        "dropped",
        "durable",
        "expired",
        "intercepts",
        "opened",
        "outbox",
        "requests",
        "resume",
        "store",
        "subscriptions_kept",
        "writer",
    )

    def __init__(
        self,
        config: Config,
        codec: Codec,
        report: Callable[[BgwsError], None],
        store: Store | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._config = config
        self._codec = codec
        self._report = report
        self.store: Store = store if store is not None else store_for(config)
        self.durable = self.store.durable
        self.outbox = Outbox(
            config.max_queue_size,
            config.overflow,
            report=self._count_and_report,
            on_done=self.store.forget,
            acks=config.ack is not None,
            max_in_flight=config.max_in_flight,
            clock=clock.wall,
        )
        self._clock = clock
        self.acks = Acks(
            config.ack, self.outbox, config.ack_timeout, self._connected, self._clock.timeout
        )
        self.writer = Writer(
            self.outbox,
            report,
            self.acks.written if config.ack is not None else None,
            Pacer.from_config(config, self._clock.monotonic, self._clock.sleep),
        )
        self.requests = Requests(
            config.reply_id_field or config.id_field, config.max_pending_requests
        )
        self.subscriptions_kept = Subscriptions(codec, self.store, self.writer)
        key = config.storage_keys.get("resume_position", "resume_position")
        self.resume = (
            None if config.resume is None else Resume(config.resume, key, self.store, report)
        )
        # What lets a send skip the outbox (nothing durable to write, no ack to wait for).
        self._direct = config.ack is None
        self._opening: asyncio.Future[None] | None = None
        self.opened = False
        """Whether :meth:`open` has finished without error (checked on every send)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.intercepts = config.ack is not None or config.resume is not None
        """Whether :meth:`intercept` may consume anything now (the dispatcher skips it if not)."""
        self._intercepts_changed: Callable[[], None] = _nothing
        self.dropped = 0
        self.expired = 0

    # -- counters ---------------------------------------------------------------------------

    @property
    def sent(self) -> int:
        """Messages handed to the link."""
        return self.writer.sent

    @property
    def resent(self) -> int:
        """Messages sent again (ack overdue or reconnect)."""
        return self.acks.resent

    @property
    def duplicates(self) -> int:
        """Incoming messages dropped as already seen (resume)."""
        return 0 if self.resume is None else self.resume.duplicates

    @property
    def gaps(self) -> int:
        """Sequence gaps seen in the inbound feed (resume)."""
        return 0 if self.resume is None else self.resume.gaps

    @property
    def resets(self) -> int:
        """Epoch changes seen in the inbound feed (resume with ``epoch_field``)."""
        return 0 if self.resume is None else self.resume.resets

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
        self.subscriptions_kept.load(loaded.subscriptions)
        if self.resume is not None:
            self.resume.load(loaded.kv)
        if self.acks.policy is not None or self.outbox.next_expiry() is not None:
            self.acks.start()

    async def close(self) -> None:
        """Persist the resume position, report what cannot be kept, close the store."""
        if self._opening is None or not self._opening.done() or self._opening.exception():
            return
        await self.writer.detach()
        await self.acks.close()
        self.requests.close()
        if self.resume is not None:
            await self.resume.close()
        for entry in self.outbox.drain_volatile():
            self._count_and_report(
                MessageDropped("service stopped before it could be sent", entry.payload)
            )
        await self.store.close()

    # -- sending ----------------------------------------------------------------------------

    def submit(
        self, message: Mapping[str, Any] | str | bytes, options: SendOptions = PLAIN
    ) -> tuple[Any, Entry | None]:
        """Encode and check a message, and send it at once when nothing stands in the way.

        Args:
            message: the message.
            options: how it is sent.

        Returns:
            ``(message id, entry)``; ``entry`` is ``None`` when the message already went out,
            else it must be passed to :meth:`enqueue`.

        Raises:
            ServiceError: ``wait_for_ack`` without an ack policy or without a message id.
        """
        payload, binary, msg_id = self._codec.encode(message)
        durable = options.durable and self.durable
        if (
            self._direct
            and options.ttl is None
            and not durable
            and self.writer.direct(payload, binary, options.request)
        ):
            return msg_id, None
        entry = Entry(
            payload, binary, msg_id, options.priority, self._expires_at(options.ttl), durable
        )
        if options.wait_for_ack:
            if self.acks.policy is None:
                raise ServiceError("wait_for_ack needs an ack policy (Config.ack)")
            if msg_id is None:
                raise ServiceError("wait_for_ack needs a message id (a mapping with id_field)")
            entry.waiter = (self._loop or asyncio.get_running_loop()).create_future()
        return msg_id, entry

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
            self.acks.deadline_added()
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
        expires_at = self._expires_at(ttl)
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
            self.acks.deadline_added()
        return ids

    def _committed(self, entries: list[Entry]) -> None:
        add = self.outbox.add
        for entry in entries:
            add(entry)

    async def _wait_ack(self, entry: Entry, timeout: float | None) -> None:
        assert entry.waiter is not None
        limit = timeout if timeout is not None else self._config.ack_timeout
        try:
            async with self._clock.timeout(limit):
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
        """Send ``message`` with a fresh id and return the reply carrying it.

        Raises:
            ServiceError: no id field to match replies on.
            TypeError: ``message`` is not a mapping.
            QueueFull: ``max_pending_requests`` requests are already waiting.
            RequestTimeout: no reply within ``timeout``.
        """
        if not self.opened:
            await self.open()
        id_field = self._codec.id_field
        requests = self.requests
        if id_field is None or requests.reply_field is None:
            raise ServiceError("request() needs id_field (or reply_id_field) in the config")
        if type(message) is not dict and not isinstance(message, Mapping):
            raise TypeError("request() takes a mapping")
        loop = self._loop or asyncio.get_running_loop()
        limit = timeout if timeout is not None else self._config.request_timeout
        clock = self._clock
        real = clock is SYSTEM_CLOCK
        # The real clock: one shared sweeper fails the request at its deadline. Another clock
        # (a test's VirtualClock): the deadline is a timeout on that clock.
        deadline = loop.time() + limit if real else math.inf
        msg_id = self._codec.new_id()
        future = requests.add(loop, msg_id, deadline, dispatch_reply)
        if not self.intercepts:
            self._set_intercepts(True)
        options = REQUEST if priority == 0 else SendOptions(priority, durable=False, request=True)
        entry = None
        try:
            _, entry = self.submit({**message, id_field: msg_id}, options)
            if real:
                if entry is not None and not self.enqueue_now(entry):
                    async with asyncio.timeout_at(deadline):  # waiting for room in the outbox
                        await self.enqueue(entry)
                return await future
            async with clock.timeout(limit):
                if entry is not None and not self.enqueue_now(entry):
                    await self.enqueue(entry)
                return await future
        except TimeoutError:
            if entry is not None:  # still queued (offline, or held back by a send rate)
                self.outbox.withdraw(entry)
            raise RequestTimeout(f"no reply to request {msg_id!r} within {limit:g}s") from None
        finally:
            # intercepts stays on: the next message that finds nothing to intercept turns it
            # off, so back-to-back requests do not flip it twice each.
            requests.discard(msg_id)

    # -- subscriptions ----------------------------------------------------------------------

    async def subscribe(self, message: Mapping[str, Any] | str | bytes, key: str | None) -> str:
        """Keep ``message`` and send it now (if connected) and after every reconnect."""
        return await self.subscriptions_kept.add(message, key)

    async def unsubscribe(
        self, message: Mapping[str, Any] | str | bytes | None, key: str | None
    ) -> bool:
        """Forget a subscription; send ``message`` if connected. Returns whether it existed.

        Raises:
            TypeError: neither a message nor a key.
        """
        if key is None:
            if message is None:
                raise TypeError("unsubscribe() needs a message or a key")
            key = self.subscriptions_kept.key(message)
        existed = await self.subscriptions_kept.remove(key)
        if message is not None and self.writer.connected:
            _, entry = self.submit(message, _VOLATILE)
            if entry is not None:
                await self.enqueue(entry)
        return existed

    @property
    def subscriptions(self) -> list[str]:
        """The keys of the kept subscriptions, in the order they are re-sent."""
        return self.subscriptions_kept.keys

    # -- the link ---------------------------------------------------------------------------

    def link_up(self, link: Link) -> None:
        """A link is up: resume, resubscribe, then flush the outbox (in that order)."""
        self.writer.attach(link, self.control_frames())

    def control_frames(self) -> list[Frame]:
        """What goes first on a fresh link: the resume request, then the subscriptions."""
        control: list[Frame] = []
        if self.resume is not None:
            frame = self.resume.frame(self._codec)
            if frame is not None:
                control.append(frame)
        control.extend(self.subscriptions_kept.frames())
        return control

    def outstanding(self) -> set[Any]:
        """The ids of messages in flight and of sent requests waiting for their reply."""
        sent_requests = set(self.requests.pending) - self.outbox.queued_ids()
        return self.outbox.in_flight_ids() | sent_requests

    async def link_down(self) -> None:
        """The link is gone: stop writing; what was in flight will be sent again."""
        await self.writer.detach()

    def _connected(self) -> bool:
        return self.writer.connected

    # -- incoming ---------------------------------------------------------------------------

    def watch(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` whenever :attr:`intercepts` changes (the inbox's direct route)."""
        self._intercepts_changed = changed

    def _set_intercepts(self, on: bool) -> None:
        if on != self.intercepts:
            self.intercepts = on
            self._intercepts_changed()

    def takes_early(self) -> bool:
        """Whether acks or replies are awaited (:meth:`take_early` may consume a message)."""
        return self.acks.policy is not None or bool(self.requests.pending)

    def take_early(self, message: Message) -> bool:
        """Consume an ack or a reply as soon as it is read, even behind held messages.

        The resume position is not touched here: it advances in dispatch order.
        """
        if self.acks.take(message):
            return True
        consumed = self.requests.match(message) if self.requests.pending else None
        return bool(consumed)

    def intercept(self, message: Message) -> bool:
        """Look at an incoming message first; ``True`` means it was consumed here."""
        acks = self.acks
        if acks.policy is not None and acks.take(message):
            return True
        requests = self.requests
        if requests.pending:
            consumed = requests.match(message)
            if consumed is not None:
                return consumed
        resume = self.resume
        if resume is None:
            if acks.policy is None and not requests.pending:  # last request answered: stop
                self._set_intercepts(False)
            return False
        return resume.see(message, self._loop or asyncio.get_running_loop())

    @property
    def position(self) -> int | None:
        """The last processed inbound sequence number (resume), or ``None``."""
        return None if self.resume is None else self.resume.position

    def _count_and_report(self, error: BgwsError) -> None:
        if isinstance(error, MessageDropped):
            self.dropped += 1
        else:
            self.expired += 1
        self._report(error)

    def _expires_at(self, ttl: float | None) -> float | None:
        """When a message with this time-to-live expires (the outbox's clock), or ``None``."""
        if ttl is None:
            return None
        if not ttl > 0:
            raise ValueError("ttl must be > 0 seconds")
        return self.outbox.clock() + ttl


_VOLATILE = SendOptions(durable=False)


def _nothing() -> None:
    return None
