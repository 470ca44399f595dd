"""A fleet of daemons that share the services of one service file through NATS JetStream.

A service file with a ``[fleet]`` table (see :mod:`bgws.fleet_config`) makes ``bgws run`` one
member of a fleet. Each service runs on exactly one member at a time, claimed through a lease
in a JetStream key-value bucket (``bgws_fleet_<name>``, whose TTL is ``lease_ttl``):

- **claim**: ``create("services.<service>")`` is atomic on the broker; the one member whose
  create succeeds starts the service. Members spread the services (see
  :mod:`bgws.fleet_plan`): each takes its fair share, and the least loaded takes an orphan.
- **renew**: every ``renew_interval`` the holder updates its lease on the revision it holds
  (``update(..., last=revision)``), long before the TTL.
- **fence**: a holder whose renewals have not been confirmed for ``lease_ttl -
  renew_interval`` (the broker is unreachable, say) stops the service then, one interval before
  the lease can expire on the broker and another member can claim it. A renewal refused
  because the revision moved (the lease was lost) stops the service at once.
- **hand over**: a graceful stop stops each service, then deletes its lease; the other members
  see the delete at once (they follow the bucket's subject) and claim it.
- **fail over**: a member that dies (SIGKILL) stops renewing; its leases expire on the broker
  within ``lease_ttl`` of its last renewal and are claimed within one more renewal interval.

Every member heartbeats ``members.<member>`` in the same bucket, so that the others can count
the live members. A member that cannot reach the broker keeps retrying; what it holds is
fenced as above. Limits: fencing relies on the member's own clock and event loop; a process
that is frozen (SIGSTOP, a VM pause) for longer than ``renew_interval`` may keep sending after
its lease expired, until it runs again and fences.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._natsclient import close_quietly, describe
from .config import Config
from .fleet_config import FleetConfig
from .fleet_plan import MEMBER_PREFIX, SERVICE_PREFIX, FleetView, plan
from .handlers import MessageHandler
from .machine import State
from .manager import ServiceManager, ServiceStatus
from .plugins import Plugin
from .service import Service

__all__ = ["FleetManager", "FleetServiceStatus", "fresh_factory"]

_log = logging.getLogger("bgws.fleet")
_KV_OP = "KV-Operation"
_RETRY_MAX = 5.0
_RETRY_LOG_EVERY = 30.0  # seconds between two "cannot join yet" warnings


@dataclass(frozen=True, slots=True)
class FleetServiceStatus(ServiceStatus):
    """A :class:`~bgws.manager.ServiceStatus` that also says which member holds the service.

    Attributes:
        fleet: the fleet's name.
        member: this daemon's name in the fleet.
        holder: the member that holds the service (``"?"``: someone not yet named; ``None``:
            nobody, the service is free).
    """

    fleet: str
    member: str
    holder: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for JSON status output; adds a ``fleet`` entry."""
        out = ServiceStatus.to_dict(self)
        out["fleet"] = {
            "name": self.fleet,
            "member": self.member,
            "holder": self.holder,
            "here": self.holder == self.member,
        }
        return out


@dataclass(slots=True)
class _Lease:
    revision: int
    confirmed: float  # monotonic time the last successful create/update was sent


class FleetManager(ServiceManager):
    """A :class:`~bgws.ServiceManager` that runs only the services whose lease it holds.

    Every service of the file is known (its status says who holds it); one held elsewhere is
    kept closed here, so a ``send`` to it raises :class:`~bgws.ServiceClosed` (and the
    control socket answers ``NotHere``, naming the holder: :meth:`elsewhere`). Each claim
    runs a new service made by its factory (services are single-use).

    Args:
        fleet: the checked ``[fleet]`` table.
        factories: makes a new, unstarted service, by name.
    """

    def __init__(self, fleet: FleetConfig, factories: Mapping[str, Callable[[], Service]]) -> None:
        super().__init__({name: make() for name, make in factories.items()})
        self.fleet = fleet
        self._factories = dict(factories)
        self._view = FleetView(fleet.member, list(factories), fleet.lease_ttl)
        self._leases: dict[str, _Lease] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping: set[asyncio.Future[None]] = set()
        self._retry = False
        self._quiet_until = 0.0  # when the next "cannot join yet" may be logged
        self._nc: Any = None
        self._kv: Any = None
        self._timeout = min(fleet.renew_interval, 2.0)  # one broker call, at most
        self._changes = f"bgws.fleet.{fleet.name}.>"

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> dict[str, Exception]:
        """Join the fleet: the services are claimed in the background, as leases allow.

        Returns:
            Always empty: a service that cannot start is released and shown in the status.

        Raises:
            ServiceError: the manager was already started (``ServiceClosed``: and stopped).
        """
        self._begin()
        # Until claimed, each service stays closed here: nothing may open its store.
        await asyncio.gather(*(self[name].stop() for name in self.names))
        self._tasks = [
            asyncio.create_task(self._run(), name="bgws-fleet"),
            asyncio.create_task(self._fence_loop(), name="bgws-fleet-fence"),
        ]
        return {}

    async def stop(self, timeout: float | None = None) -> None:
        """Leave the fleet: stop every held service, then delete its lease (hand it over).

        Args:
            timeout: handed to each service's stop (bounded so that it ends before the lease
                could expire).

        Raises:
            ExceptionGroup: some services raised while stopping (all were stopped anyway).
        """
        if self._phase == "stopped":
            return
        self._phase = "stopped"
        await self._end_tasks()
        await asyncio.gather(*self._stopping, return_exceptions=True)  # bounded by their timeouts
        if self._kv is not None:
            await self._call(self._kv.delete(MEMBER_PREFIX + self.fleet.member))
        names = list(self._leases)
        results = await asyncio.gather(
            *(self._release(name, timeout) for name in names), return_exceptions=True
        )
        if self._nc is not None:
            await close_quietly(self._nc)
        errors: list[Exception] = []
        for name, result in zip(names, results, strict=True):
            if isinstance(result, Exception):
                result.add_note(f"while stopping service {name!r}")
                errors.append(result)
            elif isinstance(result, BaseException):
                raise result
        if errors:
            raise ExceptionGroup(f"{len(errors)} service(s) failed to stop", errors)

    # -- status -----------------------------------------------------------------------------

    @property
    def held(self) -> list[str]:
        """The services whose lease this member holds, in the file's order."""
        return [name for name in self.names if name in self._leases]

    def elsewhere(self, name: str) -> str | None:
        """Which member runs ``name``, when this one does not (``None``: it runs here)."""
        if name in self._leases:
            return None
        holder = self._view.holder(name, time.monotonic())
        fleet = f"fleet {self.fleet.name!r}"
        if holder is None or holder == self.fleet.member:
            return (
                f"{name!r} runs on no member of {fleet} that this one knows of (being handed "
                "over, or this member joined a moment ago): try again shortly"
            )
        return (
            f"{name!r} runs on member {holder!r} of {fleet}, not on this one: use that "
            "member's control socket"
        )

    def status(self) -> dict[str, ServiceStatus]:
        """One status record per service of the file, with the member that holds it."""
        now = time.monotonic()
        out: dict[str, ServiceStatus] = {}
        for name, base in super().status().items():
            holder = self.fleet.member if name in self._leases else self._view.holder(name, now)
            if holder == self.fleet.member and name not in self._leases:
                holder = None  # fenced or released here: its old lease runs nothing
            out[name] = FleetServiceStatus(
                base.name,
                base.state,
                base.url,
                base.stats,
                base.error,
                fleet=self.fleet.name,
                member=self.fleet.member,
                holder=holder,
            )
        return out

    # -- the member's loop ------------------------------------------------------------------

    async def _run(self) -> None:
        await self._join()
        interval = self.fleet.renew_interval
        # Hear from the members already there (they renew every interval) before claiming.
        self._settle()
        next_renew = 0.0
        while self._phase == "running":  # a cancel that asyncio lost ends it here, too
            now = time.monotonic()
            try:
                if now >= next_renew:
                    next_renew = now + interval
                    await self._call(self._kv.put(MEMBER_PREFIX + self.fleet.member, b"1"))
                    await self._renew()
                settled = self._view.since
                if now >= settled and await self._round(interval):
                    continue  # the picture changed: decide again at once
            except Exception:  # a bug, or a service that raised while stopping: keep serving
                _log.exception("fleet: a round failed; going on")
            if now >= self._view.since and self._retry:  # refused: the lease is not expired yet
                next_renew = min(next_renew, time.monotonic() + interval / 5)
            now = time.monotonic()
            settled = self._view.since
            wake_at = next_renew if now >= settled else min(next_renew, settled)
            change = self._view.next_change(now)
            if change is not None:
                wake_at = min(wake_at, change + 0.01)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake_at - now)):
                    await self._wake.wait()

    async def _end_tasks(self) -> None:
        """Cancel the member's loops and wait for them, within a bound.

        The loops also end at their next round once the phase is ``stopped``: on Python 3.11,
        ``asyncio.wait_for`` (used inside nats-py) drops a cancel that arrives in the same
        tick as the result it waited for, and a lost cancel must not hold the stop for ever.
        """
        for task in self._tasks:
            task.cancel()
        self._wake.set()
        if not self._tasks:
            return
        bound = self._timeout * 2 + self.fleet.renew_interval
        _, pending = await asyncio.wait(self._tasks, timeout=bound)
        for task in pending:
            _log.warning("fleet: %s did not end within %gs of the stop", task.get_name(), bound)

    def _settle(self) -> None:
        """Claim nothing for one and a half renewal intervals: the members already there (or
        back, after the broker was away) renew by then, so the shares are counted right. A
        service never seen, or left free while the broker was away, is free from then on."""
        self._view.since = time.monotonic() + self.fleet.renew_interval * 1.5

    async def _round(self, interval: float) -> bool:
        """Carry out one plan; returns whether something was claimed or released."""
        decided = plan(self._view, self._leases, time.monotonic(), interval)
        for name in decided.release:
            _log.info("fleet: handing %s over (holding more than a fair share)", name)
            await self._release(name, None)
        claimed = [await self._claim(name) for name in decided.claim]
        self._retry = bool(decided.claim) and not any(claimed)
        return bool(decided.release) or any(claimed)

    async def _join(self) -> None:
        """Connect to the broker, open the bucket, follow its changes; retry until it works."""
        import nats
        from nats.js.api import RePublish

        delay = 0.2
        while self._phase == "running":
            nc: Any = None
            try:
                nc = await nats.connect(**self._options())
                # The bucket republishes each committed change (never a refused create) to
                # a plain subject that the members follow, resubscribed after a reconnect.
                kv = await nc.jetstream().create_key_value(
                    bucket=self.fleet.bucket,
                    ttl=self.fleet.lease_ttl,
                    history=1,
                    republish=RePublish(src=f"$KV.{self.fleet.bucket}.>", dest=self._changes),
                )
                await nc.subscribe(self._changes, cb=self._changed)
                self._nc, self._kv = nc, kv
                _log.info(
                    "fleet %s: joined as %s (lease_ttl %gs)",
                    self.fleet.name,
                    self.fleet.member,
                    self.fleet.lease_ttl,
                )
                return
            except Exception as exc:
                hint = ""
                if getattr(exc, "err_code", None) == 10058:  # the bucket exists, set up otherwise
                    hint = f" (every member of {self.fleet.name!r} must use the same lease_ttl)"
                _log.warning(
                    "fleet %s: cannot join yet: %s%s", self.fleet.name, describe(exc), hint
                )
            finally:
                if nc is not None and self._nc is not nc:  # failed, or cancelled by stop()
                    await self._track(close_quietly(nc))
            await asyncio.sleep(delay)  # a retry delay, not a synchronisation
            delay = min(delay * 2, _RETRY_MAX)

    def _options(self) -> dict[str, Any]:
        async def on_error(exc: Exception) -> None:
            now = time.monotonic()
            if self._nc is None and now >= self._quiet_until:  # nats-py retries for ever
                self._quiet_until = now + _RETRY_LOG_EVERY
                _log.warning("fleet %s: cannot join yet: %s", self.fleet.name, describe(exc))
            else:
                _log.debug("fleet: broker connection: %s", describe(exc))

        async def on_disconnected() -> None:
            _log.warning("fleet: lost the broker; retrying (held services are fenced in time)")

        async def on_reconnected() -> None:
            _log.info("fleet: broker reachable again")
            self._settle()
            self._wake.set()

        return {
            "servers": list(self.fleet.servers),
            "name": f"bgws-fleet-{self.fleet.member}",
            "connect_timeout": 2,
            "reconnect_time_wait": 0.25,
            "max_reconnect_attempts": -1,
            # No buffering while disconnected: a renewal that timed out here must never reach
            # the broker later, after the service was fenced.
            "pending_size": 0,
            "error_cb": on_error,
            "disconnected_cb": on_disconnected,
            "reconnected_cb": on_reconnected,
        }

    async def _changed(self, msg: Any) -> None:
        """A change committed to the bucket: follow it in the view."""
        key = msg.subject.removeprefix(self._changes[:-1])
        op = (msg.headers or {}).get(_KV_OP)
        value = None if op in ("DEL", "PURGE") else msg.data.decode(errors="replace")
        now = time.monotonic()
        joined = key.startswith(MEMBER_PREFIX) and key[len(MEMBER_PREFIX) :] not in (
            self._view.live_members(now)
        )
        self._view.saw(key, value, now)
        if value is None or joined:
            self._wake.set()

    async def _claim(self, name: str) -> bool:
        """Try to claim ``name``; start it if the claim succeeds. Returns whether it did."""
        sent = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                revision = await self._kv.create(SERVICE_PREFIX + name, self.fleet.member.encode())
        except Exception as exc:
            if _wrong_revision(exc):
                _log.debug("fleet: %s is held by another member", name)
                self._view.taken(name, time.monotonic())
            else:
                _log.debug("fleet: claiming %s failed: %s", name, describe(exc))
            return False
        self._leases[name] = _Lease(revision, sent)
        service = self._factories[name]()
        self._services[name] = service
        self._errors.pop(name, None)
        _log.info("fleet: claimed %s (revision %d); starting it", name, revision)
        try:
            await service.start()
            await service.connect()
        except Exception as exc:
            self._errors[name] = exc
            _log.warning("fleet: %s could not start: %s; releasing it", name, describe(exc))
            await self._release(name, 0.0)
        return True

    async def _renew(self) -> None:
        for name in list(self._leases):
            if self._services[name].state is State.CLOSED:  # stopped from outside (bgws stop)
                _log.info("fleet: %s was stopped here; handing it over", name)
                await self._release(name, 0.0)
        names = list(self._leases)
        await asyncio.gather(*(self._renew_one(name) for name in names))

    async def _renew_one(self, name: str) -> None:
        lease = self._leases.get(name)
        if lease is None:
            return
        sent = time.monotonic()
        key = SERVICE_PREFIX + name
        try:
            async with asyncio.timeout(self._timeout):
                revision = await self._kv.update(
                    key, self.fleet.member.encode(), last=lease.revision
                )
        except Exception as exc:
            if _wrong_revision(exc) and self._leases.get(name) is lease:
                _log.error("fleet: lost the lease of %s (its revision moved); stopping it", name)
                del self._leases[name]
                await self._stop_service(name, 0.0)
            else:
                _log.debug("fleet: renewing %s failed: %s", name, describe(exc))
            return
        if self._leases.get(name) is lease:
            lease.revision, lease.confirmed = revision, sent
        else:  # fenced or released meanwhile: the lease is ours, give it back
            await self._call(self._kv.delete(key, last=revision))

    async def _fence_loop(self) -> None:
        """Stop each service whose lease was not confirmed for ``fence_after`` seconds."""
        limit = self.fleet.fence_after
        while self._phase == "running":
            now = time.monotonic()
            for name, lease in list(self._leases.items()):
                if now - lease.confirmed >= limit:
                    _log.error(
                        "fleet: no renewal of %s confirmed for %.1fs; stopping it before its "
                        "lease can expire",
                        name,
                        now - lease.confirmed,
                    )
                    del self._leases[name]
                    await self._stop_service(name, 0.0)
            first = min((lease.confirmed for lease in self._leases.values()), default=now)
            wait = max(0.0, min(first + limit - time.monotonic(), self.fleet.renew_interval))
            await asyncio.sleep(wait)  # a timer: the next fencing deadline

    async def _release(self, name: str, timeout: float | None) -> None:
        """Stop ``name`` (before its lease could expire), then delete the lease."""
        lease = self._leases.pop(name, None)
        if lease is None:
            return
        left = lease.confirmed + self.fleet.fence_after - time.monotonic()
        bound = max(0.0, left if timeout is None else min(timeout, left))
        try:
            await self._stop_service(name, bound)
        finally:
            if self._kv is not None:
                await self._call(self._kv.delete(SERVICE_PREFIX + name, last=lease.revision))
            _log.info("fleet: released %s", name)

    async def _stop_service(self, name: str, timeout: float) -> None:
        """Stop the service ``name``; a cancelled caller does not cut the stop short."""
        await self._track(self._services[name].stop(timeout))

    async def _track(self, closing: Coroutine[Any, Any, None]) -> None:
        """Await ``closing``, which runs to its end even if the caller is cancelled
        (:meth:`stop` waits for it)."""
        task = asyncio.ensure_future(closing)
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        await asyncio.shield(task)

    async def _call(self, call: Any) -> Any:
        """Await one broker call within the call timeout; a failure is logged, not raised."""
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except Exception as exc:
            _log.debug("fleet: broker call failed: %s", describe(exc))
            return None


def fresh_factory(
    config: Config,
    handler: MessageHandler | None,
    plugins: Sequence[Plugin],
    extra: Callable[[], Sequence[Plugin]] = tuple,
) -> Callable[[], Service]:
    """A factory of services for a fleet: each claim gets new copies of the handler and
    plugins (a service may be claimed, handed over and claimed again by one daemon, and a
    plugin serves one service). A handler or plugin that cannot be copied is shared.

    Args:
        config: the service's configuration.
        handler: its message handler, if any.
        plugins: its plugins, in order.
        extra: makes more plugins, new ones for each service (the service file's bridge),
            put after ``plugins``.

    Returns:
        A function that makes a new, unstarted service.
    """

    def make() -> Service:
        try:
            fresh = copy.deepcopy((handler, tuple(plugins)))
        except Exception:  # a lock, a socket, a module: share the originals
            fresh = (handler, tuple(plugins))
        return Service(config, message_handler=fresh[0], plugins=(*fresh[1], *extra()))

    return make


def _wrong_revision(exc: BaseException) -> bool:
    """Whether ``exc`` says the key's revision was not the one expected (someone holds it)."""
    from nats.js.errors import KeyWrongLastSequenceError

    return isinstance(exc, KeyWrongLastSequenceError)
