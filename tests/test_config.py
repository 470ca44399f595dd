"""Tests for bgws.config: validation, durations, loading, overrides, immutability, redaction."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import pickle
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bgws.config import DEFAULT_STORAGE_KEYS, Config, parse_duration
from bgws.errors import ConfigError, InsecureCredentials

from .test_config_delivery import DELIVERY_BAD_VALUES, DELIVERY_ENV_SAMPLES
from .test_config_longrun import LONGRUN_BAD_VALUES, LONGRUN_ENV_SAMPLES
from .test_config_notify import NOTIFY_BAD_VALUES, NOTIFY_ENV_SAMPLES
from .test_config_offline import OFFLINE_BAD_VALUES, OFFLINE_ENV_SAMPLES

URL = "wss://example.com/ws"
FIELD_NAMES = {f.name for f in dataclasses.fields(Config)}


def make(**changes: Any) -> Config:
    """Build a config with the two required options filled in."""
    values: dict[str, Any] = {"app_name": "app", "url": URL}
    values.update(changes)
    return Config(**values)


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    """An existing file to stand for a certificate or key."""
    path = tmp_path / "cert.pem"
    path.write_text("not really a certificate\n")
    return path


# -- defaults and normalisation --


def test_defaults() -> None:
    """A config with only the required options has the documented defaults."""
    config = make()
    assert config.notification_channel_id == "bgws"
    assert config.notification_channel_name == "bgws"
    assert config.app_icon_path is None
    assert config.foreground_service_notification_id == 1
    assert config.max_queue_size == 1000
    assert config.max_reconnect_attempts is None
    assert config.initial_reconnect_delay == 1.0
    assert config.max_reconnect_delay == 60.0
    assert config.heartbeat_interval == 20.0
    assert config.autostart_on_boot is False
    assert config.foreground is False
    assert dict(config.storage_keys) == dict(DEFAULT_STORAGE_KEYS)
    assert config.service_tag == "app"
    assert config.ping_timeout == 10.0
    assert config.connect_timeout == 10.0
    assert config.min_uptime == 10.0
    assert config.close_timeout == 5.0
    assert config.max_message_size == 1_048_576
    assert dict(config.headers) == {}
    assert config.subprotocols == ()
    assert config.tls_verify is True
    assert (config.tls_ca_file, config.tls_cert_file, config.tls_key_file) == (None, None, None)
    assert config.allow_insecure_credentials is False
    assert config.type_field == "type"
    assert config.id_field == "id"
    assert config.codec == "json"
    assert config.inbox_size == 1024
    assert config.inbox_max_bytes == 64 * 1024 * 1024
    assert config.overflow == "raise"
    assert config.reconnect_on_close is True
    assert config.auth_mode == "headers"
    assert config.auth_close_codes == (4001, 4003)
    assert config.app_heartbeat is None
    assert config.app_heartbeat_reply_type is None
    assert config.transport == "picows"


def test_keyword_only() -> None:
    """Options cannot be passed by position."""
    with pytest.raises(TypeError):
        Config("app", URL)  # type: ignore[call-arg]


def test_durations_normalised_to_float_seconds() -> None:
    """Duration fields accept strings, ints and timedeltas and store float seconds."""
    config = make(
        initial_reconnect_delay="250ms",
        max_reconnect_delay="1m30s",
        heartbeat_interval=5,
        ping_timeout=timedelta(seconds=2),
        min_uptime="0",
    )
    assert config.initial_reconnect_delay == 0.25
    assert config.max_reconnect_delay == 90.0
    assert config.heartbeat_interval == 5.0
    assert isinstance(config.heartbeat_interval, float)
    assert config.ping_timeout == 2.0
    assert config.min_uptime == 0.0


def test_none_values_for_optional_fields() -> None:
    """heartbeat_interval, id_field and max_reconnect_attempts accept None."""
    config = make(heartbeat_interval=None, id_field=None, max_reconnect_attempts=None)
    assert config.heartbeat_interval is None
    assert config.id_field is None
    assert config.max_reconnect_attempts is None


def test_sequences_become_tuples() -> None:
    """List inputs for tuple fields are stored as tuples."""
    config = make(subprotocols=["v1.chat", "v2.chat"], auth_close_codes=[4401])
    assert config.subprotocols == ("v1.chat", "v2.chat")
    assert config.auth_close_codes == (4401,)


def test_storage_keys_merged_over_defaults() -> None:
    """A given storage_keys mapping overrides some defaults and keeps the others."""
    config = make(storage_keys={"connection_data": "chat.conn", "extra": "chat.extra"})
    assert dict(config.storage_keys) == {
        "connection_data": "chat.conn",
        "last_connected_at": "last_connected_at",
        "resume_position": "resume_position",
        "subscriptions": "subscriptions",
        "extra": "chat.extra",
    }


@pytest.mark.parametrize(
    ("app_name", "tag"),
    [
        ("MyChat", "mychat"),
        ("My Chat App", "my_chat_app"),
        ("  Über-App 2.0! ", "ber-app_2.0"),
        ("a//b", "a_b"),
        ("!!!", "service"),
    ],
)
def test_service_tag_slug(app_name: str, tag: str) -> None:
    """Without a service_tag, a slug of app_name is used."""
    assert make(app_name=app_name).service_tag == tag


def test_explicit_service_tag_and_logger_name() -> None:
    """An explicit service_tag is kept as given and names the logger."""
    config = make(service_tag="CustomAppWS")
    assert config.service_tag == "CustomAppWS"
    assert config.logger_name == "bgws.CustomAppWS"
    assert logging.getLogger(config.logger_name).name == "bgws.CustomAppWS"


def test_url_kept_as_given() -> None:
    """The URL is stored exactly as given."""
    url = "WSS://Example.COM:8443/path?q=1"
    assert make(url=url).url == url


@pytest.mark.parametrize(
    ("url", "secure", "host", "port", "loopback"),
    [
        ("wss://example.com/ws", True, "example.com", 443, False),
        ("ws://example.com/ws", False, "example.com", 80, False),
        ("WSS://Example.COM:8443/", True, "example.com", 8443, False),
        ("ws://localhost:8000", False, "localhost", 8000, True),
        ("ws://LOCALHOST/", False, "localhost", 80, True),
        ("ws://127.0.0.1/", False, "127.0.0.1", 80, True),
        ("ws://127.8.9.10/", False, "127.8.9.10", 80, True),
        ("ws://[::1]:9000/", False, "::1", 9000, True),
        ("ws://[::ffff:127.0.0.1]/", False, "::ffff:127.0.0.1", 80, True),
        ("ws://10.0.0.1/", False, "10.0.0.1", 80, False),
        ("ws://localhost.example.com/", False, "localhost.example.com", 80, False),
    ],
)
def test_url_properties(url: str, secure: bool, host: str, port: int, loopback: bool) -> None:
    """is_secure, host, port and is_loopback describe the URL."""
    config = make(url=url)
    assert config.is_secure is secure
    assert config.host == host
    assert config.port == port
    assert config.is_loopback is loopback


# -- every ConfigError --

BAD_VALUES: list[tuple[str, Any]] = [
    ("app_name", 1),
    ("app_name", ""),
    ("app_name", "   "),
    ("app_name", None),
    ("url", 1),
    ("url", ""),
    ("url", "http://example.com/"),
    ("url", "https://example.com/"),
    ("url", "example.com/ws"),
    ("url", "ws://"),
    ("url", "ws:///path"),
    ("url", "ws://example.com:99999/"),
    ("url", "ws://example.com:port/"),
    ("url", "ws://[::1/"),
    ("url", "ws://example.com/ws#top"),
    ("url", "ws://example.com/a b"),
    ("url", " ws://example.com/"),
    ("url", "ws://example.com/\n"),
    ("notification_channel_id", 1),
    ("notification_channel_id", ""),
    ("notification_channel_name", None),
    ("notification_channel_name", ""),
    ("app_icon_path", 1),
    ("app_icon_path", ""),
    ("foreground_service_notification_id", -1),
    ("foreground_service_notification_id", True),
    ("foreground_service_notification_id", 1.0),
    ("foreground_service_notification_id", "1"),
    ("max_queue_size", 0),
    ("max_queue_size", True),
    ("max_queue_size", 1.5),
    ("max_queue_size", "10"),
    ("max_queue_size", None),
    ("max_reconnect_attempts", -1),
    ("max_reconnect_attempts", True),
    ("max_reconnect_attempts", 2.0),
    ("initial_reconnect_delay", 0),
    ("initial_reconnect_delay", "0s"),
    ("initial_reconnect_delay", -1),
    ("initial_reconnect_delay", True),
    ("initial_reconnect_delay", "fast"),
    ("initial_reconnect_delay", float("nan")),
    ("initial_reconnect_delay", float("inf")),
    ("initial_reconnect_delay", None),
    ("max_reconnect_delay", 0.5),
    ("max_reconnect_delay", "x"),
    ("max_reconnect_delay", None),
    ("heartbeat_interval", 0),
    ("heartbeat_interval", False),
    ("heartbeat_interval", -5),
    ("heartbeat_interval", [20]),
    ("autostart_on_boot", 1),
    ("autostart_on_boot", "yes"),
    ("autostart_on_boot", None),
    ("foreground", 0),
    ("storage_keys", []),
    ("storage_keys", None),
    ("storage_keys", {"connection_data": ""}),
    ("storage_keys", {"": "x"}),
    ("storage_keys", {"connection_data": 1}),
    ("storage_keys", {1: "x"}),
    ("storage_keys", {"connection_data": "last_connected_at"}),
    ("service_tag", ""),
    ("service_tag", "has space"),
    ("service_tag", "a/b"),
    ("service_tag", 5),
    ("ping_timeout", 0),
    ("ping_timeout", True),
    ("ping_timeout", None),
    ("connect_timeout", 0),
    ("connect_timeout", "soon"),
    ("close_timeout", 0),
    ("close_timeout", -1.0),
    ("min_uptime", -1),
    ("min_uptime", True),
    ("min_uptime", None),
    ("max_message_size", 0),
    ("max_message_size", True),
    ("max_message_size", 1024.0),
    ("headers", []),
    ("headers", None),
    ("headers", {"Bad Name": "x"}),
    ("headers", {"": "x"}),
    ("headers", {1: "x"}),
    ("headers", {"X-Thing": 1}),
    ("headers", {"X-Thing": "a\r\nInjected: yes"}),
    ("headers", {"X-Thing": "a\0b"}),
    ("headers", {"Upgrade": "websocket"}),
    ("headers", {"Sec-WebSocket-Key": "abc"}),
    ("headers", {"Sec-WebSocket-Protocol": "chat"}),
    ("headers", {"X-A": "1", "x-a": "2"}),
    ("subprotocols", "chat"),
    ("subprotocols", None),
    ("subprotocols", ["a b"]),
    ("subprotocols", [""]),
    ("subprotocols", [1]),
    ("subprotocols", ["chat", "chat"]),
    ("tls_verify", 1),
    ("tls_verify", None),
    ("tls_ca_file", "/nonexistent/ca.pem"),
    ("tls_ca_file", 1),
    ("tls_cert_file", "/nonexistent/cert.pem"),
    ("tls_key_file", "/nonexistent/key.pem"),
    ("allow_insecure_credentials", "no"),
    ("type_field", ""),
    ("type_field", None),
    ("id_field", ""),
    ("id_field", 1),
    ("codec", "msgpack"),
    ("codec", None),
    ("inbox_size", 0),
    ("inbox_size", False),
    ("inbox_max_bytes", 0),
    ("inbox_max_bytes", 1.5),
    ("overflow", "block"),
    ("reconnect_on_close", None),
    ("auth_mode", "cookie"),
    ("auth_close_codes", 4001),
    ("auth_close_codes", [999]),
    ("auth_close_codes", [5000]),
    ("auth_close_codes", ["4001"]),
    ("auth_close_codes", [True]),
    ("auth_close_codes", [4001, 4001]),
    ("app_heartbeat", []),
    ("app_heartbeat", "ping"),
    ("app_heartbeat", {"type": float("nan")}),
    ("app_heartbeat", {1: "x"}),
    ("app_heartbeat", {"type": "ping", "at": object()}),
    ("app_heartbeat", {"nested": [{"bad": {1, 2}}]}),
    ("app_heartbeat_reply_type", "pong"),
    ("transport", "aiohttp"),
    ("follow_redirects", "yes"),
    ("transport", None),
    *DELIVERY_BAD_VALUES,
    *NOTIFY_BAD_VALUES,
    *OFFLINE_BAD_VALUES,
    *LONGRUN_BAD_VALUES,
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_bad_value_raises_config_error_naming_field(name: str, value: Any) -> None:
    """A wrong type or out-of-range value raises ConfigError naming the field."""
    with pytest.raises(ConfigError) as info:
        make(**{name: value})
    assert info.value.field == name
    assert info.value.reason
    assert str(info.value).startswith(f"{name}: ")


def test_every_field_has_a_bad_value_case() -> None:
    """The table above exercises every field."""
    assert {name for name, _ in BAD_VALUES} == FIELD_NAMES


def test_bool_is_refused_where_an_int_is_expected() -> None:
    """True is not accepted as 1, and the reason says what was given."""
    with pytest.raises(ConfigError, match="expected an integer, got bool"):
        make(max_queue_size=True)


def test_max_reconnect_delay_below_initial() -> None:
    """max_reconnect_delay must not be shorter than initial_reconnect_delay."""
    with pytest.raises(ConfigError, match="at least initial_reconnect_delay") as info:
        make(initial_reconnect_delay="10s", max_reconnect_delay="5s")
    assert info.value.field == "max_reconnect_delay"
    assert make(initial_reconnect_delay=5, max_reconnect_delay=5).max_reconnect_delay == 5.0


def test_url_error_does_not_leak_credentials() -> None:
    """A refused URL's credentials do not appear in the error."""
    with pytest.raises(ConfigError) as info:
        make(url="ws://user:hunter2@[::1/")
    assert "hunter2" not in str(info.value)


def test_reconnect_attempts_zero_is_allowed() -> None:
    """Zero reconnect attempts means do not reconnect, and is valid."""
    assert make(max_reconnect_attempts=0).max_reconnect_attempts == 0


# -- TLS --


@pytest.mark.parametrize("name", ["tls_ca_file", "tls_cert_file"])
def test_tls_file_on_ws_url(name: str, pem: Path) -> None:
    """A TLS file option on a ws:// URL is an error naming that option."""
    with pytest.raises(ConfigError, match="TLS option") as info:
        make(url="ws://localhost/", **{name: str(pem)})
    assert info.value.field == name


def test_tls_verify_off_on_ws_url() -> None:
    """tls_verify=False on a ws:// URL is an error naming tls_verify."""
    with pytest.raises(ConfigError) as info:
        make(url="ws://localhost/", tls_verify=False)
    assert info.value.field == "tls_verify"


def test_tls_key_without_cert(pem: Path) -> None:
    """A TLS key needs its certificate."""
    with pytest.raises(ConfigError, match="tls_cert_file") as info:
        make(tls_key_file=str(pem))
    assert info.value.field == "tls_key_file"


def test_tls_files_on_wss_url(pem: Path) -> None:
    """Existing TLS files on a wss:// URL are accepted."""
    config = make(
        tls_ca_file=str(pem), tls_cert_file=str(pem), tls_key_file=str(pem), tls_verify=False
    )
    assert config.tls_key_file == str(pem)
    assert config.tls_verify is False


def test_tls_file_must_be_a_file(tmp_path: Path) -> None:
    """A directory is not a certificate file."""
    with pytest.raises(ConfigError, match="no such file") as info:
        make(tls_ca_file=str(tmp_path))
    assert info.value.field == "tls_ca_file"


# -- credentials over plain ws:// --


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer abc"},
        {"Cookie": "session=abc"},
        {"Proxy-Authorization": "Basic abc"},
        {"X-Auth-Token": "abc"},
        {"X-Api-Key": "abc"},
        {"X-Client-Secret": "abc"},
        {"X-Password": "abc"},
    ],
)
def test_insecure_credentials_in_headers(headers: dict[str, str]) -> None:
    """Credential headers over ws:// to a remote host are refused."""
    with pytest.raises(InsecureCredentials) as info:
        make(url="ws://example.com/ws", headers=headers)
    assert info.value.field == "headers"
    assert "allow_insecure_credentials" in info.value.reason
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize(
    "url", ["ws://example.com/ws?token=abc", "ws://user:pw@example.com/", "ws://k@10.0.0.1/"]
)
def test_insecure_credentials_in_url(url: str) -> None:
    """URL userinfo or a token query parameter over ws:// to a remote host is refused."""
    with pytest.raises(InsecureCredentials) as info:
        make(url=url)
    assert info.value.field == "url"


def test_insecure_credentials_opt_out() -> None:
    """allow_insecure_credentials lets credentials go over ws:// anyway."""
    config = make(
        url="ws://example.com/?token=abc",
        headers={"Authorization": "Bearer abc"},
        allow_insecure_credentials=True,
    )
    assert config.headers["Authorization"] == "Bearer abc"


@pytest.mark.parametrize(
    "url",
    [
        "ws://localhost:8000/ws",
        "ws://127.0.0.1/ws",
        "ws://127.1.2.3/ws",
        "ws://[::1]/ws",
        "wss://example.com/ws",
    ],
)
def test_credentials_allowed_on_loopback_or_tls(url: str) -> None:
    """Credentials are fine over wss://, or over ws:// to a loopback host."""
    config = make(url=url + "?token=abc", headers={"Authorization": "Bearer abc"})
    assert config.headers["Authorization"] == "Bearer abc"


def test_plain_headers_over_ws_are_fine() -> None:
    """Headers that are not credentials may go over ws:// to any host."""
    config = make(url="ws://example.com/", headers={"User-Agent": "bgws", "X-Room": "1"})
    assert dict(config.headers) == {"User-Agent": "bgws", "X-Room": "1"}


# -- durations --


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (1, 1.0),
        (1.5, 1.5),
        ("250ms", 0.25),
        ("20s", 20.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("1m30s", 90.0),
        ("1h30m", 5400.0),
        ("1m 30s", 90.0),
        ("2", 2.0),
        ("2.5", 2.5),
        (".5s", 0.5),
        ("5.s", 5.0),
        ("  20s  ", 20.0),
        ("20S", 20.0),
        ("1e3ms", 1.0),
        ("1s500ms", 1.5),
        (timedelta(minutes=2), 120.0),
    ],
)
def test_parse_duration(value: Any, seconds: float) -> None:
    """Numbers, unit strings and timedeltas become float seconds."""
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "s",
        "20x",
        "-1s",
        "-1",
        "+1s",
        "1.2.3s",
        "20 seconds",
        "1d",
        "inf",
        "nan",
        "1e400s",
        "1_000s",
        True,
        False,
        None,
        [1],
        -1,
        -0.5,
        float("nan"),
        float("inf"),
        10**400,
        timedelta(seconds=-1),
    ],
)
def test_parse_duration_refuses(value: Any) -> None:
    """Malformed, negative, non-finite and wrongly typed durations raise ConfigError."""
    with pytest.raises(ConfigError) as info:
        parse_duration(value, "heartbeat_interval")
    assert info.value.field == "heartbeat_interval"


def test_parse_duration_default_field_name() -> None:
    """Without a field name the error names "duration"."""
    with pytest.raises(ConfigError) as info:
        parse_duration("soon")
    assert info.value.field == "duration"


@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_parse_duration_float_round_trip(x: float) -> None:
    """Float seconds, their repr, and "{x}s" / "{x}ms" strings give back the same value."""
    x = abs(x)
    assert parse_duration(x) == x
    assert parse_duration(repr(x)) == x
    assert parse_duration(f"{x}s") == x
    assert parse_duration(f"{x}ms") == x / 1000


@given(st.integers(min_value=0, max_value=10**15))
def test_parse_duration_int_round_trip(n: int) -> None:
    """Integer seconds and "{n}s" / "{n}ms" / "{n}m" / "{n}h" strings give the expected value."""
    assert parse_duration(n) == float(n)
    assert parse_duration(str(n)) == float(n)
    assert parse_duration(f"{n}s") == float(n)
    assert parse_duration(f"{n}ms") == n / 1000
    assert parse_duration(f"{n}m") == n * 60.0
    assert parse_duration(f"{n}h") == n * 3600.0


# -- from_mapping --


def test_from_mapping() -> None:
    """A mapping of field names builds the same config as keywords."""
    data = {"app_name": "app", "url": URL, "heartbeat_interval": "5s", "max_queue_size": 10}
    assert Config.from_mapping(data, env={}) == make(heartbeat_interval=5.0, max_queue_size=10)


def test_from_mapping_unknown_key_suggests() -> None:
    """An unknown key is refused, naming it and suggesting the closest option."""
    with pytest.raises(ConfigError, match="did you mean 'heartbeat_interval'") as info:
        Config.from_mapping({"app_name": "a", "url": URL, "heartbeat_intervall": 5}, env={})
    assert info.value.field == "heartbeat_intervall"
    assert info.value.reason.startswith("unknown option")


def test_from_mapping_unknown_key_without_suggestion() -> None:
    """An unknown key nothing like an option is refused without a guess."""
    with pytest.raises(ConfigError) as info:
        Config.from_mapping({"app_name": "a", "url": URL, "zzzz": 5}, env={})
    assert info.value.field == "zzzz"
    assert info.value.reason == "unknown option"


@pytest.mark.parametrize(
    ("seed_name", "ours"),
    [
        ("webSocketUrl", "url"),
        ("maxQueueSize", "max_queue_size"),
        ("isForegroundMode", "foreground"),
        ("autoStartOnBoot", "autostart_on_boot"),
        ("heartbeatInterval", "heartbeat_interval"),
    ],
)
def test_from_mapping_seed_names_hint(seed_name: str, ours: str) -> None:
    """The seed's camelCase names are refused with the bgws name as a hint."""
    with pytest.raises(ConfigError, match=f"did you mean '{ours}'"):
        Config.from_mapping({"app_name": "a", "url": URL, seed_name: 1}, env={})


@pytest.mark.parametrize("missing", ["app_name", "url"])
def test_from_mapping_missing_required(missing: str) -> None:
    """A missing required option is a ConfigError naming it."""
    data = {"app_name": "a", "url": URL}
    del data[missing]
    with pytest.raises(ConfigError, match="required") as info:
        Config.from_mapping(data, env={})
    assert info.value.field == missing


def test_from_mapping_refuses_non_mappings_and_non_str_keys() -> None:
    """The data must be a mapping with string keys."""
    with pytest.raises(ConfigError) as info:
        Config.from_mapping([("app_name", "a")], env={})  # type: ignore[arg-type]
    assert info.value.field is None
    with pytest.raises(ConfigError):
        Config.from_mapping({"app_name": "a", "url": URL, 1: 2}, env={})  # type: ignore[dict-item]


def test_from_mapping_does_not_change_its_input() -> None:
    """from_mapping leaves the caller's mapping alone."""
    data = {"profile": "chat", "app_name": "a", "url": URL}
    Config.from_mapping(data, env={})
    assert data == {"profile": "chat", "app_name": "a", "url": URL}


# -- TOML --

TOML = """
app_name = "My Chat"
url = "wss://chat.example/ws"
heartbeat_interval = "25s"
initial_reconnect_delay = 0.5
max_reconnect_delay = "2m"
max_queue_size = 500
max_reconnect_attempts = 10
foreground = true
subprotocols = ["v1.chat"]
auth_close_codes = [4001, 4401]

[headers]
User-Agent = "bgws-test"

[storage_keys]
connection_data = "chat.connection"

[app_heartbeat]
type = "ping"
tags = ["a", "b"]
"""


def test_from_toml(tmp_path: Path) -> None:
    """A TOML file with durations, arrays and tables loads into a config."""
    path = tmp_path / "service.toml"
    path.write_text(TOML)
    config = Config.from_toml(path, env={})
    assert config.app_name == "My Chat"
    assert config.service_tag == "my_chat"
    assert config.heartbeat_interval == 25.0
    assert config.initial_reconnect_delay == 0.5
    assert config.max_reconnect_delay == 120.0
    assert config.max_queue_size == 500
    assert config.max_reconnect_attempts == 10
    assert config.foreground is True
    assert config.subprotocols == ("v1.chat",)
    assert config.auth_close_codes == (4001, 4401)
    assert dict(config.headers) == {"User-Agent": "bgws-test"}
    assert config.storage_keys["connection_data"] == "chat.connection"
    assert config.app_heartbeat_message() == {"type": "ping", "tags": ["a", "b"]}
    assert Config.from_toml(str(path), env={}) == config


def test_from_toml_syntax_error_names_path_and_line(tmp_path: Path) -> None:
    """A TOML syntax error is a ConfigError with the file and the line."""
    path = tmp_path / "bad.toml"
    path.write_text('app_name = "a"\nurl = = "wss://x"\n')
    with pytest.raises(ConfigError, match="line 2") as info:
        Config.from_toml(path, env={})
    assert info.value.field is None
    assert str(path) in str(info.value)


def test_from_toml_missing_file(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming it."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="no such file") as info:
        Config.from_toml(path, env={})
    assert info.value.field is None
    assert str(path) in str(info.value)


def test_from_toml_unreadable(tmp_path: Path) -> None:
    """A path that cannot be read as a file is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="cannot read") as info:
        Config.from_toml(tmp_path, env={})
    assert info.value.field is None


def test_from_toml_not_utf8(tmp_path: Path) -> None:
    """A file that is not UTF-8 is a ConfigError."""
    path = tmp_path / "latin1.toml"
    path.write_bytes('app_name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8") as info:
        Config.from_toml(path, env={})
    assert info.value.field is None


@pytest.mark.parametrize(
    ("extra", "field"),
    [("heartbeat_intervall = 5", "heartbeat_intervall"), ("[tls]\nverify = false", "tls")],
)
def test_from_toml_unknown_key_or_table(tmp_path: Path, extra: str, field: str) -> None:
    """Unknown keys and tables in TOML are refused by name."""
    path = tmp_path / "service.toml"
    path.write_text(f'app_name = "a"\nurl = "wss://x/"\n{extra}\n')
    with pytest.raises(ConfigError) as info:
        Config.from_toml(path, env={})
    assert info.value.field == field


def test_from_toml_bad_value_names_field(tmp_path: Path) -> None:
    """A wrong value in TOML is refused naming its field."""
    path = tmp_path / "service.toml"
    path.write_text('app_name = "a"\nurl = "wss://x/"\nmax_queue_size = "lots"\n')
    with pytest.raises(ConfigError) as info:
        Config.from_toml(path, env={})
    assert info.value.field == "max_queue_size"


def test_from_toml_relative_paths_follow_the_file(tmp_path: Path) -> None:
    """Relative TLS paths in a TOML file are relative to the file's directory."""
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("ca\n")
    path = tmp_path / "service.toml"
    path.write_text('app_name = "a"\nurl = "wss://x/"\ntls_ca_file = "certs/ca.pem"\n')
    config = Config.from_toml(path, env={})
    assert config.tls_ca_file == str(tmp_path / "certs" / "ca.pem")


def test_from_toml_env_overrides(tmp_path: Path) -> None:
    """BGWS_ variables override the file's values."""
    path = tmp_path / "service.toml"
    path.write_text('app_name = "a"\nurl = "wss://x/"\nheartbeat_interval = "20s"\n')
    config = Config.from_toml(path, env={"BGWS_HEARTBEAT_INTERVAL": "5s"})
    assert config.heartbeat_interval == 5.0


# -- environment overrides --

CHECKED_APART = object()  # mapping fields, compared after the loop
ENV_SAMPLES: dict[str, tuple[str, Any]] = {
    "app_name": ("From Env", "From Env"),
    "url": ("wss://env.example/ws", "wss://env.example/ws"),
    "notification_channel_id": ("chan", "chan"),
    "notification_channel_name": ("Channel", "Channel"),
    "app_icon_path": ("icon.png", "icon.png"),
    "foreground_service_notification_id": ("7", 7),
    "max_queue_size": (" 42 ", 42),
    "max_reconnect_attempts": ("3", 3),
    "initial_reconnect_delay": ("250ms", 0.25),
    "max_reconnect_delay": ("1m", 60.0),
    "heartbeat_interval": ("5s", 5.0),
    "autostart_on_boot": ("yes", True),
    "foreground": ("ON", True),
    "storage_keys": ('{"connection_data": "env.conn"}', CHECKED_APART),
    "service_tag": ("env-tag", "env-tag"),
    "ping_timeout": ("3", 3.0),
    "connect_timeout": ("1.5s", 1.5),
    "min_uptime": ("0", 0.0),
    "close_timeout": ("2s", 2.0),
    "max_message_size": ("2048", 2048),
    "headers": ('{"Authorization": "Bearer env"}', CHECKED_APART),
    "subprotocols": ("v1.chat, v2.chat,", ("v1.chat", "v2.chat")),
    "tls_verify": ("false", False),
    "tls_ca_file": ("", None),
    "tls_cert_file": ("none", None),
    "tls_key_file": ("None", None),
    "allow_insecure_credentials": ("0", False),
    "type_field": ("kind", "kind"),
    "id_field": ("", None),
    "codec": ("raw", "raw"),
    "inbox_size": ("16", 16),
    "inbox_max_bytes": ("65536", 65536),
    "overflow": ("drop_oldest", "drop_oldest"),
    "reconnect_on_close": ("off", False),
    "auth_mode": ("query", "query"),
    "auth_close_codes": ("4001,4401", (4001, 4401)),
    "app_heartbeat": ('{"type": "ping"}', CHECKED_APART),
    "app_heartbeat_reply_type": ("pong", "pong"),
    "transport": ("picows", "picows"),
    "follow_redirects": ("true", True),
    **DELIVERY_ENV_SAMPLES,
    **NOTIFY_ENV_SAMPLES,
    **OFFLINE_ENV_SAMPLES,
    **LONGRUN_ENV_SAMPLES,
}


def test_env_overrides_every_field() -> None:
    """Every field can be set from a BGWS_<FIELD> variable, parsed per its type."""
    assert set(ENV_SAMPLES) == FIELD_NAMES
    env = {f"BGWS_{name.upper()}": raw for name, (raw, _) in ENV_SAMPLES.items()}
    config = Config.from_mapping({"app_name": "a", "url": "ws://localhost/"}, env=env)
    for name, (_, expected) in ENV_SAMPLES.items():
        if expected is not CHECKED_APART:
            assert getattr(config, name) == expected, name
    assert config.storage_keys["connection_data"] == "env.conn"
    assert dict(config.headers) == {"Authorization": "Bearer env"}
    assert config.app_heartbeat_message() == {"type": "ping"}


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("BGWS_FOREGROUND", "maybe", "foreground"),
        ("BGWS_MAX_QUEUE_SIZE", "1.5", "max_queue_size"),
        ("BGWS_MAX_QUEUE_SIZE", "", "max_queue_size"),
        ("BGWS_HEARTBEAT_INTERVAL", "soon", "heartbeat_interval"),
        ("BGWS_HEADERS", "{not json", "headers"),
        ("BGWS_HEADERS", '["a"]', "headers"),
        ("BGWS_AUTH_CLOSE_CODES", "4001,x", "auth_close_codes"),
        ("BGWS_CODEC", "xml", "codec"),
        ("BGWS_URL", "http://x/", "url"),
    ],
)
def test_env_bad_value(variable: str, value: str, field: str) -> None:
    """A bad environment value names the field and the variable."""
    with pytest.raises(ConfigError) as info:
        Config.from_mapping({"app_name": "a", "url": URL}, env={variable: value})
    assert info.value.field == field
    if field not in ("codec", "url"):
        assert variable in info.value.reason


def test_env_unrelated_variables_ignored() -> None:
    """BGWS_ variables that do not name a field, and other variables, are ignored."""
    env = {"BGWS_SOCKET": "/tmp/x.sock", "BGWS_PROFILE": "iot", "HOME": "/root", "bgws_url": "x"}
    assert Config.from_mapping({"app_name": "a", "url": URL}, env=env) == make(app_name="a")


def test_env_none_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """env=None reads os.environ; env={} turns overrides off."""
    monkeypatch.setenv("BGWS_MAX_QUEUE_SIZE", "7")
    data = {"app_name": "a", "url": URL}
    assert Config.from_mapping(data).max_queue_size == 7
    assert Config.from_mapping(data, env={}).max_queue_size == 1000
    assert make().with_env().max_queue_size == 7


def test_with_env() -> None:
    """with_env applies overrides to an existing config, or returns it unchanged."""
    config = make(heartbeat_interval=20)
    assert config.with_env({}) is config
    assert config.with_env({"BGWS_OTHER": "1"}) is config
    assert dict(make(headers={"X-A": "1"}).with_env({"BGWS_HEADERS": ""}).headers) == {}
    changed = config.with_env({"BGWS_HEARTBEAT_INTERVAL": "none"})
    assert changed.heartbeat_interval is None
    assert config.heartbeat_interval == 20.0


# -- replace --


def test_replace() -> None:
    """replace returns a validated copy and leaves the original alone."""
    config = make()
    changed = config.replace(max_queue_size=5, heartbeat_interval="1m")
    assert (changed.max_queue_size, changed.heartbeat_interval) == (5, 60.0)
    assert (config.max_queue_size, config.heartbeat_interval) == (1000, 20.0)


def test_replace_validates() -> None:
    """A wrong value given to replace is a ConfigError."""
    with pytest.raises(ConfigError) as info:
        make().replace(max_queue_size=0)
    assert info.value.field == "max_queue_size"


def test_replace_unknown_name() -> None:
    """An unknown name given to replace is a ConfigError with a suggestion."""
    with pytest.raises(ConfigError, match="did you mean 'max_queue_size'") as info:
        make().replace(max_queue_sise=5)
    assert info.value.field == "max_queue_sise"


def test_replace_keeps_service_tag() -> None:
    """Changing app_name does not move the service tag."""
    config = make(app_name="First")
    assert config.replace(app_name="Second").service_tag == "first"


def test_replace_keeps_mappings() -> None:
    """Mappings survive replace unchanged."""
    config = make(
        storage_keys={"connection_data": "c"}, headers={"X-A": "1"}, app_heartbeat={"t": [1]}
    )
    changed = config.replace(max_queue_size=3)
    assert changed.storage_keys == config.storage_keys
    assert changed.headers == config.headers
    assert changed.app_heartbeat_message() == {"t": [1]}


# -- immutability, equality, copying --


def test_assigning_a_field_raises() -> None:
    """Fields cannot be reassigned, nor new attributes added."""
    config = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_queue_size = 5  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        config.extra = 1  # type: ignore[attr-defined]


def test_mappings_cannot_be_mutated() -> None:
    """headers, storage_keys and app_heartbeat are read-only, at every depth."""
    config = make(headers={"X-A": "1"}, app_heartbeat={"type": "ping", "meta": {"n": [1]}})
    with pytest.raises(TypeError):
        config.headers["X-B"] = "2"  # type: ignore[index]
    with pytest.raises(TypeError):
        config.storage_keys["connection_data"] = "x"  # type: ignore[index]
    assert config.app_heartbeat is not None
    with pytest.raises(TypeError):
        config.app_heartbeat["type"] = "other"  # type: ignore[index]
    with pytest.raises(TypeError):
        config.app_heartbeat["meta"]["n"] = 2
    assert isinstance(config.app_heartbeat["meta"]["n"], tuple)


def test_inputs_are_copied() -> None:
    """Changing the caller's dicts after building does not change the config."""
    headers = {"X-A": "1"}
    heartbeat: dict[str, Any] = {"type": "ping", "tags": ["a"], "every": 1.5}
    keys = {"connection_data": "c"}
    config = make(headers=headers, app_heartbeat=heartbeat, storage_keys=keys)
    headers["X-A"] = "2"
    heartbeat["tags"].append("b")
    keys["connection_data"] = "d"
    assert config.headers["X-A"] == "1"
    assert config.app_heartbeat_message() == {"type": "ping", "tags": ["a"], "every": 1.5}
    assert config.storage_keys["connection_data"] == "c"


def test_app_heartbeat_message_is_a_fresh_copy() -> None:
    """Each heartbeat message is a new mutable dict; changing it changes nothing else."""
    config = make(app_heartbeat={"type": "ping", "meta": {"n": 1}}, app_heartbeat_reply_type="pong")
    first = config.app_heartbeat_message()
    assert first == {"type": "ping", "meta": {"n": 1}}
    first["meta"]["n"] = 2
    assert config.app_heartbeat_message() == {"type": "ping", "meta": {"n": 1}}
    assert make().app_heartbeat_message() is None


def test_equality_and_hash() -> None:
    """Equal options make equal configs with equal hashes."""
    a = make(headers={"X-A": "1"}, heartbeat_interval="20s")
    b = make(headers={"X-A": "1"}, heartbeat_interval=20)
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != make(headers={"X-A": "2"})


def test_copy_pickle() -> None:
    """Copies are the same object; pickling round-trips to an equal config."""
    config = make(headers={"X-A": "1"}, app_heartbeat={"type": "ping", "l": [1, {"a": None}]})
    assert copy.copy(config) is config
    assert copy.deepcopy(config) is config
    assert pickle.loads(pickle.dumps(config)) == config


# -- repr, to_dict and secrets --

TOKEN = "tok-0123456789abcdef"
URL_TOKEN = "qs-fedcba9876543210"


def secret_config() -> Config:
    """A config holding secrets in headers, the URL and the heartbeat."""
    return make(
        url=f"wss://alice:pw-{TOKEN}@example.com/ws?room=1&access_token={URL_TOKEN}",
        headers={"Authorization": f"Bearer {TOKEN}", "User-Agent": "bgws"},
        app_heartbeat={"type": "ping", "session": "sess-secret-1"},
    )


def test_repr_hides_secrets() -> None:
    """Header tokens, URL userinfo and URL query tokens never appear in repr or str."""
    config = secret_config()
    for text in (repr(config), str(config)):
        assert TOKEN not in text
        assert URL_TOKEN not in text
        assert "sess-secret-1" not in text
        assert "alice" not in text
        assert "access_token=***" in text
        assert "'User-Agent': 'bgws'" in text
        assert text.startswith("Config(app_name='app', url='wss://***@example.com/ws?room=1")


def test_to_dict_redacts_by_default() -> None:
    """to_dict hides secrets unless asked not to, and holds only plain types."""
    config = secret_config()
    redacted = config.to_dict()
    assert TOKEN not in json.dumps(redacted)
    assert URL_TOKEN not in json.dumps(redacted)
    assert redacted["headers"] == {"Authorization": "***", "User-Agent": "bgws"}
    assert list(redacted) == [f.name for f in dataclasses.fields(Config)]
    plain = config.to_dict(redact=False)
    assert plain["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert URL_TOKEN in plain["url"]
    assert type(plain["headers"]) is dict
    assert type(plain["subprotocols"]) is list
    assert json.loads(json.dumps(plain)) == plain


def test_to_dict_round_trips() -> None:
    """from_mapping(to_dict(redact=False)) rebuilds an equal config."""
    config = secret_config().replace(subprotocols=("a",), heartbeat_interval=None)
    assert Config.from_mapping(config.to_dict(redact=False), env={}) == config


def test_secret_values() -> None:
    """secret_values lists the secrets so log text can be cleaned of them."""
    from bgws._redact import redact_text

    config = secret_config()
    secrets = config.secret_values()
    assert f"Bearer {TOKEN}" in secrets
    assert TOKEN in secrets
    assert URL_TOKEN in secrets
    assert f"pw-{TOKEN}" in secrets
    assert "sess-secret-1" in secrets
    line = f"rejected {TOKEN} for {URL_TOKEN}"
    assert redact_text(line, secrets) == "rejected *** for ***"
    assert make().secret_values() == ()


# -- the docs stay true to the code --

DOCS = Path(__file__).resolve().parents[1] / "docs"
SEED_OPTIONS = {
    "appName": "app_name",
    "notificationChannelId": "notification_channel_id",
    "notificationChannelName": "notification_channel_name",
    "webSocketUrl": "url",
    "appIconPath": "app_icon_path",
    "foregroundServiceNotificationId": "foreground_service_notification_id",
    "maxQueueSize": "max_queue_size",
    "maxReconnectAttempts": "max_reconnect_attempts",
    "initialReconnectDelay": "initial_reconnect_delay",
    "maxReconnectDelay": "max_reconnect_delay",
    "heartbeatInterval": "heartbeat_interval",
    "autoStartOnBoot": "autostart_on_boot",
    "isForegroundMode": "foreground",
    "storageKeys": "storage_keys",
    "serviceTag": "service_tag",
}


def test_docs_describe_every_field() -> None:
    """docs/configuration.md has a table row for every field."""
    text = (DOCS / "configuration.md").read_text()
    for name in FIELD_NAMES:
        assert f"| `{name}` |" in text, name


def test_docs_toml_example_loads(tmp_path: Path) -> None:
    """The TOML example in docs/configuration.md is a valid config."""
    text = (DOCS / "configuration.md").read_text()
    example = text.split("```toml\n# service.toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("ca\n")
    path = tmp_path / "service.toml"
    path.write_text(example)
    config = Config.from_toml(path, env={})
    assert config.foreground is True
    assert config.heartbeat_interval == 25.0
    assert config.storage_keys["connection_data"] == "mychat.connection"


def test_seed_mapping_names_every_seed_option() -> None:
    """docs/seed-mapping.md maps every seed option to an existing field."""
    text = (DOCS / "seed-mapping.md").read_text()
    assert set(SEED_OPTIONS.values()) <= FIELD_NAMES
    for seed, ours in SEED_OPTIONS.items():
        assert f"| `{seed}` | `{ours}` |" in text, seed


# -- misspelt names: keywords and environment variables --


def test_unknown_keyword_is_a_config_error_like_toml() -> None:
    """Config(app_nme=...) raises the ConfigError (with the suggestion) that TOML gives."""
    with pytest.raises(ConfigError) as keyword:
        Config(app_nme="X", url=URL)  # type: ignore[call-arg]
    with pytest.raises(ConfigError) as mapping:
        Config.from_mapping({"app_nme": "X", "url": URL}, env={})
    assert str(keyword.value) == str(mapping.value)
    assert str(keyword.value) == "app_nme: unknown option; did you mean 'app_name'?"
    assert keyword.value.field == "app_nme"


def test_missing_keyword_is_a_config_error() -> None:
    """A config without url or app_name raises ConfigError naming the option."""
    with pytest.raises(ConfigError, match="url: is missing"):
        Config(app_name="X")  # type: ignore[call-arg]


def test_misspelt_env_variable_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """BGWS_HEARTBEAT_INTERVALL logs one warning naming BGWS_HEARTBEAT_INTERVAL, and is ignored."""
    env = {"BGWS_HEARTBEAT_INTERVALL": "5", "BGWS_SOCKET": "/tmp/x", "BGWS_INSTALL_DIR": "x"}
    with caplog.at_level(logging.WARNING, logger="bgws.config"):
        first = Config.from_mapping({"app_name": "a", "url": URL}, env=env)
        make().with_env(env)
    assert first.heartbeat_interval == make().heartbeat_interval
    warnings = [r.getMessage() for r in caplog.records if r.name == "bgws.config"]
    assert warnings == [
        "ignoring BGWS_HEARTBEAT_INTERVALL: not a bgws option; "
        "did you mean BGWS_HEARTBEAT_INTERVAL?"
    ]
