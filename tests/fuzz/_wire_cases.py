"""Random server byte streams for fuzzing a client: valid frames mixed with rule breakers.

A *case* is a list of :class:`Item`: each a valid message (text or binary, whole or in
fragments, with pings between the fragments), a control frame, a text frame that is not JSON,
or one of the ways a server breaks RFC 6455 (reserved bits, unknown opcodes, bad UTF-8,
orphan or interleaved continuations, oversized or masked frames, long or fragmented control
frames, bad close frames, declared lengths with nothing behind them, garbage, a frame cut
short). :func:`build` turns a case into the bytes to send and the messages a correct client
dispatches: every valid message up to the first broken rule, and nothing after it.
"""

from __future__ import annotations

import itertools
import json
import struct
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from bgws.testing import Frames, Opcode, frame

__all__ = ["MAX_MESSAGE_SIZE", "VIOLATIONS", "Built", "Expected", "Item", "build", "cases"]

MAX_MESSAGE_SIZE = 1024
"""The client's ``max_message_size`` in the fuzz cases (small, so oversized frames are cheap)."""


@dataclass(frozen=True)
class Item:
    """One step of a case: a kind and its parameters (see :func:`_render`)."""

    kind: str
    params: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Expected:
    """A message a correct client dispatches: decoded JSON data, or bytes for binary."""

    binary: bool
    data: Any


@dataclass(frozen=True)
class Built:
    """A case made concrete: the chunks to send, what may be dispatched, how it ends."""

    chunks: list[bytes]
    """The bytes of each item; an empty chunk asks the server to drain before going on."""
    expected: list[Expected]
    broken: bool
    """Whether some item broke a rule (the client must fail the link there)."""
    hang_up: bool
    """Whether the stream ends cut short (no close frame from the server)."""


VIOLATIONS = frozenset(
    {
        "rsv",
        "rsv_ping",
        "rsv_pong",
        "opcode",
        "bad_utf8",
        "orphan",
        "interleaved",
        "oversized",
        "masked",
        "long_control",
        "fragmented_control",
        "bad_close",
        "huge_length",
        "garbage",
        "truncated",
    }
)

_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
_SMALL = st.binary(max_size=125)
_CUTS = st.lists(st.integers(min_value=0, max_value=200), max_size=3)

_VALID = st.one_of(
    st.builds(lambda s, cuts, ping: Item("text", (s, tuple(cuts), ping)), _TEXT, _CUTS, _SMALL),
    st.builds(
        lambda b, cuts, ping: Item("binary", (b, tuple(cuts), ping)),
        st.binary(max_size=200),
        _CUTS,
        _SMALL,
    ),
    st.builds(lambda b: Item("ping", (b,)), _SMALL),
    st.builds(lambda b: Item("pong", (b,)), _SMALL),
    st.builds(lambda s: Item("not_json", (s,)), _TEXT),
    st.builds(lambda n: Item("json_list", (n,)), st.integers(-(2**53), 2**53)),
    st.just(Item("pause")),
)
_BROKEN = st.one_of(
    st.builds(
        lambda bits, op: Item("rsv", (bits, op)),
        st.integers(1, 7),
        st.sampled_from([Opcode.TEXT, Opcode.BINARY]),
    ),
    st.builds(lambda bits: Item("rsv_ping", (bits, Opcode.PING)), st.integers(1, 7)),
    st.builds(lambda bits: Item("rsv_pong", (bits, Opcode.PONG)), st.integers(1, 7)),
    st.builds(
        lambda op: Item("opcode", (op,)), st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
    ),
    st.builds(
        lambda b, cuts: Item("bad_utf8", (b, tuple(cuts))),
        st.binary(max_size=60),
        _CUTS,
    ),
    st.builds(lambda b: Item("orphan", (b,)), st.binary(max_size=20)),
    st.just(Item("interleaved")),
    st.builds(
        lambda extra, cuts, op: Item("oversized", (extra, tuple(cuts), op)),
        st.integers(1, 100),
        _CUTS,
        st.sampled_from([Opcode.TEXT, Opcode.BINARY]),
    ),
    st.builds(lambda b: Item("masked", (b,)), st.binary(min_size=1, max_size=30)),
    st.builds(
        lambda size, op: Item("long_control", (size, op)),
        st.integers(126, 300),
        st.sampled_from([Opcode.PING, Opcode.PONG, Opcode.CLOSE]),
    ),
    st.builds(
        lambda op: Item("fragmented_control", (op,)),
        st.sampled_from([Opcode.PING, Opcode.PONG]),
    ),
    st.one_of(
        st.builds(
            lambda code: Item("bad_close", ("code", code)),
            st.sampled_from([0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2999, 5000, 65535]),
        ),
        st.just(Item("bad_close", ("one_byte", 0))),
        st.just(Item("bad_close", ("utf8", 0))),
    ),
    st.builds(
        lambda length: Item("huge_length", (length,)),
        st.integers(MAX_MESSAGE_SIZE + 1, 2**63 - 1),
    ),
    st.builds(lambda b: Item("garbage", (b,)), st.binary(min_size=1, max_size=40)),
)
_ENDINGS = st.one_of(
    st.none(),
    st.builds(
        lambda declared, sent: Item("truncated", (declared, sent)),
        st.integers(2, 1000),
        st.integers(0, 1),
    ),
    st.builds(lambda s: Item("unfinished", (s,)), _TEXT),
)


@st.composite
def cases(draw: st.DrawFn, exclude: frozenset[str] = frozenset()) -> list[Item]:
    """A case: 1-8 items, mostly valid, then maybe a cut-short or unfinished ending.

    Args:
        draw: hypothesis's draw function.
        exclude: kinds of rule breaker to leave out (known gaps, each with its own xfail).
    """
    broken = _BROKEN.filter(lambda item: item.kind not in exclude) if exclude else _BROKEN
    items = draw(
        st.lists(st.one_of(_VALID, _VALID, broken), min_size=1, max_size=8),
    )
    ending = draw(_ENDINGS)
    return items if ending is None else [*items, ending]


def _pieces(payload: bytes, cuts: tuple[int, ...]) -> list[bytes]:
    """``payload`` cut at the given offsets (clamped, deduplicated; may cut inside a char)."""
    points = sorted({min(c, len(payload)) for c in cuts} - {0, len(payload)})
    bounds = [0, *points, len(payload)]
    return [payload[a:b] for a, b in itertools.pairwise(bounds)] or [b""]


def _fragments(opcode: int, payload: bytes, cuts: tuple[int, ...], ping: bytes | None) -> bytes:
    """A message as frames: first with ``opcode``, then continuations; pings in between."""
    pieces = _pieces(payload, cuts)
    out = []
    for n, piece in enumerate(pieces):
        last = n == len(pieces) - 1
        out.append(frame(opcode if n == 0 else Opcode.CONTINUATION, piece, fin=last))
        if not last and ping is not None:
            out.append(Frames.ping(ping))
    return b"".join(out)


def _render(item: Item, case: int, index: int) -> tuple[bytes, Expected | None]:
    """The bytes of one item, and the message a correct client dispatches for it, if any."""
    p = item.params
    kind = item.kind
    if kind == "text":
        data = {"type": "m", "case": case, "i": index, "s": p[0]}
        payload = json.dumps(data, ensure_ascii=False).encode()
        return _fragments(Opcode.TEXT, payload, p[1], p[2]), Expected(False, data)
    if kind == "binary":
        payload = f"{case}:{index}:".encode() + p[0]
        return _fragments(Opcode.BINARY, payload, p[1], p[2]), Expected(True, payload)
    if kind == "pause":  # the server drains its buffer here, so reads split differently
        return b"", None
    if kind == "ping":
        return Frames.ping(p[0]), None
    if kind == "pong":
        return Frames.pong(p[0]), None
    if kind == "not_json":
        return Frames.text("not json: " + p[0]), None
    if kind == "json_list":
        data = ["m", case, index, p[0]]
        return Frames.text(json.dumps(data)), Expected(False, data)
    return _render_broken(item, case, index), None


def _render_broken(item: Item, case: int, index: int) -> bytes:
    """The bytes of an item that breaks a rule (or, for endings, cuts the stream short)."""
    p = item.params
    kind = item.kind
    marker = json.dumps({"type": "m", "case": case, "i": index, "s": "after"}).encode()
    if kind in ("rsv", "rsv_ping", "rsv_pong"):
        bits, opcode = p
        body = b"" if opcode >= Opcode.CLOSE else marker
        return frame(opcode, body, rsv1=bool(bits & 4), rsv2=bool(bits & 2), rsv3=bool(bits & 1))
    if kind == "opcode":
        return frame(p[0], b"" if p[0] >= 8 else marker)
    if kind == "bad_utf8":
        return _fragments(Opcode.TEXT, p[0] + b"\xff", p[1], None)
    if kind == "orphan":
        return Frames.orphan_continuation(marker + p[0])
    if kind == "interleaved":
        return Frames.interleaved_data()
    if kind == "oversized":
        extra, cuts, opcode = p
        return _fragments(opcode, b"x" * (MAX_MESSAGE_SIZE + extra), cuts, None)
    if kind == "masked":
        return frame(Opcode.BINARY, p[0], mask=b"\x01\x02\x03\x04")
    if kind == "long_control":
        size, opcode = p
        body = (
            struct.pack("!H", 1000) + b"r" * (size - 2) if opcode == Opcode.CLOSE else b"c" * size
        )
        return frame(opcode, body)
    if kind == "fragmented_control":
        return frame(p[0], b"pi", fin=False) + frame(Opcode.CONTINUATION, b"ng")
    if kind == "bad_close":
        how, code = p
        if how == "code":
            return Frames.bad_close_code(code)
        return Frames.one_byte_close() if how == "one_byte" else Frames.bad_close_reason()
    if kind == "huge_length":
        return Frames.huge_length(p[0])
    if kind == "garbage":
        # All three reserved bits set in the first byte: never a valid frame here.
        return bytes([0x70 | (p[0][0] & 0x8F)]) + p[0][1:]
    if kind == "truncated":
        declared, sent = p
        return frame(Opcode.BINARY, b"t" * min(sent, declared - 1), length=declared)
    if kind == "unfinished":
        return Frames.text(json.dumps({"type": "m", "s": p[0]}), fin=False)
    raise AssertionError(f"unknown item kind {kind!r}")


def build(items: list[Item], case: int) -> Built:
    """Make ``items`` concrete for case number ``case``."""
    chunks: list[bytes] = []
    expected: list[Expected] = []
    broken = False
    for index, item in enumerate(items):
        chunk, message = _render(item, case, index)
        chunks.append(chunk)
        if item.kind in VIOLATIONS:
            broken = True
        if message is not None and not broken:
            expected.append(message)
    hang_up = bool(items) and items[-1].kind == "truncated"
    return Built(chunks, expected, broken, hang_up)
