"""Auth: fresh credentials on every attempt, refresh after a refusal, no clear-text leaks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

import bgws
from bgws.testing import Connection, ReceivedMessage, Server

from .conftest import Changes, ServiceFactory


class Tokens(bgws.AuthHandler):
    """Hands out token-1, token-2, ... and records what happened."""

    def __init__(self, refresh: bool = True) -> None:
        self.issued = 0
        self.refresh = refresh
        self.failures: list[str] = []
        self.successes = 0
        self.seen_data: list[Mapping[str, Any] | None] = []

    async def get_auth_data(
        self, connection_data: Mapping[str, Any] | None = None
    ) -> Mapping[str, Any] | None:
        self.issued += 1
        self.seen_data.append(connection_data)
        return {"Authorization": f"Bearer token-{self.issued}"}

    async def on_auth_success(self) -> None:
        self.successes += 1

    async def on_auth_failure(self, error: str) -> bool:
        self.failures.append(error)
        return self.refresh


async def test_auth_refreshed_after_401(bgws_server: Server, make_service: ServiceFactory) -> None:
    """A 401 asks the handler; a refreshed token is used on an immediate retry."""
    bgws_server.refuse_next(1, status=401)
    auth = Tokens()
    service = make_service(bgws_server.url, auth_handler=auth)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
    sent = [h.headers.get("authorization") for h in bgws_server.handshakes]
    assert sent == ["Bearer token-1", "Bearer token-2"]
    assert [h.status for h in bgws_server.handshakes] == [401, 101]
    assert len(auth.failures) == 1
    assert "401" in auth.failures[0]
    assert auth.successes == 1
    retry = changes.into(bgws.State.BACKING_OFF)[0]
    assert isinstance(retry.reason, bgws.AuthRejected)
    assert changes.into(bgws.State.CONNECTING)[1].at - retry.at < 0.1  # at once, no backoff


async def test_auth_refusal_not_fixed_fails(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """When the handler cannot refresh, a 403 ends in FAILED with the reason."""
    bgws_server.refuse_next(5, status=403)
    service = make_service(bgws_server.url, auth_handler=Tokens(refresh=False))
    changes = Changes(service)
    async with service:
        failed = await changes.wait(bgws.State.FAILED)
    assert isinstance(failed.reason, bgws.AuthRejected)
    assert failed.reason.status == 403
    assert len(bgws_server.handshakes) == 1


async def test_auth_close_code_counts_as_refusal(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """A close with a configured auth code (4001) goes through on_auth_failure."""
    auth = Tokens()
    service = make_service(bgws_server.url, auth_handler=auth)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        bgws_server.close(4001, "token expired")
        await changes.wait(bgws.State.CONNECTED, count=2)
    assert len(auth.failures) == 1
    assert bgws_server.handshakes[-1].headers["authorization"] == "Bearer token-2"


async def test_fresh_credentials_on_every_reconnect(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """get_auth_data runs before every attempt, so each reconnect carries a new token."""
    auth = Tokens()
    service = make_service(bgws_server.url, auth_handler=auth)
    changes = Changes(service)
    async with service:
        for n in (1, 2):
            await changes.wait(bgws.State.CONNECTED, count=n)
            bgws_server.drop()
        await changes.wait(bgws.State.CONNECTED, count=3)
    tokens = [h.headers["authorization"] for h in bgws_server.handshakes]
    assert tokens == ["Bearer token-1", "Bearer token-2", "Bearer token-3"]


async def test_connection_data_reaches_the_auth_handler(
    bgws_server: Server, make_service: ServiceFactory
) -> None:
    """The data given to connect() is handed to get_auth_data and kept in storage."""
    auth = Tokens()
    storage = bgws.MemoryStorage()
    service = make_service(bgws_server.url, auth_handler=auth, storage=storage)
    changes = Changes(service)
    await service.start()
    await service.connect(connection_data={"username": "ada"})
    await changes.wait(bgws.State.CONNECTED)
    assert auth.seen_data == [{"username": "ada"}]
    assert await storage.get_connection_info("connection_data") == '{"username":"ada"}'
    assert await storage.get_connection_info("last_connected_at") is not None
    await service.stop()


async def test_auth_as_query_parameters(bgws_server: Server, make_service: ServiceFactory) -> None:
    """auth_mode="query" puts the credentials in the URL's query string."""

    class Query(bgws.AuthHandler):
        async def get_auth_data(self) -> Mapping[str, Any]:  # the no-argument form
            return {"token": "abc123"}

    service = make_service(bgws_server.url + "?v=2", auth_handler=Query(), auth_mode="query")
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
    assert bgws_server.handshakes[0].query == {"v": "2", "token": "abc123"}
    assert "authorization" not in bgws_server.handshakes[0].headers


async def test_auth_as_first_message(make_service: ServiceFactory) -> None:
    """auth_mode="message" sends the credentials before anything else on each link."""
    firsts: list[Any] = []

    def check(connection: Connection, message: ReceivedMessage) -> None:
        if len([m for m in server.messages if m.connection_id == connection.id]) == 1:
            firsts.append(message.json())

    async with Server(on_message=check) as server:
        service = make_service(
            server.url, auth_handler=Tokens(), auth_mode="message", id_field=None
        )
        changes = Changes(service)
        await service.send({"type": "hello"})  # queued before the first connect
        async with service:
            await changes.wait(bgws.State.CONNECTED)
            await server.wait_for_messages(2)
            server.drop()
            await changes.wait(bgws.State.CONNECTED, count=2)
            await server.wait_for_messages(3)
    assert firsts == [
        {"Authorization": "Bearer token-1"},
        {"Authorization": "Bearer token-2"},
    ]
    assert server.received_json()[1] == {"type": "hello"}


async def test_bearer_auth_helper(bgws_server: Server, make_service: ServiceFactory) -> None:
    """BearerAuth fetches the token each attempt and never shows it in its repr."""
    tokens = iter(["s3cr3t-one", "s3cr3t-two"])
    refreshed: list[bool] = []
    auth = bgws.BearerAuth(lambda: next(tokens), refresh=lambda: refreshed.append(True))
    assert "s3cr3t" not in repr(auth)
    bgws_server.refuse_next(1, status=401)
    service = make_service(bgws_server.url, auth_handler=auth)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
    assert bgws_server.handshakes[-1].headers["authorization"] == "Bearer s3cr3t-two"
    assert refreshed == [True]


def test_credentials_refused_over_plain_ws_to_remote_host(make_service: ServiceFactory) -> None:
    """An auth handler that requires auth with a ws:// remote URL is refused at build time."""
    with pytest.raises(bgws.InsecureCredentials) as info:
        make_service("ws://chat.example.invalid/ws", auth_handler=Tokens())
    assert info.value.field == "url"
    assert "wss://" in str(info.value)
    assert "allow_insecure_credentials" in str(info.value)


def test_auth_handler_over_ws_allowed_when_not_required(make_service: ServiceFactory) -> None:
    """A handler that does not require auth, or allow_insecure_credentials, builds fine."""

    class Optional(bgws.AuthHandler):
        @property
        def requires_auth(self) -> bool:
            return False

    make_service("ws://chat.example.invalid/ws", auth_handler=Optional())
    make_service(
        "ws://chat.example.invalid/ws", auth_handler=Tokens(), allow_insecure_credentials=True
    )
    with pytest.raises(bgws.InsecureCredentials):
        bgws.create_chat_service(
            app_name="MyChat", url="ws://chat.example.invalid/ws", auth_handler=Tokens()
        )


async def test_failing_get_auth_data_is_retried_and_reported(
    bgws_server: Server, make_service: ServiceFactory, errors: Any
) -> None:
    """An auth handler that raises is reported; the attempt is retried with backoff."""

    class Flaky(bgws.AuthHandler):
        calls = 0

        async def get_auth_data(self) -> Mapping[str, Any]:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("vault unreachable")
            return {"Authorization": "Bearer ok"}

    service = make_service(bgws_server.url, auth_handler=Flaky())
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
    lost = changes.into(bgws.State.BACKING_OFF)[0]
    assert isinstance(lost.reason, bgws.HandlerError)
    assert isinstance(lost.reason.__cause__, RuntimeError)


@pytest.mark.parametrize("mode", ["headers", "query"])
async def test_no_auth_when_not_required(
    bgws_server: Server, make_service: ServiceFactory, mode: str
) -> None:
    """requires_auth=False skips get_auth_data entirely."""

    class Off(Tokens):
        @property
        def requires_auth(self) -> bool:
            return False

    auth = Off()
    service = make_service(bgws_server.url, auth_handler=auth, auth_mode=mode)
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
    assert auth.issued == 0
