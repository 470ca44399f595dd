"""The standalone server, ``python -m bgws.testing.serve``: a real subprocess, and its parts."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from picows import WSMsgType

from bgws.testing import Server
from bgws.testing.serve import (
    RandomDrops,
    build_parser,
    dump_records,
    parse_ready,
    read_dump,
    write_dump,
)

from ._client import connect

STARTUP = 10.0
"""Seconds a subprocess may take to print its port (interpreter start and imports)."""


class Process:
    """A running ``python -m bgws.testing.serve``."""

    def __init__(self, process: asyncio.subprocess.Process, first: bytes) -> None:
        self.process = process
        self.first = first.decode().strip()
        self.port = port = parse_ready(first)
        self.url = f"ws://127.0.0.1:{port}/"

    async def command(self, line: str) -> str:
        """Send one command on stdin and return the line it answers."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()
        answer = await asyncio.wait_for(self.process.stdout.readline(), 5)
        return answer.decode().strip()

    async def wait(self) -> int:
        return await asyncio.wait_for(self.process.wait(), 5)


@contextlib.asynccontextmanager
async def serve(*args: str) -> AsyncIterator[Process]:
    """Start the standalone server; kill it if it is still running at the end."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bgws.testing.serve",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = await asyncio.wait_for(process.stdout.readline(), STARTUP)
        yield Process(process, first)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_serve_prints_port_acks_and_dumps_on_sigterm(tmp_path: Path) -> None:
    """The subprocess prints its port, acks ids and writes every message to the dump on SIGTERM."""
    dump = tmp_path / "received.jsonl"
    async with serve("--ack", "--dump", str(dump)) as server:
        assert server.port > 0
        async with connect(server.url) as client:
            client.send_json({"id": 1, "n": "a"}, {"id": 2}, {"id": 1, "n": "again"})
            client.send_text("plain")
            client.transport.send(WSMsgType.BINARY, b"\xff")
            acks = await client.wait_json(3)
            assert acks == [{"type": "ack", "id": i} for i in (1, 2, 1)]
            server.process.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
    messages, connections = read_dump(dump)
    assert [m["id"] for m in messages] == [1, 2, 1, None, None]
    assert [m["duplicate"] for m in messages] == [False, False, True, False, False]
    assert messages[2]["data"] == {"id": 1, "n": "again"}
    assert [(m["kind"], m["binary"]) for m in messages[3:]] == [("text", False), ("binary", True)]
    assert (messages[3]["data"], messages[4]["data"]) == ("plain", "/w==")
    (connection,) = connections
    assert (connection["acked"], connection["duplicates"]) == ([1, 2, 1], [1])


async def test_serve_drops_at_random_within_bounds(tmp_path: Path) -> None:
    """--drop-chance drops links after messages, at most --max-drops times; report dumps."""
    dump = tmp_path / "received.jsonl"
    args = ("--ack", "--drop-chance", "1", "--max-drops", "2", "--seed", "3", "--dump", str(dump))
    async with serve(*args) as server:
        for n in range(2):
            async with connect(server.url) as client:
                client.send_json({"id": n})
                await client.wait_disconnected()
        async with connect(server.url) as client:
            client.send_json({"id": 2})
            assert await client.wait_json(1) == [{"type": "ack", "id": 2}]  # received, not dropped
            assert await server.command("report") == "dumped 3"
            assert await server.command("drop") == "dropped 1"
            await client.wait_disconnected()
        assert await server.command("nonsense") == "error: unknown command 'nonsense'"
        assert await server.command("stop") == "stopping"
        assert await server.wait() == 0
    messages, connections = read_dump(dump)
    assert [(m["connection"], m["id"]) for m in messages] == [(1, 0), (2, 1), (3, 2)]
    assert [c["close_code"] for c in connections] == [None, None, None]


async def test_serve_timed_drops_publish_and_resume() -> None:
    """--drop-every drops open links on its own; publish and resume work over stdin."""
    async with serve("--drop-every", "0.02", "--max-drops", "1") as server:
        async with connect(server.url) as client:
            await client.wait_disconnected()
        assert await server.command('publish {"type": "tick"}') == "published 1"
        assert (await server.command("publish [1]")).startswith("error: only a mapping")
        assert (await server.command("publish {")).startswith("error: ")
        async with connect(server.url) as client:
            client.send_json({"type": "resume", "after": 0})
            assert await client.wait_json(1) == [{"type": "tick", "seq": 1}]
        assert await server.command("report") == "error: no --dump file"
        server.process.send_signal(signal.SIGTERM)
        assert await server.wait() == 0


def test_random_drops_are_seeded_and_bounded() -> None:
    """The same seed gives the same drops; never more than max_drops; intervals vary."""
    first = RandomDrops(chance=0.5, max_drops=3, seed=7)
    second = RandomDrops(chance=0.5, max_drops=3, seed=7)
    rolls = [first.after_message() for _ in range(50)]
    assert rolls == [second.after_message() for _ in range(50)]
    assert rolls.count(True) == 3
    assert first.exhausted
    timed = RandomDrops(every=1.0, max_drops=1)
    interval = timed.next_interval()
    assert interval is not None
    assert 0.5 <= interval <= 1.5
    timed.done = 1
    assert timed.next_interval() is None
    assert RandomDrops().after_message() is False
    with pytest.raises(ValueError, match="chance"):
        RandomDrops(chance=2)
    with pytest.raises(ValueError, match="every"):
        RandomDrops(every=0)
    with pytest.raises(ValueError, match="max_drops"):
        RandomDrops(max_drops=-1)


def test_parser_defaults() -> None:
    """Without options the server takes a free port, acks nothing and never drops."""
    args = build_parser().parse_args([])
    assert (args.port, args.ack, args.drop_chance, args.drop_every) == (0, False, 0.0, None)
    assert (args.max_drops, args.seed, args.dump, args.id_field) == (10, 0, None, "id")


async def test_dump_records_and_read_dump(tmp_path: Path) -> None:
    """write_dump writes message records then connection records; read_dump splits them."""
    async with Server(id_field="key") as server, connect(server.url) as client:
        client.send_json({"key": "k"}, {"key": "k"})
        await server.wait_for_messages(2)
        records = dump_records(server)
        assert [r["record"] for r in records] == ["message", "message", "connection"]
        path = tmp_path / "dump.jsonl"
        assert write_dump(server, path) == 2
    assert [msgspec.json.decode(line)["record"] for line in path.read_bytes().splitlines()] == [
        "message",
        "message",
        "connection",
    ]
    messages, connections = read_dump(path)
    assert [m["duplicate"] for m in messages] == [False, True]
    assert connections[0]["ids"] == ["k", "k"]


async def test_serve_first_line_says_where_it_serves(tmp_path: Path) -> None:
    """The first line is `serving ws://127.0.0.1:PORT/ (...)`, naming the dump file."""
    dump = tmp_path / "d.jsonl"
    async with serve("--dump", str(dump)) as server:
        assert server.first.startswith(f"serving ws://127.0.0.1:{server.port}/ (")
        assert str(dump) in server.first
        assert await server.command("stop") == "stopping"
        assert await server.wait() == 0


async def test_serve_dump_grows_as_messages_arrive(tmp_path: Path) -> None:
    """Each message is in the dump file (flushed) before the server exits, even if killed."""
    dump = tmp_path / "d.jsonl"
    async with serve("--ack", "--dump", str(dump)) as server, connect(server.url) as client:
        client.send_json({"id": "a"}, {"id": "b"})
        assert len(await client.wait_json(2)) == 2  # acked: both were received
        assert await server.command("report") == "dumped 2"
        messages, connections = read_dump(dump)
        assert [m["id"] for m in messages] == ["a", "b"]
        assert connections == []
        server.process.kill()
        await server.wait()
    messages, connections = read_dump(dump)  # killed: the messages are there, no summary
    assert ([m["id"] for m in messages], connections) == (["a", "b"], [])


def test_parse_ready() -> None:
    """parse_ready reads the port from the first line and refuses any other line."""
    assert parse_ready(b"serving ws://127.0.0.1:8765/ (stop: Ctrl-C)\n") == 8765
    with pytest.raises(ValueError, match="first line"):
        parse_ready("8765")
