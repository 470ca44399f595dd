"""``bgws demo``: a scripted tour of what a service does when the network misbehaves.

The demo starts a :class:`bgws.testing.Server` on loopback and a chat-profile service (with
short demo timings), then walks through one scenario and prints a live timeline, one line per
event with the time since the start:

1. the service connects and exchanges chat messages (the server echoes them, and pushes one);
2. the server drops the link without a close frame and stays down: the service backs off;
3. three messages sent while offline are queued in the outbox;
4. the server comes back: the service reconnects and flushes the queue, in order;
5. the server stalls the link (half-open): the keepalive declares it dead within
   ``heartbeat_interval + ping_timeout``, and the service reconnects;
6. a last round trip, a clean stop, and a summary.

Every step waits for events, each with a timeout, under one overall deadline. Any expectation
that does not hold prints a ``FAIL`` line and makes :func:`run` return 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final, TextIO

import bgws
from bgws.testing import Server

__all__ = ["DEADLINE", "DEMO_TIMINGS", "STEP_TIMEOUT", "DemoFailed", "run", "run_async"]

DEMO_TIMINGS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "heartbeat_interval": 0.5,
        "ping_timeout": 0.5,
        "initial_reconnect_delay": 0.2,
        "max_reconnect_delay": 1.0,
        "min_uptime": 0.2,
        "connect_timeout": 2.0,
        "close_timeout": 1.0,
    }
)
"""Overrides of the chat profile's timings, so that the whole tour takes a few seconds."""

STEP_TIMEOUT: Final = 5.0
"""Seconds any one expected event may take before the demo fails."""

DEADLINE: Final = 25.0
"""Seconds the whole demo may take before it fails."""

# Scheduling slack allowed on top of the dead-link bound (heartbeat_interval + ping_timeout).
_SLACK: Final = 0.3

_OFFLINE = ((3, "are you there?"), (4, "the server seems down"), (5, "sending anyway"))


class DemoFailed(Exception):
    """An expectation of the demo did not hold; the message says which and how."""


# -- output -------------------------------------------------------------------------------------

_SYMBOLS: Final = {
    "server_up": ("▲", "^"),
    "server_down": ("▼", "v"),
    "connecting": ("…", "."),
    "connected": ("●", "*"),
    "sent": ("→", ">"),
    "received": ("←", "<"),
    "lost": ("✕", "x"),
    "backoff": ("○", "o"),
    "retry": ("↻", "@"),
    "queued": ("+", "+"),
    "check": ("✓", "="),
    "stopped": ("■", "#"),
    "error": ("!", "!"),
}
_COLOURS: Final = {
    "server_up": "35",
    "server_down": "35",
    "connecting": "2",
    "connected": "32",
    "sent": "36",
    "received": "36",
    "lost": "31",
    "backoff": "33",
    "retry": "33",
    "queued": "33",
    "check": "32",
    "stopped": "2",
    "error": "31",
}


def wants_colour(out: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether to colour ``out``: a terminal, no ``NO_COLOR`` and not ``TERM=dumb``."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


def _can_encode(out: TextIO, text: str) -> bool:
    encoding = getattr(out, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class _Timeline:
    """Writes one line per event, prefixed with the seconds since the demo began."""

    def __init__(self, out: TextIO, colour: bool) -> None:
        self._out = out
        self._colour = colour
        self._unicode = _can_encode(out, "".join(s for s, _ in _SYMBOLS.values()) + "·")
        self._start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self._colour and code else text

    @property
    def dot(self) -> str:
        return "·" if self._unicode else "-"

    def write(self, text: str = "") -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def event(self, kind: str, text: str) -> None:
        symbol = _SYMBOLS[kind][0 if self._unicode else 1]
        stamp = self.paint(f"{self.elapsed():7.3f}s", "2")
        self.write(f"{stamp}  {self.paint(symbol, _COLOURS[kind])} {text}")


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "no reason given"
    return f"{type(error).__name__}: {error}"


# -- the scenario -------------------------------------------------------------------------------


class _Errors(bgws.ErrorHandler):
    """Prints every error the service reports; the demo expects none."""

    def __init__(self, demo: _Demo) -> None:
        self._demo = demo
        self.seen: list[bgws.BgwsError] = []

    async def on_error(self, error: bgws.BgwsError) -> None:
        self.seen.append(error)
        self._demo.timeline.event("error", f"error reported: {_describe(error)}")
        self._demo.poke()


class _Demo:
    """The scenario: one server, one service, and what the timeline shows about them."""

    def __init__(self, timeline: _Timeline, timings: Mapping[str, float]) -> None:
        self.timeline = timeline
        self.timings = dict(timings)
        self.errors = _Errors(self)
        self.entered: Counter[tuple[bgws.State, bgws.State]] = Counter()
        self.changes: list[tuple[float, bgws.StateChange]] = []
        self.echoes: list[int] = []
        self.notices = 0
        self._changed = asyncio.Event()
        self._url = ""
        # Mirrors the machine's consecutive-failure count, to show each retry's jitter window.
        self._failures = 0
        self._backoff = bgws.Backoff(
            self.timings["initial_reconnect_delay"], self.timings["max_reconnect_delay"]
        )
        self._up_at: float | None = None
        self._down_at: float | None = None
        self._backoff_at = 0.0
        self._retries = 0

    # -- waiting --------------------------------------------------------------------------------

    def poke(self) -> None:
        """Wake every :meth:`until` so it checks its condition again."""
        self._changed.set()

    def count(self, old: bgws.State | None, new: bgws.State) -> int:
        """How many moves into ``new`` (from ``old``, or from anywhere) happened so far."""
        return sum(n for (o, s), n in self.entered.items() if s is new and old in (None, o))

    async def until(
        self, predicate: Callable[[], bool], what: str, timeout: float = STEP_TIMEOUT
    ) -> None:
        """Wait for ``predicate()``, checked after every event.

        Raises:
            DemoFailed: it was still false after ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise DemoFailed(f"{what}: did not happen within {timeout:g}s") from None

    def check(self, ok: bool, text: str, failure: str) -> None:
        """Print a passed check, or raise :class:`DemoFailed` with ``failure``."""
        if not ok:
            raise DemoFailed(failure)
        self.timeline.event("check", text)

    # -- what the service tells us ---------------------------------------------------------------

    def on_state_change(self, change: bgws.StateChange) -> None:
        now = self.timeline.elapsed()
        self.changes.append((now, change))
        self.entered[change.old, change.new] += 1
        old, new, reason = change.old, change.new, change.reason
        S = bgws.State
        show = self.timeline.event
        if new is S.CONNECTING and old is S.BACKING_OFF:
            self._retries += 1
            cap = self._backoff.ceiling(max(self._failures, 1))
            show(
                "retry",
                f"retry {self._retries} after {now - self._backoff_at:.3f}s of backoff "
                f"(full jitter, at most {cap:g}s)",
            )
        elif new is S.CONNECTING:
            show("connecting", f"connecting to {self._url}")
        elif new is S.CONNECTED:
            if self._down_at is None:
                show("connected", f"connected to {self._url}")
            else:
                tries = "attempt" if self._retries == 1 else "attempts"
                show(
                    "connected",
                    f"reconnected after {now - self._down_at:.3f}s offline "
                    f"({self._retries} {tries})",
                )
            self._up_at = now
            self._retries = 0
        elif new is S.BACKING_OFF:
            if old is S.CONNECTED:
                uptime = 0.0 if self._up_at is None else now - self._up_at
                self._failures = 1 if uptime >= self.timings["min_uptime"] else self._failures + 1
                self._down_at = now
                what = "dead link detected" if isinstance(reason, bgws.DeadLink) else "link lost"
                show("lost", f"{what}: {_describe(reason)}")
                show("backoff", "backing off before reconnecting")
            else:
                self._failures += 1
                show("backoff", f"attempt failed ({_describe(reason)}): backing off")
            self._backoff_at = now
        elif new is S.CLOSING:
            show("stopped", "stopping the service")
        elif new is S.CLOSED:
            show("stopped", "service closed")
        elif new is S.FAILED:
            show("lost", f"service FAILED: {_describe(reason)}")
        self.poke()

    def on_chat(self, message: bgws.Message) -> None:
        data = message.data
        n = data.get("n") if isinstance(data, dict) else None
        text = data.get("text") if isinstance(data, dict) else None
        self.echoes.append(n if isinstance(n, int) else -1)
        self.timeline.event("received", f'received chat_message #{n} "{text}" (echo)')
        self.poke()

    def on_notice(self, message: bgws.Message) -> None:
        data = message.data
        text = data.get("text") if isinstance(data, dict) else data
        self.notices += 1
        self.timeline.event("received", f'received notice "{text}" (pushed by the server)')
        self.poke()

    # -- the steps --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Play the whole scenario.

        Raises:
            DemoFailed: an expectation did not hold.
        """
        async with Server(echo=True) as server:
            self._url = server.url
            self.timeline.event("server_up", f"test server listening on {server.url}")
            # The chat preset, with an in-memory store: the demo leaves no file behind, and
            # demos can run side by side. (create_chat_service(storage=...) would not do: its
            # storage= is the key-value backend, which shadows the config field of that name.)
            config = bgws.profiles.chat(
                url=server.url, app_name="bgws demo", storage="memory", **self.timings
            )
            service = bgws.create_custom_service(config=config, error_handler=self.errors)
            service.on_state_change(self.on_state_change)
            service.on("chat_message")(self.on_chat)
            service.on("notice")(self.on_notice)
            async with service:
                await self._chat(service, server)
                await self._outage(service, server)
                await self._flush(service, server)
                await self._half_open(service, server)
                await self._last_round(service, server)
            self._summary(service, server)
        server_errors = [_describe(e) for e in server.errors]
        if server_errors:
            raise DemoFailed(f"the test server's hooks raised: {'; '.join(server_errors)}")

    async def _send(self, service: bgws.Service, n: int, text: str) -> None:
        await service.send({"type": "chat_message", "n": n, "text": text})

    async def _chat(self, service: bgws.Service, server: Server) -> None:
        S = bgws.State
        await self.until(lambda: self.count(None, S.CONNECTED) >= 1, "connect")
        for n, text in ((1, "hello"), (2, "how is everyone?")):
            await self._send(service, n, text)
            self.timeline.event("sent", f'sent chat_message #{n} "{text}"')
        await self.until(lambda: len(self.echoes) >= 2, "echoes of messages #1 and #2")
        server.push({"type": "notice", "text": "welcome to the bgws demo"})
        await self.until(lambda: self.notices >= 1, "the server's pushed notice")

    async def _outage(self, service: bgws.Service, server: Server) -> None:
        S = bgws.State
        # stop(graceful=False) stops listening, then aborts every socket: no CLOSE frame.
        # (drop() then stop() would not do: stop() sends a CLOSE frame on the socket that
        # drop() has just aborted but whose loss is not processed yet.)
        self.timeline.event("server_down", "server drops the link (no close frame) and stays down")
        await server.stop(graceful=False)
        await self.until(lambda: self.count(S.CONNECTED, S.BACKING_OFF) >= 1, "notice the drop")
        for depth, (n, text) in enumerate(_OFFLINE, start=1):
            await self._send(service, n, text)
            queued = service.stats.queued
            self.timeline.event(
                "queued", f'queued chat_message #{n} "{text}" while offline (outbox depth {queued})'
            )
            if queued != depth:
                raise DemoFailed(f"outbox depth is {queued} after {depth} offline sends")
        await self.until(
            lambda: self.count(S.CONNECTING, S.BACKING_OFF) >= 1,
            "a reconnect attempt against the stopped server",
        )
        await server.start()
        self.timeline.event("server_up", "server is back on the same port")
        await self.until(lambda: self.count(None, S.CONNECTED) >= 2, "reconnect")

    async def _flush(self, service: bgws.Service, server: Server) -> None:
        want = [1, 2, *(n for n, _ in _OFFLINE)]
        try:
            await server.wait_until(
                lambda: len(_chat_numbers(server)) >= len(want),
                timeout=STEP_TIMEOUT,
                what="the queued messages",
            )
        except TimeoutError:
            got = _chat_numbers(server)
            raise DemoFailed(f"queue flush: the server has {got}, expected {want}") from None
        got = _chat_numbers(server)
        queued = service.stats.queued
        offline = ", ".join(f"#{n}" for n in got[2:])
        self.check(
            got == want and queued == 0,
            f"queue flushed: the server received {offline} in order (outbox depth {queued})",
            f"queue flush: the server received {got}, expected {want} (outbox depth {queued})",
        )
        await self.until(lambda: len(self.echoes) >= len(want), "echoes of the flushed messages")

    async def _half_open(self, service: bgws.Service, server: Server) -> None:
        S = bgws.State
        interval = self.timings["heartbeat_interval"]
        ping_timeout = self.timings["ping_timeout"]
        bound = interval + ping_timeout
        seen = len(self.changes)
        stalled_at = self.timeline.elapsed()
        server.stall()
        self.timeline.event(
            "server_down", "server stalls the link: half-open, nothing read, no pongs"
        )
        await self.until(
            lambda: self.count(S.CONNECTED, S.BACKING_OFF) >= 2,
            "dead-link detection",
            timeout=2 * bound + STEP_TIMEOUT,
        )
        at, change = next((t, c) for t, c in self.changes[seen:] if c.new is S.BACKING_OFF)
        took = at - stalled_at
        self.check(
            isinstance(change.reason, bgws.DeadLink) and took <= bound + _SLACK,
            f"found {took:.3f}s after the stall: heartbeat {interval:g}s + ping timeout "
            f"{ping_timeout:g}s = {bound:g}s, the worst case",
            f"dead-link detection: after {took:.3f}s ({_describe(change.reason)}); "
            f"expected DeadLink within {bound:g}s",
        )
        server.unstall()
        self.timeline.event("server_up", "server stops stalling")
        await self.until(lambda: self.count(None, S.CONNECTED) >= 3, "reconnect after dead link")

    async def _last_round(self, service: bgws.Service, server: Server) -> None:
        n, text = 6, "all good again"
        await self._send(service, n, text)
        self.timeline.event("sent", f'sent chat_message #{n} "{text}"')
        await self.until(lambda: n in self.echoes, f"echo of message #{n}")

    def _summary(self, service: bgws.Service, server: Server) -> None:
        S = bgws.State
        stats = service.stats
        delivered = _chat_numbers(server)
        want = list(range(1, 7))
        reconnects = self.count(None, S.CONNECTED) - 1
        dot = f" {self.timeline.dot} "
        self.timeline.write()
        in_order = " in order" if delivered == want else ""
        self.timeline.write(
            "summary: "
            + dot.join(
                (
                    f"sent {stats.sent}",
                    f"delivered {len(delivered)}/{len(want)}{in_order}",
                    f"echoes received {len(self.echoes)}",
                )
            )
        )
        self.timeline.write(
            "         "
            + dot.join(
                (
                    f"reconnects {reconnects} ({stats.reconnects} attempts)",
                    f"dead links detected {stats.dead_links}",
                    f"errors reported {len(self.errors.seen)}",
                )
            )
        )
        problems = []
        if stats.sent != len(want):
            problems.append(f"sent {stats.sent}, expected {len(want)}")
        if delivered != want:
            problems.append(f"the server received {delivered}, expected {want}")
        if sorted(self.echoes) != want:
            problems.append(f"echoes {self.echoes}, expected {want}")
        if reconnects != 2:
            problems.append(f"{reconnects} reconnects, expected 2")
        if stats.dead_links != 1:
            problems.append(f"{stats.dead_links} dead links counted, expected 1")
        if self.errors.seen:
            problems.append(f"{len(self.errors.seen)} errors reported, expected none")
        if stats.state is not S.CLOSED:
            problems.append(f"the service ended {stats.state}, expected CLOSED")
        if problems:
            raise DemoFailed("summary: " + "; ".join(problems))


def _chat_numbers(server: Server) -> list[int]:
    """The ``n`` of every chat message the server received, in order."""
    numbers = []
    for message in server.messages:
        if not message.is_text:
            continue
        data: Any = message.json()
        if isinstance(data, dict) and data.get("type") == "chat_message":
            numbers.append(data.get("n", -1))
    return numbers


# -- entry points -------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_engine_logs(quiet: bool) -> Iterator[None]:
    """Hide the engine's expected warnings (link lost...): the timeline shows them."""
    logger = logging.getLogger("bgws")
    old = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


async def run_async(
    out: TextIO,
    *,
    colour: bool = False,
    deadline: float = DEADLINE,
    timings: Mapping[str, float] = DEMO_TIMINGS,
) -> int:
    """Play the demo in the running event loop, writing the timeline to ``out``.

    Args:
        out: where the timeline goes.
        colour: use ANSI colours.
        deadline: seconds the whole demo may take.
        timings: overrides of the chat profile (see :data:`DEMO_TIMINGS`).

    Returns:
        0 when every step behaved as expected, 1 otherwise (a ``FAIL`` line says why).
    """
    timeline = _Timeline(out, colour)
    demo = _Demo(timeline, timings)
    timeline.write(
        timeline.paint("bgws demo", "1")
        + ": a chat service against a local test server that misbehaves on purpose"
    )
    timeline.write(
        timeline.paint(
            f"chat profile with demo timings: heartbeat {timings['heartbeat_interval']:g}s, "
            f"ping timeout {timings['ping_timeout']:g}s, backoff "
            f"{timings['initial_reconnect_delay']:g}s up to {timings['max_reconnect_delay']:g}s",
            "2",
        )
    )
    timeline.write()
    scope = asyncio.timeout(deadline)
    try:
        async with scope:
            await demo.run()
    except DemoFailed as exc:
        failure = str(exc)
    except TimeoutError as exc:
        if scope.expired():
            failure = f"the demo did not finish within {deadline:g}s"
        else:
            failure = f"unexpected error: {_describe(exc)}"
    except (bgws.BgwsError, OSError) as exc:
        failure = f"unexpected error: {_describe(exc)}"
    else:
        timeline.write(
            timeline.paint("PASS", "1;32")
            + f"  every step behaved as expected ({timeline.elapsed():.1f}s)"
        )
        return 0
    timeline.write(timeline.paint("FAIL", "1;31") + f"  {failure}")
    return 1


def run(
    out: TextIO,
    *,
    colour: bool | None = None,
    engine_logs: bool = False,
    deadline: float = DEADLINE,
) -> int:
    """Play the demo in a new event loop (what ``bgws demo`` does).

    Args:
        out: where the timeline goes.
        colour: use ANSI colours; ``None`` decides from ``out`` and ``NO_COLOR``.
        engine_logs: let the engine's own log records through (``--verbose``); by default
            records below ERROR are hidden, since the timeline shows the same events.
        deadline: seconds the whole demo may take.

    Returns:
        The exit code: 0 when every step behaved as expected, 1 otherwise.
    """
    use_colour = wants_colour(out) if colour is None else colour
    with _quiet_engine_logs(not engine_logs):
        return asyncio.run(run_async(out, colour=use_colour, deadline=deadline))
