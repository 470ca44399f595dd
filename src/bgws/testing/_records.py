"""What the test server records, and how it encodes what it sends.

Pure data and pure functions: no sockets, no event loop. :class:`Handshake` and
:class:`ReceivedMessage` are the records a test asserts on; :func:`encode` turns an outgoing
message into a frame opcode and payload; :func:`malformed_frame` builds the raw bytes of
deliberately broken frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import parse_qsl, urlsplit

import msgspec

__all__ = [
    "DEFAULT_OVERSIZED_SIZE",
    "ConnectionReport",
    "Handshake",
    "MalformedKind",
    "Message",
    "ReceivedMessage",
    "encode",
    "frame_header",
    "malformed_frame",
    "parse_close_payload",
    "split_payload",
]

Message: TypeAlias = Mapping[str, Any] | str | bytes | bytearray | memoryview
"""What the server can send: a mapping (JSON text frame), ``str`` (text) or bytes (binary)."""

MalformedKind: TypeAlias = Literal["invalid_json", "invalid_utf8", "oversized", "reserved_opcode"]
"""The kinds of broken frame :meth:`Server.send_malformed` can write."""

DEFAULT_OVERSIZED_SIZE: Final = 2**20 + 1
"""Default payload size of an ``"oversized"`` frame: one byte over 1 MiB."""

OPCODE_TEXT: Final = 0x1
OPCODE_BINARY: Final = 0x2
_OPCODE_RESERVED: Final = 0x3
_NO_STATUS_RCVD: Final = 1005


@dataclasses.dataclass(frozen=True, slots=True)
class Handshake:
    """One HTTP upgrade request the server received, accepted or refused.

    Attributes:
        connection_id: Id shared with the :class:`Connection` when the handshake was accepted;
            refused handshakes get an id too, so ids count every attempt.
        target: The raw request target, e.g. ``"/ws?token=abc"``.
        path: The path part of the target, e.g. ``"/ws"``.
        query: Query parameters; when a name repeats, the last value wins.
        headers: Request headers with lower-cased names; repeated headers are joined with
            ``", "``.
        status: The HTTP status the server answered: 101 when accepted.
        timestamp: ``time.monotonic()`` when the request was received.
    """

    connection_id: int
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int
    timestamp: float

    @property
    def accepted(self) -> bool:
        """Whether the server answered ``101 Switching Protocols``."""
        return self.status == 101

    @classmethod
    def from_request(
        cls,
        connection_id: int,
        target: str,
        headers: Mapping[str, str] | Any,
        timestamp: float,
    ) -> Handshake:
        """Build a record from a request target and a (multi-)mapping of headers.

        Args:
            connection_id: The id given to this attempt.
            target: The raw request target.
            headers: Header names and values; ``items()`` may repeat a name.
            timestamp: When the request was received.
        """
        split = urlsplit(target)
        lowered: dict[str, str] = {}
        for name, value in headers.items():
            key = str(name).lower()
            lowered[key] = f"{lowered[key]}, {value}" if key in lowered else str(value)
        return cls(
            connection_id=connection_id,
            target=target,
            path=split.path or "/",
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers=lowered,
            status=101,
            timestamp=timestamp,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One complete data message (text or binary) the server received.

    A message the client sent in several fragments is recorded once, reassembled.

    Attributes:
        connection_id: Which connection it came on.
        data: ``str`` for a text message, ``bytes`` for a binary one.
        timestamp: ``time.monotonic()`` when its last frame was received.
    """

    connection_id: int
    data: str | bytes
    timestamp: float

    @property
    def is_text(self) -> bool:
        """Whether it was a text message."""
        return isinstance(self.data, str)

    def json(self) -> Any:
        """Decode the message as JSON.

        Raises:
            msgspec.DecodeError: The data is not valid JSON (a ``ValueError``).
        """
        return msgspec.json.decode(self.data)


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionReport:
    """What one connection received, and what the server answered on it.

    Made by :meth:`Server.report`; ``str()`` gives one readable line for test output and
    :meth:`to_dict` plain data for JSON.

    Attributes:
        connection_id: The connection id.
        target: The request target of its handshake, e.g. ``"/ws?token=abc"``.
        messages: How many data messages it received.
        ids: The ids of the messages it received (in :attr:`Server.id_field`), in order.
        duplicates: Those of ``ids`` the server had already received, on any connection.
        acked: The ids acknowledged on it, in the order their acks were queued.
        not_acked: The ids whose ack was skipped, or lost with an unsent batch.
        acks_sent: How many ack messages were queued (fewer than ``acked`` when batched).
        resumes: The positions of the resume requests it sent.
        replayed: The seqs of the published messages replayed to it.
        published: The seqs of the published messages pushed to it live.
        replies_sent: How many replies to requests were queued.
        closed: Whether its socket is gone.
        close_code: The code of the client's CLOSE frame, or ``None``.
    """

    connection_id: int
    target: str
    messages: int
    ids: tuple[Any, ...]
    duplicates: tuple[Any, ...]
    acked: tuple[Any, ...]
    not_acked: tuple[Any, ...]
    acks_sent: int
    resumes: tuple[int, ...]
    replayed: tuple[int, ...]
    published: tuple[int, ...]
    replies_sent: int
    closed: bool
    close_code: int | None

    def __str__(self) -> str:
        if not self.closed:
            state = "open"
        elif self.close_code is None:
            state = "closed without a CLOSE frame"
        else:
            state = f"closed {self.close_code}"
        parts = [
            f"connection {self.connection_id} {self.target}: {self.messages} messages",
            f"{len(self.ids)} ids ({len(self.duplicates)} duplicates)",
            f"{len(self.acked)} acked in {self.acks_sent} acks",
            f"{len(self.not_acked)} not acked",
            f"{len(self.resumes)} resumes, {len(self.replayed)} replayed",
            f"{len(self.published)} published",
            f"{self.replies_sent} replies",
            state,
        ]
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data (lists for the tuples), e.g. to dump as JSON."""
        return {
            field.name: list(value) if isinstance(value, tuple) else value
            for field in dataclasses.fields(self)
            for value in [getattr(self, field.name)]
        }


def encode(message: Message) -> tuple[int, bytes]:
    """Turn an outgoing message into ``(opcode, payload)``.

    Args:
        message: A mapping (sent as a JSON text frame), ``str`` (text frame) or bytes-like
            (binary frame).

    Raises:
        TypeError: Any other type.
    """
    if isinstance(message, str):
        return OPCODE_TEXT, message.encode()
    if isinstance(message, bytes | bytearray | memoryview):
        return OPCODE_BINARY, bytes(message)
    if isinstance(message, Mapping):
        return OPCODE_TEXT, msgspec.json.encode(message)
    raise TypeError(f"cannot send {type(message).__name__}: expected a mapping, str or bytes")


def split_payload(payload: bytes, fragments: int) -> list[bytes]:
    """Split a payload into ``fragments`` nearly equal, non-empty parts.

    Text payloads are split on byte boundaries, possibly inside a UTF-8 character: that is
    legal in WebSocket fragmentation, and a good test of the client's reassembly.

    Raises:
        ValueError: ``fragments`` is below 1, or larger than the payload when above 1.
    """
    if fragments < 1:
        raise ValueError(f"fragments must be at least 1, got {fragments}")
    if fragments == 1:
        return [payload]
    if fragments > len(payload):
        raise ValueError(f"cannot split {len(payload)} bytes into {fragments} non-empty fragments")
    size, extra = divmod(len(payload), fragments)
    parts: list[bytes] = []
    start = 0
    for index in range(fragments):
        end = start + size + (1 if index < extra else 0)
        parts.append(payload[start:end])
        start = end
    return parts


def frame_header(opcode: int, length: int, *, fin: bool = True) -> bytes:
    """The header of an unmasked (server-to-client) frame.

    Args:
        opcode: The 4-bit opcode.
        length: The payload length in bytes.
        fin: Whether the FIN bit is set.
    """
    first = (0x80 if fin else 0x00) | (opcode & 0x0F)
    if length < 126:
        return bytes((first, length))
    if length < 2**16:
        return bytes((first, 126)) + length.to_bytes(2, "big")
    return bytes((first, 127)) + length.to_bytes(8, "big")


def malformed_frame(kind: MalformedKind, size: int = DEFAULT_OVERSIZED_SIZE) -> bytes:
    """The raw bytes of one broken server-to-client frame.

    Args:
        kind: ``"invalid_json"``: a text frame that is not JSON. ``"invalid_utf8"``: a text
            frame whose payload is not UTF-8. ``"oversized"``: a valid JSON text frame of
            exactly ``size`` bytes. ``"reserved_opcode"``: a frame with the reserved opcode 0x3.
        size: The payload size of an ``"oversized"`` frame.

    Raises:
        ValueError: An unknown kind, or a ``size`` too small to hold the JSON envelope.
    """
    if kind == "invalid_json":
        payload = b'{"type": "broken", '
        return frame_header(OPCODE_TEXT, len(payload)) + payload
    if kind == "invalid_utf8":
        payload = b'{"type": "\xff\xfe\xc3\x28"}'
        return frame_header(OPCODE_TEXT, len(payload)) + payload
    if kind == "oversized":
        prefix, suffix = b'{"type":"oversized","pad":"', b'"}'
        padding = size - len(prefix) - len(suffix)
        if padding < 0:
            raise ValueError(f"an oversized frame needs at least {size - padding} bytes")
        return frame_header(OPCODE_TEXT, size) + prefix + b"x" * padding + suffix
    if kind == "reserved_opcode":
        payload = b"reserved"
        return frame_header(_OPCODE_RESERVED, len(payload)) + payload
    raise ValueError(f"unknown malformed frame kind: {kind!r}")


def parse_close_payload(payload: bytes) -> tuple[int, str]:
    """Read the code and reason of a CLOSE frame payload (1005 when it carries no code)."""
    if len(payload) < 2:
        return _NO_STATUS_RCVD, ""
    return int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8", "replace")
