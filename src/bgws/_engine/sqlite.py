"""The SQLite store: the outbox, subscriptions, resume position and connection info on disk.

:class:`SqliteStore` is the embedded default: one SQLite file per service and endpoint (WAL
mode, file mode 0600, a schema version with migrations). The store records the endpoint it
belongs to (:func:`~bgws.storage.store_endpoint`) and refuses to give its messages to another.
Writes are *group-committed*: every message sent in the same turn of the event loop (or while a
commit is running) joins one transaction, so throughput stays high while ``send()`` still
returns only once its message is in the WAL. With ``sync="full"`` each commit is fsynced on one
of the few threads every store of the process shares (:mod:`~bgws._engine.storethreads`), so
the event loop never waits on the disk; with ``sync="normal"`` there is no fsync, and the
commit (a write into the OS cache) runs on the loop's thread, which is faster than handing it
over.

A store that has written nothing for :data:`IDLE_CLOSE` seconds closes its SQLite connection
(on a shared thread: the close checkpoints the WAL), so an idle service holds no file
descriptor and no page cache; the next write opens it again. Ownership outlives the
connection (:mod:`~bgws._engine.storelock`): no other service or process can open the store
in between.

:class:`SqliteStore` implements the store seam, :class:`~bgws._engine.store.Store`
(whose in-memory twin is :class:`~bgws._engine.store.VolatileStore`), including the
seed's connection info; :func:`store_for` builds the store a config asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import StoreError
from ..storage import default_store_path, legacy_store_path, store_endpoint, store_path
from .outbox import Entry
from .sqliteschema import SCHEMA_VERSION, adopt_legacy, bind, load, migrate, outbox_rows
from .store import Loaded, Store, VolatileStore
from .storelock import Claim, claim
from .storethreads import Lane

if TYPE_CHECKING:
    from ..config import Config

__all__ = [
    "IDLE_CLOSE",
    "MAX_OPEN",
    "SCHEMA_VERSION",
    "SqliteStore",
    "default_store_path",  # kept here too, for the store's tests
    "legacy_store_path",
    "store_for",
]

IDLE_CLOSE = 2.0
"""Seconds without a write after which a store closes its connection (it reopens on demand)."""

MAX_OPEN = 512
"""Open SQLite connections in the process beyond which a store that had to open its
connection closes it again right after the job (and so holds none while idle). Each open
connection costs about 150 KiB (SQLite's lookaside and page cache, measured) that the process
keeps once it has touched it: without a bound, 10,000 stores written at once would hold
1.5 GiB, and two file descriptors each."""

_opened_lock = threading.Lock()
_opened = 0


def store_for(config: Config) -> Store:
    """The store a config asks for: SQLite (``storage = "sqlite"``) or memory.

    Args:
        config: the service's config.

    Returns:
        A store, not yet opened.
    """
    if config.storage != "sqlite":
        return VolatileStore()
    tag = config.service_tag or "bgws"
    return SqliteStore(
        store_path(config),
        sync=config.storage_sync,
        endpoint=store_endpoint(config.url, tag),
        legacy_path=None if config.storage_path else legacy_store_path(tag),
    )


class SqliteStore:
    """One SQLite file, written by one thread at a time, with group commit.

    Args:
        path: the file (created with mode 0600; its folder with 0700).
        sync: ``"normal"`` (survives a process crash; the last commits may be lost on power
            loss) or ``"full"`` (an fsync per group commit; survives power loss).
        endpoint: the endpoint this store is for (:func:`~bgws.storage.store_endpoint`);
            ``None`` skips the check. A store that holds messages for another endpoint is
            refused; an empty one is re-bound; one that records none adopts this one.
        legacy_path: a store of an older bgws (named by service tag only) to move to
            ``path`` when ``path`` does not exist yet, unless it belongs to another endpoint.
        idle_close: seconds without a write after which the SQLite connection is closed
            (the store stays owned, and reopens it on the next write).
    """

    durable = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync: Literal["normal", "full"] = "normal",
        endpoint: str | None = None,
        legacy_path: str | os.PathLike[str] | None = None,
        idle_close: float = IDLE_CLOSE,
    ):
        self.path = Path(path)
        self.endpoint = endpoint
        self._legacy = None if legacy_path is None else Path(legacy_path)
        self._sync = sync
        self._lane: Lane | None = None  # set while open
        self._claim: Claim | None = None
        # The connection: None while closed for idleness. Only the lane's jobs open or close
        # it; the loop's thread uses it only when no lane job is pending (self._pending).
        self._db: sqlite3.Connection | None = None
        self._pending = 0
        self._spare = False  # the lane opened the connection beyond MAX_OPEN: close it after
        self._used = 0.0
        self._idle_close = idle_close
        self._idle: asyncio.TimerHandle | None = None
        self._inserts: list[Entry] = []
        self._committed: list[tuple[list[Entry], Callable[[list[Entry]], None]]] = []
        self._deletes: list[int] = []
        self._kv: dict[str, str | None] = {}
        self._subs: dict[str, Entry | None] = {}
        self._batch: asyncio.Future[None] | None = None
        self._flushing = False
        self._closed = False

    # -- opening ----------------------------------------------------------------------------

    async def open(self) -> Loaded:
        if self._lane is not None or self._closed:
            raise StoreError("a store is opened once")
        self._lane = Lane()
        try:
            loaded: Loaded = await self._submit(self._open_sync)
        except BaseException:
            # Cancelled, the open may still be running: let it finish, then close it again.
            self._lane.submit(self._release_sync)
            self._lane = None
            raise
        self._used = time.monotonic()
        if self._db is not None:
            self._park_later()
        return loaded

    def _open_sync(self) -> Loaded:
        try:
            return self._open_load()
        except BaseException:
            self._release_sync()  # a refused store can be opened again
            raise

    def _open_load(self) -> Loaded:
        path = self.path
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            adopt_legacy(self._legacy, path, self.endpoint)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            fresh = os.fstat(fd).st_size == 0
            os.close(fd)
            with contextlib.suppress(OSError):  # a store we do not own keeps its mode
                os.chmod(path, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot create the store {path}: {exc.strerror or exc}") from exc
        self._claim = claim(path)
        db = self._connect(fresh)
        try:
            check = "ok" if fresh else db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"the store {path} is corrupt ({check}); it was left untouched")
            migrate(db, path)
            bind(db, path, self.endpoint)
            return load(db)
        except sqlite3.Error as exc:
            raise _store_error(path, exc) from exc

    def _connect(self, fresh: bool = False) -> sqlite3.Connection:
        """Open the connection (on a lane job): exclusive, WAL, the configured sync level.

        Args:
            fresh: the file was just created, empty: its switch to WAL mode (a header with
                nothing behind it) skips the fsyncs, measured here 2-9 ms of a new store's
                open.

        Raises:
            StoreError: the store is closed, cannot be opened, is in use, or is not a store.
        """
        db = self._db
        if db is not None:
            return db
        if self._closed:
            raise StoreError(f"the store {self.path} is closed")
        path = self.path
        try:
            # Opened on a shared thread; with sync="normal" written from the loop's thread
            # too (never both at once: see self._pending).
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from exc
        try:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA busy_timeout=0")
            if fresh:
                db.execute("PRAGMA synchronous=OFF")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"the store {path} cannot use WAL mode (got {mode})")
            db.execute(f"PRAGMA synchronous={'FULL' if self._sync == 'full' else 'NORMAL'}")
        except BaseException as exc:
            db.close()
            if isinstance(exc, sqlite3.Error):
                raise _store_error(path, exc) from exc
            raise
        global _opened
        with _opened_lock:
            _opened += 1
            self._spare = _opened > MAX_OPEN
        self._db = db
        return db

    # -- group commit -----------------------------------------------------------------------

    def stage(
        self, entries: list[Entry], committed: Callable[[list[Entry]], None]
    ) -> asyncio.Future[None]:
        if self._closed:
            raise StoreError("the store is closed")
        self._inserts.extend(entries)
        self._committed.append((entries, committed))
        return self._schedule()

    def forget(self, entries: list[Entry]) -> None:
        self._deletes.extend(e.seq for e in entries if e.durable)
        if self._deletes:
            self._schedule()

    def set_soon(self, key: str, value: str | None) -> None:
        self._kv[key] = value
        self._schedule()

    async def set(self, key: str, value: str | None) -> None:
        self._kv[key] = value
        await self._schedule()

    async def put_subscription(self, key: str, entry: Entry) -> None:
        self._subs[key] = entry
        await self._schedule()

    async def drop_subscription(self, key: str) -> None:
        self._subs[key] = None
        await self._schedule()

    def _schedule(self) -> asyncio.Future[None]:
        batch = self._batch
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._batch = loop.create_future()
            if not self._flushing:
                loop.call_soon(self._flush)
        return batch

    def _flush(self) -> None:
        if self._flushing or self._batch is None or self._lane is None:
            return
        batch, self._batch = self._batch, None
        inserts, self._inserts = self._inserts, []
        committed, self._committed = self._committed, []
        deletes, self._deletes = self._deletes, []
        kv, self._kv = self._kv, {}
        subs, self._subs = self._subs, {}
        try:
            insert = outbox_rows(inserts, time.time()) if inserts else None
        except Exception as exc:  # an id that cannot be encoded: this batch fails, not the store
            self._written(exc, batch, committed)
            return
        self._flushing = True
        self._used = time.monotonic()
        if self._sync == "normal" and self._db is not None and not self._pending:
            # No fsync: the commit is a few WAL page writes into the OS cache (measured here
            # about 23 us for one row, 6 us a row in a batch), cheaper than a hand-over to the
            # store thread and back (about 300 us per round trip under load).
            try:
                self._write(insert, deletes, kv, subs)
            except Exception as exc:
                self._written(exc, batch, committed)
            else:
                self._written(None, batch, committed)
            return
        work = self._submit(self._write, insert, deletes, kv, subs)
        work.add_done_callback(lambda done: self._written(done.exception(), batch, committed))

    def _write(
        self,
        insert: tuple[str, list[tuple[Any, ...]]] | None,
        deletes: list[int],
        kv: dict[str, str | None],
        subs: dict[str, Entry | None],
    ) -> None:
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            if insert is not None:
                db.executemany(*insert)
            if deletes:
                deletes.sort()
                first, last = deletes[0], deletes[-1]
                if deletes == list(range(first, last + 1)):  # one run: one range delete
                    db.execute("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (first, last))
                else:
                    db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in deletes])
            for key, value in kv.items():
                if value is None:
                    db.execute("DELETE FROM kv WHERE key = ?", (key,))
                else:
                    db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))
            for key, entry in subs.items():
                if entry is None:
                    db.execute("DELETE FROM subscriptions WHERE key = ?", (key,))
                else:
                    payload = entry.payload
                    db.execute(
                        "INSERT OR REPLACE INTO subscriptions (key, position, payload, is_binary,"
                        " is_text) VALUES (?, (SELECT coalesce(max(position), 0) + 1 FROM"
                        " subscriptions), ?, ?, ?)",
                        (
                            key,
                            payload.encode() if isinstance(payload, str) else payload,
                            int(entry.binary),
                            int(isinstance(payload, str)),
                        ),
                    )
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def _written(
        self,
        error: BaseException | None,
        batch: asyncio.Future[None],
        committed: list[tuple[list[Entry], Callable[[list[Entry]], None]]],
    ) -> None:
        self._flushing = False
        if error is not None:
            failure = StoreError(f"writing the store {self.path} failed: {error}")
            failure.__cause__ = error
            if not batch.done():
                batch.set_exception(failure)
                batch.exception()  # senders see it through their own await
        else:
            for entries, callback in committed:
                callback(entries)
            if not batch.done():
                batch.set_result(None)
        if self._batch is not None:
            self._flush()
        elif self._idle is None and self._db is not None and self._claim is not None:
            self._park_later()

    # -- closing the connection while idle ----------------------------------------------------

    def _park_later(self, delay: float | None = None) -> None:
        wait = self._idle_close if delay is None else delay
        self._idle = asyncio.get_running_loop().call_later(wait, self._park_if_idle)

    def _park_if_idle(self) -> None:
        """Close the connection if nothing was written for ``idle_close`` seconds."""
        self._idle = None
        if self._closed or self._db is None or self._claim is None or self._lane is None:
            return
        left = self._used + self._idle_close - time.monotonic()
        if self._batch is not None or self._flushing or self._pending or left > 0:
            self._park_later(max(left, self._idle_close / 10))
            return
        parked = self._submit(self._park_sync)
        parked.add_done_callback(_consume)  # a failed close leaves the next write to tell

    def _park_sync(self) -> None:
        global _opened
        db, self._db = self._db, None
        if db is not None:
            with _opened_lock:
                _opened -= 1
            self._spare = False
            db.close()  # the last connection checkpoints the WAL into the file

    def _in_lane(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run a lane job; close the connection after it if the process has too many open."""
        try:
            return func(*args)
        finally:
            if self._spare:
                self._park_sync()

    def _release_sync(self) -> None:
        """Close the connection and give up ownership (the store's last lane job)."""
        try:
            self._park_sync()
        finally:
            claimed, self._claim = self._claim, None
            if claimed is not None:
                claimed.release()

    # -- connection info (the seed's StorageBackend calls) -----------------------------------------

    async def store_connection_info(self, key: str, value: str) -> None:
        await self.set(f"info:{key}", value)

    async def get_connection_info(self, key: str) -> str | None:
        value: str | None = await self._run(self._get_sync, f"info:{key}")
        return value

    async def clear_connection_info(self) -> None:
        await self._run(self._clear_sync)

    def _get_sync(self, key: str) -> str | None:
        row = self._connect().execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _clear_sync(self) -> None:
        self._connect().execute("DELETE FROM kv WHERE key LIKE 'info:%'")

    # -- closing ----------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        while True:  # commits waiting or already handed to the lane finish first
            if self._batch is not None:
                with contextlib.suppress(StoreError):
                    await self._batch
            elif self._flushing or self._pending:
                await self._submit(_nothing)  # behind every job queued so far
            else:
                break
        self._closed = True
        idle, self._idle = self._idle, None
        if idle is not None:
            idle.cancel()
        if self._lane is not None:
            # Behind the store's other jobs on its lane; other stores' lanes go on meanwhile.
            await self._submit(self._release_sync)
            self._lane = None

    async def _run(self, func: Callable[..., Any], *args: Any) -> Any:
        if self._lane is None:
            raise StoreError("the store is not open")
        if self._sync == "normal" and self._db is not None and not self._pending:
            return func(*args)  # no lane job running: the loop's thread may use the connection
        return await self._submit(func, *args)

    def _submit(self, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run ``func`` on this store's lane; counted in ``_pending`` until it has finished."""
        assert self._lane is not None
        loop = asyncio.get_running_loop()
        self._pending += 1
        work = self._lane.submit(self._in_lane, func, *args)
        work.add_done_callback(lambda _: _call_soon(loop, self._lane_done))
        return asyncio.wrap_future(work, loop=loop)

    def _lane_done(self) -> None:
        self._pending -= 1

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r}, sync={self._sync!r}, endpoint={self.endpoint!r})"


def _store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """What an SQLite error while opening the store means, for the user."""
    if isinstance(exc, sqlite3.OperationalError):
        if "locked" in str(exc):
            return StoreError(f"the store {path} is in use by another process")
        return StoreError(f"the store {path} cannot be read: {exc}")
    return StoreError(f"the store {path} is not a valid bgws store ({exc}); it was left untouched")


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
        loop.call_soon_threadsafe(callback)


def _nothing() -> None:
    return None


def _consume(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()
