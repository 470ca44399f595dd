"""Service.subprotocol reads the subprotocol the server chose, on both transports."""

from __future__ import annotations

import pytest

import bgws
from bgws.testing import Answer, HostileServer, Steps
from bgws.transport import Transport

from .conftest import Changes, ServiceFactory

pytest.importorskip("websockets")


async def test_subprotocol_is_the_servers_choice_while_connected(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """Service.subprotocol is None until connected, then the server's choice, then None."""
    chose = Steps(answer=Answer.switch(subprotocol="chat.v2"))
    async with HostileServer([chose, Steps()]) as server:
        service = make_service(server.url, transport=transport, subprotocols=("chat.v1", "chat.v2"))
        changes = Changes(service)
        assert service.subprotocol is None
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            assert service.subprotocol == "chat.v2"
            server.connections[0].hang_up()
            await changes.wait(bgws.State.BACKING_OFF)
            assert service.subprotocol is None
            await changes.wait(bgws.State.CONNECTED, count=2)
            assert service.subprotocol is None  # the second server chose none
        assert service.subprotocol is None
