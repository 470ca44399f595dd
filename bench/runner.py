"""Running the plan: one server process, one worker process per client run.

The server is started once and shared by every run. Each run is a fresh worker process
(:mod:`bench.worker`), never alongside another measurement (except the ``idle`` rows, which
measure CPU that is nearly zero and run side by side to save a minute each). Within a
workload the runs go round robin over its rows, so a busy spell on a shared machine costs one
run of several rows rather than every run of one row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from bench.common import Counts, Job, Metrics

__all__ = ["Outcome", "Server", "deadline_for", "run_cases"]

ROOT = Path(__file__).resolve().parent.parent
"""The folder that holds the ``bench`` package (workers run from there)."""

_RESULT = "RESULT "


@dataclass(slots=True)
class Outcome:
    """Every run of one case: the metrics of those that worked, the errors of the others."""

    runs: list[Metrics] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Server:
    """The benchmark server as a child process (see :mod:`bench.server`).

    Args:
        firehose: the firehose length to pre-build.
        loop: the server's event loop (the fastest available: it should never be the limit).
    """

    def __init__(self, firehose: int, loop: str) -> None:
        self.port = 0
        self._process: subprocess.Popen[str] | None = None
        self._command = [
            sys.executable,
            "-m",
            "bench.server",
            "--port",
            "0",
            "--firehose",
            str(firehose),
            "--loop",
            loop,
        ]

    @property
    def base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        process = self._process = subprocess.Popen(
            self._command,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else ""
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"the benchmark server did not start (said {line!r})")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def deadline_for(workload: str, counts: Counts, quick: bool) -> float:
    """Seconds one run of ``workload`` may take (generous: a run that passes it failed)."""
    if workload == "idle":
        return counts.idle_seconds + (30 if quick else 120)
    if quick:
        return 30.0
    return {"services": 600.0, "memory": 240.0, "reconnect": 30.0, "deadlink": 30.0}.get(
        workload, 180.0
    )


def _spawn(job: Job) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.worker", job.to_json()],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _collect(process: subprocess.Popen[str], timeout: float) -> tuple[Metrics | None, str]:
    """Wait for a worker; its metrics, or ``None`` and why."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return None, f"worker killed after {timeout:.0f}s"
    for line in reversed(out.splitlines()):
        if line.startswith(_RESULT):
            result = msgspec.json.decode(line[len(_RESULT) :])
            if result["ok"]:
                return {k: float(v) for k, v in result["metrics"].items()}, ""
            return None, str(result["error"])
    tail = err.strip().splitlines()[-1:] or [f"exit code {process.returncode}"]
    return None, f"worker gave no result: {tail[0]}"


@contextlib.contextmanager
def _scratch() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bgws-bench-") as folder:
        yield folder


def run_cases(
    jobs: list[tuple[str, Job, int]],
    *,
    concurrent: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Outcome]:
    """Run each ``(key, job, runs)``: one at a time, or all at once when ``concurrent``.

    Returns:
        The outcome of each key.
    """
    outcomes = {key: Outcome() for key, _, _ in jobs}
    if concurrent:
        with contextlib.ExitStack() as stack:
            started = []
            for key, job, _ in jobs:
                folder = stack.enter_context(_scratch())
                started.append((key, job, _spawn(_with_scratch(job, folder))))
            for key, job, process in started:
                metrics, error = _collect(process, job.deadline + 60)
                _record(outcomes[key], metrics, error)
                progress(f"{key}: {_show(metrics, error)}")
        return outcomes
    # Round robin within a workload (run 1 of every row, then run 2, ...): a busy spell on a
    # shared machine then slows one run of several rows, not every run of one row.
    rounds = max((runs for _, _, runs in jobs), default=0)
    for workload in dict.fromkeys(job.workload for _, job, _ in jobs):
        group = [item for item in jobs if item[1].workload == workload]
        for i in range(rounds):
            for key, job, runs in group:
                if i >= runs:
                    continue
                with _scratch() as folder:
                    process = _spawn(_with_scratch(job, folder))
                    metrics, error = _collect(process, job.deadline + 60)
                _record(outcomes[key], metrics, error)
                progress(f"{key} run {i + 1}/{runs}: {_show(metrics, error)}")
    return outcomes


def _with_scratch(job: Job, folder: str) -> Job:
    return dataclasses.replace(job, scratch=os.fspath(folder))


def _record(outcome: Outcome, metrics: Metrics | None, error: str) -> None:
    if metrics is None:
        outcome.errors.append(error)
    else:
        outcome.runs.append(metrics)


def _show(metrics: Metrics | None, error: str) -> str:
    if metrics is None:
        return f"FAILED: {error}"
    return ", ".join(f"{k}={v:,.2f}" for k, v in metrics.items())
