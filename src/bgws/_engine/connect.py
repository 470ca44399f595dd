"""Opening one link (auth, TLS, request) and watching its health (keepalive).

:func:`open_link` turns the config and the auth handler's answer into a
:class:`~bgws.transport.ConnectRequest`; :class:`Connection` is the transport's sink for one
link and runs its keepalive. :func:`check_link_options` refuses, when a service is built, what
``open_link`` would refuse on every attempt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import inspect
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

from .._redact import is_sensitive_name, redact_url
from ..config import Config
from ..errors import (
    AuthRejected,
    BgwsError,
    ConfigError,
    ConnectionClosed,
    DeadLink,
    HandlerError,
    HandshakeRejected,
    InsecureCredentials,
    LinkError,
)
from ..handlers import AuthHandler, HeartbeatHandler
from ..message import Codec
from ..transport import ConnectRequest, Link, Transport
from ..transport._policy import REDIRECT_STATUSES
from .clock import SYSTEM_CLOCK, Clock, nap
from .flag import Flag
from .inbox import Inbox, Receive
from .writer import Writer

__all__ = ["MAX_REDIRECTS", "Connection", "Screen", "check_link_options", "open_link"]

MAX_REDIRECTS: Final = 5
"""The most same-origin redirects one connect attempt follows (``follow_redirects``)."""


def _ignore_rtt(seconds: float) -> None:
    return None


class Connection:
    """The sink of one link: frames to the inbox, signs of life to the keepalive, loss to the
    loop.

    Args:
        inbox: the service's inbox.
        auth_close_codes: close codes that mean "credentials refused".
        report: reports a problem the transport handled itself.
    """

    def __init__(
        self,
        inbox: Inbox,
        auth_close_codes: tuple[int, ...],
        report: Callable[[BgwsError], None],
    ) -> None:
        self._inbox = inbox
        self._auth_codes = auth_close_codes
        self._report = report
        self._link: Link | None = None
        # Set by the first frame of any kind (a pong, a message) after a keepalive probe.
        self._heard = Flag()
        # The inbox's current route for a frame (it announces a change to _route_to).
        self._deliver: Receive = inbox.receive
        self.lost: asyncio.Future[LinkError] = asyncio.get_running_loop().create_future()
        # Frames that arrive with the handshake wait until the service has moved to CONNECTED
        # (attach); from then on the hot path puts them straight into the inbox.
        self._early: list[tuple[bytes, bool]] = []
        self.on_data: Receive = self._hold
        self.on_read_done: Callable[[], None] = _nothing
        # A rotation's overlap: each frame is shown to the screen first (None: no screen).
        self._screen: Screen | None = None
        self._route: Receive = inbox.receive  # the inbox's route, unscreened
        self.arrived = Flag()
        """Set by the first frame held before :meth:`attach` (the new link of a rotation)."""

    def _hold(self, payload: bytes, binary: bool, last: bool) -> None:
        self._early.append((payload, binary))
        self.arrived.set()

    def on_pong(self) -> None:
        self._heard.set()

    def _first_after_probe(self, payload: bytes, binary: bool, last: bool) -> None:
        """Stand in for the inbox until one frame arrives: it is a sign of life.

        Swapped in by the keepalive (and out by the first frame), so the frames of a busy
        link pay nothing for it.
        """
        self.on_data = deliver = self._deliver
        self._heard.set()
        deliver(payload, binary, last)

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
        inbox = self._inbox
        inbox.attach(link.pause_reading, link.resume_reading, self._heard.set, self._route_to)
        self._route = inbox.receive
        self.on_data = self._deliver = self._screened(inbox.receive)
        self.on_read_done = inbox.read_done
        early, self._early = self._early, []
        for n, (payload, binary) in enumerate(early, 1):
            self.on_data(payload, binary, n == len(early))  # a frame may switch the route
        if early:  # delivered from this task: the read callback's frames may still run inline
            inbox.frames_from_callbacks()

    def _route_to(self, receive: Receive) -> None:
        """The inbox switched routes: frames go to ``receive`` (after a probe's first)."""
        self._route = receive
        receive = self._screened(receive)
        if self.on_data == self._deliver:
            self.on_data = receive
        self._deliver = receive

    def _screened(self, receive: Receive) -> Receive:
        """``receive`` behind the screen, if one is up (only during a rotation)."""
        screen = self._screen
        if screen is None:
            return receive

        def screened(payload: bytes, binary: bool, last: bool) -> None:
            if screen(payload):
                receive(payload, binary, last)

        return screened

    def screen(self, keep: Screen | None) -> None:
        """Show each frame to ``keep`` first; one it returns ``False`` for is dropped.

        A rotation records the old link's frames this way during the overlap, and drops
        their copies on the new link; ``None`` takes the screen down.
        """
        self._screen = keep
        self._route_to(self._route)

    @property
    def screening(self) -> Screen | None:
        """The screen up now, or ``None``."""
        return self._screen

    def retire(self) -> None:
        """The link was replaced (rotation): its frames from now on are dropped."""
        self._screen = _refuse
        self._route_to(self._route)

    def detach(self) -> None:
        self._inbox.detach()

    async def keepalive(
        self,
        config: Config,
        heartbeat: HeartbeatHandler | None,
        codec: Codec,
        writer: Writer,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rtt: Callable[[float], None] = _ignore_rtt,
    ) -> None:
        """Probe every ``heartbeat_interval``; no sign of life within ``ping_timeout`` fails it.

        The application heartbeat goes out through ``writer`` (ahead of the outbox).

        The probe is a protocol ping, or the application heartbeat. Any frame that arrives
        after it is a sign of life (a pong, the heartbeat reply, any other message) and ends
        the round at once, so a link that goes silent is declared dead within
        ``heartbeat_interval + ping_timeout``, with or without ``app_heartbeat_reply_type``.

        Two things extend a round instead of failing it. While the inbox has paused reading
        (a slow consumer) a missing answer proves nothing, and the next round begins. While
        the bytes written before the probe are still draining (a slow uplink: the probe
        waits behind them) the wait goes on, one ``ping_timeout`` at a time, as long as the
        link's write backlog shrank since the last look; once writes stop progressing the
        link is declared dead within ``2 * ping_timeout``.

        Every wait is on ``clock``; the wait between probes ends early when the process was
        suspended (see :func:`~bgws._engine.clock.nap`), so a link that died while the machine
        slept is found within ``ping_timeout`` of the wake-up. Each round that was answered
        hands ``rtt`` the seconds from probe to answer.
        """
        interval = config.heartbeat_interval
        link = self._link
        if interval is None or link is None:
            return
        timeout = config.ping_timeout
        load = self._inbox.load
        heard = self._heard
        what = "pong" if heartbeat is None else "heartbeat reply"
        while True:
            await nap(clock, interval)
            heard.clear()
            self.on_data = self._first_after_probe
            backlog = link.write_backlog  # the bytes ahead of the probe
            probed = clock.monotonic()
            if heartbeat is None:
                link.ping()
            else:
                payload, binary, _ = codec.encode(heartbeat.heartbeat_message(), assign_id=False)
                writer.control((payload, binary), paced=False)  # counted, never held
            pauses = load.pauses
            while not await _within(heard, timeout, clock):
                if load.paused or load.holding or load.pauses != pauses:
                    break
                left = link.write_backlog
                if left < backlog:  # the bytes ahead of the probe are still draining
                    backlog = left
                    continue
                stuck = f", {left} bytes not draining" if left else ""
                self.fail(DeadLink(f"no {what} within ping_timeout ({timeout:g}s){stuck}"))
                return
            if heard.is_set():
                rtt(clock.monotonic() - probed)
            if self.on_data == self._first_after_probe:
                self.on_data = self._deliver


async def _within(event: Flag, timeout: float, clock: Clock) -> bool:
    """Whether ``event`` is set within ``timeout`` seconds of ``clock``."""
    try:
        async with clock.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


def _nothing() -> None:
    return None


Screen = Callable[[bytes], bool]
"""Decides whether a frame's payload goes on to the inbox (``True``) or is dropped."""


def _refuse(payload: bytes) -> bool:
    return False


def check_link_options(
    config: Config, auth: AuthHandler | None, ssl_context: ssl.SSLContext | None
) -> None:
    """Refuse, when the service is built, link options that no attempt could use.

    Args:
        config: the service's config.
        auth: the auth handler, if any.
        ssl_context: the caller's own TLS context, if any.

    Raises:
        InsecureCredentials: ``auth`` requires credentials and they would travel over plain
            ``ws://`` to a host that is not loopback (and the config does not allow it).
        ConfigError: ``ssl_context`` with a ``ws://`` URL, or together with ``tls_*`` options.
        TypeError: ``ssl_context`` is not an :class:`ssl.SSLContext`.
    """
    if (
        auth is not None
        and auth.requires_auth
        and not config.is_secure
        and not config.is_loopback
        and not config.allow_insecure_credentials
    ):
        raise InsecureCredentials(
            "url",
            f"the auth handler's credentials would travel in clear text over ws:// to "
            f"{config.host}, a host that is not loopback; use wss://, or set "
            "allow_insecure_credentials = true if you must",
        )
    if ssl_context is None:
        return
    if not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext, not {type(ssl_context)}")
    if not config.is_secure:
        raise ConfigError("ssl_context", "is a TLS option, but the URL is ws://; use wss://")
    given = [n for n in ("tls_ca_file", "tls_cert_file", "tls_key_file") if getattr(config, n)]
    if not config.tls_verify:
        given.append("tls_verify")
    if given:
        raise ConfigError(
            given[0], "set it on your ssl_context instead: bgws uses that context as given"
        )


async def open_link(
    config: Config,
    transport: Transport,
    sink: Connection,
    auth: AuthHandler | None,
    connection_data: Mapping[str, Any] | None,
    codec: Codec,
    ssl_context: ssl.SSLContext | None = None,
) -> Link:
    """Fetch fresh credentials, check they may travel, and open one link.

    Args:
        config: the service's config.
        transport: the WebSocket library seam.
        sink: receives the link's frames and events.
        auth: the auth handler, asked for credentials before this attempt.
        connection_data: what ``connect()`` got, handed to the auth handler.
        codec: encodes an auth first message.
        ssl_context: the caller's own TLS context; ``None`` builds one from the config's
            ``tls_*`` options, reading their files again when they changed.

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
    carries_secrets = bool(auth_data) or any(is_sensitive_name(k) for k, _ in headers)
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
    tls = None
    if config.is_secure:
        tls = ssl_context if ssl_context is not None else _ssl_context(config)
    request = ConnectRequest(
        url=url,
        headers=headers,
        subprotocols=config.subprotocols,
        ssl_context=tls,
        max_message_size=config.max_message_size,
        timeout=config.connect_timeout,
    )
    query = auth_data if auth_data and mode == "query" else None
    link = await _connect(transport, request, sink, config.follow_redirects, query)
    if auth_data and mode == "message":
        payload, binary, _ = codec.encode(dict(auth_data), assign_id=False)
        Writer.hello(link, (payload, binary))
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


def _ssl_context(config: Config) -> ssl.SSLContext:
    """The client TLS context for ``config``, built again when one of its files changed.

    A CA bundle or client certificate rewritten in place (or replaced) is read on the next
    attempt: the cache key holds a digest of each file's content, so a rewrite is seen even
    when it keeps the size and lands within the file system's timestamp granularity. Hashing
    costs about 0.15 ms for a 220 kB CA bundle, building a context from it about 20 ms
    (measured here), so an unchanged set of files reuses the context already built.
    """
    return _build_ssl_context(
        config.tls_verify,
        _file_key(config.tls_ca_file),
        _file_key(config.tls_cert_file),
        _file_key(config.tls_key_file),
    )


_FileKey = tuple[str, bytes] | None


def _file_key(path: str | None) -> _FileKey:
    """A file's path with a digest of its content (empty when it cannot be read)."""
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            return (path, hashlib.sha256(file.read()).digest())
    except OSError:
        return (path, b"")  # building the context reports why the file cannot be read


@functools.lru_cache(maxsize=16)
def _build_ssl_context(
    verify: bool, ca_file: _FileKey, cert_file: _FileKey, key_file: _FileKey
) -> ssl.SSLContext:
    """A client TLS context; verification is on unless the config turns it off."""
    context = ssl.create_default_context(cafile=None if ca_file is None else ca_file[0])
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file is not None:
        context.load_cert_chain(cert_file[0], None if key_file is None else key_file[0])
    return context
