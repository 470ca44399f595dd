"""Factories: a configured :class:`Service` in one call, as in the original design.

``create_chat_service``, ``create_gaming_service``, ``create_iot_service`` and
``create_trading_service`` start from the matching profile (:mod:`bgws.profiles`);
``create_custom_service`` takes a full :class:`Config`. Each call returns a new, independent
service: there is no global instance.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypedDict, Unpack

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
    "ServiceParts",
    "create_chat_service",
    "create_custom_service",
    "create_gaming_service",
    "create_iot_service",
    "create_trading_service",
]


class ServiceParts(TypedDict, total=False):
    """The handlers and plugins every factory accepts (all optional).

    ``message_handler`` sees every message no plugin claimed; ``storage`` keeps connection
    info (default: the service's own store); ``notification_handler`` shows notifications;
    ``auth_handler`` supplies credentials before every connect attempt;
    ``lifecycle_handler`` hears start, stop and state changes; ``error_handler`` hears every
    reported error (default: logs them); ``heartbeat_handler`` is an application heartbeat for
    servers that ignore pings; ``plugins`` see messages first, in order; ``ssl_context`` is
    your own client TLS context for a ``wss://`` URL, used as given on every attempt.
    """

    message_handler: MessageHandler | None
    storage: StorageBackend | None
    notification_handler: NotificationHandler | None
    auth_handler: AuthHandler | None
    lifecycle_handler: LifecycleHandler | None
    error_handler: ErrorHandler | None
    heartbeat_handler: HeartbeatHandler | None
    plugins: Iterable[Plugin]
    ssl_context: ssl.SSLContext | None


_PART_NAMES = frozenset(ServiceParts.__annotations__)


def create_custom_service(*, config: Config, **parts: Unpack[ServiceParts]) -> Service:
    """A service from a full :class:`Config` and the handlers you give (see
    :class:`ServiceParts`)."""
    return Service(config, **parts)


def _factory(profile: Callable[..., Config], name: str) -> Callable[..., Service]:
    def create(
        *,
        app_name: str,
        url: str,
        storage: StorageBackend | Literal["sqlite", "memory"] | None = None,
        **options: Any,
    ) -> Service:
        parts: dict[str, Any] = {k: options.pop(k) for k in list(options) if k in _PART_NAMES}
        if isinstance(storage, str):  # the config option, not a StorageBackend
            options["storage"] = storage
        else:
            parts["storage"] = storage
        return Service(profile(url=url, app_name=app_name, **options), **parts)

    create.__name__ = create.__qualname__ = f"create_{name}_service"
    create.__doc__ = (
        f"A service with the ``{name}`` profile (see :func:`bgws.profiles.{name}`).\n\n"
        "Takes ``app_name=``, ``url=``, the handlers and plugins of :class:`ServiceParts`, and\n"
        "any config field as a keyword to override the profile's value. ``storage`` is either\n"
        'a StorageBackend (connection info, as in the seed) or the config option ``"sqlite"`` /\n'
        '``"memory"``.'
    )
    return create


create_chat_service = _factory(profiles.chat, "chat")
create_gaming_service = _factory(profiles.gaming, "gaming")
create_iot_service = _factory(profiles.iot, "iot")
create_trading_service = _factory(profiles.trading, "trading")
