"""A consumer process for the resume test: logs every sequence number its handler sees.

Usage: python consumer.py URL STORE LOG LAST

It resumes from its persisted position after every reconnect and restart. Every 100
messages it tells the server how far it got; after ``LAST`` it says it is finished. SIGTERM
stops it gracefully (the position is saved).
"""

from __future__ import annotations

import asyncio
import signal
import sys

import bgws


async def main(url: str, store: str, log_path: str, last: int) -> int:
    config = bgws.Config(
        app_name="consumer",
        url=url,
        storage="sqlite",
        storage_path=store,
        resume=bgws.ResumePolicy(seq_field="seq", request_type="resume", position_field="after"),
        ack=bgws.AckPolicy(message_type="ack", id_field="id"),
        initial_reconnect_delay=0.02,
        max_reconnect_delay=0.1,
        min_uptime=0.05,
        heartbeat_interval=1.0,
        ping_timeout=1.0,
    )
    service = bgws.create_custom_service(config=config)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with open(log_path, "a", buffering=1) as log:  # noqa: ASYNC230  (a line per message, in order)

        @service.on("tick")
        async def handle(message: bgws.Message) -> None:
            seq = message.data["seq"]
            log.write(f"{seq}\n")
            if seq % 100 == 0:
                await service.send({"type": "progress", "seq": seq})
            if seq == last:
                await service.send({"type": "finished"})

        async with service:
            await stop.wait()
    return 0


if __name__ == "__main__":
    url, store, log_path, last = sys.argv[1:5]
    raise SystemExit(asyncio.run(main(url, store, log_path, int(last))))
