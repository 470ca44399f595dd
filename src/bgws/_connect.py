"""Opening one link (auth, TLS, request) and watching its health (keepalive).

:func:`open_link` turns the config and the auth handler's answer into a
:class:`~bgws.transport.ConnectRequest`; :class:`Connection` is the transport's sink for one
link and runs its keepalive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

from ._redact import is_credential_name, redact_url
from .config import Config
from .dispatch import Dispatcher
from .errors import (
    AuthRejected,
    BgwsError,
    ConnectionClosed,
    DeadLink,
    HandlerError,
    HandshakeRejected,
    InsecureCredentials,
    LinkError,
)
from .handlers import AuthHandler, HeartbeatHandler
from .message import Codec
from .transport import ConnectRequest, Link, Transport
from .transport._policy import REDIRECT_STATUSES

__all__ = ["MAX_REDIRECTS", "Connection", "open_link"]

MAX_REDIRECTS: Final = 5
"""The most same-origin redirects one connect attempt follows (``follow_redirects``)."""


class Connection:
    """The sink of one link: frames to the inbox, pongs to the keepalive, loss to the loop.

    Args:
        dispatcher: the service's inbox.
        auth_close_codes: close codes that mean "credentials refused".
        report: reports a problem the transport handled itself.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        auth_close_codes: tuple[int, ...],
        report: Callable[[BgwsError], None],
    ) -> None:
        self._dispatcher = dispatcher
        self._auth_codes = auth_close_codes
        self._report = report
        self._link: Link | None = None
        self._pong = asyncio.Event()
        self.lost: asyncio.Future[LinkError] = asyncio.get_running_loop().create_future()
        # Frames that arrive with the handshake wait until the service has moved to CONNECTED
        # (attach); from then on the hot path puts them straight into the inbox.
        self._early: list[tuple[bytes, bool]] = []
        self.on_data: Callable[[bytes, bool, bool], None] = self._hold
        self.on_read_done: Callable[[], None] = _nothing

    def _hold(self, payload: bytes, binary: bool, last: bool) -> None:
        self._early.append((payload, binary))

    def on_pong(self) -> None:
        self._pong.set()

    def on_problem(self, error: BgwsError) -> None:
        self._report(error)

    def on_closed(self, error: LinkError) -> None:
        if isinstance(error, ConnectionClosed) and error.code in self._auth_codes:
            refused = AuthRejected(error.code, f"server closed with auth close code {error.code}")
            refused.__cause__ = error
            error = refused
        self._settle(error)

    def _settle(self, error: LinkError) -> None:
        if not self.lost.done():
            self.lost.set_result(error)

    def fail(self, error: LinkError) -> None:
        """Declare the link dead (keepalive) and drop it."""
        self._settle(error)
        if self._link is not None:
            self._link.abort()

    def attach(self, link: Link) -> None:
        """The handshake finished: wire the inbox's flow control to ``link``."""
        self._link = link
        dispatcher = self._dispatcher
        dispatcher.attach(link.pause_reading, link.resume_reading, self._pong.set)
        self.on_data = dispatcher.push
        self.on_read_done = dispatcher.read_done
        early, self._early = self._early, []
        for n, (payload, binary) in enumerate(early, 1):
            dispatcher.push(payload, binary, n == len(early))

    def detach(self) -> None:
        self._dispatcher.detach()

    async def keepalive(
        self, config: Config, heartbeat: HeartbeatHandler | None, codec: Codec
    ) -> None:
        """Ping every ``heartbeat_interval``; no answer within ``ping_timeout`` fails the link.

        While the inbox has paused reading (a slow consumer), a missing pong proves nothing, so
        it does not count. With an application heartbeat any incoming frame proves the link.
        """
        interval = config.heartbeat_interval
        link = self._link
        if interval is None or link is None:
            return
        timeout = config.ping_timeout
        inbox = self._dispatcher
        what = "pong" if heartbeat is None else "heartbeat reply"
        while True:
            await asyncio.sleep(interval)
            self._pong.clear()
            received, pauses = inbox.received, inbox.pauses
            if heartbeat is None:
                link.ping()
            else:
                payload, binary, _ = codec.encode(heartbeat.heartbeat_message(), assign_id=False)
                link.send(payload, binary)
            try:
                async with asyncio.timeout(timeout):
                    await self._pong.wait()
            except TimeoutError:
                if inbox.paused or inbox.pauses != pauses:
                    continue
                if heartbeat is not None and inbox.received != received:
                    continue
                self.fail(DeadLink(f"no {what} within ping_timeout ({timeout:g}s)"))
                return


def _nothing() -> None:
    return None


async def open_link(
    config: Config,
    transport: Transport,
    sink: Connection,
    auth: AuthHandler | None,
    connection_data: Mapping[str, Any] | None,
    codec: Codec,
) -> Link:
    """Fetch fresh credentials, check they may travel, and open one link.

    Raises:
        InsecureCredentials: credentials over ``ws://`` to a non-loopback host (not allowed).
        HandlerError: the auth handler's ``get_auth_data`` raised.
        HandshakeRejected: a status other than 101, a redirect included (followed only with
            ``follow_redirects``, to the same origin, :data:`MAX_REDIRECTS` times at most).
        LinkError: the transport could not connect.
    """
    url = config.url
    headers = [(str(k), str(v)) for k, v in config.headers.items()]
    auth_data: Mapping[str, Any] | None = None
    if auth is not None and auth.requires_auth:
        try:
            auth_data = await _get_auth_data(auth, connection_data)
        except Exception as exc:
            raise HandlerError("auth handler get_auth_data") from exc
    carries_secrets = bool(auth_data) or any(is_credential_name(k) for k, _ in headers)
    if (
        carries_secrets
        and not config.is_secure
        and not config.is_loopback
        and not config.allow_insecure_credentials
    ):
        raise InsecureCredentials(
            "url",
            "refusing to send credentials over plain ws:// to a host that is not loopback; "
            "use wss:// or set allow_insecure_credentials",
        )
    mode = config.auth_mode
    if auth_data:
        if mode == "headers":
            headers.extend((str(k), str(v)) for k, v in auth_data.items())
        elif mode == "query":
            url = _with_query(url, auth_data)
    request = ConnectRequest(
        url=url,
        headers=headers,
        subprotocols=config.subprotocols,
        ssl_context=_ssl_context(
            config.tls_verify, config.tls_ca_file, config.tls_cert_file, config.tls_key_file
        )
        if config.is_secure
        else None,
        max_message_size=config.max_message_size,
        timeout=config.connect_timeout,
    )
    query = auth_data if auth_data and mode == "query" else None
    link = await _connect(transport, request, sink, config.follow_redirects, query)
    if auth_data and mode == "message":
        payload, binary, _ = codec.encode(dict(auth_data), assign_id=False)
        link.send(payload, binary)
    return link


async def _connect(
    transport: Transport,
    request: ConnectRequest,
    sink: Connection,
    follow: bool,
    auth_query: Mapping[str, Any] | None,
) -> Link:
    """Connect, following same-origin redirects when ``follow`` (the one redirect policy).

    The transports never follow a redirect; they raise :class:`HandshakeRejected` with its
    ``location``. A redirect to another origin (scheme, host, port) is never followed, so
    credentials and the outbox, which belong to one endpoint, never reach another host.

    Raises:
        HandshakeRejected: a redirect not followed, or more than :data:`MAX_REDIRECTS`.
        LinkError: the transport could not connect.
    """
    for _ in range(MAX_REDIRECTS):
        try:
            return await transport.connect(request, sink)
        except HandshakeRejected as exc:
            target = _redirect_target(exc, request.url, follow)
            if auth_query is not None:
                target = _with_query(target, auth_query)
            request = dataclasses.replace(request, url=target)
    try:
        return await transport.connect(request, sink)
    except HandshakeRejected as exc:
        if exc.status not in REDIRECT_STATUSES:
            raise
        raise HandshakeRejected(
            exc.status, f"more than {MAX_REDIRECTS} redirects in a row", location=exc.location
        ) from exc


def _redirect_target(error: HandshakeRejected, url: str, follow: bool) -> str:
    """Where a rejected handshake may be retried at once, or raise why not.

    Raises:
        HandshakeRejected: ``error`` itself if it is no redirect; else a redirect that is not
            to be followed (``follow`` off, another origin, or no usable ``Location``).
    """
    status, location = error.status, error.location
    if status not in REDIRECT_STATUSES:
        raise error
    shown = redact_url(location) if location else "nowhere (no Location)"
    if not follow:
        why = "redirects are not followed (set follow_redirects to follow same-origin ones)"
    else:
        target = _resolve(url, location) if location else None
        if target is not None and _origin(urlsplit(target)) == _origin(urlsplit(url)):
            return target
        why = "not followed: only same-origin redirects are"
    raise HandshakeRejected(
        status,
        f"server redirected the handshake (HTTP {status}) to {shown}; {why}",
        location=location,
    ) from error


_WS_SCHEMES: Final = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}
_DEFAULT_PORTS: Final = {"ws": 80, "wss": 443}


def _resolve(base: str, location: str) -> str | None:
    """``location`` as an absolute ws(s) URL (relative to ``base``), or ``None`` if unusable."""
    try:
        parts = urlsplit(location)
        if not parts.scheme and location.startswith("/") and not location.startswith("//"):
            return urlunsplit(urlsplit(base)._replace(path=parts.path, query=parts.query))
        scheme = _WS_SCHEMES.get(parts.scheme.lower())
        if scheme is None or not parts.hostname:
            return None
        return urlunsplit(parts._replace(scheme=scheme, fragment=""))
    except ValueError:
        return None


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    """Scheme, host and port of a URL, for the same-origin rule."""
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return (scheme, "", -1)
    return (scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme))


async def _get_auth_data(
    auth: AuthHandler, connection_data: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    method = auth.get_auth_data
    takes_data = bool(inspect.signature(method).parameters)
    call: Any = method
    result = call(connection_data) if takes_data else call()
    if inspect.isawaitable(result):
        result = await result
    if result is not None and not isinstance(result, Mapping):
        raise TypeError(f"get_auth_data must return a mapping or None, not {type(result)}")
    return result


def _with_query(url: str, extra: Mapping[str, Any]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.extend((str(k), str(v)) for k, v in extra.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


@functools.lru_cache(maxsize=16)
def _ssl_context(
    verify: bool, ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext:
    """A client TLS context; verification is on unless the config turns it off."""
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context
