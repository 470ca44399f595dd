"""The ``[fleet]`` table of a service file: which fleet a daemon joins, and how.

::

    [fleet]
    nats = "nats://127.0.0.1:4222"   # or a list of server URLs
    name = "feeds"                   # the fleet; its leases live in the bucket bgws_fleet_feeds
    lease_ttl = 10                   # seconds a lease lives without renewal
    member = "box-1"                 # optional: this daemon's name (default: host-pid)
    renew_interval = 2.5             # optional: seconds between renewals (default lease_ttl/4)

Every daemon of one fleet reads the same service file (the same ``[services.<name>]`` tables)
and the same ``name`` and ``lease_ttl``; each service then runs on exactly one of them (see
:mod:`bgws.fleet`). A wrong value is a :class:`~bgws.ConfigError` whose field is
``fleet.<key>``.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = ["MIN_LEASE_TTL", "FleetConfig", "default_member", "load_fleet"]

MIN_LEASE_TTL: Final = 1.0
"""The shortest ``lease_ttl`` accepted, in seconds."""

_KEYS: Final = ("nats", "name", "lease_ttl", "member", "renew_interval")
_FLEET_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MEMBER = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SCHEMES = ("nats", "tls", "ws", "wss")


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """A checked ``[fleet]`` table.

    Attributes:
        servers: the NATS server URLs (credentials in them are secrets).
        name: the fleet's name.
        lease_ttl: seconds a lease lives without renewal.
        member: this daemon's name in the fleet.
        renew_interval: seconds between two renewals of the leases this daemon holds.
    """

    servers: tuple[str, ...]
    name: str
    lease_ttl: float
    member: str
    renew_interval: float

    @property
    def bucket(self) -> str:
        """The JetStream key-value bucket that holds the fleet's leases."""
        return f"bgws_fleet_{self.name}"

    @property
    def fence_after(self) -> float:
        """Seconds after the last confirmed renewal at which a service is stopped.

        One renewal interval before the lease can expire on the broker, so that the service
        has stopped before another member may claim it.
        """
        return self.lease_ttl - self.renew_interval

    def secret_values(self) -> list[str]:
        """The credentials in the server URLs (user, password, token), for redaction."""
        found: list[str] = []
        for url in self.servers:
            parts = urlsplit(url)
            found.extend(v for v in (parts.username, parts.password) if v)
        return found


def default_member() -> str:
    """``<host>-<pid>``, made of the characters a member name may hold."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0]) or "host"
    return f"{host[:100]}-{os.getpid()}"


def load_fleet(table: Any) -> FleetConfig:
    """Check a ``[fleet]`` table.

    Args:
        table: the parsed table.

    Returns:
        The checked fleet configuration.

    Raises:
        ConfigError: a key is unknown, missing or wrong (``field`` is ``fleet.<key>``).
    """
    if not isinstance(table, Mapping):
        raise ConfigError("fleet", f"must be a table, got {type(table).__name__}")
    for key in table:
        if key not in _KEYS:
            raise ConfigError(f"fleet.{key}", f"unknown option (known: {', '.join(_KEYS)})")
    for key in ("nats", "name", "lease_ttl"):
        if key not in table:
            raise ConfigError(f"fleet.{key}", "is required in a [fleet] table")
    servers = _servers(table["nats"])
    name = _named(table["name"], _FLEET_NAME, "fleet.name", "a fleet name (64 at most)")
    lease_ttl = _seconds(table["lease_ttl"], "fleet.lease_ttl")
    if lease_ttl < MIN_LEASE_TTL:
        raise ConfigError("fleet.lease_ttl", f"must be at least {MIN_LEASE_TTL:g} seconds")
    member = default_member()
    if "member" in table:
        member = _named(table["member"], _MEMBER, "fleet.member", "a member name (128 at most)")
    renew = lease_ttl / 4
    if "renew_interval" in table:
        renew = _seconds(table["renew_interval"], "fleet.renew_interval")
        if not 0.05 <= renew <= lease_ttl / 3:
            raise ConfigError(
                "fleet.renew_interval",
                f"must be between 0.05 and lease_ttl/3 ({lease_ttl / 3:g}) seconds, so that a "
                "lease is renewed at least twice before it is fenced",
            )
    return FleetConfig(servers, name, lease_ttl, member, renew)


def _servers(value: Any) -> tuple[str, ...]:
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list) or not urls:
        raise ConfigError("fleet.nats", "expected a server URL or a list of them")
    for url in urls:
        if not isinstance(url, str) or urlsplit(url).scheme not in _SCHEMES:
            raise ConfigError(
                "fleet.nats", "expected URLs like nats://127.0.0.1:4222 (nats, tls, ws, wss)"
            )
        try:
            urlsplit(url).port  # noqa: B018 - a malformed port raises here
        except ValueError:
            raise ConfigError("fleet.nats", "a server URL has a malformed port") from None
        if not urlsplit(url).hostname:
            raise ConfigError("fleet.nats", "a server URL has no host")
    return tuple(urls)


def _named(value: Any, pattern: re.Pattern[str], field: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigError(field, f"is not {what}: use A-Z a-z 0-9 _ -")
    return value


def _seconds(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(field, f"expected a number of seconds, got {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(field, "must be a positive number of seconds")
    return seconds
