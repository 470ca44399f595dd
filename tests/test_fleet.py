"""A fleet of `bgws run` daemons shares services through JetStream leases (a real broker)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fleetkit import TIMEOUT, Member, Watch, fleet_file, member_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets and signals")

TRANSPORTS = ["picows", "websockets"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_each_service_runs_on_exactly_one_daemon(
    tmp_path: Path, nats_broker: Any, transport: str
) -> None:
    """Two daemons of one fleet split four services: each runs once, status names its holder."""
    services = ["s0", "s1", "s2", "s3"]
    watch = Watch()
    env = member_env(tmp_path)
    members: list[Member] = []
    async with watch.server:
        file = fleet_file(
            tmp_path / "f.toml",
            nats=nats_broker.url,
            url=watch.server.url,
            services=services,
            transport=transport,
        )
        try:
            for i in range(2):
                members.append(await Member.start(file, tmp_path / f"m{i}.sock", env))
            await watch.wait_each_once(services)
            held = [await m.held() for m in members]
            assert held[0] | held[1] == set(services)
            assert not held[0] & held[1]
            assert sorted(len(h) for h in held) == [2, 2]  # spread, not all on the first
            status = (await members[0].status())["services"]
            holders = {name: s["fleet"]["holder"] for name, s in status.items()}
            names = [m.lines for m in members]
            assert set(holders.values()) <= {_name(lines) for lines in names}
        finally:
            for m in members:
                m.kill()
            for m in members:
                await m.finish()
    assert watch.overlaps == []


def _name(lines: list[str]) -> str:
    """The member name a daemon logged when it joined."""
    for line in lines:
        if "joined as " in line:
            return line.split("joined as ")[1].split()[0]
    raise AssertionError("the daemon did not log its member name")
