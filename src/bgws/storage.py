"""The storage seam: where a service keeps its connection info, and whose data it is.

:class:`StorageBackend` is the seed's ``BackgroundServiceStorage`` (store, get, clear
connection info by key); :class:`MemoryStorage` is the in-memory implementation. The config's
``storage_keys`` name the keys the service itself uses.

:func:`store_endpoint` names the endpoint a store belongs to (``"<service_tag> at
wss://host:443/path"``): a store's messages are only ever sent to that endpoint, and its
default file name carries a digest of it (:func:`endpoint_digest`, :func:`default_store_path`).
:func:`store_path` says which SQLite file a config uses.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "MemoryStorage",
    "StorageBackend",
    "default_store_path",
    "endpoint_digest",
    "legacy_store_path",
    "store_endpoint",
    "store_path",
]

_DEFAULT_PORTS = {"ws": 80, "wss": 443}


def store_endpoint(url: str, service_tag: str) -> str:
    """The endpoint a store belongs to: the service tag and the URL without its secrets.

    Only what names the server and the service counts: scheme, host, port (the default port
    written out) and path. Userinfo, query and fragment are left out, so no credential is ever
    part of it, and a token that changes from run to run does not change the endpoint.

    Args:
        url: the service's WebSocket URL.
        service_tag: the service's tag.

    Returns:
        Text such as ``"mychat at wss://chat.example:443/ws"``, the same on every run and
        platform.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    return f"{service_tag} at {scheme}://{host}:{port}{parts.path or '/'}"


def endpoint_digest(endpoint: str) -> str:
    """A short, stable digest of :func:`store_endpoint`'s text, for file names.

    Args:
        endpoint: the endpoint text.

    Returns:
        The first 10 hex digits of its SHA-256.
    """
    return hashlib.sha256(endpoint.encode()).hexdigest()[:10]


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


def store_path(config: Config) -> Path:
    """The SQLite file a service with ``config`` keeps its store in (``storage = "sqlite"``).

    ``storage_path`` when set; otherwise a file under the user's data folder named after the
    service tag and a digest of the endpoint (see :func:`default_store_path`).
    """
    if config.storage_path:
        return Path(config.storage_path)
    tag = config.service_tag or "bgws"
    return default_store_path(tag, store_endpoint(config.url, tag))


def default_store_path(service_tag: str, endpoint: str) -> Path:
    """The store of one service and endpoint, under the user's data directory.

    Args:
        service_tag: the service's tag, the start of the file name.
        endpoint: what :func:`~bgws.storage.store_endpoint` says; a digest of it ends the file
            name, so two programs with the same ``app_name`` and different servers never
            share a store.

    Returns:
        ``<user data dir>/bgws/<service_tag>-<digest>.sqlite3`` (per platform conventions).
    """
    return _data_dir() / f"{service_tag}-{endpoint_digest(endpoint)}.sqlite3"


def legacy_store_path(service_tag: str) -> Path:
    """Where bgws before endpoint-bound stores kept a service's store (named by tag only)."""
    return _data_dir() / f"{service_tag}.sqlite3"


def _data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("bgws", appauthor=False))
