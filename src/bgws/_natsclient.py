"""What the fleet and the bridge share about a nats-py client: closing it within a bound.

nats-py's ``Client.close()`` flushes what is buffered, then waits for its socket to close. Both
waits have no deadline of their own: a broker that stopped reading (or a socket stuck in a
reconnect) can hold a close for minutes, and with it a daemon's stop. Here a close gives up
after ``timeout`` seconds, drops the socket, and never raises: by then the bridge has flushed
what it could and the fleet has deleted its leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

__all__ = ["CLOSE_TIMEOUT", "close_quietly", "describe"]

CLOSE_TIMEOUT = 2.0
"""How long a close may take, in seconds, by default."""

_log = logging.getLogger("bgws.nats")


async def close_quietly(client: Any, timeout: float = CLOSE_TIMEOUT) -> None:
    """Close a nats-py client within ``timeout`` seconds; a failure to close is logged at debug.

    When the close does not finish in time, its socket is aborted (without the flush).
    """
    # A task waited on, not awaited: a close that swallows its cancel (nats-py does, in
    # places) cannot hold the caller past the bound.
    closing = asyncio.ensure_future(client.close())
    done, _ = await asyncio.wait([closing], timeout=timeout)
    if not done:
        _log.debug("NATS: close took over %gs; dropping the connection", timeout)
        _abort(client)
        closing.cancel()
    elif not closing.cancelled() and closing.exception() is not None:  # best effort
        _log.debug("NATS: close failed: %s", describe(closing.exception()))


def describe(exc: BaseException) -> str:
    """``Type: message`` (or the type alone when the message is empty)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _abort(client: Any) -> None:
    """Drop the client's socket at once: nats-py has no public abort."""
    transport = getattr(client, "_transport", None)
    writer = getattr(transport, "_io_writer", None)
    raw = getattr(writer, "transport", None)
    if raw is not None:
        with contextlib.suppress(Exception):
            raw.abort()
