"""ADD-PATH in the RIB (RFC 7911): a reflector sending several paths per name, a client receiving them.

The reflector (AS 65000, router id 10.0.0.1) has three clients O1-O3 that originate the same agent
and a multipath client M that negotiated ADD-PATH; M's own RIB is built from what the reflector
sends it, so the whole chain is exercised. Sans-IO: time is only the `now` argument.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agentmesh.bgp.errors import ErrorCode, UpdateSubcode
from agentmesh.bgp.messages import PathAttributes, Update
from agentmesh.rib.policy import Policy, PolicyChain, RouteDisposition, RoutingPolicy, Statement
from agentmesh.rib.rib import MAX_PATH_IDS, Rib
from tests.support.routes import ASN, ROUTER_ID, SELF, attrs

O1, O2, O3, M, R = "10.0.1.1:179", "10.0.1.2:179", "10.0.1.3:179", "10.0.2.1:179", SELF
IDS = {O1: 0x0A000101, O2: 0x0A000102, O3: 0x0A000103, M: 0x0A000201}
HOPS = {O1: "10.0.1.1:50051", O2: "10.0.1.2:50051", O3: "10.0.1.3:50051"}


def reflector(send_paths: int = 4) -> Rib:
    rib = Rib(ASN, ROUTER_ID, SELF, 0.0)
    for key in IDS:
        rib.add_peer(key, ASN, IDS[key], rr_client=True)
        rib.peer_up(key, IDS[key], send_paths=send_paths if key == M else 0, receive_paths=True)
        assert rib.take_updates(key, 0.0) == [Update(end_of_rib=True)]
    return rib


def client() -> Rib:
    rib = Rib(ASN, IDS[M], "10.0.2.1:50051", 0.0)
    rib.add_peer(R, ASN, ROUTER_ID)
    rib.peer_up(R, ROUTER_ID, receive_paths=True)
    rib.take_updates(R, 0.0)
    return rib


def originate(rib: Rib, origins: tuple[str, ...], name: str = "a.x", **fields: object) -> None:
    for key in origins:
        update = Update(attributes=attrs(next_hop=HOPS[key], **fields), announced=(name,))
        assert rib.receive(key, update, 0.0).error is None


def paths_sent(updates: list[Update]) -> dict[tuple[str, int], PathAttributes | None]:
    """(name, path id) -> attributes announced, or None for a withdrawal, in order."""
    sent: dict[tuple[str, int], PathAttributes | None] = {}
    for update in updates:
        for name, path_id in zip(update.withdrawn, update.withdrawn_path_ids, strict=True):
            sent[name, path_id] = None
        for name, path_id in zip(update.announced, update.announced_path_ids, strict=True):
            sent[name, path_id] = update.attributes
    return sent


def relay(reflector_rib: Rib, client_rib: Rib, now: float = 1.0) -> list[Update]:
    updates = reflector_rib.take_updates(M, now)
    for update in updates:
        assert client_rib.receive(R, update, now).error is None
    return updates


def next_hops(rib: Rib, name: str = "a.x", maximum: int = 8) -> set[str]:
    found = rib.lookup_paths(name, maximum)
    assert found is not None
    return {path.attrs.next_hop for path in found[1]}


def test_a_reflector_sends_each_equally_good_path_under_its_own_identifier() -> None:
    rib = reflector()
    originate(rib, (O1, O2, O3))
    sent = paths_sent(rib.take_updates(M, 1.0))
    assert sorted(path_id for _, path_id in sent) == [1, 2, 3]
    assert {a.next_hop for a in sent.values() if a} == set(HOPS.values())  # NEXT_HOP kept (RFC 4456)
    assert all(a is not None and a.originator_id in (IDS[O1], IDS[O2], IDS[O3]) for a in sent.values())


def test_without_add_path_the_peer_gets_the_best_path_only() -> None:
    rib = reflector(send_paths=0)
    originate(rib, (O1, O2, O3))
    [update] = rib.take_updates(M, 1.0)
    assert update.announced == ("a.x",) and update.announced_path_ids == ()
    assert update.attributes is not None and update.attributes.next_hop == HOPS[O1]


def test_the_client_learns_every_path_and_can_spread_calls_over_them() -> None:
    rib, multipath = reflector(), client()
    originate(rib, (O1, O2, O3))
    relay(rib, multipath)
    assert next_hops(multipath) == set(HOPS.values())
    assert multipath.received_count(R) == 3  # one route per path identifier
    assert len(list(multipath.adj_rib_in(R))) == 3
    assert rib.add_paths(M) == (4, True) and multipath.add_paths(R) == (0, True)


def test_losing_one_origin_withdraws_only_its_path_identifier() -> None:
    rib, multipath = reflector(), client()
    originate(rib, (O1, O2, O3))
    first = paths_sent(relay(rib, multipath))
    gone = next(path_id for (_, path_id), a in first.items() if a is not None and a.next_hop == HOPS[O2])
    rib.receive(O2, Update(withdrawn=("a.x",)), 2.0)
    assert paths_sent(relay(rib, multipath, 2.0)) == {("a.x", gone): None}
    assert next_hops(multipath) == {HOPS[O1], HOPS[O3]}


def test_an_equal_path_added_behind_an_unchanged_best_is_still_sent() -> None:
    rib, multipath = reflector(), client()
    originate(rib, (O1,))
    relay(rib, multipath)
    originate(rib, (O3,))  # not better than O1's: the best path does not change
    sent = paths_sent(relay(rib, multipath, 2.0))
    assert [a.next_hop for a in sent.values() if a] == [HOPS[O3]]
    assert next_hops(multipath) == {HOPS[O1], HOPS[O3]}


def test_a_worse_path_is_not_sent_and_an_unchanged_path_is_not_sent_again() -> None:
    rib = reflector()
    originate(rib, (O1, O2))
    rib.take_updates(M, 1.0)
    originate(rib, (O3,), med=50)  # loses on MED: not equally good
    assert rib.take_updates(M, 2.0) == []


def test_the_number_of_paths_sent_is_capped_per_neighbour() -> None:
    rib = reflector(send_paths=2)
    originate(rib, (O1, O2, O3))
    sent = paths_sent(rib.take_updates(M, 1.0))
    assert sorted(path_id for _, path_id in sent) == [1, 2]
    assert {a.next_hop for a in sent.values() if a} == {HOPS[O1], HOPS[O2]}  # the best two


def test_a_route_refresh_announces_every_path_again_with_the_same_identifiers() -> None:
    rib = reflector()
    originate(rib, (O1, O2))
    first = paths_sent(rib.take_updates(M, 1.0))
    rib.resend(M)
    assert paths_sent(rib.take_updates(M, 2.0)) == first


def test_the_client_session_ending_flushes_every_path_identifier() -> None:
    rib, multipath = reflector(), client()
    originate(rib, (O1, O2, O3))
    relay(rib, multipath)
    multipath.peer_down(R)
    assert multipath.best("a.x") is None and multipath.received_count(R) == 0


def test_graceful_restart_keeps_every_path_identifier_stale_then_sweeps() -> None:
    rib, multipath = reflector(), client()
    originate(rib, (O1, O2, O3))
    relay(rib, multipath)
    multipath.peer_down(R, keep_stale=True)
    assert multipath.stale_count(R) == 3 and next_hops(multipath) == set(HOPS.values())
    assert multipath.sweep_stale(R) == 3
    assert multipath.best("a.x") is None


def test_an_update_with_a_partial_list_of_path_identifiers_is_malformed() -> None:
    multipath = client()
    update = Update(attributes=attrs(), announced=("a.x", "b.x"), announced_path_ids=(1,))
    error = multipath.receive(R, update, 0.0).error
    assert error is not None
    assert (error.code, error.subcode) == (ErrorCode.UPDATE_MESSAGE, UpdateSubcode.MALFORMED_ATTRIBUTE_LIST)


def test_a_neighbour_may_use_only_so_many_path_identifiers() -> None:
    multipath = client()
    ids = tuple(range(1, MAX_PATH_IDS + 2))
    update = Update(attributes=attrs(), announced=tuple("a.x" for _ in ids), announced_path_ids=ids)
    error = multipath.receive(R, update, 0.0).error
    assert error is not None and error.subcode == UpdateSubcode.INVALID_NETWORK_FIELD


def test_path_identifiers_are_ignored_unless_negotiated() -> None:
    rib = Rib(ASN, IDS[M], "10.0.2.1:50051", 0.0)
    rib.add_peer(R, ASN, ROUTER_ID)
    rib.peer_up(R, ROUTER_ID)  # no ADD-PATH in this session
    for next_hop, path_id in (("h1:1", 1), ("h2:1", 2)):
        update = Update(
            attributes=attrs(next_hop=next_hop), announced=("a.x",), announced_path_ids=(path_id,)
        )
        rib.receive(R, update, 0.0)
    assert next_hops(rib) == {"h2:1"}  # the second replaced the first, as without ADD-PATH


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from([None, 0, 10])),  # AS_PATH length, MED
        min_size=1,
        max_size=3,
    )
)
def test_through_the_reflector_the_client_has_the_multipath_set_of_a_full_mesh(
    routes: list[tuple[int, int | None]],
) -> None:
    rib, multipath = reflector(), client()
    mesh = Rib(ASN, IDS[M], "10.0.2.1:50051", 0.0)  # the same client with a session to each origin
    origins = (O1, O2, O3)[: len(routes)]
    for key, (length, med) in zip(origins, routes, strict=True):
        mesh.add_peer(key, ASN, IDS[key])
        mesh.peer_up(key, IDS[key])
        for target in (rib, mesh):
            route = attrs(*[65001] * length, next_hop=HOPS[key], med=med)
            assert target.receive(key, Update(attributes=route, announced=("a.x",)), 0.0).error is None
    relay(rib, multipath)
    assert next_hops(multipath) == next_hops(mesh)


def test_collecting_unused_attribute_sets_keeps_what_add_path_peers_were_sent() -> None:
    rib = reflector()
    originate(rib, (O1, O2, O3))
    first = {a.next_hop: path_id for (_, path_id), a in paths_sent(rib.take_updates(M, 1.0)).items() if a}
    rib.collect()
    rib.receive(O1, Update(withdrawn=("a.x",)), 2.0)
    # Only O1's path id goes; the others keep theirs and are not sent again.
    assert paths_sent(rib.take_updates(M, 2.0)) == {("a.x", first[HOPS[O1]]): None}


def test_a_new_session_starts_with_no_path_identifiers_used() -> None:
    multipath = client()
    for session in range(2):  # each session uses MAX_PATH_IDS identifiers of its own
        ids = tuple(range(session * MAX_PATH_IDS + 1, (session + 1) * MAX_PATH_IDS + 1))
        names = tuple(f"n{i}.x" for i in ids)
        update = Update(attributes=attrs(), announced=names, announced_path_ids=ids)
        assert multipath.receive(R, update, 0.0).error is None
        assert multipath.received_count(R) == MAX_PATH_IDS
        multipath.peer_down(R)
        multipath.peer_up(R, ROUTER_ID, receive_paths=True)


def test_routes_import_policy_rejected_under_a_path_identifier_are_listed_and_explained() -> None:
    multipath = client()
    reject = PolicyChain(
        [Policy("p", [Statement("no", disposition=RouteDisposition.REJECT)])], RouteDisposition.ACCEPT
    )
    multipath.set_policy(RoutingPolicy(global_import=reject))
    update = Update(attributes=attrs(), announced=("a.x",), announced_path_ids=(7,))
    assert multipath.receive(R, update, 0.0).filtered == 1
    assert [name for name, _ in multipath.filtered(R)] == ["a.x"] and multipath.filtered_count(R) == 1
    verdict = multipath.explain_import(R, "a.x")
    assert verdict is not None and not verdict.accepted
