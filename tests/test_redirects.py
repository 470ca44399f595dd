"""Redirects of the handshake: refused by default, followed only within the same origin."""

from __future__ import annotations

import pytest

import bgws
from bgws._engine.connect import MAX_REDIRECTS, _origin, _resolve
from bgws.machine import classify_error
from bgws.testing import Answer, HostileConnection, HostileServer, Steps
from bgws.transport import Transport

from .conftest import Changes, ServiceFactory

pytest.importorskip("websockets")

AUTH = {"Authorization": "Bearer t0k3n-redirect"}


async def test_redirect_refused_by_default(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """By default a 301 fails (fatal) naming the Location; the target gets no request."""
    async with HostileServer() as other:
        target = other.url + "elsewhere?token=s3cret-in-location"
        async with HostileServer(Steps(answer=Answer.redirect(target))) as server:
            service = make_service(server.url, transport=transport, headers=AUTH)
            changes = Changes(service)
            async with service:
                await service.send({"type": "queued"})
                failed = await changes.wait(bgws.State.FAILED)
        assert other.connections == []
    error = failed.reason
    assert isinstance(error, bgws.HandshakeRejected)
    assert (error.status, error.location) == (301, target)
    assert "s3cret-in-location" not in str(error)
    assert "token=***" in str(error)
    assert len(server.connections) == 1


async def test_temporary_redirect_is_retried(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """A 307 that is not followed is retried with backoff, like a 5xx."""
    first = Steps(answer=Answer.redirect("/moved", status=307))
    async with HostileServer([first, Steps()]) as server:
        service = make_service(server.url, transport=transport)
        changes = Changes(service)
        async with service:
            backing_off = await changes.wait(bgws.State.BACKING_OFF)
            await changes.wait(bgws.State.CONNECTED)
    assert isinstance(backing_off.reason, bgws.HandshakeRejected)
    assert backing_off.reason.status == 307
    assert [r.path for r in server.requests] == ["/", "/"]


async def test_same_origin_redirect_followed(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """With follow_redirects, a same-origin redirect is followed with headers and outbox."""
    async with HostileServer([Steps(answer=Answer.redirect("/v2?room=1", 308)), Steps()]) as server:
        service = make_service(server.url, transport=transport, headers=AUTH, follow_redirects=True)
        changes = Changes(service)
        async with service:
            await service.send({"type": "queued"})
            await changes.wait(bgws.State.CONNECTED)
            await server.wait_for_connections(2)
            await server.connections[1].wait_for_frames(1)
    assert [r.path for r in server.requests] == ["/", "/v2?room=1"]
    assert [r.header("Authorization") for r in server.requests] == [AUTH["Authorization"]] * 2
    assert b'"queued"' in server.connections[1].data_frames[0].payload
    assert changes.into(bgws.State.BACKING_OFF) == []


async def test_cross_origin_redirect_never_followed(
    make_service: ServiceFactory, transport: Transport
) -> None:
    """Even with follow_redirects, another origin gets no request, credentials nor outbox."""
    async with HostileServer() as other:
        redirect = Steps(answer=Answer.redirect(other.url + "ws", 302))
        async with HostileServer(redirect) as server:
            service = make_service(
                server.url, transport=transport, headers=AUTH, follow_redirects=True
            )
            changes = Changes(service)
            async with service:
                await service.send({"type": "queued"})
                failed = await changes.wait(bgws.State.BACKING_OFF)
                await server.wait_for_connections(2)
        assert other.connections == []
    assert isinstance(failed.reason, bgws.HandshakeRejected)
    assert failed.reason.location == other.url + "ws"
    assert "same-origin" in str(failed.reason)
    assert all(c.frames == [] for c in server.connections)


async def test_redirect_loop_is_bounded(make_service: ServiceFactory) -> None:
    """A same-origin redirect loop stops after MAX_REDIRECTS hops, as a fatal error."""

    async def loop(connection: HostileConnection) -> None:
        connection.answer(Answer.redirect(f"/hop{connection.attempt}", 301))

    async with HostileServer(loop) as server:
        service = make_service(server.url, follow_redirects=True)
        changes = Changes(service)
        async with service:
            failed = await changes.wait(bgws.State.FAILED)
    assert "more than 5 redirects" in str(failed.reason)
    assert len(server.connections) == MAX_REDIRECTS + 1


def test_permanent_redirects_are_fatal() -> None:
    """301 and 308 not followed are fatal; 302, 303 and 307 are retried."""
    verdicts = {s: classify_error(bgws.HandshakeRejected(s)) for s in (301, 302, 303, 307, 308)}
    assert verdicts == {301: "fatal", 302: "retry", 303: "retry", 307: "retry", 308: "fatal"}


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/v2?a=1", "wss://h.example:8443/v2?a=1"),
        ("wss://h.example:8443/x", "wss://h.example:8443/x"),
        ("https://h.example:8443/x#frag", "wss://h.example:8443/x"),
        ("ftp://h.example/x", None),
        ("//other.example/x", None),
        ("relative/path", None),
    ],
)
def test_locations_resolve_to_websocket_urls(location: str, expected: str | None) -> None:
    """A Location is resolved against the URL; http(s) maps to ws(s); others are unusable."""
    assert _resolve("wss://h.example:8443/ws?t=1", location) == expected


def test_origin_compares_scheme_host_and_port() -> None:
    """Same origin means same scheme, host (any case) and port (defaults filled in)."""
    from urllib.parse import urlsplit

    assert _origin(urlsplit("ws://H.example/a")) == _origin(urlsplit("ws://h.example:80/b"))
    assert _origin(urlsplit("wss://h.example/")) != _origin(urlsplit("ws://h.example/"))
    assert _origin(urlsplit("ws://h.example:81/")) != _origin(urlsplit("ws://h.example/"))
