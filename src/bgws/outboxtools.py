"""See and purge what a service's outbox holds: ``service.outbox`` and ``bgws outbox``.

:class:`OutboxTools` is the operator's view of one running service's outbox: the messages
accepted by ``send()`` and not yet delivered (queued, or sent and waiting in flight for their
acknowledgement). With the SQLite store these are the messages kept on disk, so the view
shows what would be sent after a restart too.

::

    for item in service.outbox.list():
        print(item.seq, item.id, item.age, item.size)
    service.outbox.export(open("outbox.jsonl", "w"))   # JSON lines, payloads included
    service.outbox.purge(confirm=True)                  # drop them all, for good

A purge is an operator's decision: the purged messages are deleted from the store, whoever
waits for their acknowledgement gets :class:`bgws.AckTimeout`, and one WARNING names how many
were purged (never their contents).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import IO, Any

from ._engine.outbox import Entry, Outbox
from .errors import ServiceError

__all__ = ["OutboxMessage", "OutboxTools"]


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One undelivered message, as :class:`OutboxTools` shows it.

    Attributes:
        seq: its place in the order of acceptance (the store's row id when durable); the
            handle :meth:`OutboxTools.show` and :meth:`OutboxTools.purge` take.
        id: the message id (``None`` for text or binary frames without one).
        priority: its lane.
        size: the payload's size in bytes.
        format: ``"text"`` or ``"binary"``.
        in_flight: whether it was sent and waits for its acknowledgement.
        attempts: how many times it was handed to the transport.
        durable: whether the store keeps it across restarts.
        accepted_at: when ``send()`` accepted it (``time.time()``).
        age: seconds since it was accepted.
        expires_at: when its time-to-live ends, or ``None``.
        data: the payload (text as it is, binary in base64), or ``None`` in a listing.
    """

    seq: int
    id: Any
    priority: int
    size: int
    format: str
    in_flight: bool
    attempts: int
    durable: bool
    accepted_at: float
    age: float
    expires_at: float | None
    data: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return asdict(self)


class OutboxTools:
    """List, show, export and purge the messages of one service's outbox.

    Made by :attr:`bgws.Service.outbox`; call it on the service's event loop.

    Args:
        outbox: the service's outbox.
        name: the service's name, for the purge's log line.
        log: the service's logger.
    """

    def __init__(self, outbox: Outbox, name: str, log: logging.Logger) -> None:
        self._outbox = outbox
        self._name = name
        self._log = log

    def __len__(self) -> int:
        """Messages not yet delivered (queued and in flight)."""
        return len(self._outbox)

    def list(self, limit: int | None = None) -> list[OutboxMessage]:
        """The undelivered messages in order of acceptance, without their payloads.

        Args:
            limit: the most to return (the oldest first); ``None``: all.
        """
        items = self._outbox.entries()
        if limit is not None:
            items = items[: max(limit, 0)]
        now = time.time()
        return [_describe(entry, flying, now, payload=False) for entry, flying in items]

    def show(self, ref: int | str) -> OutboxMessage:
        """One message with its payload.

        Args:
            ref: its ``seq`` (an int, or digits) or its message id.

        Raises:
            ServiceError: no undelivered message has that seq or id.
        """
        entry, flying = self._find(ref)
        return _describe(entry, flying, time.time(), payload=True)

    def iter_export(self) -> Iterator[dict[str, Any]]:
        """Every undelivered message with its payload, as plain dicts, oldest first."""
        now = time.time()
        for entry, flying in self._outbox.entries():
            yield _describe(entry, flying, now, payload=True).to_dict()

    def export(self, file: IO[str]) -> int:
        """Write every undelivered message as one JSON line (payload included) to ``file``.

        Returns:
            How many were written.
        """
        count = 0
        for item in self.iter_export():
            file.write(json.dumps(item, ensure_ascii=False) + "\n")
            count += 1
        return count

    def purge(self, refs: Iterable[int | str] | None = None, *, confirm: bool = False) -> int:
        """Delete undelivered messages for good (from the store too).

        Args:
            refs: the messages' seqs or ids; ``None``: every message.
            confirm: must be true; a purge cannot be undone.

        Returns:
            How many were purged.

        Raises:
            ServiceError: ``confirm`` is false, or a ref names no undelivered message.
        """
        if not confirm:
            raise ServiceError("a purge cannot be undone: pass confirm=True (bgws: --yes)")
        seqs = None if refs is None else [self._find(ref)[0].seq for ref in refs]
        removed = self._outbox.purge(seqs)
        if removed:
            self._log.warning("%d undelivered message(s) purged from the outbox", len(removed))
        return len(removed)

    def _find(self, ref: int | str) -> tuple[Entry, bool]:
        if isinstance(ref, bool) or not isinstance(ref, int | str):
            raise ServiceError(f"a message is named by its seq or id, not {ref!r}")
        seq = ref if isinstance(ref, int) else (int(ref) if ref.isdigit() else None)
        items = self._outbox.entries()
        for entry, flying in items:
            if seq is not None and entry.seq == seq:
                return entry, flying
        for entry, flying in items:
            if entry.id is not None and str(entry.id) == str(ref):
                return entry, flying
        raise ServiceError(f"no undelivered message has the seq or id {ref!r}")

    def __repr__(self) -> str:
        return f"<OutboxTools {self._name!r} undelivered={len(self._outbox)}>"


def _describe(entry: Entry, flying: bool, now: float, *, payload: bool) -> OutboxMessage:
    raw = entry.payload
    size = len(raw.encode()) if isinstance(raw, str) else len(raw)
    data: str | None = None
    if payload:
        data = raw if isinstance(raw, str) else base64.b64encode(raw).decode()
    if entry.binary:
        kind = "binary"
    else:
        kind = "text"
        if payload and isinstance(raw, bytes):
            data = raw.decode("utf-8", "replace")
    return OutboxMessage(
        seq=entry.seq,
        id=entry.id if entry.id is None or isinstance(entry.id, int | str) else str(entry.id),
        priority=entry.priority,
        size=size,
        format=kind,
        in_flight=flying,
        attempts=entry.attempts,
        durable=entry.durable,
        accepted_at=entry.accepted_at,
        age=max(now - entry.accepted_at, 0.0),
        expires_at=entry.expires_at,
        data=data,
    )
