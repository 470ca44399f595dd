"""Factories: a configured :class:`Service` in one call, as in the original design.

``create_chat_service``, ``create_gaming_service``, ``create_iot_service`` and
``create_trading_service`` start from the matching profile (:mod:`bgws.profiles`);
``create_custom_service`` takes a full :class:`Config`. Each call returns a new, independent
service: there is no global instance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

from . import profiles
from .config import Config
from .handlers import (
    AuthHandler,
    ErrorHandler,
    HeartbeatHandler,
    LifecycleHandler,
    MessageHandler,
    NotificationHandler,
)
from .plugins import Plugin
from .service import Service
from .storage import StorageBackend

__all__ = [
    "create_chat_service",
    "create_custom_service",
    "create_gaming_service",
    "create_iot_service",
    "create_trading_service",
]


def create_custom_service(
    *,
    config: Config,
    message_handler: MessageHandler | None = None,
    storage: StorageBackend | None = None,
    notification_handler: NotificationHandler | None = None,
    auth_handler: AuthHandler | None = None,
    lifecycle_handler: LifecycleHandler | None = None,
    error_handler: ErrorHandler | None = None,
    heartbeat_handler: HeartbeatHandler | None = None,
    plugins: Iterable[Plugin] = (),
) -> Service:
    """A service from a full :class:`Config` and the handlers you give.

    Args:
        config: the configuration (see :class:`Config` and :mod:`bgws.profiles`).
        message_handler: sees every message no plugin claimed.
        storage: keeps connection info (default: in memory).
        notification_handler: shows notifications.
        auth_handler: supplies credentials before every connect attempt.
        lifecycle_handler: hears start, stop and state changes.
        error_handler: hears every reported error (default: logs them).
        heartbeat_handler: an application heartbeat for servers that ignore pings.
        plugins: plugins, in the order they see messages.
    """
    return Service(
        config,
        message_handler=message_handler,
        storage=storage,
        notification_handler=notification_handler,
        auth_handler=auth_handler,
        lifecycle_handler=lifecycle_handler,
        error_handler=error_handler,
        heartbeat_handler=heartbeat_handler,
        plugins=plugins,
    )


def _factory(profile: Callable[..., Config], name: str) -> Callable[..., Service]:
    def create(
        *,
        app_name: str,
        url: str,
        message_handler: MessageHandler | None = None,
        storage: StorageBackend | Literal["sqlite", "memory"] | None = None,
        notification_handler: NotificationHandler | None = None,
        auth_handler: AuthHandler | None = None,
        lifecycle_handler: LifecycleHandler | None = None,
        error_handler: ErrorHandler | None = None,
        heartbeat_handler: HeartbeatHandler | None = None,
        plugins: Iterable[Plugin] = (),
        **overrides: Any,
    ) -> Service:
        if isinstance(storage, str):  # the config option, not a StorageBackend
            overrides["storage"] = storage
            storage = None
        return create_custom_service(
            config=profile(url=url, app_name=app_name, **overrides),
            message_handler=message_handler,
            storage=storage,
            notification_handler=notification_handler,
            auth_handler=auth_handler,
            lifecycle_handler=lifecycle_handler,
            error_handler=error_handler,
            heartbeat_handler=heartbeat_handler,
            plugins=plugins,
        )

    create.__name__ = create.__qualname__ = f"create_{name}_service"
    create.__doc__ = (
        f"A service with the ``{name}`` profile (see :func:`bgws.profiles.{name}`).\n\n"
        "Takes ``app_name=``, ``url=``, the handlers of :func:`create_custom_service`, and any\n"
        "config field as a keyword to override the profile's value. ``storage`` is either a\n"
        'StorageBackend (connection info, as in the seed) or the config option ``"sqlite"`` /\n'
        '``"memory"``.'
    )
    return create


create_chat_service = _factory(profiles.chat, "chat")
create_gaming_service = _factory(profiles.gaming, "gaming")
create_iot_service = _factory(profiles.iot, "iot")
create_trading_service = _factory(profiles.trading, "trading")
