"""RFC 6455 frames built and parsed by hand, so a test server can break every rule.

:func:`frame` builds one frame from its fields, any of them wrong on purpose (reserved bits,
unknown opcodes, a declared length unrelated to the payload, a mask a server must not use).
:class:`Frames` holds canned frames, valid and invalid, each named for the rule it tests.
:class:`FrameParser` reads the frames a client sends back (unmasking them), for
:class:`bgws.testing.HostileServer`.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

__all__ = [
    "Frames",
    "FrameParser",
    "Opcode",
    "ReceivedFrame",
    "accept_key",
    "frame",
]

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_DECLARED: Final = (1 << 63) - 1
_MAX_ENCODABLE: Final = (1 << 64) - 1
_NO_STATUS_RCVD: Final = 1005


class Opcode(IntEnum):
    """The opcodes RFC 6455 defines; any other int 0-15 can be sent too."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value that answers a ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1(key.encode("ascii") + _GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def frame(
    opcode: int,
    payload: bytes | str = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    length: int | None = None,
    mask: bytes | None = None,
) -> bytes:
    """The raw bytes of one frame, exactly as given (nothing is checked against RFC 6455).

    Args:
        opcode: 0-15, defined or not (see :class:`Opcode`).
        payload: The payload; a ``str`` is encoded as UTF-8.
        fin: The FIN bit.
        rsv1: The RSV1 bit.
        rsv2: The RSV2 bit.
        rsv3: The RSV3 bit.
        length: The payload length written in the header; ``None``: the real length. Only
            ``payload`` is sent, whatever the declared length. RFC 6455 allows up to
            ``2**63 - 1``; up to ``2**64 - 1`` can be written (the most significant bit set).
        mask: A 4-byte masking key (a server must never mask); ``None``: unmasked.

    Raises:
        ValueError: An opcode outside 0-15, a length outside 0..2**64-1, or a mask that is
            not 4 bytes.
    """
    if not 0 <= opcode <= 0xF:
        raise ValueError(f"an opcode is 0-15, not {opcode}")
    body = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    declared = len(body) if length is None else length
    if not 0 <= declared <= _MAX_ENCODABLE:
        raise ValueError(f"a declared length is 0..2**64-1, not {declared}")
    first = (fin << 7) | (rsv1 << 6) | (rsv2 << 5) | (rsv3 << 4) | opcode
    mask_bit = 0x80 if mask is not None else 0
    if declared < 126:
        header = struct.pack("!BB", first, mask_bit | declared)
    elif declared < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, declared)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, declared)
    if mask is None:
        return header + body
    if len(mask) != 4:
        raise ValueError("a masking key is 4 bytes")
    return header + mask + _apply_mask(body, mask)


def _apply_mask(data: bytes, mask: bytes) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``mask`` (masking and unmasking are the same)."""
    if not data:
        return b""
    repeated = (mask * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(data), "big"
    )


def _close_payload(code: int | None, reason: bytes) -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


class Frames:
    """Canned server-to-client frames: a few valid ones and one per rule a client must enforce.

    Each method returns raw bytes to pass to :meth:`HostileConnection.send` or to a
    :class:`Steps` script. The comment of each invalid one names the close code RFC 6455
    requires of the client.
    """

    @staticmethod
    def text(text: str | bytes, *, fin: bool = True) -> bytes:
        """A valid unmasked text frame."""
        return frame(Opcode.TEXT, text, fin=fin)

    @staticmethod
    def binary(data: bytes, *, fin: bool = True) -> bytes:
        """A valid unmasked binary frame."""
        return frame(Opcode.BINARY, data, fin=fin)

    @staticmethod
    def continuation(data: bytes | str, *, fin: bool = True) -> bytes:
        """A continuation frame (valid only inside a fragmented message)."""
        return frame(Opcode.CONTINUATION, data, fin=fin)

    @staticmethod
    def ping(data: bytes = b"") -> bytes:
        """A valid ping."""
        return frame(Opcode.PING, data)

    @staticmethod
    def pong(data: bytes = b"") -> bytes:
        """A valid unsolicited pong."""
        return frame(Opcode.PONG, data)

    @staticmethod
    def close(code: int | None = 1000, reason: bytes | str = b"") -> bytes:
        """A close frame; ``code=None`` sends an empty payload. No check on code or reason."""
        raw = reason.encode("utf-8") if isinstance(reason, str) else reason
        return frame(Opcode.CLOSE, _close_payload(code, raw))

    @staticmethod
    def bad_utf8() -> bytes:
        """A text frame whose payload is not UTF-8 (1007)."""
        return frame(Opcode.TEXT, b'{"type": "\xff\xfe\xc3\x28"}')

    @staticmethod
    def bad_utf8_fragmented() -> bytes:
        """A text message in two fragments whose joined payload is not UTF-8 (1007)."""
        return frame(Opcode.TEXT, b"ok \xc3", fin=False) + frame(Opcode.CONTINUATION, b"\x28")

    @staticmethod
    def reserved_bits(
        rsv1: bool = True, rsv2: bool = False, rsv3: bool = False, opcode: int = Opcode.TEXT
    ) -> bytes:
        """A frame (text by default) with reserved bits set and no extension negotiated (1002)."""
        payload = b"" if opcode >= 0x8 else b'{"type": "rsv"}'
        return frame(opcode, payload, rsv1=rsv1, rsv2=rsv2, rsv3=rsv3)

    @staticmethod
    def unknown_opcode(opcode: int = 0x3) -> bytes:
        """A frame with a reserved opcode: 0x3-0x7 (data) or 0xB-0xF (control) (1002)."""
        return frame(opcode, b"" if opcode >= 0x8 else b"unknown")

    @staticmethod
    def huge_length(length: int = _MAX_DECLARED, opcode: int = Opcode.BINARY) -> bytes:
        """A header declaring ``length`` bytes, with no payload behind it (1009 over the limit)."""
        return frame(opcode, b"", length=length)

    @staticmethod
    def fragmented_ping() -> bytes:
        """A ping split in two frames: control frames must not be fragmented (1002)."""
        return frame(Opcode.PING, b"pi", fin=False) + frame(Opcode.CONTINUATION, b"ng")

    @staticmethod
    def long_ping(size: int = 126) -> bytes:
        """A ping carrying more than 125 bytes (1002)."""
        return frame(Opcode.PING, b"p" * size)

    @staticmethod
    def orphan_continuation(data: bytes = b'{"type": "orphan"}') -> bytes:
        """A continuation frame with no fragmented message to continue (1002)."""
        return frame(Opcode.CONTINUATION, data)

    @staticmethod
    def interleaved_data() -> bytes:
        """A new text message starting inside a fragmented one (1002)."""
        return frame(Opcode.TEXT, b'{"type": ', fin=False) + frame(Opcode.TEXT, b'"x"}')

    @staticmethod
    def oversized(size: int, opcode: int = Opcode.BINARY) -> bytes:
        """A frame really carrying ``size`` bytes (1009 when over the client's limit)."""
        return frame(opcode, b"x" * size)

    @staticmethod
    def bad_close_code(code: int = 999) -> bytes:
        """A close frame with a code no endpoint may send (0-999, 1004-1006, 1015...) (1002)."""
        return frame(Opcode.CLOSE, struct.pack("!H", code))

    @staticmethod
    def bad_close_reason() -> bytes:
        """A close frame whose reason is not UTF-8 (1007)."""
        return frame(Opcode.CLOSE, struct.pack("!H", 1000) + b"\xff\xfe")

    @staticmethod
    def one_byte_close() -> bytes:
        """A close frame with a 1-byte payload (1002)."""
        return frame(Opcode.CLOSE, b"\x03")

    @staticmethod
    def masked() -> bytes:
        """A masked text frame: a server must never mask (1002)."""
        return frame(Opcode.TEXT, b'{"type": "masked"}', mask=b"\x01\x02\x03\x04")

    @staticmethod
    def garbage() -> bytes:
        """Bytes that are no frame at all: an HTTP request line where a frame should be."""
        return b"GET / HTTP/1.1\r\nHost: nowhere\r\n\r\n"


@dataclass(frozen=True, slots=True)
class ReceivedFrame:
    """One frame a client sent, unmasked.

    Attributes:
        opcode: The opcode.
        payload: The unmasked payload.
        fin: The FIN bit.
        rsv: The three reserved bits as an int 0-7 (RSV1 is 4).
        masked: Whether the client masked it (RFC 6455 requires it).
    """

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0
    masked: bool = True

    @property
    def close_code(self) -> int | None:
        """The code of a close frame (1005 when it has none); ``None`` for other frames."""
        if self.opcode != Opcode.CLOSE:
            return None
        if len(self.payload) < 2:
            return _NO_STATUS_RCVD
        return int(struct.unpack("!H", self.payload[:2])[0])

    @property
    def close_reason(self) -> str:
        """The reason of a close frame (decoded leniently); ``""`` for other frames."""
        if self.opcode != Opcode.CLOSE:
            return ""
        return self.payload[2:].decode("utf-8", "replace")


class FrameParser:
    """Parses a byte stream of client frames, incrementally.

    Args:
        max_size: A frame declaring a larger payload raises ``ValueError`` (the server stops
            reading that connection), so a broken client cannot exhaust memory.
    """

    def __init__(self, max_size: int = 64 << 20) -> None:
        self._buffer = bytearray()
        self._max_size = max_size

    def feed(self, data: bytes) -> list[ReceivedFrame]:
        """Add bytes; return the frames they complete.

        Raises:
            ValueError: A frame declares more than ``max_size`` bytes.
        """
        self._buffer += data
        frames: list[ReceivedFrame] = []
        while (parsed := self._next()) is not None:
            frames.append(parsed)
        return frames

    def _next(self) -> ReceivedFrame | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        masked = bool(second & 0x80)
        length = second & 0x7F
        offset = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length = int.from_bytes(buf[2:4], "big")
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = int.from_bytes(buf[2:10], "big")
            offset = 10
        if length > self._max_size:
            raise ValueError(f"a client frame declares {length} bytes")
        mask = b""
        if masked:
            if len(buf) < offset + 4:
                return None
            mask = bytes(buf[offset : offset + 4])
            offset += 4
        if len(buf) < offset + length:
            return None
        payload = bytes(buf[offset : offset + length])
        del buf[: offset + length]
        if masked:
            payload = _apply_mask(payload, mask)
        return ReceivedFrame(
            opcode=first & 0x0F,
            payload=payload,
            fin=bool(first & 0x80),
            rsv=(first >> 4) & 0x7,
            masked=masked,
        )
