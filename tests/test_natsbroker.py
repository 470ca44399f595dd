"""The test broker is a real JetStream server that survives SIGKILL with its streams."""

from __future__ import annotations

from typing import Any

import nats


async def test_jetstream_stream_survives_a_broker_kill(nats_broker: Any) -> None:
    """A message acked by JetStream is still in the stream after SIGKILL and restart."""
    nc = await nats.connect(nats_broker.url)
    js = nc.jetstream()
    await js.add_stream(name="T", subjects=["t.>"])
    ack = await js.publish("t.a", b"one", headers={"Nats-Msg-Id": "m1"})
    assert ack.seq == 1
    await nc.close()
    nats_broker.restart()
    nc = await nats.connect(nats_broker.url)
    js = nc.jetstream()
    info = await js.stream_info("T")
    assert info.state.messages == 1
    dup = await js.publish("t.a", b"one", headers={"Nats-Msg-Id": "m1"})
    assert dup.duplicate
    await nc.close()
