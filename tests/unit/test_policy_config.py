"""The `policy:` section: from YAML to a RoutingPolicy, one test per validation rule, and the examples.

Validation follows agentmesh.config: unknown keys and undefined references are errors, values are
not coerced across types, and every problem is reported at once with its location.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmesh.bgp.messages import AgentAttributes, Health, Origin, PathAttributes
from agentmesh.config import ConfigError, load_policy, parse_policy
from agentmesh.policy_config import PolicyAssignment, PolicyConfig, build_routing_policy, parse_community
from agentmesh.rib.attributes import NO_ADVERTISE, NO_EXPORT
from agentmesh.rib.policy import (
    AddCommunities,
    AddLocalPref,
    AsPathCondition,
    CapabilityCondition,
    MatchOption,
    NameCondition,
    NeighborCondition,
    PolicyChain,
    PrependAsPath,
    RouteContext,
    RouteDisposition,
    SetMed,
    SetNextHopSelf,
    StepOutcome,
    SubtractMed,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "policies"
CUSTOMER = "127.0.0.1:50052"
CONTEXT = RouteContext(CUSTOMER, 65020, 65001, "127.0.0.1:50051")

BRIEF = r"""
policy:
  defined_sets:
    names:        {internal: ["internal.**", "ops.*"]}
    capabilities: {billing: [billing, invoices]}
    as_paths:     {via-transit: ["_65010_"], long: ["^\\d+ \\d+ \\d+ \\d+ \\d+"]}
    communities:  {blackhole: ["65001:666", no-export]}
    neighbors:    {customers: ["127.0.0.1:50052"]}
    regions:      {eu: [eu-west, eu-central]}
  policies:
    - name: keep-internal-inside
      statements:
        - name: internal-names
          conditions: {names: {set: internal}}
          actions: {route: reject}
    - name: tag
      statements:
        - name: billing-from-customers
          conditions:
            capabilities: {set: billing, match: all}
            neighbors: {set: customers}
            as_path: {set: via-transit, match: invert}
          actions:
            communities: {add: ["65001:100"]}
            med: {subtract: 5}
            as_path_prepend: {times: 2}
            next_hop_self: true
  import: {policies: [keep-internal-inside, tag], default: accept}
  export: {policies: [], default: reject}
"""


def route(*as_path: int, **agent: Any) -> PathAttributes:
    return PathAttributes(
        origin=Origin.IGP, as_path=as_path, next_hop="127.0.0.1:50052", agent=AgentAttributes(**agent)
    )


def problems(data: Any) -> list[str]:
    """The problems parse_policy reports, one `location: message` each."""
    with pytest.raises(ConfigError) as caught:
        parse_policy(data)
    return [f"{p.location}: {p.message}" for p in caught.value.problems]


def one_problem(data: Any) -> str:
    [problem] = problems(data)
    return problem


def statement(
    conditions: dict[str, Any] | None = None, actions: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"name": "s", "conditions": conditions or {}, "actions": actions or {"route": "accept"}}


def with_statement(sets: dict[str, Any] | None = None, **parts: Any) -> dict[str, Any]:
    return {"defined_sets": sets or {}, "policies": [{"name": "p", "statements": [statement(**parts)]}]}


# --------------------------------------------------------------------------- round trip


def test_yaml_text_round_trips_to_a_routing_policy() -> None:
    config = parse_policy(yaml.safe_load(BRIEF)["policy"])
    assert config.defined_sets.communities == {"blackhole": (65001 << 16 | 666, NO_EXPORT)}
    assert config.import_ == PolicyAssignment.model_validate({"policies": ["keep-internal-inside", "tag"]})
    routing = build_routing_policy(config, {})
    imports = routing.import_chain(CUSTOMER)
    exports = routing.export_chain(CUSTOMER)
    assert imports is not None and exports is not None
    assert [policy.name for policy in imports.policies] == ["keep-internal-inside", "tag"]
    assert imports.name_dependent

    [tag] = imports.policies[1].statements
    kinds = {type(condition): condition for condition in tag.conditions}
    capability, as_path = kinds[CapabilityCondition], kinds[AsPathCondition]
    assert isinstance(capability, CapabilityCondition) and capability.match is MatchOption.ALL
    assert isinstance(as_path, AsPathCondition) and as_path.match is MatchOption.INVERT
    assert NeighborCondition in kinds
    assert tag.actions == (
        AddCommunities((65001 << 16 | 100,)),
        SubtractMed(5),
        PrependAsPath(2),
        SetNextHopSelf(),
    )

    assert not imports.evaluate("internal.tools", route(65020), CONTEXT).accepted
    billing = imports.evaluate("acme.billing", route(65020, capabilities=("billing", "invoices")), CONTEXT)
    assert billing.accepted and billing.attrs.as_path == (65001, 65001, 65020)
    assert billing.attrs.next_hop == "127.0.0.1:50051" and billing.attrs.med == 0
    assert billing.trail[0].outcome is StepOutcome.CONTINUED
    assert not exports.evaluate("acme.billing", route(), CONTEXT).accepted


def test_a_dumped_section_validates_again() -> None:
    config = parse_policy(yaml.safe_load(BRIEF)["policy"])
    assert parse_policy(config.model_dump()) == config
    dumped = config.model_dump(mode="json", exclude_defaults=True)
    assert "import" in dumped and "import_" not in dumped
    assert parse_policy(yaml.safe_load(yaml.safe_dump(dumped))) == config


def test_an_empty_or_null_section_configures_no_policy() -> None:
    for data in (None, {}, {"defined_sets": None, "policies": None, "import": None, "export": None}):
        config = parse_policy(data)
        assert config == PolicyConfig()
        routing = build_routing_policy(config, {})
        assert routing.import_chain(CUSTOMER) is None and routing.export_chain(CUSTOMER) is None


def test_neighbour_assignments_override_the_global_one_per_direction() -> None:
    config = parse_policy(yaml.safe_load(BRIEF)["policy"])
    own = PolicyAssignment.model_validate({"policies": ["tag"], "default": "reject"})
    routing = build_routing_policy(config, {CUSTOMER: (own, None), "127.0.0.1:50053": (None, None)})
    customer_import = routing.import_chain(CUSTOMER)
    assert customer_import is not None
    assert [p.name for p in customer_import.policies] == [
        "tag"
    ] and customer_import.default is RouteDisposition.REJECT
    assert routing.export_chain(CUSTOMER) is routing.export_chain("127.0.0.1:50053")
    other_import = routing.import_chain("127.0.0.1:50053")
    assert other_import is not None and [p.name for p in other_import.policies] == [
        "keep-internal-inside",
        "tag",
    ]


def test_neighbours_with_equal_assignments_share_one_compiled_chain() -> None:
    config = parse_policy(yaml.safe_load(BRIEF)["policy"])
    own = PolicyAssignment.model_validate({"policies": ["tag"]})
    same = PolicyAssignment.model_validate({"policies": ["tag"]})
    routing = build_routing_policy(config, {"127.0.0.1:1": (own, None), "127.0.0.1:2": (same, None)})
    assert routing.import_chain("127.0.0.1:1") is routing.import_chain("127.0.0.1:2")


def test_building_with_an_undefined_policy_is_an_error() -> None:
    unknown = PolicyAssignment.model_validate({"policies": ["nope"]})
    with pytest.raises(ValueError, match="unknown policies"):
        build_routing_policy(PolicyConfig(), {CUSTOMER: (unknown, None)})


def test_assignment_problems_locate_undefined_policies_for_neighbour_checks() -> None:
    config = parse_policy(yaml.safe_load(BRIEF)["policy"])
    assignment = PolicyAssignment.model_validate({"policies": ["tag", "teg"]})
    [(location, message)] = config.assignment_problems(assignment)
    assert location == ("policies", 1)
    assert "unknown policy 'teg' (did you mean 'tag'?)" in message
    assert "defined: keep-internal-inside, tag" in message


def test_importing_policy_config_does_not_import_config() -> None:
    # config.py imports policy_config for its `policy:` key; the reverse at import time would be a cycle.
    code = "import sys, agentmesh.policy_config; assert 'agentmesh.config' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --------------------------------------------------------------------------- communities


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("65001:666", 65001 << 16 | 666),
        ("0:0", 0),
        ("65535:65535", 0xFFFF_FFFF),
        (4294967041, NO_EXPORT),
        ("no-export", NO_EXPORT),
        ("no-advertise", NO_ADVERTISE),
    ],
)
def test_community_forms(text: object, value: int) -> None:
    assert parse_community(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("65536:1", "16-bit"),
        ("1:65536", "16-bit"),
        ("65001", "not a community"),
        ("65001:1:2", "not a community"),
        ("NO_EXPORT", "did you mean 'no-export'"),
        (-1, "out of range"),
        (2**32, "out of range"),
        (1.5, "got float"),
        (True, "got bool"),
    ],
)
def test_community_errors(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_community(text)


def test_invalid_communities_are_located_in_sets_and_actions() -> None:
    data = with_statement(
        {"communities": {"c": ["65001:1", "bad"]}}, actions={"communities": {"add": ["x:1"]}}
    )
    found = problems(data)
    assert found[0].startswith("policy.defined_sets.communities.c[1]: 'bad' is not a community")
    assert found[1].startswith("policy.policies[0].statements[0].actions.communities.add[0]: 'x:1' is not")


# --------------------------------------------------------------------------- one test per rule


def test_unknown_keys_are_errors_with_a_suggestion() -> None:
    assert one_problem({"polices": []}) == (
        "policy.polices: unknown key (did you mean 'policies'?);"
        " allowed keys here: defined_sets, export, import, policies"
    )
    message = one_problem(with_statement(conditions={"name": {"set": "x"}}))
    assert message.startswith(
        "policy.policies[0].statements[0].conditions.name: unknown key (did you mean 'names'?)"
    )


def test_unknown_set_references_name_the_defined_sets() -> None:
    data = with_statement(
        {"names": {"internal": ["internal.**"], "ops": ["ops.*"]}}, conditions={"names": {"set": "internl"}}
    )
    assert one_problem(data) == (
        "policy.policies[0].statements[0].conditions.names.set:"
        " unknown name set 'internl' (did you mean 'internal'?); defined: internal, ops"
    )


def test_unknown_set_reference_when_no_set_of_that_kind_exists() -> None:
    assert one_problem(with_statement(conditions={"regions": {"set": "eu"}})) == (
        "policy.policies[0].statements[0].conditions.regions.set:"
        " unknown region set 'eu': no region sets are defined (defined_sets.regions)"
    )


def test_unknown_policy_references_in_assignments() -> None:
    data = with_statement()
    data["import"] = {"policies": ["p", "q"]}
    data["export"] = {"policies": ["r"]}
    assert problems(data) == [
        "policy.import.policies[1]: unknown policy 'q'; defined: p",
        "policy.export.policies[0]: unknown policy 'r'; defined: p",
    ]


def test_a_policy_listed_twice_in_an_assignment() -> None:
    data = with_statement()
    data["import"] = {"policies": ["p", "p"]}
    assert one_problem(data) == "policy.import.policies[1]: 'p' is already listed at policies[0]"


def test_duplicate_policy_names() -> None:
    policy = {"name": "p", "statements": [statement()]}
    assert one_problem({"policies": [policy, policy]}) == (
        "policy.policies[1].name: duplicate policy name 'p', already used by policies[0]"
    )


def test_duplicate_statement_names() -> None:
    assert one_problem({"policies": [{"name": "p", "statements": [statement(), statement()]}]}) == (
        "policy.policies[0].statements[1].name: duplicate statement name 's', already used by statements[0]"
    )


def test_invalid_as_path_regex_reports_the_regex_error() -> None:
    message = one_problem({"defined_sets": {"as_paths": {"a": ["_65010_", "(65002"]}}})
    assert message.startswith(
        "policy.defined_sets.as_paths.a[1]: '(65002' is not a valid regular expression: missing )"
    )


def test_ranges_with_min_greater_than_max() -> None:
    assert one_problem(with_statement(conditions={"med": {"min": 10, "max": 5}})) == (
        "policy.policies[0].statements[0].conditions.med.min:"
        " min 10 is greater than max 5: nothing would match"
    )


def test_ranges_need_a_bound_and_32_bit_values() -> None:
    assert one_problem(with_statement(conditions={"local_pref": {}})) == (
        "policy.policies[0].statements[0].conditions.local_pref: give min, max or both"
    )
    assert one_problem(with_statement(conditions={"local_pref": {"max": 2**32}})) == (
        "policy.policies[0].statements[0].conditions.local_pref.max: 4294967296 is out of range 0..4294967295"
    )
    assert one_problem(with_statement(conditions={"as_path_length": {"min": 256}})).endswith(
        "as_path_length.min: AS paths are at most 255 ASes long; nothing would match"
    )


def test_a_policy_needs_statements() -> None:
    assert one_problem({"policies": [{"name": "p", "statements": []}]}) == (
        "policy.policies[0].statements: a policy needs at least one statement"
    )
    assert (
        one_problem({"policies": [{"name": "p"}]})
        == "policy.policies[0].statements: a policy needs at least one statement"
    )


@pytest.mark.parametrize("actions", [{}, {"route": "none"}, {"next_hop_self": False}])
def test_a_statement_must_do_something(actions: dict[str, Any]) -> None:
    data = {"policies": [{"name": "p", "statements": [{"name": "s", "actions": actions}]}]}
    assert one_problem(data).startswith(
        "policy.policies[0].statements[0].actions: the statement does nothing"
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("a..b", "'a..b' is not a valid name"),
        ("acme weather", "is not a valid name"),
        ("acme/x.*", "is not a valid name"),
        ("acme.x/*", "is not a valid glob label"),
        ("a**.b", "'**' must be a whole label"),
        ("a.[z-a]", "the range z-a is empty"),
        ("a.[b", "is not a valid glob label"),
        ("", "must not be empty"),
        ("a" * 256, "names are at most 255"),
    ],
)
def test_name_set_entries_follow_the_name_grammar(entry: str, message: str) -> None:
    found = one_problem({"defined_sets": {"names": {"n": ["ok.name", entry]}}})
    assert found.startswith("policy.defined_sets.names.n[1]: ")
    assert message in found


def test_name_set_entries_accept_names_aggregates_and_globs() -> None:
    entries = [
        "acme.weather.forecast",
        "acme.*",
        "weatherAgent",
        "**",
        "acme.**",
        "*.weather.*",
        "a?.[a-z]*.[!0-9]",
    ]
    config = parse_policy({"defined_sets": {"names": {"n": entries}}})
    assert config.defined_sets.names["n"] == tuple(entries)


@pytest.mark.parametrize(("times", "ok"), [(0, False), (1, True), (32, True), (33, False)])
def test_prepend_times_is_1_to_32(times: int, ok: bool) -> None:
    data = with_statement(actions={"as_path_prepend": {"times": times}})
    if ok:
        parse_policy(data)
    else:
        assert one_problem(data).endswith(f"as_path_prepend.times: must be 1..32, got {times}")


def test_prepend_asn_must_be_an_as_number() -> None:
    assert one_problem(with_statement(actions={"as_path_prepend": {"times": 1, "asn": 0}})).startswith(
        "policy.policies[0].statements[0].actions.as_path_prepend.asn: AS 0 is not an AS number"
    )


def test_match_options() -> None:
    assert one_problem(
        with_statement({"regions": {"r": ["x"]}}, conditions={"regions": {"set": "r", "match": "none"}})
    ) == (
        "policy.policies[0].statements[0].conditions.regions.match:"
        " unknown match option 'none'; use any or invert"
    )
    assert "'all' applies only to capabilities and communities" in one_problem(
        with_statement({"names": {"n": ["a"]}}, conditions={"names": {"set": "n", "match": "all"}})
    )
    parse_policy(
        with_statement(
            {"capabilities": {"c": ["x"]}}, conditions={"capabilities": {"set": "c", "match": "all"}}
        )
    )


def test_route_and_default_values() -> None:
    assert one_problem(with_statement(actions={"route": "drop"})).endswith(
        "actions.route: unknown route action 'drop'; use accept, reject or none"
    )
    assert (
        one_problem({"export": {"default": "deny"}})
        == "policy.export.default: unknown default 'deny'; use accept or reject"
    )


def test_attribute_actions_take_exactly_one_operation() -> None:
    assert one_problem(with_statement(actions={"local_pref": {"set": 1, "add": 2}})).endswith(
        "actions.local_pref: give exactly one of set and add"
    )
    assert one_problem(with_statement(actions={"med": {}})).endswith(
        "actions.med: give exactly one of set, add and subtract"
    )
    assert one_problem(with_statement(actions={"med": {"subtract": -1}})).endswith(
        "actions.med.subtract: -1 is out of range: LOCAL_PREF and MED are 32-bit (0..4294967295)"
    )


def test_community_actions() -> None:
    assert one_problem(with_statement(actions={"communities": {"replace": [], "add": ["1:1"]}})).endswith(
        "actions.communities.replace: replace sets the whole list: it cannot be combined with add or remove"
    )
    assert one_problem(with_statement(actions={"communities": {"add": []}})).endswith(
        "actions.communities.add: an empty list does nothing; give at least one community"
    )
    assert one_problem(with_statement(actions={"communities": {}})).endswith(
        "actions.communities: give add, remove or replace"
    )
    # Replacing with nothing strips every community: that is a real action.
    parse_policy(with_statement(actions={"communities": {"replace": []}}))


def test_defined_sets_must_be_well_formed() -> None:
    assert problems({"defined_sets": {"regions": {"eu": [], "bad name": ["x"], "r": ["x", "x"]}}}) == [
        "policy.defined_sets.regions.eu: an empty set matches nothing; give at least one region",
        "policy.defined_sets.regions.bad name: 'bad name' is not a valid set name: letters, digits, '_', '.'"
        " and '-', starting with a letter or digit, at most 64 characters",
        "policy.defined_sets.regions.r[1]: 'x' is already in the set at index 0",
    ]


def test_neighbour_sets_hold_canonical_addresses() -> None:
    config = parse_policy({"defined_sets": {"neighbors": {"n": ["LOCALHOST:50052", "[::1]:50052"]}}})
    assert config.defined_sets.neighbors["n"] == ("localhost:50052", "[::1]:50052")
    assert one_problem({"defined_sets": {"neighbors": {"n": ["10.0.0.1"]}}}) == (
        "policy.defined_sets.neighbors.n[0]:"
        " '10.0.0.1' is missing a port (expected host:port, e.g. 127.0.0.1:50051)"
    )


def test_health_conditions() -> None:
    assert one_problem(with_statement(conditions={"health": {}})).endswith(
        "conditions.health: give at least one of max_latency_ms, max_error_rate and max_load"
    )
    assert one_problem(with_statement(conditions={"health": {"max_load": -0.5}})).endswith(
        "conditions.health.max_load: must be 0 or more, got -0.5"
    )
    # Integers are numbers too (as for config.py's float keys).
    parse_policy(with_statement(conditions={"health": {"max_latency_ms": 200}}))


def test_origin_as_list() -> None:
    assert one_problem(with_statement(conditions={"origin_as": []})).endswith(
        "conditions.origin_as: an empty list matches nothing; give at least one AS number"
    )
    assert one_problem(with_statement(conditions={"origin_as": [65001, 0]})).startswith(
        "policy.policies[0].statements[0].conditions.origin_as[1]: AS 0 is not an AS number"
    )


def test_values_are_not_coerced_across_types() -> None:
    assert problems(
        with_statement(conditions={"med": {"min": "5"}}, actions={"as_path_prepend": {"times": True}})
    ) == [
        "policy.policies[0].statements[0].conditions.med.min: expected an integer, got str '5'",
        "policy.policies[0].statements[0].actions.as_path_prepend.times: expected an integer, got bool True",
    ]
    assert (
        one_problem({"policies": {"name": "p"}}) == "policy.policies: expected a list, got dict {'name': 'p'}"
    )


def test_every_problem_is_reported_at_once() -> None:
    data = {
        "defined_sets": {"as_paths": {"a": ["("]}, "names": {"n": ["a..b"]}},
        "policies": [
            {
                "name": "p",
                "statements": [{"name": "s", "actions": {"route": "maybe", "med": {"add": 1, "set": 1}}}],
            }
        ],
        "import": {"default": "deny"},
    }
    assert [problem.split(":")[0] for problem in problems(data)] == [
        "policy.defined_sets.names.n[0]",
        "policy.defined_sets.as_paths.a[0]",
        "policy.policies[0].statements[0].actions.route",
        "policy.policies[0].statements[0].actions.med",
        "policy.import.default",
    ]


# --------------------------------------------------------------------------- files


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_policy_reports_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "policy:\n  policies:\n    - name: p\n      statements:\n        - name: s\n          actions: {}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert str(caught.value) == (
        f"{path}:6: policy.policies[0].statements[0].actions: the statement does nothing:"
        " give route: accept or reject, or an attribute action"
        " (local_pref, med, communities, as_path_prepend, next_hop_self)"
    )


def test_load_policy_refuses_unquoted_base_60_communities(tmp_path: Path) -> None:
    # YAML 1.1 reads 65001:10 as 65001 * 60 + 10; only quoting makes it the community 65001:10.
    path = write(
        tmp_path, "policy:\n  defined_sets:\n    communities:\n      c: [65001:10, '65001:20', 65001:100]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert str(caught.value) == (
        f"{path}:4: policy.defined_sets.communities.c[0]:"
        " YAML reads the unquoted 65001:10 as a base-60 number, not a community; write '65001:10'"
    )


def test_load_policy_refuses_duplicate_keys_and_other_sections(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":3: policy\.import: duplicate key \(first given on line 2\)"):
        load_policy(write(tmp_path, "policy:\n  import: {}\n  import: {}\n"))
    with pytest.raises(ConfigError, match="node: unknown key; allowed keys here: policy"):
        load_policy(write(tmp_path, "policy: {}\nnode: {}\n"))
    with pytest.raises(ConfigError, match="expected a mapping with a policy: section"):
        load_policy(write(tmp_path, "- 1\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_policy(tmp_path / "missing.yaml")


# --------------------------------------------------------------------------- examples


def _example(name: str) -> PolicyConfig:
    return load_policy(EXAMPLES / name)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda path: path.name)
def test_every_example_loads_and_builds(path: Path) -> None:
    config = load_policy(path)
    text = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(text) == {"policy"}
    routing = build_routing_policy(config, {})
    chains = [routing.import_chain(CUSTOMER), routing.export_chain(CUSTOMER)]
    assert config.policies
    assert any(chains) or path.name == "accept-only-customer.yaml"  # that one is assigned per neighbour


def test_examples_are_the_documented_set() -> None:
    assert {path.name for path in EXAMPLES.glob("*.yaml")} == {
        "reject-long-as-paths.yaml",
        "prefer-local-region.yaml",
        "prefer-healthy-backends.yaml",
        "keep-internal-in-as.yaml",
        "accept-only-customer.yaml",
    }
    docs = (REPO / "docs" / "policy.md").read_text(encoding="utf-8")
    for path in EXAMPLES.glob("*.yaml"):
        assert f"examples/policies/{path.name}" in docs


def _import_chain(name: str) -> PolicyChain:
    chain = build_routing_policy(_example(name), {}).import_chain(CUSTOMER)
    assert chain is not None
    return chain


def test_example_reject_long_as_paths() -> None:
    chain = _import_chain("reject-long-as-paths.yaml")
    assert chain.evaluate("a.b", route(*range(1, 8)), CONTEXT).accepted
    assert not chain.evaluate("a.b", route(*range(1, 9)), CONTEXT).accepted
    assert chain.evaluate("a.b", route(65002, 65010, 3), CONTEXT).accepted
    assert not chain.evaluate("a.b", route(65002, 65010, 3, 4), CONTEXT).accepted


def test_example_prefer_local_region() -> None:
    chain = _import_chain("prefer-local-region.yaml")
    assert chain.evaluate("a.b", route(1, region="eu-west"), CONTEXT).attrs.local_pref == 150
    other = route(1, region="us-east")
    assert chain.evaluate("a.b", other, CONTEXT).attrs is other


def test_example_prefer_healthy_backends() -> None:
    chain = _import_chain("prefer-healthy-backends.yaml")

    def outcome(**health: float) -> tuple[str, int | None, int | None]:
        verdict = chain.evaluate("a.b", route(1, health=Health(**health)), CONTEXT)
        assert verdict.accepted
        return verdict.trail[-1].statement, verdict.attrs.local_pref, verdict.attrs.med

    assert outcome(latency_ms=100, error_rate=0.0, load=0.5) == ("healthy", 120, 0)
    assert outcome(latency_ms=600, error_rate=0.02, load=0.9) == ("degraded", None, 50)
    assert outcome(latency_ms=5000, error_rate=0.5, load=1.0) == ("unhealthy", 50, 200)


def test_example_keep_internal_in_as() -> None:
    routing = build_routing_policy(_example("keep-internal-in-as.yaml"), {})
    ebgp, ibgp = routing.export_chain("127.0.0.1:50052"), routing.export_chain("10.0.0.2:179")
    assert ebgp is not None and ibgp is not None
    ctx = RouteContext("127.0.0.1:50052", 65002, 65001, "127.0.0.1:50051")
    assert not ebgp.evaluate("internal.tools.deploy", route(), ctx).accepted
    assert not ebgp.evaluate("ops.pager", route(), ctx).accepted
    public = ebgp.evaluate("acme.weather", route(), ctx)
    assert public.accepted and public.attrs.communities == (NO_EXPORT,)
    internal_ctx = RouteContext("10.0.0.2:179", 65001, 65001, "127.0.0.1:50051")
    internal = route()
    assert ibgp.evaluate("internal.tools.deploy", internal, internal_ctx).attrs is internal


def test_example_accept_only_customer_as_a_neighbour_assignment() -> None:
    assignment = PolicyAssignment.model_validate({"policies": ["accept-only-customer"], "default": "reject"})
    routing = build_routing_policy(_example("accept-only-customer.yaml"), {CUSTOMER: (assignment, None)})
    chain = routing.import_chain(CUSTOMER)
    assert chain is not None and routing.import_chain("127.0.0.1:50053") is None
    accepted = chain.evaluate("customer.billing.invoice", route(65020, 65020), CONTEXT)
    assert accepted.accepted and accepted.attrs.communities == (65001 << 16 | 20,)
    assert not chain.evaluate("acme.billing", route(65020), CONTEXT).accepted  # not its namespace
    assert not chain.evaluate("customer.billing", route(65020, 65099), CONTEXT).accepted  # learnt elsewhere
    assert not chain.evaluate("customer.billing", route(650201), CONTEXT).accepted


def test_parsed_actions_and_conditions_map_to_engine_values() -> None:
    config = parse_policy(
        with_statement(
            {"names": {"n": ["a.*"]}},
            conditions={"names": {"set": "n", "match": "invert"}},
            actions={"local_pref": {"add": -5}, "med": {"set": 3}, "route": "reject"},
        )
    )
    chain = build_routing_policy(
        config, {CUSTOMER: (PolicyAssignment.model_validate({"policies": ["p"]}), None)}
    )
    built = chain.import_chain(CUSTOMER)
    assert built is not None
    [stmt] = built.policies[0].statements
    assert stmt.disposition is RouteDisposition.REJECT
    assert stmt.actions == (SetMed(3), AddLocalPref(-5))
    [condition] = stmt.conditions
    assert isinstance(condition, NameCondition) and condition.match is MatchOption.INVERT
