"""The daemon behind ``bgws run service.toml``: services, a control socket, signals and logs.

:class:`Daemon` runs the services of a :class:`~bgws.ServiceManager` and a
:class:`~bgws.control.ControlServer` on one event loop until it is asked to stop: by
``SIGTERM`` or ``SIGINT``, by a ``stop`` request on the control socket, or because every
service has failed. Stopping is graceful and bounded: each service flushes what it can within
the deadline, and what is left stays in its store (SQLite) for the next start.

:func:`configure_logging` writes log records to stderr in a form that service managers capture
well: under systemd (stderr is the journal stream named by ``JOURNAL_STREAM``) each line
carries a ``<N>`` priority prefix and no timestamp, since the journal adds its own; elsewhere
(launchd, a terminal, a file) each line starts with an ISO 8601 timestamp. Every line gives
the level and the logger name, and the services' secrets are redacted from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import functools
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final, Literal, TextIO

from . import logsetup
from ._redact import redact_text, redact_url
from .control import DEFAULT_TAIL_BUFFER, ControlServer
from .logsetup import LogOptions
from .machine import State
from .manager import ServiceManager
from .metrics import MetricsServer
from .servicefile import ServiceFile
from .stats import StateChange

__all__ = [
    "Daemon",
    "format_event",
    "format_status",
    "configure_logging",
    "notify_systemd",
    "run_service_file",
    "under_journal",
]

_log = logging.getLogger("bgws.daemon")
# syslog priorities, for the "<N>" prefix that journald reads from a stream.
_PRIORITIES = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class Daemon:
    """Runs services and their control socket until asked to stop.

    Args:
        manager: the services, not started yet.
        socket: the control socket (on Windows the token file); ``None``: the default path,
            in a private directory (see :func:`bgws.local.default_socket_path`).
        stop_timeout: the drain deadline at stop, in seconds; ``None``: each service's
            ``close_timeout``. A ``stop`` request may give its own.
        tail_buffer: how many messages each ``tail`` client may fall behind by.
        transport: the control socket's kind (``"unix"``, or ``"tcp"`` with a token file);
            ``None``: the platform's.
        handle_signals: stop gracefully on ``SIGTERM`` and ``SIGINT`` (for the command line;
            leave off when the daemon runs inside another program).
        on_stopping: called with the drain deadline (seconds) when the stop begins.

    Attributes:
        ready: set once the control socket listens and the services have started.
    """

    def __init__(
        self,
        manager: ServiceManager,
        *,
        socket: str | os.PathLike[str] | None = None,
        stop_timeout: float | None = None,
        tail_buffer: int = DEFAULT_TAIL_BUFFER,
        transport: Literal["unix", "tcp"] | None = None,
        handle_signals: bool = False,
        on_stopping: Callable[[float], None] | None = None,
    ) -> None:
        self.manager = manager
        self.control = ControlServer(
            manager, socket, on_stop=self.request_stop, tail_buffer=tail_buffer, transport=transport
        )
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._timeout = stop_timeout
        self._exit_code = 0
        self._handle_signals = handle_signals
        self._on_stopping = on_stopping
        self._connected: set[str] = set()
        self._failed: set[str] = set()

    @property
    def drain_deadline(self) -> float:
        """The seconds a stop may drain: ``stop_timeout``, else the longest ``close_timeout``."""
        if self._timeout is not None:
            return self._timeout
        return max((self.manager[n].config.close_timeout for n in self.manager), default=0.0)

    @property
    def socket(self) -> str:
        """The control socket's path."""
        return os.fspath(self.control.path)

    def request_stop(self, timeout: float | None = None, *, exit_code: int = 0) -> None:
        """Ask the daemon to stop; the first request's deadline and exit code win.

        Args:
            timeout: the drain deadline (``None``: the daemon's ``stop_timeout``).
            exit_code: what :meth:`run` returns.
        """
        if self._stop.is_set():
            return
        if timeout is not None:
            self._timeout = timeout
        self._exit_code = exit_code
        self.control.stopping = True
        self._stop.set()

    async def run(self) -> int:
        """Listen, start the services, wait for a stop, stop gracefully.

        Returns:
            The exit code: 0 after a requested stop, 1 when every service failed (or could not
            start) or one raised while stopping.

        Raises:
            ControlError: the control socket cannot be set up (another daemon listens there).
        """
        await self.control.start()
        loop = asyncio.get_running_loop()
        installed = self._install_signals(loop) if self._handle_signals else []
        try:
            return await self._serve()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            await self.control.close()

    async def _serve(self) -> int:
        names = self.manager.names
        for name in names:
            self.manager[name].on_state_change(functools.partial(self._changed, name))
            _log.info("waiting for %s to connect…", name)
        errors = await self.manager.start()
        self._failed.update(errors)
        if errors and len(errors) == len(names):
            _log.error("no service could start")
            self.request_stop(exit_code=1)
        else:
            notify_systemd("READY=1")
            _log.info("ready: %d service(s), control socket %s", len(names), self.socket)
        self.ready.set()
        await self._stop.wait()
        notify_systemd("STOPPING=1")
        if self._on_stopping is not None:
            self._on_stopping(self.drain_deadline)
        deadline = "each service's close_timeout" if self._timeout is None else f"{self._timeout}s"
        _log.info("stopping: draining within %s", deadline)
        try:
            await self.manager.stop(self._timeout)
        except ExceptionGroup as group:
            for exc in group.exceptions:
                _log.error("%s: %s", type(exc).__name__, exc)
            self._exit_code = 1
        for name in names:
            stats = self.manager[name].stats
            kept = stats.queued + stats.in_flight
            if kept:
                _log.info("%s: %d message(s) kept in the store for the next start", name, kept)
        _log.info("stopped")
        return self._exit_code

    def _changed(self, name: str, change: StateChange) -> None:
        if change.new is State.CONNECTED and name not in self._connected:
            self._connected.add(name)
            url = redact_url(self.manager[name].config.url)
            _log.info("%s connected to %s", name, url)
        elif change.new is State.FAILED:
            self._failed.add(name)
            _log.error("%s failed: %s", name, _describe(change.reason))
            if self._failed >= set(self.manager.names) and not self._stop.is_set():
                _log.error("every service has failed; stopping")
                self.request_stop(exit_code=1)

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        installed: list[int] = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, self._on_signal, signum)
                installed.append(signum)
            except (NotImplementedError, RuntimeError):  # Windows: no loop signal handlers
                signal.signal(signum, lambda s, _f: loop.call_soon_threadsafe(self._on_signal, s))
        return installed

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stop.is_set():
            _log.warning("%s: already stopping; the drain ends at its deadline", name)
            return
        _log.info("%s received: stopping gracefully", name)
        self.request_stop()


def run_service_file(
    loaded: ServiceFile,
    *,
    socket: str | os.PathLike[str] | None = None,
    stop_timeout: float | None = None,
    tail_buffer: int = DEFAULT_TAIL_BUFFER,
    verbose: bool = False,
    log: LogOptions | None = None,
    metrics: tuple[str, int] | None = None,
) -> int:
    """Run a loaded service file as a daemon until a signal or a ``stop`` request (blocking).

    Logs go to stderr (see :func:`configure_logging`) unless ``log`` says otherwise (see
    :mod:`bgws.logsetup`); with ``metrics`` (host, port) ``/metrics`` is served there (see
    :class:`bgws.metrics.MetricsServer`). ``SIGTERM`` and ``SIGINT`` stop it gracefully.

    Returns:
        The exit code (see :meth:`Daemon.run`).

    Raises:
        ConfigError: two services would share a store file.
        ControlError: the control socket cannot be set up.
    """
    secrets = [s for spec in loaded.services.values() for s in spec.config.secret_values()]
    secrets += loaded.fleet.secret_values() if loaded.fleet is not None else []

    guard = _ExitGuard()

    async def main() -> int:
        daemon = Daemon(
            loaded.build_manager(),
            socket=socket,
            stop_timeout=stop_timeout,
            tail_buffer=tail_buffer,
            handle_signals=True,
            on_stopping=guard.arm,
        )
        if metrics is None:
            return await daemon.run()
        async with MetricsServer(daemon.manager, *metrics):
            return await daemon.run()

    undo = logsetup.configure(
        log or LogOptions(),
        verbose=verbose,
        secrets=secrets,
        text_stderr=functools.partial(configure_logging, verbose=verbose, secrets=secrets),
    )
    try:
        return asyncio.run(main())
    finally:
        guard.disarm()
        undo()


EXIT_GRACE: Final = 15.0
"""Seconds past the drain deadline after which a stopping ``bgws run`` exits anyway."""


class _ExitGuard:
    """Ends the process when a stop overruns its deadline by :data:`EXIT_GRACE`.

    Every wait of a stop is bounded, but a stop hook that blocks the event loop, or a library
    that swallows cancels, could still hold it; a service manager would then wait for its own
    kill timeout. The guard watches from a thread: it logs the stacks of every thread and
    exits with 1. What is queued stays in the store, as after a crash.
    """

    def __init__(self) -> None:
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float) -> None:
        """The stop began, to drain within ``deadline`` seconds."""
        if self._thread is None:
            limit = deadline + EXIT_GRACE
            self._thread = threading.Thread(
                target=self._watch, args=(limit,), name="bgws-exit-guard", daemon=True
            )
            self._thread.start()

    def disarm(self) -> None:
        """The stop ended in time."""
        self._done.set()

    def _watch(self, limit: float) -> None:
        if self._done.wait(limit):
            return
        text = (
            f"the stop did not end within {limit:g}s; exiting now (queued messages stay in "
            "the store). Where each thread was:"
        )
        # Logged from another thread, waited for a second: the stuck thread may hold a
        # logging lock. Then straight to stderr, whatever happened.
        said = threading.Thread(target=_log.critical, args=(text,), daemon=True)
        said.start()
        said.join(1.0)
        with contextlib.suppress(Exception):
            if said.is_alive():
                os.write(2, f"bgws: {text}\n".encode())
            faulthandler.dump_traceback(file=2, all_threads=True)
        os._exit(1)


def _describe(error: BaseException | None) -> str:
    return "no reason given" if error is None else f"{type(error).__name__}: {error}"


# -- what people read -------------------------------------------------------------------------


def format_status(data: dict[str, Any]) -> str:
    """A ``status`` result for people: one block per service, a title line and its fields."""
    blocks: list[str] = []
    for name, status in data["services"].items():
        stats = status["stats"]
        rows = [
            ("state", status["state"]),
            ("url", status["url"]),
            ("uptime", _duration(stats["uptime"]) if stats["connected_since"] else "-"),
            ("outbox", str(stats["queued"])),
            ("in flight", str(stats["in_flight"])),
            ("reconnects", str(stats["reconnects"])),
            ("sent", str(stats["sent"])),
            ("received", str(stats["received"])),
            ("dropped", str(stats["dropped"] + stats["expired"])),
            ("last error", status["error"] or stats["last_error"] or "-"),
        ]
        if "fleet" in status:  # a fleet member: which member runs the service
            rows.insert(1, ("held by", _holder(status["fleet"])))
        width = max(len(key) for key, _ in rows)
        lines = [f"service {name}"] + [f"  {key.ljust(width)}  {value}" for key, value in rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "no service"


def _holder(fleet: dict[str, Any]) -> str:
    holder = fleet["holder"]
    if holder is None:
        return f"nobody yet (fleet {fleet['name']})"
    return f"{holder} (this daemon)" if fleet["here"] else str(holder)


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def format_event(event: dict[str, Any]) -> str:
    """A tail ``message`` event as one line: ``service type data`` (JSON compact, text as
    it is, binary as ``base64:...``)."""
    data = event["data"]
    if event["format"] == "json":
        shown = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    elif event["format"] == "binary":
        shown = f"base64:{data}"
    else:
        shown = str(data)
    return f"{event['service']} {event['type'] or '-'} {shown}"


# -- logging ----------------------------------------------------------------------------------


class _Formatter(logging.Formatter):
    """``LEVEL logger: message``, with a timestamp or a journald priority, secrets redacted."""

    def __init__(self, *, journal: bool, secrets: Iterable[str]) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.journal = journal
        self.secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        text = redact_text(super().format(record), self.secrets)
        if self.journal:
            priority = _PRIORITIES.get(record.levelno, 6)
            return "\n".join(f"<{priority}>{line}" for line in text.splitlines())
        when = datetime.fromtimestamp(record.created).astimezone()
        return f"{when.isoformat(timespec='milliseconds')} {text}"


def under_journal(stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is the systemd journal stream named by ``$JOURNAL_STREAM``.

    systemd sets ``JOURNAL_STREAM=<device>:<inode>`` for a service whose output goes to the
    journal; the variable is inherited by child processes, so it counts only when ``stream``
    really is that file.
    """
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not device or not inode:
        return False
    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (str(info.st_dev), str(info.st_ino)) == (device, inode)


def configure_logging(
    stream: TextIO | None = None,
    *,
    verbose: bool = False,
    secrets: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
) -> Callable[[], None]:
    """Send log records (bgws's and the program's) to ``stream`` (default: stderr).

    Args:
        stream: where the lines go.
        verbose: include DEBUG records (default: INFO and above).
        secrets: values to hide wherever they appear (see
            :meth:`bgws.Config.secret_values`).
        env: where ``JOURNAL_STREAM`` is read (default: :data:`os.environ`).

    Returns:
        A function that removes the handler and restores the root logger's level.
    """
    target = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(target)
    handler.setFormatter(_Formatter(journal=under_journal(target, env), secrets=secrets))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)

    def undo() -> None:
        root.removeHandler(handler)
        root.setLevel(old_level)

    return undo


def notify_systemd(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd about the daemon's state (``READY=1``, ``STOPPING=1``), if it listens.

    Lets a unit use ``Type=notify``; does nothing without ``$NOTIFY_SOCKET``.

    Returns:
        Whether the notice was sent.
    """
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not address or not hasattr(socket, "AF_UNIX"):
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
        return True
    return False
