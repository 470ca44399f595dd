"""What the control server and its clients share: where the socket lives, and its lines.

- :func:`runtime_dir`, :func:`default_socket_path` and :func:`socket_path` find the socket;
  :func:`check_private_dir` keeps its directory private; :func:`bind_unix` makes a socket
  that is mode 0600 from its first instant; the token file carries a loopback port and its
  token where Unix sockets are missing (Windows).
- :class:`ControlError` and :class:`DaemonNotRunning` are what clients see.
- :func:`decode_request`, :func:`get_field` and :func:`message_field` read requests;
  :func:`message_dict` writes a received message as plain JSON types.
- :class:`TailFeed` is a tail client's bounded queue: it never blocks the service, and counts
  what it loses.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import socket
import stat
import sys
import tempfile
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from .errors import (
    AckTimeout,
    BgwsError,
    MessageTooBig,
    QueueFull,
    RequestTimeout,
    ServiceClosed,
    ServiceError,
    ServiceSuspended,
    StoreError,
)
from .message import Message

__all__ = [
    "PROTOCOL_VERSION",
    "BadRequest",
    "TailEnd",
    "TailFeed",
    "ControlError",
    "DaemonNotRunning",
    "bind_unix",
    "check_private_dir",
    "claim_path",
    "decode_request",
    "default_socket_path",
    "get_field",
    "looks_like_token_file",
    "message_dict",
    "message_field",
    "open_connection",
    "read_reply",
    "read_token_file",
    "reply_result",
    "runtime_dir",
    "socket_path",
    "write_token_file",
]

_REMOTE: dict[str, type[BgwsError]] = {
    cls.__name__: cls
    for cls in (
        AckTimeout,
        MessageTooBig,
        QueueFull,
        RequestTimeout,
        ServiceClosed,
        ServiceError,
        ServiceSuspended,
        StoreError,
    )
}
"""Errors the daemon reports that are raised as themselves in the client."""

PROTOCOL_VERSION = 1
"""The control protocol's version, given in the ``hello`` reply."""

_log = logging.getLogger("bgws.control")
_LIMIT = 64 << 20  # the longest line a client accepts (a tail event carries a whole message)
_AF_UNIX_MAX = 104 if sys.platform == "darwin" else 108


class ControlError(BgwsError):
    """The control socket cannot be used, or the daemon refused a request.

    Attributes:
        kind: the error's type as the daemon named it (``"BadRequest"``,
            ``"UnknownService"``, ...), or ``"ControlError"`` for a local problem.
        usage: whether the request itself was wrong (the command line exits with 2).
    """

    def __init__(self, message: str, *, kind: str = "ControlError", usage: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.usage = usage


class DaemonNotRunning(ControlError):
    """No daemon listens at the socket path (it is missing, or a stale leftover)."""


# -- where the socket is ----------------------------------------------------------------------


def runtime_dir(env: Mapping[str, str] | None = None) -> Path:
    """The directory of bgws's control socket for this user.

    ``$XDG_RUNTIME_DIR/bgws`` on Linux and BSD (``platformdirs.user_runtime_dir("bgws")`` on
    macOS and Windows); without ``XDG_RUNTIME_DIR``, ``bgws-<uid>`` in the temp directory.
    """
    source = os.environ if env is None else env
    if sys.platform in ("win32", "darwin"):
        import platformdirs

        return Path(platformdirs.user_runtime_dir("bgws", appauthor=False))
    xdg = source.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "bgws"
    return Path(tempfile.gettempdir()) / f"bgws-{os.getuid()}"


def default_socket_path(env: Mapping[str, str] | None = None) -> Path:
    """``bgws.sock`` in :func:`runtime_dir` (on Windows the token file ``bgws.port``)."""
    return runtime_dir(env) / ("bgws.port" if sys.platform == "win32" else "bgws.sock")


def socket_path(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """``explicit`` if given, else ``$BGWS_SOCKET``, else :func:`default_socket_path`."""
    source = os.environ if env is None else env
    if explicit is not None:
        return Path(explicit)
    if source.get("BGWS_SOCKET"):
        return Path(source["BGWS_SOCKET"])
    return default_socket_path(source)


def check_private_dir(path: Path, *, strict: bool = True) -> None:
    """Create ``path`` with mode 0700 if it is missing; with ``strict``, keep it private.

    Strict: the directory must be a real directory (not a link) owned by this user, and is
    set to 0700 if it was more open.

    Raises:
        ControlError: it cannot be created, or (strict) is a link or another user's.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ControlError(f"cannot create the directory {path}: {exc.strerror or exc}") from exc
    if not strict or sys.platform == "win32":
        return
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ControlError(f"{path} is not a directory; remove it or choose --socket")
    if info.st_uid != os.getuid():
        raise ControlError(f"{path} belongs to another user; choose --socket")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)


def message_dict(message: Message, codec: str) -> dict[str, Any]:
    """A received message as plain JSON types: ``type``, ``id``, ``received_at``, ``format``
    (``"json"``, ``"text"`` or ``"binary"``) and ``data`` (binary data in base64)."""
    out: dict[str, Any] = {"type": message.type, "id": message.id}
    out["received_at"] = message.received_at
    if message.is_binary:
        out["format"] = "binary"
        raw = message.raw
        out["data"] = base64.b64encode(raw if isinstance(raw, bytes) else raw.encode()).decode()
    else:
        out["format"] = "json" if codec == "json" else "text"
        out["data"] = message.data
    return out


# -- making the socket ------------------------------------------------------------------------


def bind_unix(path: Path) -> tuple[socket.socket, int]:
    """A Unix socket bound at ``path``, mode 0600 from its first instant; and its inode.

    Raises:
        ControlError: the path is too long for a Unix socket, or cannot be bound.
    """
    shown = os.fspath(path)
    size = len(os.fsencode(shown))
    if size >= _AF_UNIX_MAX:
        raise ControlError(
            f"the socket path {shown} is too long for a Unix socket ({size} bytes; the limit "
            f"is {_AF_UNIX_MAX - 1}): choose a shorter one with --socket"
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(shown)
    except OSError as exc:
        sock.close()
        raise ControlError(f"cannot listen on {shown}: {exc.strerror or exc}") from exc
    finally:
        os.umask(old)
    os.chmod(shown, 0o600)
    return sock, os.stat(shown).st_ino


def write_token_file(path: Path, port: int, token: str) -> int:
    """Write the token file (mode 0600, created anew); returns its inode."""
    data = msgspec.json.encode({"port": port, "token": token, "pid": os.getpid()})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return os.stat(path).st_ino


def read_token_file(path: Path) -> tuple[int, str]:
    """The port and token of a token file.

    Raises:
        ControlError: it is not one.
    """
    try:
        data = msgspec.json.decode(path.read_bytes())
        return int(data["port"]), str(data["token"])
    except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
        raise ControlError(f"{path} is not a bgws control socket or token file") from exc


def looks_like_token_file(path: Path) -> bool:
    """Whether ``path`` holds a token file (so a stale one may be replaced)."""
    try:
        data = msgspec.json.decode(path.read_bytes()[:4096])
    except (OSError, msgspec.DecodeError):
        return False
    return isinstance(data, dict) and {"port", "token"} <= set(data)


# -- connecting -------------------------------------------------------------------------------


async def claim_path(path: Path, transport: str) -> None:
    """Raise if a daemon answers at ``path``; remove a stale socket or token file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    expected = stat.S_ISSOCK(mode) if transport == "unix" else stat.S_ISREG(mode)
    if not expected or (transport == "tcp" and not looks_like_token_file(path)):
        what = "a socket" if transport == "unix" else "a bgws token file"
        raise ControlError(f"{path} exists and is not {what}; remove it or choose another path")
    try:
        _, writer, _ = await open_connection(path, 2.0)
    except ControlError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        _log.info("removed the stale control socket %s", path)
        return
    writer.close()
    raise ControlError(f"another bgws daemon is already listening on {path}")


async def open_connection(
    path: Path, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any]]:
    """Connect and say hello (with the token on a TCP port); returns the hello result.

    Raises:
        DaemonNotRunning: nothing listens at ``path``.
        ControlError: ``path`` is not a control socket, or the daemon refused the client.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DaemonNotRunning(f"no bgws daemon is running ({path} does not exist)") from None
    except OSError as exc:
        raise ControlError(f"cannot reach {path}: {exc.strerror or exc}") from exc
    hello: dict[str, Any] = {"id": 0, "op": "hello"}
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            if stat.S_ISSOCK(mode) and sys.platform != "win32":
                reader, writer = await asyncio.open_unix_connection(path, limit=_LIMIT)
            elif stat.S_ISREG(mode):
                port, hello["token"] = read_token_file(path)
                reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=_LIMIT)
            else:
                raise ControlError(f"{path} is not a bgws control socket")
            writer.write(msgspec.json.encode(hello) + b"\n")
            result = reply_result(await read_reply(reader))
            if not isinstance(result, dict) or result.get("protocol") != PROTOCOL_VERSION:
                raise ControlError(f"{path}: the daemon speaks another control protocol")
    except BaseException as exc:
        if writer is not None:
            writer.close()
        raise _translate(exc, path, timeout) from None
    return reader, writer, result


def _translate(exc: BaseException, path: Path, timeout: float) -> BaseException:
    """A failure to connect, as the :class:`ControlError` a caller can act on."""
    if isinstance(exc, ControlError | BgwsError) or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, TimeoutError):
        error = ControlError(f"the daemon at {path} did not answer within {timeout}s")
    elif isinstance(exc, ConnectionRefusedError | FileNotFoundError):
        error = DaemonNotRunning(
            f"no bgws daemon is listening on {path} (a stale socket: start one with bgws run)"
        )
    elif isinstance(exc, OSError):
        error = ControlError(f"cannot connect to {path}: {exc.strerror or exc}")
    elif isinstance(exc, ValueError):  # garbage, or a line too long: not a bgws daemon
        error = ControlError(f"{path} does not speak the bgws control protocol")
    else:
        return exc
    error.__cause__ = exc
    return error


async def read_reply(reader: asyncio.StreamReader) -> dict[str, Any]:
    """Read one reply line.

    Raises:
        DaemonNotRunning: the daemon closed the connection.
    """
    line = await reader.readline()
    if not line:
        raise DaemonNotRunning("the daemon closed the connection")
    data: dict[str, Any] = msgspec.json.decode(line)
    return data


def reply_result(reply: Mapping[str, Any]) -> Any:
    """The reply's result, or its error raised (as itself when it is a service's error)."""
    if reply.get("ok"):
        return reply.get("result")
    error = reply.get("error") or {}
    kind, message = str(error.get("type", "ControlError")), str(error.get("message", ""))
    remote = _REMOTE.get(kind)
    if remote is not None:
        raise remote(message)
    raise ControlError(message, kind=kind, usage=bool(error.get("usage")))


# -- tail queues ------------------------------------------------------------------------------


class TailEnd:
    """The end of a tail stream, and why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class TailFeed:
    """A bounded queue of incoming messages for one ``tail`` client."""

    def __init__(self, size: int, types: frozenset[str] | None, services: list[str]) -> None:
        self.size = size
        self.types = types
        self.services = services
        self.lost = 0
        self._lost_since = 0
        self._items: deque[tuple[str, Message] | int | TailEnd] = deque()
        self._ready = asyncio.Event()

    def put(self, service: str, message: Message) -> None:
        """Called by the service's tap, on its loop: never blocks, never raises."""
        if self.types is not None and message.type not in self.types:
            return
        if len(self._items) >= self.size:
            self.lost += 1
            self._lost_since += 1
            return
        if self._lost_since:
            self._items.append(self._lost_since)
            self._lost_since = 0
        self._items.append((service, message))
        self._ready.set()

    def end(self, reason: str) -> None:
        """End the stream after what is queued (and the count of what was lost)."""
        if self._lost_since:
            self._items.append(self._lost_since)
            self._lost_since = 0
        self._items.append(TailEnd(reason))
        self._ready.set()

    async def get(self) -> tuple[str, Message] | int | TailEnd:
        """The next item: a message with its service, a count of lost messages, or the end."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


# -- reading requests -------------------------------------------------------------------------


class BadRequest(Exception):
    """A request the server cannot take: answered with an error, ``usage`` true."""

    def __init__(self, message: str, kind: str = "BadRequest") -> None:
        super().__init__(message)
        self.kind = kind


def decode_request(line: bytes) -> dict[str, Any]:
    """A request line as a dict with an ``op``.

    Raises:
        BadRequest: it is not a JSON object with an ``op``.
    """
    try:
        request = msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"a request must be one JSON object per line: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest("a request must be a JSON object")
    if "op" not in request:
        raise BadRequest("a request needs an 'op'")
    return request


def get_field(request: Mapping[str, Any], name: str, kind: type, default: Any) -> Any:
    """The request's field ``name`` (``default`` when missing or null), checked to be ``kind``.

    An integer is accepted where a number is wanted; a boolean is never an integer.

    Raises:
        BadRequest: the field has another type.
    """
    value = request.get(name)
    if value is None:
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"{name!r} must be {_KIND_NAMES.get(kind, kind.__name__)}")
    return value


_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def message_field(request: Mapping[str, Any]) -> Mapping[str, Any] | str | bytes:
    """The request's ``message``: an object (JSON), a string (a text frame), or with
    ``"encoding": "base64"`` a string decoded to bytes (a binary frame).

    Raises:
        BadRequest: it is missing or of another shape.
    """
    message = request.get("message")
    encoding = request.get("encoding")
    if message is None:
        raise BadRequest("'message' is missing")
    if encoding == "base64":
        if not isinstance(message, str):
            raise BadRequest("a base64 'message' must be a string")
        try:
            return base64.b64decode(message, validate=True)
        except binascii.Error as exc:
            raise BadRequest(f"'message' is not valid base64: {exc}") from None
    if encoding is not None:
        raise BadRequest(f"unknown 'encoding' {encoding!r}; the only one is 'base64'")
    if isinstance(message, dict | str):
        return message
    raise BadRequest("'message' must be a JSON object, or a string for a text frame")
