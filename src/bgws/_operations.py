"""What an operator asks of a running service: a status that explains, retry now, the outbox.

:class:`Operations` is a half of :class:`bgws.Service` kept in a module of its own (the
service's module holds its life cycle): :meth:`~Operations.status`,
:meth:`~Operations.reconnect_now` and :attr:`~Operations.outbox`. ``bgws status``,
``bgws reconnect`` and ``bgws outbox`` reach them through the daemon's control socket.

A plugin shows its own state in the status by having a ``status()`` method that returns a
mapping (:class:`StatusReporter`); the NATS bridge shows its lag this way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import ServiceClosed
from .machine import State
from .outboxtools import OutboxTools
from .plugins import Plugin

if TYPE_CHECKING:
    import logging

    from ._engine.delivery import Delivery
    from ._engine.hooks import Hooks
    from ._engine.supervisor import Supervisor
    from .config import Config
    from .stats import ServiceStats

__all__ = ["Operations", "StatusReporter", "build_status"]

_DEPTH = 4  # how deep a plugin's status mapping is shown


@runtime_checkable
class StatusReporter(Protocol):
    """A plugin (or anything) whose ``status()`` returns a mapping to show in the status."""

    def status(self) -> Mapping[str, Any]:
        """Plain values (numbers, text, lists, mappings) that describe its state now."""
        ...


class Operations:
    """The operator's calls of :class:`bgws.Service` (a base class of it)."""

    if TYPE_CHECKING:
        config: Config
        log: logging.Logger
        _delivery: Delivery
        _hooks: Hooks
        _supervisor: Supervisor

        @property
        def stats(self) -> ServiceStats: ...

        @property
        def state(self) -> State: ...

        async def connect(self, connection_data: Mapping[str, Any] | None = None) -> None: ...

    def status(self) -> dict[str, Any]:
        """The status that explains what the service is doing, as plain JSON types.

        Keys: ``service``, ``state``, ``url``, ``online_since`` / ``offline_since``,
        ``next_retry_at`` and ``next_retry_in`` (seconds; while backing off),
        ``attempts`` (failed attempts in this outage), ``reconnections`` (links that came
        up again, in total), ``connect_attempts``, ``last_error`` (``{"error", "at",
        "before_recovery"}`` or ``None``), ``outbox`` (``{"depth", "queued", "in_flight",
        "oldest_age"}``), ``in_flight``, ``last_received_at``, ``plugins`` (by name, what
        each plugin's ``status()`` returned) and ``stats`` (every counter). Times are
        ``time.time()`` values; secrets are redacted.
        """
        return build_status(self.config.service_tag or "", self.stats, self._hooks.plugins)

    async def reconnect_now(self) -> bool:
        """Skip the backoff wait: the next connect attempt starts now.

        While backing off, the wait ends at once (the backoff delays go on growing if the
        attempt fails too). A ``FAILED`` service starts connecting again. Connected or
        already connecting: nothing to do.

        Returns:
            Whether an attempt was started early.

        Raises:
            ServiceClosed: the service is stopping or stopped.
        """
        if self.state is State.FAILED:
            self.log.info("reconnecting now, as asked (the service had failed)")
            await self.connect()
            return True
        if self.state in (State.CLOSING, State.CLOSED):
            raise ServiceClosed(f"cannot reconnect: the service is {self.state}")
        return self._supervisor.wake()

    @property
    def outbox(self) -> OutboxTools:
        """List, show, export and purge the undelivered messages (see :class:`OutboxTools`)."""
        return OutboxTools(self._delivery.outbox, self.config.service_tag or "", self.log)


def build_status(name: str, stats: ServiceStats, plugins: Iterable[Plugin]) -> dict[str, Any]:
    """The explaining status of one service from its stats and its plugins.

    Args:
        name: the service's tag.
        stats: a snapshot of its counters.
        plugins: its plugins; those that are a :class:`StatusReporter` add a section.
    """
    now = time.time()
    retry_at = stats.next_retry_at
    error = None
    if stats.last_error is not None:
        error = {
            "error": stats.last_error,
            "at": stats.last_error_at,
            "before_recovery": stats.last_error_before_recovery,
        }
    return {
        "service": name,
        "state": stats.state.name,
        "url": stats.url,
        "online_since": stats.connected_since,
        "offline_since": stats.offline_since,
        "next_retry_at": retry_at,
        "next_retry_in": None if retry_at is None else max(retry_at - now, 0.0),
        "attempts": stats.attempts,
        "reconnections": stats.reconnects,
        "connect_attempts": stats.connect_attempts,
        "last_error": error,
        "outbox": {
            "depth": stats.queued + stats.in_flight,
            "queued": stats.queued,
            "in_flight": stats.in_flight,
            "oldest_age": stats.outbox_oldest_age,
        },
        "in_flight": stats.in_flight,
        "last_received_at": stats.last_received_at,
        "plugins": plugin_sections(plugins),
        "stats": stats.to_dict(),
    }


def plugin_sections(plugins: Iterable[Plugin]) -> dict[str, Any]:
    """``{plugin name: its status()}`` for the plugins that report one (plain JSON types).

    A ``status()`` that raises shows as ``{"error": "..."}``; one that returns something
    other than a mapping is left out.
    """
    out: dict[str, Any] = {}
    for plugin in plugins:
        if not isinstance(plugin, StatusReporter):
            continue
        name = plugin.name
        try:
            section = plugin.status()
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        if isinstance(section, Mapping):
            out[name] = _plain(section, _DEPTH)
    return out


def _plain(value: Any, depth: int) -> Any:
    """``value`` as JSON types: mappings and sequences kept (to ``depth``), the rest as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if depth <= 0:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth - 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, depth - 1) for v in value]
    return str(value)
