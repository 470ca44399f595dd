"""The exceptions bgws raises or reports.

Every exception derives from :class:`BgwsError`. Caller mistakes and trouble caused by the peer
or the network are different branches, so a program can tell "I configured it wrong" from
"the server misbehaved"::

    BgwsError
    ├── ConfigError              a wrong configuration value (caller mistake); also a ValueError
    │   └── InsecureCredentials  credentials over plain ws:// to a non-loopback host
    ├── InvalidTransition        an illegal move of the connection state machine
    ├── ServiceError             a call the service cannot take in its current state
    │   ├── ServiceClosed        the service was stopped or failed; nothing more is accepted
    │   ├── ServiceSuspended     send() while SUSPENDED, with suspended_send = "fail"
    │   └── QueueFull            the outbox (or the pending requests) are full
    ├── StoreError               the store cannot be opened, read or written (corrupt, locked)
    ├── AckTimeout               no acknowledgement in time (also a TimeoutError)
    ├── RequestTimeout           no reply to a request in time (also a TimeoutError)
    ├── ConnectQuotaWait         reported, not raised: connect_quota holds the next attempt back
    ├── LinkError                the peer or the network (never the caller's mistake)
    │   ├── ConnectTimeout       the connect attempt took longer than ``connect_timeout``
    │   ├── HandshakeRejected    the server answered the upgrade with an HTTP error status
    │   │   └── AuthRejected     ... with 401/403, or closed with a configured auth close code
    │   ├── DeadLink             no pong (or heartbeat reply) within ``ping_timeout``
    │   └── ConnectionClosed     the link closed (by the server, or abruptly)
    └── MessageError             one incoming or outgoing message was bad
        ├── DecodeError          a frame that the codec could not decode
        ├── MessageTooBig        larger than ``max_message_size``
        ├── HandlerError         a handler or plugin raised while handling a message
        ├── MessageDropped       an outgoing message was dropped (overflow policy, stop)
        ├── MessageExpired       an outgoing message's time-to-live passed before it was sent
        ├── SequenceGap          inbound sequence numbers jumped (resume): a range is missing
        └── StreamReset          the feed's epoch changed (resume): numbering restarted

OS-level errors (``OSError``, ``ssl.SSLError``) are translated into :class:`LinkError` at the
transport boundary, with the original kept as ``__cause__``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AckTimeout",
    "AuthRejected",
    "BgwsError",
    "ConfigError",
    "ConnectQuotaWait",
    "ConnectTimeout",
    "ConnectionClosed",
    "DeadLink",
    "DecodeError",
    "HandlerError",
    "HandshakeRejected",
    "InsecureCredentials",
    "InvalidTransition",
    "LinkError",
    "MessageDropped",
    "MessageError",
    "MessageExpired",
    "MessageTooBig",
    "QueueFull",
    "RequestTimeout",
    "SequenceGap",
    "ServiceClosed",
    "ServiceError",
    "ServiceSuspended",
    "StoreError",
    "StreamReset",
]


class BgwsError(Exception):
    """Root of every exception bgws raises or reports."""


class ConfigError(BgwsError, ValueError):
    """A configuration value is wrong.

    Attributes:
        field: the name of the offending field (``None`` when the error is about the whole
            config, for example an unknown TOML table).
        reason: why the value was refused, in plain words.
    """

    def __init__(self, field: str | None, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


class InsecureCredentials(ConfigError):
    """Credentials would travel in clear text over ``ws://`` to a host that is not loopback."""


class InvalidTransition(BgwsError):
    """The state machine was asked for a move its table does not allow; nothing changed."""

    def __init__(self, state: Any, event: Any) -> None:
        self.state = state
        self.event = event
        super().__init__(f"no transition from {state!s} on {event!s}")


class ServiceError(BgwsError):
    """The service cannot take this call in its current state."""


class ServiceClosed(ServiceError):
    """The service was stopped (or has failed) and accepts nothing more."""


class ServiceSuspended(ServiceError):
    """The service is ``SUSPENDED`` (offline for ``suspend_after``) and ``suspended_send`` is
    ``"fail"``: the message was not accepted."""


class QueueFull(ServiceError):
    """The outbox holds ``max_queue_size`` messages and the overflow policy is ``"raise"``."""


class StoreError(BgwsError):
    """The store could not be opened, read or written; the message names the file and why.

    A corrupt or foreign file is never reset silently: it is left untouched for inspection.
    """


class AckTimeout(BgwsError, TimeoutError):
    """No acknowledgement arrived in time.

    The message is not lost: it stays in the outbox and is sent again (with the same id) until
    acknowledged or until the service stops.
    """


class RequestTimeout(BgwsError, TimeoutError):
    """No reply to a request arrived within its timeout."""


class ConnectQuotaWait(BgwsError):
    """Reported to the error handler (never raised): ``connect_quota`` holds the next connect
    attempt back, whatever the backoff said.

    Attributes:
        delay: seconds the attempt waits.
        until: wall-clock time (``time.time()`` of the service's clock) when it may go.
        limit: the quota's count of connects ...
        window: ... per this many seconds.
    """

    def __init__(self, delay: float, until: float, limit: int, window: float) -> None:
        self.delay = delay
        self.until = until
        self.limit = limit
        self.window = window
        super().__init__(
            f"connect quota ({limit} per {window:g}s) reached: next attempt in {delay:.1f}s"
        )


class LinkError(BgwsError):
    """The network or the peer failed; the service handles these by reconnecting."""


class ConnectTimeout(LinkError):
    """The connect attempt (TCP, TLS and handshake) took longer than ``connect_timeout``."""


class HandshakeRejected(LinkError):
    """The server answered the WebSocket upgrade with an HTTP status other than 101.

    A redirect (3xx) is one too, unless ``Config.follow_redirects`` allowed following it.

    Attributes:
        status: the HTTP status code the server sent.
        location: the ``Location`` header of a redirect, exactly as sent (it may carry a
            secret in its query: the message shows it redacted), else ``None``.
    """

    def __init__(
        self, status: int, message: str | None = None, *, location: str | None = None
    ) -> None:
        self.status = status
        self.location = location
        super().__init__(message or f"handshake rejected with HTTP {status}")


class AuthRejected(HandshakeRejected):
    """The server refused the credentials: HTTP 401/403, or a configured auth close code.

    ``status`` is the HTTP status, or the WebSocket close code when the refusal came as a close.
    """


class DeadLink(LinkError):
    """No pong (or application heartbeat reply) arrived within ``ping_timeout``."""


class ConnectionClosed(LinkError):
    """The connection closed.

    Attributes:
        code: the WebSocket close code (1006 when the link dropped without a close frame).
        reason: the close reason the server gave, if any.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        text = f"connection closed with code {code}"
        super().__init__(f"{text}: {reason}" if reason else text)


class MessageError(BgwsError):
    """One message was bad; the service keeps running."""


class DecodeError(MessageError):
    """An incoming frame could not be decoded by the codec.

    Attributes:
        raw: the frame's payload as received (``str`` or ``bytes``).
    """

    def __init__(self, reason: str, raw: str | bytes) -> None:
        self.raw = raw
        super().__init__(reason)


class MessageTooBig(MessageError):
    """A message is larger than ``max_message_size``."""


class HandlerError(MessageError):
    """A handler or plugin raised while handling a message; the original is ``__cause__``.

    Attributes:
        where: the handler or plugin that raised (its name).
        message: the :class:`bgws.Message` being handled, when there was one.
    """

    def __init__(self, where: str, message: Any = None) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where} raised while handling a message")


class MessageDropped(MessageError):
    """An outgoing message left the outbox without being sent.

    Either the overflow policy ``"drop_oldest"`` made room, or the service stopped while a
    message that is not kept on disk (memory store, requests) was still queued.

    Attributes:
        payload: the dropped message as it was queued.
    """

    def __init__(self, reason: str, payload: Any) -> None:
        self.payload = payload
        super().__init__(reason)


class MessageExpired(MessageError):
    """An outgoing message's time-to-live passed before it could be sent; it was not sent.

    Attributes:
        entry: the expired outbox entry (``entry.payload``, ``entry.id``).
    """

    def __init__(self, reason: str, entry: Any) -> None:
        self.entry = entry
        super().__init__(f"{reason} (id {getattr(entry, 'id', None)!r})")


class SequenceGap(MessageError):
    """Inbound sequence numbers jumped: messages ``first`` to ``last`` (inclusive) never came.

    Attributes:
        first: the first missing sequence number.
        last: the last missing sequence number.
    """

    def __init__(self, first: int, last: int) -> None:
        self.first = first
        self.last = last
        super().__init__(f"sequence gap: {first}..{last} missing")


class StreamReset(MessageError):
    """The inbound feed's epoch changed: the server restarted its numbering (resume).

    Reported instead of a :class:`SequenceGap` when a :class:`bgws.ResumePolicy` with an
    ``epoch_field`` sees a message of another epoch: the old position means nothing in the
    new epoch, so the service starts following the new one from that message on.

    Attributes:
        old_epoch: the epoch followed until now.
        new_epoch: the epoch of the message that changed it.
        last: the last sequence number processed in the old epoch, or ``None``.
        first: the sequence number of the first message of the new epoch.
    """

    def __init__(self, old_epoch: Any, new_epoch: Any, last: int | None, first: int) -> None:
        self.old_epoch = old_epoch
        self.new_epoch = new_epoch
        self.last = last
        self.first = first
        super().__init__(
            f"stream reset: epoch {old_epoch!r} -> {new_epoch!r} "
            f"(last seq {last} of the old epoch, first seq {first} of the new)"
        )
