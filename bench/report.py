"""Turning runs into results: medians and spread, ratios to raw picows, targets, the table, JSON.

Every row's metric is summarised by its median over the runs and its spread (min-max). Ratios
are ``value / reference`` where the reference is raw picows on the same loop; a target states
whether the ratio (or the value) must be at least or at most its limit.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from bench.common import Counts
from bench.runner import Outcome
from bench.workloads import TARGETS, WORKLOADS, Case, Metric, Target

__all__ = [
    "Row",
    "TargetResult",
    "durable_summary",
    "evaluate",
    "format_table",
    "format_targets",
    "rows_from",
    "rows_from_json",
    "write_json",
]

_BY_NAME = {w.name: w for w in WORKLOADS}


@dataclass(frozen=True, slots=True)
class Stat:
    """One metric of one row over its runs."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


@dataclass(slots=True)
class Row:
    """One case and what its runs measured."""

    case: Case
    stats: dict[str, Stat] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    skipped: str = ""

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return _BY_NAME[self.case.workload].metrics

    def to_dict(self) -> dict[str, Any]:
        case = self.case
        data: dict[str, Any] = {
            "workload": case.workload,
            "client": case.client,
            "variant": case.variant,
            "label": case.label,
            "loop": case.loop,
            "runs": max((len(s.values) for s in self.stats.values()), default=0),
            "metrics": {
                m.key: {
                    "unit": m.unit,
                    "higher_is_better": m.higher_is_better,
                    "median": s.median,
                    "min": s.low,
                    "max": s.high,
                    "values": list(s.values),
                }
                for m in self.metrics
                if (s := self.stats.get(m.key)) is not None
            },
        }
        if self.errors:
            data["errors"] = self.errors
        if self.skipped:
            data["skipped"] = self.skipped
        return data


def rows_from_json(document: dict[str, Any]) -> list[Row]:
    """The rows of a results file written by :func:`write_json`."""
    rows = []
    for data in document["rows"]:
        case = Case(data["workload"], data["client"], data["variant"], data["loop"])
        row = Row(case, errors=list(data.get("errors", [])), skipped=data.get("skipped", ""))
        for key, metric in data["metrics"].items():
            row.stats[key] = Stat(tuple(metric["values"]))
        rows.append(row)
    return rows


def rows_from(cases: Iterable[Case], outcomes: dict[str, Outcome]) -> list[Row]:
    """One row per case, in plan order."""
    rows = []
    for case in cases:
        outcome = outcomes.get(case.key, Outcome())
        row = Row(case, errors=list(outcome.errors))
        for metric in row.metrics:
            values = tuple(run[metric.key] for run in outcome.runs if metric.key in run)
            if values:
                row.stats[metric.key] = Stat(values)
        rows.append(row)
    return rows


def _find(rows: list[Row], workload: str, client: str, variant: str, loop: str) -> Row | None:
    for row in rows:
        c = row.case
        if (c.workload, c.client, c.variant, c.loop) == (workload, client, variant, loop):
            return row
    return None


def _reference(rows: list[Row], row: Row) -> Row | None:
    c = row.case
    variant = "single" if c.workload == "idle" else ""
    if c.client == "picows":
        return None
    return _find(rows, c.workload, "picows", variant, c.loop)


@dataclass(frozen=True, slots=True)
class TargetResult:
    """A target judged on one loop."""

    target: Target
    loop: str
    measured: float | None
    limit: float
    status: str
    """``PASS``, ``MISS`` or ``N/A`` (a row it needs is missing)."""
    detail: str

    @property
    def short(self) -> str:
        """The target in a few characters, e.g. ``>=0.8x picows`` or ``<=1,024``."""
        t = self.target
        op = ">=" if t.at_least else "<="
        if t.reference is not None:
            return f"{op}{self.limit:g}x {t.reference}"
        return f"{op}{_number(self.limit)}" + (" worst" if t.worst else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.text,
            "loop": self.loop,
            "measured": self.measured,
            "limit": self.limit,
            "kind": "ratio" if self.target.reference else "value",
            "status": self.status,
            "detail": self.detail,
        }


def evaluate(rows: list[Row], counts: Counts) -> list[TargetResult]:
    """Judge every target on every loop that has its bgws row."""
    results = []
    loops = list(dict.fromkeys(row.case.loop for row in rows))
    for target in TARGETS:
        for loop in loops:
            row = _find(rows, target.workload, target.client, target.variant, loop)
            if row is None:
                continue
            if target.reference and not _find(rows, target.workload, target.reference, "", loop):
                continue  # the reference is not measured on this loop (peers run on asyncio)
            results.append(_judge(target, row, rows, counts, loop))
    return results


def _judge(target: Target, row: Row, rows: list[Row], counts: Counts, loop: str) -> TargetResult:
    limit = target.limit_of(counts)
    stat = row.stats.get(target.metric)
    if stat is None:
        return TargetResult(target, loop, None, limit, "N/A", "bgws row failed")
    value = stat.high if target.worst and not target.at_least else stat.median
    unit = next(m.unit for m in row.metrics if m.key == target.metric)
    detail = f"{_number(value)} {unit}" + (" (worst run)" if target.worst else "")
    if target.reference is not None:
        ref = _find(rows, target.workload, target.reference, "", loop)
        ref_stat = ref.stats.get(target.metric) if ref is not None else None
        if ref_stat is None or ref_stat.median == 0:
            why = f"no {target.reference} measurement" + (f" ({ref.skipped})" if ref else "")
            return TargetResult(target, loop, None, limit, "N/A", why)
        detail += f" vs {_number(ref_stat.median)} {unit}"
        value = value / ref_stat.median
        detail = f"{value:.2f}x ({detail})"
    met = value >= limit if target.at_least else value <= limit
    return TargetResult(target, loop, value, limit, "PASS" if met else "MISS", detail)


def _number(value: float, decimals: int | None = None) -> str:
    if decimals is None:
        decimals = 0 if abs(value) >= 100 else 2 if abs(value) >= 1 else 4
    return f"{value:,.{decimals}f}"


def format_table(rows: list[Row], results: list[TargetResult]) -> str:
    """The one table: a line per row and metric, with the ratio to picows and the targets."""
    marks: dict[tuple[str, str, str, str, str], list[str]] = {}
    for r in results:
        t = r.target
        key = (t.workload, t.client, t.variant, r.loop, t.metric)
        marks.setdefault(key, []).append(f"{r.status} {r.short}")
    header = ("workload", "client", "loop", "unit", "median", "spread (min-max)", "vs picows")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        c = row.case
        loop = "threads" if c.client == "websocket-client" else c.loop
        ref = _reference(rows, row)
        if row.skipped or (not row.stats and row.errors):
            why = row.skipped or f"FAILED: {row.errors[0]}"
            lines.append((c.workload, c.label, loop, "", "", "", why))
            continue
        for metric in row.metrics:
            stat = row.stats.get(metric.key)
            if stat is None:
                continue
            d = metric.decimals
            ratio = ""
            ref_stat = ref.stats.get(metric.key) if ref is not None else None
            if ref_stat is not None and ref_stat.median > 0:
                ratio = f"{stat.median / ref_stat.median:.2f}x"
            mark = "; ".join(marks.get((c.workload, c.client, c.variant, c.loop, metric.key), []))
            lines.append(
                (
                    c.workload,
                    c.label,
                    loop,
                    metric.unit,
                    _number(stat.median, d),
                    f"{_number(stat.low, d)}-{_number(stat.high, d)} (n={len(stat.values)})",
                    f"{ratio:>6}  {mark}" if mark else f"{ratio:>6}",
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(6)]
    out = []
    for i, line in enumerate(lines):
        cells = [
            cell.rjust(w) if j == 4 else cell.ljust(w)
            for j, (cell, w) in enumerate(zip(line, widths, strict=False))
        ]
        out.append("  ".join([*cells, line[6]]).rstrip())
        if i == 0:
            out.append("-" * max(len(o) for o in out))
    return "\n".join(out)


def format_targets(results: list[TargetResult]) -> str:
    """One line per target and loop: PASS/MISS and the numbers."""
    if not results:
        return "targets: none measured"
    width = max(len(r.target.text) for r in results)
    lines = ["targets:"]
    for r in results:
        lines.append(f"  {r.status:4}  {r.target.text.ljust(width)}  [{r.loop}]  {r.detail}")
    return "\n".join(lines)


def durable_summary(rows: list[Row]) -> list[str]:
    """The durable-delivery numbers side by side: send by outbox kind, receive with resume."""
    lines = []
    loops = list(dict.fromkeys(row.case.loop for row in rows))
    for loop in loops:
        parts = []
        sends = []
        outboxes = (
            ("memory", "memory outbox"),
            ("sqlite", "SQLite (send_many)"),
            ("sqlite-acks", "SQLite+acks (send_many)"),
            ("sqlite-tasks", "SQLite (send() tasks)"),
        )
        for variant, name in outboxes:
            row = _find(rows, "send", "bgws", variant, loop)
            if row is not None and "rate" in row.stats:
                sends.append(f"{name} {_number(row.stats['rate'].median)}")
        if sends:
            parts.append("send msg/s: " + " | ".join(sends))
        plain = _find(rows, "receive", "bgws", "memory", loop)
        resume = _find(rows, "receive", "bgws", "resume", loop)
        if plain and resume and "rate" in plain.stats and "rate" in resume.stats:
            a, b = plain.stats["rate"].median, resume.stats["rate"].median
            parts.append(
                f"receive msg/s: {_number(a)} -> with resume checkpoints {_number(b)} "
                f"(checkpointing costs {(1 - b / a) * 100:.1f}%)"
            )
        if parts:
            lines.append(f"durable delivery [{loop}]: " + "; ".join(parts))
    return lines


def write_json(
    path: Path, meta: dict[str, Any], rows: list[Row], results: list[TargetResult]
) -> None:
    """Write every row, target and the run's settings as JSON."""
    document = {
        "meta": meta,
        "rows": [row.to_dict() for row in rows],
        "targets": [r.to_dict() for r in results],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(document), indent=2) + b"\n")
