"""What one fleet member knows of the lease bucket, and what it decides to claim or release.

No I/O and no clock of its own: :class:`FleetView` is fed the bucket's changes as the member
sees them (with the local time it saw them), and :func:`plan` turns the view into claims and
releases. :mod:`bgws.fleet` carries the decisions out against the broker, where ``create()`` is
the only judge of who holds a service: the view is a hint that keeps the members spread out.

The rules:

- A member is *live* while its heartbeat was seen within ``lease_ttl`` (itself always is).
- A service is *free* when no holder was seen within ``lease_ttl`` (its lease has expired on
  the broker by then, since the broker counts from the renewal, which the member saw later),
  or its key was deleted.
- The fair share is ``ceil(services / live members)``. A member claims free services while it
  holds fewer than its fair share; when it already holds its share but holds no more than any
  other live member, it still claims one (an orphan is never left behind).
- A member holding more than its share, while another live member holds less, releases one
  service per round (stop, then delete the key), which the others then claim.
- A service left free for longer than a grace time (one renewal interval) is claimed by
  whoever sees it, whatever the shares: a member running another service file counts as live
  but never claims this file's services.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["MEMBER_PREFIX", "SERVICE_PREFIX", "FleetView", "Plan", "plan"]

MEMBER_PREFIX = "members."
"""Keys of the members' heartbeats: ``members.<member>``."""

SERVICE_PREFIX = "services."
"""Keys of the service leases: ``services.<service>``; the value is the holder's name."""


@dataclass(slots=True)
class _Sighting:
    holder: str | None  # None: the key was deleted or purged
    seen_at: float


@dataclass(slots=True)
class Plan:
    """What a member does this round.

    Attributes:
        claim: services to try to claim, in order (``create()`` decides).
        release: services to hand over (stop, then delete the lease).
    """

    claim: list[str] = field(default_factory=list)
    release: list[str] = field(default_factory=list)


class FleetView:
    """The latest change seen of each key of a fleet's bucket, with the local time it was seen.

    Args:
        me: this member's name.
        services: the services of the service file, in order.
        lease_ttl: seconds a lease (and a heartbeat) lives without renewal.
        now: when the member may start claiming (``since``): a service never seen, or left
            free before then, counts as free from then on.
    """

    def __init__(
        self, me: str, services: Sequence[str], lease_ttl: float, now: float = 0.0
    ) -> None:
        self.me = me
        self.services = list(services)
        self.lease_ttl = lease_ttl
        self.since = now
        self._members: dict[str, float] = {}
        self._leases: dict[str, _Sighting] = {}

    def saw(self, key: str, value: str | None, now: float) -> None:
        """Record a change of ``key`` seen at ``now``: a put of ``value``, or a delete (None)."""
        if key.startswith(MEMBER_PREFIX):
            member = key[len(MEMBER_PREFIX) :]
            if value is None:
                self._members.pop(member, None)
            else:
                self._members[member] = now
        elif key.startswith(SERVICE_PREFIX):
            self._leases[key[len(SERVICE_PREFIX) :]] = _Sighting(value, now)

    def taken(self, service: str, now: float) -> None:
        """A claim of ``service`` failed: someone holds it; remember so, unless already known."""
        seen = self._leases.get(service)
        if seen is None or seen.holder is None:
            self._leases[service] = _Sighting("?", now)

    def holder(self, service: str, now: float) -> str | None:
        """Who holds ``service`` as far as this member knows (``"?"``: someone unnamed)."""
        seen = self._leases.get(service)
        if seen is None or seen.holder is None or now - seen.seen_at > self.lease_ttl:
            return None
        return seen.holder

    def free_since(self, service: str, now: float) -> float | None:
        """Since when ``service`` has been free as far as this member knows (None: held)."""
        seen = self._leases.get(service)
        if seen is None:
            return self.since
        if seen.holder is None:
            return max(seen.seen_at, self.since)
        expired = seen.seen_at + self.lease_ttl
        return max(expired, self.since) if now > expired else None

    def live_members(self, now: float) -> set[str]:
        """The members whose heartbeat was seen within ``lease_ttl``, and this one."""
        live = {m for m, at in self._members.items() if now - at <= self.lease_ttl}
        live.add(self.me)
        return live

    def holdings(self, now: float, mine: Iterable[str]) -> dict[str, int]:
        """How many services each live member holds (this one: ``mine``)."""
        counts = dict.fromkeys(self.live_members(now), 0)
        held = set(mine)
        counts[self.me] = len(held)
        for service in self.services:
            who = self.holder(service, now)
            if service not in held and who is not None and who in counts and who != self.me:
                counts[who] += 1
        return counts

    def next_change(self, now: float) -> float | None:
        """When the next sighting goes stale (a lease or a heartbeat expires), if ever."""
        times = [s.seen_at for s in self._leases.values() if s.holder is not None]
        times.extend(self._members.values())
        later = [at + self.lease_ttl for at in times if at + self.lease_ttl > now]
        return min(later, default=None)


def plan(view: FleetView, mine: Iterable[str], now: float, grace: float = math.inf) -> Plan:
    """Decide the claims and releases of one round (see the module's rules).

    Args:
        view: what this member knows of the bucket.
        mine: the services this member holds.
        now: the local time, as the view's.
        grace: a service free for this long is claimed whatever the shares (members that
            run other service files, and so never claim it, may make the shares look full).

    Returns:
        The services to claim and to release.
    """
    held = set(mine)
    counts = view.holdings(now, held)
    if not view.services:
        return Plan()
    fair = math.ceil(len(view.services) / len(counts))
    mine_n = counts[view.me]
    others = [n for m, n in counts.items() if m != view.me]
    if mine_n > fair and any(n < fair for n in others):
        return Plan(release=[_order(view.me, sorted(held))[-1]])
    free = [s for s in view.services if s not in held and view.holder(s, now) is None]
    want = fair - mine_n
    if want <= 0 and free and all(mine_n <= n for n in others):
        want = 1
    claim = _order(view.me, free)[: max(want, 0)]
    for service in free:
        since = view.free_since(service, now)
        if service not in claim and since is not None and now - since >= grace:
            claim.append(service)  # an orphan: nobody else took it in time
    return Plan(claim=claim)


def _order(me: str, services: list[str]) -> list[str]:
    """``services`` in an order of this member's own, so members contend for different ones."""
    return sorted(services, key=lambda s: hashlib.blake2s(f"{me}\0{s}".encode()).digest())
