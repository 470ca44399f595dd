"""Resume: the last processed sequence is kept, duplicates dropped, gaps reported."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import bgws
from bgws.testing import Connection, ReceivedMessage, Server

from .conftest import Changes, Errors, ServiceFactory

RESUME = bgws.ResumePolicy(seq_field="seq", request_type="resume", position_field="after")


class Feed:
    """A server-side feed: numbered messages, replayed from a position on request."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.resumes: list[int] = []

    def publish(self, server: Server, count: int) -> None:
        for _ in range(count):
            message = {"type": "tick", "seq": len(self.history) + 1}
            self.history.append(message)
            server.push(message)

    def __call__(self, connection: Connection, message: ReceivedMessage) -> None:
        data = message.json()
        if data.get("type") == "resume":
            self.resumes.append(data["after"])
            for old in self.history[data["after"] :]:
                connection.send(old)


class Seen:
    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.changed = asyncio.Event()

    def __call__(self, message: bgws.Message) -> None:
        self.seqs.append(message.data["seq"])
        self.changed.set()

    async def wait(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.seqs) < count:
                self.changed.clear()
                await self.changed.wait()


async def test_resume_after_reconnect_without_duplicates(make_service: ServiceFactory) -> None:
    """After a drop the service asks to resume from its position; each seq is seen once."""
    feed = Feed()
    seen = Seen()
    async with Server(on_message=feed) as server:
        service = make_service(server.url, resume=RESUME)
        service.on("tick")(seen)
        changes = Changes(service)
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            feed.publish(server, 5)
            await seen.wait(5)
            server.drop()
            feed.history.extend({"type": "tick", "seq": n} for n in (6, 7))  # missed offline
            await changes.wait(bgws.State.CONNECTED, count=2)
            await seen.wait(7)
            server.push({"type": "tick", "seq": 3})  # a stray duplicate
            feed.publish(server, 1)
            await seen.wait(8)
        assert feed.resumes == [5]
        assert seen.seqs == list(range(1, 9))
        assert service.stats.duplicates == 1


async def test_gap_is_reported_with_the_missing_range(
    bgws_server: Server, make_service: ServiceFactory, errors: Errors
) -> None:
    """A jump in sequence numbers is reported as SequenceGap(first, last)."""
    seen = Seen()
    service = make_service(bgws_server.url, resume=RESUME)
    service.on("tick")(seen)
    async with service:
        await service.wait_for(bgws.State.CONNECTED, timeout=5)
        for seq in (1, 2, 6):
            bgws_server.push({"type": "tick", "seq": seq})
        await seen.wait(3)
        (gap,) = await errors.wait_for(bgws.SequenceGap)
    assert (gap.first, gap.last) == (3, 5)  # type: ignore[attr-defined]
    assert service.stats.gaps == 1


async def test_position_survives_a_restart(tmp_path: Path, make_service: ServiceFactory) -> None:
    """With the SQLite store the resume position is read back by the next run."""
    feed = Feed()
    path = tmp_path / "resume.sqlite3"
    async with Server(on_message=feed) as server:
        first = make_service(server.url, resume=RESUME, storage="sqlite", storage_path=str(path))
        seen = Seen()
        first.on("tick")(seen)
        async with first:
            await first.wait_for(bgws.State.CONNECTED, timeout=5)
            feed.publish(server, 4)
            await seen.wait(4)
        feed.history.extend({"type": "tick", "seq": n} for n in (5, 6))
        second = make_service(server.url, resume=RESUME, storage="sqlite", storage_path=str(path))
        seen2 = Seen()
        second.on("tick")(seen2)
        async with second:
            await seen2.wait(2)
    assert feed.resumes == [4]
    assert seen2.seqs == [5, 6]


async def test_function_form_of_the_resume_request(make_service: ServiceFactory) -> None:
    """ResumePolicy(request=...) shapes the resume message for other servers."""
    policy = bgws.ResumePolicy(seq_field="n", request=lambda pos: {"op": "replay", "from": pos + 1})
    async with Server() as server:
        service = make_service(server.url, resume=policy)
        got = asyncio.Event()
        service.on("x")(lambda m: got.set())
        changes = Changes(service)
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            server.push({"type": "x", "n": 41})
            await asyncio.wait_for(got.wait(), 5)
            server.drop()
            await changes.wait(bgws.State.CONNECTED, count=2)
            await server.wait_for_messages(1)
    assert server.received_json() == [{"op": "replay", "from": 42}]


async def test_a_replay_behind_a_live_message_fills_the_gap(
    make_service: ServiceFactory, transport: Any, errors: Errors
) -> None:
    """A live message sent on a fresh link before the replay: the replayed gap is still taken."""
    feed = Feed()
    seen = Seen()

    def live_first(connection: Connection) -> None:
        if len(feed.history) > 3:  # a reconnect: a live message goes out before the replay
            feed.publish(server, 1)

    async with Server(on_message=feed, on_connect=live_first) as server:
        service = make_service(server.url, resume=RESUME, transport=transport)
        service.on("tick")(seen)
        changes = Changes(service)
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            feed.publish(server, 3)
            await seen.wait(3)
            server.drop()
            feed.history.extend({"type": "tick", "seq": n} for n in (4, 5, 6))  # missed offline
            await changes.wait(bgws.State.CONNECTED, count=2)
            await seen.wait(7)
            feed.publish(server, 1)
            await seen.wait(8)
        assert feed.resumes == [3]
        assert seen.seqs == [1, 2, 3, 7, 4, 5, 6, 8]
        assert service.stats.duplicates == 1  # 7 again, in the replay
        assert len(errors.of(bgws.SequenceGap)) == 1  # reported when 7 came, then filled
