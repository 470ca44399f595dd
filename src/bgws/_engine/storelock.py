"""Who owns a store file: one service of one process, even while the file is closed.

SQLite's exclusive locking mode keeps a store to one owner only while its connection is open,
and an idle :class:`~bgws._engine.sqlite.SqliteStore` closes its connection (so 10,000 idle
services hold no SQLite file, descriptor or page cache). Ownership is therefore kept apart
from the connection, for as long as the store is open:

- in this process, a table of the store files in use (by their real path);
- across processes, a POSIX byte-range lock on one byte of the folder's lock file
  (:data:`LOCK_FILE`), at an offset taken from a digest of the store's file name. The kernel
  drops it when the process ends, so a process that crashed never leaves a store locked. One
  lock file is opened per folder, not per store, and only while a store in it is owned.

Where POSIX locks are missing (Windows), :func:`claim` returns ``None``: the store then keeps
its connection open while it is open, and SQLite's own lock keeps other processes out.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "Claim", "claim"]

LOCK_FILE = ".bgws-store-locks"
"""The lock file in each folder that holds stores (empty; only its byte-range locks count)."""

_lock = threading.Lock()
_owned: dict[str, Claim] = {}
_folders: dict[str, _Folder] = {}


@dataclass(slots=True)
class _Folder:
    fd: int
    claims: int = 0


class Claim:
    """This process's hold on one store file; :meth:`release` gives it up."""

    __slots__ = ("_folder", "_key", "_offset")

    def __init__(self, key: str, folder: str, offset: int) -> None:
        self._key = key
        self._folder = folder
        self._offset = offset

    def release(self) -> None:
        """Give the store up (once; later calls do nothing)."""
        with _lock:
            if _owned.get(self._key) is not self:
                return
            del _owned[self._key]
            folder = _folders.get(self._folder)
            if folder is None:
                return
            assert fcntl is not None
            with contextlib.suppress(OSError):  # closing the lock file drops it anyway
                fcntl.lockf(folder.fd, fcntl.LOCK_UN, 1, self._offset, os.SEEK_SET)
            folder.claims -= 1
            if folder.claims <= 0:  # closing drops every lock we hold on it: none is left
                del _folders[self._folder]
                os.close(folder.fd)


def claim(path: Path) -> Claim | None:
    """Take ownership of the store file at ``path`` (which exists).

    Args:
        path: the store file.

    Returns:
        The claim, or ``None`` where POSIX locks are missing (the caller keeps its SQLite
        connection open instead).

    Raises:
        StoreError: another service of this process, or another process, owns the store.
    """
    if fcntl is None:  # pragma: no cover - Windows
        return None
    real = Path(os.path.realpath(path))
    key = str(real)
    folder_key = str(real.parent)
    offset = int.from_bytes(hashlib.sha256(real.name.encode()).digest()[:7], "big")
    with _lock:
        if key in _owned:
            raise StoreError(f"the store {path} is in use by another service of this process")
        folder = _folders.get(folder_key)
        if folder is None:
            try:
                fd = os.open(real.parent / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise StoreError(f"cannot lock the store {path}: {exc.strerror or exc}") from exc
            folder = _folders[folder_key] = _Folder(fd)
        try:
            fcntl.lockf(folder.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset, os.SEEK_SET)
        except OSError as exc:
            if not folder.claims:
                del _folders[folder_key]
                os.close(folder.fd)
            raise StoreError(f"the store {path} is in use by another process") from exc
        folder.claims += 1
        owned = _owned[key] = Claim(key, folder_key, offset)
    return owned


def _forget_after_fork() -> None:
    """A forked child holds none of its parent's locks: start with an empty table."""
    global _lock
    _lock = threading.Lock()
    for folder in _folders.values():
        with contextlib.suppress(OSError):
            os.close(folder.fd)
    _folders.clear()
    _owned.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
