"""Tests for the benchmark suite: ``python -m bench --quick`` runs end to end and reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("receive", "send", "echo", "memory", "services", "idle", "reconnect", "deadlink")
BGWS_VARIANTS = {
    "receive": {"memory", "resume"},
    "send": {"memory", "sqlite", "sqlite-acks", "sqlite-tasks"},
    "idle": {"single", "many"},
}


def test_quick_run_reports_every_workload(tmp_path: Path) -> None:
    """A --quick run exits 0 and its JSON has a measured bgws row for every workload."""
    out, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out), "--chart", str(chart)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "targets:" in done.stdout
    report = json.loads(out.read_text())
    assert report["meta"]["quick"] is True
    rows = report["rows"]
    for workload in WORKLOADS:
        measured = {
            row["variant"]
            for row in rows
            if row["workload"] == workload
            and row["client"] == "bgws"
            and row["loop"] == "asyncio"
            and row["metrics"]
        }
        assert measured >= BGWS_VARIANTS.get(workload, {""}), (workload, measured)
    for row in rows:  # every row was measured, or skipped with a reason (a missing peer)
        assert row["metrics"] or row.get("skipped"), row
        for metric in row["metrics"].values():
            assert metric["min"] <= metric["median"] <= metric["max"]
    statuses = {target["status"] for target in report["targets"]}
    assert statuses <= {"PASS", "MISS", "N/A"}
    assert any(t["target"].startswith("receive >= 0.8x") for t in report["targets"])
