"""Decisions every transport shares, taken once above the WebSocket libraries.

Each transport catches its library's exceptions and hands the facts (an HTTP status and its
``Location``, an ``ssl.SSLError``, an ``OSError``, the negotiated headers) to these functions,
so both transports raise the same :mod:`bgws.errors` with the same words:

- :func:`handshake_rejected`: a status other than 101. 401/403 are :class:`AuthRejected`;
  a redirect is a :class:`HandshakeRejected` naming its (redacted) ``Location``, since no
  transport follows a redirect itself: :func:`bgws._engine.connect.open_link` decides that.
- :func:`tls_failed`: a certificate check names its reason ("self-signed certificate",
  "IP address mismatch"...); a server that does not speak TLS at all gets one clear line
  asking whether the port is a ``ws://`` one.
- :func:`connect_failed`: an OS error, never an empty reason.
- :func:`check_negotiation`: RFC 6455 section 4.1 says a client must fail the connection when
  the server names a subprotocol or an extension it never offered.
- :class:`LibraryLog`: the libraries' own log lines, on a logger under ``bgws``.
"""

from __future__ import annotations

import errno
import logging
import os
import ssl
from collections.abc import Collection, Sequence
from typing import Final

from .._redact import redact_url
from ..errors import AuthRejected, ConnectTimeout, HandshakeRejected, LinkError

__all__ = [
    "REDIRECT_STATUSES",
    "LibraryLog",
    "check_negotiation",
    "connect_failed",
    "connect_timed_out",
    "handshake_rejected",
    "tls_failed",
]

REDIRECT_STATUSES: Final = frozenset({300, 301, 302, 303, 307, 308})
"""HTTP statuses that redirect an upgrade request elsewhere."""

# OpenSSL reasons that mean "the bytes the server sent are not TLS at all".
_NOT_TLS: Final = frozenset(
    {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE"}
)


def handshake_rejected(status: int, location: str | None = None) -> HandshakeRejected:
    """The error for an upgrade answered with ``status`` (not 101).

    Args:
        status: the HTTP status.
        location: the ``Location`` header, when the server sent one.
    """
    if status in (401, 403):
        return AuthRejected(status, f"server refused the credentials (HTTP {status})")
    if status in REDIRECT_STATUSES:
        where = f" to {redact_url(location)}" if location else " with no Location"
        return HandshakeRejected(
            status,
            f"server redirected the handshake (HTTP {status}){where}; not followed",
            location=location,
        )
    return HandshakeRejected(status)


def tls_failed(exc: ssl.SSLError, url: str) -> LinkError:
    """A one-line :class:`LinkError` for a failed TLS handshake.

    Args:
        exc: the error the TLS layer raised (kept as the cause by the caller).
        url: the URL tried (only its scheme is used; nothing of it reaches the message).
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or "certificate verify failed"
        return LinkError(f"TLS certificate check failed: {why}")
    reason = exc.reason or ""
    if reason in _NOT_TLS or isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        hint = " (is this a ws:// port?)" if url.startswith("wss:") else ""
        return LinkError(f"TLS handshake failed: the server did not answer in TLS{hint}")
    text = reason or (exc.args[1] if len(exc.args) > 1 else "") or type(exc).__name__
    return LinkError(f"TLS handshake failed: {text}")


def connect_failed(exc: OSError, url: str) -> LinkError:
    """A one-line :class:`LinkError` for an OS error while connecting or handshaking.

    Args:
        exc: the OS error (kept as the cause by the caller).
        url: the URL tried (only its scheme is used).
    """
    if isinstance(exc, ssl.SSLError):
        return tls_failed(exc, url)
    code = exc.errno
    if code is None and isinstance(exc, ConnectionResetError):
        code = errno.ECONNRESET
    reason = os.strerror(code) if code is not None else (str(exc) or type(exc).__name__)
    if url.startswith("wss:") and isinstance(exc, ConnectionResetError | ConnectionAbortedError):
        return LinkError(
            f"TLS handshake failed: the server closed the connection ({reason}); "
            "is this a ws:// port?"
        )
    return LinkError(f"cannot connect: {reason}")


def connect_timed_out(timeout: float, url: str) -> ConnectTimeout:
    """The error for a connect attempt that took longer than ``timeout`` seconds.

    Args:
        timeout: the bound that passed, in seconds.
        url: the URL tried (only its scheme is used).
    """
    text = f"no connection within connect_timeout ({timeout:g}s)"
    if url.startswith("wss:"):  # a plain WebSocket server waits forever for a TLS hello
        text += "; a TLS handshake never answered looks like this: is this a ws:// port?"
    return ConnectTimeout(text)


def check_negotiation(
    offered_subprotocols: Sequence[str],
    subprotocol: str | None,
    extensions: str | None,
    offered_extensions: Collection[str] = (),
) -> None:
    """Fail a handshake whose answer names what the client never offered (RFC 6455 4.1).

    Args:
        offered_subprotocols: the subprotocols the client offered.
        subprotocol: the server's ``Sec-WebSocket-Protocol`` answer, if any.
        extensions: the server's ``Sec-WebSocket-Extensions`` answer, if any.
        offered_extensions: the extension names the client offered.

    Raises:
        LinkError: an unoffered subprotocol or extension.
    """
    if subprotocol and subprotocol.strip() and subprotocol.strip() not in offered_subprotocols:
        raise LinkError(f"server chose subprotocol {subprotocol.strip()!r}, which was not offered")
    if extensions and extensions.strip():
        for item in extensions.split(","):
            name = item.split(";", 1)[0].strip()
            if name and name not in offered_extensions:
                raise LinkError(f"server chose extension {name!r}, which was not offered")


class LibraryLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A WebSocket library's log lines on a ``bgws.transport.*`` logger, one step quieter.

    The logger has no level of its own, so it follows whatever the application set on
    ``bgws`` (and, being an adapter, picows makes no per-socket child loggers that would
    escape it). The libraries log every connect and disconnect at INFO, and a peer's protocol
    violation at ERROR; bgws reports both itself, as state changes and link errors, so
    those lines go to DEBUG, and so do picows's write flow-control warnings. Anything else
    a library logs at WARNING or above (a bug) keeps its level.

    Args:
        name: the logger name, under ``bgws.transport``.
    """

    def __init__(self, name: str) -> None:
        super().__init__(logging.getLogger(name), {})

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        """Log ``msg``, lowering INFO lines and parser errors to DEBUG."""
        if level <= logging.INFO or (isinstance(msg, str) and msg.startswith(_ROUTINE)):
            level = min(level, logging.DEBUG)
        super().log(level, msg, *args, **kwargs)  # type: ignore[arg-type]


# How picows words a peer's protocol violation (bgws reports it itself, as a link failure) and
# its write flow control (the engine's own backpressure), logged at ERROR and WARNING.
_ROUTINE: Final = ("WS parser error", "Protocol writing pause", "Protocol writing resume")
