"""Closing a NATS client is bounded: a hung broker (SIGSTOP, a real nats-server) does not hold
a bridge's or a fleet member's stop (``bgws._natsclient.close_quietly``)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

import nats
import pytest

from bgws._natsclient import close_quietly, describe

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP")


async def test_a_close_gives_up_on_a_frozen_broker_within_its_bound(nats_broker: Any) -> None:
    """Data buffered for a broker that stopped reading: nats-py's own close waits for it to be
    written, for ever; the bounded close returns within its bound and drops the socket."""
    client = await nats.connect(nats_broker.url, allow_reconnect=False, connect_timeout=2)
    nats_broker.freeze()
    payload = b"x" * 60_000

    async def flood() -> None:  # fills the socket buffers; then publish itself waits
        for _ in range(400):
            await client.publish("frozen", payload)

    flooding = asyncio.create_task(flood())
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.shield(flooding)
        began = time.monotonic()
        await close_quietly(client, timeout=0.5)
        assert time.monotonic() - began < 0.5 + 1.0
    finally:
        flooding.cancel()
        nats_broker.kill()


async def test_a_close_of_a_live_client_is_clean(nats_broker: Any) -> None:
    client = await nats.connect(nats_broker.url)
    await close_quietly(client, timeout=2.0)
    assert client.is_closed


def test_describe_names_the_type_and_the_message() -> None:
    assert describe(ValueError("bad")) == "ValueError: bad"
    assert describe(TimeoutError()) == "TimeoutError"
