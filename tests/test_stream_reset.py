"""Stream resets: a changed epoch is a StreamReset, not a gap; the position restarts with it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import bgws
from bgws.testing import Server
from bgws.transport import Transport

from .conftest import Errors, ServiceFactory

EPOCHS = bgws.ResumePolicy(epoch_field="epoch")


async def test_changed_epoch_is_a_stream_reset_and_the_position_restarts(
    tmp_path: Path, make_service: ServiceFactory, errors: Errors, transport: Transport
) -> None:
    """A new epoch reports StreamReset (no SequenceGap, no duplicate); it is kept on disk."""
    path = str(tmp_path / "epoch.sqlite3")
    seen: list[tuple[str, int]] = []
    arrived = asyncio.Event()

    def tick(message: bgws.Message) -> None:
        seen.append((message.data["epoch"], message.data["seq"]))
        arrived.set()

    async with Server() as server:
        service = make_service(
            server.url, transport=transport, resume=EPOCHS, storage="sqlite", storage_path=path
        )
        service.on("tick")(tick)
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
            for epoch, seq in [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2)]:
                server.push({"type": "tick", "epoch": epoch, "seq": seq})
            async with asyncio.timeout(5):
                while len(seen) < 5:
                    arrived.clear()
                    await arrived.wait()
        assert seen == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2)]
        (reset,) = errors.of(bgws.StreamReset)
        assert isinstance(reset, bgws.StreamReset)
        assert (reset.old_epoch, reset.new_epoch, reset.last, reset.first) == ("a", "b", 3, 1)
        assert errors.of(bgws.SequenceGap) == []
        assert service.stats.duplicates == 0
        assert service.stats.resets == 1

        again = make_service(
            server.url, transport=transport, resume=EPOCHS, storage="sqlite", storage_path=path
        )
        async with again:
            received = await server.wait_for_messages(1, timeout=5)
        assert received[0].json() == {"type": "resume", "after": 2, "epoch": "b"}


def test_epoch_field_in_a_resume_table() -> None:
    """resume.epoch_field loads from a table and round-trips through to_dict."""
    config = bgws.Config(app_name="t", url="ws://127.0.0.1:1/", resume={"epoch_field": "epoch"})
    assert config.resume is not None
    assert config.resume.epoch_field == "epoch"
    assert bgws.Config.from_mapping(config.to_dict(redact=False)) == config
    with pytest.raises(bgws.ConfigError):
        bgws.Config(app_name="t", url="ws://127.0.0.1:1/", resume={"epoch_field": ""})
