"""Propagation through the RIBs (RFC 4271 §5.1, §9.1.3, §9.2; RFC 1997; RFC 4724 §2; DESIGN §4.4-§4.5).

The node is AS 65000 with two eBGP neighbours (E1 in AS 65001, E2 in AS 65002) and two iBGP
neighbours (I1, I2); see `tests.support.routes`. Time is only ever the `now` argument.
"""

from __future__ import annotations

import pytest

from agentmesh.bgp.messages import AgentAttributes, BackendProtocol, Origin, Update
from agentmesh.rib import rib as rib_module
from agentmesh.rib.attributes import DEFAULT_LOCAL_PREF, NO_ADVERTISE, NO_EXPORT
from agentmesh.rib.decision import DecisionReason
from agentmesh.rib.rib import Drop, Rib
from tests.support.routes import (
    ASN,
    E1,
    E1_ASN,
    E2,
    E2_ASN,
    I1,
    I2,
    NEIGHBOURS,
    SELF,
    announce,
    announced,
    attrs,
    make_rib,
    take_all,
    withdraw,
    withdrawn,
)

NAME = "acme.weather.forecast"
AGENT = AgentAttributes(
    capabilities=("weather",), description="forecasts", backend_protocol=BackendProtocol.MASTRA, region="eu"
)


# -- export transforms ------------------------------------------------------------------------------


def test_ebgp_export_prepends_own_asn_and_sets_next_hop_to_self() -> None:
    rib = make_rib()
    announce(rib, E1, [NAME], attrs(E1_ASN, 65010, next_hop="192.0.2.1:179", capabilities=("weather",)))
    sent = announced(rib.take_updates(E2, 0.0))
    assert sent[NAME].as_path == (ASN, E1_ASN, 65010)
    assert sent[NAME].next_hop == SELF
    assert sent[NAME].agent.capabilities == ("weather",)


def test_locally_originated_route_to_ebgp_has_our_asn_next_hop_and_med() -> None:
    rib = make_rib()
    rib.originate([NAME], AGENT, med=7)
    sent = announced(rib.take_updates(E1, 0.0))[NAME]
    assert (sent.as_path, sent.next_hop, sent.origin, sent.med) == ((ASN,), SELF, Origin.IGP, 7)
    assert sent.agent == AGENT
    assert sent.local_pref is None


def test_local_pref_is_not_sent_over_ebgp_but_always_over_ibgp() -> None:
    rib = make_rib()
    announce(rib, I1, ["from.ibgp"], attrs(E1_ASN, local_pref=300))
    rib.originate(["local.agent"], AGENT)
    updates = take_all(rib, 0.0)
    to_e1 = announced(updates[E1])
    assert to_e1["from.ibgp"].local_pref is None
    assert to_e1["local.agent"].local_pref is None
    # iBGP: LOCAL_PREF is present, with the default when the route had none.
    assert announced(updates[I2])["local.agent"].local_pref == DEFAULT_LOCAL_PREF


def test_local_pref_received_over_ebgp_is_ignored_and_defaults_to_100() -> None:
    rib = make_rib()
    announce(rib, E1, [NAME], attrs(E1_ASN, 65010, local_pref=500))
    announce(rib, E2, [NAME], attrs(E2_ASN))
    best = rib.best(NAME)
    assert best is not None and best.source.key == E2
    decision = rib.explain(NAME)
    assert decision is not None and decision.reason is DecisionReason.AS_PATH_LENGTH
    from_e1 = dict(rib.adj_rib_in(E1))[NAME]
    assert from_e1.attrs.local_pref is None
    assert from_e1.rank[0] == -DEFAULT_LOCAL_PREF
    # LOCAL_PREF from an iBGP neighbour is honoured.
    announce(rib, I1, [NAME], attrs(E1_ASN, 65010, 65011, local_pref=150))
    best = rib.best(NAME)
    assert best is not None and best.source.key == I1
    assert best.attrs.local_pref == 150


def test_ebgp_learned_route_goes_to_ibgp_with_next_hop_unchanged_and_local_pref_100() -> None:
    rib = make_rib()
    announce(rib, E1, [NAME], attrs(E1_ASN, next_hop="192.0.2.1:179", med=30))
    sent = announced(rib.take_updates(I1, 0.0))[NAME]
    assert (sent.as_path, sent.next_hop, sent.local_pref, sent.med) == (
        (E1_ASN,),
        "192.0.2.1:179",
        DEFAULT_LOCAL_PREF,
        30,
    )


def test_ibgp_learned_routes_are_not_sent_to_ibgp_peers() -> None:
    rib = make_rib()
    announce(rib, I1, [NAME], attrs(E1_ASN))
    updates = take_all(rib, 0.0)
    assert updates[I2] == []
    assert updates[I1] == []
    assert NAME in announced(updates[E1])
    assert NAME in announced(updates[E2])


def test_a_route_is_never_sent_back_to_the_peer_it_came_from() -> None:
    rib = make_rib()
    announce(rib, E1, [NAME], attrs(E1_ASN))
    announce(rib, I1, ["other.agent"], attrs(E2_ASN))
    updates = take_all(rib, 0.0)
    assert set(announced(updates[E1])) == {"other.agent"}
    assert set(announced(updates[I1])) == {NAME}
    assert set(dict(rib.adj_rib_out(E1))) == {"other.agent"}


def test_no_export_goes_to_ibgp_peers_only() -> None:
    rib = make_rib()
    rib.originate(["local.agent"], AGENT, communities=(NO_EXPORT,))
    announce(rib, E1, ["learned.agent"], attrs(E1_ASN, communities=(NO_EXPORT, 65001 << 16 | 7)))
    updates = take_all(rib, 0.0)
    assert announced(updates[E2]) == {}
    assert "local.agent" not in announced(updates[E1])
    to_i1 = announced(updates[I1])
    assert set(to_i1) == {"local.agent", "learned.agent"}
    assert NO_EXPORT in to_i1["learned.agent"].communities


def test_no_advertise_goes_to_nobody() -> None:
    rib = make_rib()
    rib.originate(["local.agent"], AGENT, communities=(NO_ADVERTISE,))
    announce(rib, E1, ["learned.agent"], attrs(E1_ASN, communities=(NO_ADVERTISE,)))
    assert take_all(rib, 0.0) == {key: [] for key in NEIGHBOURS}
    # ... but they are used locally.
    assert rib.best("local.agent") is not None and rib.best("learned.agent") is not None


def test_med_from_one_as_is_not_passed_to_another_as() -> None:
    rib = make_rib()
    announce(rib, E1, ["from.e1"], attrs(E1_ASN, med=50))
    announce(rib, I1, ["from.i1"], attrs(E2_ASN, med=60))
    rib.originate(["local.agent"], AGENT, med=70)
    updates = take_all(rib, 0.0)
    to_e2 = announced(updates[E2])
    assert to_e2["from.e1"].med is None
    assert to_e2["from.i1"].med is None
    assert to_e2["local.agent"].med == 70  # our own MED is ours to send
    assert announced(updates[I2])["from.e1"].med == 50  # kept inside the AS


# -- loops, implicit withdraw, withdrawal ---------------------------------------------------------


def test_as_path_holding_own_asn_is_dropped_and_counted() -> None:
    rib = make_rib()
    announce(rib, E1, ["acme.echo"], attrs(E1_ASN))
    received = rib.receive(
        E1, Update(attributes=attrs(E1_ASN, ASN, 65010), announced=("acme.echo", "b")), 0.0
    )
    assert received.error is None
    assert received.dropped is not None
    assert received.dropped.reason is Drop.AS_PATH_LOOP
    assert received.dropped.names == ("acme.echo", "b")
    assert rib.loops_dropped == 2
    # The looped announcement replaces (so withdraws) what the peer had sent for the name before.
    assert rib.best("acme.echo") is None and rib.best("b") is None
    assert dict(rib.adj_rib_in(E1)) == {}
    rib.receive(I1, Update(attributes=attrs(E1_ASN, ASN), announced=("c",)), 0.0)
    assert rib.loops_dropped == 3
    assert rib.best("c") is None


def test_implicit_withdraw_replaces_the_route_of_the_same_peer() -> None:
    rib = make_rib()
    announce(rib, E1, [NAME], attrs(E1_ASN, med=10))
    take_all(rib, 0.0)
    announce(rib, E1, [NAME], attrs(E1_ASN, 65010, med=20))
    best = rib.best(NAME)
    assert best is not None and best.attrs.as_path == (E1_ASN, 65010)
    assert list(dict(rib.adj_rib_in(E1))) == [NAME]
    assert rib.counts().adj_rib_in == 1
    updates = rib.take_updates(I1, 0.0)
    assert withdrawn(updates) == []
    assert announced(updates)[NAME].as_path == (E1_ASN, 65010)


def test_implicit_withdraw_of_the_best_falls_back_to_a_better_candidate() -> None:
    rib = make_rib()
    announce(rib, E1, [NAME], attrs(E1_ASN))
    announce(rib, E2, [NAME], attrs(E2_ASN, 65010))
    take_all(rib, 0.0)
    announce(rib, E1, [NAME], attrs(E1_ASN, 65010, 65011))  # E1's path gets worse than E2's
    best = rib.best(NAME)
    assert best is not None and best.source.key == E2
    assert announced(rib.take_updates(I1, 0.0))[NAME].as_path == (E2_ASN, 65010)


def test_a_withdrawal_follows_when_the_best_path_disappears() -> None:
    rib = make_rib()
    announce(rib, E1, [NAME, "acme.echo"], attrs(E1_ASN))
    take_all(rib, 0.0)
    withdraw(rib, E1, [NAME])
    assert rib.best(NAME) is None
    updates = take_all(rib, 0.0)
    for key in (E2, I1, I2):
        assert updates[key] == [Update(withdrawn=(NAME,))]
        assert dict(rib.adj_rib_out(key)).keys() == {"acme.echo"}
    assert updates[E1] == []


def test_losing_the_best_path_to_an_alternative_announces_the_alternative() -> None:
    rib = make_rib()
    announce(rib, E1, [NAME], attrs(E1_ASN))
    announce(rib, E2, [NAME], attrs(E2_ASN, 65010))
    take_all(rib, 0.0)
    withdraw(rib, E1, [NAME])
    updates = rib.take_updates(I1, 0.0)
    assert withdrawn(updates) == []
    assert announced(updates)[NAME].as_path == (E2_ASN, 65010)


def test_withdrawing_a_name_that_was_never_advertised_sends_nothing() -> None:
    rib = make_rib()
    withdraw(rib, E1, ["never.seen"])
    announce(rib, E1, [NAME], attrs(E1_ASN, communities=(NO_ADVERTISE,)))
    withdraw(rib, E1, [NAME])
    assert take_all(rib, 0.0) == {key: [] for key in NEIGHBOURS}


# -- session events ---------------------------------------------------------------------------------


def test_peer_up_sends_the_full_table_then_end_of_rib() -> None:
    rib = make_rib(peers=[E1, I1])
    announce(rib, E1, ["a.one", "a.two"], attrs(E1_ASN))
    announce(rib, I1, ["b.one"], attrs(E2_ASN))
    rib.originate(["c.local", "c.agg.*"], AGENT)
    take_all(rib, 0.0)
    rib.add_peer(E2, E2_ASN, 0)
    assert rib.take_updates(E2, 0.0) == []  # not Established yet
    rib.peer_up(E2, NEIGHBOURS[E2][1])
    assert rib.has_pending(E2, 0.0)
    updates = rib.take_updates(E2, 0.0)
    assert updates[-1] == Update(end_of_rib=True)
    assert all(not u.end_of_rib for u in updates[:-1])
    assert set(announced(updates)) == {"a.one", "a.two", "b.one", "c.local", "c.agg.*"}
    assert withdrawn(updates) == []
    assert rib.take_updates(E2, 1.0) == []  # End-of-RIB once


def test_peer_up_sends_end_of_rib_only_after_the_whole_table() -> None:
    rib = make_rib(peers=[E1])
    names = [f"agent{i}" for i in range(10)]
    announce(rib, E1, names, attrs(E1_ASN))
    rib.add_peer(E2, E2_ASN, 0)
    rib.peer_up(E2, 1)
    first = rib.take_updates(E2, 0.0, max_names=4)
    assert not any(u.end_of_rib for u in first)
    rest = rib.take_updates(E2, 0.0)
    assert rest[-1] == Update(end_of_rib=True)
    assert set(announced(first)) | set(announced(rest)) == set(names)


def test_peer_up_with_an_empty_table_sends_only_end_of_rib() -> None:
    rib = make_rib(peers=[E1], up=False)
    rib.peer_up(E1, 1)
    assert rib.take_updates(E1, 0.0) == [Update(end_of_rib=True)]


def test_peer_down_flushes_its_routes_and_the_others_get_withdrawals() -> None:
    rib = make_rib()
    announce(rib, E1, ["a.one", "a.two"], attrs(E1_ASN))
    announce(rib, E1, ["shared"], attrs(E1_ASN))
    announce(rib, E2, ["shared"], attrs(E2_ASN, 65010))
    take_all(rib, 0.0)
    rib.peer_down(E1)
    assert rib.best("a.one") is None and rib.best("a.two") is None
    shared = rib.best("shared")
    assert shared is not None and shared.source.key == E2
    assert dict(rib.adj_rib_in(E1)) == {}
    assert dict(rib.adj_rib_out(E1)) == {}
    assert rib.counts().loc_rib == 1
    updates = take_all(rib, 0.0)
    assert updates[E1] == []
    for key in (I1, I2):
        assert sorted(withdrawn(updates[key])) == ["a.one", "a.two"]
        assert announced(updates[key])["shared"].as_path == (E2_ASN, 65010)
    # E2 had E1's path for "shared"; its own path is now the best, which is never sent back to it.
    assert sorted(withdrawn(updates[E2])) == ["a.one", "a.two", "shared"]
    assert announced(updates[E2]) == {}
    assert set(dict(rib.adj_rib_out(I1))) == {"shared"}


def test_a_peer_coming_back_gets_the_table_again() -> None:
    rib = make_rib()
    rib.originate([NAME], AGENT)
    take_all(rib, 0.0)
    rib.peer_down(E1)
    assert rib.take_updates(E1, 0.0) == []
    rib.peer_up(E1, NEIGHBOURS[E1][1])
    updates = rib.take_updates(E1, 0.0)
    assert set(announced(updates)) == {NAME}
    assert updates[-1] == Update(end_of_rib=True)


# -- interning and grouping ---------------------------------------------------------------------------


def test_equal_attribute_sets_are_interned_across_updates_and_peers() -> None:
    rib = make_rib(up=False)
    announce(rib, E1, ["a"], attrs(E1_ASN, med=5, capabilities=("x",)))
    announce(rib, E1, ["b"], attrs(E1_ASN, med=5, capabilities=("x",)))
    best_a, best_b = rib.best("a"), rib.best("b")
    assert best_a is not None and best_b is not None
    assert best_a.attrs is best_b.attrs
    assert best_a is best_b  # one Path per attribute set and source
    assert rib.counts().attribute_sets == 1
    # The same set from another peer shares the attributes, not the path.
    announce(rib, E2, ["c"], attrs(E1_ASN, med=5, capabilities=("x",)))
    best_c = rib.best("c")
    assert best_c is not None and best_c.attrs is best_a.attrs and best_c is not best_a
    # LOCAL_PREF from eBGP is dropped before interning, so this is the same set again.
    announce(rib, E2, ["d"], attrs(E1_ASN, med=5, capabilities=("x",), local_pref=900))
    best_d = rib.best("d")
    assert best_d is not None and best_d.attrs is best_a.attrs
    assert rib.counts().attribute_sets == 1
    announce(rib, E2, ["e"], attrs(E1_ASN, med=6))
    assert rib.counts().attribute_sets == 2
    assert rib.counts().loc_rib == 5 and rib.counts().adj_rib_in == 5


def test_a_thousand_names_with_one_attribute_set_go_in_one_update() -> None:
    rib = make_rib()
    names = [f"team{i}.agent{i}" for i in range(1000)]
    announce(rib, E1, names, attrs(E1_ASN))
    updates = rib.take_updates(E2, 0.0)
    assert len(updates) == 1
    assert list(updates[0].announced) == names


def test_names_are_grouped_by_exported_attribute_set() -> None:
    rib = make_rib()
    announce(rib, E1, [f"a{i}" for i in range(300)], attrs(E1_ASN, med=1))
    announce(rib, E1, [f"b{i}" for i in range(300)], attrs(E1_ASN, med=2))
    # To E2 the MED is stripped: both sets export as one.
    to_e2 = rib.take_updates(E2, 0.0)
    assert len(to_e2) == 1 and len(to_e2[0].announced) == 600
    # To I1 the MED is kept: two sets, two UPDATEs.
    to_i1 = rib.take_updates(I1, 0.0)
    assert sorted(len(u.announced) for u in to_i1) == [300, 300]


def test_updates_over_the_size_bound_are_split_under_it() -> None:
    rib = make_rib()
    # 2,500 names of 247 octets: about 617 KB, so at least three UPDATEs.
    names = [f"n{i:05d}." + "x" * 240 for i in range(2500)]
    assert all(len(n) == 247 for n in names)
    announce(rib, E1, names, attrs(E1_ASN))
    updates = rib.take_updates(E2, 0.0)
    assert len(updates) >= 3
    for update in updates:
        assert sum(len(n.encode()) for n in update.announced) <= rib_module.UPDATE_NAME_BYTES
    assert [n for u in updates for n in u.announced] == names
    assert len({id(u.attributes) for u in updates}) == 1


def test_withdrawals_over_the_size_bound_are_split_under_it() -> None:
    rib = make_rib()
    names = [f"n{i:05d}." + "x" * 240 for i in range(2500)]
    announce(rib, E1, names, attrs(E1_ASN))
    take_all(rib, 0.0)
    withdraw(rib, E1, names)
    updates = rib.take_updates(E2, 0.0)
    assert len(updates) >= 3
    for update in updates:
        assert sum(len(n.encode()) for n in update.withdrawn) <= rib_module.UPDATE_NAME_BYTES
    assert sorted(withdrawn(updates)) == names


# -- minimum advertisement interval and flaps ---------------------------------------------------------


def test_first_burst_is_immediate_then_the_next_waits_for_the_interval() -> None:
    rib = make_rib(interval=1.0)
    announce(rib, E1, ["a"], attrs(E1_ASN), now=0.0)
    assert set(announced(take_all(rib, 0.0)[E2])) == {"a"}
    announce(rib, E1, ["b"], attrs(E1_ASN), now=0.2)
    assert not rib.has_pending(E2, 0.2)
    assert take_all(rib, 0.2)[E2] == []
    assert rib.next_deadline() == pytest.approx(1.0)
    assert take_all(rib, 0.99)[E2] == []
    assert rib.has_pending(E2, 1.0)
    assert set(announced(take_all(rib, 1.0)[E2])) == {"b"}
    assert rib.next_deadline() is None


def test_withdrawals_are_sent_at_once_while_announcements_are_held() -> None:
    rib = make_rib(interval=1.0)
    announce(rib, E1, ["a"], attrs(E1_ASN), now=0.0)
    take_all(rib, 0.0)
    announce(rib, E1, ["b"], attrs(E1_ASN), now=0.3)
    withdraw(rib, E1, ["a"], now=0.3)
    assert rib.has_pending(E2, 0.3)
    assert take_all(rib, 0.3)[E2] == [Update(withdrawn=("a",))]
    deadline = rib.next_deadline()
    assert deadline is not None and deadline == pytest.approx(1.0)
    assert set(announced(take_all(rib, deadline)[E2])) == {"b"}


def test_withdrawals_are_listed_before_announcements() -> None:
    rib = make_rib(interval=1.0)
    announce(rib, E1, ["a"], attrs(E1_ASN), now=0.0)
    take_all(rib, 0.0)
    announce(rib, E1, ["b"], attrs(E1_ASN), now=2.0)
    withdraw(rib, E1, ["a"], now=2.0)
    updates = take_all(rib, 2.0)[E2]
    assert [u.withdrawn for u in updates] == [("a",), ()]
    assert updates[1].announced == ("b",)


@pytest.mark.parametrize("case", ["new-best-from-the-peer", "new-best-no-export", "new-best-ibgp-learned"])
def test_withdrawal_caused_by_an_unexportable_new_best_is_not_delayed(case: str) -> None:
    rib = make_rib(interval=1.0)
    if case == "new-best-from-the-peer":
        peer = E1
        announce(rib, E1, [NAME], attrs(E1_ASN, 65010, 65011))
        announce(rib, E2, [NAME], attrs(E2_ASN))
        loser = E2
    elif case == "new-best-no-export":
        peer = E2
        announce(rib, E1, [NAME], attrs(E1_ASN, 65010, communities=(NO_EXPORT,)))
        announce(rib, I1, [NAME], attrs(65010, local_pref=200))
        loser = I1
    else:
        peer = I2
        announce(rib, I1, [NAME], attrs(E1_ASN, 65010))
        announce(rib, E2, [NAME], attrs(E2_ASN))
        loser = E2
    assert NAME in announced(take_all(rib, 0.0)[peer])
    withdraw(rib, loser, [NAME], now=0.5)
    assert rib.best(NAME) is not None
    assert rib.take_updates(peer, 0.5) == [Update(withdrawn=(NAME,))]


@pytest.mark.parametrize("case", ["new-best-from-the-peer", "new-best-no-export", "new-best-ibgp-learned"])
def test_withdrawal_caused_by_an_unexportable_new_best_is_eventually_sent(case: str) -> None:
    rib = make_rib()
    if case == "new-best-from-the-peer":
        peer, winner, loser = E1, (E1, attrs(E1_ASN, 65010, 65011)), (E2, attrs(E2_ASN))
    elif case == "new-best-no-export":
        peer = E2
        winner, loser = (
            (E1, attrs(E1_ASN, 65010, communities=(NO_EXPORT,))),
            (I1, attrs(65010, local_pref=200)),
        )
    else:
        peer, winner, loser = I2, (I1, attrs(E1_ASN, 65010)), (E2, attrs(E2_ASN))
    announce(rib, winner[0], [NAME], winner[1])
    announce(rib, loser[0], [NAME], loser[1])
    assert NAME in announced(take_all(rib, 0.0)[peer])
    withdraw(rib, loser[0], [NAME])
    assert rib.take_updates(peer, 0.0) == [Update(withdrawn=(NAME,))]
    assert dict(rib.adj_rib_out(peer)) == {}


def test_a_thousand_flaps_before_a_take_cost_one_update() -> None:
    rib = make_rib(interval=1.0)
    for i in range(1000):
        announce(rib, E1, [NAME], attrs(E1_ASN, med=i), now=i * 1e-4)
        withdraw(rib, E1, [NAME], now=i * 1e-4 + 5e-5)
    announce(rib, E1, [NAME], attrs(E1_ASN, 65010), now=0.2)
    updates = take_all(rib, 0.2)
    for key in (E2, I1, I2):
        assert len(updates[key]) == 1
        assert updates[key][0].announced == (NAME,)
        assert updates[key][0].withdrawn == ()
    sent = updates[I1][0].attributes
    assert sent is not None and sent.as_path == (E1_ASN, 65010)


def test_flaps_of_an_advertised_name_during_the_interval_cost_one_update() -> None:
    rib = make_rib(interval=1.0)
    announce(rib, E1, [NAME], attrs(E1_ASN))
    take_all(rib, 0.0)
    for i in range(1000):
        withdraw(rib, E1, [NAME], now=0.1)
        announce(rib, E1, [NAME], attrs(E1_ASN, med=i), now=0.1)
    assert take_all(rib, 0.1)[I1] == []  # ended announced: no withdrawal, announcement held
    deadline = rib.next_deadline()
    assert deadline is not None and deadline == pytest.approx(1.0)
    updates = take_all(rib, deadline)[I1]
    assert len(updates) == 1 and updates[0].announced == (NAME,)
    assert updates[0].attributes is not None and updates[0].attributes.med == 999


def test_flaps_ending_where_they_started_cost_nothing() -> None:
    rib = make_rib(interval=0.0)
    announce(rib, E1, [NAME], attrs(E1_ASN))
    take_all(rib, 0.0)
    for _ in range(1000):
        withdraw(rib, E1, [NAME])
        announce(rib, E1, [NAME], attrs(E1_ASN))
    assert take_all(rib, 5.0) == {key: [] for key in NEIGHBOURS}


def test_local_origination_and_withdrawal_propagate() -> None:
    rib = make_rib()
    rib.originate(["acme.echo", "acme.weather.*"], AGENT, med=3, communities=(65000 << 16 | 1,))
    best = rib.best("acme.echo")
    assert best is not None and best.source.local
    assert best.attrs.next_hop == SELF and best.attrs.as_path == () and best.attrs.med == 3
    updates = take_all(rib, 0.0)
    assert set(announced(updates[I1])) == {"acme.echo", "acme.weather.*"}
    assert announced(updates[I1])["acme.echo"].communities == (65000 << 16 | 1,)
    rib.withdraw_local(["acme.echo"])
    assert rib.best("acme.echo") is None
    assert take_all(rib, 0.0)[E1] == [Update(withdrawn=("acme.echo",))]


def test_locally_originated_route_beats_learned_ones() -> None:
    rib = make_rib()
    announce(rib, I1, [NAME], attrs(local_pref=DEFAULT_LOCAL_PREF))
    rib.originate([NAME], AGENT, med=50)
    decision = rib.explain(NAME)
    assert decision is not None
    assert decision.best.source.local and decision.reason is DecisionReason.LOCALLY_ORIGINATED


@pytest.mark.parametrize(
    "agent",
    [
        AgentAttributes(input_schema="{not json"),
        AgentAttributes(capabilities=tuple(f"t{i}" for i in range(65))),
    ],
)
def test_originate_refuses_malformed_attributes(agent: AgentAttributes) -> None:
    rib = make_rib()
    with pytest.raises(ValueError, match="invalid agent attributes"):
        rib.originate([NAME], agent)
    assert rib.best(NAME) is None


@pytest.mark.parametrize("name", ["", "a..b", "a b", "a.*.b"])
def test_originate_refuses_invalid_names(name: str) -> None:
    rib = make_rib()
    with pytest.raises(ValueError, match="invalid agent name"):
        rib.originate(["ok", name], AGENT)
    assert rib.best("ok") is None


def test_counts_follow_the_tables() -> None:
    rib = Rib(ASN, 1, SELF, min_advertisement_interval=0.0)
    rib.add_peer(E1, E1_ASN, 2)
    rib.add_peer(E2, E2_ASN, 3)
    rib.peer_up(E2, 3)
    announce(rib, E1, ["a", "b"], attrs(E1_ASN))
    rib.originate(["c"], AGENT)
    rib.take_updates(E2, 0.0)
    counts = rib.counts()
    assert (counts.adj_rib_in, counts.loc_rib, counts.adj_rib_out) == (2, 3, 3)


def test_next_deadline_names_only_future_instants() -> None:
    """A due announcement that waits for its stream to drain needs no timer: a past deadline would spin."""
    rib = make_rib(interval=1.0)
    announce(rib, E1, ["a"], attrs(E1_ASN), now=0.0)
    take_all(rib, 0.0)  # the burst goes out; the next one may leave at 1.0
    announce(rib, E1, ["b"], attrs(E1_ASN), now=0.5)
    assert rib.next_deadline(0.5) == pytest.approx(1.0)
    assert rib.next_deadline(1.5) is None  # due already: whoever sends it is waiting on the stream
