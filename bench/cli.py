"""The command line: ``python -m bench [--quick] [--runs N] [--only W] [--styles S] ...``.

Starts the server, runs the plan, prints the table (with ratios and PASS/MISS per target) and
writes the JSON and the PNG chart (``docs/benchmarks.json`` and ``docs/benchmarks.png`` by
default; a ``--quick`` run writes only where ``--json`` / ``--chart`` say).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from bench.chart import write_chart
from bench.common import FULL, QUICK, Counts, Job, uvloop_available
from bench.report import (
    Row,
    durable_summary,
    evaluate,
    format_table,
    format_targets,
    rows_from,
    rows_from_json,
    write_json,
)
from bench.runner import ROOT, Outcome, Server, deadline_for, run_cases
from bench.styles import STYLES
from bench.workloads import CLIENTS, PEERS, WORKLOAD_NAMES, WORKLOADS, Case, plan

__all__ = ["INSTALL_HINT", "main"]

INSTALL_HINT = "pip install -r bench/requirements.txt"
"""How to install the peers (and matplotlib for the chart); bgws itself is installed already."""

_DOCS = ROOT / "docs"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark bgws against raw picows, aiohttp, websockets and "
        "websocket-client on loopback. Peers that are not installed are skipped "
        f"({INSTALL_HINT}).",
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts, one run (CI)")
    parser.add_argument("--runs", type=int, default=None, help="runs per row (default 5)")
    parser.add_argument(
        "--only",
        action="append",
        default=None,
        metavar="WORKLOAD",
        help=f"run only these workloads (repeat or comma-separate): {', '.join(WORKLOAD_NAMES)}",
    )
    parser.add_argument(
        "--clients",
        nargs="+",
        default=None,
        metavar="CLIENT",
        help=f"run only these clients: {', '.join(CLIENTS)}",
    )
    parser.add_argument(
        "--styles",
        action="append",
        default=None,
        metavar="STYLE",
        help="measure only these handler styles in the receive, send and echo rows "
        f"(repeat or comma-separate): {', '.join(STYLES)}",
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    parser.add_argument("--chart", type=Path, default=None, help="where to write the PNG chart")
    parser.add_argument(
        "--replot",
        type=Path,
        default=None,
        metavar="JSON",
        help="measure nothing: print the table of a results file and redraw its chart",
    )
    parser.add_argument(
        "--uvloop",
        choices=("auto", "off"),
        default="auto",
        help="also measure bgws and picows on uvloop when it is importable (default: auto)",
    )
    return parser


def _split(values: list[str] | None, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    if not values:
        return known
    picked = tuple(v.strip() for value in values for v in value.split(",") if v.strip())
    unknown = [v for v in picked if v not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return picked


def _installed(client: str) -> bool:
    module = PEERS.get(client)
    return module is None or importlib.util.find_spec(module) is not None


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _engine() -> dict[str, Any]:
    """The commit measured, and the engine files changed since (a run documents its code)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.rstrip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "src")
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip() or None,
        "changed_files": [line[3:] for line in changed.splitlines()],
    }


def _load() -> list[float]:
    """The 1, 5 and 15 minute load averages (other work on the machine skews the numbers)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _meta(args: argparse.Namespace, counts: Counts, runs: int, loops: list[str]) -> dict[str, Any]:
    packages = ("bgws", "picows", "msgspec", "aiohttp", "websockets", "websocket-client", "uvloop")
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "quick": bool(args.quick),
        "runs": runs,
        "loops": loops,
        "server_loop": "uvloop" if "uvloop" in loops else "asyncio",
        "counts": counts.to_dict(),
        "versions": {name: _version(name) for name in packages},
        "load_average_at_end": _load(),
        "engine": _engine(),
        "command": "python -m bench " + " ".join(sys.argv[1:]),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0, or 1 when a bgws or picows row could not be measured."""
    args = _parser().parse_args(argv)
    if args.replot is not None:
        return _replot(args)
    workloads = _split(args.only, WORKLOAD_NAMES, "workload")
    clients = _split(args.clients, CLIENTS, "client")
    styles = _split(args.styles, STYLES, "style")
    counts = QUICK if args.quick else FULL
    runs = max(1, args.runs if args.runs is not None else (1 if args.quick else 5))
    with_uvloop = args.uvloop == "auto" and uvloop_available()
    loops = ["asyncio", "uvloop"] if with_uvloop else ["asyncio"]
    cases = plan(workloads, clients, uvloop=with_uvloop, styles=styles)
    missing = sorted({c.client for c in cases if not _installed(c.client)})
    notes = [f"{name} is not installed: skipped ({INSTALL_HINT})" for name in missing]
    if not with_uvloop:
        why = "--uvloop off" if args.uvloop == "off" else "uvloop is not importable"
        notes.append(f"asyncio loop only ({why}; pip install uvloop to compare)")
    print(
        f"bgws benchmark: {len(cases)} rows, up to {runs} runs each, "
        f"{'quick counts' if args.quick else 'full counts'}; loops: {', '.join(loops)}",
        flush=True,
    )
    started = time.monotonic()
    load = _load()
    if load and load[0] > 0.5:
        notes.append(
            f"the machine was busy when the run started (load average {load[0]:.2f}): "
            "other processes share the cores, so expect wider spreads"
        )
    outcomes = _measure(cases, missing, counts, runs, args.quick, server_loop=loops[-1])
    rows = rows_from(cases, outcomes)
    for row in rows:
        if row.case.client in missing:
            row.skipped = f"skipped: {row.case.client} not installed ({INSTALL_HINT})"
    results = evaluate(rows, counts)
    print()
    print(format_table(rows, results))
    print()
    print(format_targets(results))
    for line in durable_summary(rows):
        print(line)
    for note in notes:
        print(f"note: {note}")
    elapsed = time.monotonic() - started
    print(f"took {elapsed:.0f}s on {os.cpu_count()} cores ({_cpu_model()})")
    meta = _meta(args, counts, runs, loops) | {"load_average_at_start": load, "notes": notes}
    _write(args, meta, rows, results)
    return 1 if _failed(rows) else 0


def _replot(args: argparse.Namespace) -> int:
    """Print the table of a saved run and redraw its chart (``--chart``, or beside the JSON)."""
    document = msgspec.json.decode(args.replot.read_bytes())
    meta = document["meta"]
    rows = rows_from_json(document)
    results = evaluate(rows, Counts(**meta["counts"]))
    print(format_table(rows, results))
    print()
    print(format_targets(results))
    for line in durable_summary(rows):
        print(line)
    chart = args.chart or args.replot.with_suffix(".png")
    title = f"bgws benchmarks ({meta['cores']} cores, Python {meta['python']})"
    why = write_chart(chart, rows, title)
    print(f"chart skipped: {why}" if why else f"wrote {chart}")
    return 0


def _measure(
    cases: list[Case],
    missing: list[str],
    counts: Counts,
    runs: int,
    quick: bool,
    *,
    server_loop: str,
) -> dict[str, Outcome]:
    by_name = {w.name: w for w in WORKLOADS}
    outcomes: dict[str, Outcome] = {}

    def progress(line: str) -> None:
        print(f"  {line}", flush=True)

    with Server(counts.receive, server_loop) as server:
        sequential: list[tuple[str, Job, int]] = []
        together: list[tuple[str, Job, int]] = []
        for case in cases:
            if case.client in missing:
                continue
            workload = by_name[case.workload]
            job = Job(
                workload=case.workload,
                client=case.client,
                variant=case.variant,
                loop=case.loop,
                base=server.base,
                counts=counts,
                deadline=deadline_for(case.workload, counts, quick),
            )
            n = min(runs, workload.max_runs or runs)
            (together if case.workload == "idle" else sequential).append((case.key, job, n))
        # Restarting the server goes last: nothing else runs while it is away.
        sequential.sort(key=lambda item: item[1].workload == "reconnect")
        outcomes.update(run_cases(sequential, progress=progress))
        if together:
            progress(f"idle: {len(together)} rows side by side for {counts.idle_seconds:g}s")
            outcomes.update(run_cases(together, concurrent=True, progress=progress))
    return outcomes


def _write(
    args: argparse.Namespace, meta: dict[str, Any], rows: list[Row], results: list[Any]
) -> None:
    json_path: Path | None = args.json or (None if args.quick else _DOCS / "benchmarks.json")
    chart_path: Path | None = args.chart or (None if args.quick else _DOCS / "benchmarks.png")
    if json_path is not None:
        write_json(json_path, meta, rows, results)
        print(f"wrote {json_path}")
    if chart_path is not None:
        title = f"bgws benchmarks ({meta['cores']} cores, Python {meta['python']})"
        why = write_chart(chart_path, rows, title)
        print(f"chart skipped: {why}" if why else f"wrote {chart_path}")
    if args.quick and (args.json is None or args.chart is None):
        print("note: a --quick run leaves docs/ alone; pass --json/--chart to write its results")


def _failed(rows: list[Row]) -> bool:
    """Whether a row of bgws' own stack (bgws or raw picows) has no successful run."""
    return any(
        row.case.client in ("bgws", "picows") and not row.stats and not row.skipped for row in rows
    )
