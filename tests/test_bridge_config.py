"""The bridge's settings: a [services.<name>.bridge] table or arguments, checked up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import bgws
import bgws.bridge
from bgws import servicefile
from bgws.bridge import BridgeSettings, NatsBridge

pytest.importorskip("nats")


def table(**bridge: Any) -> dict[str, Any]:
    return {"services": {"feed": {"url": "ws://127.0.0.1:9/", "bridge": bridge}}}


def test_the_bridge_package_exports_exactly_its_names() -> None:
    """bgws.bridge exports the bridge, its settings and its error."""
    assert set(bgws.bridge.__all__) == {"NatsBridge", "BridgeSettings", "BridgeError"}
    assert issubclass(bgws.bridge.BridgeError, bgws.BgwsError)


def test_a_service_file_table_builds_a_fresh_bridge_per_service(tmp_path: Path) -> None:
    """The TOML keys nats, stream, publish, publish_types, consume load into the bridge."""
    path = tmp_path / "services.toml"
    path.write_text(
        "[services.feed]\n"
        'url = "ws://127.0.0.1:9/"\n'
        "[services.feed.bridge]\n"
        'nats = ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]\n'
        'stream = "FEEDS"\n'
        'publish = "feeds.{service}.{type}"\n'
        'publish_types = ["trade"]\n'
        'consume = ""\n'
        "max_buffer = 50\n"
    )
    spec = servicefile.load(path, env={}).services["feed"]
    assert spec.bridge == BridgeSettings(
        servers=("nats://127.0.0.1:4222", "nats://127.0.0.1:4223"),
        stream="FEEDS",
        publish="feeds.{service}.{type}",
        publish_types=frozenset({"trade"}),
        consume=None,
        max_buffer=50,
    )
    first, second = spec.build(), spec.build()
    assert first is not second


@pytest.mark.parametrize(
    ("bridge", "field", "words"),
    [
        ({"nat": "nats://127.0.0.1:4222"}, "services.feed.bridge.nat", "did you mean 'nats'"),
        ({"nats": "http://x"}, "services.feed.bridge.nats", "nats:// URLs"),
        ({"nats": [1]}, "services.feed.bridge.nats", "nats:// URLs"),
        ({"stream": "a.b"}, "services.feed.bridge.stream", "stream name"),
        ({"publish": "bgws.{svc}"}, "services.feed.bridge.publish", "unknown placeholder"),
        ({"publish": "bgws.>"}, "services.feed.bridge.publish", "not a subject token"),
        ({"consume": "x.{type}"}, "services.feed.bridge.consume", "unknown placeholder"),
        ({"publish": "", "consume": ""}, "services.feed.bridge.publish", "neither"),
        ({"publish_types": [1]}, "services.feed.bridge.publish_types", "message types"),
        ({"max_buffer": 0}, "services.feed.bridge.max_buffer", "whole number"),
        ({"ack_timeout": -1}, "services.feed.bridge.ack_timeout", "seconds"),
    ],
)
def test_a_bad_bridge_value_is_a_config_error_naming_it(
    bridge: dict[str, Any], field: str, words: str
) -> None:
    """Every bad key or value in the table is a ConfigError whose field names it."""
    with pytest.raises(bgws.ConfigError) as caught:
        servicefile.load_mapping(table(**bridge), env={})
    assert caught.value.field == field
    assert words in caught.value.reason


def test_a_bridge_that_is_not_a_table_is_refused() -> None:
    """bridge = "x" is a ConfigError for services.<name>.bridge."""
    data = {"services": {"feed": {"url": "ws://127.0.0.1:9/", "bridge": "nats"}}}
    with pytest.raises(bgws.ConfigError) as caught:
        servicefile.load_mapping(data, env={})
    assert caught.value.field == "services.feed.bridge"


def test_bad_arguments_are_config_errors() -> None:
    """NatsBridge checks its arguments when it is made."""
    with pytest.raises(bgws.ConfigError) as caught:
        NatsBridge("nats://127.0.0.1:4222", max_in_flight=0)
    assert caught.value.field == "max_in_flight"


async def test_a_bridge_serves_one_service_and_one_holder_per_position() -> None:
    """Two bridges publishing for one resumed service refuse to start: one holds the position."""
    config = bgws.Config(
        app_name="feed", url="ws://127.0.0.1:9/", storage="memory", resume=bgws.ResumePolicy()
    )
    service = bgws.Service(config, plugins=[NatsBridge(consume=None), NatsBridge(consume=None)])
    with pytest.raises(bgws.HandlerError) as caught:
        await service.start()
    assert "already held" in str(caught.value.__cause__)
    bridge = NatsBridge()
    bgws.Service(bgws.Config(app_name="a", url="ws://127.0.0.1:9/", storage="memory"))
    used = bgws.Service(
        bgws.Config(app_name="b", url="ws://127.0.0.1:9/", storage="memory"), plugins=[bridge]
    )
    again = bgws.Service(
        bgws.Config(app_name="c", url="ws://127.0.0.1:9/", storage="memory"), plugins=[bridge]
    )
    await used.start()
    try:
        with pytest.raises(bgws.HandlerError) as caught:
            await again.start()
        assert "one service" in str(caught.value.__cause__)
    finally:
        await used.stop()
