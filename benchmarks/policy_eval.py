"""How fast the policy engine evaluates routes: `PolicyChain.evaluate_many` over UPDATE-sized groups.

An UPDATE carries many names sharing one attribute set, and the routing core hands policy exactly
that: the names of one UPDATE with their attributes. This script builds N names in groups of G
names per attribute set (the attribute sets differ in AS_PATH, communities, region, health and MED),
then times, best of R runs:

* a no-op pass: an empty chain with default accept (only the verdict and its one-step trail are built;
  with no policy configured at all, `RoutingPolicy.import_chain` returns None and nothing runs);
* a 20-statement import policy from YAML, mixing every condition kind, 5 of them on names
  (exact names, an aggregate, globs, an inverted set), so groups split;
* the same policy evaluated name by name with `PolicyChain.evaluate`, for comparison.

It prints routes/s for each and the microseconds policy adds per route, and what that means for a
node whose core passes 250k routes/s per core without policy. Figures only; nothing is asserted.

Sizes: `AGENTMESH_BENCH_SIZE=small` runs 20k names; `full` (the default) 100k; `--names`, `--group`
and `--runs` override.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import yaml

from agentmesh.bgp.messages import AgentAttributes, Health, Origin, PathAttributes
from agentmesh.config import parse_policy
from agentmesh.policy_config import build_routing_policy
from agentmesh.rib.policy import NameCondition, PolicyChain, RouteContext, RouteDisposition

SIZES = {"small": 20_000, "full": 100_000}
CORE_ROUTES_PER_SECOND = 250_000  # the routing core's no-policy throughput per core (docs/PERFORMANCE.md)

POLICY = """
defined_sets:
  names:
    internal: ["internal.**", "*.private.*"]
    partners: [PARTNERS]
    acme: ["acme.*"]
    weather: ["*.weather.*", "**.forecast?"]
    beta: ["beta.**"]
  capabilities: {billing: [billing, invoices], chat: [chat]}
  as_paths: {via-transit: ["_65010_"], from-65002: ["^65002_"], bogons: ["_6449[6-9]_", "_645[01][0-9]_"]}
  communities: {blackhole: ["65001:666"], no-export: [no-export], graceful: ["65535:0"]}
  neighbors: {customers: ["127.0.0.1:50052", "127.0.0.1:50053"]}
  regions: {eu: [eu-west, eu-central], us: [us-east]}
policies:
  - name: hygiene
    statements:
      - {name: too-long, conditions: {as_path_length: {min: 12}}, actions: {route: reject}}
      - {name: bogon-path, conditions: {as_path: {set: bogons}}, actions: {route: reject}}
      - {name: bogon-origin, conditions: {origin_as: [64496, 64497, 64511]}, actions: {route: reject}}
      - {name: internal, conditions: {names: {set: internal}}, actions: {route: reject}}
      - {name: blackhole, conditions: {communities: {set: blackhole}}, actions: {route: reject}}
      - {name: transit, conditions: {as_path: {set: via-transit}}, actions: {med: {add: 50}}}
  - name: preference
    statements:
      - {name: eu, conditions: {regions: {set: eu}}, actions: {local_pref: {add: 20}}}
      - name: healthy
        conditions: {health: {max_latency_ms: 200, max_error_rate: 0.01}}
        actions: {med: {subtract: 10}}
      - {name: degraded, conditions: {med: {min: 100}}, actions: {local_pref: {add: -10}}}
      - name: billing
        conditions: {capabilities: {set: billing, match: all}}
        actions: {communities: {add: ["65001:100"]}}
      - {name: partners, conditions: {names: {set: partners}}, actions: {local_pref: {set: 150}}}
      - {name: acme, conditions: {names: {set: acme}}, actions: {communities: {add: ["65001:200"]}}}
      - {name: customers, conditions: {neighbors: {set: customers}}, actions: {local_pref: {add: 5}}}
      - name: not-chat-outside-eu
        conditions: {capabilities: {set: chat, match: invert}, regions: {set: eu, match: invert}}
        actions: {med: {add: 1}}
      - name: preferred
        conditions: {local_pref: {min: 200}}
        actions: {communities: {add: ["65001:300"]}}
      - {name: lowest-med, conditions: {med: {max: 0}}, actions: {communities: {remove: ["65001:999"]}}}
      - {name: from-65002, conditions: {as_path: {set: from-65002}}, actions: {local_pref: {add: 1}}}
      - {name: weather, conditions: {names: {set: weather}}, actions: {med: {set: 7}}}
  - name: final
    statements:
      - name: graceful-shutdown
        conditions: {communities: {set: graceful}}
        actions: {local_pref: {set: 0}, route: accept}
      - {name: not-beta, conditions: {names: {set: beta, match: invert}}, actions: {route: accept}}
import: {policies: [hygiene, preference, final], default: reject}
"""

CONTEXT = RouteContext(neighbor="127.0.0.1:50052", neighbor_asn=65002, local_asn=65001, local_next_hop="n:1")
NAME_SHAPES = (
    "acme.weather.forecast{i}",
    "acme.agent{i}",
    "internal.ops.tool{i}",
    "beta.lab.agent{i}",
    "partner{p}.desk.agent{i}",
    "corp.sales.agent{i}",
    "corp.private.agent{i}",
    "corp.support.agent{i}",
)


def attribute_sets(count: int) -> list[PathAttributes]:
    sets = []
    for i in range(count):
        path = (65002, 65010, 65020 + i % 7) if i % 3 == 0 else (65002 + i % 4, 65030 + i % 11)
        sets.append(
            PathAttributes(
                origin=Origin.IGP,
                as_path=path,
                next_hop=f"10.0.0.{i % 250}:50051",
                med=None if i % 2 else i % 150,
                communities=(0xFDE9_0064,) if i % 5 == 0 else (),
                agent=AgentAttributes(
                    capabilities=("billing", "invoices") if i % 4 == 0 else ("chat",),
                    region=("eu-west", "us-east", "ap-south")[i % 3],
                    health=Health(latency_ms=float(i % 400), error_rate=(i % 10) / 200, load=0.5),
                ),
            )
        )
    return sets


def workload(names: int, group: int) -> list[tuple[list[str], PathAttributes]]:
    all_names = [NAME_SHAPES[i % len(NAME_SHAPES)].format(i=i, p=i % 50) for i in range(names)]
    groups = [all_names[i : i + group] for i in range(0, names, group)]
    return list(zip(groups, attribute_sets(len(groups)), strict=True))


def partner_names() -> str:
    return ", ".join(f"partner{p}.desk.agent{i}" for p in range(50) for i in range(0, 2000, 40))


def best_of(runs: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = os.environ.get("AGENTMESH_BENCH_SIZE", "full")
    parser.add_argument("--names", type=int, default=SIZES.get(size, SIZES["full"]))
    parser.add_argument("--group", type=int, default=1000, help="names per attribute set (per UPDATE)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    config = parse_policy(yaml.safe_load(POLICY.replace("PARTNERS", partner_names())))
    chain = build_routing_policy(config, {}).import_chain(CONTEXT.neighbor)
    assert chain is not None
    statements = sum(len(policy.statements) for policy in chain.policies)
    empty = PolicyChain([], RouteDisposition.ACCEPT)
    work = workload(args.names, args.group)
    total = sum(len(names) for names, _ in work)

    def chained(target: PolicyChain) -> Callable[[], None]:
        def run() -> None:
            for names, attrs in work:
                target.evaluate_many(names, attrs, CONTEXT)

        return run

    def per_name() -> None:
        for names, attrs in work:
            for name in names:
                chain.evaluate(name, attrs, CONTEXT)

    outcomes = sum(len(chain.evaluate_many(names, attrs, CONTEXT)) for names, attrs in work)
    accepted = sum(
        len(group)
        for names, attrs in work
        for verdict, group in chain.evaluate_many(names, attrs, CONTEXT)
        if verdict.accepted
    )
    on_names = sum(
        isinstance(condition, NameCondition)
        for policy in chain.policies
        for statement in policy.statements
        for condition in statement.conditions
    )
    print(
        f"{total} names in {len(work)} groups of {args.group} per attribute set; {statements}-statement"
        f" import policy ({on_names} name conditions): {outcomes} distinct outcomes,"
        f" {accepted} names accepted; best of {args.runs} runs"
    )
    rows = [
        ("no-op pass: empty chain, default accept", best_of(args.runs, chained(empty))),
        (f"{statements}-statement policy, evaluate_many", best_of(args.runs, chained(chain))),
        (f"{statements}-statement policy, evaluate per name", best_of(args.runs, per_name)),
    ]
    print(f"{'pass':<48} {'seconds':>9} {'routes/s':>12} {'us/route':>9}")
    for label, seconds in rows:
        print(f"{label:<48} {seconds:>9.4f} {total / seconds:>12,.0f} {seconds / total * 1e6:>9.3f}")
    policy_cost = rows[1][1] / total
    core = 1 / CORE_ROUTES_PER_SECOND
    print(
        f"a core passing {CORE_ROUTES_PER_SECOND:,} routes/s without policy would pass"
        f" {1 / (core + policy_cost):,.0f} routes/s with this policy"
        f" ({core / (core + policy_cost):.0%} of its no-policy throughput)"
    )


if __name__ == "__main__":
    main()
