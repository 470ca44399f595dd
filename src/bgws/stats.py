"""Plain records a service hands out: state changes and counter snapshots."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .machine import State

__all__ = ["ServiceStats", "StateChange"]


@dataclass(frozen=True, slots=True)
class StateChange:
    """One move of the connection state machine.

    Attributes:
        old: the state left.
        new: the state entered.
        reason: the error that caused the move, if one did.
        at: wall-clock time (``time.time()``) of the move.
        delay: for a move into ``BACKING_OFF``, the seconds until the next attempt.
    """

    old: State
    new: State
    reason: BaseException | None
    at: float
    delay: float | None = None


@dataclass(frozen=True, slots=True)
class ServiceStats:
    """A snapshot of one service's counters (secrets redacted).

    Attributes:
        state: the current state.
        url: the URL, with credentials in it redacted.
        connected_since: when the current link came up (``time.time()``), or ``None``.
        uptime: seconds the current link has been up (0 when down).
        reconnects: reconnect attempts made since start.
        rotations: links replaced before ``max_connection_age`` (no reconnect, no loss).
        sent: messages handed to the transport (resends included).
        received: data frames received.
        dispatched: messages that went through the dispatcher.
        queued: messages waiting in the outbox.
        in_flight: messages sent and waiting for their acknowledgement.
        resent: messages sent again after a reconnect or an ack timeout.
        dropped: messages dropped by the overflow policy or at stop (each one reported).
        expired: messages whose time-to-live passed before they were sent (each reported).
        duplicates: inbound messages dropped as already processed (resume).
        gaps: inbound sequence gaps reported (resume).
        resets: inbound epoch changes reported as :class:`bgws.StreamReset` (resume).
        handler_errors: handler and plugin exceptions.
        decode_errors: frames the codec could not decode.
        dead_links: links declared dead by the keepalive.
        errors: errors reported to the error handler.
        last_error: the last error, as text.
    """

    state: State
    url: str
    connected_since: float | None
    uptime: float
    reconnects: int
    rotations: int
    sent: int
    received: int
    dispatched: int
    queued: int
    in_flight: int
    resent: int
    dropped: int
    expired: int
    duplicates: int
    gaps: int
    resets: int
    handler_errors: int
    decode_errors: int
    dead_links: int
    errors: int
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for JSON status output."""
        data = asdict(self)
        data["state"] = self.state.name
        return data
