"""Fuzzing the bytes a server sends: valid frames mixed with every kind of rule breaker.

A hostile server (:class:`bgws.testing.HostileServer`) sends each case on its own connection
to one long-lived service per transport, which has a SQLite outbox holding queued messages.
After every case: the service still runs and reconnects, every handler call got valid data
(as sent, within ``max_message_size``, nothing after the first broken rule), and the outbox
is intact. See ``_harness.py`` for the checks and ``_wire_cases.py`` for the cases.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ._budget import FUZZ, figures
from ._harness import Harness
from ._wire_cases import Item, cases

pytest.importorskip("websockets")

TRANSPORTS = ("picows", "websockets")

KNOWN_GAPS: dict[str, dict[str, str]] = {
    "picows": {},
    "websockets": {},
}
"""RFC 6455 rules a transport does not enforce yet, by rule-breaker kind, with what happens.

The fuzz cases leave these kinds out on that transport, so the rest is still fuzzed; each has
a strict xfail below, so the entry must be removed (and the kind fuzzed) once it is fixed."""

# One example of each kind of rule breaker, to show each gap (or its absence) on its own.
EXAMPLES: dict[str, Item] = {
    "rsv": Item("rsv", (4, 1)),
    "rsv_ping": Item("rsv_ping", (1, 9)),
    "rsv_pong": Item("rsv_pong", (4, 10)),
    "opcode": Item("opcode", (3,)),
    "bad_utf8": Item("bad_utf8", (b"abc", ())),
    "orphan": Item("orphan", (b"",)),
    "interleaved": Item("interleaved"),
    "oversized": Item("oversized", (5, (), 2)),
    "masked": Item("masked", (b"xy",)),
    "long_control": Item("long_control", (126, 9)),
    "fragmented_control": Item("fragmented_control", (9,)),
    "bad_close": Item("bad_close", ("code", 1005)),
    "huge_length": Item("huge_length", (2**63 - 1,)),
    "garbage": Item("garbage", (b"\x01abc",)),
}
HELLO = Item("text", ("hello", (), b""))


@pytest.fixture(
    scope="module",
    params=[(t, s) for t in TRANSPORTS for s in ("def", "async")],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    """One service (with a plain or an async handler) and one hostile server per transport,
    shared by all the examples."""
    name, style = request.param
    running = Harness(name, tmp_path_factory.mktemp(f"fuzz-{name}-{style}"), style)
    try:
        yield running
    finally:
        running.close()


@FUZZ
@given(data=st.data())
def test_server_bytes(harness: Harness, data: st.DataObject) -> None:
    """Whatever a server sends, bgws keeps running, hands on only valid data, keeps its outbox."""
    items = data.draw(cases(exclude=frozenset(KNOWN_GAPS[harness.transport])), label="case")
    harness.run(items, figures(f"frames: {harness.transport}, {harness.style} handler"))


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_rule_breaker_ends_dispatch(
    harness: Harness, kind: str, request: pytest.FixtureRequest
) -> None:
    """A message, one broken rule, a message: only the first is dispatched; bgws reconnects."""
    gap = KNOWN_GAPS[harness.transport].get(kind)
    if gap is not None:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=gap))
    harness.run(
        [HELLO, EXAMPLES[kind], HELLO],
        figures(f"rules: {harness.transport}, {harness.style} handler"),
    )
