"""A chat client: send and receive, notifications, and messages typed while offline.

The chat preset keeps a "connected / reconnecting" notice current (``foreground``) and notifies
for each ``chat_message``. Here a small handler prints both instead of showing them on the
desktop. The server is the testing kit's, started below with a bot that answers every message,
so the example runs anywhere: ``python examples/chat.py``.
"""

from __future__ import annotations

import asyncio

import bgws
from bgws.testing import Connection, ReceivedMessage, Server


def bot(connection: Connection, received: ReceivedMessage) -> None:
    """The server side: answer every chat message."""
    data = received.json()
    if data.get("type") == "chat_message":
        reply = {"type": "chat_message", "sender": "bot", "text": f"you said: {data['text']}"}
        connection.send(reply)


class PrintNotifier(bgws.NotificationHandler):
    """Shows notifications and the connection notice by printing them."""

    async def notify(self, title: str, body: str, message: bgws.Message | None = None) -> None:
        print(f"notification: {title}: {body}")

    async def on_state_changed(self, state: bgws.State) -> None:
        print(f"status: {state.value}")


async def main() -> None:
    async with Server(on_message=bot) as server:
        service = bgws.create_chat_service(
            app_name="MyChat",
            url=server.url,
            notification_handler=PrintNotifier(),
            notify_title="{app_name}: {sender}",
            initial_reconnect_delay=0.2,  # short, so that the example ends quickly
            max_reconnect_delay=1.0,
        )
        replies: asyncio.Queue[str] = asyncio.Queue()

        @service.on("chat_message")
        async def show(message: bgws.Message) -> None:
            print(f"{message.data['sender']}: {message.data['text']}")
            await replies.put(message.data["text"])

        async with service:
            await service.wait_for(bgws.State.CONNECTED, timeout=5)
            await service.send({"type": "chat_message", "text": "hello"})
            await asyncio.wait_for(replies.get(), timeout=5)

            await server.stop()  # the network goes away; what we type is queued
            await service.wait_for(bgws.State.BACKING_OFF, timeout=5)
            for text in ("are you there?", "typed while offline"):
                await service.send({"type": "chat_message", "text": text})
            print(f"offline: {service.stats.queued} messages queued")

            await server.start()  # back: the queue is flushed, in order
            for _ in range(2):
                await asyncio.wait_for(replies.get(), timeout=10)
            stats = service.stats
        print(f"done: sent {stats.sent}, 3 replies, reconnects {stats.reconnects}")


if __name__ == "__main__":
    asyncio.run(main())
