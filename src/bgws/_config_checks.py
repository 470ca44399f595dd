"""The value checks behind :class:`bgws.Config`: one function per kind of option.

Each ``check_*`` function takes the option's name and the value given, and returns the
normalised value or raises :class:`~bgws.errors.ConfigError` naming the option. The module also
holds the duration parser (public as :func:`bgws.parse_duration`), the deep freezing of JSON
values, and the parsing of ``BGWS_<FIELD>`` environment text. It knows nothing of the
:class:`~bgws.config.Config` class itself, which decides which check applies to which field.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import string
import types
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from bgws._redact import is_sensitive_name, redact_url
from bgws.errors import ConfigError
from bgws.policies import AckPolicy, ResumePolicy

__all__ = [
    "MAX_JSON_DEPTH",
    "TOKEN",
    "check_ack",
    "check_bool",
    "check_choice",
    "check_count_per",
    "check_duration",
    "check_headers",
    "check_int",
    "check_mapping",
    "check_names",
    "check_path",
    "check_resume",
    "check_sequence",
    "check_storage_keys",
    "check_storage_path",
    "check_str",
    "check_strings",
    "check_template",
    "check_url",
    "freeze_json",
    "parse_duration",
    "parse_env",
    "sensitive_strings",
    "slug",
    "thaw_json",
    "toml_limit",
    "type_name",
]

TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP token (RFC 9110, 5.6.2): header names and subprotocol names."""
_SLUG_OUTSIDE = re.compile(r"[^a-z0-9_.-]+")
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?"
_DURATION_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h)")
_DURATION = re.compile(rf"(?:{_NUMBER}\s*(?:ms|s|m|h)\s*)+")
_BARE_NUMBER = re.compile(_NUMBER)
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_BAD_HEADER_VALUE = re.compile(r"[\r\n\0]")
# Headers the handshake sets itself; Sec-WebSocket-Protocol has its own option.
_HANDSHAKE_HEADERS = frozenset(
    {"upgrade", "connection", "sec-websocket-key", "sec-websocket-version"}
    | {"sec-websocket-accept", "sec-websocket-extensions", "sec-websocket-protocol"}
)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
# Policy types written as a table (TOML) or a JSON object (environment).
_TABLE_TYPES: tuple[type, ...] = (AckPolicy, ResumePolicy)
MAX_JSON_DEPTH = 100
"""How deeply a JSON value in a config (the application heartbeat) may nest."""


# The seed's option names whose snake_case form is not the bgws name.
_SEED_NAMES = {
    "webSocketUrl": "url",
    "autoStartOnBoot": "autostart_on_boot",
    "isForegroundMode": "foreground",
}
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def check_names(options: Mapping[str, Any], fields: tuple[str, ...]) -> None:
    """Refuse option names that are not ``fields``, suggesting the closest one.

    Raises:
        ConfigError: an unknown option (``field`` is its name).
    """
    for key in options:
        if key in fields:
            continue
        reason = "unknown option"
        guess = _SEED_NAMES.get(key) or _CAMEL_HUMP.sub("_", key).lower()
        if guess in fields:
            reason += f"; did you mean {guess!r}? (bgws names are snake_case)"
        else:
            close = difflib.get_close_matches(key, (*fields, "profile"), n=1, cutoff=0.6)
            if close:
                reason += f"; did you mean {close[0]!r}?"
        raise ConfigError(key, reason)


def type_name(value: object) -> str:
    """The name of ``value``'s type, for error reasons (``"None"`` for ``None``)."""
    return "None" if value is None else type(value).__name__


def parse_duration(value: object, field: str = "duration") -> float:
    """Turn a duration into float seconds.

    Accepted: a number of seconds (``int`` or ``float``, finite; ``bool`` is refused), a
    :class:`datetime.timedelta`, or a string: a bare number of seconds (``"2.5"``), or one or
    more number-and-unit parts with units ``ms``, ``s``, ``m``, ``h`` (``"250ms"``, ``"20s"``,
    ``"1.5s"``, ``"5m"``, ``"1h"``, ``"1m30s"``).

    Args:
        value: the duration.
        field: the option the value is for, named in the error.

    Returns:
        The duration in seconds, never negative.

    Raises:
        ConfigError: the value is of the wrong type, malformed, negative or not finite.
    """
    seconds: float
    if isinstance(value, bool) or not isinstance(value, int | float | str | timedelta):
        raise ConfigError(
            field,
            f"expected seconds (a number) or a duration string like '20s', got {type_name(value)}",
        )
    try:
        if isinstance(value, timedelta):
            seconds = value.total_seconds()
        elif isinstance(value, int | float):
            seconds = float(value)
        else:
            text = value.strip().lower()
            if _BARE_NUMBER.fullmatch(text):
                seconds = float(text)
            elif _DURATION.fullmatch(text):
                seconds = 0.0
                for number, unit in _DURATION_PART.findall(text):
                    if unit == "ms":
                        seconds += float(number) / 1000
                    else:
                        seconds += float(number) * _UNIT_SECONDS[unit]
            else:
                raise ConfigError(
                    field,
                    f"{value!r} is not a duration; write seconds or e.g. "
                    "'250ms', '20s', '5m', '1h', '1m30s'",
                )
    except OverflowError:
        raise ConfigError(field, f"{value!r} is too large") from None
    if not math.isfinite(seconds):
        raise ConfigError(field, f"must be a finite number of seconds, not {value!r}")
    if seconds < 0:
        raise ConfigError(field, f"must not be negative, got {value!r}")
    return seconds


# -- scalars --


def check_str(name: str, value: object, *, optional: bool = False) -> str | None:
    """A non-blank string (or ``None`` when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ConfigError(name, f"expected a string, got {type_name(value)}")
    if not value.strip():
        raise ConfigError(name, "must not be empty")
    return value


def check_bool(name: str, value: object) -> bool:
    """``True`` or ``False``, nothing that merely looks like one."""
    if not isinstance(value, bool):
        raise ConfigError(name, f"expected true or false, got {type_name(value)}")
    return value


def check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """An integer (not a ``bool``) in ``minimum..maximum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"expected an integer, got {type_name(value)}")
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(name, f"must be at most {maximum}, got {value}")
    return value


def check_duration(name: str, value: object, *, allow_zero: bool = False) -> float:
    """A duration in float seconds, longer than zero unless ``allow_zero``."""
    seconds = parse_duration(value, name)
    if seconds == 0 and not allow_zero:
        raise ConfigError(name, "must be longer than zero")
    return seconds


def check_count_per(name: str, value: object, example: str) -> tuple[int, float]:
    """A pair ``[count, duration]``: ``count`` >= 1 (an integer or its text) per a duration > 0.

    Args:
        name: the option, named in the error.
        value: a two-item list or tuple.
        example: the pair as it is written, for the error (``[count, per] such as [5, "1s"]``).

    Raises:
        ConfigError: not a pair, a count below 1, or a duration that is not > 0.
    """
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(name, f"expected {example}, got {type_name(value)} {value!r}")
    count, period = value
    if isinstance(count, str) and count.strip().lstrip("+").isdigit():
        count = int(count)
    return (check_int(name, count, 1), check_duration(name, period))


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """One of ``choices``."""
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ConfigError(name, f"must be one of {allowed}, not {value!r}")
    assert isinstance(value, str)
    return value


# -- templates --


def check_template(name: str, value: object, *, allow_empty: bool = False) -> str:
    """A notification template: text with ``{field}`` placeholders, as ``str.format`` reads it.

    A placeholder names one top-level field of a message (or ``app_name``, ``type``): no
    positional ``{}`` or ``{0}``, no ``.attribute`` or ``[index]``, no nested ``{...}`` in a
    format spec, conversions ``!s``, ``!r``, ``!a`` only, and never a credential-like name
    (``token``, ``password``...), so a notification cannot show a secret. ``{{`` and ``}}``
    are literal braces.
    """
    if not isinstance(value, str):
        raise ConfigError(name, f"expected a string, got {type_name(value)}")
    if not allow_empty and not value.strip():
        raise ConfigError(name, "must not be empty")
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError as exc:
        raise ConfigError(name, f"{value!r} is not a valid template: {exc}") from None
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if not field or field.isdigit():
            raise ConfigError(name, "placeholders need a field name, like {text}, not {} or {0}")
        if field != field.strip():
            raise ConfigError(name, f"the placeholder {{{field}}} has spaces around its name")
        if "." in field or "[" in field:
            raise ConfigError(
                name, f"{{{field}}}: only top-level fields can be used, not .attributes or [keys]"
            )
        if is_sensitive_name(field):
            raise ConfigError(
                name, f"{{{field}}} looks like a secret; a notification must not show it"
            )
        if conversion is not None and conversion not in ("s", "r", "a"):
            raise ConfigError(
                name, f"{{{field}!{conversion}}}: the conversion must be !s, !r or !a"
            )
        if spec and "{" in spec:
            raise ConfigError(name, f"{{{field}}}: a format spec cannot hold another placeholder")
    return value


# -- collections --


def check_sequence(name: str, value: object) -> tuple[object, ...]:
    """A list or tuple without repeats, as a tuple."""
    if not isinstance(value, list | tuple):
        raise ConfigError(name, f"expected a list, got {type_name(value)}")
    try:
        distinct = len(set(map(repr, value)))
    except RecursionError:
        raise ConfigError(name, "holds values nested too deeply") from None
    if distinct != len(value):
        raise ConfigError(name, "lists the same value twice")
    return tuple(value)


def check_strings(name: str, value: object) -> tuple[str, ...]:
    """A list of distinct non-blank strings, as a tuple."""
    items = check_sequence(name, value)
    strings: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(name, f"{item!r} is not a non-empty string")
        strings.append(item)
    return tuple(strings)


def check_mapping(name: str, value: object) -> Mapping[object, object]:
    """Any mapping (a TOML table)."""
    if not isinstance(value, Mapping):
        raise ConfigError(name, f"expected a mapping (a table), got {type_name(value)}")
    return value


def check_headers(value: object) -> Mapping[str, str]:
    """Extra handshake headers, as a read-only mapping."""
    headers: dict[str, str] = {}
    seen: set[str] = set()
    for key, item in check_mapping("headers", value).items():
        if not isinstance(key, str) or not TOKEN.fullmatch(key):
            raise ConfigError("headers", f"{key!r} is not a valid HTTP header name")
        lowered = key.lower()
        if lowered in _HANDSHAKE_HEADERS:
            why = "use subprotocols" if lowered.endswith("protocol") else "the handshake sets it"
            raise ConfigError("headers", f"cannot set {key!r}: {why}")
        if lowered in seen:
            raise ConfigError("headers", f"{key!r} is given twice (names ignore case)")
        seen.add(lowered)
        if not isinstance(item, str):
            raise ConfigError("headers", f"the value of {key!r} must be a string")
        if _BAD_HEADER_VALUE.search(item):
            raise ConfigError("headers", f"the value of {key!r} contains CR, LF or NUL")
        headers[key] = item
    return types.MappingProxyType(headers)


def check_storage_keys(value: object, defaults: Mapping[str, str]) -> Mapping[str, str]:
    """Storage key names merged over ``defaults``, as a read-only mapping."""
    keys = dict(defaults)
    for key, item in check_mapping("storage_keys", value).items():
        if not isinstance(key, str) or not key:
            raise ConfigError("storage_keys", f"{key!r} is not a non-empty string")
        if not isinstance(item, str) or not item:
            raise ConfigError(
                "storage_keys", f"the key name for {key!r} must be a non-empty string"
            )
        keys[key] = item
    if len(set(keys.values())) != len(keys):
        raise ConfigError("storage_keys", "two entries use the same storage key name")
    return types.MappingProxyType(keys)


# -- URLs and files --


def check_url(value: object) -> str:
    """A ``ws://`` or ``wss://`` URL with a host, a valid port and no fragment."""
    if not isinstance(value, str):
        raise ConfigError("url", f"expected a string, got {type_name(value)}")
    if not value or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError("url", "must not be empty or contain spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise ConfigError("url", f"{redact_url(value)!r} is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("ws", "wss"):
        shown = f"{parts.scheme!r}" if parts.scheme else "none"
        raise ConfigError("url", f"scheme must be ws or wss, not {shown}")
    if not parts.hostname:
        raise ConfigError("url", "has no host")
    if "#" in value:
        raise ConfigError("url", "must not have a fragment (#...); WebSocket URLs cannot")
    return value


def check_path(name: str, value: object) -> str | None:
    """The path of an existing file, or ``None``."""
    path = check_str(name, value, optional=True)
    if path is not None and not os.path.isfile(path):
        raise ConfigError(name, f"no such file: {path!r}")
    return path


def check_storage_path(value: object) -> str | None:
    """The SQLite file's path, or ``None``; neither it nor its folder need exist yet."""
    path = check_str("storage_path", value, optional=True)
    if path is None:
        return None
    if "\0" in path:
        raise ConfigError("storage_path", "must not contain a NUL character")
    if path == ":memory:":
        raise ConfigError("storage_path", "use storage = 'memory' for a store that is not kept")
    if os.path.isdir(path):
        raise ConfigError("storage_path", f"{path!r} is a directory; name the database file")
    return path


# -- delivery policies --


def _policy_options(
    name: str, value: object, keys: tuple[str, ...], function_key: str, kind: str
) -> dict[str, Any]:
    """A policy table's options, refusing unknown keys (and the function form) by name."""
    if not isinstance(value, Mapping):
        raise ConfigError(
            name, f"expected a table of {', '.join(keys)} or a {kind}, got {type_name(value)}"
        )
    options: dict[str, Any] = {}
    for key, item in value.items():
        if key == function_key:
            raise ConfigError(
                name,
                f"{function_key!r} is a function; build a {kind}({function_key}=...) in Python",
            )
        if key not in keys:
            reason = f"unknown key {key!r}; the table takes {', '.join(keys)}"
            close = difflib.get_close_matches(str(key), keys, n=1, cutoff=0.6)
            if close:
                reason += f" (did you mean {close[0]!r}?)"
            raise ConfigError(name, reason)
        options[key] = item
    return options


def check_ack(value: object) -> AckPolicy | None:
    """An :class:`~bgws.policies.AckPolicy`, from itself or a table; ``None`` turns acks off.

    In a table, ``message_type = ""`` means no type filter (``None``), which TOML cannot write.
    """
    if value is None or isinstance(value, AckPolicy):
        return value
    options = _policy_options("ack", value, ("message_type", "id_field"), "match", "AckPolicy")
    if options.get("message_type") == "":
        options["message_type"] = None
    try:
        return AckPolicy(**options)
    except ValueError as exc:
        raise ConfigError("ack", str(exc)) from None


def check_resume(value: object) -> ResumePolicy | None:
    """A :class:`~bgws.policies.ResumePolicy`, from itself or a table; ``None`` turns it off."""
    if value is None or isinstance(value, ResumePolicy):
        return value
    keys = ("seq_field", "request_type", "position_field", "epoch_field")
    options = _policy_options("resume", value, keys, "request", "ResumePolicy")
    try:
        return ResumePolicy(**options)
    except ValueError as exc:
        raise ConfigError("resume", str(exc)) from None


# -- JSON values --


def freeze_json(value: object, where: str, depth: int = 0) -> object:
    """Check a JSON-like value and return a deep, immutable copy of it.

    Nesting deeper than :data:`MAX_JSON_DEPTH` is refused, so no later walk of the value can
    exhaust the interpreter's stack.
    """
    if depth > MAX_JSON_DEPTH:
        raise ConfigError("app_heartbeat", f"the message is nested more than {MAX_JSON_DEPTH} deep")
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError("app_heartbeat", f"{where} is not a finite number")
        return value
    if isinstance(value, Mapping):
        frozen: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError("app_heartbeat", f"{where} has a non-string key {key!r}")
            frozen[key] = freeze_json(item, f"{where}.{key}", depth + 1)
        return types.MappingProxyType(frozen)
    if isinstance(value, list | tuple):
        return tuple(freeze_json(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
    raise ConfigError("app_heartbeat", f"{where} is a {type_name(value)}, not a JSON value")


def thaw_json(value: object) -> Any:
    """Turn a frozen JSON-like value back into plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: thaw_json(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw_json(item) for item in value]
    return value


def sensitive_strings(value: object) -> Iterator[str]:
    """The non-empty string values under sensitive-looking keys, at any depth."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, str) and item and is_sensitive_name(key):
                yield item
            else:
                yield from sensitive_strings(item)
    elif isinstance(value, tuple):
        for item in value:
            yield from sensitive_strings(item)


def toml_limit(exc: ValueError | RecursionError) -> str:
    """Why the TOML parser gave up on a file that is not a syntax error (a limit was hit)."""
    if isinstance(exc, RecursionError):
        return "its tables or arrays are nested too deeply"
    return f"a value it holds is beyond what can be read: {exc}"


def slug(name: str) -> str:
    """A service tag made from an application name."""
    return _SLUG_OUTSIDE.sub("_", name.lower()).strip("_.-") or "service"


# -- environment text --


def parse_env(hint: Any, raw: str) -> Any:
    """Parse one environment variable's text for a field of type ``hint``.

    Raises:
        ConfigError: the text is not of the type (``field`` is ``None``; the caller names it).
    """
    args = get_args(hint)
    if get_origin(hint) in (Union, types.UnionType) and type(None) in args:
        if raw.strip().lower() in ("", "none"):
            return None
        hint = next(arg for arg in args if arg is not type(None))
    text = raw.strip()
    if hint is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(None, f"{raw!r} is not a boolean (1/0, true/false, yes/no, on/off)")
    if hint is int:
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ConfigError(None, f"{raw!r} is not an integer")
        try:
            return int(text)
        except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
            raise ConfigError(None, f"an integer of {len(text)} characters is too long") from None
    if hint is float:
        return parse_duration(text)
    origin = get_origin(hint)
    if origin is tuple:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if get_args(hint)[0] is int:
            return tuple(parse_env(int, item) for item in items)
        return tuple(items)
    if origin is Mapping or hint in _TABLE_TYPES:
        if not text:
            return {}
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            raise ConfigError(None, f"{raw!r} is not a JSON object") from None
        if not isinstance(value, dict):
            raise ConfigError(None, f"{raw!r} is not a JSON object")
        return value
    if origin is Literal:
        return text
    return raw
