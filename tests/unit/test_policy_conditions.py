"""Each condition of a policy statement matches exactly what it says (agentmesh.rib.policy).

Every test builds a one-statement chain (condition -> accept, default reject) and asks whether a
route is accepted, through `evaluate` and `evaluate_many` alike.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmesh.bgp.messages import AgentAttributes, Health, Origin, PathAttributes
from agentmesh.rib.attributes import NO_ADVERTISE, NO_EXPORT
from agentmesh.rib.policy import (
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
    RegionCondition,
    RegionSet,
    RouteContext,
    RouteDisposition,
    Statement,
    as_path_regex,
    as_path_text,
)
from agentmesh.rib.resolve import glob_matches

LOCAL_ASN = 65001
PEER = "127.0.0.1:50052"
CONTEXT = RouteContext(
    neighbor=PEER, neighbor_asn=65002, local_asn=LOCAL_ASN, local_next_hop="127.0.0.1:50051"
)


def route(
    *as_path: int,
    med: int | None = None,
    local_pref: int | None = None,
    communities: tuple[int, ...] = (),
    capabilities: tuple[str, ...] = (),
    region: str = "",
    health: Health | None = None,
) -> PathAttributes:
    return PathAttributes(
        origin=Origin.IGP,
        as_path=as_path,
        next_hop="127.0.0.1:50052",
        med=med,
        local_pref=local_pref,
        communities=communities,
        agent=AgentAttributes(capabilities=capabilities, region=region, health=health or Health()),
    )


def matches(
    condition: Condition,
    attrs: PathAttributes | None = None,
    name: str = "acme.weather.forecast",
    context: RouteContext = CONTEXT,
) -> bool:
    """Whether `condition` matches, asked through both entry points (which must agree)."""
    chain = PolicyChain(
        [Policy("p", (Statement("s", (condition,), (), RouteDisposition.ACCEPT),))], RouteDisposition.REJECT
    )
    attrs = attrs if attrs is not None else route(65002)
    single = chain.evaluate(name, attrs, context)
    [(grouped, names)] = chain.evaluate_many([name], attrs, context)
    assert grouped == single and names == [name]
    return single.accepted


# --------------------------------------------------------------------------- names


def names(*entries: str, match: MatchOption = MatchOption.ANY) -> NameCondition:
    return NameCondition(NameSet("n", entries), match)


def test_name_set_matches_exact_names_only_exactly() -> None:
    condition = names("acme.weather.forecast", "other.echo")
    assert matches(condition, name="acme.weather.forecast")
    assert matches(condition, name="other.echo")
    assert not matches(condition, name="acme.weather.forecast.daily")
    assert not matches(condition, name="Acme.weather.forecast")  # names compare exactly (DESIGN §2)


def test_aggregate_entry_matches_the_aggregate_and_names_one_label_below() -> None:
    condition = names("acme.*")
    assert matches(condition, name="acme.*")
    assert matches(condition, name="acme.echo")
    assert not matches(condition, name="acme.weather.forecast")
    assert not matches(condition, name="acme")
    assert not matches(condition, name="acmex.echo")


def test_glob_entries_follow_resolution_glob_semantics() -> None:
    assert matches(names("acme.**"), name="acme.weather.forecast")
    assert matches(names("acme.**"), name="acme")
    assert matches(names("**.forecast"), name="acme.weather.forecast")
    assert matches(names("acme.*.forecast"), name="acme.weather.forecast")
    assert not matches(names("acme.*.forecast"), name="acme.weather.daily.forecast")
    assert matches(names("acme.weather.forecas?"), name="acme.weather.forecast")
    assert matches(names("acme.[vw]eather.*"), name="acme.weather.x")
    assert not matches(names("acme.[!w]eather.*"), name="acme.weather.x")


def test_name_set_invert_matches_names_outside_the_set() -> None:
    condition = names("internal.**", match=MatchOption.INVERT)
    assert matches(condition, name="acme.echo")
    assert not matches(condition, name="internal.tools.x")


def test_name_condition_refuses_match_all() -> None:
    with pytest.raises(ValueError, match="'all' does not apply to a name"):
        PolicyChain([Policy("p", (Statement("s", (names("a", match=MatchOption.ALL),)),))])


_LABEL = st.sampled_from(["a", "b", "ab", "ba", "x-1", "A_b"])
_GLOB_LABEL = st.sampled_from(["a", "b", "ab", "*", "?", "**", "a*", "*b", "[ab]", "[!a]", "[a-b]*", "x-?"])


@settings(max_examples=300, deadline=None)
@given(
    patterns=st.lists(st.lists(_GLOB_LABEL, min_size=1, max_size=4).map(".".join), min_size=1, max_size=3),
    candidates=st.lists(
        st.tuples(st.lists(_LABEL, min_size=1, max_size=5).map(".".join), st.booleans()).map(
            lambda pair: pair[0] + ".*" if pair[1] else pair[0]
        ),
        min_size=1,
        max_size=30,
    ),
)
def test_compiled_name_sets_agree_with_glob_matches(patterns: list[str], candidates: list[str]) -> None:
    # Name sets are compiled to one regular expression over the joined names of a group; whatever
    # the compilation, a name matches exactly when glob_matches says one of the entries matches it.
    chain = PolicyChain([Policy("p", (Statement("s", (names(*patterns),), (), RouteDisposition.ACCEPT),))])
    chain = PolicyChain(chain.policies, RouteDisposition.REJECT)
    attrs = route(65002)
    accepted = {
        name
        for verdict, group in chain.evaluate_many(candidates, attrs, CONTEXT)
        if verdict.accepted
        for name in group
    }
    expected = {name for name in candidates if any(glob_matches(p, name) for p in patterns)}
    assert accepted == expected
    assert {name for name in candidates if chain.evaluate(name, attrs, CONTEXT).accepted} == expected


# --------------------------------------------------------------------------- capabilities


def capabilities(match: MatchOption) -> CapabilityCondition:
    return CapabilityCondition(CapabilitySet("billing", frozenset({"billing", "invoices"})), match)


def test_capability_set_any_needs_one_tag_of_the_set() -> None:
    assert matches(capabilities(MatchOption.ANY), route(1, capabilities=("chat", "invoices")))
    assert not matches(capabilities(MatchOption.ANY), route(1, capabilities=("chat",)))
    assert not matches(capabilities(MatchOption.ANY), route(1))


def test_capability_set_all_needs_every_tag_of_the_set() -> None:
    assert matches(capabilities(MatchOption.ALL), route(1, capabilities=("invoices", "chat", "billing")))
    assert not matches(capabilities(MatchOption.ALL), route(1, capabilities=("billing",)))


def test_capability_set_invert_needs_no_tag_of_the_set() -> None:
    assert matches(capabilities(MatchOption.INVERT), route(1, capabilities=("chat",)))
    assert matches(capabilities(MatchOption.INVERT), route(1))
    assert not matches(capabilities(MatchOption.INVERT), route(1, capabilities=("billing",)))


# --------------------------------------------------------------------------- AS path


def as_path(*patterns: str, match: MatchOption = MatchOption.ANY) -> AsPathCondition:
    return AsPathCondition(AsPathSet("a", patterns), match)


def test_as_path_is_rendered_as_space_separated_asns_neighbour_first() -> None:
    assert as_path_text((65002, 65003, 65010)) == "65002 65003 65010"
    assert as_path_text(()) == ""


def test_caret_and_underscore_match_the_neighbour_as() -> None:
    assert matches(as_path("^65002_"), route(65002, 65003))
    assert matches(as_path("^65002_"), route(65002))  # `_` matches the end too
    assert not matches(as_path("^65002_"), route(65003, 65002))
    assert not matches(as_path("^65002_"), route(650021))


def test_underscore_and_dollar_match_the_origin_as() -> None:
    assert matches(as_path("_65010$"), route(65002, 65010))
    assert matches(as_path("_65010$"), route(65010))  # `_` matches the start too
    assert not matches(as_path("_65010$"), route(65010, 65002))
    assert not matches(as_path("_65010$"), route(165010))


def test_underscores_on_both_sides_match_a_whole_asn_anywhere() -> None:
    condition = as_path("_65003_")
    assert matches(condition, route(65002, 65003, 65010))
    assert matches(condition, route(65003))
    assert not matches(condition, route(650031))
    assert not matches(condition, route(165003, 2))


def test_consecutive_boundaries_share_one_space() -> None:
    assert matches(as_path("_65002_65003_"), route(1, 65002, 65003, 4))
    assert not matches(as_path("_65002_65003_"), route(65002, 1, 65003))


def test_caret_dollar_matches_only_a_locally_originated_route() -> None:
    assert matches(as_path("^$"), route())
    assert not matches(as_path("^$"), route(65002))


def test_as_path_set_any_and_invert() -> None:
    both = ("_65010_", "^65099_")
    assert matches(as_path(*both), route(65099, 1))
    assert matches(as_path(*both), route(1, 65010, 2))
    assert not matches(as_path(*both), route(1, 2))
    assert matches(as_path(*both, match=MatchOption.INVERT), route(1, 2))
    assert not matches(as_path(*both, match=MatchOption.INVERT), route(1, 65010))


def test_as_path_sets_with_backreferences_keep_their_meaning() -> None:
    # Several expressions are searched as one alternation, except when a backreference would then
    # refer to another expression's group: `^(\d+)_\1_` is "the neighbour prepended itself".
    prepended = as_path(r"^(\d+)_\1_", "_65010_")
    assert matches(prepended, route(65002, 65002, 7))
    assert matches(prepended, route(65002, 65010))
    assert not matches(prepended, route(65002, 65003))
    named = as_path(r"^(?P<first>\d+)_(?P=first)$", "^1_")
    assert matches(named, route(5, 5))
    assert matches(named, route(1, 2))
    assert not matches(named, route(5, 6))


def test_underscore_is_only_a_boundary_outside_classes_and_escapes() -> None:
    assert as_path_regex(r"[_]").pattern == "[_]"
    assert as_path_regex(r"\_").pattern == r"\_"
    assert as_path_regex(r"[]_]").pattern == "[]_]"
    assert as_path_regex("_1_").pattern == "(?:^| |$)1(?:^| |$)"
    with pytest.raises(re.error):
        as_path_regex("[_")


def test_as_path_length_range_is_inclusive() -> None:
    condition = AsPathLengthCondition(min=2, max=3)
    assert not matches(condition, route(1))
    assert matches(condition, route(1, 2))
    assert matches(condition, route(1, 2, 3))
    assert not matches(condition, route(1, 2, 3, 4))
    assert matches(AsPathLengthCondition(max=0), route())
    assert matches(AsPathLengthCondition(min=5), route(*range(1, 8)))


# --------------------------------------------------------------------------- origin AS


def test_origin_as_is_the_last_as_on_the_path() -> None:
    condition = OriginAsCondition(frozenset({65010, 65020}))
    assert matches(condition, route(65002, 65010))
    assert not matches(condition, route(65010, 65002))


def test_origin_as_of_an_empty_path_is_the_local_as() -> None:
    assert matches(OriginAsCondition(frozenset({LOCAL_ASN})), route())
    assert not matches(OriginAsCondition(frozenset({65002})), route())


# --------------------------------------------------------------------------- communities


def communities(match: MatchOption) -> CommunityCondition:
    return CommunityCondition(CommunitySet("c", frozenset({NO_EXPORT, 65001 << 16 | 666})), match)


def test_community_set_any() -> None:
    assert matches(communities(MatchOption.ANY), route(1, communities=(NO_EXPORT,)))
    assert not matches(communities(MatchOption.ANY), route(1, communities=(NO_ADVERTISE,)))
    assert not matches(communities(MatchOption.ANY), route(1))


def test_community_set_all() -> None:
    assert matches(communities(MatchOption.ALL), route(1, communities=(1, NO_EXPORT, 65001 << 16 | 666)))
    assert not matches(communities(MatchOption.ALL), route(1, communities=(NO_EXPORT,)))


def test_community_set_invert() -> None:
    assert matches(communities(MatchOption.INVERT), route(1, communities=(NO_ADVERTISE,)))
    assert not matches(communities(MatchOption.INVERT), route(1, communities=(NO_EXPORT,)))


# --------------------------------------------------------------------------- neighbours and regions


def test_neighbor_set_tests_the_context_neighbour() -> None:
    condition = NeighborCondition(NeighborSet("n", frozenset({PEER})))
    other = RouteContext("127.0.0.1:50099", 65099, LOCAL_ASN, "127.0.0.1:50051")
    assert matches(condition)
    assert not matches(condition, context=other)
    inverted = NeighborCondition(NeighborSet("n", frozenset({PEER})), MatchOption.INVERT)
    assert not matches(inverted)
    assert matches(inverted, context=other)
    # A route with no neighbour (originated here) is in no neighbour set.
    assert matches(inverted, context=RouteContext("", 0, LOCAL_ASN, "127.0.0.1:50051"))


def test_region_set_any_and_invert() -> None:
    eu = RegionSet("eu", frozenset({"eu-west", "eu-central"}))
    assert matches(RegionCondition(eu), route(1, region="eu-west"))
    assert not matches(RegionCondition(eu), route(1, region="us-east"))
    assert not matches(RegionCondition(eu), route(1))
    assert matches(RegionCondition(eu, MatchOption.INVERT), route(1, region="us-east"))
    assert not matches(RegionCondition(eu, MatchOption.INVERT), route(1, region="eu-central"))


@pytest.mark.parametrize(
    "condition",
    [
        RegionCondition(RegionSet("r", frozenset({"x"})), MatchOption.ALL),
        NeighborCondition(NeighborSet("n", frozenset({PEER})), MatchOption.ALL),
        AsPathCondition(AsPathSet("a", ("_1_",)), MatchOption.ALL),
    ],
)
def test_single_valued_conditions_refuse_match_all(condition: Condition) -> None:
    with pytest.raises(ValueError, match="does not apply"):
        PolicyChain([Policy("p", (Statement("s", (condition,)),))])


# --------------------------------------------------------------------------- MED, LOCAL_PREF, health


def test_med_range_counts_an_absent_med_as_zero() -> None:
    assert matches(MedCondition(max=0), route(1))
    assert not matches(MedCondition(min=1), route(1))
    assert matches(MedCondition(min=10, max=20), route(1, med=10))
    assert matches(MedCondition(min=10, max=20), route(1, med=20))
    assert not matches(MedCondition(min=10, max=20), route(1, med=21))


def test_local_pref_range_counts_an_absent_local_pref_as_100() -> None:
    assert matches(LocalPrefCondition(min=100, max=100), route(1))
    assert not matches(LocalPrefCondition(min=101), route(1))
    assert matches(LocalPrefCondition(min=150), route(1, local_pref=150))
    assert not matches(LocalPrefCondition(max=99), route(1, local_pref=150))


def test_health_bounds_must_all_hold() -> None:
    condition = HealthCondition(max_latency_ms=200, max_error_rate=0.01, max_load=0.8)
    assert matches(condition, route(1, health=Health(latency_ms=200, error_rate=0.01, load=0.8)))
    assert not matches(condition, route(1, health=Health(latency_ms=201, error_rate=0.0, load=0.0)))
    assert not matches(condition, route(1, health=Health(latency_ms=10, error_rate=0.02, load=0.0)))
    assert not matches(condition, route(1, health=Health(latency_ms=10, error_rate=0.0, load=0.9)))
    # An absent bound does not constrain.
    assert matches(
        HealthCondition(max_load=0.5), route(1, health=Health(latency_ms=1e6, error_rate=1.0, load=0.1))
    )


def test_all_conditions_of_a_statement_must_match() -> None:
    chain = PolicyChain(
        [
            Policy(
                "p",
                (
                    Statement(
                        "s",
                        (names("acme.**"), OriginAsCondition(frozenset({65010})), MedCondition(max=5)),
                        (),
                        RouteDisposition.ACCEPT,
                    ),
                ),
            )
        ],
        RouteDisposition.REJECT,
    )
    assert chain.evaluate("acme.x", route(2, 65010, med=5), CONTEXT).accepted
    assert not chain.evaluate("other.x", route(2, 65010, med=5), CONTEXT).accepted
    assert not chain.evaluate("acme.x", route(2, 65011, med=5), CONTEXT).accepted
    assert not chain.evaluate("acme.x", route(2, 65010, med=6), CONTEXT).accepted


def test_a_statement_without_conditions_matches_every_route() -> None:
    chain = PolicyChain([Policy("p", (Statement("s", (), (), RouteDisposition.REJECT),))])
    assert not chain.evaluate("any.name", route(), CONTEXT).accepted
    assert not chain.name_dependent
