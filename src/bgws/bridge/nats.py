"""The NATS JetStream bridge: a plugin that moves a service's traffic through JetStream.

Inbound, every incoming WebSocket message (of the types chosen) is published to a subject made
from ``publish`` (``bgws.{service}.in.{type}``), with a ``Nats-Msg-Id`` made from its resume
sequence (with a :class:`~bgws.ResumePolicy`) or else its id, so JetStream keeps one copy of a
message that a replay or a restart delivers again. With resume, the service's saved position
advances only once JetStream has acked the publish: a crash in between replays the message
and the broker drops the copy. Outbound, a durable JetStream consumer per service feeds
``consume`` (``bgws.{service}.out``) into the service's durable outbox, acked to JetStream only
after the outbox commit. See ``docs/scaling-out.md`` for the guarantees and their limits.

Example::

    bridge = bgws.bridge.NatsBridge(servers="nats://127.0.0.1:4222", stream="BGWS")
    service = bgws.create_custom_service(config=cfg, plugins=[bridge])

nats-py is an optional dependency (``pip install 'bgws[nats]'``), imported when the service
starts.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._natsclient import CLOSE_TIMEOUT, close_quietly
from ..errors import ServiceError
from ..message import Message
from ..plugins import Plugin, PluginHost
from ._consume import Consumer, durable_name
from ._publish import BridgeError, Publisher
from ._settings import BridgeSettings, wildcard

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.client import JetStreamContext

_log = logging.getLogger("bgws.bridge")

__all__ = ["NatsBridge"]

_NOT_TOKEN = re.compile(r"[^A-Za-z0-9_-]")
_NO_TYPE = "_"
"""The ``{type}`` token of a message that has no type."""
_DUPLICATE_WINDOW = 120.0
"""Seconds JetStream remembers a ``Nats-Msg-Id`` in a stream the bridge creates."""
_RETRY = 0.5


class NatsBridge(Plugin):
    """Bridges one service to NATS JetStream (one bridge per service).

    Args:
        servers: the NATS URL, or several.
        stream: the JetStream stream; created when missing (file storage, a duplicate window
            of two minutes), its subjects extended when they do not cover the templates.
        publish: the subject template for incoming messages (``{service}``, ``{type}``); a
            type's characters other than ``A-Z a-z 0-9 _ -`` become ``_``, no type is ``_``.
            ``None``: publish nothing.
        publish_types: the message types published (``None``: every type).
        consume: the subject template commands are consumed from (``{service}``); ``None``:
            consume nothing.
        max_buffer: messages held for JetStream (queued and in flight) before the WebSocket
            read pauses; it resumes at half.
        max_in_flight: publishes waiting for JetStream's ack at once (the pipeline depth).
        ack_timeout: seconds to wait for an ack before publishing again, same message id.

    Raises:
        ConfigError: a value is wrong (the field names the argument).
    """

    plugin_name = "nats-bridge"
    supported_message_types = ("*",)

    def __init__(
        self,
        servers: str | Iterable[str] = "nats://127.0.0.1:4222",
        *,
        stream: str = "BGWS",
        publish: str | None = "bgws.{service}.in.{type}",
        publish_types: Iterable[str] | None = None,
        consume: str | None = "bgws.{service}.out",
        max_buffer: int = 10_000,
        max_in_flight: int = 1024,
        ack_timeout: float = 5.0,
    ) -> None:
        self.settings = BridgeSettings(
            servers=(servers,) if isinstance(servers, str) else tuple(servers),
            stream=stream,
            publish=publish,
            publish_types=None if publish_types is None else frozenset(publish_types),
            consume=consume,
            max_buffer=max_buffer,
            max_in_flight=max_in_flight,
            ack_timeout=ack_timeout,
        )
        self._host: PluginHost | None = None
        self._publisher: Publisher | None = None
        self._consumer: Consumer | None = None
        self._client: Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subjects: dict[str | None, str] = {}
        self._service = ""
        self._seq_field: str | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: BridgeSettings) -> NatsBridge:
        """A new bridge with ``settings`` (a service file's ``bridge`` table)."""
        s = settings
        return cls(
            s.servers,
            stream=s.stream,
            publish=s.publish,
            publish_types=s.publish_types,
            consume=s.consume,
            max_buffer=s.max_buffer,
            max_in_flight=s.max_in_flight,
            ack_timeout=s.ack_timeout,
        )

    # -- the plugin contract ----------------------------------------------------------------

    def bind(self, host: PluginHost) -> None:
        """Take the service's outbox, resume position and reading.

        Raises:
            ServiceError: the bridge already serves another service.
        """
        if self._host is not None:
            raise ServiceError("a NatsBridge serves one service: create one per service")
        self._host = host
        config = host.config
        settings = self.settings
        self._service = host.name
        self._seq_field = config.resume.seq_field if config.resume is not None else None
        publisher = self._publisher = Publisher(
            max_buffer=settings.max_buffer,
            max_in_flight=settings.max_in_flight,
            ack_timeout=settings.ack_timeout,
            release=host.hold_position() if settings.publish is not None else None,
            reading=lambda go: host.release_reading() if go else host.hold_reading(),
            report=host.report,
        )
        if settings.consume is not None:
            subject = settings.consume.replace("{service}", _token(self._service))
            self._consumer = Consumer(
                subject,
                settings.stream,
                durable_name(self._service),
                config.id_field,
                host.send_many,
                publisher.note,
            )

    async def on_service_started(self) -> None:
        """Start connecting to NATS in the background (the service does not wait for it)."""
        if self._host is None:
            raise ServiceError("the bridge was not bound to a service")
        self._tasks.append(asyncio.create_task(self._run(), name=f"bgws-bridge-{self._service}"))

    def handle_message(self, message: Message) -> bool:
        """Queue ``message`` for JetStream (it still reaches the handlers)."""
        publisher = self._publisher
        template = self.settings.publish
        if publisher is None or template is None:
            return False
        seq_field = self._seq_field
        seq = message.get(seq_field) if seq_field is not None else None
        if type(seq) is not int:
            seq = None
        msg_type = message.type
        types = self.settings.publish_types
        if types is not None and msg_type not in types:
            if seq is not None:
                publisher.skip(seq)
            return False
        subject = self._subjects.get(msg_type)
        if subject is None:
            subject = self._subject_for(template, msg_type)
        raw = message.raw
        payload = raw.encode() if isinstance(raw, str) else raw
        if seq is not None:
            msg_id: str | None = f"{self._service}.{seq}"
        elif message.id is not None:
            msg_id = f"{self._service}.id.{message.id}"
        else:
            msg_id = None  # at-least-once: nothing to deduplicate on
        publisher.add(subject, payload, msg_id, seq)
        return False

    async def on_service_stopped(self) -> None:
        """Publish what is left (within ``close_timeout``), then disconnect."""
        await self._close()

    async def dispose(self) -> None:
        """Disconnect (once)."""
        await self._close()

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until JetStream has acked every message taken from the WebSocket so far.

        Args:
            timeout: seconds to wait at most (``None``: no limit).

        Returns:
            Whether everything was acked (``False``: the time ran out first).
        """
        publisher = self._publisher
        return True if publisher is None else await publisher.flush(timeout)

    def status(self) -> dict[str, object]:
        """What the bridge is doing, for ``bgws status`` and monitoring.

        Returns:
            ``connected``, ``lag`` (messages taken from the WebSocket and not yet acked by
            JetStream), ``buffered`` (not yet published), ``in_flight`` (waiting for an ack),
            ``published``, ``duplicates`` (acks JetStream marked as duplicates), ``resent``,
            ``reading_paused``, ``consumed`` (commands put into the outbox),
            ``consumer_pending`` (commands JetStream still has for this service, as of the
            last batch), ``errors`` and ``last_error``.
        """
        client = self._client
        status: dict[str, object] = {"connected": client is not None and client.is_connected}
        publisher = self._publisher
        if publisher is not None:
            status.update(publisher.snapshot())
        consumer = self._consumer
        if consumer is not None:
            status["consumed"] = consumer.consumed
            status["consumer_pending"] = consumer.pending
        status["errors"] = 0 if publisher is None else publisher.errors
        status["last_error"] = None if publisher is None else publisher.last_error
        return status

    # -- the NATS side ----------------------------------------------------------------------

    def _subject_for(self, template: str, msg_type: str | None) -> str:
        kind = _NO_TYPE if msg_type is None else _token(msg_type)
        subject = template.replace("{service}", _token(self._service)).replace("{type}", kind)
        if len(self._subjects) < 4096:  # bounded: a feed with endless types is not cached
            self._subjects[msg_type] = subject
        return subject

    async def _run(self) -> None:
        from nats.aio.client import Client

        publisher = self._publisher
        assert publisher is not None

        async def reconnected() -> None:
            publisher.resend_all()

        async def disconnected() -> None:
            if not self._closed:
                publisher.note(BridgeError("disconnected from NATS; reconnecting"))

        async def failed(exc: Exception) -> None:
            publisher.note(BridgeError(f"NATS: {type(exc).__name__}: {exc}"))

        # Made first and kept, so that a stop while it connects still closes its socket.
        client = self._client = Client()
        await client.connect(
            list(self.settings.servers),
            name=f"bgws-{self._service}",
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=_RETRY,  # type: ignore[arg-type,unused-ignore]
            connect_timeout=2,
            reconnected_cb=reconnected,
            disconnected_cb=disconnected,
            error_cb=failed,
            # Subjects are checked once: the templates when the bridge is made, and each type
            # made into a token (_token); the reply subjects are the bridge's own inbox.
            skip_subject_validation=True,
        )
        js = client.jetstream()
        await self._ensure_stream(js, publisher)
        if self._closed:  # stopped meanwhile, and nats-py swallowed the cancel
            return
        await publisher.attach(client)

        def connected() -> bool:
            return client.is_connected

        self._spawn(publisher.run(connected), "publish")
        self._spawn(publisher.watch_acks(connected), "acks")
        if self._consumer is not None:
            self._spawn(self._consumer.run(js, self.settings.max_in_flight), "consume")

    def _spawn(self, work: Any, what: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=f"bgws-bridge-{self._service}-{what}"))

    async def _ensure_stream(self, js: JetStreamContext, publisher: Publisher) -> None:
        """Create the stream, or extend its subjects; retried until it works."""
        from nats.js.errors import NotFoundError

        settings = self.settings
        subjects = [wildcard(t) for t in (settings.publish, settings.consume) if t is not None]
        while not self._closed:  # also ends when nats-py swallowed the stop's cancel
            try:
                try:
                    info = await js.stream_info(settings.stream)
                except NotFoundError:
                    await js.add_stream(
                        name=settings.stream,
                        subjects=subjects,
                        duplicate_window=_DUPLICATE_WINDOW,
                    )
                    return
                have = list(info.config.subjects or ())
                missing = [s for s in subjects if s not in have]
                if missing:
                    info.config.subjects = have + missing
                    await js.update_stream(info.config)
                return
            except Exception as exc:
                publisher.note(
                    BridgeError(f"stream {settings.stream}: {type(exc).__name__}: {exc}")
                )
                await asyncio.sleep(_RETRY)  # a pause between retries, not synchronisation

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        publisher = self._publisher
        client = self._client
        if publisher is not None and client is not None and self._host is not None:
            await publisher.flush(self._host.config.close_timeout)
        # The loops end on their own too: nats-py (through Python 3.11's asyncio.wait_for) can
        # swallow a cancel that lands in the same tick as the reply it waited for.
        if publisher is not None:
            publisher.detach()
        if self._consumer is not None:
            self._consumer.stopped = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT)
            for task in late:
                _log.warning("bridge: %s did not end within %gs", task.get_name(), CLOSE_TIMEOUT)
        self._tasks.clear()
        if client is not None:
            await close_quietly(client)


def _token(text: str) -> str:
    """``text`` as one subject token: characters other than A-Z a-z 0-9 _ - become ``_``."""
    return _NOT_TOKEN.sub("_", text) or _NO_TYPE
