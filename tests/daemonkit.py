"""A ``bgws run`` daemon as a real process for the tests: its environment, its stderr lines.

The ``env`` and ``daemons`` fixtures (in ``tests/conftest.py``) build on :class:`Daemon`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

__all__ = ["TIMEOUT", "Daemon", "daemon_env", "start_daemons"]

TIMEOUT = 20.0
"""Seconds a daemon test waits for a line, a status or the end of a process."""


def daemon_env(tmp_path: Path) -> dict[str, str]:
    """The subprocesses' environment: data and runtime dirs in tmp_path, nothing inherited
    that would change where the socket is or how logs look."""
    values = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BGWS_") and k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET")
    }
    (tmp_path / "run").mkdir(exist_ok=True)
    values.update(XDG_DATA_HOME=str(tmp_path / "data"), XDG_RUNTIME_DIR=str(tmp_path / "run"))
    return values


class Daemon:
    """A ``bgws run`` process whose stderr lines are collected as they come."""

    timeout = TIMEOUT
    """How long a wait for a line, or for the end, may take."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.lines.append(line.decode().rstrip("\n"))
            self._changed.set()
        self._changed.set()

    async def wait_for(self, text: str, count: int = 1) -> str:
        """Wait until ``count`` stderr lines contain ``text``; return the last one."""
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    found = [line for line in self.lines if text in line]
                    if len(found) >= count:
                        return found[count - 1]
                    if self._reading.done():
                        break
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pass
        raise AssertionError(f"no line with {text!r} in:\n" + "\n".join(self.lines))

    async def finish(self) -> int:
        async with asyncio.timeout(self.timeout):
            code = await self.process.wait()
            await self._reading
        return code


async def start_daemons(
    env: dict[str, str],
) -> AsyncIterator[Callable[..., Coroutine[Any, Any, Daemon]]]:
    """Start ``bgws run TOML [OPTIONS]`` processes; any still running at the end is killed."""
    started: list[Daemon] = []

    async def start(toml: Path, *options: Any) -> Daemon:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bgws", "run", str(toml), *map(str, options)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        daemon = Daemon(process)
        started.append(daemon)
        await daemon.wait_for("ready:")
        return daemon

    yield start
    for daemon in started:
        if daemon.process.returncode is None:
            daemon.process.kill()
        await daemon.finish()
