"""Tests for bgws.config's options for days-long links: rotation and send rates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bgws.config import Config
from bgws.errors import ConfigError

URL = "wss://example.com/ws"


def make(**changes: Any) -> Config:
    """Build a config with the two required options filled in."""
    return Config(app_name="app", url=URL, **changes)


# The new fields' wrong values; test_config.py runs them with the other fields' cases.
LONGRUN_BAD_VALUES: list[tuple[str, Any]] = [
    ("max_connection_age", 0),
    ("max_connection_age", "50ms"),
    ("max_connection_age", "soon"),
    ("send_rate", 5),
    ("send_rate", "5/s"),
    ("send_rate", [5]),
    ("send_rate", [0, "1s"]),
    ("send_rate", [5, 0]),
    ("send_rate", [True, "1s"]),
    ("send_burst", 3),  # without send_rate
    ("lane_send_rates", [[1, [2, "1s"]]]),
    ("lane_send_rates", {"high": [2, "1s"]}),
    ("lane_send_rates", {"1": [2]}),
]

LONGRUN_ENV_SAMPLES: dict[str, tuple[str, Any]] = {
    "max_connection_age": ("23h50m", 85800.0),
    "send_rate": ("5, 1s", (5, 1.0)),
    "send_burst": ("8", 8),
    "lane_send_rates": ('{"10": [2, "500ms"]}', {"10": (2, 0.5)}),
}


def test_longrun_defaults() -> None:
    """By default links are never rotated and sends are not paced."""
    config = make()
    assert config.max_connection_age is None
    assert config.send_rate is None
    assert config.send_burst is None
    assert dict(config.lane_send_rates) == {}


def test_rates_are_normalised() -> None:
    """Rates become (count, seconds); lane keys become the priority's text."""
    config = make(send_rate=[5, "1s"], send_burst=10, lane_send_rates={1: ["2", "250ms"]})
    assert config.send_rate == (5, 1.0)
    assert config.send_burst == 10
    assert dict(config.lane_send_rates) == {"1": (2, 0.25)}


def test_send_burst_needs_a_rate_and_a_positive_count() -> None:
    """send_burst below 1 is refused, naming the field."""
    with pytest.raises(ConfigError) as info:
        make(send_rate=[5, "1s"], send_burst=0)
    assert info.value.field == "send_burst"


def test_longrun_options_from_toml(tmp_path: Path) -> None:
    """The options load from TOML as documented and round-trip through to_dict."""
    path = tmp_path / "service.toml"
    path.write_text(
        'app_name = "feed"\nurl = "wss://example.com/ws"\nmax_connection_age = "23h50m"\n'
        'send_rate = [5, "1s"]\nsend_burst = 5\n[lane_send_rates]\n"10" = [2, "1s"]\n'
    )
    config = Config.from_toml(path, env={})
    assert config.max_connection_age == 23 * 3600 + 50 * 60
    assert config.send_rate == (5, 1.0)
    assert dict(config.lane_send_rates) == {"10": (2, 1.0)}
    assert Config.from_mapping(config.to_dict(redact=False)) == config
