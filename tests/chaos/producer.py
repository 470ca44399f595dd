"""A producer process for the crash tests: sends numbered messages with acks, logs each accept.

Usage: python producer.py URL STORE LOG TOTAL

Each message ``n`` (0..TOTAL-1) goes to lane ``n % 2`` with the id ``m-<n>``. A line with
``n`` is appended to LOG as soon as ``send()`` returned (the message is on disk). A restarted
producer continues after the last logged number; what the store kept is sent by the service.
It exits 0 once every message was acknowledged.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import bgws


def last_logged(log: Path) -> int:
    if not log.exists():
        return -1
    numbers = [line for line in log.read_text().splitlines() if line.strip().isdigit()]
    return int(numbers[-1]) if numbers else -1


async def main(url: str, store: str, log_path: str, total: int) -> int:
    log = Path(log_path)
    config = bgws.Config(
        app_name="producer",
        url=url,
        storage="sqlite",
        storage_path=store,
        ack=bgws.AckPolicy(message_type="ack", id_field="id"),
        max_in_flight=32,
        ack_timeout=2.0,
        initial_reconnect_delay=0.02,
        max_reconnect_delay=0.1,
        min_uptime=0.05,
        heartbeat_interval=1.0,
        ping_timeout=1.0,
        max_queue_size=500,
        overflow="wait",
    )
    service = bgws.create_custom_service(config=config)
    start = last_logged(log) + 1
    async with service:
        with log.open("a", buffering=1) as out:  # noqa: ASYNC230  (logged before the next send)
            for n in range(start, total):
                await service.send({"type": "m", "n": n, "id": f"m-{n}"}, priority=n % 2)
                out.write(f"{n}\n")
        await service._delivery.outbox.wait_empty()
    return 0


if __name__ == "__main__":
    url, store, log_path, total = sys.argv[1:5]
    raise SystemExit(asyncio.run(main(url, store, log_path, int(total))))
