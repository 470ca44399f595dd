"""A plain synchronous script: the service runs on a background thread, calls block.

``service.start_in_thread()`` starts the service on a thread with its own event loop and returns
a handle whose ``send``, ``request`` and ``stop`` are ordinary blocking calls, safe from any
thread. Handlers run on the service's thread. Run it: ``python examples/sync_thread.py``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import bgws
from bgws.testing import Connection, ReceivedMessage, Reply, Server


def start_test_server() -> tuple[str, Callable[[], None]]:
    """Stand-in for a real server: the testing kit's, on a thread of its own.

    It greets every chat message and answers ``whoami`` requests. Returns its URL and a
    function that stops it.
    """

    def greet(connection: Connection, received: ReceivedMessage) -> None:
        data = received.json()
        if data.get("type") == "chat_message":
            connection.send({"type": "chat_message", "text": f"hello, {data['from']}"})

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = Server(
        on_message=greet, reply=Reply(request_type="whoami", body=lambda r: {"user": "ann"})
    )
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=5)

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    return server.url, stop


def main() -> None:
    url, stop_server = start_test_server()
    service = bgws.create_chat_service(app_name="SyncChat", url=url, storage="memory")
    greeted = threading.Event()

    @service.on("chat_message")
    def show(message: bgws.Message) -> None:  # runs on the service's thread
        print(f"received: {message.data['text']}")
        greeted.set()

    handle = service.start_in_thread()  # started (and connecting) when this returns
    handle.wait_for(bgws.State.CONNECTED, timeout=5)
    handle.send({"type": "chat_message", "from": "ann", "text": "hi"})  # blocks until queued
    me = handle.request({"type": "whoami"}, timeout=5)  # blocks until the reply
    print(f"whoami: {me.data['user']}")
    greeted.wait(timeout=5)
    handle.stop()  # flushes, closes, joins the thread
    print(f"stopped: {handle.state.value}, sent {handle.stats.sent}")
    stop_server()


if __name__ == "__main__":
    main()
