"""Import and export policy inside the RIB: rejected routes, modified routes, and policy changes at run time.

Sans-IO: the node is AS 65000 with eBGP neighbours E1 (AS 65001) and E2 (AS 65002) and iBGP I1 (see
`tests.support.routes`); time is only the `now` argument.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agentmesh.rib.policy import (
    AsPathLengthCondition,
    NameCondition,
    NameSet,
    Policy,
    PolicyChain,
    RouteDisposition,
    RoutingPolicy,
    SetLocalPref,
    SetMed,
    Statement,
    StepOutcome,
)
from agentmesh.rib.rib import ChangeKind, Rib
from tests.support.routes import E1, E2, I1, I2, announce, announced, attrs, make_rib, withdraw, withdrawn

INTERNAL = NameSet("internal", ("internal.**",))


def chain(*statements: Statement, default: RouteDisposition = RouteDisposition.ACCEPT) -> PolicyChain:
    return PolicyChain([Policy("test", statements)], default)


REJECT_INTERNAL = chain(
    Statement("internal", (NameCondition(INTERNAL),), disposition=RouteDisposition.REJECT)
)
REJECT_LONG = chain(Statement("long", (AsPathLengthCondition(min=3),), disposition=RouteDisposition.REJECT))
PREFER = chain(Statement("prefer", actions=(SetLocalPref(300),), disposition=RouteDisposition.ACCEPT))


def test_a_route_rejected_on_import_is_kept_aside_not_installed() -> None:
    rib = make_rib(peers=(E1, E2))
    rib.set_policy(RoutingPolicy(global_import=REJECT_INTERNAL))
    received = announce(rib, E1, ["internal.db", "public.api"], attrs(65001))
    assert received.filtered == 1
    assert rib.best("internal.db") is None and rib.best("public.api") is not None
    assert set(announced(rib.take_updates(E2, 0.0))) == {"public.api"}
    assert dict(rib.filtered(E1)).keys() == {"internal.db"}
    verdict = rib.explain_import(E1, "internal.db")
    assert verdict is not None and not verdict.accepted
    assert verdict.trail[-1].outcome is StepOutcome.REJECTED and verdict.trail[-1].statement == "internal"


def test_a_withdrawal_also_forgets_a_filtered_route() -> None:
    rib = make_rib(peers=(E1,))
    rib.set_policy(RoutingPolicy(global_import=REJECT_INTERNAL))
    announce(rib, E1, ["internal.db"], attrs(65001))
    withdraw(rib, E1, ["internal.db"])
    assert list(rib.filtered(E1)) == [] and rib.explain_import(E1, "internal.db") is None


def test_import_actions_change_the_path_and_keep_what_was_received() -> None:
    rib = make_rib(peers=(E1, E2))
    rib.set_policy(RoutingPolicy(neighbor_import={E2: PREFER}))
    announce(rib, E1, ["a.x"], attrs(65001))
    announce(rib, E2, ["a.x"], attrs(65002, 65100))  # longer, but LOCAL_PREF 300 wins
    best = rib.best("a.x")
    assert best is not None and best.source.key == E2 and best.attrs.local_pref == 300
    assert best.received is not None and best.received.local_pref is None
    decision = rib.explain("a.x")
    assert decision is not None and decision.reason.value == "highest_local_pref"


def test_changing_the_import_policy_reevaluates_without_a_session_reset() -> None:
    rib = make_rib(peers=(E1, E2))
    announce(rib, E1, ["internal.db", "public.api"], attrs(65001))
    assert set(announced(rib.take_updates(E2, 0.0))) == {"internal.db", "public.api"}
    rib.record_changes = True
    rib.set_policy(RoutingPolicy(global_import=REJECT_INTERNAL))
    assert rib.best("internal.db") is None
    assert withdrawn(rib.take_updates(E2, 1.0)) == ["internal.db"]
    rib.set_policy(RoutingPolicy())  # and back: the filtered route returns without asking E1
    assert rib.best("internal.db") is not None and list(rib.filtered(E1)) == []
    assert set(announced(rib.take_updates(E2, 2.0))) == {"internal.db"}
    reasons = [(change.name, change.reason) for change in rib.take_changes()]
    assert reasons == [("internal.db", ChangeKind.WITHDRAWN), ("internal.db", ChangeKind.NEW_ROUTE)]


def test_export_policy_hides_routes_from_one_peer_only() -> None:
    rib = make_rib(peers=(E1, E2, I1))
    rib.set_policy(RoutingPolicy(neighbor_export={E2: REJECT_INTERNAL}))
    rib.originate(["internal.db", "public.api"], attrs().agent)
    assert set(announced(rib.take_updates(E2, 0.0))) == {"public.api"}
    assert set(announced(rib.take_updates(E1, 0.0))) == {"internal.db", "public.api"}
    verdict = rib.explain_export(E2, "internal.db")
    assert verdict is not None and not verdict.accepted


def test_changing_the_export_policy_withdraws_and_announces_only_what_changed() -> None:
    rib = make_rib(peers=(E1, E2))
    announce(rib, E1, ["internal.db", "public.api"], attrs(65001))
    rib.take_updates(E2, 0.0)
    rib.set_policy(RoutingPolicy(global_export=REJECT_INTERNAL))
    updates = rib.take_updates(E2, 1.0)
    assert withdrawn(updates) == ["internal.db"] and announced(updates) == {}
    med = chain(Statement("med", actions=(SetMed(7),)))
    rib.set_policy(RoutingPolicy(global_export=med))
    sent = announced(rib.take_updates(E2, 2.0))
    assert set(sent) == {"internal.db", "public.api"} and {a.med for a in sent.values()} == {7}


def test_export_policy_cannot_bring_back_what_the_export_rules_hold_back() -> None:
    rib = make_rib(peers=(E1, E2))
    accept_all = chain(Statement("all", disposition=RouteDisposition.ACCEPT))
    rib.set_policy(RoutingPolicy(global_export=accept_all))
    announce(rib, E1, ["a.x"], attrs(65001))
    assert announced(rib.take_updates(E1, 0.0)) == {}  # never back to the sender
    assert rib.explain_export(E1, "a.x") is None


def test_as_path_length_policy_drops_long_paths() -> None:
    rib = make_rib(peers=(E1,))
    rib.set_policy(RoutingPolicy(global_import=REJECT_LONG))
    announce(rib, E1, ["near.x"], attrs(65001, 65010))
    announce(rib, E1, ["far.x"], attrs(65001, 65010, 65020))
    assert rib.best("near.x") is not None and rib.best("far.x") is None


NAMES = st.lists(
    st.sampled_from(["internal.a", "internal.b.c", "public.a", "public.b", "ops.x"]), min_size=1, unique=True
)


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.tuples(st.sampled_from([E1, E2]), NAMES, st.integers(1, 4)), min_size=1, max_size=6),
    policy_first=st.booleans(),
)
def test_a_rejected_route_is_never_in_the_loc_rib_or_any_adj_rib_out(
    batches: list[tuple[str, list[str], int]], policy_first: bool
) -> None:
    rib = make_rib(peers=(E1, E2, I1))
    policy = RoutingPolicy(global_import=REJECT_INTERNAL)
    if policy_first:
        rib.set_policy(policy)
    for peer, names, length in batches:
        announce(rib, peer, names, attrs(*range(65001 if peer == E1 else 65002, 65001 + length + 1)))
    if not policy_first:
        rib.set_policy(policy)
    for peer in (E1, E2, I1):
        rib.take_updates(peer, 10.0)
    _assert_no_internal(rib)


def _assert_no_internal(rib: Rib) -> None:
    assert not [name for name, _ in rib.loc_rib() if name.startswith("internal.")]
    for peer in (E1, E2, I1):
        assert not [name for name, _ in rib.adj_rib_out(peer) if name.startswith("internal.")]


def test_a_policy_that_changes_several_sources_leaves_the_real_best_path_installed() -> None:
    # Both paths are raised to LOCAL_PREF 300 in one `set_policy` pass, I1's first: I2's path must not
    # be compared with I1's replaced path alone (it would win), but with I1's new one (which wins).
    rib = make_rib(peers=(I1, I2))
    for key in (I1, I2):
        announce(rib, key, ["b.x"], attrs(65001, next_hop=key))
    rib.set_policy(RoutingPolicy(global_import=PREFER))
    decision = rib.explain("b.x")
    best = rib.best("b.x")
    assert decision is not None and best is decision.best and best.source.key == I1
