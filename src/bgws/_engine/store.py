"""The store seam: one Protocol for everything a service keeps, and its in-memory twin.

:class:`Store` is what the engine needs from a store: the outbox (staged before ``send()``
returns, forgotten once delivered), the subscriptions, the resume position and other keys,
and the seed's connection info (the methods of :class:`~bgws.storage.StorageBackend`).
:class:`~bgws._engine.sqlite.SqliteStore` is the durable implementation; :class:`VolatileStore`
keeps the same things in memory, for services that need no durability and for tests. A
service builds one from its config (:func:`~bgws._engine.sqlite.store_for`) unless one is
passed in (``Service(store=...)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .outbox import Entry

__all__ = ["Loaded", "Store", "VolatileStore"]


@dataclass(slots=True)
class Loaded:
    """What a store held when it was opened."""

    entries: list[Entry] = field(default_factory=list)
    subscriptions: list[tuple[str, Entry]] = field(default_factory=list)
    kv: dict[str, str] = field(default_factory=dict)


class Store(Protocol):
    """What a service needs from a store (SQLite on disk, or memory)."""

    @property
    def durable(self) -> bool:
        """Whether what it keeps survives the process (``send()`` then waits for the disk)."""
        ...

    async def open(self) -> Loaded:
        """Open (creating if needed) and load what was kept."""
        ...

    def stage(self, entries: list[Entry], committed: Callable[[list[Entry]], None]) -> Any:
        """Persist ``entries``; ``committed`` runs once they are on disk. Returns an awaitable."""
        ...

    def forget(self, entries: list[Entry]) -> None:
        """Entries left the outbox for good; delete them (batched, not awaited)."""

    def set_soon(self, key: str, value: str | None) -> None:
        """Write a key (``None`` deletes it) with the next commit, not awaited."""

    async def set(self, key: str, value: str | None) -> None:
        """Write a key and wait until it is on disk."""

    async def put_subscription(self, key: str, entry: Entry) -> None:
        """Keep a subscription message under ``key``."""

    async def drop_subscription(self, key: str) -> None:
        """Forget the subscription under ``key``."""

    async def store_connection_info(self, key: str, value: str) -> None:
        """Store connection info ``value`` under ``key``, replacing what was there."""

    async def get_connection_info(self, key: str) -> str | None:
        """The connection info under ``key``, or ``None``."""
        ...

    async def clear_connection_info(self) -> None:
        """Forget every stored connection info value."""

    async def close(self) -> None:
        """Finish pending writes and close."""


class VolatileStore:
    """The store in memory: nothing survives the process.

    Slots and no ``__dict__``: every service on the memory store holds one, idle or not.
    """

    __slots__ = ("_kv", "_subs")

    durable = False

    def __init__(self) -> None:
        self._kv: dict[str, str] = {}
        self._subs: dict[str, Entry] = {}

    async def open(self) -> Loaded:
        """Load what was kept since this object was made (nothing, at first)."""
        return Loaded(subscriptions=list(self._subs.items()), kv=dict(self._kv))

    def stage(self, entries: list[Entry], committed: Callable[[list[Entry]], None]) -> Any:
        """Hand ``entries`` on at once (there is no disk to wait for)."""
        committed(entries)
        return _DONE

    def forget(self, entries: list[Entry]) -> None:
        """Nothing to delete: the outbox was the only copy."""
        return

    def set_soon(self, key: str, value: str | None) -> None:
        """Write a key (``None`` deletes it)."""
        if value is None:
            self._kv.pop(key, None)
        else:
            self._kv[key] = value

    async def set(self, key: str, value: str | None) -> None:
        """Write a key (``None`` deletes it)."""
        self.set_soon(key, value)

    async def put_subscription(self, key: str, entry: Entry) -> None:
        """Keep a subscription message under ``key`` (made last in the re-send order)."""
        self._subs.pop(key, None)
        self._subs[key] = entry

    async def drop_subscription(self, key: str) -> None:
        """Forget the subscription under ``key``."""
        self._subs.pop(key, None)

    async def store_connection_info(self, key: str, value: str) -> None:
        """Store connection info under ``key``."""
        self._kv[f"info:{key}"] = value

    async def get_connection_info(self, key: str) -> str | None:
        """The connection info under ``key``, or ``None``."""
        return self._kv.get(f"info:{key}")

    async def clear_connection_info(self) -> None:
        """Forget every stored connection info value."""
        for key in [k for k in self._kv if k.startswith("info:")]:
            del self._kv[key]

    async def close(self) -> None:
        """Nothing to release."""
        return

    def __repr__(self) -> str:
        return f"VolatileStore(subscriptions={len(self._subs)})"


class _Done:
    """An awaitable that is already complete (memory commits are instant)."""

    def __await__(self) -> Any:
        return iter(())


_DONE = _Done()
