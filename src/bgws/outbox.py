"""The outgoing queue: the seam between ``send()`` and the writer.

:class:`MemoryOutbox` is bounded by ``max_queue_size``; when it is full the overflow policy
decides: raise :class:`bgws.QueueFull` (``"raise"``, the default), drop the oldest message and
report it (``"drop_oldest"``), or wait for room (``"wait"``). A durable outbox (SQLite) plugs in
behind the same methods.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, Protocol

from .errors import MessageDropped, QueueFull

__all__ = ["MemoryOutbox", "Outbox", "Outgoing", "Overflow"]

Overflow = Literal["raise", "drop_oldest", "wait"]


class Outgoing:
    """One queued message, already encoded.

    Attributes:
        payload: the frame's payload.
        binary: whether it goes out as a binary frame.
        id: the message id (``None`` for str/bytes messages or when ids are off).
    """

    __slots__ = ("binary", "id", "payload")

    def __init__(self, payload: bytes | str, binary: bool, id: Any = None) -> None:
        self.payload = payload
        self.binary = binary
        self.id = id

    def __repr__(self) -> str:
        return f"Outgoing(id={self.id!r}, size={len(self.payload)})"


class Outbox(Protocol):
    """What the service needs from an outbox."""

    def __len__(self) -> int: ...

    async def put(self, item: Outgoing) -> None:
        """Queue ``item``; applies the overflow policy when full."""

    def take(self, limit: int) -> list[Outgoing]:
        """Remove and return up to ``limit`` items, oldest first."""

    def put_back(self, items: list[Outgoing]) -> None:
        """Return items that could not be sent to the front, in order."""

    async def wait_nonempty(self) -> None:
        """Return once at least one item is queued."""

    async def wait_empty(self) -> None:
        """Return once every item has been taken."""

    def drain_all(self) -> list[Outgoing]:
        """Remove and return everything (at stop)."""


class MemoryOutbox:
    """A bounded in-memory outbox.

    Args:
        max_size: the most messages it holds.
        overflow: what ``put`` does when full.
        on_drop: called with a :class:`bgws.MessageDropped` for each message dropped by
            ``"drop_oldest"``.
    """

    __slots__ = ("_empty", "_items", "_max", "_nonempty", "_on_drop", "_overflow", "_room")

    def __init__(
        self,
        max_size: int,
        overflow: Overflow = "raise",
        on_drop: Callable[[MessageDropped], None] | None = None,
    ) -> None:
        self._items: deque[Outgoing] = deque()
        self._max = max_size
        self._overflow = overflow
        self._on_drop = on_drop
        self._nonempty = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: Outgoing) -> None:
        items = self._items
        while len(items) >= self._max:
            if self._overflow == "raise":
                raise QueueFull(f"outbox holds max_queue_size ({self._max}) messages")
            if self._overflow == "drop_oldest":
                dropped = items.popleft()
                if self._on_drop is not None:
                    self._on_drop(
                        MessageDropped("outbox full: oldest message dropped", dropped.payload)
                    )
                continue
            self._room.clear()
            await self._room.wait()
        items.append(item)
        self._nonempty.set()
        self._empty.clear()

    def take(self, limit: int) -> list[Outgoing]:
        items = self._items
        count = min(limit, len(items))
        batch = [items.popleft() for _ in range(count)]
        if not items:
            self._nonempty.clear()
            self._empty.set()
        if count:
            self._room.set()
        return batch

    def put_back(self, items: list[Outgoing]) -> None:
        if items:
            self._items.extendleft(reversed(items))
            self._nonempty.set()
            self._empty.clear()

    async def wait_nonempty(self) -> None:
        await self._nonempty.wait()

    async def wait_empty(self) -> None:
        await self._empty.wait()

    def drain_all(self) -> list[Outgoing]:
        return self.take(len(self._items))
