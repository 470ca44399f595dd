"""Several services in one process are independent: no global state."""

from __future__ import annotations

import asyncio

import bgws
from bgws.testing import Server

from .conftest import Changes, ServiceFactory


async def test_two_services_do_not_interfere(make_service: ServiceFactory) -> None:
    """Dropping one service's server leaves the other connected, with its own handlers."""
    async with Server() as chat_server, Server() as game_server:
        chat = make_service(chat_server.url, app_name="chat")
        game = make_service(game_server.url, app_name="game")
        got: dict[str, list[str]] = {"chat": [], "game": []}
        both = asyncio.Event()

        def record(name: str) -> bgws.Handler:
            def handler(message: bgws.Message) -> None:
                got[name].append(message.data["text"])
                if got["chat"] and got["game"]:
                    both.set()

            return handler

        chat.on("msg")(record("chat"))
        game.on("msg")(record("game"))
        chat_changes, game_changes = Changes(chat), Changes(game)
        async with chat, game:
            await chat_changes.wait(bgws.State.CONNECTED)
            await game_changes.wait(bgws.State.CONNECTED)
            await game_server.stop()
            await game_changes.wait(bgws.State.BACKING_OFF)
            assert chat.state is bgws.State.CONNECTED
            await chat.send({"type": "msg", "text": "to chat"})
            await game.send({"type": "msg", "text": "to game"})
            await chat_server.wait_for_messages(1)
            assert game.stats.queued == 1
            assert chat.stats.queued == 0
            chat_server.push({"type": "msg", "text": "from chat"})
            await game_server.start()
            await game_server.wait_for_messages(1)
            game_server.push({"type": "msg", "text": "from game"})
            await asyncio.wait_for(both.wait(), 5)
        assert got == {"chat": ["from chat"], "game": ["from game"]}
        assert chat_changes.into(bgws.State.BACKING_OFF) == []
        assert (chat.config.service_tag, game.config.service_tag) == ("chat", "game")
        assert (chat.log.name, game.log.name) == ("bgws.chat", "bgws.game")
