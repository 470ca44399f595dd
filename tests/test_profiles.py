"""Tests for bgws.profiles: the presets, their overrides, and profile= in files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bgws.config import Config
from bgws.errors import ConfigError
from bgws.profiles import PROFILES, chat, gaming, iot, profile_values, trading

URL = "wss://example.com/ws"

EXPECTED: dict[str, dict[str, Any]] = {
    "chat": {
        "heartbeat_interval": 25.0,
        "ping_timeout": 10.0,
        "initial_reconnect_delay": 1.0,
        "max_reconnect_delay": 30.0,
        "max_queue_size": 500,
        "foreground": True,
        "min_uptime": 10.0,
        "notify_types": ["chat_message"],
        "notify_body": "{text}",
    },
    "gaming": {
        "heartbeat_interval": 5.0,
        "ping_timeout": 3.0,
        "initial_reconnect_delay": 0.25,
        "max_reconnect_delay": 5.0,
        "connect_timeout": 5.0,
        "max_queue_size": 200,
        "min_uptime": 5.0,
    },
    "iot": {
        "heartbeat_interval": 60.0,
        "ping_timeout": 20.0,
        "initial_reconnect_delay": 5.0,
        "max_reconnect_delay": 900.0,
        "max_queue_size": 10_000,
        "autostart_on_boot": True,
        "min_uptime": 30.0,
        "storage_sync": "full",
    },
    "trading": {
        "heartbeat_interval": 2.0,
        "ping_timeout": 2.0,
        "initial_reconnect_delay": 0.1,
        "max_reconnect_delay": 5.0,
        "connect_timeout": 5.0,
        "max_queue_size": 5000,
        "inbox_size": 8192,
        "max_message_size": 4 * 1024 * 1024,
    },
}


def test_profiles_mapping() -> None:
    """PROFILES maps each name to its function and cannot be changed."""
    assert dict(PROFILES) == {"chat": chat, "gaming": gaming, "iot": iot, "trading": trading}
    with pytest.raises(TypeError):
        PROFILES["other"] = chat  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_profile_values(name: str) -> None:
    """profile_values returns exactly the preset's own values, as a fresh dict."""
    values = profile_values(name)
    assert values == EXPECTED[name]
    values["max_queue_size"] = 1
    assert profile_values(name) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_profile_builds_config(name: str) -> None:
    """Each profile function builds a config with its values and defaults elsewhere."""
    config = PROFILES[name](url=URL, app_name="App")
    assert isinstance(config, Config)
    assert (config.url, config.app_name, config.service_tag) == (URL, "App", "app")
    for field, value in EXPECTED[name].items():
        expected = tuple(value) if isinstance(value, list) else value  # lists are kept as tuples
        assert getattr(config, field) == expected, field
    assert config.close_timeout == 5.0
    assert config.overflow == "raise"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_profile_overrides_win(name: str) -> None:
    """Overrides replace the preset's values and are validated."""
    config = PROFILES[name](
        url=URL, app_name="App", heartbeat_interval="1s", max_queue_size=3, overflow="wait"
    )
    assert (config.heartbeat_interval, config.max_queue_size, config.overflow) == (1.0, 3, "wait")
    with pytest.raises(ConfigError) as info:
        PROFILES[name](url=URL, app_name="App", max_queue_size=0)
    assert info.value.field == "max_queue_size"


def test_profile_unknown_override() -> None:
    """An unknown override is a ConfigError with a suggestion, not a TypeError."""
    with pytest.raises(ConfigError, match="did you mean 'ping_timeout'") as info:
        chat(url=URL, app_name="App", ping_timeot=3)
    assert info.value.field == "ping_timeot"


def test_profile_function_refuses_profile_override() -> None:
    """A profile function cannot be asked for another profile."""
    with pytest.raises(ConfigError) as info:
        chat(url=URL, app_name="App", profile="iot")
    assert info.value.field == "profile"


def test_profile_functions_ignore_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Profile functions build from their arguments only, not from BGWS_ variables."""
    monkeypatch.setenv("BGWS_MAX_QUEUE_SIZE", "7")
    assert chat(url=URL, app_name="App").max_queue_size == 500


def test_chat_notifies_for_chat_messages_in_foreground() -> None:
    """The chat preset notifies for chat_message with its text, keeps foreground, and yields."""
    config = chat(url=URL, app_name="App")
    assert config.notify_types == ("chat_message",)
    assert (config.notify_title, config.notify_body) == ("{app_name}", "{text}")
    assert config.foreground is True
    assert chat(url=URL, app_name="App", notify_types=[]).notify_types == ()
    values = profile_values("chat")
    values["notify_types"].append("mutated")
    assert profile_values("chat")["notify_types"] == ["chat_message"]


def test_trading_notices_dead_feed_quickly() -> None:
    """The trading preset finds a dead link within about four seconds."""
    config = trading(url=URL, app_name="Feed")
    assert config.heartbeat_interval is not None
    assert config.heartbeat_interval + config.ping_timeout <= 4.0


@pytest.mark.parametrize("name", ["forex", "Chat", "", "iot "])
def test_unknown_profile(name: str) -> None:
    """An unknown profile name is a ConfigError on the profile field."""
    with pytest.raises(ConfigError, match="unknown profile") as info:
        profile_values(name)
    assert info.value.field == "profile"
    assert "chat, gaming, iot, trading" in info.value.reason


def test_unknown_profile_suggests() -> None:
    """A near miss suggests the profile meant."""
    with pytest.raises(ConfigError, match="did you mean 'gaming'"):
        profile_values("gamming")


def test_profile_in_mapping() -> None:
    """A profile key in a mapping starts from the preset; other keys override it."""
    data = {"profile": "iot", "app_name": "Gw", "url": URL, "max_queue_size": 50}
    config = Config.from_mapping(data, env={})
    assert config.heartbeat_interval == 60.0
    assert config.autostart_on_boot is True
    assert config.max_queue_size == 50


@pytest.mark.parametrize("bad", ["nope", 3])
def test_profile_in_mapping_refused(bad: object) -> None:
    """An unknown or non-string profile in a mapping is refused on the profile field."""
    with pytest.raises(ConfigError) as info:
        Config.from_mapping({"profile": bad, "app_name": "a", "url": URL}, env={})
    assert info.value.field == "profile"


def test_profile_in_toml(tmp_path: Path) -> None:
    """profile = "trading" in a TOML file starts from that preset; env overrides both."""
    path = tmp_path / "feed.toml"
    path.write_text(
        'profile = "trading"\napp_name = "Feed"\nurl = "wss://feed.example/ws"\n'
        'max_queue_size = 100\nconnect_timeout = "3s"\n'
    )
    config = Config.from_toml(path, env={"BGWS_MAX_QUEUE_SIZE": "9"})
    assert config.inbox_size == 8192
    assert config.heartbeat_interval == 2.0
    assert config.connect_timeout == 3.0
    assert config.max_queue_size == 9


def test_unknown_profile_in_toml(tmp_path: Path) -> None:
    """An unknown profile in a TOML file names the profile field."""
    path = tmp_path / "x.toml"
    path.write_text('profile = "forex"\napp_name = "a"\nurl = "wss://x/"\n')
    with pytest.raises(ConfigError) as info:
        Config.from_toml(path, env={})
    assert info.value.field == "profile"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_profile_docstrings_explain_values(name: str) -> None:
    """Each profile function's docstring names every value it sets."""
    doc = PROFILES[name].__doc__ or ""
    assert "why" in doc
    for field in EXPECTED[name]:
        if field not in ("initial_reconnect_delay", "max_reconnect_delay"):
            assert field in doc, field
    assert "backoff" in doc


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_profiles_are_protocol_neutral(name: str) -> None:
    """No preset sets server-specific delivery options; all keep the default SQLite storage."""
    config = PROFILES[name](url=URL, app_name="App")
    assert (config.ack, config.resume, config.reply_id_field) == (None, None, None)
    assert config.priority_types == ()
    assert (config.storage, config.storage_path) == ("sqlite", None)


def test_iot_survives_power_loss() -> None:
    """The iot preset fsyncs every commit; the others keep the default sync level."""
    assert iot(url=URL, app_name="Gw").storage_sync == "full"
    for build in (chat, gaming, trading):
        assert build(url=URL, app_name="App").storage_sync == "normal"
    assert iot(url=URL, app_name="Gw", storage_sync="normal").storage_sync == "normal"
