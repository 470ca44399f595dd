"""The class-based hooks a program can give a service, as in the original design.

Every hook has a no-op (or logging) default, so a subclass overrides only what it needs. Hooks
may be plain methods or coroutines: the service awaits whatever returns an awaitable. Hooks run
on the service's event loop.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from abc import ABC
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from .errors import BgwsError, DecodeError
from .message import Message

Handler = Callable[[Message], Awaitable[None] | None]
"""A message handler: a plain function or a coroutine function taking a :class:`Message`."""

__all__ = [
    "AuthHandler",
    "BearerAuth",
    "ErrorHandler",
    "Handler",
    "HeartbeatHandler",
    "LifecycleHandler",
    "MessageHandler",
    "NotificationHandler",
    "TemplateHeartbeat",
    "reporting_for",
    "service_logger",
]

_log = logging.getLogger("bgws")
_service_log: ContextVar[logging.Logger] = ContextVar("bgws_service_log", default=_log)


@contextlib.contextmanager
def reporting_for(log: logging.Logger) -> Iterator[None]:
    """Within the block, :func:`service_logger` is ``log`` (the service reporting an error).

    Args:
        log: the service's logger, ``bgws.<service_tag>``.
    """
    token = _service_log.set(log)
    try:
        yield
    finally:
        _service_log.reset(token)


def service_logger() -> logging.Logger:
    """The logger of the service whose error is being reported (``bgws.<service_tag>``).

    Outside a report (an :class:`ErrorHandler` called by hand), the ``bgws`` logger.
    """
    return _service_log.get()


class MessageHandler(ABC):
    """Receives every message that no plugin claimed (the seed's ``BackgroundMessageHandler``).

    Example::

        class Chat(bgws.MessageHandler):
            async def handle_message(self, message: bgws.Message) -> None:
                if message.type == "chat_message":
                    print(message.data["text"])
    """

    async def handle_message(self, message: Message) -> None:
        """Handle one incoming message. The default does nothing."""

    def on_connection_established(self) -> Awaitable[None] | None:
        """The link is up (after every successful connect). The default does nothing."""
        return None

    def on_connection_lost(self) -> Awaitable[None] | None:
        """The link went down (before any reconnect). The default does nothing."""
        return None


class AuthHandler(ABC):
    """Supplies credentials for each connect attempt (the seed's ``BackgroundAuthHandler``).

    ``get_auth_data`` is called afresh before every attempt, so a refreshed token is always
    used. What it returns travels as handshake headers (``auth_mode="headers"``, the default),
    as query parameters (``"query"``), or as the first message after the handshake
    (``"message"``).
    """

    @property
    def requires_auth(self) -> bool:
        """Whether connecting needs credentials at all. The default is ``True``."""
        return True

    async def get_auth_data(
        self, connection_data: Mapping[str, Any] | None = None
    ) -> Mapping[str, Any] | None:
        """Credentials for the next attempt; ``connection_data`` is what ``connect()`` got.

        The default returns ``connection_data`` itself. An override may take no argument.
        """
        return connection_data

    async def on_auth_success(self) -> None:
        """The server accepted the credentials. The default does nothing."""

    async def on_auth_failure(self, error: str) -> bool:
        """The server refused the credentials (HTTP 401/403 or an auth close code).

        Return ``True`` after refreshing them to retry at once; ``False`` (the default) ends the
        service in ``FAILED``.
        """
        return False


class BearerAuth(AuthHandler):
    """Sends ``Authorization: Bearer <token>``, fetching the token before every attempt.

    Args:
        token: a function (plain or async) that returns the current token.
        refresh: an optional function (plain or async) called after a 401/403; when given, the
            service retries at once with a freshly fetched token.
    """

    def __init__(
        self,
        token: Callable[[], str | Awaitable[str]],
        *,
        refresh: Callable[[], object] | None = None,
    ) -> None:
        self._token = token
        self._refresh = refresh

    async def get_auth_data(
        self, connection_data: Mapping[str, Any] | None = None
    ) -> Mapping[str, Any] | None:
        token = self._token()
        if inspect.isawaitable(token):
            token = await token
        return {"Authorization": f"Bearer {token}"}

    async def on_auth_failure(self, error: str) -> bool:
        if self._refresh is None:
            return False
        result = self._refresh()
        if inspect.isawaitable(result):
            await result
        return True

    def __repr__(self) -> str:
        return "BearerAuth(token=***)"


class NotificationHandler(ABC):
    """Shows notifications (the seed's ``BackgroundNotificationHandler``).

    The default does nothing. The service calls :meth:`on_state_changed` when the config's
    ``foreground`` is set; :meth:`notify` is for handlers and plugins to call.
    """

    async def notify(self, title: str, body: str, message: Message | None = None) -> None:
        """Show one notification. The default does nothing."""

    async def on_state_changed(self, state: Any) -> None:
        """The service changed state; called when the config's ``foreground`` is set, to keep a
        visible "service running" notice current. The default does nothing."""


class LifecycleHandler(ABC):
    """Hears the service's lifecycle (the seed's ``BackgroundLifecycleHandler``)."""

    async def on_service_started(self) -> None:
        """``start()`` finished. The default does nothing."""

    async def on_service_stopped(self) -> None:
        """``stop()`` finished. The default does nothing."""

    async def on_state_changed(self, old: Any, new: Any) -> None:
        """The connection moved from ``old`` to ``new`` (:class:`bgws.State`)."""


class ErrorHandler(ABC):
    """Hears every error the service reports (the seed's ``BackgroundErrorHandler``).

    Handler and plugin exceptions (as :class:`bgws.HandlerError`), undecodable frames
    (:class:`bgws.DecodeError`), oversized messages, dropped and expired messages, sequence
    gaps, and the failure that ends a service in ``FAILED`` all arrive here. Failures that are
    retried are not errors: watch them as state changes (``BACKING_OFF`` with its reason).
    The default logs at WARNING on the service's logger, ``bgws.<service_tag>`` (see
    :func:`service_logger`), with secrets redacted, and at most ``log_burst`` lines per error
    type every ``log_window`` seconds: a flood (thousands of messages dropped at once) becomes
    a few lines and a count, not a log that buries everything else. An undecodable frame
    (:class:`bgws.DecodeError`, such as a text frame that is not JSON on a service with the
    ``json`` codec) is logged at WARNING once per handler and logger, then at DEBUG: a server
    that sends such frames (an echo of a text frame) is worth one line, not one per frame;
    ``stats.decode_errors`` counts them all. The frame itself is never logged.
    """

    log_burst = 10
    log_window = 10.0

    async def on_error(self, error: BgwsError) -> None:
        """Handle one reported error. The default logs it (rate-limited per error type)."""
        log = service_logger()
        kind = type(error).__name__
        if isinstance(error, DecodeError):
            warned: set[str] = self.__dict__.setdefault("_decode_warned", set())
            if log.name in warned:
                log.debug("%s: %s", kind, error)
                return
            warned.add(log.name)
            log.warning(
                "%s: %s (the frame is dropped; later ones are logged at DEBUG and counted in "
                "stats.decode_errors)",
                kind,
                error,
            )
            return
        now = time.monotonic()
        windows: dict[str, list[float]] = self.__dict__.setdefault("_log_windows", {})
        window = windows.setdefault(kind, [now, 0, 0])  # start, logged, held back
        if now - window[0] >= self.log_window:
            if window[2]:
                log.warning(
                    "%s: %d more like it in the last %.0fs", kind, window[2], now - window[0]
                )
            window[:] = [now, 0, 0]
        if window[1] >= self.log_burst:
            window[2] += 1
            return
        window[1] += 1
        cause = error.__cause__
        shown = str(cause) if cause is not None else ""
        detail = f" ({type(cause).__name__}: {shown})" if shown and shown not in str(error) else ""
        log.warning("%s: %s%s", kind, error, detail)


class HeartbeatHandler(ABC):
    """Shapes an application-level heartbeat (the seed's ``BackgroundHeartbeatHandler``).

    For servers that ignore protocol pings: every ``heartbeat_interval`` the service sends
    :meth:`heartbeat_message`, and the link counts as alive when a reply for which
    :meth:`is_heartbeat_reply` is true (or any other frame) arrives within ``ping_timeout``.
    Replies are consumed: they do not reach the message handlers.
    """

    def heartbeat_message(self) -> Mapping[str, Any] | str | bytes:
        """The message to send. The default is ``{"type": "ping"}``."""
        return {"type": "ping"}

    def is_heartbeat_reply(self, message: Message) -> bool:
        """Whether ``message`` answers a heartbeat. The default matches type ``"pong"``."""
        return message.type == "pong"


class TemplateHeartbeat(HeartbeatHandler):
    """The config-only heartbeat: a fixed message template and the reply type to expect.

    Args:
        template: the message sent each time (sent without an automatic id).
        reply_type: the ``type`` of the reply; ``None`` means any frame counts.
    """

    def __init__(self, template: Mapping[str, Any], reply_type: str | None = None) -> None:
        self._template = MappingProxyType(dict(template))
        self._reply_type = reply_type

    def heartbeat_message(self) -> Mapping[str, Any]:
        return dict(self._template)

    @property
    def reply_type(self) -> str | None:
        """The ``type`` of a reply, or ``None`` when any frame counts (nothing is consumed)."""
        return self._reply_type

    def is_heartbeat_reply(self, message: Message) -> bool:
        return self._reply_type is not None and message.type == self._reply_type
