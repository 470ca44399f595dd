"""A sensor gateway: readings kept on disk until the server acknowledges them.

With the SQLite store, ``send()`` returns once a reading is on disk, so it survives a crash or
a power cut; with an ack policy it stays there until the server acknowledges its id, and is
sent again (same id) after a reconnect. ``wait_for_ack=True`` waits for that ack. The server is
the testing kit's, acknowledging every message: ``python examples/iot.py``.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path

import bgws
from bgws.testing import AckReply, Server


def reading(n: int) -> dict[str, object]:
    """One sensor reading."""
    return {"type": "reading", "sensor": "greenhouse-1", "n": n, "celsius": 20 + random.random()}


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        async with Server(ack=AckReply()) as server:
            service = bgws.create_iot_service(
                app_name="Greenhouse",
                url=server.url,
                storage_path=str(Path(folder) / "gateway.db"),
                ack=bgws.AckPolicy(),  # {"type": "ack", "id": ...} from the server
                initial_reconnect_delay=0.2,  # short, so that the example ends quickly
                max_reconnect_delay=1.0,
            )
            async with service:
                await service.wait_for(bgws.State.CONNECTED, timeout=5)
                for n in range(1, 4):
                    await service.send(reading(n), wait_for_ack=True, timeout=5)
                print("readings 1-3 acknowledged")

                await server.stop()  # the uplink goes down
                await service.wait_for(bgws.State.BACKING_OFF, timeout=5)
                for n in range(4, 7):
                    await service.send(reading(n))  # returns once the reading is on disk
                print(f"uplink down: {service.stats.queued} readings kept on disk")

                await server.start()  # back: the kept readings go first, in order
                await service.send(reading(7), wait_for_ack=True, timeout=10)
                print(f"uplink back: readings 4-7 sent, {service.stats.in_flight} unacknowledged")
            received = [message["n"] for message in server.received_json()]
            print(f"done: server got readings {received}, {len(server.duplicates)} duplicates")


if __name__ == "__main__":
    asyncio.run(main())
