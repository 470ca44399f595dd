"""Tests for the benchmark suite: ``python -m bench --quick`` runs end to end and reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench.cli import main
from bench.styles import STYLES, style_variants
from bench.workloads import CLIENTS, TARGETS, plan

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("receive", "send", "echo", "memory", "services", "idle", "reconnect", "deadlink")
BGWS_VARIANTS = {
    "receive": {"resume", *style_variants("receive")},
    "send": {"sqlite", "sqlite-acks", "sqlite-tasks", *style_variants("send")},
    "echo": set(style_variants("echo")),
    "idle": {"single", "many"},
    "services": {"", "sqlite"},
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
    judged = {(t["target"], t["loop"]) for t in report["targets"] if t["loop"] == "asyncio"}
    assert {(t.text, "asyncio") for t in TARGETS if t.workload in WORKLOADS} <= judged


def test_every_style_has_receive_send_and_both_echo_rows() -> None:
    """Each documented handler style gets receive, send and request/send+handler echo rows."""
    cases = plan(("receive", "send", "echo"), CLIENTS, uvloop=False)
    styles = {(c.workload, c.style, c.label) for c in cases if c.style is not None}
    for style in STYLES:
        for workload in ("receive", "send"):
            assert sum(1 for w, s, _ in styles if (w, s) == (workload, style)) == 1
        echoes = {label for w, s, label in styles if (w, s) == ("echo", style)}
        assert [label.startswith("bgws (request") for label in sorted(echoes)] == [True, False]
    keys = [c.key for c in cases]
    assert len(keys) == len(set(keys))


def test_styles_option_picks_style_rows_only() -> None:
    """--styles keeps the other bgws rows and the peers, and drops the styles not picked."""
    every = plan(("receive", "echo"), CLIENTS, uvloop=False)
    picked = plan(("receive", "echo"), CLIENTS, uvloop=False, styles=("async",))
    assert {c.style for c in picked} == {None, "async"}
    assert [c for c in every if c.style is None] == [c for c in picked if c.style is None]
    assert {c.variant for c in picked if c.style} == {"async", "handler-async"}


def test_unknown_style_is_refused() -> None:
    """An unknown --styles name stops the run at once with the known names."""
    with pytest.raises(SystemExit, match="unknown style: nope"):
        main(["--styles", "def,nope", "--quick"])
