"""Tests for bgws.demo: the scripted tour passes, says what happened, and fails loudly."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from bgws import demo
from bgws.cli import main

TIMELINE = (
    "connected to ws://127.0.0.1:",
    'sent chat_message #1 "hello"',
    "received chat_message #1",
    "received notice",
    "server drops the link (no close frame)",
    "link lost: ConnectionClosed",
    "backing off",
    "while offline (outbox depth 3)",
    "retry 1 after",
    "server is back on the same port",
    "reconnected after",
    "queue flushed: the server received #3, #4, #5 in order (outbox depth 0)",
    "server stalls the link",
    "dead link detected: DeadLink",
    "s after the stall",
    "service closed",
    "summary: sent 6",
    "delivered 6/6 in order",
    "reconnects 2",
    "dead links detected 1",
    "errors reported 0",
    "PASS",
)


def assert_in_order(text: str, parts: tuple[str, ...]) -> None:
    """Each part occurs in ``text``, after the previous one."""
    position = 0
    for part in parts:
        found = text.find(part, position)
        assert found >= 0, f"{part!r} missing (after offset {position}) in:\n{text}"
        position = found + len(part)


def test_demo_subprocess_exits_zero() -> None:
    """`python -m bgws demo` exits 0, prints the whole timeline in order, and logs nothing."""
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    result = subprocess.run(
        [sys.executable, "-m", "bgws", "demo"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
        env={**env, "PYTHONIOENCODING": "utf-8"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert_in_order(result.stdout, TIMELINE)
    assert "\x1b[" not in result.stdout  # not a terminal: no colours
    assert "FAIL" not in result.stdout
    assert result.stderr == ""


def test_demo_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """main(["demo"]) returns 0 and prints the timeline."""
    assert main(["demo"]) == 0
    assert_in_order(capsys.readouterr().out, TIMELINE)


def test_demo_ascii_output() -> None:
    """On a stream that cannot encode the symbols, the timeline falls back to ASCII."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    assert demo.run(out, colour=False) == 0
    out.flush()
    text = raw.getvalue().decode("ascii")
    assert "  * connected to ws://" in text
    assert_in_order(text, TIMELINE)


def test_demo_fails_past_its_deadline() -> None:
    """A demo that runs out of time prints a FAIL line and returns 1."""
    out = io.StringIO()
    assert demo.run(out, colour=False, deadline=0.05) == 1
    last = out.getvalue().splitlines()[-1]
    assert last == "FAIL  the demo did not finish within 0.05s"


@pytest.mark.parametrize(
    ("isatty", "env", "expected"),
    [
        (True, {}, True),
        (False, {}, False),
        (True, {"NO_COLOR": "1"}, False),
        (True, {"NO_COLOR": ""}, True),
        (True, {"TERM": "dumb"}, False),
    ],
)
def test_colour_choice(isatty: bool, env: dict[str, str], expected: bool) -> None:
    """Colour only on a terminal, unless NO_COLOR is set or TERM is dumb."""

    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return isatty

    assert demo.wants_colour(Stream(), env) is expected


def test_colour_codes() -> None:
    """With colour on, the timeline carries ANSI codes."""
    out = io.StringIO()
    demo.run(out, colour=True, deadline=0.05)
    assert "\x1b[31m" in out.getvalue() or "\x1b[1;31m" in out.getvalue()
