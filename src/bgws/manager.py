"""Several named services, started and stopped together on one event loop.

Each service keeps its own config, store, handlers and plugins; the manager only runs them
side by side and gives one status view::

    manager = bgws.ServiceManager()
    manager.add("chat", chat_service)
    manager.add("prices", prices_service)

    async with manager:                      # starts and connects every service
        await manager["chat"].send({"type": "chat_message", "text": "hi"})
        print(manager.status()["prices"].state)

One service that cannot start (a corrupt store, a failing plugin) does not stop the others:
:meth:`ServiceManager.start` starts the rest, returns the failures by name, logs them, and
keeps each one in :meth:`ServiceManager.status`. A service whose server refuses it ends in
``FAILED`` on its own, as it would alone; its status says so.

Services are added before :meth:`~ServiceManager.start`; adding one to a running manager raises
:class:`~bgws.ServiceError` (start a second manager, or run the service alone). Removing one
from a running manager stops it. Like a service, a manager is single-use.

:meth:`ServiceManager.start_in_thread` runs the whole manager on a background thread, for
synchronous programs (see :mod:`bgws.runner`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Unpack

from ._engine.delivery import RequestArgs, SendArgs
from ._redact import redact_url
from .errors import ConfigError, ServiceClosed, ServiceError
from .machine import State
from .message import Message
from .runner import LoopFactory, ThreadHandle
from .service import Service
from .stats import ServiceStats
from .storage import store_path

__all__ = ["ManagerThread", "ServiceManager", "ServiceStatus"]

_log = logging.getLogger("bgws.manager")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """One line of :meth:`ServiceManager.status` (secrets redacted).

    Attributes:
        name: the name the service was added under.
        state: the service's current state.
        url: the configured URL, with credentials redacted.
        stats: a snapshot of the service's counters.
        error: why the service could not start, as text; ``None`` when it started (or has
            not been started yet).
    """

    name: str
    state: State
    url: str
    stats: ServiceStats
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for JSON status output."""
        return {
            "name": self.name,
            "state": self.state.name,
            "url": self.url,
            "error": self.error,
            "stats": self.stats.to_dict(),
        }


class ServiceManager:
    """Named services run together on one loop: ``async with manager:`` starts them all.

    Iterating over a manager yields the names, in the order they were added;
    ``manager[name]`` is the service.

    Args:
        services: services to add at once, by name.
    """

    def __init__(self, services: Mapping[str, Service] | None = None) -> None:
        self._services: dict[str, Service] = {}
        self._errors: dict[str, Exception] = {}
        self._phase = "idle"  # idle -> running -> stopped
        for name, service in (services or {}).items():
            self.add(name, service)

    # -- the set of services ----------------------------------------------------------------

    def add(self, name: str, service: Service) -> Service:
        """Add ``service`` under ``name``, before the manager starts.

        Returns:
            The service, so that ``svc = manager.add("chat", make_service())`` reads well.

        Raises:
            ConfigError: the name is not made of ``A-Z a-z 0-9 _ . -``, is taken, the
                service was already added under another name, or it would share another
                service's SQLite store file.
            ServiceError: the manager is running (``ServiceClosed``: it has stopped).
            TypeError: ``service`` is not a :class:`bgws.Service`.
        """
        if not isinstance(service, Service):
            raise TypeError("service must be a bgws.Service")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError("name", f"{name!r} is not a service name: use A-Z a-z 0-9 _ . -")
        if name in self._services:
            raise ConfigError("name", f"a service named {name!r} was already added")
        path = _store_path(service)
        for other, known in self._services.items():
            if known is service:
                raise ConfigError("name", f"this service was already added as {other!r}")
            if path is not None and _store_path(known) == path:
                raise ConfigError(
                    "storage_path",
                    f"{name!r} would share the store file of {other!r}; give each service its "
                    "own service_tag or storage_path",
                )
        if self._phase == "stopped":
            raise ServiceClosed("the manager has stopped; create a new one")
        if self._phase == "running":
            raise ServiceError(
                f"cannot add {name!r}: the manager is running; add services before start()"
            )
        self._services[name] = service
        return service

    async def remove(self, name: str, *, timeout: float | None = None) -> Service:
        """Take a service out; a running manager stops it first.

        Args:
            name: the service's name.
            timeout: handed to :meth:`bgws.Service.stop`.

        Returns:
            The service (untouched when the manager had not started).

        Raises:
            KeyError: no service has that name.
        """
        service = self._services.pop(name)
        self._errors.pop(name, None)
        if self._phase == "running":
            await service.stop(timeout)
        return service

    @property
    def names(self) -> list[str]:
        """The names, in the order the services were added."""
        return list(self._services)

    def __getitem__(self, name: str) -> Service:
        return self._services[name]

    def __contains__(self, name: object) -> bool:
        return name in self._services

    def __len__(self) -> int:
        return len(self._services)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._services))

    def elsewhere(self, name: str) -> str | None:
        """Why ``name`` cannot be used through this manager although it is one of its
        services, or ``None`` when it can (always ``None`` here; a fleet member says which
        member holds it)."""
        return None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """Whether :meth:`start` ran and :meth:`stop` has not."""
        return self._phase == "running"

    async def start(self) -> dict[str, Exception]:
        """Start and connect every service, concurrently.

        A service that fails to start is left closed and does not stop the others: its error
        is logged, kept in :meth:`status` and returned.

        Returns:
            The start errors by service name (empty when every service started).

        Raises:
            ServiceError: the manager was already started (``ServiceClosed``: and stopped).
        """
        self._begin()
        items = list(self._services.items())
        await asyncio.gather(*(self._start_one(name, service) for name, service in items))
        return dict(self._errors)

    def _begin(self) -> None:
        """Move from idle to running, once.

        Raises:
            ServiceError: the manager was already started (``ServiceClosed``: and stopped).
        """
        if self._phase != "idle":
            kind = ServiceClosed if self._phase == "stopped" else ServiceError
            raise kind("a manager starts once; create a new one to start again")
        self._phase = "running"

    async def _start_one(self, name: str, service: Service) -> None:
        try:
            await service.start()
            await service.connect()
        except Exception as exc:
            self._errors[name] = exc
            _log.warning("service %r could not start: %s: %s", name, type(exc).__name__, exc)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop every service, concurrently. Safe to call more than once.

        Args:
            timeout: handed to each :meth:`bgws.Service.stop`.

        Raises:
            ExceptionGroup: some services raised while stopping (all were stopped anyway).
        """
        if self._phase == "stopped":
            return
        self._phase = "stopped"
        items = list(self._services.items())
        results = await asyncio.gather(
            *(service.stop(timeout) for _, service in items), return_exceptions=True
        )
        errors: list[Exception] = []
        for (name, _), result in zip(items, results, strict=True):
            if isinstance(result, Exception):
                result.add_note(f"while stopping service {name!r}")
                errors.append(result)
            elif isinstance(result, BaseException):
                raise result
        if errors:
            raise ExceptionGroup(f"{len(errors)} service(s) failed to stop", errors)

    async def __aenter__(self) -> ServiceManager:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, ServiceStatus]:
        """One status record per service, by name (secrets redacted)."""
        out: dict[str, ServiceStatus] = {}
        for name, service in list(self._services.items()):
            error = self._errors.get(name)
            out[name] = ServiceStatus(
                name=name,
                state=service.state,
                url=redact_url(service.config.url),
                stats=service.stats,
                error=None if error is None else f"{type(error).__name__}: {error}",
            )
        return out

    async def wait_for(self, name: str, state: State, timeout: float | None = None) -> None:
        """Wait until the service ``name`` is in ``state`` (see :meth:`bgws.Service.wait_for`).

        Raises:
            KeyError: no service has that name.
            TimeoutError: ``timeout`` seconds passed first.
            ServiceClosed: the service reached ``CLOSED`` or ``FAILED`` instead.
        """
        await self._services[name].wait_for(state, timeout)

    def start_in_thread(
        self,
        *,
        name: str = "bgws-manager",
        timeout: float = 10.0,
        loop_factory: LoopFactory | None = None,
    ) -> ManagerThread:
        """Start every service on a new daemon thread with its own loop (for sync code).

        Returns once :meth:`start` has run there; start errors of single services are in
        :attr:`ManagerThread.start_errors` and in the status, as with :meth:`start`.

        Args:
            name: the thread's name.
            timeout: seconds to wait for the start.
            loop_factory: makes the thread's event loop.

        Raises:
            ServiceError: the manager was already started.
            TimeoutError: the start took longer than ``timeout``; it was cancelled.
        """
        handle = ManagerThread(self, name=name, loop_factory=loop_factory)
        handle.launch(timeout)
        return handle

    def __repr__(self) -> str:
        return f"<ServiceManager {self._phase} services={self.names}>"


def _store_path(service: Service) -> Path | None:
    """The SQLite file a service will open, or ``None`` when it keeps nothing on disk."""
    config = service.config
    if config.storage != "sqlite":
        return None
    return store_path(config).expanduser().absolute()


class ManagerThread(ThreadHandle):
    """A :class:`ServiceManager` running on a thread of its own, driven by blocking calls.

    Made by :meth:`ServiceManager.start_in_thread`. As with :class:`bgws.ServiceThread`, the
    methods may be called from any thread but the manager's own (where they raise
    :class:`~bgws.ServiceError`), raise :class:`~bgws.ServiceClosed` once stopped, and a
    ``with`` block stops everything on exit. Handlers of every service run on that thread.

    Args:
        manager: the manager, not started yet.
        name: the thread's name.
        loop_factory: makes the thread's event loop.
    """

    _what = "manager"

    def __init__(
        self,
        manager: ServiceManager,
        *,
        name: str = "bgws-manager",
        loop_factory: LoopFactory | None = None,
    ) -> None:
        super().__init__(name, loop_factory)
        self._manager = manager
        self._start_errors: dict[str, Exception] = {}

    @property
    def manager(self) -> ServiceManager:
        """The manager; await its coroutines only on :attr:`loop`."""
        return self._manager

    @property
    def start_errors(self) -> dict[str, Exception]:
        """The services that could not start, with why (see :meth:`ServiceManager.start`)."""
        return dict(self._start_errors)

    def status(self) -> dict[str, ServiceStatus]:
        """One status record per service (read without waiting for the loop)."""
        return self._manager.status()

    def send(
        self,
        name: str,
        message: Mapping[str, Any] | str | bytes,
        **options: Unpack[SendArgs],
    ) -> Any:
        """Send through the service ``name``, as :meth:`bgws.Service.send` does.

        Raises:
            KeyError: no service has that name.
            ServiceClosed: the manager or that service is stopped.
        """
        service = self._manager[name]
        return self._call(
            "send",
            lambda: service.send(message, **options),
        )

    def request(
        self,
        name: str,
        message: Mapping[str, Any],
        **options: Unpack[RequestArgs],
    ) -> Message:
        """Send a request through the service ``name`` and return its reply."""
        service = self._manager[name]
        return self._call(
            "request",
            lambda: service.request(message, **options),
        )

    def wait_for(self, name: str, state: State, timeout: float | None = None) -> None:
        """Block until the service ``name`` is in ``state``."""
        service = self._manager[name]
        self._call("wait_for", lambda: service.wait_for(state, timeout))

    def remove(self, name: str, *, timeout: float | None = None) -> Service:
        """Stop the service ``name`` and take it out of the manager."""
        return self._call("remove", lambda: self._manager.remove(name, timeout=timeout))

    def __enter__(self) -> ManagerThread:
        return self

    def __repr__(self) -> str:
        running = "running" if self.is_running else "stopped"
        return f"<ManagerThread {self._manager.names} {running}>"

    async def _open(self) -> None:
        self._start_errors = await self._manager.start()

    async def _close(self, timeout: float | None) -> None:
        await self._manager.stop(timeout)
