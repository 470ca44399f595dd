"""The transport conformance suite: every rule a bgws transport must keep, checked on the wire.

:func:`check_transport` opens links with a transport against a :class:`HostileServer` (for
the rules a peer can break) and a :class:`Server` (for echo, fragmentation, pings, close codes
and subprotocols), and raises an ``AssertionError`` naming the first rule that failed::

    from bgws.testing import check_transport

    async def test_my_transport() -> None:
        report = await check_transport(MyTransport)
        assert not report.skipped

Every rule is in :data:`RULES`, with the words of the promise it checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final

from bgws.errors import (
    AuthRejected,
    BgwsError,
    ConnectionClosed,
    HandshakeRejected,
    LinkError,
    MessageTooBig,
)
from bgws.testing._hostile import Answer, HostileConnection, HostileServer, Steps
from bgws.testing._server import Server
from bgws.testing._wire import Frames, Opcode
from bgws.transport import ConnectRequest, Link, Transport

__all__ = ["RULES", "ConformanceReport", "Rule", "TransportFactory", "check_transport"]

TransportFactory = Callable[[], Transport]
"""Makes a fresh transport: ``PicowsTransport``, or ``lambda: MyTransport(option=1)``."""

_LIMIT: Final = 64 * 1024
"""The ``max_message_size`` the rules connect with."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One promise a transport keeps, and the check that proves it.

    Attributes:
        name: A short stable name (``"reserved-bits"``).
        promise: What a conforming transport does, in one sentence.
        check: ``await check(factory, timeout)`` raises ``AssertionError`` when broken.
    """

    name: str
    promise: str
    check: Callable[[TransportFactory, float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ConformanceReport:
    """What :func:`check_transport` checked.

    Attributes:
        passed: The names of the rules that held, in order.
        skipped: The names of the rules not run (not asked for).
    """

    passed: tuple[str, ...]
    skipped: tuple[str, ...]


class _Recorder:
    """A sink that records what a link delivers and when it closed."""

    def __init__(self) -> None:
        self.data: list[tuple[bytes, bool]] = []
        self.pongs = 0
        self.problems: list[BgwsError] = []
        self.closed: asyncio.Future[LinkError] = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Event()

    def on_data(self, payload: bytes, binary: bool, last: bool) -> None:
        self.data.append((bytes(payload), binary))
        self._changed.set()

    def on_read_done(self) -> None:
        pass

    def on_pong(self) -> None:
        self.pongs += 1
        self._changed.set()

    def on_problem(self, error: BgwsError) -> None:
        self.problems.append(error)

    def on_closed(self, error: LinkError) -> None:
        assert not self.closed.done(), "Sink.on_closed was called twice"
        self.closed.set_result(error)
        self._changed.set()

    async def wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None


async def _open(
    factory: TransportFactory, url: str, sink: _Recorder, timeout: float, **options: object
) -> Link:
    request = ConnectRequest(url, max_message_size=_LIMIT, timeout=timeout, **options)  # type: ignore[arg-type]
    return await factory().connect(request, sink)


async def _closed(sink: _Recorder, timeout: float) -> LinkError:
    try:
        return await asyncio.wait_for(asyncio.shield(sink.closed), timeout)
    except TimeoutError:
        raise AssertionError("the link never reported on_closed") from None


def _violation(frames: bytes, code: int) -> Callable[[TransportFactory, float], Awaitable[None]]:
    """A check: after ``frames`` (then a valid text frame), the client closes with ``code``."""

    async def check(factory: TransportFactory, timeout: float) -> None:
        steps = Steps(send=[frames, Frames.text('{"type": "after"}')])
        async with HostileServer(steps) as server:
            sink = _Recorder()
            link = await _open(factory, server.url, sink, timeout)
            sent = await server.wait_for_close_code(timeout=timeout)
            error = await _closed(sink, timeout)
            link.abort()
        assert sent == code, f"the client closed with {sent}, not {code}"
        assert isinstance(error, ConnectionClosed), f"on_closed got {error!r}"
        assert error.code == code, f"on_closed reported code {error.code}, not {code}"
        assert sink.data == [], f"data reached the sink: {sink.data[:2]!r}"
        if code == 1009:
            assert any(isinstance(p, MessageTooBig) for p in sink.problems), "no MessageTooBig"

    return check


async def _nothing_after_close(factory: TransportFactory, timeout: float) -> None:
    async def script(connection: HostileConnection) -> None:
        connection.echo_close = connection.auto_pong = False  # a peer that ignores the close
        connection.answer()
        connection.send(Frames.oversized(_LIMIT + 1))
        await connection.wait_for_close(timeout)
        connection.send(Frames.text('{"type": "late"}'), Frames.binary(b"late"))
        connection.send(Frames.close(1000))
        await connection.drain()
        connection.hang_up()

    async with HostileServer(script) as server:
        sink = _Recorder()
        link = await _open(factory, server.url, sink, timeout)
        await _closed(sink, timeout)
        link.abort()
    assert sink.data == [], f"data reached the sink after the close: {sink.data[:2]!r}"


async def _close_stops_delivery(factory: TransportFactory, timeout: float) -> None:
    async def burst(connection: HostileConnection) -> None:
        connection.answer()
        await connection.wait_for_frames(1, timeout)  # the client's "go": its link is open
        connection.send(*(Frames.text(f'{{"n": {n}}}') for n in range(5)))

    async with HostileServer(burst) as server:
        sink = _Recorder()
        deliver = sink.on_data

        def close_on_first(payload: bytes, binary: bool, last: bool) -> None:
            deliver(payload, binary, last)
            link.close()  # the rest of the burst is already read, or on its way

        sink.on_data = close_on_first  # type: ignore[method-assign]
        link = await _open(factory, server.url, sink, timeout)
        link.send("go", False)
        await _closed(sink, timeout)
    assert sink.data == [(b'{"n": 0}', False)], f"delivered after close(): {sink.data[1:]!r}"


def _refused_handshake(
    answer: Answer, offered: tuple[str, ...] = ()
) -> Callable[[TransportFactory, float], Awaitable[None]]:
    """A check: the answer fails the connect with a LinkError, and nothing is delivered."""

    async def check(factory: TransportFactory, timeout: float) -> None:
        async with HostileServer(Steps(answer=answer, send=[Frames.text("x")])) as server:
            sink = _Recorder()
            try:
                link = await _open(factory, server.url, sink, timeout, subprotocols=offered)
            except LinkError:
                pass
            else:
                link.abort()
                raise AssertionError(f"connected despite the answer {answer!r}")
        assert sink.data == [], "data reached the sink of a refused handshake"

    return check


async def _rejection(
    factory: TransportFactory, answer: Answer, timeout: float
) -> HandshakeRejected:
    """The HandshakeRejected a connect to a server answering ``answer`` raises."""
    async with HostileServer(Steps(answer=answer)) as server:
        try:
            link = await _open(factory, server.url, _Recorder(), timeout)
        except HandshakeRejected as exc:
            return exc
        link.abort()
    raise AssertionError(f"connected despite HTTP {answer.status}")


async def _redirect_refused(factory: TransportFactory, timeout: float) -> None:
    async with HostileServer() as other:
        target = other.url + "moved?token=s3cret-value"
        error = await _rejection(factory, Answer.redirect(target, 301), timeout)
        assert other.connections == [], "the transport contacted the redirect target"
    assert error.status == 301, f"status {error.status}"
    assert error.location == target, f"location {error.location!r}"
    assert "s3cret-value" not in str(error), "the Location's secret is in the message"


def _status(
    status: int, kind: type[HandshakeRejected]
) -> Callable[[TransportFactory, float], Awaitable[None]]:
    async def check(factory: TransportFactory, timeout: float) -> None:
        error = await _rejection(factory, Answer.refuse(status), timeout)
        assert type(error) is kind, f"HTTP {status} raised {type(error).__name__}"
        assert error.status == status, f"status {error.status}"

    return check


async def _hang_up(factory: TransportFactory, timeout: float) -> None:
    async def script(connection: HostileConnection) -> None:
        connection.hang_up()

    async with HostileServer(script) as server:
        try:
            link = await _open(factory, server.url, _Recorder(), timeout)
        except LinkError:
            return
        link.abort()
        raise AssertionError("connect returned a link although the server hung up")


async def _utf8_text(factory: TransportFactory, timeout: float) -> None:
    text = "h\u00e9llo \u2713 \U0001f600".encode()
    halves = Frames.text(text[:2], fin=False) + Frames.continuation(text[2:8], fin=False)
    frames = [Frames.text(text), halves + Frames.continuation(text[8:])]
    async with HostileServer(Steps(send=frames)) as server:
        sink = _Recorder()
        link = await _open(factory, server.url, sink, timeout)
        await sink.wait(lambda: len(sink.data) >= 2, timeout, "two text messages")
        link.close()
        await _closed(sink, timeout)
    assert sink.data == [(text, False), (text, False)], f"got {sink.data!r}"


async def _echo(factory: TransportFactory, timeout: float) -> None:
    async with Server(echo=True) as server:
        sink = _Recorder()
        link = await _open(factory, server.url, sink, timeout)
        link.send('{"type": "t\u00e9xt"}', False)
        link.send(b"\x00\xffbinary", True)
        assert link.send_many([(b'{"n": 1}', False), (b"\x01", True)]) == 2, "send_many"
        await sink.wait(lambda: len(sink.data) >= 4, timeout, "four echoed messages")
        link.close()
        await _closed(sink, timeout)
    expected = [
        ('{"type": "t\u00e9xt"}'.encode(), False),
        (b"\x00\xffbinary", True),
        (b'{"n": 1}', False),
        (b"\x01", True),
    ]
    assert sink.data == expected, f"got {sink.data!r}"


async def _fragments(factory: TransportFactory, timeout: float) -> None:
    async with Server() as server:
        sink = _Recorder()
        link = await _open(factory, server.url, sink, timeout)
        await server.wait_for_connections(1, timeout=timeout)
        server.push({"type": "big", "pad": "q" * 3000}, fragments=4)
        server.push(b"\x00" * 1000, fragments=3)
        await sink.wait(lambda: len(sink.data) >= 2, timeout, "two reassembled messages")
        link.close()
        await _closed(sink, timeout)
    assert sink.data[0][0].startswith(b'{"type":'), "text"
    assert sink.data[0][1] is False, "text is not binary"
    assert sink.data[1] == (b"\x00" * 1000, True), "binary"


async def _ping(factory: TransportFactory, timeout: float) -> None:
    async with Server() as server:
        sink = _Recorder()
        link = await _open(factory, server.url, sink, timeout)
        link.ping()
        await sink.wait(lambda: sink.pongs >= 1, timeout, "a pong")
        link.close()
        await _closed(sink, timeout)


async def _server_close(factory: TransportFactory, timeout: float) -> None:
    async with Server() as server:
        sink = _Recorder()
        link = await _open(factory, server.url, sink, timeout)
        await server.wait_for_connections(1, timeout=timeout)
        server.close(4000, "bye")
        error = await _closed(sink, timeout)
        assert link.closed, "Link.closed is false after on_closed"
    assert isinstance(error, ConnectionClosed), f"on_closed got {error!r}"
    assert (error.code, error.reason) == (4000, "bye"), f"got {error.code} {error.reason!r}"


async def _client_close(factory: TransportFactory, timeout: float) -> None:
    async with HostileServer() as server:
        sink = _Recorder()
        link = await _open(factory, server.url, sink, timeout, headers=[("X-Bgws-Check", "1")])
        link.close(4001, "done")
        code = await server.wait_for_close_code(timeout=timeout)
        await _closed(sink, timeout)
        await link.wait_closed()
    assert code == 4001, f"the server saw close code {code}"
    assert server.connections[0].request.header("X-Bgws-Check") == "1", "headers not sent"


async def _subprotocol(factory: TransportFactory, timeout: float) -> None:
    answers = [Steps(answer=Answer.switch(subprotocol="b.v2")), Steps()]
    async with HostileServer(answers) as server:
        chosen = []
        for offered in (("a.v1", "b.v2"), ()):
            sink = _Recorder()
            link = await _open(factory, server.url, sink, timeout, subprotocols=offered)
            chosen.append(link.subprotocol)
            link.close()
            await _closed(sink, timeout)
        offer = server.connections[0].request.header("Sec-WebSocket-Protocol") or ""
    assert [p.strip() for p in offer.split(",")] == ["a.v1", "b.v2"], f"offered {offer!r}"
    assert chosen == ["b.v2", None], f"Link.subprotocol gave {chosen}"


def _rules() -> tuple[Rule, ...]:
    v = _violation
    return (
        Rule("echo", "text and binary messages go out and come back unchanged", _echo),
        Rule("fragments", "fragmented messages arrive reassembled, as one message", _fragments),
        Rule("utf8-text", "valid multi-byte UTF-8 text, whole or split, is delivered", _utf8_text),
        Rule("ping", "a ping is answered by a pong, reported by Sink.on_pong", _ping),
        Rule("server-close", "the server's close code and reason reach on_closed", _server_close),
        Rule("client-close", "Link.close(code) sends that code; headers are sent", _client_close),
        Rule("subprotocol", "Link.subprotocol is the one the server chose, or None", _subprotocol),
        Rule("invalid-utf8", "a text frame that is not UTF-8 fails the link with 1007",
             v(Frames.bad_utf8(), 1007)),
        Rule("invalid-utf8-fragmented", "a fragmented text message that is not UTF-8 fails "
             "the link with 1007", v(Frames.bad_utf8_fragmented(), 1007)),
        Rule("rsv1", "RSV1 set with no extension negotiated fails the link with 1002",
             v(Frames.reserved_bits(rsv1=True), 1002)),
        Rule("rsv2", "RSV2 set fails the link with 1002",
             v(Frames.reserved_bits(rsv1=False, rsv2=True), 1002)),
        Rule("rsv3", "RSV3 set fails the link with 1002",
             v(Frames.reserved_bits(rsv1=False, rsv3=True), 1002)),
        Rule("rsv-ping", "RSV1 set on a ping fails the link with 1002 (no pong answers it)",
             v(Frames.reserved_bits(opcode=Opcode.PING), 1002)),
        Rule("data-opcode", "a reserved data opcode (0x3) fails the link with 1002",
             v(Frames.unknown_opcode(0x3), 1002)),
        Rule("control-opcode", "a reserved control opcode (0xB) fails the link with 1002",
             v(Frames.unknown_opcode(0xB), 1002)),
        Rule("fragmented-control", "a fragmented ping fails the link with 1002",
             v(Frames.fragmented_ping(), 1002)),
        Rule("long-control", "a ping over 125 bytes fails the link with 1002",
             v(Frames.long_ping(), 1002)),
        Rule("orphan-continuation", "a continuation with no message to continue fails the "
             "link with 1002, and the frame after it is not delivered",
             v(Frames.orphan_continuation(), 1002)),
        Rule("interleaved", "a new data frame inside a fragmented message fails the link "
             "with 1002", v(Frames.interleaved_data(), 1002)),
        Rule("declared-too-big", "a header declaring 2**63-1 bytes fails the link with 1009 "
             "and reports MessageTooBig", v(Frames.huge_length(), 1009)),
        Rule("too-big", "a frame over max_message_size fails the link with 1009 and reports "
             "MessageTooBig", v(Frames.oversized(_LIMIT + 1), 1009)),
        Rule("bad-close-code", "a close frame with code 999 fails the link with 1002",
             v(Frames.bad_close_code(999), 1002)),
        Rule("reserved-close-code", "a close frame with code 1005 fails the link with 1002",
             v(Frames.bad_close_code(1005), 1002)),
        Rule("bad-close-reason", "a close reason that is not UTF-8 fails the link with 1007",
             v(Frames.bad_close_reason(), 1007)),
        Rule("short-close", "a 1-byte close payload fails the link with 1002",
             v(Frames.one_byte_close(), 1002)),
        Rule("masked", "a masked server frame fails the link with 1002",
             v(Frames.masked(), 1002)),
        Rule("garbage", "bytes that are no frame fail the link with 1002",
             v(Frames.garbage(), 1002)),
        Rule("nothing-after-close", "once the client has sent a close, nothing more is "
             "delivered, even when the peer ignores the close", _nothing_after_close),
        Rule("close-stops-delivery", "after Link.close(), no further message is delivered, "
             "even one already received", _close_stops_delivery),
        Rule("unoffered-subprotocol", "a 101 naming a subprotocol never offered fails the "
             "connect", _refused_handshake(Answer.switch(subprotocol="x.evil"))),
        Rule("other-subprotocol", "a 101 naming a subprotocol other than those offered fails "
             "the connect", _refused_handshake(Answer.switch(subprotocol="x"), ("chat",))),
        Rule("unoffered-extension", "a 101 naming an extension never offered fails the "
             "connect", _refused_handshake(Answer.switch(extensions="x-bgws-unknown"))),
        Rule("wrong-accept", "a 101 with a wrong Sec-WebSocket-Accept fails the connect",
             _refused_handshake(Answer.wrong_accept())),
        Rule("redirect", "a 301 is a HandshakeRejected naming the Location (redacted in the "
             "message), and the target is never contacted", _redirect_refused),
        Rule("auth-401", "HTTP 401 is an AuthRejected", _status(401, AuthRejected)),
        Rule("auth-403", "HTTP 403 is an AuthRejected", _status(403, AuthRejected)),
        Rule("http-500", "HTTP 500 is a HandshakeRejected", _status(500, HandshakeRejected)),
        Rule("hang-up", "a server that hangs up mid-handshake fails the connect", _hang_up),
    )  # fmt: skip


RULES: Final[tuple[Rule, ...]] = _rules()
"""Every rule :func:`check_transport` checks, in order."""


async def check_transport(
    factory: TransportFactory, *, rules: Iterable[str] | None = None, timeout: float = 5.0
) -> ConformanceReport:
    """Check that a transport keeps every rule of :data:`RULES`, against loopback servers.

    Args:
        factory: Makes a fresh transport (called once per rule and connection).
        rules: The names of the rules to run; ``None``: all of them.
        timeout: Seconds any one wait may take (a connect, a close, a message).

    Returns:
        The names of the rules that held, and of those not run.

    Raises:
        AssertionError: A rule failed; the message names it and says what happened.
        ValueError: ``rules`` names an unknown rule.
    """
    wanted = None if rules is None else set(rules)
    if wanted is not None and (unknown := wanted - {rule.name for rule in RULES}):
        raise ValueError(f"unknown rules: {sorted(unknown)}")
    passed: list[str] = []
    skipped: list[str] = []
    for rule in RULES:
        if wanted is not None and rule.name not in wanted:
            skipped.append(rule.name)
            continue
        try:
            await rule.check(factory, timeout)
        except AssertionError as exc:
            raise AssertionError(f"rule {rule.name!r} ({rule.promise}) failed: {exc}") from exc
        except TimeoutError as exc:
            raise AssertionError(
                f"rule {rule.name!r} ({rule.promise}) failed: nothing happened within {timeout:g}s"
            ) from exc
        except BgwsError as exc:
            raise AssertionError(
                f"rule {rule.name!r} ({rule.promise}) failed: {type(exc).__name__}: {exc}"
            ) from exc
        passed.append(rule.name)
    return ConformanceReport(passed=tuple(passed), skipped=tuple(skipped))
