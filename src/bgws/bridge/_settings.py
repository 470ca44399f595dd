"""The settings of a NATS bridge, checked: from Python arguments or a service file's table.

A ``[services.<name>.bridge]`` table in a service file (``bgws run``) holds the same settings
as :class:`~bgws.bridge.NatsBridge`'s arguments::

    [services.prices.bridge]
    nats = "nats://127.0.0.1:4222"          # or a list of URLs
    stream = "BGWS"                         # created when missing
    publish = "bgws.{service}.in.{type}"    # "" publishes nothing
    publish_types = ["trade", "quote"]      # absent: every type
    consume = "bgws.{service}.out"          # "" consumes nothing

plus three optional bounds: ``max_buffer`` (messages waiting for JetStream before the
WebSocket read pauses), ``max_in_flight`` (publishes waiting for their ack) and
``ack_timeout`` (seconds before an unacked publish is sent again).

Subject templates are NATS subjects whose tokens are literal words or exactly one of the
placeholders ``{service}`` (the service's tag) and ``{type}`` (the message's type, publish
only). A wrong value is a :class:`~bgws.ConfigError` naming ``services.<name>.bridge.<key>``.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["BridgeSettings", "load_table", "wildcard"]

_KEYS = (
    "nats",
    "stream",
    "publish",
    "publish_types",
    "consume",
    "max_buffer",
    "max_in_flight",
    "ack_timeout",
)
_STREAM = re.compile(r"[A-Za-z0-9_-]{1,255}")
_WORD = re.compile(r"[^\s.*>{}]+")
_URL = re.compile(r"(nats|tls|ws|wss)://\S+")


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    """What a :class:`~bgws.bridge.NatsBridge` connects to and moves (checked on creation).

    Attributes:
        servers: the NATS server URLs.
        stream: the JetStream stream (created when missing, with a duplicate window).
        publish: the subject template incoming messages are published to (``None``: none).
        publish_types: the message types published (``None``: every type).
        consume: the subject commands are consumed from into the outbox (``None``: none).
        max_buffer: messages held for JetStream before reading the WebSocket pauses.
        max_in_flight: publishes waiting for JetStream's ack at once.
        ack_timeout: seconds to wait for an ack before publishing again (same message id).

    Raises:
        ConfigError: a value is wrong (the field is the argument's name).
    """

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    stream: str = "BGWS"
    publish: str | None = "bgws.{service}.in.{type}"
    publish_types: frozenset[str] | None = None
    consume: str | None = "bgws.{service}.out"
    max_buffer: int = 10_000
    max_in_flight: int = 1024
    ack_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.servers or not all(
            isinstance(s, str) and _URL.fullmatch(s) for s in self.servers
        ):
            raise ConfigError("nats", "expected nats:// URLs (a string or a list of strings)")
        if not isinstance(self.stream, str) or not _STREAM.fullmatch(self.stream):
            raise ConfigError("stream", "a stream name is 1-255 of A-Z a-z 0-9 _ -")
        if self.publish is not None:
            _check_template("publish", self.publish, ("{service}", "{type}"))
        if self.consume is not None:
            _check_template("consume", self.consume, ("{service}",))
        if self.publish is None and self.consume is None:
            raise ConfigError("publish", "the bridge neither publishes nor consumes")
        if self.publish_types is not None and not all(
            isinstance(t, str) and t for t in self.publish_types
        ):
            raise ConfigError("publish_types", "expected a list of message types")
        for name in ("max_buffer", "max_in_flight"):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= 10_000_000:
                raise ConfigError(name, "expected a whole number from 1 to 10000000")
        timeout = self.ack_timeout
        if (
            not isinstance(timeout, int | float)
            or isinstance(timeout, bool)
            or not math.isfinite(timeout)
            or not 0 < timeout <= 3600
        ):
            raise ConfigError("ack_timeout", "expected seconds, more than 0 and at most 3600")


def _check_template(field: str, template: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(template, str) or not template:
        raise ConfigError(field, "expected a subject template such as 'bgws.{service}.out'")
    for token in template.split("."):
        if token in allowed:
            continue
        if token.startswith("{") and token.endswith("}"):
            names = ", ".join(allowed)
            raise ConfigError(field, f"unknown placeholder {token}; use {names}")
        if not _WORD.fullmatch(token):
            raise ConfigError(
                field,
                f"{token!r} is not a subject token: literal words and whole placeholders "
                "separated by '.', no wildcards",
            )


def wildcard(template: str) -> str:
    """The subject filter that matches every subject ``template`` can make."""
    return ".".join("*" if t.startswith("{") else t for t in template.split("."))


def load_table(table: Any, where: str) -> BridgeSettings:
    """Check a ``[services.<name>.bridge]`` table.

    Args:
        table: the parsed table.
        where: its field name (``services.<name>.bridge``).

    Returns:
        The checked settings.

    Raises:
        ConfigError: a key is unknown or a value wrong (``field`` is ``<where>.<key>``), or
            nats-py is not installed (``pip install 'bgws[nats]'``).
    """
    if not isinstance(table, Mapping):
        raise ConfigError(where, "must be a table ([services.<name>.bridge])")
    for key in table:
        if key not in _KEYS:
            close = difflib.get_close_matches(str(key), _KEYS, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(_KEYS)})"
            raise ConfigError(f"{where}.{key}", f"unknown bridge option{hint}")
    if importlib.util.find_spec("nats") is None:
        raise ConfigError(where, "the NATS bridge needs nats-py: pip install 'bgws[nats]'")
    options: dict[str, Any] = {}
    if "nats" in table:
        servers = table["nats"]
        options["servers"] = (servers,) if isinstance(servers, str) else _strings(servers)
    for key in ("publish", "consume"):
        if key in table:
            value = table[key]
            options[key] = None if value == "" else value
    if "publish_types" in table:
        types = _strings(table["publish_types"])
        if not all(isinstance(t, str) and t for t in types):
            raise ConfigError(f"{where}.publish_types", "expected a list of message types")
        options["publish_types"] = frozenset(types)
    for key in ("stream", "max_buffer", "max_in_flight", "ack_timeout"):
        if key in table:
            options[key] = table[key]
    try:
        return BridgeSettings(**options)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{_toml_key(exc.field)}", exc.reason) from None


def _strings(value: Any) -> tuple[Any, ...]:
    """A list from TOML as a tuple (anything else as a one-item tuple, refused later)."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return tuple(value)
    return (value,)


def _toml_key(field: str | None) -> str:
    return "nats" if field in (None, "servers") else str(field)
