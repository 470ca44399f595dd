"""The option values of the presets in :mod:`bgws.profiles`, kept apart from the functions.

:mod:`bgws.config` reads a TOML file's ``profile = "chat"`` key through :func:`profile_values`,
and :mod:`bgws.profiles` builds a :class:`~bgws.config.Config` from the same values: with the
table here, below both, neither module imports the other's importer (no import cycle).
Users reach :func:`profile_values` as ``bgws.profiles.profile_values``.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping
from typing import Any

from bgws.errors import ConfigError

__all__ = ["profile_values"]

_VALUES: Mapping[str, Mapping[str, Any]] = types.MappingProxyType(
    {
        "chat": types.MappingProxyType(
            {
                "heartbeat_interval": 25.0,
                "ping_timeout": 10.0,
                "initial_reconnect_delay": 1.0,
                "max_reconnect_delay": 30.0,
                "max_queue_size": 500,
                "foreground": True,
                "min_uptime": 10.0,
                "notify_types": ("chat_message",),
                "notify_body": "{text}",
            }
        ),
        "gaming": types.MappingProxyType(
            {
                "heartbeat_interval": 5.0,
                "ping_timeout": 3.0,
                "initial_reconnect_delay": 0.25,
                "max_reconnect_delay": 5.0,
                "connect_timeout": 5.0,
                "max_queue_size": 200,
                "min_uptime": 5.0,
            }
        ),
        "iot": types.MappingProxyType(
            {
                "heartbeat_interval": 60.0,
                "ping_timeout": 20.0,
                "initial_reconnect_delay": 5.0,
                "max_reconnect_delay": 900.0,
                "max_queue_size": 10_000,
                "autostart_on_boot": True,
                "min_uptime": 30.0,
                "storage_sync": "full",
            }
        ),
        "trading": types.MappingProxyType(
            {
                "heartbeat_interval": 2.0,
                "ping_timeout": 2.0,
                "initial_reconnect_delay": 0.1,
                "max_reconnect_delay": 5.0,
                "connect_timeout": 5.0,
                "max_queue_size": 5000,
                "inbox_size": 8192,
                "max_message_size": 4 * 1024 * 1024,
            }
        ),
    }
)


def profile_values(name: str) -> dict[str, Any]:
    """Return a preset's own option values (not the defaults it leaves alone).

    Args:
        name: ``"chat"``, ``"gaming"``, ``"iot"`` or ``"trading"``.

    Returns:
        A new dict of option names to values; durations are in seconds and lists are lists
        (as in a TOML file or JSON), so the dict can be printed as JSON or changed freely.

    Raises:
        ConfigError: ``name`` is not a known profile (``field`` is ``"profile"``).
    """
    values = _VALUES.get(name) if isinstance(name, str) else None
    if values is None:
        reason = f"unknown profile {name!r}; choose one of {', '.join(_VALUES)}"
        if isinstance(name, str):
            close = difflib.get_close_matches(name.lower(), list(_VALUES), n=1, cutoff=0.6)
            if close:
                reason += f" (did you mean {close[0]!r}?)"
        raise ConfigError("profile", reason)
    return {key: list(v) if isinstance(v, tuple) else v for key, v in values.items()}
