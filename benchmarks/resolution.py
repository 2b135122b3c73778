"""Resolution benchmark: per-lookup latency against a Loc-RIB of 1M routes, on the sans-IO `Rib`.

The table is built the way a node builds it: `Rib.receive` of UPDATEs from two eBGP neighbours (every name
from the first, every fourth name also from the second with a longer AS_PATH, so the decision process
runs), in a couple of thousand distinct attribute sets, plus aggregates `svc{k}.*` originated locally with
`Rib.originate`. Names look like `svc{k}.g{group}.x{leaf}` (1,000 services).

Then each kind of query is timed one call at a time with `time.perf_counter_ns`:

* longest match of an exact name in the table (`resolve.longest_match` + `Rib.best`, what `Node.resolve`
  does in its owner task);
* longest match of a name that only an aggregate serves (`svc1042.g7.y3` -> `svc1042.*`);
* longest match of a name nothing serves (a miss walks every covering aggregate);
* `ResolutionIndex.by_capability` for a rare tag (~N/2,000 names) and a common one (~N/100 names): it
  returns a frozenset copy, so its cost grows with the answer;
* `ResolutionIndex.glob` with a literal first label, `svc{k}.*.x?`.

Printed: p50, p99 and max in microseconds (with the bare cost of the timer calls, which every sample
includes), and the build time and RSS of the table. Garbage collection stays enabled, as in a node.

Sizes: `AGENTMESH_BENCH_SIZE=small` builds 20k routes (the `make bench` smoke test); `full` (the default)
builds 1M; `--routes N` picks the size.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

from agentmesh.bgp.messages import AgentAttributes, Origin, PathAttributes, Update
from agentmesh.rib.resolve import longest_match
from agentmesh.rib.rib import Rib

SIZES = {"small": 20_000, "full": 1_000_000}
SERVICES = 1_000
GROUPS = 50
ATTRIBUTE_SETS = 2_000
#: Services with no specific routes, served only by their aggregate `svc{k}.*`.
AGGREGATED_SERVICES = range(SERVICES, SERVICES + 100)
NAMES_PER_UPDATE = 10_000
PEERS = (("127.0.0.1:50101", 65101), ("127.0.0.1:50103", 65103))


def rss_kib(key: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def name_of(i: int) -> str:
    service, rest = i % SERVICES, i // SERVICES
    return f"svc{service}.g{rest % GROUPS}.x{rest // GROUPS}"


def attribute_sets(first_as: int, extra_hops: int) -> list[PathAttributes]:
    sets = []
    for a in range(ATTRIBUTE_SETS):
        agent = AgentAttributes(
            capabilities=(f"cap{a % 100}", f"kind{a}"),
            description=f"benchmark agent kind {a}",
            region=f"region-{a % 5}",
        )
        as_path = (first_as, *range(64600, 64600 + extra_hops), 64512 + a % 50)
        sets.append(PathAttributes(origin=Origin.IGP, as_path=as_path, next_hop="127.0.0.1:1", agent=agent))
    return sets


def build(routes: int) -> tuple[Rib, float]:
    """A Rib with `routes` names received from two peers plus the aggregates; returns it and build time."""
    names = [name_of(i) for i in range(routes)]
    # Names grouped per attribute set, the way UPDATEs carry them.
    per_set: list[list[str]] = [[] for _ in range(ATTRIBUTE_SETS)]
    for i, name in enumerate(names):
        per_set[(i * 7919) % ATTRIBUTE_SETS].append(name)
    updates: list[tuple[str, Update]] = []
    for (key, asn), extra_hops, stride in zip(PEERS, (0, 2), (1, 4), strict=True):
        for attrs, group in zip(attribute_sets(asn, extra_hops), per_set, strict=True):
            selected = group[::stride]
            for start in range(0, len(selected), NAMES_PER_UPDATE):
                chunk = tuple(selected[start : start + NAMES_PER_UPDATE])
                updates.append((key, Update(attributes=attrs, announced=chunk)))

    t0 = time.perf_counter()
    rib = Rib(65102, 0x0A000066, "127.0.0.1:50102", 0.1)
    for key, asn in PEERS:
        rib.add_peer(key, asn, router_id=0)
    for key, update in updates:
        result = rib.receive(key, update, now=0.0)
        if result.error is not None or result.dropped is not None:
            raise RuntimeError(f"UPDATE not installed: {result}")
    aggregate = AgentAttributes(capabilities=("aggregate",), description="a whole service")
    rib.originate([f"svc{k}.*" for k in AGGREGATED_SERVICES], aggregate)
    return rib, time.perf_counter() - t0


def measure(fn: Callable[[str], object], queries: list[str]) -> list[int]:
    clock = time.perf_counter_ns
    samples = []
    for query in queries:
        t0 = clock()
        fn(query)
        samples.append(clock() - t0)
    return samples


def percentile(sorted_samples: list[int], fraction: float) -> float:
    return sorted_samples[min(len(sorted_samples) - 1, int(fraction * len(sorted_samples)))] / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--routes", type=int, help="table size (default: from AGENTMESH_BENCH_SIZE)")
    parser.add_argument("--lookups", type=int, help="lookups per kind (default: 100k, small: 20k)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    size = os.environ.get("AGENTMESH_BENCH_SIZE", "full")
    if size not in SIZES:
        parser.error(f"AGENTMESH_BENCH_SIZE must be one of {', '.join(SIZES)}, not {size!r}")
    routes = args.routes or SIZES[size]
    lookups = args.lookups or (20_000 if size == "small" else 100_000)
    rng = random.Random(args.seed)

    rss0 = rss_kib()
    rib, build_seconds = build(routes)
    rss1 = rss_kib()
    counts = rib.counts()
    loc = rib._loc  # what Node.resolve reads, in its owner task
    print(
        f"resolution: Loc-RIB {counts.loc_rib:,} entries ({routes:,} routes, {len(AGGREGATED_SERVICES)} "
        f"aggregates), Adj-RIB-In {counts.adj_rib_in:,}, {counts.attribute_sets:,} attribute sets",
        flush=True,
    )
    print(
        f"build: {build_seconds:.2f} s ({counts.adj_rib_in / build_seconds:,.0f} received routes/s); "
        f"RSS {rss0 / 1024:.0f} -> {rss1 / 1024:.0f} MiB "
        f"({(rss1 - rss0) * 1024 / routes:,.0f} bytes/route; peak {rss_kib('VmHWM') / 1024:.0f} MiB)",
        flush=True,
    )

    def resolve(name: str) -> object:
        match = longest_match(name, loc)
        return rib.best(match) if match is not None else None

    hits = [name_of(rng.randrange(routes)) for _ in range(lookups)]
    aggregated = [
        f"svc{rng.choice(AGGREGATED_SERVICES)}.g{rng.randrange(GROUPS)}.y{rng.randrange(100)}"
        for _ in range(lookups)
    ]
    misses = [f"nosuch{rng.randrange(SERVICES)}.g{rng.randrange(GROUPS)}.x{i}" for i in range(lookups)]
    for query in hits[:100]:
        assert longest_match(query, loc) == query
    for query in aggregated[:100]:
        assert longest_match(query, loc) == query.split(".", 1)[0] + ".*"
    for query in misses[:100]:
        assert longest_match(query, loc) is None

    few = max(1, lookups // 20)  # the set-returning queries are slower: fewer samples
    rare = [f"kind{rng.randrange(ATTRIBUTE_SETS)}" for _ in range(few)]
    common = [f"cap{rng.randrange(100)}" for _ in range(few)]
    globs = [f"svc{rng.randrange(SERVICES)}.*.x?" for _ in range(few)]
    index = rib.index
    cases: list[tuple[str, Callable[[str], object], list[str], Callable[[str], int]]] = [
        ("longest_match: exact hit", resolve, hits, lambda q: 1),
        ("longest_match: via aggregate", resolve, aggregated, lambda q: 1),
        ("longest_match: miss", resolve, misses, lambda q: 0),
        ("by_capability: rare tag", index.by_capability, rare, lambda q: len(index.by_capability(q))),
        ("by_capability: common tag", index.by_capability, common, lambda q: len(index.by_capability(q))),
        ("glob svcK.*.x?", index.glob, globs, lambda q: len(index.glob(q))),
    ]

    timer_floor = sorted(measure(lambda q: None, hits))
    floor = percentile(timer_floor, 0.5)
    print(f"\nlookups timed one by one; the timer calls' own cost is included (p50 {floor:.2f} µs)")
    print("| query | lookups | answers (mean) | p50 (µs) | p99 (µs) | max (µs) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, fn, queries, answers in cases:
        samples = sorted(measure(fn, queries))
        mean_answers = sum(answers(q) for q in queries[:200]) / min(200, len(queries))
        print(
            f"| {label} | {len(queries):,} | {mean_answers:,.0f} | {percentile(samples, 0.5):.2f} "
            f"| {percentile(samples, 0.99):.2f} | {samples[-1] / 1000:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
