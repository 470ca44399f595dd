"""Secrets never reach logs, reprs, errors or stats."""

from __future__ import annotations

import logging

import pytest

import bgws
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
