"""Crash and chaos: real producer and consumer processes, killed and cut off, lose nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bgws.testing import AckReply, Connection, ReceivedMessage, Server

CHAOS = Path(__file__).parent / "chaos"
TOTAL = 10_000
MAX_IN_FLIGHT = 32  # as in chaos/producer.py

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


_SPAWNED: list[asyncio.subprocess.Process] = []


async def spawn(script: str, *args: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(CHAOS / script), *args, stderr=asyncio.subprocess.PIPE
    )
    _SPAWNED.append(process)
    return process


@pytest.fixture(autouse=True)
async def _no_stray_processes() -> Any:
    """Whatever happens in a test, no producer or consumer outlives it."""
    yield
    while _SPAWNED:
        process = _SPAWNED.pop()
        if process.returncode is None:
            process.kill()
            await process.communicate()


async def finish(process: asyncio.subprocess.Process, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        _, err = await process.communicate()
    assert process.returncode == 0, err.decode()


class AckingServer:
    """Acks every message, counts what it saw, and drops the link every ``every`` messages."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.first_seen: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.drops = 0
        self.received = 0

    def __call__(self, connection: Connection, message: ReceivedMessage) -> None:
        data = message.json()
        msg_id = data["id"]
        self.received += 1
        if not self.counts[msg_id]:
            self.first_seen.append(data)
        self.counts[msg_id] += 1
        connection.send({"type": "ack", "id": msg_id})
        if self.received % self.every == 0:
            self.drops += 1
            connection.drop()


async def test_nothing_lost_through_drops_and_kills(tmp_path: Path) -> None:
    """10,000 acked messages through 20+ drops and two SIGKILLs: every accepted one arrives."""
    hook = AckingServer(every=400)
    store, log = str(tmp_path / "producer.sqlite3"), tmp_path / "accepted.log"
    async with Server(on_message=hook) as server:
        args = (server.url, store, str(log), str(TOTAL))
        kills = 0
        for threshold in (TOTAL // 3, 2 * TOTAL // 3):
            producer = await spawn("producer.py", *args)
            await server.wait_until(lambda t=threshold: len(hook.first_seen) >= t, timeout=60)
            producer.kill()  # SIGKILL: no cleanup, no flush
            await producer.wait()
            kills += 1
        producer = await spawn("producer.py", *args)
        await finish(producer)
    accepted = {int(line) for line in log.read_text().splitlines() if line.strip().isdigit()}
    seen = {m["n"] for m in hook.first_seen}
    duplicates = sum(count - 1 for count in hook.counts.values())
    print(f"\ndrops={hook.drops} kills={kills} accepted={len(accepted)} duplicates={duplicates}")
    assert hook.drops >= 20
    assert len(accepted) >= TOTAL - 2  # the last accept before each kill may be unlogged
    assert accepted <= seen, f"lost: {sorted(accepted - seen)[:10]}"
    assert seen == set(range(TOTAL))
    for lane in (0, 1):
        order = [m["n"] for m in hook.first_seen if m["n"] % 2 == lane]
        assert order == sorted(order), f"lane {lane} out of order"
    assert duplicates <= (hook.drops + kills) * MAX_IN_FLIGHT


class Feed:
    """Publishes numbered ticks, replays on resume, and watches the consumer's progress.

    Like a real resumable feed, a connection gets live ticks only once it is in step: at once
    when it connects before anything was published, else after its resume request has been
    answered with the replay (so live ticks never overtake the replay).
    """

    def __init__(self) -> None:
        self.history: list[dict[str, int | str]] = []
        self.live: set[int] = set()
        self.progress = 0
        self.finished = False
        self.resumes: list[int] = []

    def publish(self, server: Server, count: int) -> None:
        for _ in range(count):
            tick: dict[str, int | str] = {"type": "tick", "seq": len(self.history) + 1}
            self.history.append(tick)
            for connection in server.open_connections:
                if connection.id in self.live:
                    connection.send(tick)

    def on_connect(self, connection: Connection) -> None:
        if not self.history:
            self.live.add(connection.id)

    def __call__(self, connection: Connection, message: ReceivedMessage) -> None:
        data = message.json()
        if data["type"] == "resume":
            self.resumes.append(data["after"])
            for tick in self.history[data["after"] :]:
                connection.send(tick)
            self.live.add(connection.id)
        elif data["type"] == "progress":
            self.progress = max(self.progress, data["seq"])
        elif data["type"] == "finished":
            self.finished = True


async def test_resume_sees_every_sequence_once_through_drops_and_a_restart(
    tmp_path: Path,
) -> None:
    """With resume, the handler sees 1..N exactly once, in order, across drops and a restart."""
    feed = Feed()
    last = 3000
    store, log = str(tmp_path / "consumer.sqlite3"), tmp_path / "seen.log"
    # The consumer's own messages (progress, finished) are acked, so a drop cannot lose them.
    async with Server(on_message=feed, on_connect=feed.on_connect, ack=AckReply()) as server:
        args = (server.url, store, str(log), str(last))
        consumer = await spawn("consumer.py", *args)
        drops = 0
        in_step = lambda: any(c.id in feed.live for c in server.open_connections)  # noqa: E731
        for chunk in range(30):  # 100 ticks per chunk, a drop after every other chunk
            await server.wait_until(in_step, timeout=20, what="a consumer in step")
            feed.publish(server, 100)
            if chunk % 2:
                gone = server.disconnects + server.drop()
                await server.wait_for_disconnects(gone, timeout=20)
                drops += 1
            if chunk == 14:  # halfway: a graceful restart of the consumer
                await server.wait_until(lambda: feed.progress >= 1500, timeout=20)
                consumer.send_signal(signal.SIGTERM)
                await finish(consumer)
                consumer = await spawn("consumer.py", *args)
        try:
            await server.wait_until(lambda: feed.finished, timeout=30)
        except TimeoutError:
            consumer.kill()
            _, err = await consumer.communicate()
            report = "\n".join(str(r) for r in server.report())
            raise AssertionError(f"consumer stuck:\n{err.decode()[-3000:]}\n{report}") from None
        consumer.send_signal(signal.SIGTERM)
        await finish(consumer)
    seen = [int(line) for line in log.read_text().splitlines()]
    print(f"\ndrops={drops} resumes={len(feed.resumes)} seen={len(seen)}")
    assert drops >= 10
    assert len(feed.resumes) >= drops  # every reconnect resumed (plus the restart)
    assert seen == list(range(1, last + 1))


def test_scripts_exist() -> None:
    """The chaos scripts are where the tests expect them."""
    assert (CHAOS / "producer.py").is_file()
    assert (CHAOS / "consumer.py").is_file()
    assert os.access(sys.executable, os.X_OK)
