"""A peer that breaks RFC 6455 fails the link, the service retries, and no handler sees it.

The frame-by-frame rules are in the conformance suite (tests/test_conformance.py); these tests
check what the service makes of a violation, and how the transports log it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import bgws
from bgws.testing import Answer, Frames, HostileServer, Steps, check_transport
from bgws.transport import Transport
from bgws.transport._policy import LibraryLog

from .conftest import Changes, ServiceFactory

pytest.importorskip("websockets")


def _text(n: int) -> bytes:
    return Frames.text(f'{{"type": "ok", "n": {n}}}')


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (Frames.reserved_bits(), 1002),
        (Frames.bad_utf8(), 1007),
        (Frames.orphan_continuation(), 1002),
        (Frames.oversized(2 << 20), 1009),
    ],
    ids=["rsv1", "utf8", "orphan", "too-big"],
)
async def test_violation_is_a_retried_link_failure(
    make_service: ServiceFactory, transport: Transport, bad: bytes, code: int
) -> None:
    """A violation fails the link with its code, the service reconnects, no handler sees it."""
    seen: list[Any] = []
    done = asyncio.Event()
    first = Steps(send=[_text(0), bad, _text(1)])
    async with HostileServer([first, Steps(send=[_text(2)])]) as server:
        service = make_service(server.url, transport=transport, max_message_size=1 << 20)
        changes = Changes(service)

        @service.on()
        def record(message: bgws.Message) -> None:
            seen.append(message.data)
            if message.data.get("n") == 2:
                done.set()

        async with service:
            lost = await changes.wait(bgws.State.BACKING_OFF)
            await asyncio.wait_for(done.wait(), 5)
        assert await server.wait_for_close_code(0) == code
    assert isinstance(lost.reason, bgws.ConnectionClosed)
    assert lost.reason.code == code
    # The frame after the violation never arrives. The one before it, in the same read, may
    # be dropped too (picows drops a read's last good frame when the next one is bad;
    # websockets' reader may reach it only after the link started failing).
    assert [m["n"] for m in seen] in ([0, 2], [2])


async def test_unoffered_subprotocol_is_retried(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """A 101 naming an unoffered subprotocol fails the attempt (retried), and sends nothing."""
    first = Steps(answer=Answer.switch(subprotocol="evil"), send=[_text(0)])
    async with HostileServer([first, Steps()]) as server:
        service = make_service(server.url, transport=transport)
        changes = Changes(service)
        async with service:
            failed = await changes.wait(bgws.State.BACKING_OFF)
            await changes.wait(bgws.State.CONNECTED)
            await service.send({"type": "hello"})
            await server.connections[1].wait_for_frames(1)
    assert isinstance(failed.reason, bgws.LinkError)
    assert "subprotocol" in str(failed.reason)
    assert server.connections[0].data_frames == []


async def test_violation_logs_under_bgws_and_not_at_error(
    transport: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer's violation is not logged at ERROR; library lines go to bgws.transport.*."""
    caplog.set_level(logging.DEBUG, logger="bgws")
    await check_transport(lambda: transport, rules=["data-opcode", "too-big"], timeout=2.0)
    library = [r for r in caplog.records if r.name.startswith("bgws.transport.")]
    assert library  # the library's own lines reached bgws's logger tree
    assert {r.name for r in library} <= {"bgws.transport.picows", "bgws.transport.websockets"}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_library_log_follows_the_bgws_level() -> None:
    """Raising the bgws logger's level silences the transports' loggers too."""
    bgws_logger = logging.getLogger("bgws")
    old = bgws_logger.level
    log = LibraryLog("bgws.transport.picows")
    try:
        bgws_logger.setLevel(logging.ERROR)
        assert not log.isEnabledFor(logging.WARNING)
        bgws_logger.setLevel(logging.DEBUG)
        assert log.isEnabledFor(logging.DEBUG)
    finally:
        bgws_logger.setLevel(old)
