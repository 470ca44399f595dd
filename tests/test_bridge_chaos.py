"""Chaos, CI-sized: ``bgws run`` with a bridge, SIGKILLed mid-stream and restarted, and a
broker SIGKILLed and restarted: every inbound sequence is in the stream exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import bgws
from bgws.testing import Feed, Server

from .bridgekit import StreamReader, ensure_stream, publish_commands

pytest.importorskip("nats")

TOTAL = 600


def service_file(tmp_path: Path, url: str, nats_url: str) -> Path:
    path = tmp_path / "feed.toml"
    path.write_text(
        "[services.feed]\n"
        f'url = "{url}"\n'
        "close_timeout = 1.0\n"
        'storage_path = "feed.sqlite3"\n'
        "[services.feed.resume]\n"
        'seq_field = "seq"\n'
        "[services.feed.bridge]\n"
        f'nats = "{nats_url}"\n'
        'stream = "BGWS"\n'
        'publish = "bgws.{service}.in.{type}"\n'
        'consume = ""\n'
    )
    return path


def resumes(server: Server) -> int:
    """How many resume requests the server got."""
    return sum(1 for m in server.messages if m.json().get("type") == "resume")


async def publish(server: Server, count: int) -> None:
    """Publish ``count`` numbered messages in small bursts, letting the loop run between."""
    for n in range(count):
        server.publish({"type": "tick", "pad": "x" * 64})
        if n % 10 == 9:
            await asyncio.sleep(0)


@pytest.mark.timeout(60)
async def test_sigkills_of_the_daemon_and_the_broker_lose_and_duplicate_nothing(
    nats_broker: Any, daemons: Any, tmp_path: Path
) -> None:
    """Daemon SIGKILL; broker SIGKILL with the daemon stopped meanwhile: each seq once."""
    async with Server(feed=Feed(history=TOTAL)) as server:
        toml = service_file(tmp_path, server.url, nats_broker.url)
        daemon = await daemons(toml)
        await server.wait_for_connections(1)
        async with StreamReader(nats_broker.url) as stream:
            await publish(server, 100)
            await stream.wait(100)
        daemon.process.terminate()  # a graceful stop saves the position
        assert await daemon.finish() == 0
        daemon = await daemons(toml)
        await server.wait_for_connections(2)
        await server.wait_until(lambda: resumes(server) == 1)
        async with StreamReader(nats_broker.url) as stream:
            await publish(server, 200)
            await stream.wait(150)
        daemon.process.kill()  # mid-stream: some received, some published, some neither
        await daemon.finish()
        await publish(server, 100)  # while no daemon runs: kept for the replay
        daemon = await daemons(toml)
        await server.wait_for_connections(3)
        await server.wait_until(lambda: resumes(server) == 2)  # the replay goes out first
        await publish(server, 50)
        async with StreamReader(nats_broker.url) as stream:
            await stream.wait(450)
        nats_broker.kill()
        socket = tmp_path / "run" / "bgws" / "bgws.sock"
        async with (
            bgws.connect_local(socket) as client,
            await client.tail(service="feed") as tail,
            asyncio.timeout(10),
        ):
            await publish(server, 100)  # received and held: the broker is down
            async for event in tail:
                if event.get("data", {}).get("seq") == 550:
                    break
        daemon.process.terminate()  # the saved position is the last acked one, not 550
        assert await daemon.finish() == 0
        await asyncio.to_thread(nats_broker.restart)  # not blocking the loop (keepalives run)
        daemon = await daemons(toml)
        await server.wait_for_connections(4)
        await server.wait_until(lambda: resumes(server) == 3)
        await publish(server, TOTAL - 550)
        async with StreamReader(nats_broker.url) as stream:
            messages = await stream.wait(TOTAL, timeout=30)
            seqs = [m["seq"] for m in messages]
            assert sorted(seqs) == list(range(1, TOTAL + 1)), "a sequence is missing or doubled"
            assert seqs == sorted(seqs)
            assert await stream.stored() == TOTAL
        daemon.process.terminate()
        assert await daemon.finish() == 0


COMMANDS = 500


@pytest.mark.timeout(60)
async def test_a_sigkill_loses_no_command_and_repeats_only_with_the_same_id(
    nats_broker: Any, daemons: Any, tmp_path: Path
) -> None:
    """Commands from JetStream through a SIGKILLed daemon: each reaches the server, same ids."""
    await ensure_stream(nats_broker.url)
    path = tmp_path / "orders.toml"
    path.write_text(
        "[services.orders]\n"
        'url = "{url}"\n'
        'storage_path = "orders.sqlite3"\n'
        "[services.orders.bridge]\n"
        f'nats = "{nats_broker.url}"\n'
        'publish = ""\n'
    )
    commands = [{"type": "order", "n": n} for n in range(COMMANDS)]
    async with Server() as server:
        path.write_text(path.read_text().replace("{url}", server.url))
        daemon = await daemons(path)
        await publish_commands(nats_broker.url, "bgws.orders.out", commands)
        await server.wait_for_messages(100)
        daemon.process.kill()  # mid-stream: some sent, some in the outbox, some not consumed
        await daemon.finish()
        daemon = await daemons(path)

        def unique() -> int:
            return len({m.json()["id"] for m in server.messages})

        await server.wait_until(lambda: unique() == COMMANDS, timeout=30)
        by_id: dict[str, int] = {}
        for message in server.messages:
            data = message.json()
            assert by_id.setdefault(data["id"], data["n"]) == data["n"]  # a repeat: same id
        assert sorted(by_id.values()) == list(range(COMMANDS))
        assert set(by_id) == {f"BGWS-{n}" for n in range(1, COMMANDS + 1)}
        daemon.process.terminate()
        assert await daemon.finish() == 0
