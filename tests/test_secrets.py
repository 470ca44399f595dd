"""Secrets never reach logs, reprs, errors or stats."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import bgws
from bgws._engine.sqlite import SqliteStore
from bgws.testing import Server

from .conftest import Changes, Errors, ServiceFactory

TOKEN = "tok-9f8e7d6c5b4a"


async def test_token_never_in_captured_logs(
    bgws_server: Server,
    make_service: ServiceFactory,
    errors: Errors,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through connects, auth refusals, drops and stop, the token appears in no log line."""
    caplog.set_level(logging.DEBUG)
    bgws_server.refuse_next(1, status=401)
    service = make_service(
        bgws_server.url + f"?access_token={TOKEN}",
        headers={"X-Api-Key": TOKEN},
        auth_handler=bgws.BearerAuth(lambda: TOKEN, refresh=lambda: None),
    )
    changes = Changes(service)
    async with service:
        await changes.wait(bgws.State.CONNECTED)
        bgws_server.drop()
        await changes.wait(bgws.State.CONNECTED, count=2)
        text = " ".join(
            [repr(service), repr(service.config), str(service.stats), str(service.stats.to_dict())]
        )
        assert TOKEN not in text
    assert bgws_server.handshakes[-1].headers["authorization"] == f"Bearer {TOKEN}"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "access_token" in logged or "reconnecting" in logged  # something was logged
    assert TOKEN not in logged
    assert all(TOKEN not in str(e) for e in errors.seen)
    assert all(TOKEN not in str(c.reason) for c in changes.items)


def test_connect_request_repr_hides_header_values() -> None:
    """The transport request shows header names only."""
    from bgws.transport import ConnectRequest

    request = ConnectRequest(url="wss://x/", headers=[("Authorization", f"Bearer {TOKEN}")])
    assert TOKEN not in repr(request)
    assert "Authorization" in repr(request)


REMOTE = "ws://chat.example.invalid/ws"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"url": REMOTE + "?session=s-123456"}, "url"),
        ({"url": REMOTE + "?auth=a-123456"}, "url"),
        ({"url": REMOTE + "?key=k-123456"}, "url"),
        ({"url": REMOTE + "?signature=g-123456"}, "url"),
        ({"headers": {"X-Auth": "a-123456"}}, "headers"),
        ({"headers": {"X-Signature": "g-123456"}}, "headers"),
        ({"headers": {"X-Session-Id": "s-123456"}}, "headers"),
        ({"headers": {"X-Access-Key": "k-123456"}}, "headers"),
        ({"app_heartbeat": {"type": "ping", "token": "t-123456"}}, "app_heartbeat"),
        ({"app_heartbeat": {"type": "ping", "auth": {"session": "t-123456"}}}, "app_heartbeat"),
    ],
)
def test_one_rule_redacts_and_refuses(options: dict[str, object], field: str) -> None:
    """What secret_values() hides is exactly what plain ws:// to a remote host refuses."""
    values = {"app_name": "t", "url": REMOTE, **options}
    with pytest.raises(bgws.InsecureCredentials) as info:
        bgws.Config(**values)  # type: ignore[arg-type]
    assert info.value.field == field
    allowed = bgws.Config(**values, allow_insecure_credentials=True)  # type: ignore[arg-type]
    secrets = allowed.secret_values()
    assert secrets
    assert all(s.endswith("-123456") for s in secrets)
    assert all(s not in repr(allowed) for s in secrets)
    loopback = {**values, "url": str(values["url"]).replace("chat.example.invalid", "127.0.0.1")}
    assert bgws.Config(**loopback).secret_values() == secrets  # type: ignore[arg-type]


async def test_connection_data_secrets_stay_out_of_the_store(
    tmp_path: Path, bgws_server: Server, make_service: ServiceFactory
) -> None:
    """connection_data is stored with secret values as ***; the auth handler still gets them."""
    path = tmp_path / "store.sqlite3"
    service = make_service(
        bgws_server.url,
        storage="sqlite",
        storage_path=str(path),
        auth_handler=_PassThrough(),
    )
    changes = Changes(service)
    async with service:
        await service.connect(connection_data={"user": "ada", "password": TOKEN})
        await changes.wait(bgws.State.CONNECTED)
    assert bgws_server.handshakes[-1].headers["password"] == TOKEN  # used, from memory
    assert TOKEN.encode() not in _files_content(tmp_path)
    store = SqliteStore(path)
    await store.open()
    kept = await store.get_connection_info("connection_data")
    await store.close()
    assert kept == '{"user":"ada","password":"***"}'


def _files_content(folder: Path) -> bytes:
    """Every byte of every file in ``folder`` (the store, its WAL and shared memory)."""
    return b"".join(p.read_bytes() for p in folder.iterdir() if p.is_file())


class _PassThrough(bgws.AuthHandler):
    """The default auth handler: connection_data travels as handshake headers."""
