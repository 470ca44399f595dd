"""The [fleet] table of a service file: checked, kept by `only`, built into a FleetManager
whose every claim makes a new service with its own plugins."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from bgws import Config, ConfigError, Plugin
from bgws.daemon import format_status
from bgws.fleet import FleetManager, fresh_factory
from bgws.fleet_config import load_fleet
from bgws.servicefile import load, load_mapping

GOOD = {"nats": "nats://127.0.0.1:4222", "name": "feeds", "lease_ttl": 10}
SERVICES = {
    "a": {"url": "ws://127.0.0.1:9/a", "storage": "memory"},
    "b": {"url": "ws://127.0.0.1:9/b", "storage": "memory"},
}


def test_a_fleet_table_gets_its_defaults() -> None:
    """renew_interval defaults to lease_ttl/4, member to host-pid, the bucket is named."""
    fleet = load_fleet(GOOD)
    assert fleet.servers == ("nats://127.0.0.1:4222",)
    assert fleet.renew_interval == 2.5
    assert fleet.fence_after == 7.5
    assert fleet.bucket == "bgws_fleet_feeds"
    assert fleet.member.endswith(f"-{__import__('os').getpid()}")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"nats": None}, "fleet.nats"),
        ({"nats": "http://127.0.0.1:4222"}, "fleet.nats"),
        ({"nats": ["nats://127.0.0.1:x"]}, "fleet.nats"),
        ({"nats": []}, "fleet.nats"),
        ({"name": "has space"}, "fleet.name"),
        ({"name": "a.b"}, "fleet.name"),
        ({"lease_ttl": 0.5}, "fleet.lease_ttl"),
        ({"lease_ttl": "10s"}, "fleet.lease_ttl"),
        ({"lease_ttl": True}, "fleet.lease_ttl"),
        ({"lease_ttl": float("nan")}, "fleet.lease_ttl"),
        ({"renew_interval": 5}, "fleet.renew_interval"),
        ({"member": "a/b"}, "fleet.member"),
        ({"leasettl": 3}, "fleet.leasettl"),
    ],
)
def test_a_wrong_fleet_value_is_a_config_error_naming_it(
    change: dict[str, Any], field: str
) -> None:
    """Every key is checked; the error's field is fleet.<key>."""
    table = {**GOOD, **change}
    if change.get("nats", "") is None:
        del table["nats"]
    with pytest.raises(ConfigError) as caught:
        load_fleet(table)
    assert caught.value.field == field


def test_a_service_file_with_a_fleet_builds_a_fleet_manager(tmp_path: Path) -> None:
    """`bgws run` on a file with [fleet] runs a FleetManager; `only` keeps the fleet."""
    path = tmp_path / "f.toml"
    path.write_text(
        '[fleet]\nnats = "nats://u:sekret@127.0.0.1:4222"\nname = "x"\nlease_ttl = 4\n'
        'member = "m1"\n\n[services.a]\nurl = "ws://127.0.0.1:9/a"\nstorage = "memory"\n'
        '\n[services.b]\nurl = "ws://127.0.0.1:9/b"\nstorage = "memory"\n'
    )
    loaded = load(path)
    assert loaded.fleet is not None
    assert loaded.fleet.member == "m1"
    assert loaded.fleet.secret_values() == ["u", "sekret"]
    manager = loaded.only(["b"]).build_manager()
    assert isinstance(manager, FleetManager)
    assert manager.names == ["b"]
    assert manager.held == []
    status = manager.status()["b"].to_dict()
    assert status["fleet"] == {"name": "x", "member": "m1", "holder": None, "here": False}
    assert "held by     nobody yet (fleet x)" in format_status({"services": {"b": status}})


def test_a_wrong_fleet_table_in_a_service_file_names_the_key() -> None:
    """A [fleet] error is raised when the file is checked, before anything starts."""
    with pytest.raises(ConfigError) as caught:
        load_mapping({"fleet": {**GOOD, "lease_ttl": -1}, "services": SERVICES})
    assert caught.value.field == "fleet.lease_ttl"
    with pytest.raises(ConfigError) as caught:
        load_mapping({"fleet": "nats://x", "services": SERVICES})
    assert caught.value.field == "fleet"


def test_status_says_which_member_holds_a_service() -> None:
    """`bgws status` shows the holder, and marks the services this daemon runs."""
    base = {
        "state": "CONNECTED",
        "url": "ws://x",
        "error": None,
        "stats": {
            "connected_since": None,
            "uptime": 0.0,
            "queued": 0,
            "in_flight": 0,
            "reconnects": 0,
            "sent": 0,
            "received": 0,
            "dropped": 0,
            "expired": 0,
            "last_error": None,
        },
    }
    here = {**base, "fleet": {"name": "f", "member": "m1", "holder": "m1", "here": True}}
    there = {**base, "fleet": {"name": "f", "member": "m1", "holder": "m2", "here": False}}
    text = format_status({"services": {"a": here, "b": there}})
    assert "held by     m1 (this daemon)" in text
    assert "held by     m2\n" in text


class Counting(Plugin):
    """A plugin that records the services it was initialized for."""

    def __init__(self) -> None:
        self.started: list[int] = []

    def initialize(self) -> None:
        self.started.append(1)


class Locked(Counting):
    """A plugin that cannot be copied (it holds a lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


async def test_each_claim_gets_its_own_copy_of_the_plugins() -> None:
    """A fleet service started twice (claimed, handed over, claimed) never reuses a plugin;
    one that cannot be copied is shared, as outside a fleet."""
    config = Config(url="ws://127.0.0.1:9/a", storage="memory", app_name="a")
    original = Counting()
    make = fresh_factory(config, None, [original])
    for _ in range(2):
        service = make()
        await service.start()
        await service.stop()
    assert original.started == []  # the file's own instance is only a template
    shared = Locked()
    make = fresh_factory(config, None, [shared])
    for _ in range(2):
        service = make()
        await service.start()
        await service.stop()
    assert shared.started == [1, 1]
