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
        delay: for a move into ``BACKING_OFF`` or ``SUSPENDED``, the seconds until the next
            attempt.
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
        reconnects: successful reconnections since start (links that came up again after
            the first one), not attempts.
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
        quota_wait_until: while ``connect_quota`` holds the next connect attempt back, the
            wall-clock time it may go; else ``None``.
        last_error_at: when the last error happened (``time.time()``), or ``None``.
        last_error_before_recovery: the last error happened before the link came back up:
            it explains the outage that ended, not the present.
        offline_since: when the current outage began (the first failed attempt or the lost
            link), or ``None`` while connected (or before the first attempt failed).
        next_retry_at: while backing off or suspended, when the next attempt starts (wall
            clock time).
        attempts: failed attempts in the current outage (0 while connected).
        connect_attempts: connect attempts made since start (successful or not).
        outbox_oldest_age: seconds the oldest undelivered message has waited, or ``None``.
        last_received_at: when the last frame was read from the network, or ``None``.
        rtt: the last keepalive round trip (probe to answer) in seconds, or ``None``.
        rtt_sum: the sum of every keepalive round trip measured, in seconds.
        rtt_counts: how many round trips fell in each bucket of
            :data:`bgws.metrics.RTT_BUCKETS` (not cumulative), the last one over them all;
            empty before the first round trip.
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
    quota_wait_until: float | None = None
    last_error_at: float | None = None
    last_error_before_recovery: bool = False
    offline_since: float | None = None
    next_retry_at: float | None = None
    attempts: int = 0
    connect_attempts: int = 0
    outbox_oldest_age: float | None = None
    last_received_at: float | None = None
    rtt: float | None = None
    rtt_sum: float = 0.0
    rtt_counts: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for JSON status output."""
        data = asdict(self)
        data["state"] = self.state.name
        return data
