"""The store file's schema: its migrations, the endpoint it is bound to, and what it holds.

Plain functions on an open ``sqlite3`` connection, run on a store's lane when it opens
(:meth:`~bgws._engine.sqlite.SqliteStore.open`): :func:`migrate` takes an older file to
:data:`SCHEMA_VERSION`, :func:`bind` checks and records the endpoint, :func:`adopt_legacy`
moves an older bgws's store into place, and :func:`load` reads the outbox, subscriptions and
keys back.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from ..errors import StoreError
from .outbox import Entry
from .store import Loaded

__all__ = ["SCHEMA_VERSION", "adopt_legacy", "bind", "load", "migrate", "outbox_rows"]

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

_INSERT = (
    "INSERT INTO outbox (seq, priority, msg_id, payload, is_binary, is_text, expires_at, "
    "created_at) VALUES "
)


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Take the store to :data:`SCHEMA_VERSION` in one transaction (a new file: create it).

    Args:
        db: the store's connection.
        path: the store's file, for messages.

    Raises:
        StoreError: the file is newer than this bgws, or holds tables bgws did not create.
    """
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the store {path} has schema version {version}, newer than this bgws "
            f"({SCHEMA_VERSION}); upgrade bgws to use it"
        )
    if version == 0:
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables:
            raise StoreError(f"the store {path} holds tables bgws did not create")
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


def bind(db: sqlite3.Connection, path: Path, endpoint: str | None) -> None:
    """Record this store's endpoint, or refuse one that holds another endpoint's messages.

    Args:
        db: the store's connection.
        path: the store's file, for messages.
        endpoint: the endpoint the store is opened for (``None``: no check).

    Raises:
        StoreError: the store holds messages queued for another endpoint.
    """
    ours = endpoint
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
                f"the store {path} holds {queued} message(s) queued for {theirs}, "
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


def adopt_legacy(legacy: Path | None, path: Path, endpoint: str | None) -> None:
    """Move an older bgws's store (named by service tag only) to this store's path.

    Only when this path has no store yet and the old one is not in use and not bound to
    another endpoint; anything else leaves the old file where it is.

    Args:
        legacy: the old store's file (``None``: there is none to adopt).
        path: this store's file.
        endpoint: the endpoint this store is for.
    """
    if legacy is None or legacy == path or path.exists() or not legacy.exists():
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
                movable = owner in (None, endpoint)
            db.execute("COMMIT")
        finally:
            db.close()  # the last connection checkpoints the WAL into the file
    except sqlite3.Error:
        return
    if movable and not legacy.with_name(legacy.name + "-wal").exists():
        os.replace(legacy, path)


def outbox_rows(entries: list[Entry], now: float) -> tuple[str, list[tuple[Any, ...]]]:
    """The ``INSERT`` of ``entries`` into the outbox, and its rows, for ``executemany``.

    Python's ``sqlite3`` binds each parameter of each row through a type dispatch: binding
    eight per row cost about 5 us a row here, three about 2.5-2.8 (measured, batches of
    1,000). So when every entry shares its priority, frame kind and text-ness and has no
    expiry (a ``send_many`` burst, most batches of concurrent ``send()`` calls), those go into
    the statement as constants and each row binds only its seq, id and payload.

    Args:
        entries: the messages to insert (at least one).
        now: their ``created_at``.

    Returns:
        The statement and its rows.
    """
    first = entries[0]
    priority, binary, text = int(first.priority), first.binary, type(first.payload) is str
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    for e in entries:  # once per message on the hot path
        payload, msg_id = e.payload, e.id
        if (type(payload) is str) is not text or e.expires_at is not None:
            break
        if e.priority != priority or e.binary is not binary:
            break
        append(
            (
                e.seq,
                None if msg_id is None else _json_encode(msg_id).decode(),
                payload.encode() if text else payload,  # type: ignore[union-attr]
            )
        )
    else:
        shape = f"{priority}, ?, ?, {1 if binary else 0}, {1 if text else 0}, NULL, {now!r}"
        return f"{_INSERT}(?, {shape})", rows
    # Mixed: every column bound. Exact ints, not bools (sqlite3 sends a bool through its
    # adapter lookup: about 1 us a row, measured).
    rows = []
    append = rows.append
    for e in entries:
        payload, msg_id = e.payload, e.id
        is_text = type(payload) is str
        append(
            (
                e.seq,
                e.priority,
                None if msg_id is None else _json_encode(msg_id).decode(),
                payload.encode() if is_text else payload,  # type: ignore[union-attr]
                1 if e.binary else 0,
                1 if is_text else 0,
                e.expires_at,
            )
        )
    return f"{_INSERT}(?, ?, ?, ?, ?, ?, ?, {now!r})", rows


def load(db: sqlite3.Connection) -> Loaded:
    """What the store holds: the outbox in order, the subscriptions and the keys.

    Args:
        db: the store's connection.
    """
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


def _payload(raw: bytes, text: int) -> bytes | str:
    return raw.decode() if text else bytes(raw)
