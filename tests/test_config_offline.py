"""Tests for bgws.config's long-outage options: connect_quota and the suspended tier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bgws.config import Config
from bgws.errors import ConfigError

URL = "wss://example.com/ws"

OFFLINE_BAD_VALUES: list[tuple[str, Any]] = [
    ("connect_quota", 300),
    ("connect_quota", "300/5m"),
    ("connect_quota", [300]),
    ("connect_quota", [0, "5m"]),
    ("connect_quota", [300, "0s"]),
    ("connect_quota", [300, "soon"]),
    ("connect_quota", [1.5, "5m"]),
    ("suspend_after", "0s"),
    ("suspend_after", "-1m"),
    ("suspend_after", "later"),
    ("suspended_retry", 0),
    ("suspended_retry", None),
    ("suspended_send", "drop"),
    ("suspended_send", None),
]

OFFLINE_ENV_SAMPLES: dict[str, tuple[str, Any]] = {
    "connect_quota": ("300,5m", (300, 300.0)),
    "suspend_after": ("2m", 120.0),
    "suspended_retry": ("30s", 30.0),
    "suspended_send": ("fail", "fail"),
}


def make(**changes: Any) -> Config:
    """Build a config with the two required options filled in."""
    return Config(app_name="a", url=URL, **changes)


def test_defaults_change_nothing() -> None:
    """No quota and no suspended tier unless configured; a suspended send queues."""
    config = make()
    assert config.connect_quota is None
    assert config.suspend_after is None
    assert config.suspended_retry == 30.0
    assert config.suspended_send == "queue"


def test_quota_and_suspend_from_toml(tmp_path: Path) -> None:
    """TOML takes connect_quota = [300, "5m"] and durations as text."""
    path = tmp_path / "service.toml"
    path.write_text(
        'app_name = "a"\nurl = "wss://example.com/ws"\nconnect_quota = [300, "5m"]\n'
        'suspend_after = "2m"\nsuspended_retry = "30s"\nsuspended_send = "fail"\n',
        encoding="utf-8",
    )
    config = Config.from_toml(path, env={})
    assert config.connect_quota == (300, 300.0)
    assert (config.suspend_after, config.suspended_retry) == (120.0, 30.0)
    assert config.suspended_send == "fail"
    assert Config.from_mapping(config.to_dict(redact=False), env={}) == config


def test_env_overrides() -> None:
    """BGWS_CONNECT_QUOTA=300,5m and the suspended options load from the environment."""
    env = {f"BGWS_{name.upper()}": raw for name, (raw, _) in OFFLINE_ENV_SAMPLES.items()}
    config = Config.from_mapping({"app_name": "a", "url": URL}, env=env)
    for name, (_, expected) in OFFLINE_ENV_SAMPLES.items():
        assert getattr(config, name) == expected, name


@pytest.mark.parametrize(("name", "value"), OFFLINE_BAD_VALUES)
def test_bad_value_names_the_field(name: str, value: Any) -> None:
    """A wrong quota or suspended-tier value raises ConfigError naming its field."""
    with pytest.raises(ConfigError) as info:
        make(**{name: value})
    assert info.value.field == name
