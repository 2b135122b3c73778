"""Multipath: which paths are equally good (ECMP-style), and how calls are spread over them."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from agentmesh.bgp.messages import AgentAttributes, Health
from agentmesh.rib.decision import Path
from agentmesh.rib.rib import Rib
from agentmesh.speaker.multipath import PathChooser, Strategy, health_weight
from tests.support.routes import E1, E2, I1, I2, announce, attrs, make_rib


def three_origins() -> Rib:
    rib = make_rib(peers=(E1, E2, I1, I2))
    announce(rib, E1, ["a.x"], attrs(65001, next_hop="192.0.2.1:1"))
    announce(rib, E2, ["a.x"], attrs(65002, next_hop="192.0.2.2:1"))
    announce(rib, I1, ["a.x"], attrs(65003, next_hop="10.0.0.2:1"))  # iBGP: not equal (eBGP wins)
    announce(rib, I2, ["a.x"], attrs(65004, 65005, next_hop="10.0.0.3:1"))  # longer
    return rib


def test_only_paths_equal_through_the_med_and_ebgp_steps_share_the_load() -> None:
    rib = three_origins()
    found = rib.lookup_paths("a.x", 4)
    assert found is not None
    entry, paths = found
    assert entry == "a.x" and [p.attrs.next_hop for p in paths] == ["192.0.2.1:1", "192.0.2.2:1"]
    assert rib.lookup_paths("a.x", 1) == ("a.x", [paths[0]])
    assert rib.lookup_paths("nothing.here", 4) is None


def test_a_different_med_makes_paths_unequal() -> None:
    rib = make_rib(peers=(E1, E2))
    announce(rib, E1, ["a.x"], attrs(65001, next_hop="192.0.2.1:1", med=0))
    announce(rib, E2, ["a.x"], attrs(65002, next_hop="192.0.2.2:1", med=5))
    found = rib.lookup_paths("a.x", 4)
    assert found is not None and len(found[1]) == 1


def test_a_med_tolerance_lets_paths_with_close_meds_share_the_load() -> None:
    # Health MEDs of two similar origins differ by a point or two (docs/health.md).
    rib = make_rib(peers=(E1, E2, I1))
    announce(rib, E1, ["a.x"], attrs(65001, next_hop="192.0.2.1:1", med=10))
    announce(rib, E2, ["a.x"], attrs(65002, next_hop="192.0.2.2:1", med=12))
    announce(rib, I1, ["a.x"], attrs(65003, next_hop="10.0.0.2:1", med=10))  # iBGP: still not equal
    rib.med_tolerance = 2
    found = rib.lookup_paths("a.x", 4)
    assert found is not None and [p.attrs.next_hop for p in found[1]] == ["192.0.2.1:1", "192.0.2.2:1"]
    rib.med_tolerance = 1
    found = rib.lookup_paths("a.x", 4)
    assert found is not None and [p.attrs.next_hop for p in found[1]] == ["192.0.2.1:1"]


def test_locally_originated_agents_are_served_here_alone() -> None:
    rib = make_rib(peers=(E1,))
    rib.originate(["a.x"], AgentAttributes())
    announce(rib, E1, ["a.x"], attrs(65001))
    found = rib.lookup_paths("a.x", 4)
    assert found is not None and [p.source.local for p in found[1]] == [True]


def paths(rib: Rib) -> list[Path]:
    found = rib.lookup_paths("a.x", 4)
    assert found is not None
    return found[1]


def test_round_robin_takes_each_path_in_turn_and_keeps_the_others_as_fallbacks() -> None:
    candidates = paths(three_origins())
    chooser = PathChooser(Strategy.ROUND_ROBIN)
    orders = [chooser.order("a.x", candidates) for _ in range(4)]
    assert [order[0] for order in orders] == [candidates[0], candidates[1], candidates[0], candidates[1]]
    assert all(sorted(map(id, order)) == sorted(map(id, candidates)) for order in orders)


def test_least_outstanding_avoids_the_busy_next_hop() -> None:
    candidates = paths(three_origins())
    chooser = PathChooser(Strategy.LEAST_OUTSTANDING)
    chooser.started(candidates[0].attrs.next_hop)
    assert chooser.order("a.x", candidates)[0] is candidates[1]
    chooser.finished(candidates[0].attrs.next_hop)
    assert chooser.outstanding == Counter()


@pytest.mark.parametrize("strategy", [Strategy.POWER_OF_TWO, Strategy.WEIGHTED_HEALTH])
def test_random_strategies_spread_calls_evenly_over_equal_paths(strategy: Strategy) -> None:
    candidates = paths(three_origins())
    chooser = PathChooser(strategy, random.Random(7))
    picks = Counter(chooser.order("a.x", candidates)[0].attrs.next_hop for _ in range(2000))
    assert set(picks) == {"192.0.2.1:1", "192.0.2.2:1"}
    assert all(800 <= n <= 1200 for n in picks.values()), picks


def test_weighted_health_gives_a_degraded_origin_a_smaller_share() -> None:
    rib = make_rib(peers=(E1, E2))
    slow = AgentAttributes(health=Health(latency_ms=900.0, error_rate=0.2))
    announce(rib, E1, ["a.x"], attrs(65001, next_hop="192.0.2.1:1"))
    announce(rib, E2, ["a.x"], attrs(65002, next_hop="192.0.2.2:1", agent=slow))
    chooser = PathChooser(Strategy.WEIGHTED_HEALTH, random.Random(3))
    picks = Counter(chooser.order("a.x", paths(rib))[0].attrs.next_hop for _ in range(2000))
    share = picks["192.0.2.2:1"] / 2000
    expected = health_weight(slow.health) / (1 + health_weight(slow.health))
    assert abs(share - expected) < 0.03, (share, expected)
