"""The pure parts of the testing kit: records, encoding and raw frames."""

from __future__ import annotations

import pytest

from bgws.testing import Handshake, ReceivedMessage
from bgws.testing._records import (
    encode,
    frame_header,
    malformed_frame,
    parse_close_payload,
    split_payload,
)


def test_handshake_from_request_joins_repeated_headers() -> None:
    """Repeated headers are joined, names lower-cased, an empty path becomes "/"."""
    headers = {"A": "1"}.items()

    class Multi:
        def items(self) -> list[tuple[str, str]]:
            return [*headers, ("a", "2"), ("B", "x")]

    handshake = Handshake.from_request(7, "?k=", Multi(), 1.5)
    assert handshake.headers == {"a": "1, 2", "b": "x"}
    assert handshake.path == "/"
    assert handshake.query == {"k": ""}
    assert (handshake.connection_id, handshake.timestamp, handshake.accepted) == (7, 1.5, True)


def test_received_message_json() -> None:
    """A received message decodes as JSON, text or bytes alike."""
    assert ReceivedMessage(1, '{"a": 1}', 0.0).json() == {"a": 1}
    assert ReceivedMessage(1, b"[1]", 0.0).json() == [1]


def test_encode() -> None:
    """Mappings become JSON text, str text, bytes-likes binary."""
    assert encode({"a": 1}) == (0x1, b'{"a":1}')
    assert encode("é") == (0x1, "é".encode())
    assert encode(bytearray(b"\x00")) == (0x2, b"\x00")
    assert encode(memoryview(b"xy")) == (0x2, b"xy")


def test_split_payload() -> None:
    """Payloads split into nearly equal non-empty parts that join back exactly."""
    assert split_payload(b"abcdefg", 3) == [b"abc", b"de", b"fg"]
    assert split_payload(b"", 1) == [b""]
    with pytest.raises(ValueError, match="at least 1"):
        split_payload(b"abc", 0)


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (5, b"\x81\x05"),
        (126, b"\x81\x7e\x00\x7e"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_frame_header_lengths(length: int, header: bytes) -> None:
    """Frame headers use the 7-bit, 16-bit and 64-bit length forms."""
    assert frame_header(0x1, length) == header


def test_frame_header_without_fin() -> None:
    """A frame header without FIN clears the top bit."""
    assert frame_header(0x0, 1, fin=False) == b"\x00\x01"


def test_malformed_frames() -> None:
    """Malformed frames carry the promised opcode and payload."""
    assert malformed_frame("reserved_opcode")[0] == 0x83
    assert malformed_frame("oversized", size=29)[2:] == b'{"type":"oversized","pad":""}'
    with pytest.raises(ValueError, match="at least 29 bytes"):
        malformed_frame("oversized", size=28)


def test_parse_close_payload() -> None:
    """A close payload gives its code and reason; an empty one gives 1005."""
    assert parse_close_payload(b"\x03\xe8ok") == (1000, "ok")
    assert parse_close_payload(b"") == (1005, "")
