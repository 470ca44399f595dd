"""Fuzzing config input: keywords, mappings, environment variables, TOML and service files.

Whatever the input, building a config either succeeds or raises :class:`bgws.ConfigError` (or a
subclass): never ``TypeError``, ``KeyError``, ``OverflowError``, ``RecursionError`` and so on.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import bgws
from bgws import servicefile

from ._budget import FUZZ, figures

FIELDS = tuple(f.name for f in dataclasses.fields(bgws.Config))
NAMES = (*FIELDS, "profile")

URLS = st.one_of(
    st.sampled_from(
        [
            "ws://127.0.0.1:9/ws",
            "wss://chat.example/ws?token=abc",
            "ws://user:pass@chat.example/",
            "ws://[::1]:80/",
            "ws://[::1/",
            "ws://host:99999999999999999999/",
            "ws://host:-1/",
            "ws://host:0x50/",
            "wss://üñí.example/ws",
            "ws://a@b@c/",
            "ws://%zz/",
            "ws:///nohost",
            "http://127.0.0.1/",
            "ws://127.0.0.1/#frag",
            "ws://[fe80::1%25eth0]/",
            "ws://[v1.fe]/",
            "ws://\u2100/",
        ]
    ),
    st.builds(
        "{}://{}{}/{}".format,
        st.sampled_from(["ws", "wss", "WS", "", "http"]),
        st.text(max_size=12),
        st.one_of(st.just(""), st.integers().map(lambda n: f":{n}"), st.text(max_size=4)),
        st.text(max_size=8),
    ),
    st.text(max_size=30),
)
DURATIONS = st.one_of(
    st.floats(),
    st.integers(),
    st.sampled_from(
        ["20s", "1.5m", "250ms", "1h", "1m30s", "-1s", "1e309", "1e309s", "nan", "inf"]
    ),
    st.builds(
        "{}{}".format,
        st.one_of(st.integers(), st.floats(), st.text(alphabet="0123456789.e-+", max_size=8)),
        st.sampled_from(["", "s", "ms", "m", "h", "d", " s", "S"]),
    ),
    st.timedeltas(),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.datetimes(),
    st.dates(),
    st.times(),
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)
PYTHON_ONLY = st.one_of(
    st.tuples(JSONISH),
    st.frozensets(st.integers(), max_size=3),
    st.sets(st.text(max_size=3), max_size=3),
    st.builds(object),
    st.just(math.pi),
    st.complex_numbers(),
    st.just(bgws.AckPolicy()),
    st.just(bgws.ResumePolicy()),
    st.just(Path("/nonexistent")),
)


def deep_list(depth: int) -> Any:
    """A list nested ``depth`` deep, built without recursion."""
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


DEFAULTS = bgws.Config(app_name="fuzz", url="ws://127.0.0.1/").to_dict(redact=False)
# Valid values besides the defaults, so that many cases get past the first check.
VALID: dict[str, list[Any]] = {
    "profile": ["chat", "gaming", "iot", "trading"],
    "app_name": ["Fuzz Chat ✓", "x"],
    "url": ["ws://127.0.0.1:8765/ws?x=1", "wss://chat.example/ws", "ws://[::1]/"],
    "heartbeat_interval": ["20s", 1.5, None],
    "max_reconnect_attempts": [None, 0, 5],
    "headers": [{"X-Client": "fuzz", "Authorization": "Bearer t"}],
    "subprotocols": [["chat.v1", "chat.v2"]],
    "app_heartbeat": [{"type": "hb", "n": [1, 2.5, None]}],
    "app_heartbeat_reply_type": [None],
    "ack": [{"message_type": "ack", "id_field": "id"}, {"message_type": None}],
    "resume": [{"seq_field": "seq"}],
    "codec": ["raw"],
    "overflow": ["drop_oldest", "wait"],
    "transport": ["websockets"],
    "storage": ["memory"],
    "storage_path": ["fuzz.sqlite3"],
    "notify_types": [["alert"]],
    "notify_title": ["{app_name}: {type}"],
    "storage_keys": [{"subscriptions": "subs"}],
    "service_tag": ["fuzz-1"],
}


@st.composite
def field_value(draw: st.DrawFn, name: str) -> Any:
    """A value for option ``name``: valid three times in four, else plausible or anything."""
    if draw(st.integers(0, 3)) > 0:
        return draw(st.sampled_from([*VALID.get(name, []), DEFAULTS.get(name, "chat")]))
    return draw(_odd_value(name))


def _odd_value(name: str) -> st.SearchStrategy[Any]:
    """Values for option ``name`` that are mostly wrong: plausible for its kind, or anything."""
    if name == "url":
        return URLS
    if name.endswith(("_delay", "_interval", "_timeout", "_uptime")):
        return st.one_of(DURATIONS, JSONISH)
    if name in ("headers", "storage_keys", "app_heartbeat", "ack", "resume"):
        tables = st.dictionaries(
            st.one_of(
                st.sampled_from(["Authorization", "X-Key", "id_field", "seq_field"]),
                st.text(max_size=10),
            ),
            st.one_of(st.text(max_size=20), JSONISH),
            max_size=4,
        )
        return st.one_of(tables, JSONISH, PYTHON_ONLY)
    if name in ("subprotocols", "auth_close_codes", "priority_types", "notify_types"):
        return st.one_of(
            st.lists(st.one_of(st.text(max_size=8), st.integers()), max_size=4), JSONISH
        )
    if name in ("notify_title", "notify_body"):
        return st.one_of(st.text(alphabet="{}!:.[]0arstx ", max_size=16), JSONISH)
    return st.one_of(JSONISH, PYTHON_ONLY)


@st.composite
def option_maps(draw: st.DrawFn, *, any_keys: bool) -> dict[Any, Any]:
    """A mapping of option names to values; ``app_name`` and ``url`` usually present."""
    options: dict[Any, Any] = {}
    if draw(st.integers(0, 9)) > 0:
        options["app_name"] = draw(field_value("app_name"))
    if draw(st.integers(0, 9)) > 0:
        options["url"] = draw(field_value("url"))
    names = draw(st.lists(st.sampled_from(NAMES), max_size=6, unique=True))
    for name in names:
        options[name] = draw(field_value(name))
    if any_keys and draw(st.integers(0, 3)) == 0:
        extra = draw(st.dictionaries(st.one_of(st.text(max_size=12), SCALARS), JSONISH, max_size=2))
        options.update(extra)
    return options


ENVIRONMENTS = st.one_of(
    st.just({}),
    st.dictionaries(
        st.sampled_from([f"BGWS_{name.upper()}" for name in FIELDS]),
        st.one_of(
            st.text(max_size=20),
            st.sampled_from(["1" * 5000, "[" * 5000, "{" * 3000, "-0", "٣", "true", "none"]),
            st.integers().map(str),
        ),
        max_size=3,
    ),
)


def attempt(target: str, build: Callable[[], object]) -> None:
    """Run one case: only ConfigError may come out; count the case (and any crash)."""
    found = figures(target)
    found.cases += 1
    try:
        build()
    except bgws.ConfigError:
        return
    except BaseException:
        found.crashes += 1
        raise
    found.accepted += 1


@FUZZ
@given(option_maps(any_keys=False))
def test_config_keywords(options: dict[str, Any]) -> None:
    """Config(**options) with any values for its fields raises nothing but ConfigError."""
    options.setdefault("app_name", "fuzz")
    options.setdefault("url", "ws://127.0.0.1/")
    options.pop("profile", None)
    attempt("config: Config(**options)", lambda: bgws.Config(**options))


@FUZZ
@given(option_maps(any_keys=True), ENVIRONMENTS)
def test_config_from_mapping(options: dict[Any, Any], env: dict[str, str]) -> None:
    """Config.from_mapping with any keys, values and BGWS_* variables raises only ConfigError."""
    attempt("config: Config.from_mapping", lambda: bgws.Config.from_mapping(options, env=env))


@FUZZ
@given(ENVIRONMENTS)
def test_config_env_overrides(env: dict[str, str]) -> None:
    """BGWS_* variables with any text raise only ConfigError, for every field."""
    base = bgws.Config(app_name="fuzz", url="ws://127.0.0.1/")
    attempt("config: Config.with_env", lambda: base.with_env(env))


def toml_key(key: object) -> str:
    """A TOML key: bare when it can be, else quoted."""
    text = str(key)
    return text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else json.dumps(text, ensure_ascii=False)


def toml_value(value: object) -> str:
    """A TOML value for ``value`` (what TOML cannot hold comes out as some other text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # nan, inf and -inf are TOML too
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return json.dumps(str(value))


def toml_text(options: dict[Any, Any], *, table: str | None = None) -> str:
    """``options`` as TOML: scalars first, then each mapping as its own table."""
    lines = [f"[{table}]"] if table else []
    for key, value in options.items():
        if value is not None:
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


TOKENS = st.sampled_from(
    [
        "\n",
        " = ",
        '"',
        "'",
        "[",
        "]",
        "[[",
        "]]",
        "{",
        "}",
        ",",
        ".",
        "#",
        "\\",
        "\\u",
        '"""',
        "true",
        "1e999",
        "-0",
        "nan",
        "inf",
        "1979-05-27T07:32:00Z",
        "url",
        "app_name",
        "ack",
        "resume",
        "headers",
        "services",
        "profile",
        "handler",
        "plugins",
        '"ws://127.0.0.1/"',
        "\x00",
        "\ud800",
        "\u2028",
        "é",
    ]
)
TOML_SOUP = st.lists(st.one_of(TOKENS, st.text(max_size=4)), max_size=40).map("".join)


@st.composite
def config_files(draw: st.DrawFn) -> bytes:
    """A config file's bytes: valid TOML of random options, token soup, or raw bytes."""
    kind = draw(st.sampled_from(["options", "soup", "bytes"]))
    if kind == "options":
        return toml_text(draw(option_maps(any_keys=True))).encode("utf-8", "surrogatepass")
    if kind == "soup":
        return draw(TOML_SOUP).encode("utf-8", "surrogatepass")
    return draw(st.binary(max_size=64))


# Module names that cannot exist, so a fuzzed handler or plugin never imports real code.
SAFE_IMPORTS = st.one_of(
    st.sampled_from(
        [
            "bgws_fuzz_missing:Handler",
            "bgws:Message",
            "bgws:MessageHandler",
            "bgws:Plugin",
            "bgws.handlers:MessageHandler.handle_message",
            "bgws:State.CLOSED",
            "bgws:nothing_here",
            ":",
            "bgws:",
            "typing-indicator",
            "bgws.fuzz.missing",
        ]
    ),
    st.text(alphabet="abc.:-_ ", max_size=10).map(lambda t: f"bgws_fuzz_missing{t}"),
)


@st.composite
def service_files(draw: st.DrawFn) -> bytes:
    """A service file's bytes: [services.<name>] tables of random options, soup, or bytes."""
    kind = draw(st.sampled_from(["services", "services", "soup", "bytes"]))
    if kind == "soup":
        return draw(TOML_SOUP).encode("utf-8", "surrogatepass")
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    parts: list[str] = []
    names = draw(
        st.lists(
            st.integers(0, 3).flatmap(
                lambda n: st.sampled_from(["chat", "a.b", "x-1"]) if n else st.text(max_size=6)
            ),
            min_size=draw(st.sampled_from([0, 1, 1, 1])),
            max_size=3,
            unique=True,
        )
    )
    for name in names:
        options = draw(option_maps(any_keys=False))
        if draw(st.booleans()):
            options["handler"] = draw(st.one_of(SAFE_IMPORTS, SCALARS))
        if draw(st.booleans()):
            options["plugins"] = draw(st.one_of(st.lists(SAFE_IMPORTS, max_size=2), SCALARS))
        parts.append(toml_text(options, table=f"services.{toml_key(name)}"))
    if draw(st.integers(0, 9)) == 0:
        parts.append(draw(TOML_SOUP))
    return "\n".join(parts).encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the files the fuzz cases write (one file, rewritten each case)."""
    return tmp_path_factory.mktemp("fuzz-config")


@FUZZ
@given(data=config_files())
def test_config_from_toml(scratch: Path, data: bytes) -> None:
    """Config.from_toml on any file contents raises only ConfigError."""
    path = scratch / "config.toml"
    path.write_bytes(data)
    attempt("config: Config.from_toml", lambda: bgws.Config.from_toml(path, env={}))


@FUZZ
@given(data=service_files(), env=ENVIRONMENTS)
def test_service_file_load(scratch: Path, data: bytes, env: dict[str, str]) -> None:
    """The service-file loader on any file contents raises only ConfigError."""
    path = scratch / "services.toml"
    path.write_bytes(data)
    attempt("config: servicefile.load", lambda: servicefile.load(path, env=env))


BASE = 'app_name = "a"\nurl = "ws://127.0.0.1/"\n'
DEEP_TOML = "app_heartbeat = {a = " + "[" * 3000 + "]" * 3000 + "}\n"
LONG_INT = "1" * 5000
LIMIT_CASES = {
    "env-int-too-long": lambda _: bgws.Config.from_mapping(
        {"app_name": "a", "url": "ws://127.0.0.1/"}, env={"BGWS_MAX_QUEUE_SIZE": LONG_INT}
    ),
    "env-json-too-deep": lambda _: bgws.Config.from_mapping(
        {"app_name": "a", "url": "ws://127.0.0.1/"}, env={"BGWS_HEADERS": "[" * 100_000}
    ),
    "mapping-heartbeat-too-deep": lambda _: bgws.Config.from_mapping(
        {"app_name": "a", "url": "ws://127.0.0.1/", "app_heartbeat": {"x": deep_list(5000)}}
    ),
    "mapping-subprotocols-too-deep": lambda _: bgws.Config.from_mapping(
        {"app_name": "a", "url": "ws://127.0.0.1/", "subprotocols": [deep_list(5000)]}
    ),
    "toml-int-too-long": lambda path: bgws.Config.from_toml(
        write(path, BASE + f"max_queue_size = {LONG_INT}\n"), env={}
    ),
    "toml-too-deep": lambda path: bgws.Config.from_toml(write(path, BASE + DEEP_TOML), env={}),
    "service-file-int-too-long": lambda path: servicefile.load(
        write(path, f"[services.a]\nurl = 'ws://127.0.0.1/'\nmax_queue_size = {LONG_INT}\n"),
        env={},
    ),
    "service-file-too-deep": lambda path: servicefile.load(
        write(path, "[services.a]\nurl = 'ws://127.0.0.1/'\n" + DEEP_TOML), env={}
    ),
}


def write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` and return the path."""
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(LIMIT_CASES))
def test_input_past_limits(scratch: Path, case: str) -> None:
    """Integers too long to convert and nesting past the stack are ConfigErrors, not crashes."""
    with pytest.raises(bgws.ConfigError):
        LIMIT_CASES[case](scratch / f"{case}.toml")
