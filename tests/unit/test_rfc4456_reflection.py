"""Route reflection in the RIB (RFC 4456): who gets which iBGP route, ORIGINATOR_ID and CLUSTER_LIST.

The node is a reflector in AS 65000 (router id 10.0.0.1, cluster 10.0.0.1) with two clients C1, C2,
one non-client iBGP peer N1 and an eBGP peer E1. Sans-IO: time is only the `now` argument.
"""

from __future__ import annotations

from agentmesh.bgp.messages import Update
from agentmesh.rib.decision import DecisionReason
from agentmesh.rib.rib import Drop, Rib
from tests.support.routes import ASN, ROUTER_ID, SELF, announce, announced, attrs

C1, C2, N1, E1 = "10.0.1.1:179", "10.0.1.2:179", "10.0.2.1:179", "192.0.2.1:179"
IDS = {C1: 0x0A000101, C2: 0x0A000102, N1: 0x0A000201, E1: 0xC0000201}
CLUSTER = ROUTER_ID


def reflector(cluster_id: int | None = None) -> Rib:
    rib = Rib(ASN, ROUTER_ID, SELF, 0.0, cluster_id=cluster_id)
    for key, client in ((C1, True), (C2, True), (N1, False)):
        rib.add_peer(key, ASN, IDS[key], rr_client=client)
    rib.add_peer(E1, 65001, IDS[E1])
    for key in IDS:
        rib.peer_up(key, IDS[key])
        assert rib.take_updates(key, 0.0) == [Update(end_of_rib=True)]
    return rib


def sent(rib: Rib) -> dict[str, set[str]]:
    return {key: set(announced(rib.take_updates(key, 1.0))) for key in IDS}


def test_a_clients_route_goes_to_the_other_clients_and_non_clients_unchanged_next_hop() -> None:
    rib = reflector()
    announce(rib, C1, ["a.x"], attrs(next_hop="10.0.1.1:50051"))
    updates = {key: rib.take_updates(key, 1.0) for key in IDS}
    for key in (C2, N1):
        [reflected] = announced(updates[key]).values()
        assert reflected.next_hop == "10.0.1.1:50051"  # calls go straight to the origin
        assert reflected.originator_id == IDS[C1] and reflected.cluster_list == (CLUSTER,)
    assert announced(updates[C1]) == {}  # never back to the sender
    [external] = announced(updates[E1]).values()
    assert external.originator_id is None and external.cluster_list == () and external.as_path == (ASN,)


def test_a_non_clients_route_goes_to_clients_only() -> None:
    rib = reflector()
    announce(rib, N1, ["b.x"], attrs())
    assert sent(rib) == {C1: {"b.x"}, C2: {"b.x"}, N1: set(), E1: {"b.x"}}


def test_an_ebgp_route_goes_to_every_ibgp_peer_without_reflection_attributes() -> None:
    rib = reflector()
    announce(rib, E1, ["c.x"], attrs(65001))
    updates = {key: rib.take_updates(key, 1.0) for key in (C1, C2, N1)}
    for key, update in updates.items():
        [route] = announced(update).values()
        assert route.originator_id is None and route.cluster_list == (), key


def test_without_clients_ibgp_routes_are_not_passed_to_ibgp_peers() -> None:
    rib = Rib(ASN, ROUTER_ID, SELF, 0.0)
    for key in (C1, N1):
        rib.add_peer(key, ASN, IDS[key])
        rib.peer_up(key, IDS[key])
        rib.take_updates(key, 0.0)
    announce(rib, C1, ["d.x"], attrs())
    assert announced(rib.take_updates(N1, 1.0)) == {}


def test_its_own_route_reflected_back_is_dropped_by_originator_id() -> None:
    rib = reflector()
    received = rib.receive(N1, Update(attributes=attrs(originator_id=ROUTER_ID), announced=("e.x",)), 0.0)
    assert received.dropped is not None and received.dropped.reason is Drop.REFLECTION_LOOP
    assert rib.best("e.x") is None


def test_a_route_that_passed_this_cluster_is_dropped_by_cluster_list() -> None:
    rib = reflector(cluster_id=0x0A0000FF)
    looped = attrs(originator_id=IDS[C1], cluster_list=(0x0A0000AA, 0x0A0000FF))
    received = rib.receive(N1, Update(attributes=looped, announced=("f.x",)), 0.0)
    assert received.dropped is not None and "CLUSTER_LIST" in received.dropped.detail
    other_cluster = attrs(originator_id=IDS[C1], cluster_list=(0x0A0000AA,))
    assert rib.receive(N1, Update(attributes=other_cluster, announced=("f.x",)), 0.0).dropped is None


def test_reflection_attributes_from_an_ebgp_peer_are_ignored() -> None:
    rib = reflector()
    announce(rib, E1, ["g.x"], attrs(65001, originator_id=ROUTER_ID, cluster_list=(CLUSTER,)))
    best = rib.best("g.x")
    assert best is not None and best.attrs.originator_id is None and best.attrs.cluster_list == ()


def test_a_shorter_cluster_list_wins_and_says_so() -> None:
    rib = reflector()
    announce(rib, N1, ["h.x"], attrs(originator_id=IDS[C2], cluster_list=(0x0A0000AA, 0x0A0000BB)))
    announce(rib, C1, ["h.x"], attrs(originator_id=IDS[C2], cluster_list=(0x0A0000CC,)))
    decision = rib.explain("h.x")
    assert decision is not None and decision.best.source.key == C1
    assert decision.reason is DecisionReason.CLUSTER_LIST_LENGTH
