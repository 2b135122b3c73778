"""How a chain of policies decides (GoBGP semantics), what its trail says, and who gets which chain.

* The first matching statement with disposition accept or reject ends the whole chain.
* A matching statement with disposition none applies its actions and the route goes on, modified.
* When no statement ended the chain, its default decides.
* `evaluate_many` is `evaluate` name by name, grouped by identical outcome.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmesh.bgp.messages import AgentAttributes, Health, Origin, PathAttributes
from agentmesh.rib.attributes import NO_EXPORT
from agentmesh.rib.policy import (
    Action,
    AddCommunities,
    AddLocalPref,
    AddMed,
    AsPathCondition,
    AsPathLengthCondition,
    AsPathSet,
    CapabilityCondition,
    CapabilitySet,
    CommunityCondition,
    CommunitySet,
    Condition,
    HealthCondition,
    LocalPrefCondition,
    MatchOption,
    MedCondition,
    NameCondition,
    NameSet,
    NeighborCondition,
    NeighborSet,
    OriginAsCondition,
    Policy,
    PolicyChain,
    PrependAsPath,
    RegionCondition,
    RegionSet,
    RemoveCommunities,
    ReplaceCommunities,
    RouteContext,
    RouteDisposition,
    RoutingPolicy,
    SetLocalPref,
    SetMed,
    SetNextHopSelf,
    Statement,
    StepOutcome,
    SubtractMed,
    TrailStep,
    Verdict,
    render_trail,
)

ACCEPT, REJECT, NONE = RouteDisposition.ACCEPT, RouteDisposition.REJECT, RouteDisposition.NONE
CONTEXT = RouteContext("127.0.0.1:50052", 65002, 65001, "127.0.0.1:50051")
ATTRS = PathAttributes(origin=Origin.IGP, as_path=(65002, 65010), next_hop="127.0.0.1:50052")
INTERNAL = NameCondition(NameSet("internal", ("internal.**",)))


def statement(
    name: str, *conditions: Condition, actions: tuple[Action, ...] = (), route: RouteDisposition = NONE
) -> Statement:
    return Statement(name, conditions, actions, route)


def chain(*policies: Policy, default: RouteDisposition = ACCEPT) -> PolicyChain:
    return PolicyChain(policies, default)


# --------------------------------------------------------------------------- semantics


def test_first_matching_terminal_statement_decides() -> None:
    policy = Policy(
        "p",
        (
            statement("no-match", INTERNAL, route=REJECT),
            statement("first", actions=(SetMed(1),), route=ACCEPT),
            statement("second", route=REJECT),
        ),
    )
    verdict = chain(policy, default=REJECT).evaluate("acme.echo", ATTRS, CONTEXT)
    assert verdict.accepted
    assert verdict.attrs.med == 1
    assert verdict.trail == (TrailStep(StepOutcome.ACCEPTED, "p", "first", (SetMed(1),)),)
    assert not verdict.decided_by_default


def test_a_terminal_statement_ends_the_whole_chain_not_just_its_policy() -> None:
    first = Policy("first", (statement("drop-internal", INTERNAL, route=REJECT),))
    second = Policy("second", (statement("accept-all", route=ACCEPT),))
    verdict = chain(first, second).evaluate("internal.tools", ATTRS, CONTEXT)
    assert not verdict.accepted
    assert [step.policy for step in verdict.trail] == ["first"]


def test_disposition_none_continues_with_the_modified_route() -> None:
    policy = Policy(
        "p",
        (
            statement("raise", actions=(SetLocalPref(200),)),
            # Sees LOCAL_PREF 200 set by the statement before it.
            statement("preferred", LocalPrefCondition(min=200), actions=(AddCommunities((NO_EXPORT,)),)),
            statement("not-reached-by-local-pref", LocalPrefCondition(max=199), route=REJECT),
        ),
    )
    verdict = chain(policy).evaluate("acme.echo", ATTRS, CONTEXT)
    assert verdict.accepted
    assert verdict.attrs.local_pref == 200 and verdict.attrs.communities == (NO_EXPORT,)
    assert [(step.statement, step.outcome) for step in verdict.trail] == [
        ("raise", StepOutcome.CONTINUED),
        ("preferred", StepOutcome.CONTINUED),
        ("", StepOutcome.DEFAULT_ACCEPTED),
    ]
    assert verdict.decided_by_default


def test_default_reject_when_no_statement_is_terminal() -> None:
    policy = Policy(
        "p", (statement("mark", actions=(SetMed(5),)), statement("internal", INTERNAL, route=ACCEPT))
    )
    verdict = chain(policy, default=REJECT).evaluate("acme.echo", ATTRS, CONTEXT)
    assert not verdict.accepted
    assert verdict.attrs.med == 5  # the modifications made on the way are kept
    assert verdict.trail[-1] == TrailStep(StepOutcome.DEFAULT_REJECTED)


def test_default_accept_with_no_policies_returns_the_input_unchanged() -> None:
    verdict = chain().evaluate("acme.echo", ATTRS, CONTEXT)
    assert verdict == Verdict(True, ATTRS, (TrailStep(StepOutcome.DEFAULT_ACCEPTED),))
    assert verdict.attrs is ATTRS


def test_a_statement_that_does_not_match_leaves_no_trace() -> None:
    policy = Policy("p", (statement("internal", INTERNAL, actions=(SetMed(9),), route=REJECT),))
    verdict = chain(policy).evaluate("acme.echo", ATTRS, CONTEXT)
    assert verdict.attrs is ATTRS
    assert verdict.trail == (TrailStep(StepOutcome.DEFAULT_ACCEPTED),)


def test_a_rejected_route_carries_the_modified_attributes_for_the_trail() -> None:
    policy = Policy("p", (statement("s", actions=(SetMed(3),), route=REJECT),))
    verdict = chain(policy).evaluate("acme.echo", ATTRS, CONTEXT)
    assert not verdict.accepted and verdict.attrs.med == 3


def test_a_chain_default_must_be_accept_or_reject() -> None:
    with pytest.raises(ValueError, match="accept or reject"):
        PolicyChain([], NONE)


def test_name_dependent_says_whether_any_statement_tests_the_name() -> None:
    assert not chain(Policy("p", (statement("s", MedCondition(max=5), route=REJECT),))).name_dependent
    assert chain(Policy("p", (statement("s", MedCondition(max=5)), statement("t", INTERNAL)))).name_dependent


# --------------------------------------------------------------------------- the trail


def test_trail_renders_on_one_line() -> None:
    policies = (
        Policy("tag", (statement("eu", actions=(AddLocalPref(20), AddCommunities((NO_EXPORT,)))),)),
        Policy("filter", (statement("internal", INTERNAL, route=REJECT),)),
    )
    rejected = chain(*policies).evaluate("internal.tools", ATTRS, CONTEXT)
    assert render_trail(rejected.trail) == (
        "tag/eu continued [local_pref+20, communities+[no-export]]; filter/internal rejected"
    )
    assert rejected.describe() == f"rejected by filter/internal: {render_trail(rejected.trail)}"
    accepted = chain(*policies).evaluate("acme.echo", ATTRS, CONTEXT)
    assert (
        str(accepted)
        == "accepted by default: tag/eu continued [local_pref+20, communities+[no-export]]; default accept"
    )


def test_trail_steps_are_typed_and_shared_between_verdicts() -> None:
    policy = Policy("p", (statement("s", actions=(SetMed(1),), route=ACCEPT),))
    compiled = chain(policy)
    first = compiled.evaluate("a.b", ATTRS, CONTEXT).trail[0]
    second = compiled.evaluate("c.d", ATTRS, CONTEXT).trail[0]
    assert first is second  # built once, when the chain was compiled
    assert (first.policy, first.statement, first.outcome, first.actions) == (
        "p",
        "s",
        StepOutcome.ACCEPTED,
        (SetMed(1),),
    )


# --------------------------------------------------------------------------- assignments


def test_no_policy_configured_means_no_chain_for_anyone() -> None:
    policy = RoutingPolicy()
    assert policy.import_chain("127.0.0.1:50052") is None
    assert policy.export_chain("127.0.0.1:50052") is None


def test_global_chains_apply_to_every_neighbour() -> None:
    imports, exports = chain(default=REJECT), chain()
    policy = RoutingPolicy(global_import=imports, global_export=exports)
    for neighbor in ("127.0.0.1:50052", "10.0.0.9:179", ""):
        assert policy.import_chain(neighbor) is imports
        assert policy.export_chain(neighbor) is exports


def test_a_neighbours_own_assignment_replaces_the_global_one_for_that_direction_only() -> None:
    global_import, global_export, own_import = chain(), chain(), chain(default=REJECT)
    policy = RoutingPolicy(
        global_import=global_import,
        global_export=global_export,
        neighbor_import={"127.0.0.1:50052": own_import},
    )
    assert policy.import_chain("127.0.0.1:50052") is own_import
    assert policy.export_chain("127.0.0.1:50052") is global_export
    assert policy.import_chain("127.0.0.1:50053") is global_import


def test_a_neighbour_may_have_a_chain_where_there_is_no_global_one() -> None:
    own_export = chain(default=REJECT)
    policy = RoutingPolicy(neighbor_export={"127.0.0.1:50052": own_export})
    assert policy.export_chain("127.0.0.1:50052") is own_export
    assert policy.export_chain("127.0.0.1:50053") is None
    assert policy.import_chain("127.0.0.1:50052") is None


# --------------------------------------------------------------------------- evaluate_many


def test_evaluate_many_groups_names_by_outcome() -> None:
    policy = Policy(
        "p",
        (
            statement("internal", INTERNAL, route=REJECT),
            statement("acme", NameCondition(NameSet("acme", ("acme.*",))), actions=(SetLocalPref(200),)),
        ),
    )
    names = ["acme.a", "internal.x", "other.b", "acme.b", "internal.y.z", "other.c"]
    results = chain(policy).evaluate_many(names, ATTRS, CONTEXT)
    grouped = {verdict.describe(): group for verdict, group in results}
    assert grouped == {
        "rejected by p/internal: p/internal rejected": ["internal.x", "internal.y.z"],
        "accepted by default: p/acme continued [local_pref=200]; default accept": ["acme.a", "acme.b"],
        "accepted by default: default accept": ["other.b", "other.c"],
    }
    unchanged = next(verdict for verdict, group in results if group == ["other.b", "other.c"])
    assert unchanged.attrs is ATTRS


def test_evaluate_many_without_names_returns_nothing() -> None:
    assert (
        chain(Policy("p", (statement("s", INTERNAL, route=REJECT),))).evaluate_many([], ATTRS, CONTEXT) == []
    )


def test_equal_modified_attributes_share_one_object_per_call() -> None:
    policy = Policy(
        "p",
        (
            statement("a", NameCondition(NameSet("a", ("a.*",))), actions=(SetMed(5),), route=ACCEPT),
            statement("b", NameCondition(NameSet("b", ("b.*",))), actions=(SetMed(5),), route=ACCEPT),
            statement("back", actions=(SetMed(7), SetMed(0)), route=ACCEPT),
        ),
    )
    attrs = PathAttributes(origin=Origin.IGP, as_path=(1,), next_hop="h:1", med=0)
    results = chain(policy).evaluate_many(["a.x", "b.x", "c.x"], attrs, CONTEXT)
    by_group = {group[0]: verdict for verdict, group in results}
    assert by_group["a.x"].trail != by_group["b.x"].trail
    assert by_group["a.x"].attrs is by_group["b.x"].attrs
    assert by_group["c.x"].attrs is attrs


# A property test: random chains over random names and attribute sets give the same verdict for a
# name whether it is evaluated alone or in a group, and the groups partition the names.

_NAMES = st.sampled_from(
    [
        "acme.weather.forecast",
        "acme.echo",
        "acme.*",
        "internal.tools.x",
        "internal.*",
        "beta.lab.agent1",
        "ops.a",
        "weatherAgent",
        "x.weather.daily",
    ]
)
_NAME_SETS = st.sampled_from(
    [
        ("acme.*",),
        ("internal.**",),
        ("*.weather.*", "weatherAgent"),
        ("acme.echo", "ops.a"),
        ("**.forecast", "beta.[a-l]ab.*"),
        ("**",),
    ]
)
_CONDITIONS: st.SearchStrategy[Condition] = st.one_of(
    st.builds(
        NameCondition,
        _NAME_SETS.map(lambda e: NameSet("n", e)),
        st.sampled_from([MatchOption.ANY, MatchOption.INVERT]),
    ),
    st.builds(
        CapabilityCondition,
        st.just(CapabilitySet("c", frozenset({"billing", "chat"}))),
        st.sampled_from(list(MatchOption)),
    ),
    st.builds(
        AsPathCondition,
        st.sampled_from(
            [AsPathSet("a", ("_65010_",)), AsPathSet("a", ("^$",)), AsPathSet("a", ("^65002_", "_7$"))]
        ),
        st.sampled_from([MatchOption.ANY, MatchOption.INVERT]),
    ),
    st.builds(AsPathLengthCondition, st.none() | st.integers(0, 3), st.none() | st.integers(2, 5)),
    st.builds(OriginAsCondition, st.frozensets(st.sampled_from([65001, 65010, 7]), min_size=1)),
    st.builds(
        CommunityCondition,
        st.just(CommunitySet("c", frozenset({NO_EXPORT, 100}))),
        st.sampled_from(list(MatchOption)),
    ),
    st.builds(
        NeighborCondition,
        st.just(NeighborSet("n", frozenset({"127.0.0.1:50052"}))),
        st.sampled_from([MatchOption.ANY, MatchOption.INVERT]),
    ),
    st.builds(
        RegionCondition,
        st.just(RegionSet("r", frozenset({"eu-west"}))),
        st.sampled_from([MatchOption.ANY, MatchOption.INVERT]),
    ),
    st.builds(MedCondition, st.none() | st.integers(0, 20), st.none() | st.integers(10, 40)),
    st.builds(LocalPrefCondition, st.none() | st.integers(90, 200), st.none() | st.integers(100, 300)),
    st.builds(
        HealthCondition,
        st.none() | st.floats(0, 300),
        st.none() | st.floats(0, 0.2),
        st.none() | st.floats(0, 1),
    ),
)
_ACTIONS: st.SearchStrategy[Action] = st.one_of(
    st.builds(SetLocalPref, st.integers(0, 300)),
    st.builds(AddLocalPref, st.integers(-150, 150)),
    st.builds(SetMed, st.integers(0, 50)),
    st.builds(AddMed, st.integers(0, 20)),
    st.builds(SubtractMed, st.integers(0, 20)),
    st.builds(AddCommunities, st.lists(st.sampled_from([NO_EXPORT, 100, 200]), max_size=2).map(tuple)),
    st.builds(RemoveCommunities, st.lists(st.sampled_from([NO_EXPORT, 100, 200]), max_size=2).map(tuple)),
    st.builds(ReplaceCommunities, st.lists(st.sampled_from([NO_EXPORT, 100, 200]), max_size=2).map(tuple)),
    st.builds(PrependAsPath, st.integers(1, 3), st.none() | st.just(65099)),
    st.just(SetNextHopSelf()),
)
_STATEMENTS = st.builds(
    Statement,
    st.sampled_from(["s1", "s2", "s3"]),
    st.lists(_CONDITIONS, max_size=3).map(tuple),
    st.lists(_ACTIONS, max_size=2).map(tuple),
    st.sampled_from(list(RouteDisposition)),
)
_CHAINS = st.builds(
    lambda policies, default: PolicyChain(
        [Policy(f"p{i}", tuple(s)) for i, s in enumerate(policies)], default
    ),
    st.lists(st.lists(_STATEMENTS, min_size=1, max_size=5), max_size=3),
    st.sampled_from([ACCEPT, REJECT]),
)
_ATTRS = st.builds(
    lambda path, med, local_pref, communities, caps, region, latency: PathAttributes(
        origin=Origin.IGP,
        as_path=path,
        next_hop="127.0.0.1:50052",
        med=med,
        local_pref=local_pref,
        communities=communities,
        agent=AgentAttributes(
            capabilities=caps, region=region, health=Health(latency_ms=latency, error_rate=0.05)
        ),
    ),
    st.sampled_from([(), (65002,), (65002, 65010), (65002, 65010, 7), (7,)]),
    st.none() | st.integers(0, 40),
    st.none() | st.integers(50, 250),
    st.lists(st.sampled_from([NO_EXPORT, 100, 200]), max_size=3, unique=True).map(tuple),
    st.sampled_from([(), ("billing",), ("billing", "chat")]),
    st.sampled_from(["", "eu-west", "us-east"]),
    st.floats(0, 400),
)
_CONTEXTS = st.sampled_from([CONTEXT, RouteContext("", 0, 65001, "127.0.0.1:50051")])


@settings(max_examples=400, deadline=None)
@given(chain=_CHAINS, names=st.lists(_NAMES, max_size=20), attrs=_ATTRS, context=_CONTEXTS)
def test_evaluate_many_equals_evaluate_per_name(
    chain: PolicyChain, names: list[str], attrs: PathAttributes, context: RouteContext
) -> None:
    results = chain.evaluate_many(names, attrs, context)
    # The groups partition the names (duplicates included) ...
    assert Counter(name for _, group in results for name in group) == Counter(names)
    # ... every name gets the verdict it gets alone ...
    for verdict, group in results:
        assert group
        for name in group:
            assert chain.evaluate(name, attrs, context) == verdict
    # ... names with equal outcomes are in one group, and equal attribute sets are one object.
    verdicts = [verdict for verdict, _ in results]
    assert len(set(verdicts)) == len(verdicts)
    objects: dict[PathAttributes, PathAttributes] = {}
    for verdict in verdicts:
        assert objects.setdefault(verdict.attrs, verdict.attrs) is verdict.attrs
        if verdict.attrs == attrs:
            assert verdict.attrs is attrs
    # A chain that tests no name treats every name alike.
    if not chain.name_dependent:
        assert len(results) <= 1
