"""SQLite stores share a few threads, close idle connections, and stay each their own."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import threading
from pathlib import Path

import pytest

import bgws
from bgws._engine import sqlite as sqlite_module
from bgws._engine.outbox import Entry
from bgws._engine.sqlite import SqliteStore
from bgws._engine.storethreads import WORKERS, Lane
from bgws.testing import Server
from bgws.transport import Transport

from .conftest import Errors, ServiceFactory, fast_config

SERVICES = 50


def _sqlite(
    make_service: ServiceFactory, server: Server, path: Path, transport: Transport
) -> bgws.Service:
    return make_service(server.url, storage="sqlite", storage_path=str(path), transport=transport)


def _entry(text: str, *, seq: int) -> Entry:
    return Entry(text, durable=True, seq=seq)


def _open_files(pid: int) -> set[str]:
    """The paths process ``pid`` has open."""
    paths = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            paths.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return paths


async def _closed_for_idleness(path: Path) -> None:
    """Wait until this process holds no file of the store at ``path`` open."""
    async with asyncio.timeout(10):
        while _fds_on(path):  # noqa: ASYNC110 - an OS-visible state, no event to wait on
            await asyncio.sleep(0.01)


def _fds_on(path: Path) -> int:
    """How many of this process's file descriptors point at ``path`` or its WAL."""
    names = {str(path), f"{path}-wal"}
    return len(names & _open_files(os.getpid()))


async def test_sqlite_services_share_a_few_threads(
    tmp_path: Path, bgws_server: Server, make_service: ServiceFactory, transport: Transport
) -> None:
    """50 services on the SQLite store, connected and sending, add at most a few threads."""
    before = threading.active_count()
    services = [
        _sqlite(make_service, bgws_server, tmp_path / f"s{i}.sqlite3", transport)
        for i in range(SERVICES)
    ]
    for service in services:
        await service.connect()
    async with asyncio.timeout(20):
        await asyncio.gather(*(s.wait_for(bgws.State.CONNECTED) for s in services))
        await asyncio.gather(*(s.send({"type": "hello", "n": i}) for i, s in enumerate(services)))
        await bgws_server.wait_for_messages(SERVICES, timeout=20)
    assert threading.active_count() - before <= WORKERS + 1
    for service in services:
        await service.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
async def test_a_failing_store_fails_only_its_own_service(
    tmp_path: Path, bgws_server: Server, errors: Errors, transport: Transport
) -> None:
    """A store whose folder vanished fails its own send(); the others' sends all arrive."""
    paths = [tmp_path / f"f{i}" / "store.sqlite3" for i in range(5)]
    services = [
        bgws.Service(
            fast_config(bgws_server.url, storage="sqlite"),
            store=SqliteStore(path, idle_close=0.01),
            transport=transport,
            error_handler=errors,
        )
        for path in paths
    ]
    for service in services:
        await service.connect()
        await service.wait_for(bgws.State.CONNECTED, timeout=10)
    await _closed_for_idleness(paths[2])
    shutil.rmtree(paths[2].parent)  # under the idle store: its next write cannot open it
    results = await asyncio.gather(
        *(s.send({"type": "n", "n": i}) for i, s in enumerate(services) for _ in range(3)),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 3
    assert all(isinstance(r, bgws.StoreError) for r in failed)
    await bgws_server.wait_for_messages(12, timeout=10)
    arrived = sorted(m["n"] for m in bgws_server.received_json())
    assert arrived == [0, 0, 0, 1, 1, 1, 3, 3, 3, 4, 4, 4]
    for service in services:
        await service.stop()


async def test_a_store_closing_does_not_hold_up_the_others(tmp_path: Path) -> None:
    """Stores keep committing (fsynced, on the shared threads) while another one closes."""
    stores = [SqliteStore(tmp_path / f"s{i}.sqlite3", sync="full") for i in range(4)]
    for store in stores:
        await store.open()
    committed: list[int] = []

    async def write(store: SqliteStore, n: int) -> None:
        for k in range(20):
            entry = _entry(f"{n}:{k}", seq=k + 1)
            await store.stage([entry], lambda entries: committed.append(n))

    async with asyncio.timeout(20):
        await asyncio.gather(stores[0].close(), *(write(s, n) for n, s in enumerate(stores[1:])))
    assert sorted(committed) == sorted([0] * 20 + [1] * 20 + [2] * 20)
    for store in stores[1:]:
        await store.close()
    reopened = SqliteStore(tmp_path / "s1.sqlite3")
    assert len((await reopened.open()).entries) == 20
    await reopened.close()


def test_a_busy_lane_does_not_block_other_lanes() -> None:
    """A job stuck on one store's lane leaves the shared threads to the other stores."""
    stuck, release = Lane(), threading.Event()
    first = stuck.submit(release.wait, 10)
    queued = stuck.submit(lambda: "after")
    others = [Lane().submit(lambda n=n: n * 2) for n in range(20)]
    assert [f.result(timeout=10) for f in others] == [n * 2 for n in range(20)]
    assert not queued.done()  # a lane runs its jobs one at a time, in order
    release.set()
    assert first.result(timeout=10) is True
    assert queued.result(timeout=10) == "after"


def test_a_lane_runs_its_jobs_in_order_one_at_a_time() -> None:
    """Jobs on one lane never overlap and run in the order given; a failure stays its own."""
    lane = Lane()
    seen: list[int] = []
    running = threading.Lock()

    def job(n: int) -> int:
        assert running.acquire(blocking=False), "two jobs of one lane ran at once"
        try:
            seen.append(n)
            if n == 5:
                raise ValueError("job 5 fails")
            return n
        finally:
            running.release()

    futures = [lane.submit(job, n) for n in range(50)]
    for n, future in enumerate(futures):
        if n == 5:
            with pytest.raises(ValueError, match="job 5"):
                future.result(timeout=10)
        else:
            assert future.result(timeout=10) == n
    assert seen == list(range(50))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
async def test_an_idle_store_holds_no_file_open(tmp_path: Path) -> None:
    """An idle store closes its SQLite files, reopens them to write, and loses nothing."""
    path = tmp_path / "idle.sqlite3"
    store = SqliteStore(path, idle_close=0.05)
    await store.open()
    await _closed_for_idleness(path)
    await store.stage([_entry("kept", seq=1)], lambda entries: None)  # reopens
    assert _fds_on(path) >= 1
    await _closed_for_idleness(path)
    await store.set("k", "v")  # reopens
    await store.close()
    assert _fds_on(path) == 0
    reopened = SqliteStore(path)
    loaded = await reopened.open()
    assert [e.payload for e in loaded.entries] == ["kept"]
    assert loaded.kv == {"k": "v"}
    await reopened.close()


_HOLDER = """
import asyncio, os, sys
from bgws._engine.outbox import Entry
from bgws._engine import sqlite as sqlite_module
from bgws._engine.sqlite import SqliteStore

async def main():
    store = SqliteStore(sys.argv[1], idle_close=0.01)
    await store.open()
    async with asyncio.timeout(10):
        while os.path.realpath(sys.argv[1]) in {
            os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
        }:
            await asyncio.sleep(0.01)
    print("open", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

asyncio.run(main())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_an_idle_store_stays_owned_by_its_process(tmp_path: Path) -> None:
    """Another process cannot open a store whose owner closed it for idleness, until it dies."""
    path = tmp_path / "owned.sqlite3"
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOLDER,
        str(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), 20)
        assert line.strip() == b"open"
        if sys.platform.startswith("linux"):  # only the lock keeps others out, no connection
            assert str(path) not in _open_files(holder.pid)
        second = SqliteStore(path)
        with pytest.raises(bgws.StoreError, match="in use by another process"):
            await second.open()
    finally:
        holder.kill()
        await asyncio.wait_for(holder.wait(), 10)
    third = SqliteStore(path)  # the kernel dropped the dead owner's lock
    await third.open()
    await third.close()


async def test_a_second_store_on_one_file_in_one_process_is_refused(tmp_path: Path) -> None:
    """Two stores of one process on one file: the second is refused, also while idle."""
    path = tmp_path / "one.sqlite3"
    first = SqliteStore(path, idle_close=0.01)
    await first.open()
    with pytest.raises(bgws.StoreError, match="in use"):
        await SqliteStore(path).open()
    await first.close()
    again = SqliteStore(path)
    await again.open()
    await again.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
async def test_open_connections_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stores written at once keep at most MAX_OPEN connections open; every write is kept."""
    monkeypatch.setattr(sqlite_module, "MAX_OPEN", sqlite_module._opened + 2)
    paths = [tmp_path / f"s{i}.sqlite3" for i in range(10)]
    stores = [SqliteStore(path) for path in paths]
    for store in stores:
        await store.open()
    async with asyncio.timeout(20):
        await asyncio.gather(
            *(s.stage([_entry(f"m{i}", seq=1)], lambda entries: None) for i, s in enumerate(stores))
        )
    assert sum(1 for path in paths if _fds_on(path)) <= 2
    for store in stores:
        await store.close()
    for i, path in enumerate(paths):
        reopened = SqliteStore(path)
        assert [e.payload for e in (await reopened.open()).entries] == [f"m{i}"]
        await reopened.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
async def test_close_finishes_a_commit_already_handed_over(tmp_path: Path) -> None:
    """close() during a commit that is reopening an idle store lets it finish and keeps it."""
    path = tmp_path / "last.sqlite3"
    store = SqliteStore(path, idle_close=0.01)
    await store.open()
    await _closed_for_idleness(path)
    staged = store.stage([_entry("last", seq=1)], lambda entries: None)
    await asyncio.sleep(0)  # one loop turn: the commit is handed to the store's lane
    await store.close()
    async with asyncio.timeout(10):
        await staged
    reopened = SqliteStore(path)
    assert [e.payload for e in (await reopened.open()).entries] == ["last"]
    await reopened.close()
