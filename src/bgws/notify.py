"""Notifications: rules that turn incoming messages into notices, and the backends that show them.

A config says which incoming message types deserve a notification (``notify_types``), how to
word it (``notify_title``, ``notify_body``: templates filled from the message) and where it goes
when the program gives no :class:`~bgws.NotificationHandler` of its own (``notifications``):

- ``"log"`` (:class:`LogNotifier`): a DEBUG record on the ``bgws.<service_tag>.notify`` logger
  (a notification's text is the message's text: private, so never at INFO);
- ``"desktop"`` (:class:`DesktopNotifier`): the desktop's notification centre, through the
  optional ``desktop-notifier`` package (``pip install "bgws[desktop]"``), or the log when that
  package or a desktop session is missing;
- ``"none"``: nowhere.

With ``foreground`` set, the handler also keeps one "``<app_name>``: connected / reconnecting /
failed" notice current, the desktop counterpart of the original design's Android foreground
service notification.

:func:`build_notifications` turns a config (and the program's handler, if any) into the handler
and the plugins a :class:`~bgws.Service` is built with. A notification backend's failure is
logged, never raised into the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import os
import string
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

from ._redact import redact_text
from .config import Config
from .handlers import NotificationHandler
from .machine import State
from .message import Message
from .plugins import Plugin

__all__ = [
    "MAX_BODY",
    "MAX_PENDING",
    "MAX_TITLE",
    "DesktopNotifier",
    "LogNotifier",
    "NotificationRules",
    "build_notifications",
    "has_desktop_session",
    "render",
    "state_notice",
]

MAX_TITLE: Final = 200
"""Longest rendered title, in characters; a longer one is cut and ends with ``…``."""
MAX_BODY: Final = 1000
"""Longest rendered body, in characters; a longer one is cut and ends with ``…``."""
MAX_PENDING: Final = 64
"""Most notifications :class:`NotificationRules` lets wait for a slow backend at once."""
BACKEND_TIMEOUT: Final = 5.0
"""Seconds one call into the desktop notification centre may take before it is given up."""

_STATE_LABELS: Final[Mapping[State, str]] = {
    State.CONNECTED: "connected",
    State.BACKING_OFF: "reconnecting",
    State.FAILED: "failed",
    State.CLOSED: "stopped",
}
_NOTICE_BODIES: Final[Mapping[str, str]] = {
    "connecting": "Connecting to the server.",
    "connected": "Connected; messages arrive in the background.",
    "reconnecting": "The connection dropped; reconnecting.",
    "failed": "Gave up reconnecting; restart the service to try again.",
}
_formatter = string.Formatter()


# -- templates ----------------------------------------------------------------------------------


def render(template: str, message: Message | None, app_name: str, limit: int = MAX_BODY) -> str:
    """Fill a ``notify_title`` / ``notify_body`` template from a message.

    ``{app_name}`` is the config's app name and ``{type}`` the message's type; any other name is
    a top-level field of the message's JSON object. A field that is missing, ``null``, or whose
    format spec does not fit its value renders as its plain text (or nothing): rendering never
    raises. The template is checked when the config is built.

    Args:
        template: the template, as validated by :class:`~bgws.Config`.
        message: the message, or ``None`` (only ``app_name`` and ``type`` are known then).
        app_name: the value of ``{app_name}``.
        limit: the longest result, in characters.

    Returns:
        The text, at most ``limit`` characters.
    """
    data = message.data if message is not None else None
    fields: Mapping[Any, Any] = data if isinstance(data, Mapping) else {}
    known = {"app_name": app_name, "type": (message.type if message is not None else None) or ""}
    pieces: list[str] = []
    for literal, name, spec, conversion in _formatter.parse(template):
        pieces.append(literal)
        if name is None:
            continue
        value = known[name] if name in known else fields.get(name)
        if value is None:
            continue
        if conversion is not None:
            value = _formatter.convert_field(value, conversion)
        try:
            pieces.append(format(value, spec or ""))
        except (TypeError, ValueError):
            pieces.append(str(value))
    return _cut("".join(pieces), limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def state_notice(state: object, *, was_connected: bool) -> str | None:
    """The word the foreground notice shows for a state, or ``None`` to leave it as it is.

    ``CONNECTING`` reads "connecting" before the first link and "reconnecting" after one;
    ``CLOSED`` reads "stopped" (the notice is then removed); ``IDLE`` and ``CLOSING`` change
    nothing.

    Args:
        state: a :class:`~bgws.State` (or its value, such as ``"connected"``).
        was_connected: whether the service has had a link, or backed off, before.
    """
    try:
        state = State(state) if not isinstance(state, State) else state
    except ValueError:
        return None
    if state is State.CONNECTING:
        return "reconnecting" if was_connected else "connecting"
    return _STATE_LABELS.get(state)


class _NoticeTracker:
    """Turns state changes into notice words, announcing each word once while it lasts."""

    def __init__(self) -> None:
        self.current: str | None = None
        self._was_connected = False

    def update(self, state: object) -> str | None:
        """The new word when it differs from the shown one, else ``None``."""
        word = state_notice(state, was_connected=self._was_connected)
        if word in ("connected", "reconnecting"):
            self._was_connected = True
        if word is None or word == self.current:
            return None
        self.current = word
        return word


# -- the log backend ----------------------------------------------------------------------------


class LogNotifier(NotificationHandler):
    """Writes notifications to the ``bgws.<service_tag>.notify`` logger.

    A notification is logged at DEBUG: its text comes from the message (a chat message's text),
    which is private, and one INFO line per message would be noise. Secrets the config holds
    are replaced by ``***`` in the text. With ``foreground`` set, each change of the notice
    ("connected", "reconnecting", "failed", "stopped") is one INFO record; repeated reconnect
    attempts do not repeat it.

    Args:
        config: the service's config.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.log = logging.getLogger(f"{config.logger_name}.notify")
        self._secrets = config.secret_values()
        self._notice = _NoticeTracker()

    async def notify(self, title: str, body: str, message: Message | None = None) -> None:
        """Log one notification, ``title: body``, at DEBUG (never at INFO: it is private)."""
        text = f"{title}: {body}" if body else title
        self.log.debug(
            "%s",
            redact_text(text, self._secrets),
            extra={"channel": self.config.notification_channel_id},
        )

    async def on_state_changed(self, state: Any) -> None:
        """Log the notice when its word changes."""
        word = self._notice.update(state)
        if word is not None:
            self.log.info(
                "%s: %s",
                self.config.app_name,
                word,
                extra={"channel": self.config.notification_channel_id},
            )


# -- the desktop backend ------------------------------------------------------------------------

_fallback_warned = False


def _warn_fallback_once(log: logging.Logger, why: str) -> None:
    """Warn that desktop notifications go to the log: once per process, whichever service."""
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        log.warning("desktop notifications unavailable, using the log: %s", why)


def has_desktop_session(
    environ: Mapping[str, str] | None = None, platform: str | None = None
) -> bool:
    """Whether a desktop session can show notifications to this process.

    On Linux (and other Unix desktops) that is a D-Bus session bus or a display:
    ``DBUS_SESSION_BUS_ADDRESS``, ``DISPLAY`` or ``WAYLAND_DISPLAY``. On macOS and Windows a
    session is assumed.

    Args:
        environ: the environment (default: :data:`os.environ`).
        platform: a :data:`sys.platform` value (default: this one).
    """
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if platform == "darwin" or platform.startswith(("win", "cygwin")):
        return True
    return any(env.get(name) for name in ("DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "WAYLAND_DISPLAY"))


def _load_desktop_notifier() -> Any:
    """The ``desktop_notifier`` module, or ``None`` when it is not installed."""
    try:
        return importlib.import_module("desktop_notifier")
    except ImportError:
        return None


class DesktopNotifier(NotificationHandler):
    """Shows notifications in the desktop's notification centre.

    Uses the ``desktop-notifier`` package (the ``bgws[desktop]`` extra): freedesktop
    notifications over D-Bus on Linux, Notification Center on macOS (from an app bundle), toast
    notifications on Windows. When the package is not installed, no desktop session is found
    (see :func:`has_desktop_session`), or the platform offers no notification centre to this
    process, notifications go to a :class:`LogNotifier` instead, with one warning per process.

    The config's options map as follows: ``app_name`` names the application;
    ``notification_channel_name`` groups bgws's notifications (a header on Windows, a thread on
    macOS; freedesktop servers have no groups); ``app_icon_path`` is the icon (a file, or an
    icon theme name on Linux); ``foreground_service_notification_id`` identifies the one
    persistent notice, which is replaced rather than duplicated. ``docs/notifications.md``
    has the full table.

    Calls into the notification centre are given up after :data:`BACKEND_TIMEOUT` seconds, and
    their failures are logged on ``bgws.<service_tag>.notify``, never raised.

    Args:
        config: the service's config.
        environ: the environment to look for a session in (default: :data:`os.environ`).
    """

    def __init__(self, config: Config, *, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.log = logging.getLogger(f"{config.logger_name}.notify")
        self.fallback = LogNotifier(config)
        self._notice = _NoticeTracker()
        self._notice_id = f"bgws-{config.service_tag}-{config.foreground_service_notification_id}"
        self._notice_shown = False
        self._wanted: str | None = None
        self._worker: asyncio.Task[None] | None = None
        self._failing = False
        self._module: Any = None
        self._backend: Any = self._open_backend(environ)

    @property
    def is_desktop(self) -> bool:
        """Whether notifications reach the desktop (``False``: they go to the log)."""
        return self._backend is not None

    def _open_backend(self, environ: Mapping[str, str] | None) -> Any:
        """A ``desktop_notifier.DesktopNotifier``, or ``None`` (after one warning) for the log."""
        module = _load_desktop_notifier()
        why: str | None = None
        if module is None:
            why = 'the desktop-notifier package is not installed (pip install "bgws[desktop]")'
        elif not has_desktop_session(environ):
            why = (
                "no desktop session "
                "(none of DBUS_SESSION_BUS_ADDRESS, DISPLAY, WAYLAND_DISPLAY is set)"
            )
        elif module.main.get_backend_class().__name__.startswith("Dummy"):
            why = "this process cannot reach a notification centre (on macOS: not an app bundle)"
        else:
            try:
                backend = module.DesktopNotifier(
                    app_name=self.config.app_name, app_icon=self._icon(module)
                )
            except Exception as exc:
                why = f"desktop-notifier failed to start: {type(exc).__name__}: {exc}"
            else:
                self._module = module
                return backend
        _warn_fallback_once(self.log, why)
        return None

    def _icon(self, module: Any) -> Any:
        path = self.config.app_icon_path
        if path is None:
            return None
        if os.path.isabs(path) or os.sep in path or (os.altsep and os.altsep in path):
            return module.Icon(path=Path(path))
        return module.Icon(name=path)

    # -- NotificationHandler --

    async def notify(self, title: str, body: str, message: Message | None = None) -> None:
        """Show one notification (or log it, without a desktop)."""
        if self._backend is None:
            await self.fallback.notify(title, body, message)
            return
        notification = self._module.Notification(
            title=title, message=body, thread=self.config.notification_channel_name
        )
        await self._call("notify", functools.partial(self._backend.send_notification, notification))

    async def on_state_changed(self, state: Any) -> None:
        """Keep the "service running" notice current; returns at once.

        The update runs in the background, so a slow notification centre never delays the
        connection; when the service stops, the notice is removed before this returns.
        """
        if self._backend is None:
            await self.fallback.on_state_changed(state)
            return
        word = self._notice.update(state)
        if word is None:
            return
        self._wanted = word
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(
                self._show_notices(), name=f"bgws-notice-{self.config.service_tag}"
            )
        if word == "stopped":
            await asyncio.gather(self._worker, return_exceptions=True)

    async def _show_notices(self) -> None:
        """Bring the shown notice up to the latest wanted word, skipping words already stale."""
        shown: str | None = None
        while self._wanted != shown:
            shown = self._wanted
            if self._notice_shown:
                # Replace, never duplicate: the old notice goes before the new one comes.
                await self._call(
                    "clear the notice", lambda: self._backend.clear(self._notice_id), quiet=True
                )
                self._notice_shown = False
            if shown == "stopped" or shown is None:
                continue
            urgency = self._module.Urgency
            notice = self._module.Notification(
                title=f"{self.config.app_name}: {shown}",
                message=_NOTICE_BODIES.get(shown, ""),
                thread=self.config.notification_channel_name,
                identifier=self._notice_id,
                urgency=urgency.Normal if shown == "failed" else urgency.Low,
                timeout=0,  # freedesktop: stays until replaced; elsewhere ignored
            )
            self._notice_shown = await self._call(
                "show the notice", functools.partial(self._backend.send_notification, notice)
            )

    async def _call(
        self, what: str, call: Callable[[], Awaitable[Any]], *, quiet: bool = False
    ) -> bool:
        """Run one backend call with a timeout; log a failure (once while it lasts)."""
        try:
            async with asyncio.timeout(BACKEND_TIMEOUT):
                await call()
        except Exception as exc:
            if quiet:
                self.log.debug("could not %s: %s: %s", what, type(exc).__name__, exc)
            elif not self._failing:
                self._failing = True
                self.log.warning(
                    "desktop notification failed (%s): %s: %s", what, type(exc).__name__, exc
                )
            else:
                self.log.debug("desktop notification failed (%s): %s", what, exc)
            return False
        if self._failing and not quiet:
            self._failing = False
            self.log.info("desktop notifications work again")
        return True


# -- rules --------------------------------------------------------------------------------------


class NotificationRules(Plugin):
    """Notifies for every incoming message whose type is in the config's ``notify_types``.

    Title and body are :func:`render`-ed from ``notify_title`` and ``notify_body``, and handed to
    the notification handler's ``notify`` in a task of their own, so a slow backend never holds
    up dispatch. At most ``max_pending`` such tasks wait at once; more notifications are
    dropped (counted in :attr:`dropped`) with one warning per burst. The plugin never claims a
    message: handlers see it as well.

    Args:
        config: the service's config.
        notifier: the handler that shows the notifications.
        max_pending: the most notifications waiting for the handler at once.
    """

    plugin_name = "notification-rules"

    def __init__(
        self, config: Config, notifier: NotificationHandler, *, max_pending: int = MAX_PENDING
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.config = config
        self.notifier = notifier
        self.max_pending = max_pending
        self.supported_message_types = config.notify_types
        self.log = logging.getLogger(f"{config.logger_name}.notify")
        self.dropped = 0
        self._pending: set[asyncio.Task[None]] = set()
        self._dropping = False

    @property
    def pending(self) -> int:
        """How many notifications are waiting for the handler now."""
        return len(self._pending)

    def handle_message(self, message: Message) -> bool:
        """Render and hand on the notification; never claims the message."""
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                self.log.warning(
                    "%d notifications are waiting for the handler; "
                    "dropping more until it catches up",
                    len(self._pending),
                )
            return False
        self._dropping = False
        title = render(self.config.notify_title, message, self.config.app_name, MAX_TITLE)
        body = render(self.config.notify_body, message, self.config.app_name, MAX_BODY)
        task = asyncio.get_running_loop().create_task(self._deliver(title, body, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return False

    async def _deliver(self, title: str, body: str, message: Message) -> None:
        try:
            await self.notifier.notify(title, body, message)
        except Exception as exc:
            self.log.warning(
                "%s.notify raised: %s: %s", type(self.notifier).__name__, type(exc).__name__, exc
            )

    async def dispose(self) -> None:
        """Let waiting notifications finish (within ``close_timeout``), then cancel the rest."""
        if not self._pending:
            return
        _, late = await asyncio.wait(set(self._pending), timeout=self.config.close_timeout)
        for task in late:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*late, return_exceptions=True)


# -- building -----------------------------------------------------------------------------------


def build_notifications(
    config: Config, handler: NotificationHandler | None
) -> tuple[NotificationHandler, list[Plugin]]:
    """The notification handler and the plugins a service built from ``config`` should use.

    Args:
        config: the service's config.
        handler: the program's own handler, or ``None`` to pick one by ``config.notifications``
            (``"log"``: :class:`LogNotifier`, ``"desktop"``: :class:`DesktopNotifier`,
            ``"none"``: a handler that shows nothing).

    Returns:
        The handler, and ``[NotificationRules(config, handler)]`` when ``config.notify_types``
        is set (and notifications go somewhere), else ``[]``.
    """
    if handler is None:
        if config.notifications == "none":
            return NotificationHandler(), []
        handler = (
            DesktopNotifier(config) if config.notifications == "desktop" else LogNotifier(config)
        )
    plugins: list[Plugin] = [NotificationRules(config, handler)] if config.notify_types else []
    return handler, plugins
