"""Run a service from synchronous code: its event loop lives on a background thread.

:func:`start_in_thread` starts a daemon thread with an event loop of its own, starts and
connects the service there, and returns a :class:`ServiceThread` whose blocking methods may be
called from any other thread::

    handle = bgws.start_in_thread(service)      # or service.start_in_thread()
    handle.send({"type": "chat_message", "text": "hi"})
    reply = handle.request({"type": "ping"}, timeout=5)
    handle.stop()

Handlers registered with ``@service.on(...)`` (plain functions and coroutines alike), the
class-based hooks and the plugins all run **on the service thread**, never on the caller's.
From there, await the service's own coroutines (``await service.send(...)``): a blocking
handle method called on the service thread would wait for the very loop it blocks, so it raises
:class:`~bgws.ServiceError` instead of deadlocking.

Because the service has its own thread and loop, starting one from inside a running event loop
(a Jupyter kernel, an ASGI app) works; only the start itself blocks the caller, for at most
``timeout`` seconds.

A handle that is still running when the interpreter exits is stopped gracefully by an exit hook
(which runs before the standard library shuts its thread pools down), waiting at most
:data:`EXIT_TIMEOUT` seconds in all.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import concurrent.futures.thread  # imported first, so that our exit hook runs before its own
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, Unpack, runtime_checkable

from ._engine.delivery import RequestArgs, SendArgs
from .errors import ServiceClosed, ServiceError
from .machine import State
from .message import Message
from .stats import ServiceStats, StateChange

if TYPE_CHECKING:
    # Only for the types: the service imports this module (``Service.start_in_thread``), so
    # the runner stays below it and drives any object with a service's methods.
    from .service import Service

__all__ = ["EXIT_TIMEOUT", "LoopFactory", "ServiceThread", "ThreadHandle", "start_in_thread"]

_T = TypeVar("_T")
_log = logging.getLogger("bgws.runner")

EXIT_TIMEOUT: Final = 5.0
"""Seconds the interpreter-exit hook waits, in all, for running handles to stop."""

_ABORT_TIMEOUT: Final = 5.0
"""Seconds a start that timed out waits for its thread to clean up."""

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class ThreadHandle:
    """A daemon thread running one event loop that hosts one target from start to stop.

    Subclasses say how the target opens (:meth:`_open`) and closes (:meth:`_close`); this
    class owns the thread, the loop, the cross-thread calls and the shutdown. The base of
    :class:`ServiceThread` and :class:`~bgws.manager.ManagerThread`.
    """

    _what = "service"

    def __init__(self, thread_name: str, loop_factory: LoopFactory | None) -> None:
        self._loop_factory = loop_factory
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # binds to the thread's loop on first use
        self._stop_timeout: float | None = None
        self._stop_error: BaseException | None = None
        self._stop_requested = False
        self._closing = False  # no new calls are taken
        self._pending: set[concurrent.futures.Future[Any]] = set()

    # -- what subclasses provide ------------------------------------------------------------

    async def _open(self) -> None:
        raise NotImplementedError

    async def _close(self, timeout: float | None) -> None:
        raise NotImplementedError

    # -- public surface ---------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop on the service thread (closed once the handle has stopped)."""
        if self._loop is None:
            raise ServiceError(f"the {self._what} thread has not started")
        return self._loop

    @property
    def thread(self) -> threading.Thread:
        """The daemon thread that runs the loop (and every handler)."""
        return self._thread

    @property
    def is_running(self) -> bool:
        """Whether the thread is alive and no stop was asked for."""
        return self._thread.is_alive() and not self._closing

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully, end the loop and join the thread. Safe to call more than once.

        Args:
            timeout: how long the stop may spend flushing queued messages (default: the
                config's ``close_timeout``).

        Raises:
            ServiceError: called from the service thread itself (from a handler); there, use
                ``await service.stop()``.
        """
        self._check_thread("stop")
        first = self._request_stop(timeout)
        if self._thread.ident is not None:
            self._thread.join()
        error, self._stop_error = self._stop_error, None
        if first and error is not None:
            raise error

    def __enter__(self) -> ThreadHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- calls from other threads -----------------------------------------------------------

    def _call(self, what: str, make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        """Run the coroutine ``make()`` on the loop and wait for its outcome."""
        self._check_thread(what)
        with self._lock:
            if self._closing or self._loop is None:
                raise ServiceClosed(f"cannot {what}: the {self._what} thread is stopped")
            future = asyncio.run_coroutine_threadsafe(make(), self._loop)
            self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise ServiceClosed(
                f"cannot {what}: the {self._what} stopped before the call completed"
            ) from None
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt while waiting: do not leave it running
            raise

    def _check_thread(self, what: str) -> None:
        if threading.get_ident() == self._thread.ident:
            raise ServiceError(
                f"blocking {what}() called on the {self._what} thread (from a handler?) would "
                f"deadlock; await the {self._what}'s coroutine there instead"
            )

    # -- lifetime ---------------------------------------------------------------------------

    def launch(self, timeout: float) -> None:
        """Start the thread and wait until the target is open, or raise why it is not.

        :func:`start_in_thread` and ``ServiceManager.start_in_thread`` call it; a handle is
        launched once.

        Raises:
            TimeoutError: the target did not open within ``timeout`` seconds (the start was
                cancelled).
            RuntimeError: the handle was launched before.
        """
        self._thread.start()
        try:
            self._ready.result(timeout)
        except BaseException as exc:
            gave_up = not self._ready.done()  # timed out, or interrupted while waiting
            if gave_up:
                self._abort()
            self._thread.join(_ABORT_TIMEOUT)
            if gave_up and isinstance(exc, TimeoutError):
                raise TimeoutError(
                    f"the {self._what} did not start within {timeout}s (thread {self._thread.name})"
                ) from None
            raise
        with _live_lock:
            if self._thread.is_alive():
                _live.add(self)

    def _request_stop(self, timeout: float | None) -> bool:
        """Ask the loop to close the target; returns whether this was the first request."""
        with self._lock:
            first = not self._stop_requested
            self._stop_requested = True
            self._closing = True
            loop = self._loop
        if first:
            self._stop_timeout = timeout
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop has already ended
                    loop.call_soon_threadsafe(self._wake.set)
        return first

    def _abort(self) -> None:
        """Give up a start that takes too long: cancel it; the thread cleans up and ends."""
        with self._lock:
            self._stop_requested = True
            self._closing = True
            loop, main = self._loop, self._main
        if loop is not None and main is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(main.cancel)

    def _run(self) -> None:
        """The thread's body: one loop, closed with every task and executor it made."""
        try:
            with asyncio.Runner(loop_factory=self._loop_factory) as runner:
                try:
                    runner.run(self._serve())
                finally:
                    with self._lock:
                        self._closing = True
                    # Calls submitted just before closing get their tasks created here, and
                    # the runner's close cancels them: every caller hears ServiceClosed.
                    runner.run(asyncio.sleep(0))
        except BaseException as exc:  # e.g. the loop factory failed
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                _log.exception("the %s thread ended with an error", self._what)
        finally:
            for future in list(self._pending):
                future.cancel()
            if not self._ready.done():
                self._ready.set_exception(ServiceClosed(f"the {self._what} thread ended"))
            with _live_lock:
                _live.discard(self)

    async def _serve(self) -> None:
        with self._lock:
            if self._closing:  # aborted before the loop even started
                return
            self._loop = asyncio.get_running_loop()
            self._main = asyncio.current_task()
        try:
            await self._open()
        except asyncio.CancelledError as exc:
            self._uncancel()
            self._ready.set_exception(exc)
            with contextlib.suppress(Exception):
                await self._close(0.0)
            return
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        try:
            await self._wake.wait()
        except asyncio.CancelledError:  # an abort that came just after the start finished
            self._uncancel()
        with self._lock:
            self._closing = True
        try:
            await self._close(self._stop_timeout)
        except Exception as exc:
            self._stop_error = exc

    def _uncancel(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()

    def _closed_by_itself(self) -> None:
        """The target closed on its own (e.g. from a handler): end the thread too."""
        with self._lock:
            self._closing = True
        self._wake.set()


@runtime_checkable
class _ServiceLike(Protocol):
    """What :class:`ServiceThread` needs of a service (checked at run time, without importing
    :mod:`bgws.service`, which imports this module)."""

    config: Any

    async def start(self) -> None: ...

    async def connect(self, connection_data: Mapping[str, Any] | None = None) -> None: ...

    async def stop(self, timeout: float | None = None) -> None: ...

    def on_state_change(self, callback: Callable[[StateChange], Any]) -> Callable[[], None]: ...


class ServiceThread(ThreadHandle):
    """A service running on a thread of its own, driven by blocking calls.

    Made by :func:`start_in_thread`. Every method may be called from any thread except the
    service thread itself (a handler), where it raises :class:`~bgws.ServiceError`. Once
    stopped, the methods raise :class:`~bgws.ServiceClosed`. A ``with`` block stops it on exit.

    Args:
        service: the service, not started yet.
        name: the thread's name (default ``"bgws-<service_tag>"``).
        loop_factory: makes the thread's event loop (default: a new asyncio loop).
        connection_data: handed to :meth:`bgws.Service.connect` when the thread starts it.

    Raises:
        TypeError: ``service`` is not a service.
    """

    def __init__(
        self,
        service: Service,
        *,
        name: str | None = None,
        loop_factory: LoopFactory | None = None,
        connection_data: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(service, _ServiceLike):
            raise TypeError("service must be a bgws.Service")
        super().__init__(name or f"bgws-{service.config.service_tag}", loop_factory)
        self._service = service
        self._connection_data = connection_data

    @property
    def service(self) -> Service:
        """The service; await its coroutines only on :attr:`loop` (e.g. in handlers)."""
        return self._service

    @property
    def state(self) -> State:
        """The connection's current state."""
        return self._service.state

    @property
    def stats(self) -> ServiceStats:
        """A snapshot of the service's counters (read without waiting for the loop)."""
        return self._service.stats

    def send(self, message: Mapping[str, Any] | str | bytes, **options: Unpack[SendArgs]) -> Any:
        """Accept a message, as :meth:`bgws.Service.send` does, and return its id.

        Raises:
            ServiceError: called on the service thread.
            ServiceClosed: the service is stopped or failed.
            QueueFull, MessageTooBig, AckTimeout, StoreError, TypeError: as ``Service.send``.
        """
        return self._call(
            "send",
            lambda: self._service.send(message, **options),
        )

    def request(self, message: Mapping[str, Any], **options: Unpack[RequestArgs]) -> Message:
        """Send a request and return its reply, as :meth:`bgws.Service.request` does.

        Raises:
            ServiceError: called on the service thread.
            ServiceClosed: the service is stopped (also while the request was waiting).
            RequestTimeout, QueueFull: as ``Service.request``.
        """
        return self._call(
            "request",
            lambda: self._service.request(message, **options),
        )

    def subscribe(self, message: Mapping[str, Any] | str | bytes, *, key: str | None = None) -> str:
        """Keep a subscription, as :meth:`bgws.Service.subscribe` does; returns its key."""
        return self._call("subscribe", lambda: self._service.subscribe(message, key=key))

    def unsubscribe(
        self, message: Mapping[str, Any] | str | bytes | None = None, *, key: str | None = None
    ) -> bool:
        """Forget a subscription, as :meth:`bgws.Service.unsubscribe` does."""
        return self._call("unsubscribe", lambda: self._service.unsubscribe(message, key=key))

    def connect(self, connection_data: Mapping[str, Any] | None = None) -> None:
        """Connect again (e.g. after ``FAILED``), as :meth:`bgws.Service.connect` does."""
        self._call("connect", lambda: self._service.connect(connection_data))

    def wait_for(self, state: State, timeout: float | None = None) -> None:
        """Block until the service is in ``state``.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
            ServiceClosed: the service reached ``CLOSED`` or ``FAILED`` instead.
        """
        self._call("wait_for", lambda: self._service.wait_for(state, timeout))

    def __enter__(self) -> ServiceThread:
        return self

    def __repr__(self) -> str:
        running = "running" if self.is_running else "stopped"
        return f"<ServiceThread {self._service.config.service_tag!r} {self.state} {running}>"

    async def _open(self) -> None:
        service = self._service
        await service.start()
        service.on_state_change(self._watch)
        await service.connect(self._connection_data)

    async def _close(self, timeout: float | None) -> None:
        await self._service.stop(timeout)

    def _watch(self, change: StateChange) -> None:
        if change.new is State.CLOSED:
            self._closed_by_itself()


def start_in_thread(
    service: Service,
    *,
    name: str | None = None,
    timeout: float = 10.0,
    connection_data: Mapping[str, Any] | None = None,
    loop_factory: LoopFactory | None = None,
) -> ServiceThread:
    """Start and connect ``service`` on a new daemon thread with its own event loop.

    Returns once the service has started and begun connecting (not once it is connected:
    use :meth:`ServiceThread.wait_for`). Handlers run on that thread.

    Args:
        service: a service that has not started.
        name: the thread's name (default ``"bgws-<service_tag>"``).
        timeout: seconds to wait for the start.
        connection_data: handed to :meth:`bgws.Service.connect`.
        loop_factory: makes the thread's event loop (e.g. ``uvloop.new_event_loop``).

    Returns:
        The handle that drives the service from any thread.

    Raises:
        StoreError: the store could not be opened (any start error is raised here, in the
            caller's thread, and the thread has ended).
        ServiceError: the service had already started.
        TimeoutError: the start took longer than ``timeout``; it was cancelled.
    """
    handle = ServiceThread(
        service, name=name, loop_factory=loop_factory, connection_data=connection_data
    )
    handle.launch(timeout)
    return handle


# -- interpreter exit -----------------------------------------------------------------------

_live: set[ThreadHandle] = set()
_live_lock = threading.Lock()


def _stop_all_at_exit() -> None:
    """Stop every handle still running, waiting at most :data:`EXIT_TIMEOUT` in all."""
    with _live_lock:
        handles = list(_live)
    if not handles:
        return
    deadline = time.monotonic() + EXIT_TIMEOUT
    for handle in handles:
        handle._request_stop(None)
    for handle in handles:
        handle.thread.join(max(0.0, deadline - time.monotonic()))
        if handle.thread.is_alive():
            _log.warning("%s did not stop within %ss at exit", handle.thread.name, EXIT_TIMEOUT)


# threading's exit hooks run before the thread pools shut down (a stop may still need the
# SQLite store's executor), and before atexit; fall back to atexit where they are missing.
_register: Callable[[Callable[[], None]], Any] = getattr(
    threading, "_register_atexit", atexit.register
)
_register(_stop_all_at_exit)
del _register
