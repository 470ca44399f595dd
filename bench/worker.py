"""One client run in its own process: ``python -m bench.worker '<job as JSON>'``.

A fresh interpreter per run keeps clients from disturbing each other (imports, garbage, memory
readings). The worker prints one line ``RESULT {"ok": true, "metrics": {...}}`` (or
``{"ok": false, "error": "..."}``) and exits without tearing down what it holds: open
connections are closed by the OS, which is not part of any measurement.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
import traceback
from typing import Any, NoReturn

import msgspec

from bench.common import Job, Metrics, install_loop
from bench.server import raise_fd_limit

__all__ = ["MODULES", "main", "report", "run"]

MODULES = {
    "bgws": "bench.clients_bgws",
    "picows": "bench.clients_picows",
    "aiohttp": "bench.clients_aiohttp",
    "websockets": "bench.clients_websockets",
    "websocket-client": "bench.clients_wsclient",
}
"""Client name to the module whose ``WORKLOADS`` maps workload names to functions."""


def run(job: Job) -> None:
    """Run one job in this process, report its metrics and exit (see :func:`report`)."""
    module = importlib.import_module(MODULES[job.client])
    func: Any = module.WORKLOADS[job.workload]
    if not inspect.iscoroutinefunction(func):
        report({"ok": True, "metrics": func(job)})
    install_loop(job.loop)

    async def bounded() -> None:
        async with asyncio.timeout(job.deadline):
            metrics: Metrics = await func(job)
        report({"ok": True, "metrics": metrics})  # from inside the loop: no teardown

    asyncio.run(bounded())


def report(outcome: dict[str, Any]) -> NoReturn:
    """Print the result line and leave at once, without closing what the run holds."""
    sys.stdout.write("RESULT " + msgspec.json.encode(outcome).decode() + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """Run the job given as JSON in ``argv[0]``; print its result line."""
    args = sys.argv[1:] if argv is None else argv
    raise_fd_limit()
    try:
        run(Job.from_json(args[0]))
    except BaseException as exc:  # reported to the runner, which carries on
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        if isinstance(exc, TimeoutError):
            detail = "timed out (the job's deadline passed)"
        traceback.print_exc(file=sys.stderr)
        report({"ok": False, "error": detail})
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
