"""Documented presets for common kinds of service: chat, gaming, IoT and trading.

A preset is a set of option values chosen for a workload; each function below says why its
values. Every preset leaves the other options at their defaults, and the caller's overrides win
over the preset. Presets stay protocol-neutral: they set no ``ack``, ``resume`` or
``priority_types``, whose values depend on the server's messages. The one message type a preset
names is the chat preset's ``notify_types = ["chat_message"]``, the type the original design's
chat example uses; a server with other type names overrides it::

    config = bgws.profiles.chat(url="wss://chat.example/ws", app_name="MyChat", max_queue_size=50)

A TOML file picks a preset with a top-level ``profile = "chat"`` key.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import Any

from bgws._presets import profile_values
from bgws.config import Config
from bgws.errors import ConfigError

__all__ = ["PROFILES", "chat", "gaming", "iot", "profile_values", "trading"]


def _build(name: str, url: str, app_name: str, overrides: Mapping[str, Any]) -> Config:
    if "profile" in overrides:
        raise ConfigError("profile", f"cannot be given to the {name} profile function")
    values = {**profile_values(name), **overrides, "url": url, "app_name": app_name}
    return Config.from_mapping(values, env={})


def chat(*, url: str, app_name: str, **overrides: Any) -> Config:
    """Build a config for a chat or messaging app.

    Values, and why:

    - ``heartbeat_interval=25s``: under the 30 to 60 s idle timeout common in proxies, load
      balancers and mobile NATs, so an idle chat stays open; ``ping_timeout=10s`` notices a dead
      link within 35 s, soon enough that a user does not sit on a silent conversation.
    - backoff ``1s`` to ``30s``: a person is waiting, so retries start fast, and half a minute
      is the longest a user should wait for a server that came back.
    - ``max_queue_size=500``: far more messages than anyone types while offline.
    - ``foreground=True``: chat is what notifications are for; the person should see at a
      glance whether the conversation is live, so one "connected / reconnecting / failed"
      notice is kept current while the service runs.
    - ``notify_types=["chat_message"]``, ``notify_body="{text}"``: a chat message that arrives
      while the person looks elsewhere is worth a notification, and its text is the body (the
      title stays ``"{app_name}"``); presence, typing and receipts are not. ``chat_message`` is
      the original design's type name: override ``notify_types`` for a server that uses
      another, or set it to ``[]`` for none.
    - ``min_uptime=10s``: a link that drops within seconds of each connect keeps backing off.

    Args:
        url: the ``ws://`` or ``wss://`` URL.
        app_name: the application's name.
        **overrides: any other :class:`~bgws.config.Config` field; these win over the preset.

    Returns:
        The validated config.

    Raises:
        ConfigError: an override is unknown or wrong.
    """
    return _build("chat", url, app_name, overrides)


def gaming(*, url: str, app_name: str, **overrides: Any) -> Config:
    """Build a config for a real-time multiplayer game.

    Values, and why:

    - ``heartbeat_interval=5s``, ``ping_timeout=3s``: a player notices a frozen game in
      seconds, so a dead link must be found within 8 s and replaced.
    - backoff ``0.25s`` to ``5s``, ``connect_timeout=5s``: reconnect almost at once and never
      wait long; a match does not wait for a slow retry.
    - ``max_queue_size=200``: inputs queued for long are stale; a short queue keeps the backlog
      small (``send`` raises ``QueueFull`` when it is full, as by default).
    - ``min_uptime=5s``: game sessions are short; a link that lived 5 s was a real connection.

    Args:
        url: the ``ws://`` or ``wss://`` URL.
        app_name: the application's name.
        **overrides: any other :class:`~bgws.config.Config` field; these win over the preset.

    Returns:
        The validated config.

    Raises:
        ConfigError: an override is unknown or wrong.
    """
    return _build("gaming", url, app_name, overrides)


def iot(*, url: str, app_name: str, **overrides: Any) -> Config:
    """Build a config for a device or sensor gateway.

    Values, and why:

    - ``heartbeat_interval=60s``, ``ping_timeout=20s``: devices on metered or battery-powered
      links should not chatter; 60 s still keeps most NAT mappings alive.
    - backoff ``5s`` to ``15m``: when a whole fleet loses its server, thousands of devices must
      not hammer it as it comes back; jittered retries spread out up to 15 minutes.
    - ``max_queue_size=10000``: readings taken while offline are kept for hours of outage.
    - ``autostart_on_boot=True``: a gateway runs unattended and must come back after a reboot.
    - ``min_uptime=30s``: flaky cellular links often drop right after connecting; only a link
      that stayed up 30 s resets the backoff.
    - ``storage_sync="full"``: a gateway loses power without warning, and a reading it queued
      must not be lost with it. ``"normal"`` survives a crashed process but may lose the last
      commits on power loss; ``"full"`` fsyncs every commit, a latency a device sending a few
      readings a minute does not notice.

    Args:
        url: the ``ws://`` or ``wss://`` URL.
        app_name: the application's name.
        **overrides: any other :class:`~bgws.config.Config` field; these win over the preset.

    Returns:
        The validated config.

    Raises:
        ConfigError: an override is unknown or wrong.
    """
    return _build("iot", url, app_name, overrides)


def trading(*, url: str, app_name: str, **overrides: Any) -> Config:
    """Build a config for a market-data or order feed.

    Values, and why:

    - ``heartbeat_interval=2s``, ``ping_timeout=2s``: acting on stale prices costs money, so a
      dead feed must be noticed within about 4 s.
    - backoff ``0.1s`` to ``5s``, ``connect_timeout=5s``: every second disconnected is missed
      data; retry at once, and never wait more than 5 s between attempts.
    - ``max_queue_size=5000``: orders and subscriptions queued during a short outage are kept
      (and ``send`` raises rather than dropping one when full).
    - ``inbox_size=8192``: bursts of ticks are absorbed without stalling the reader.
    - ``max_message_size=4 MiB``: order-book snapshots are larger than the 1 MiB default.

    Args:
        url: the ``ws://`` or ``wss://`` URL.
        app_name: the application's name.
        **overrides: any other :class:`~bgws.config.Config` field; these win over the preset.

    Returns:
        The validated config.

    Raises:
        ConfigError: an override is unknown or wrong.
    """
    return _build("trading", url, app_name, overrides)


PROFILES: Mapping[str, Callable[..., Config]] = types.MappingProxyType(
    {"chat": chat, "gaming": gaming, "iot": iot, "trading": trading}
)
"""Profile names to the functions that build them."""
