"""The service: one configured connection that stays up in the background.

A :class:`Service` owns four kinds of task, each started and cancelled in one place:

* the *connect loop* (one per service run): connect, wait for the link to drop, back off, retry
  (run by its :class:`~bgws._engine.supervisor.Supervisor`, with the keepalive);
* the *dispatcher* (one per service): drains the inbox into plugins and handlers;
* the *writer* and the *keepalive* (one each per link): drain the outbox, ping and watch pongs.

Decisions (which state next, how long to wait) come from the pure :class:`~bgws.machine.Machine`;
this module and the supervisor only carry them out. The application's handlers and plugins are
kept in one :class:`~bgws._engine.hooks.Hooks` bundle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import msgspec

from ._engine import connect as _connect
from ._engine.clock import SYSTEM_CLOCK, Clock
from ._engine.delivery import PLAIN, Delivery, SendOptions
from ._engine.flag import Flag
from ._engine.hooks import HOOK_STOP_GRACE, Hooks, call
from ._engine.host import ServiceHost
from ._engine.inbox import Inbox
from ._engine.observe import Counters, StateWatch, describe
from ._engine.router import Router
from ._engine.store import Store
from ._engine.supervisor import Supervisor
from ._operations import Operations
from ._redact import redact_json, redact_url
from ._registration import Registration
from .backoff import Backoff
from .config import Config
from .errors import HandlerError, ServiceClosed, ServiceError, ServiceSuspended
from .handlers import (
    AuthHandler,
    ErrorHandler,
    Handler,
    HeartbeatHandler,
    LifecycleHandler,
    MessageHandler,
    NotificationHandler,
    TemplateHeartbeat,
)
from .machine import Event, Machine, State, Verdict, classify_error
from .message import Codec, Message
from .notify import build_notifications
from .plugins import Plugin, PluginChain
from .runner import ServiceThread, start_in_thread
from .stats import ServiceStats, StateChange
from .storage import StorageBackend
from .transport import Transport, get_transport

__all__ = ["Service"]

_F = TypeVar("_F", bound=Handler)


class Service(Registration, Operations):
    """A WebSocket connection that connects, authenticates, reconnects and dispatches.

    Most programs build one with a factory (:func:`bgws.create_chat_service` and friends)
    and use it as ``async with service: ...``.

    Args:
        config: the validated configuration.
        message_handler: the class-based handler that sees every unclaimed message.
        storage: where connection info is kept (default: in the service's store).
        store: where the outbox, subscriptions and resume position are kept (default: the
            store ``config.storage`` names: SQLite or memory).
        notification_handler: shows notifications.
        auth_handler: supplies credentials for each connect attempt.
        lifecycle_handler: hears start, stop and state changes.
        error_handler: hears every reported error (default: logs them).
        heartbeat_handler: an application-level heartbeat, for servers that ignore pings
            (default: built from ``config.app_heartbeat`` when that is set).
        plugins: plugins, in the order they see messages.
        transport: the WebSocket library seam (default: ``config.transport``).
        classify: maps a failure to ``"retry"``, ``"retry_now"``, ``"auth"`` or ``"fatal"``.
        backoff: the reconnect delay generator (default: from the config).
        ssl_context: your own client TLS context for a ``wss://`` URL, used as given on every
            attempt (instead of one built from the ``tls_*`` options).
        clock: what every timer reads (default: the system's; tests: ``testing.VirtualClock``).

    Raises:
        InsecureCredentials: ``auth_handler`` requires credentials and the URL is plain
            ``ws://`` to a host that is not loopback (unless ``allow_insecure_credentials``).
        ConfigError: ``ssl_context`` with a ``ws://`` URL or together with ``tls_*`` options.
    """

    def __init__(
        self,
        config: Config,
        *,
        message_handler: MessageHandler | None = None,
        storage: StorageBackend | None = None,
        store: Store | None = None,
        notification_handler: NotificationHandler | None = None,
        auth_handler: AuthHandler | None = None,
        lifecycle_handler: LifecycleHandler | None = None,
        error_handler: ErrorHandler | None = None,
        heartbeat_handler: HeartbeatHandler | None = None,
        plugins: Iterable[Plugin] = (),
        transport: Transport | None = None,
        classify: Callable[[BaseException], Verdict] | None = None,
        backoff: Backoff | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(config, Config):
            raise TypeError("config must be a bgws.Config")
        _connect.check_link_options(config, auth_handler, ssl_context)
        if storage is not None and not isinstance(storage, StorageBackend):
            raise TypeError(
                "storage must be a bgws.StorageBackend; to choose SQLite or memory set "
                "Config.storage"
            )
        self.config = config
        self.log = logging.getLogger(f"bgws.{config.service_tag}")
        # Notification rules come first, so a plugin that claims a message cannot hide it.
        notification_handler, rule_plugins = build_notifications(config, notification_handler)
        if heartbeat_handler is None and config.app_heartbeat is not None:
            heartbeat_handler = TemplateHeartbeat(
                config.app_heartbeat_message() or {}, config.app_heartbeat_reply_type
            )
        self._counters = Counters()
        self._hooks = hooks = Hooks(
            message=message_handler,
            notifier=notification_handler,
            auth=auth_handler,
            lifecycle=lifecycle_handler,
            errors=error_handler if error_handler is not None else ErrorHandler(),
            heartbeat=heartbeat_handler,
            plugins=[*rule_plugins, *plugins],
            counters=self._counters,
            log=self.log,
        )
        classify = classify if classify is not None else classify_error
        codec = Codec(
            config.codec,
            type_field=config.type_field,
            id_field=config.id_field,
            max_message_size=config.max_message_size,
        )
        self._machine = Machine(
            backoff or Backoff(config.initial_reconnect_delay, config.max_reconnect_delay),
            max_attempts=config.max_reconnect_attempts,
            min_uptime=config.min_uptime,
            classify=classify,
            reconnect_on_close=config.reconnect_on_close,
            suspend_after=config.suspend_after,
            suspended_retry=config.suspended_retry,
            suspended_send=config.suspended_send,
        )
        self._delivery = Delivery(config, codec, hooks.report_soon, store, clock or SYSTEM_CLOCK)
        # Connection info lives in the service's store unless a storage of its own is given.
        self._storage: StorageBackend | Store = (
            storage if storage is not None else self._delivery.store
        )
        self._router = Router(hooks.report)
        self._inbox = Inbox(
            codec,
            self._router,
            config.inbox_size,
            config.inbox_max_bytes,
            priority_types=config.priority_types,
        )
        self._supervisor = Supervisor(
            config,
            self._machine,
            transport if transport is not None else get_transport(config.transport),
            self._inbox,
            codec,
            self._delivery,
            hooks,
            classify=classify,
            ssl_context=ssl_context,
            announce=self._announce,
            remember=self._store,
            clock=clock or SYSTEM_CLOCK,
        )
        self._dispatch_task: asyncio.Task[None] | None = None
        self._watch = StateWatch()
        self._stopped = Flag()

    # -- state ------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The connection's current :class:`State`."""
        return self._machine.state

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose for the open link (one of ``config.subprotocols``).

        ``None`` while not connected, or when the server chose none.
        """
        link = self._supervisor.link
        return None if link is None else link.subprotocol

    @property
    def stats(self) -> ServiceStats:
        """A snapshot of the service's counters."""
        return self._counters.snapshot(
            self.state, redact_url(self.config.url), self._inbox, self._router, self._delivery
        )

    async def wait_for(self, state: State, timeout: float | None = None) -> None:
        """Wait until the service is in ``state``.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
            ServiceClosed: the service reached ``CLOSED`` or ``FAILED`` instead (the error names
                the reason).
        """
        why = describe(self._counters.last_error)
        await self._watch.wait(self.state, state, timeout, self.config.service_tag or "", why)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Compose plugins, run their ``initialize``, start the dispatcher.

        Does not connect: :meth:`connect` does (``async with`` does both).

        Raises:
            ServiceError: the service was already started (services are single-use).
            HandlerError: a plugin's ``initialize`` raised.
        """
        if not self._machine.can("start"):
            raise ServiceError("a service starts once; create a new one to start again")
        self._machine.start()
        hooks = self._hooks
        try:
            hooks.chain = PluginChain(hooks.plugins)
            delivery, load = self._delivery, self._inbox.load
            host = ServiceHost(
                self.config, self.send_many, delivery.resume, load, hooks.report_soon
            )
            for plugin in hooks.chain.plugins:
                try:
                    plugin.bind(host)
                    await call(plugin.initialize)
                except Exception as exc:
                    raise HandlerError(f"plugin {plugin.name}.initialize") from exc
            await self._delivery.open()
        except BaseException as exc:
            # A service that could not start is closed: later calls say so clearly.
            self._counters.note_error(exc)
            self._machine.stop()
            self._machine.closed()
            self._stopped.set()
            raise
        self._router.configure(
            plugins=hooks.chain,
            message_handler=hooks.message,
            heartbeat=hooks.heartbeat,
            interceptor=self._delivery,
        )
        self._dispatch_task = asyncio.create_task(
            self._inbox.run(), name=f"bgws-dispatch-{self.config.service_tag}"
        )
        if hooks.lifecycle is not None:
            await hooks.hook(hooks.lifecycle.on_service_started)
        for plugin in hooks.chain.plugins:
            await hooks.guarded(plugin.on_service_started, f"plugin {plugin.name}")
        self.log.info("service started (%s)", redact_url(self.config.url))

    async def connect(self, connection_data: Mapping[str, Any] | None = None) -> None:
        """Start connecting in the background; returns at once.

        Args:
            connection_data: handed to the auth handler's ``get_auth_data`` on every attempt,
                and kept in storage under ``storage_keys["connection_data"]`` with the values
                of secret-looking keys (``password``, ``token``...) replaced by ``***``: secrets
                stay in memory, never in the store.

        Raises:
            ServiceClosed: the service is stopping or stopped.
        """
        machine = self._machine
        if machine.can("start"):
            await self.start()
        if not machine.can("connect"):
            raise ServiceClosed("the service was stopped")
        if connection_data is not None:
            self._supervisor.connection_data = dict(connection_data)
            kept = redact_json(connection_data)  # secrets stay in memory, never on disk
            await self._store("connection_data", msgspec.json.encode(kept).decode())
        if machine.can(Event.CONNECT):
            await self._transition(machine.connect, None)
            self._supervisor.start()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully: flush what can be sent, close the link, stop every task.

        Messages still queued after ``timeout`` (default ``close_timeout``) are reported to
        the error handler as :class:`MessageDropped`: nothing is dropped silently.
        """
        if not self._machine.can("stop"):
            await self._stopped.wait()
            return
        deadline = timeout if timeout is not None else self.config.close_timeout
        await self._transition(self._machine.stop, None)
        await self._supervisor.stop(deadline)
        await self._settle_inbox(deadline)
        await self._delivery.close()
        hooks = self._hooks
        await hooks.settle()
        # Each stop hook gets the deadline and a grace (a plugin may flush within the deadline,
        # then close its own connections); one still running then is reported and left.
        limit = deadline + HOOK_STOP_GRACE
        for plugin in hooks.chain.plugins:
            await hooks.guarded(plugin.on_service_stopped, f"plugin {plugin.name}", limit)
            await hooks.guarded(plugin.dispose, f"plugin {plugin.name}", limit)
        if hooks.lifecycle is not None:
            stopped = hooks.lifecycle.on_service_stopped
            await hooks.guarded(
                stopped, f"{type(hooks.lifecycle).__name__}.on_service_stopped", limit
            )
        if self._storage is not self._delivery.store:  # the delivery closed its own
            await hooks.guarded(self._storage.close, "storage")
        await self._transition(self._machine.closed, None)
        self._stopped.set()
        self.log.info("service stopped")

    def start_in_thread(
        self,
        *,
        name: str | None = None,
        timeout: float = 10.0,
        connection_data: Mapping[str, Any] | None = None,
    ) -> ServiceThread:
        """Run this service on a background thread with its own event loop.

        For synchronous programs (scripts, Flask or Django processes, Jupyter): returns once
        the service has started; the handle's ``send``, ``request``, ``subscribe`` and ``stop``
        are plain blocking methods, safe from any thread. Handlers run on the service's thread.
        ``with service.start_in_thread() as handle:`` stops on exit. See
        :func:`bgws.runner.start_in_thread`.
        """
        return start_in_thread(self, name=name, timeout=timeout, connection_data=connection_data)

    async def __aenter__(self) -> Service:
        await self.start()
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- sending ----------------------------------------------------------------------------

    async def send(
        self,
        message: Mapping[str, Any] | str | bytes,
        *,
        priority: int = 0,
        ttl: float | None = None,
        wait_for_ack: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """Accept a message; it goes out now if connected, else after the next connect.

        With the SQLite store, ``send()`` returns once the message is on disk: it survives a
        crash and is sent after the restart. A mapping is JSON-encoded and given an id in
        ``id_field`` when it has none; ``str`` is sent as a text frame and ``bytes`` as a
        binary frame, unchanged.

        Args:
            message: the message.
            priority: its lane; higher priorities are sent first, order is kept within one.
            ttl: seconds after which it is not sent any more (reported as
                :class:`MessageExpired`).
            wait_for_ack: return only once the server acknowledged it (needs ``Config.ack``).
            timeout: how long ``wait_for_ack`` waits (default ``ack_timeout``).

        Returns:
            The message id (``None`` for str/bytes or when ``id_field`` is ``None``).

        Raises:
            QueueFull: the outbox is full and the overflow policy is ``"raise"``.
            MessageTooBig: the encoded message exceeds ``max_message_size``.
            TypeError: the message cannot be encoded.
            AckTimeout: ``wait_for_ack`` and no ack came in time (the message stays queued).
            StoreError: the store could not write it.
            ServiceClosed: the service is stopping, stopped or failed.
        """
        self._check_open("send")
        delivery = self._delivery
        if not delivery.opened:
            await delivery.open()
        if priority or ttl is not None or wait_for_ack:
            options = SendOptions(priority, ttl, wait_for_ack, timeout)
        else:
            options = PLAIN
        msg_id, entry = delivery.submit(message, options)
        if entry is not None and not delivery.enqueue_now(entry):
            await delivery.enqueue(entry, timeout)
        return msg_id

    async def send_many(
        self,
        messages: Iterable[Mapping[str, Any] | str | bytes],
        *,
        priority: int = 0,
        ttl: float | None = None,
    ) -> list[Any]:
        """Accept many messages at once, in order: one commit to the store for all of them.

        The way to write a burst (a batch of sensor readings, a basket of orders): with the
        SQLite store, awaiting ``send()`` per message costs one commit each, while
        ``send_many`` returns once all of them are on disk together.

        Returns:
            The message ids, in order.

        Raises:
            BgwsError: as :meth:`send` does; a message that fails to encode raises before any
                of them is accepted.
        """
        self._check_open("send")
        delivery = self._delivery
        if not delivery.opened:
            await delivery.open()
        return await delivery.send_many(messages, priority=priority, ttl=ttl)

    def request(
        self,
        message: Mapping[str, Any],
        *,
        timeout: float | None = None,
        priority: int = 0,
        dispatch_reply: bool = False,
    ) -> Coroutine[Any, Any, Message]:
        """Send ``message`` with a fresh id and return the reply that carries the same id.

        The reply is matched on ``reply_id_field`` (default ``id_field``) and, unless
        ``dispatch_reply``, does not reach the ordinary handlers. Requests are not durable.

        Raises:
            RequestTimeout: no reply within ``timeout`` (default ``request_timeout``).
            QueueFull: ``max_pending_requests`` requests are already waiting.
            ServiceClosed: the service is stopping, stopped or failed (raised at the call).
        """
        # A plain method handing back the delivery layer's coroutine: one coroutine per
        # request instead of two (``await service.request(...)`` is unchanged).
        self._check_open("request")
        return self._delivery.request(
            message, timeout=timeout, priority=priority, dispatch_reply=dispatch_reply
        )

    def _check_open(self, what: str) -> None:
        machine = self._machine
        if not machine.can("send"):
            error = ServiceSuspended if machine.state is State.SUSPENDED else ServiceClosed
            raise error(f"cannot {what}: the service is {machine.state}")

    # -- state changes ----------------------------------------------------------------------

    async def _transition(self, move: Callable[[], object], reason: BaseException | None) -> None:
        old = self._machine.state
        move()
        await self._announce(old, reason, None)

    async def _announce(
        self, old: State, reason: BaseException | None, delay: float | None
    ) -> None:
        """Tell everyone who listens that the machine moved from ``old``."""
        new = self._machine.state
        if new is old:
            return
        change = StateChange(
            old, new, reason, self._supervisor.clock.wall(), None if new is State.FAILED else delay
        )
        self.log.info("%s -> %s%s", old, new, f" ({describe(reason)})" if reason else "")
        hooks = self._hooks
        for callback in self._watch.publish(change):
            await hooks.guarded(callback, "state callback")
        if hooks.lifecycle is not None:
            await hooks.hook(hooks.lifecycle.on_state_changed, old, new)
        if self.config.foreground and hooks.notifier is not None:
            await hooks.hook(hooks.notifier.on_state_changed, new)

    # -- hooks and storage ------------------------------------------------------------------

    async def _store(self, logical_key: str, value: str) -> None:
        key = self.config.storage_keys.get(logical_key, logical_key)
        storage = self._storage
        await self._hooks.guarded(lambda: storage.store_connection_info(key, value), "storage")

    async def _settle_inbox(self, deadline: float) -> None:
        task = self._dispatch_task
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline):
                await self._inbox.wait_idle()
        self._inbox.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def __repr__(self) -> str:
        return (
            f"<Service {self.config.service_tag!r} {self.state} "
            f"url={redact_url(self.config.url)!r} queued={len(self._delivery.outbox)}>"
        )
