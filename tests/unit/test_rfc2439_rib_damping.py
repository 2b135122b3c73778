"""Route flap damping inside the RIB (RFC 2439): a flapping route is held back, then reused on time.

Sans-IO with a fake clock: time is only the `now` argument. The node is AS 65000 with eBGP neighbours
E1 and E2 and iBGP neighbour I1 (see `tests.support.routes`).
"""

from __future__ import annotations

import math

import pytest

from agentmesh.bgp.messages import Update
from agentmesh.rib.damping import Damping, DampingSettings
from agentmesh.rib.rib import Rib
from tests.support.routes import ASN, E1, E2, I1, NEIGHBOURS, ROUTER_ID, SELF, announced, attrs

FAST = DampingSettings(
    half_life=10.0, reuse_threshold=750.0, suppress_threshold=2000.0, max_suppress_time=60.0
)


def damped_rib(settings: DampingSettings = FAST) -> Rib:
    rib = Rib(ASN, ROUTER_ID, SELF, 0.0, damping=Damping(settings))
    for key in (E1, E2, I1):
        asn, router_id = NEIGHBOURS[key]
        rib.add_peer(key, asn, router_id)
        rib.peer_up(key, router_id)
        rib.take_updates(key, 0.0)
    return rib


def flap(rib: Rib, peer: str, name: str, times: int, start: float) -> float:
    """Announce and withdraw `name` `times` times, one second apart; returns the time after."""
    now = start
    for _ in range(times):
        rib.receive(peer, Update(attributes=attrs(65001), announced=(name,)), now)
        rib.receive(peer, Update(withdrawn=(name,)), now + 0.5)
        now += 1.0
    return now


def test_a_flapping_route_is_suppressed_then_reused_when_its_penalty_decays() -> None:
    rib = damped_rib()
    now = flap(rib, E1, "a.x", 3, 0.0)  # three withdrawals in 3 s: past the suppress threshold
    rib.receive(E1, Update(attributes=attrs(65001), announced=("a.x",)), now)
    assert rib.best("a.x") is None  # announced, but held back
    assert dict(rib.suppressed(E1)).keys() == {"a.x"} and rib.suppressed_count() == 1
    rib.take_updates(E2, now)
    assert announced(rib.take_updates(E2, now + 0.1)) == {}
    reuse_at = rib.next_deadline(now)
    assert reuse_at is not None and reuse_at > now
    damping = rib.damping
    assert damping is not None
    # The configured half-life decides when: the penalty falls to the reuse threshold then.
    penalty = damping.penalty(E1, "a.x", now)
    assert reuse_at == pytest.approx(now + FAST.half_life * math.log2(penalty / 750.0), abs=1e-3)
    assert rib.reuse(reuse_at - 0.01) == 0 and rib.best("a.x") is None
    assert rib.reuse(reuse_at) == 1
    best = rib.best("a.x")
    assert best is not None and best.source.key == E1 and rib.suppressed_count() == 0
    assert set(announced(rib.take_updates(E2, reuse_at))) == {"a.x"}


def test_a_suppressed_routes_withdrawal_forgets_it() -> None:
    rib = damped_rib()
    now = flap(rib, E1, "a.x", 3, 0.0)
    rib.receive(E1, Update(attributes=attrs(65001), announced=("a.x",)), now)
    rib.receive(E1, Update(withdrawn=("a.x",)), now + 1)
    assert rib.suppressed_count() == 0
    assert rib.reuse(now + 1000) == 0 and rib.best("a.x") is None


def test_a_stable_route_and_internal_routes_are_never_damped() -> None:
    rib = damped_rib()
    rib.receive(E1, Update(attributes=attrs(65001), announced=("stable.x",)), 0.0)
    flap(rib, I1, "inside.x", 5, 0.0)  # iBGP: RFC 2439 damps routes from external peers only
    rib.receive(I1, Update(attributes=attrs(), announced=("inside.x",)), 10.0)
    assert rib.best("stable.x") is not None and rib.best("inside.x") is not None
    assert rib.suppressed_count() == 0


def test_one_flapping_route_does_not_hold_back_another() -> None:
    rib = damped_rib()
    now = flap(rib, E1, "a.x", 3, 0.0)
    rib.receive(E1, Update(attributes=attrs(65001), announced=("a.x", "b.x")), now)
    assert rib.best("a.x") is None and rib.best("b.x") is not None


def test_the_ceiling_bounds_suppression_to_max_suppress_time() -> None:
    rib = damped_rib()
    now = flap(rib, E1, "a.x", 30, 0.0)  # far past the ceiling
    rib.receive(E1, Update(attributes=attrs(65001), announced=("a.x",)), now)
    reuse_at = rib.next_deadline(now)
    assert reuse_at is not None and reuse_at <= now + FAST.max_suppress_time + 1e-6


def test_a_session_that_keeps_dropping_flaps_every_route_it_carried() -> None:
    rib = damped_rib()
    now = 0.0
    for _ in range(3):  # three quick session resets, each taking a.x with it
        rib.receive(E1, Update(attributes=attrs(65001), announced=("a.x",)), now)
        rib.peer_down(E1, now=now + 0.5)
        rib.peer_up(E1, NEIGHBOURS[E1][1])
        now += 1.0
    rib.receive(E1, Update(attributes=attrs(65001), announced=("a.x",)), now)
    assert rib.best("a.x") is None and rib.suppressed_count(E1) == 1
