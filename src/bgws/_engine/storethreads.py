"""The few threads every SQLite store of the process shares, and each store's lane on them.

A store used to own a thread (a one-worker executor): 10,000 services meant 10,000 threads.
Now every :class:`~bgws._engine.sqlite.SqliteStore` of the process hands its blocking work
(opening the file, fsynced commits, closing) to one small pool of :data:`WORKERS` threads,
through a :class:`Lane` of its own. A lane runs its store's jobs one at a time and in the order
they were given, so a store's connection is never used by two threads at once; different
stores' jobs run side by side on the pool's threads, and a lane gives its thread back after
each job, so one store's slow close or fsync never holds up another store for longer than
that one job. A job's failure goes to the future of the store that gave it, and only there.

The pool is started on first use; a child process made by ``fork()`` starts its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["WORKERS", "Lane"]

WORKERS = 4
"""Threads shared by every store of the process: enough for a few fsyncs side by side."""

_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None

_Job = tuple[Callable[..., Any], tuple[Any, ...], "concurrent.futures.Future[Any]"]


def _shared_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    pool = _pool
    if pool is None:
        with _lock:
            pool = _pool
            if pool is None:
                pool = _pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=WORKERS, thread_name_prefix="bgws-store"
                )
    return pool


def _forget_pool_after_fork() -> None:
    """In a forked child the pool's threads do not exist: start a new pool on first use."""
    global _pool, _lock
    _pool = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


class Lane:
    """One store's queue on the shared threads: its jobs run one at a time, in order.

    An idle lane holds no thread and no queue (two slots), so idle stores cost next to
    nothing.
    """

    __slots__ = ("_busy", "_jobs")

    def __init__(self) -> None:
        self._jobs: deque[_Job] | None = None
        self._busy = False

    def submit(self, func: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Queue ``func(*args)`` behind this lane's earlier jobs.

        Args:
            func: the blocking work (runs on a shared thread).
            *args: its arguments.

        Returns:
            A future with its result or exception.
        """
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with _lock:
            if self._jobs is None:
                self._jobs = deque()
            self._jobs.append((func, args, future))
            if self._busy:
                return future
            self._busy = True
        try:
            _shared_pool().submit(self._run_one)
        except BaseException:  # the interpreter is shutting down: nothing will run it
            with _lock:
                self._busy = False
                self._jobs = None
            raise
        return future

    async def run(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func(*args)`` on the lane and wait for it without blocking the loop.

        Args:
            func: the blocking work.
            *args: its arguments.

        Returns:
            What ``func`` returned.

        Raises:
            BaseException: what ``func`` raised.
        """
        return await asyncio.wrap_future(self.submit(func, *args))

    def _run_one(self) -> None:
        """Run the lane's next job, then queue the lane again (behind other lanes) if needed."""
        with _lock:
            jobs = self._jobs
            assert jobs is not None
            func, args, future = jobs.popleft()
        if future.set_running_or_notify_cancel():
            try:
                result = func(*args)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
        with _lock:
            if jobs:
                more = True
            else:
                more = self._busy = False
                self._jobs = None
        if more:
            _shared_pool().submit(self._run_one)
