"""The examples run: each ends by itself, exits 0 and prints what happened."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bgws

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

EXPECTED = {
    "chat.py": ["bot: you said: hello", "offline: 2 messages queued", "reconnects 1"],
    "gaming.py": [
        "joined arena-7 with 4 players",
        "10 moves accepted, now at x=10",
        "RequestTimeout",
    ],
    "iot.py": [
        "readings 1-3 acknowledged",
        "uplink down: 3 readings kept on disk",
        "done: server got readings [1, 2, 3, 4, 5, 6, 7], 0 duplicates",
    ],
    "trading.py": ["order_update overtook", "feed dead after", "1 dead link, 1000 ticks"],
    "sync_thread.py": ["received: hello, ann", "whoami: ann", "stopped: closed"],
}

# Lines whose numbers matter: the order update really overtook ticks that were waiting.
PATTERNS = {"trading.py": r"order_update overtook [1-9][0-9]* waiting ticks"}


def run_example(name: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run one example as a program, with its data directory in tmp_path."""
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=tmp_path,
        check=False,
    )


def test_every_example_is_tested() -> None:
    """Each program in examples/ has expectations here."""
    assert {p.name for p in EXAMPLES.glob("*.py")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - {"sync_thread.py"}))
def test_example_runs(name: str, tmp_path: Path) -> None:
    """The example exits 0 and prints its key lines."""
    done = run_example(name, tmp_path)
    assert done.returncode == 0, done.stderr
    for line in EXPECTED[name]:
        assert line in done.stdout, (line, done.stdout)
    if name in PATTERNS:
        assert re.search(PATTERNS[name], done.stdout), done.stdout


@pytest.mark.skipif(
    not hasattr(bgws.Service, "start_in_thread"), reason="Service.start_in_thread not there yet"
)
def test_sync_thread_example_runs(tmp_path: Path) -> None:
    """The synchronous example exits 0 and prints its key lines."""
    done = run_example("sync_thread.py", tmp_path)
    assert done.returncode == 0, done.stderr
    for line in EXPECTED["sync_thread.py"]:
        assert line in done.stdout, (line, done.stdout)
