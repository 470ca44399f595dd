"""The SQLite store: the outbox, subscriptions, resume position and connection info on disk.

:class:`SqliteStore` is the embedded default: one SQLite file per service and endpoint (WAL
mode, file mode 0600, a schema version with migrations). The store records the endpoint it
belongs to (:func:`~bgws.storage.store_endpoint`) and refuses to give its messages to another.
Writes are *group-committed*: every message sent in the same turn of the event loop (or while a
commit is running) joins one transaction, so throughput stays high while ``send()`` still
returns only once its message is in the WAL. With ``sync="full"`` each commit is fsynced, on a
thread of the store's own so the event loop never waits on the disk; with ``sync="normal"``
there is no fsync, and the commit (a write into the OS cache) runs on the loop's thread, which
is faster than handing it over.

:class:`SqliteStore` implements the store seam, :class:`~bgws._engine.store.Store`
(whose in-memory twin is :class:`~bgws._engine.store.VolatileStore`), including the
seed's connection info; :func:`store_for` builds the store a config asks for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ..errors import StoreError
from ..storage import default_store_path, legacy_store_path, store_endpoint, store_path
from .outbox import Entry
from .store import Loaded, Store, VolatileStore

if TYPE_CHECKING:
    from ..config import Config

__all__ = [
    "SCHEMA_VERSION",
    "SqliteStore",
    "default_store_path",  # kept here too, for the store's tests
    "legacy_store_path",
    "store_for",
]

SCHEMA_VERSION = 2

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE outbox (
            seq        INTEGER PRIMARY KEY,
            priority   INTEGER NOT NULL,
            msg_id     TEXT,
            payload    BLOB NOT NULL,
            is_binary  INTEGER NOT NULL,
            is_text    INTEGER NOT NULL,
            expires_at REAL,
            created_at REAL NOT NULL
        )""",
        "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE subscriptions (
            key        TEXT PRIMARY KEY,
            position   INTEGER NOT NULL,
            payload    BLOB NOT NULL,
            is_binary  INTEGER NOT NULL,
            is_text    INTEGER NOT NULL
        )""",
    ),
    # The endpoint the store belongs to (a store without one adopts the first that opens it).
    2: ("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",),
}
"""``_MIGRATIONS[n]`` takes a store from schema version ``n - 1`` to ``n``."""

_json_encode = msgspec.json.encode
_json_decode = msgspec.json.decode


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
    """One SQLite file, written by one thread, with group commit.

    Args:
        path: the file (created with mode 0600; its folder with 0700).
        sync: ``"normal"`` (survives a process crash; the last commits may be lost on power
            loss) or ``"full"`` (an fsync per group commit; survives power loss).
        endpoint: the endpoint this store is for (:func:`~bgws.storage.store_endpoint`);
            ``None`` skips the check. A store that holds messages for another endpoint is
            refused; an empty one is re-bound; one that records none adopts this one.
        legacy_path: a store of an older bgws (named by service tag only) to move to
            ``path`` when ``path`` does not exist yet, unless it belongs to another endpoint.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync: Literal["normal", "full"] = "normal",
        endpoint: str | None = None,
        legacy_path: str | os.PathLike[str] | None = None,
    ):
        self.path = Path(path)
        self.endpoint = endpoint
        self.durable = True
        self._legacy = None if legacy_path is None else Path(legacy_path)
        self._sync = sync
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
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
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="bgws-store"
        )
        try:
            loaded: Loaded = await self._run(self._open_sync)
            return loaded
        except BaseException:
            db, self._db = self._db, None
            if db is not None:
                db.close()  # release the file's lock: a refused store can be opened again
            await self._shutdown()
            raise

    def _open_sync(self) -> Loaded:
        path = self.path
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._adopt_legacy()
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            with contextlib.suppress(OSError):  # a store we do not own keeps its mode
                os.chmod(path, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot create the store {path}: {exc.strerror or exc}") from exc
        try:
            # Opened on the store thread; with sync="normal" written from the loop's thread
            # afterwards (never both at once).
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from exc
        self._db = db
        try:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA busy_timeout=0")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"the store {path} cannot use WAL mode (got {mode})")
            db.execute(f"PRAGMA synchronous={'FULL' if self._sync == 'full' else 'NORMAL'}")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"the store {path} is corrupt ({check}); it was left untouched")
            self._migrate(db)
            self._bind(db)
            return self._load(db)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                raise StoreError(f"the store {path} is in use by another process") from exc
            raise StoreError(f"the store {path} cannot be read: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"the store {path} is not a valid bgws store ({exc}); it was left untouched"
            ) from exc

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store {self.path} has schema version {version}, newer than this bgws "
                f"({SCHEMA_VERSION}); upgrade bgws to use it"
            )
        if version == 0:
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise StoreError(f"the store {self.path} holds tables bgws did not create")
        db.execute("BEGIN IMMEDIATE")
        try:
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={target}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _bind(self, db: sqlite3.Connection) -> None:
        """Record this store's endpoint, or refuse one that holds another endpoint's messages.

        Raises:
            StoreError: the store holds messages queued for another endpoint.
        """
        ours = self.endpoint
        if ours is None:
            return
        row = db.execute("SELECT value FROM meta WHERE key = 'endpoint'").fetchone()
        theirs = None if row is None else str(row[0])
        if theirs == ours:
            return
        if theirs is not None:
            queued = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
            queued += db.execute("SELECT count(*) FROM subscriptions").fetchone()[0]
            if queued:
                raise StoreError(
                    f"the store {self.path} holds {queued} message(s) queued for {theirs}, "
                    f"not for {ours}; messages queued for one server are never sent to another. "
                    f"To send them, run the service for {theirs} again; to inspect them, open the "
                    f"file with sqlite3 (SELECT * FROM outbox); to keep them aside, move the file "
                    f"away or give this service its own storage_path; to drop them, delete the "
                    f"file"
                )
        db.execute("BEGIN IMMEDIATE")
        try:
            if theirs is not None:  # empty: re-bind, without the other endpoint's resume point
                db.execute("DELETE FROM kv")
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('endpoint', ?)", (ours,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _adopt_legacy(self) -> None:
        """Move an older bgws's store (named by service tag only) to this store's path.

        Only when this path has no store yet and the old one is not in use and not bound to
        another endpoint; anything else leaves the old file where it is.
        """
        legacy = self._legacy
        if legacy is None or legacy == self.path or self.path.exists() or not legacy.exists():
            return
        movable = False
        try:
            db = sqlite3.connect(legacy, isolation_level=None)
            try:
                db.execute("PRAGMA busy_timeout=0")
                db.execute("BEGIN IMMEDIATE")  # fails while another process has it open
                version = int(db.execute("PRAGMA user_version").fetchone()[0])
                if 1 <= version <= SCHEMA_VERSION:  # a bgws store this bgws can read
                    owner = None
                    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
                        row = db.execute("SELECT value FROM meta WHERE key = 'endpoint'").fetchone()
                        owner = None if row is None else str(row[0])
                    movable = owner in (None, self.endpoint)
                db.execute("COMMIT")
            finally:
                db.close()  # the last connection checkpoints the WAL into the file
        except sqlite3.Error:
            return
        if movable and not legacy.with_name(legacy.name + "-wal").exists():
            os.replace(legacy, self.path)

    def _load(self, db: sqlite3.Connection) -> Loaded:
        loaded = Loaded()
        rows = db.execute(
            "SELECT seq, priority, msg_id, payload, is_binary, is_text, expires_at, created_at "
            "FROM outbox ORDER BY seq"
        )
        for seq, priority, msg_id, payload, binary, text, expires_at, created in rows:
            loaded.entries.append(
                Entry(
                    _payload(payload, text),
                    bool(binary),
                    None if msg_id is None else _json_decode(msg_id),
                    priority=priority,
                    expires_at=expires_at,
                    durable=True,
                    seq=seq,
                    accepted_at=created,
                )
            )
        for key, payload, binary, text in db.execute(
            "SELECT key, payload, is_binary, is_text FROM subscriptions ORDER BY position"
        ):
            loaded.subscriptions.append((key, Entry(_payload(payload, text), bool(binary))))
        loaded.kv = dict(db.execute("SELECT key, value FROM kv"))
        return loaded

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
        if self._flushing or self._batch is None or self._executor is None:
            return
        batch, self._batch = self._batch, None
        inserts, self._inserts = self._inserts, []
        committed, self._committed = self._committed, []
        deletes, self._deletes = self._deletes, []
        kv, self._kv = self._kv, {}
        subs, self._subs = self._subs, {}
        # Once per message on the hot path: one type test, no int() calls, and exact ints, not
        # bools (sqlite3 sends a bool through its adapter lookup: about 1 us a row, measured).
        rows: list[tuple[Any, ...]] = []
        append = rows.append
        for e in inserts:
            payload, msg_id = e.payload, e.id
            text = type(payload) is str
            append(
                (
                    e.seq,
                    e.priority,
                    None if msg_id is None else _json_encode(msg_id).decode(),
                    payload.encode() if text else payload,  # type: ignore[union-attr]
                    1 if e.binary else 0,
                    1 if text else 0,
                    e.expires_at,
                )
            )
        self._flushing = True
        if self._sync == "normal":
            # No fsync: the commit is a few WAL page writes into the OS cache (measured here
            # about 23 us for one row, 6 us a row in a batch), cheaper than a hand-over to the
            # store thread and back (about 300 us per round trip under load).
            try:
                self._write(rows, deletes, kv, subs)
            except Exception as exc:
                self._written(exc, batch, committed)
            else:
                self._written(None, batch, committed)
            return
        work = asyncio.get_running_loop().run_in_executor(
            self._executor, self._write, rows, deletes, kv, subs
        )
        work.add_done_callback(lambda done: self._written(done.exception(), batch, committed))

    def _write(
        self,
        rows: list[tuple[Any, ...]],
        deletes: list[int],
        kv: dict[str, str | None],
        subs: dict[str, Entry | None],
    ) -> None:
        db = self._db
        assert db is not None
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            if rows:
                db.executemany(
                    "INSERT INTO outbox (seq, priority, msg_id, payload, is_binary, is_text, "
                    f"expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, {now!r})",
                    rows,
                )
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

    # -- connection info (the seed's StorageBackend calls) -----------------------------------------

    async def store_connection_info(self, key: str, value: str) -> None:
        await self.set(f"info:{key}", value)

    async def get_connection_info(self, key: str) -> str | None:
        value: str | None = await self._run(self._get_sync, f"info:{key}")
        return value

    async def clear_connection_info(self) -> None:
        await self._run(self._clear_sync)

    def _get_sync(self, key: str) -> str | None:
        assert self._db is not None
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _clear_sync(self) -> None:
        assert self._db is not None
        self._db.execute("DELETE FROM kv WHERE key LIKE 'info:%'")

    # -- closing ----------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        if self._batch is not None:
            with contextlib.suppress(StoreError):
                await self._batch
        self._closed = True
        if self._db is not None:
            await self._run(self._db.close)
        await self._shutdown()

    async def _shutdown(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)

    async def _run(self, func: Callable[..., Any], *args: Any) -> Any:
        if self._executor is None:
            raise StoreError("the store is not open")
        if self._sync == "normal" and self._db is not None and func is not self._open_sync:
            return func(*args)  # the loop's thread owns the connection once it is open
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r}, sync={self._sync!r}, endpoint={self.endpoint!r})"


def _payload(raw: bytes, text: int) -> bytes | str:
    return raw.decode() if text else bytes(raw)
