"""Helpers for the fleet tests: a fleet service file, ``bgws run`` members, and a WebSocket
server that checks that no service is ever connected from two members at once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bgws.local import connect_local
from bgws.testing import Connection, Server

from .daemonkit import Daemon

__all__ = ["TIMEOUT", "Member", "Watch", "end_all", "fleet_file", "holdings_settle", "member_env"]

TIMEOUT = 30.0
VERBOSE = ["--verbose"] if os.environ.get("FLEET_DEBUG") else []  # debug logs of the members
FAST = {
    "heartbeat_interval": 0.5,
    "ping_timeout": 1.0,
    "initial_reconnect_delay": 0.02,
    "max_reconnect_delay": 0.2,
    "min_uptime": 0.2,
    "connect_timeout": 1.0,
    "close_timeout": 0.5,
}


def fleet_file(
    path: Path,
    *,
    nats: str,
    url: str,
    services: list[str],
    lease_ttl: float = 2.0,
    transport: str = "picows",
    name: str = "test",
    **fleet: Any,
) -> Path:
    """A service file: a ``[fleet]`` table and one service per name at ``url/<name>``."""
    lines = ["[fleet]", f"nats = {json.dumps(nats)}", f"name = {json.dumps(name)}"]
    lines.append(f"lease_ttl = {lease_ttl}")
    lines += [f"{key} = {json.dumps(value)}" for key, value in fleet.items()]
    base = url.rstrip("/")
    for service in services:
        lines += ["", f"[services.{service}]", f"url = {json.dumps(f'{base}/{service}')}"]
        lines += ['storage = "memory"', f"transport = {json.dumps(transport)}"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in FAST.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def member_env(tmp_path: Path) -> dict[str, str]:
    """The members' environment: private data and runtime dirs, no BGWS_ overrides."""
    values = {k: v for k, v in os.environ.items() if not k.startswith("BGWS_")}
    values.pop("NOTIFY_SOCKET", None)
    values.pop("JOURNAL_STREAM", None)
    (tmp_path / "run").mkdir(exist_ok=True)
    values.update(XDG_DATA_HOME=str(tmp_path / "data"), XDG_RUNTIME_DIR=str(tmp_path / "run"))
    return values


class Member(Daemon):
    """One ``bgws run`` process of the fleet, with its stderr lines and control socket."""

    timeout = TIMEOUT

    def __init__(self, process: asyncio.subprocess.Process, socket: Path) -> None:
        super().__init__(process)
        self.socket = socket

    @classmethod
    async def start(cls, file: Path, socket: Path, env: dict[str, str]) -> Member:
        """Start ``bgws run FILE --socket SOCKET`` and wait until it is ready."""
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bgws", *VERBOSE, "run", str(file), "--socket", str(socket)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        member = cls(process, socket)
        await member.wait_for("ready:")
        return member

    async def next_line(self) -> None:
        """Wait for the next stderr line (or the end of the stream)."""
        self._changed.clear()
        if not self._reading.done():
            await self._changed.wait()

    async def status(self) -> dict[str, Any]:
        """The daemon's status, over its control socket."""
        async with connect_local(self.socket, timeout=TIMEOUT) as client:
            return await client.status()

    async def held(self) -> set[str]:
        """The services this member says it holds."""
        services = (await self.status())["services"]
        return {name for name, s in services.items() if s["fleet"]["here"]}

    def kill(self) -> None:
        """SIGKILL the member."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM: a graceful stop."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)


class Watch:
    """Watches a WebSocket server: each service (its URL path) may have one open connection.

    Attributes:
        overlaps: services that were seen connected from two members at once.
        server: the server, with the check as its ``on_connect`` hook.
    """

    def __init__(self) -> None:
        self.overlaps: list[str] = []
        self.server = Server(on_connect=self._connected)

    def _connected(self, connection: Connection) -> None:
        target = connection.handshake.target
        for other in self.server.connections:
            if other is not connection and other.handshake.target == target and other.is_open:
                self.overlaps.append(target)

    def open_by_service(self) -> Counter[str]:
        """How many open connections each service (``/<name>``) has."""
        return Counter(c.handshake.target.lstrip("/") for c in self.server.open_connections)

    def links(self, services: set[str]) -> list[Connection]:
        """The open connections of ``services`` (take them before stopping their member)."""
        return [
            c for c in self.server.open_connections if c.handshake.target.lstrip("/") in services
        ]

    async def wait_closed(self, links: list[Connection]) -> None:
        """Wait until every connection of ``links`` has lost its socket."""
        await self.server.wait_until(
            lambda: all(c.is_closed for c in links), timeout=TIMEOUT, what="the links closed"
        )

    async def wait_each_once(self, services: list[str], timeout: float = TIMEOUT) -> float:
        """Wait until every service has exactly one open connection; return when (monotonic)."""

        def done() -> bool:
            counts = self.open_by_service()
            return all(counts[s] == 1 for s in services) and sum(counts.values()) == len(services)

        await self.server.wait_until(done, timeout=timeout, what="one connection per service")
        return time.monotonic()


async def end_all(members: list[Member]) -> None:
    """SIGKILL every member still running, then reap them all (a test's cleanup)."""
    for member in members:
        member.kill()
    for member in members:
        await member.finish()


async def holdings_settle(members: list[Member], expected: list[int]) -> list[set[str]]:
    """Wait until the members hold ``expected`` numbers of services (sorted), rechecking after
    every line a member logs (each claim and release logs one); return what each holds."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            waits = [asyncio.ensure_future(m.next_line()) for m in members]
            held = [await m.held() for m in members]
            if sorted(len(h) for h in held) == sorted(expected):
                for w in waits:
                    w.cancel()
                return held
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in pending:
                w.cancel()
