"""examples/fleet runs: a local fleet starts, survives a SIGKILL, hands over on a stop."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.natsbroker import nats_server_binary

FLEET = Path(__file__).resolve().parents[1] / "examples" / "fleet"

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets and signals"),
    pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed"),
]


def test_the_fleet_example_runs(tmp_path: Path) -> None:
    """run_fleet.py: six services on three daemons, moved after a SIGKILL and a stop."""
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, str(FLEET / "run_fleet.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "3 daemons share 6 services:" in out
    assert len(re.findall(r"feed-\d runs on \S+", out)) == 6
    moved = re.search(r"daemon 0 killed: its services moved in ([\d.]+)s", out)
    assert moved is not None, out
    assert float(moved.group(1)) < 2.0 + 0.5 + 2.0  # lease_ttl + one renewal, plus slack
    assert "daemon 1 stopped: its services were handed over in" in out
    assert re.search(r"now every service runs on \S+\n", out), out
    assert out.rstrip().endswith("fleet stopped")


def test_the_fleet_sample_service_file_is_valid(tmp_path: Path) -> None:
    """examples/fleet/services.toml passes `bgws run --check`."""
    done = subprocess.run(
        [sys.executable, "-m", "bgws", "run", "--check", str(FLEET / "services.toml")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "OK (prices, news, weather)" in done.stdout


def test_the_failover_bench_runs_and_stays_within_the_bound() -> None:
    """bench/fleet_failover.py, one SIGKILL at lease_ttl 1 s: it reports a failover in bound."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.fleet_failover", "--ttl", "1", "--trials", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = re.search(r"lease_ttl 1s \(bound 1.25s\): failover min ([\d.]+)s", done.stdout)
    assert found is not None, done.stdout
    assert float(found.group(1)) < 1.25 + 1.0  # the bound, plus 1 s for a loaded machine
