"""RFC 4271 §9.1.2 (and RFC 4456 §9) decision process: each step, its typed reason, and order independence.

Each step test builds two paths that tie on every earlier step and differ only at the step under
test, then checks `decide()` picks the right one, in either order, with that step as the reason. The
property tests check the best path depends on nothing but the candidates: not their order in a list,
and not the order in which a `Rib` received them from its neighbours.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmesh.bgp.messages import Origin, PathAttributes, Update
from agentmesh.rib.attributes import imported
from agentmesh.rib.decision import DecisionReason, Path, Source, decide, make_path, why
from agentmesh.rib.rib import LOCAL, Rib
from tests.support.routes import ASN, ROUTER_ID, SELF, attrs

PEER = Source("192.0.2.9:179", 65001, router_id=9, internal=False)


def path(attributes: PathAttributes, source: Source = PEER) -> Path:
    return make_path(attributes, source)


def ebgp(key: str = "192.0.2.9:179", router_id: int = 9) -> Source:
    return Source(key, 65001, router_id, internal=False)


def ibgp(key: str = "192.0.2.9:179", router_id: int = 9) -> Source:
    return Source(key, ASN, router_id, internal=True)


#: (better, worse, reason): the two paths tie on every step before `reason`.
STEPS = [
    pytest.param(
        path(attrs(65001, local_pref=200), ibgp()),
        path(attrs(65001), ibgp()),
        DecisionReason.LOCAL_PREF,
        id="local-pref-200-over-absent",
    ),
    pytest.param(
        path(attrs(65001), ibgp()),
        path(attrs(65001, local_pref=50), ibgp()),
        DecisionReason.LOCAL_PREF,
        id="local-pref-absent-counts-as-100",
    ),
    pytest.param(
        # Local origination outranks a shorter AS_PATH: step 2 comes before step 3.
        path(attrs(65001, 65002), Source(LOCAL, ASN, 9, internal=True, local=True)),
        path(attrs(65001), Source(LOCAL, ASN, 9, internal=True, local=False)),
        DecisionReason.LOCALLY_ORIGINATED,
        id="locally-originated",
    ),
    pytest.param(
        path(attrs(65001), ebgp()),
        path(attrs(65001, 65002), ebgp()),
        DecisionReason.AS_PATH_LENGTH,
        id="shortest-as-path",
    ),
    pytest.param(
        path(attrs(65001, origin=Origin.IGP)),
        path(attrs(65001, origin=Origin.EGP)),
        DecisionReason.ORIGIN,
        id="origin-igp-over-egp",
    ),
    pytest.param(
        path(attrs(65001, origin=Origin.EGP)),
        path(attrs(65001, origin=Origin.INCOMPLETE)),
        DecisionReason.ORIGIN,
        id="origin-egp-over-incomplete",
    ),
    pytest.param(
        path(attrs(65001, med=10)),
        path(attrs(65001, med=20)),
        DecisionReason.MED,
        id="lowest-med",
    ),
    pytest.param(
        path(attrs(65001)),
        path(attrs(65001, med=5)),
        DecisionReason.MED,
        id="med-absent-counts-as-0",
    ),
    pytest.param(
        # Always-compare-MED: paths from different neighbouring ASes are compared too.
        path(attrs(65003, med=10), Source("192.0.2.9:179", 65003, 9, internal=False)),
        path(attrs(65001, med=20), ebgp()),
        DecisionReason.MED,
        id="med-compared-across-neighbouring-ases",
    ),
    pytest.param(
        path(attrs(65001), ebgp()),
        path(attrs(65001), ibgp()),
        DecisionReason.EBGP_OVER_IBGP,
        id="ebgp-over-ibgp",
    ),
    pytest.param(
        path(attrs(65001), ibgp()),
        path(attrs(65001, cluster_list=(7,)), ibgp()),
        DecisionReason.CLUSTER_LIST_LENGTH,
        id="shortest-cluster-list",
    ),
    pytest.param(
        path(attrs(65001), ebgp(router_id=1)),
        path(attrs(65001), ebgp(router_id=2)),
        DecisionReason.ROUTER_ID,
        id="lowest-router-id",
    ),
    pytest.param(
        path(attrs(65001, originator_id=1), ibgp(router_id=5)),
        path(attrs(65001, originator_id=2), ibgp(router_id=5)),
        DecisionReason.ROUTER_ID,
        id="lowest-originator-id",
    ),
    pytest.param(
        # RFC 4456 §9: ORIGINATOR_ID stands in for the router id of the sender.
        path(attrs(65001, originator_id=1), ibgp(router_id=5)),
        path(attrs(65001), ibgp(router_id=2)),
        DecisionReason.ROUTER_ID,
        id="originator-id-replaces-router-id",
    ),
    pytest.param(
        path(attrs(65001), ebgp("127.0.0.2:1")),
        path(attrs(65001), ebgp("127.0.0.10:1")),
        DecisionReason.PEER_ADDRESS,
        id="lowest-peer-address-numeric",
    ),
    pytest.param(
        path(attrs(65001), ebgp("127.0.0.2:179")),
        path(attrs(65001), ebgp("127.0.0.2:1790")),
        DecisionReason.PEER_ADDRESS,
        id="same-host-lowest-port",
    ),
]


@pytest.mark.parametrize(("better", "worse", "reason"), STEPS)
def test_each_step_picks_the_right_path_with_its_reason(
    better: Path, worse: Path, reason: DecisionReason
) -> None:
    for candidates in ([better, worse], [worse, better]):
        decision = decide(candidates)
        assert decision is not None
        assert decision.best is better
        assert decision.reason is reason
        assert decision.ranked == (better, worse)
    assert why(better, worse) is reason


def test_a_single_candidate_is_only_path() -> None:
    only = path(attrs(65001))
    decision = decide([only])
    assert decision is not None
    assert (decision.best, decision.reason, decision.ranked) == (only, DecisionReason.ONLY_PATH, (only,))


def test_no_candidates_is_no_decision() -> None:
    assert decide([]) is None


def test_ranked_lists_every_candidate_best_first() -> None:
    # Each path loses to the previous one at a later step, so the order is fully determined.
    expected = [
        path(attrs(65001, 65002, 65003, local_pref=300), ibgp("10.0.0.9:1")),
        path(attrs(65001, local_pref=200), ibgp("10.0.0.8:1")),
        path(attrs(65001, 65002), ebgp("192.0.2.7:1")),
        path(attrs(65001, 65002, origin=Origin.EGP), ebgp("192.0.2.6:1")),
        path(attrs(65001, 65002, origin=Origin.EGP, med=10), ebgp("192.0.2.5:1")),
        path(attrs(65001, 65002, origin=Origin.EGP, med=10), ibgp("10.0.0.4:1", router_id=1)),
        path(attrs(65001, 65002, origin=Origin.EGP, med=10), ibgp("10.0.0.3:1", router_id=2)),
        path(attrs(65001, 65002, origin=Origin.EGP, med=10), ibgp("10.0.0.10:1", router_id=3)),
        path(attrs(65001, 65002, origin=Origin.EGP, med=10), ibgp("10.0.0.11:1", router_id=3)),
    ]
    shuffled = expected[:]
    random.Random(4271).shuffle(shuffled)
    decision = decide(shuffled)
    assert decision is not None
    assert decision.ranked == tuple(expected)
    assert decision.best is expected[0]
    assert decision.reason is DecisionReason.LOCAL_PREF


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("127.0.0.2:1", "127.0.0.10:1"),  # numeric, not string order ("127.0.0.10" < "127.0.0.2")
        ("9.0.0.1:179", "10.0.0.1:179"),
        ("127.0.0.2:2", "127.0.0.2:10"),  # port numeric too
        ("255.255.255.255:1", "[::1]:1"),  # IPv4 before IPv6
        ("[2001:db8::2]:1", "[2001:db8::10]:1"),
        ("[::1]:1", "peer-a.example:1"),  # addresses before host names
    ],
)
def test_address_rank_orders_numerically(lower: str, higher: str) -> None:
    def rank(key: str) -> tuple[int, bytes, str, int]:
        return Source(key, 65001, 1, internal=False).address_rank()

    assert rank(lower) < rank(higher)


# -- property: the best path does not depend on arrival order ---------------------------------------

PEER_ASNS = (65001, 65002, 65003)
ORIGINS = tuple(Origin)


@dataclass(frozen=True)
class Candidate:
    key: str
    asn: int
    router_id: int
    attrs: PathAttributes

    @property
    def internal(self) -> bool:
        return self.asn == ASN

    def source(self) -> Source:
        return Source(self.key, self.asn, self.router_id, internal=self.internal)


def _key(host: int, port: int, v6: bool) -> str:
    return f"[2001:db8::{host:x}]:{port}" if v6 else f"10.0.{host // 256}.{host % 256}:{port}"


def _address_key(address: tuple[int, int, bool]) -> str:
    return _key(*address)


@st.composite
def attribute_sets(draw: st.DrawFn) -> PathAttributes:
    # Small domains make ties common, so the later steps really get exercised.
    return PathAttributes(
        origin=draw(st.sampled_from(ORIGINS)),
        as_path=tuple(draw(st.lists(st.sampled_from(PEER_ASNS), max_size=3))),
        next_hop="192.0.2.100:179",
        med=draw(st.sampled_from([None, 0, 10, 20])),
        local_pref=draw(st.sampled_from([None, 50, 100, 200])),
        originator_id=draw(st.sampled_from([None, 1, 2, 3])),
        cluster_list=tuple(draw(st.lists(st.sampled_from([1, 2]), max_size=2))),
    )


@st.composite
def candidate_lists(draw: st.DrawFn) -> list[Candidate]:
    addresses = draw(
        st.lists(
            st.tuples(st.integers(1, 300), st.sampled_from([1, 2, 10, 179]), st.booleans()),
            min_size=1,
            max_size=6,
            unique_by=_address_key,
        )
    )
    return [
        Candidate(
            key=_key(*address),
            asn=draw(st.sampled_from((ASN, *PEER_ASNS))),
            router_id=draw(st.integers(1, 4)),
            attrs=draw(attribute_sets()),
        )
        for address in addresses
    ]


def _rib_with_peers(candidates: list[Candidate]) -> Rib:
    rib = Rib(ASN, ROUTER_ID, SELF, min_advertisement_interval=0.0)
    for candidate in candidates:
        rib.add_peer(candidate.key, candidate.asn, candidate.router_id)
    return rib


def _expected(candidates: list[Candidate], local: PathAttributes | None = None) -> Path:
    """The best path as the Rib should see it: LOCAL_PREF from eBGP peers is ignored on receipt."""
    paths = [make_path(imported(c.attrs, internal=c.internal), c.source()) for c in candidates]
    if local is not None:
        paths.append(make_path(local, Source(LOCAL, ASN, ROUTER_ID, internal=True, local=True)))
    decision = decide(paths)
    assert decision is not None
    return decision.best


@settings(max_examples=200, deadline=None)
@given(candidates=candidate_lists(), data=st.data())
def test_best_path_is_independent_of_candidate_order(
    candidates: list[Candidate], data: st.DataObject
) -> None:
    paths = [make_path(c.attrs, c.source()) for c in candidates]
    reference = decide(paths)
    assert reference is not None
    for _ in range(3):
        permuted = data.draw(st.permutations(paths))
        decision = decide(permuted)
        assert decision is not None
        assert decision.best is reference.best
        assert decision.reason is reference.reason
        assert decision.ranked == reference.ranked
    assert all(reference.best.rank <= p.rank for p in paths)


@settings(max_examples=200, deadline=None)
@given(
    candidates=candidate_lists(),
    data=st.data(),
    local_med=st.one_of(st.none(), st.just(-1), st.sampled_from([0, 10, 20])),
)
def test_rib_best_path_is_independent_of_arrival_order(
    candidates: list[Candidate], data: st.DataObject, local_med: int | None
) -> None:
    """Candidates fed one by one from distinct neighbours, in random order, give decide()'s best."""
    # local_med: None = no local candidate, -1 = a local candidate without MED.
    local = None
    if local_med is not None:
        med = None if local_med < 0 else local_med
        local = PathAttributes(origin=Origin.IGP, as_path=(), next_hop=SELF, med=med)
    rib = _rib_with_peers(candidates)
    order: list[Candidate | None] = [*candidates, *([None] if local is not None else [])]
    for candidate in data.draw(st.permutations(order)):
        if candidate is None:
            assert local is not None
            rib.originate(["acme.echo"], local.agent, med=local.med)
        else:
            received = rib.receive(
                candidate.key, Update(attributes=candidate.attrs, announced=("acme.echo",)), now=0.0
            )
            assert received.error is None and received.dropped is None
    expected = _expected(candidates, local)
    best = rib.best("acme.echo")
    assert best is not None
    assert best.rank == expected.rank
    assert best.source.key == expected.source.key
    explained = rib.explain("acme.echo")
    assert explained is not None and explained.best is best


@settings(max_examples=200, deadline=None)
@given(candidates=candidate_lists(), data=st.data())
def test_rib_best_path_survives_replacements_and_withdrawals_in_any_order(
    candidates: list[Candidate], data: st.DataObject
) -> None:
    """Each neighbour first announces a decoy (and maybe withdraws it), then its real path.

    The scripts of the neighbours are interleaved at random: implicit withdraws and withdrawals of
    the current best make the Rib look at all candidates again, and it must still end at the minimum.
    """
    rib = _rib_with_peers(candidates)
    scripts: dict[int, list[Update]] = {}
    for i, candidate in enumerate(candidates):
        script = [Update(attributes=data.draw(attribute_sets()), announced=("acme.echo",))]
        if data.draw(st.booleans()):
            script.append(Update(withdrawn=("acme.echo",)))
        script.append(Update(attributes=candidate.attrs, announced=("acme.echo",)))
        scripts[i] = script
    tokens = [i for i, script in scripts.items() for _ in script]
    for i in data.draw(st.permutations(tokens)):
        received = rib.receive(candidates[i].key, scripts[i].pop(0), now=0.0)
        assert received.error is None
    expected = _expected(candidates)
    best = rib.best("acme.echo")
    assert best is not None
    assert (best.rank, best.source.key) == (expected.rank, expected.source.key)
