"""The fleet's decisions, without a broker: who is live, what is free, what to claim or release."""

from __future__ import annotations

from bgws.fleet_plan import FleetView, plan

SERVICES = [f"s{i}" for i in range(6)]


def view(me: str = "a", ttl: float = 2.0) -> FleetView:
    return FleetView(me, SERVICES, ttl)


def test_a_lone_member_claims_every_free_service() -> None:
    """With no other member seen, the fair share is every service."""
    assert sorted(plan(view(), [], 0.0).claim) == SERVICES


def test_members_take_a_fair_share_each() -> None:
    """Three live members: each claims ceil(6/3) = 2, members prefer different services."""
    claims = []
    for me in "abc":
        v = view(me)
        for other in "abc":
            v.saw(f"members.{other}", "1", 0.0)
        claims.append(plan(v, [], 0.0).claim)
    assert [len(c) for c in claims] == [2, 2, 2]
    assert len({s for c in claims for s in c}) > 2  # not all after the same two


def test_a_member_at_its_share_leaves_free_services_to_the_less_loaded() -> None:
    """Holding the fair share while another holds fewer: no claim."""
    v = view()
    v.saw("members.b", "1", 0.0)
    v.saw("services.s3", "b", 0.0)
    assert plan(v, ["s0", "s1", "s2"], 0.0).claim == []


def test_an_orphan_is_taken_by_the_least_loaded_member_even_over_its_share() -> None:
    """Free services beyond the fair share still go to the member holding the fewest."""
    v = view()
    v.saw("members.b", "1", 0.0)
    v.saw("members.c", "1", 0.0)
    for s in ("s2", "s3", "s4", "s5"):
        v.saw(f"services.{s}", "b" if s < "s4" else "c", 0.0)
    v.saw("services.s5", None, 0.1)  # c handed s5 over: counts a 2, b 2, c 1
    assert plan(v, ["s0", "s1"], 0.2).claim == []  # c is the least loaded: c takes it
    v.saw("services.s4", None, 0.2)  # c handed s4 over too: a 2, b 2, c 0
    assert plan(v, ["s0", "s1"], 0.3).claim == []


def test_a_service_free_past_the_grace_time_is_claimed_whatever_the_shares() -> None:
    """A live member that never claims (another service file) cannot strand a service."""
    v = view()
    v.saw("members.b", "1", 0.0)
    v.saw("members.c", "1", 0.0)  # runs another file: never claims these services
    for s in ("s2", "s3", "s4"):
        v.saw(f"services.{s}", "b", 0.0)
    v.saw("services.s5", None, 1.0)
    assert plan(v, ["s0", "s1"], 1.2, grace=0.5).claim == []
    assert plan(v, ["s0", "s1"], 1.5, grace=0.5).claim == ["s5"]


def test_a_lease_not_renewed_for_lease_ttl_is_free_and_its_member_gone() -> None:
    """A member's heartbeat and leases go stale lease_ttl after they were last seen."""
    v = view(ttl=2.0)
    v.saw("members.b", "1", 0.0)
    for s in SERVICES[3:]:
        v.saw(f"services.{s}", "b", 0.1)
    mine = SERVICES[:3]
    assert plan(v, mine, 2.0).claim == []
    assert v.next_change(2.0) == 2.1
    assert v.live_members(2.05) == {"a"}
    assert sorted(plan(v, mine, 2.11).claim) == SERVICES[3:]


def test_a_member_over_its_share_hands_one_over_when_another_joins() -> None:
    """A member holding all six releases one per round once a second member is live."""
    v = view()
    v.saw("members.b", "1", 0.0)
    decided = plan(v, SERVICES, 0.0)
    assert len(decided.release) == 1
    assert decided.claim == []
    assert plan(v, SERVICES[:3], 0.0).release == []


def test_a_refused_claim_marks_the_service_taken_by_someone() -> None:
    """After create() is refused, the service is not proposed again until it goes stale."""
    v = view()
    v.taken("s0", 0.0)
    assert v.holder("s0", 0.0) == "?"
    assert "s0" not in plan(v, [], 0.0).claim
    assert "s0" in plan(v, [], 2.1).claim
