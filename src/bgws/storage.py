"""The storage seam: where a service keeps its connection info.

:class:`StorageBackend` is the seed's ``BackgroundServiceStorage`` (store, get, clear
connection info by key); :class:`MemoryStorage` is the in-memory implementation. The config's
``storage_keys`` name the keys the service itself uses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

__all__ = ["MemoryStorage", "StorageBackend"]


class StorageBackend(ABC):
    """Key-value storage for connection info. Methods may be plain or async."""

    @abstractmethod
    async def store_connection_info(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing what was there."""

    @abstractmethod
    async def get_connection_info(self, key: str) -> str | None:
        """The value under ``key``, or ``None``."""

    @abstractmethod
    async def clear_connection_info(self) -> None:
        """Forget every stored value."""

    async def close(self) -> None:
        """Release what the storage holds; called when the service stops."""


class MemoryStorage(StorageBackend):
    """Connection info in a dict: nothing survives the process."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}

    async def store_connection_info(self, key: str, value: str) -> None:
        self._data[key] = value

    async def get_connection_info(self, key: str) -> str | None:
        return self._data.get(key)

    async def clear_connection_info(self) -> None:
        self._data.clear()

    def __repr__(self) -> str:
        return f"MemoryStorage(keys={sorted(self._data)})"
