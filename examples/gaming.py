"""A game client: join a match and send moves with request/response, timing each round trip.

``service.request()`` sends a message with a fresh id and waits for the reply that carries the
same id; a request nobody answers raises ``bgws.RequestTimeout`` instead of hanging. The server
is the testing kit's, answering ``join`` and ``move``: ``python examples/gaming.py``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import bgws
from bgws.testing import Reply, Server


def referee(request: dict[str, Any]) -> dict[str, Any] | None:
    """The server side: the fields of the reply to a request, or None for no reply."""
    if request["type"] == "join":
        return {"room": "arena-7", "players": 4}
    if request["type"] == "move":
        return {"accepted": True, "x": request["x"] + request["dx"]}
    return None


async def main() -> None:
    async with Server(reply=Reply(body=referee)) as server:
        # Inputs are stale after a restart: nothing needs to outlive the process.
        service = bgws.create_gaming_service(app_name="MyGame", url=server.url, storage="memory")
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
            joined = await service.request({"type": "join", "player": "ann"}, timeout=2)
            print(f"joined {joined.data['room']} with {joined.data['players']} players")

            x, round_trips = 0, []
            for _ in range(10):
                started = time.perf_counter()
                move = await service.request({"type": "move", "x": x, "dx": 1}, timeout=1)
                round_trips.append(time.perf_counter() - started)
                x = move.data["x"]
            median = statistics.median(round_trips) * 1000
            print(f"10 moves accepted, now at x={x}; median round trip {median:.2f} ms")

            try:
                await service.request({"type": "spectate"}, timeout=0.2)
            except bgws.RequestTimeout:
                print("no answer to 'spectate' within 0.2 s: RequestTimeout, the game goes on")
        print(f"done: {service.stats.sent} requests sent")


if __name__ == "__main__":
    asyncio.run(main())
