"""A market-data client: a tick firehose, order updates first, and a dead feed replaced fast.

``priority_types`` lets order updates overtake ticks waiting in the inbox when the handlers
fall behind. The keepalive declares a silent feed dead within ``heartbeat_interval +
ping_timeout`` and reconnects. The server is the testing kit's, which floods ticks and then
freezes the link as a half-open TCP connection would: ``python examples/trading.py``.
"""

from __future__ import annotations

import asyncio
import time

import bgws
from bgws.testing import Server

TICKS = 1000


async def main() -> None:
    async with Server() as server:
        service = bgws.create_trading_service(
            app_name="Desk",
            url=server.url,
            storage="memory",  # ticks are worthless after a restart
            priority_types=("order_update",),
            heartbeat_interval=0.5,  # the preset's 2 s + 2 s, shortened for the example
            ping_timeout=0.5,
        )
        ticks: list[float] = []
        busy = asyncio.Event()
        order_seen_after: list[int] = []
        order_done = asyncio.Event()

        @service.on("tick")
        async def price(message: bgws.Message) -> None:
            ticks.append(message.data["price"])
            busy.set()
            await asyncio.sleep(0.001)  # a slow strategy: ticks queue up behind it

        @service.on("order_update")
        def order(message: bgws.Message) -> None:
            order_seen_after.append(len(ticks))
            order_done.set()

        def watch(change: bgws.StateChange) -> None:
            if isinstance(change.reason, bgws.DeadLink):
                print(f"feed dead after {time.monotonic() - frozen_at:.2f} s: reconnecting")

        def burst(first: int, count: int) -> None:
            for n in range(first, first + count):
                server.push({"type": "tick", "symbol": "EURUSD", "price": 1.08 + n / 1e5})

        service.on_state_change(watch)
        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
            burst(0, 200)
            await busy.wait()  # the strategy is busy with the first ticks...
            burst(200, TICKS - 200)  # ...while the rest pile up, and an order update with them
            server.push({"type": "order_update", "order": 42, "status": "filled"})
            await asyncio.wait_for(order_done.wait(), timeout=10)
            waiting = TICKS - order_seen_after[0]
            print(f"order_update overtook {waiting} waiting ticks")

            frozen_at = time.monotonic()
            server.stall()  # the feed goes silent: no data, no pongs
            await server.wait_for_connections(2, timeout=10)
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
            print("feed back on a new connection")
        stats = service.stats
        print(f"done: {stats.received} messages, {stats.dead_links} dead link, {len(ticks)} ticks")


if __name__ == "__main__":
    asyncio.run(main())
