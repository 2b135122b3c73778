"""Where a transit node's time goes: its per-route work, stage by stage, without sockets or event loop.

The node under test of `propagation.py` does, for every route, what this script does in one thread:

1. parse the wire bytes of an UPDATE (`BgpMessage.FromString`, what gRPC does before the handler sees it);
2. convert it to the core's `Update` (`codec.decode`);
3. `Rib.receive` it from the injector (Adj-RIB-In, decision, Loc-RIB, resolution indexes, the monitor's
   pending set);
4. `Rib.take_updates` for the monitor (export policy, grouping by attribute set, chunking);
5. `codec.encode` the UPDATEs and serialise them (`SerializeToString`).

Each stage is timed over the whole table (N routes announced, then all withdrawn) and printed as seconds
and routes/s; stage 3 and 4 are the sans-IO core, stage 1, 2 and 5 the protobuf edge. The sum is the CPU
a node needs per route before gRPC and asyncio overhead, i.e. an upper bound on what one core can pass.
`--profile` adds a cProfile run of stages 2-5 and prints the functions with the most own time. The RSS
this process grew by while holding the full table (Rib, names and allocator slack) is printed too;
`--no-index` switches the resolution indexes off, to show what they cost in time and memory.

Sizes: `AGENTMESH_BENCH_SIZE=small` runs 20k routes; `full` (the default) runs 100k and 1M; `--routes`
picks the sizes.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from agentmesh.bgp.messages import AgentAttributes, Origin, PathAttributes, Update
from agentmesh.rib.rib import UPDATE_NAME_BYTES, Rib
from agentmesh.transport import codec
from agentmesh.v1 import bgp_pb2

SIZES = {"small": [20_000], "full": [100_000, 1_000_000]}
INJECTOR = ("127.0.0.1:50101", 65101)
MONITOR = ("127.0.0.1:50103", 65103)
AGENT = AgentAttributes(capabilities=("bench",), description="benchmark agent")
T = TypeVar("T")
INDEX_STAGE = "3a (part of 3) ResolutionIndex.update"


def wire_updates(routes: int) -> tuple[list[bytes], list[bytes]]:
    """The injector's announcements and withdrawals as wire bytes, in UPDATEs of a node's usual size."""
    names = [f"bench.agent{i:07d}" for i in range(routes)]
    attrs = PathAttributes(origin=Origin.IGP, as_path=(INJECTOR[1],), next_hop=INJECTOR[0], agent=AGENT)
    step = max(1, UPDATE_NAME_BYTES // (max(map(len, names)) + 4))
    chunks = [tuple(names[i : i + step]) for i in range(0, len(names), step)]
    announce = [codec.encode(Update(attributes=attrs, announced=c)).SerializeToString() for c in chunks]
    withdraw = [codec.encode(Update(withdrawn=c)).SerializeToString() for c in chunks]
    return announce, withdraw


def transit_rib() -> Rib:
    rib = Rib(65102, 0x0A000066, "127.0.0.1:50102", min_advertisement_interval=0.0)
    for key, asn in (INJECTOR, MONITOR):
        rib.add_peer(key, asn, router_id=asn)
        rib.peer_up(key, router_id=asn)
    rib.take_updates(MONITOR[0], 0.0)  # the End-of-RIB of the empty table
    rib.take_updates(INJECTOR[0], 0.0)
    return rib


class Stages:
    """Runs the pipeline for a batch of wire UPDATEs, adding each stage's time to its total."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def timed(self, stage: str, fn: Callable[[], T]) -> T:
        t0 = time.perf_counter()
        result = fn()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0
        return result

    def watch_index(self, rib: Rib) -> None:
        """Time the resolution indexes' share of `Rib.receive` (one call per UPDATE, so cheap to wrap)."""
        update = rib.index.update

        def timed_update(changed: Any, loc: Any) -> None:
            self.timed(INDEX_STAGE, lambda: update(changed, loc))

        rib.index.update = timed_update  # type: ignore[method-assign]

    def run(self, rib: Rib, wires: list[bytes], now: float) -> int:
        parsed = self.timed("1 parse (FromString)", lambda: [bgp_pb2.BgpMessage.FromString(w) for w in wires])
        updates = self.timed("2 codec.decode", lambda: [codec.decode(m) for m in parsed])

        def receive() -> None:
            for update in updates:
                assert isinstance(update, Update)
                result = rib.receive(INJECTOR[0], update, now)
                assert result.error is None and result.dropped is None

        self.timed("3 Rib.receive", receive)

        def take() -> list[Update]:
            out: list[Update] = []
            while rib.has_pending(MONITOR[0], now):
                out += rib.take_updates(MONITOR[0], now, 50_000)
            return out

        sent = self.timed("4 Rib.take_updates", take)
        self.timed("5 encode + serialise", lambda: [codec.encode(u).SerializeToString() for u in sent])
        return sum(len(u.announced) + len(u.withdrawn) for u in sent)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise KeyError("VmRSS")


def run(routes: int, profile: bool, index: bool) -> None:
    announce, withdraw = wire_updates(routes)
    gc.collect()
    rss0 = rss_bytes()
    rib = transit_rib()
    stages = Stages()
    if index:
        stages.watch_index(rib)
    else:
        rib.index.update = lambda changed, loc: None  # type: ignore[method-assign]
    cpu0, t0 = time.process_time(), time.perf_counter()
    sent = stages.run(rib, announce, now=1.0)
    assert sent == routes and len(rib._loc) == routes, (sent, len(rib._loc))
    announce_seconds = time.perf_counter() - t0
    gc.collect()
    table_bytes = rss_bytes() - rss0
    t1 = time.perf_counter()
    sent = stages.run(rib, withdraw, now=2.0)
    assert sent == routes and not rib._loc, (sent, len(rib._loc))
    withdraw_seconds = time.perf_counter() - t1
    cpu = time.process_time() - cpu0

    print(
        f"N={routes:,}: announce {announce_seconds:.2f} s ({routes / announce_seconds:,.0f} routes/s), "
        f"withdraw {withdraw_seconds:.2f} s ({routes / withdraw_seconds:,.0f} routes/s), CPU {cpu:.2f} s; "
        f"RSS growth with the full table {table_bytes / routes:,.0f} bytes/route"
        + ("" if index else " (resolution indexes switched off)"),
        flush=True,
    )
    print("| stage (announce + withdraw) | seconds | routes/s | share |")
    print("|---|---:|---:|---:|")
    total = sum(seconds for stage, seconds in stages.seconds.items() if stage != INDEX_STAGE)
    for stage, seconds in sorted(stages.seconds.items()):
        print(f"| {stage} | {seconds:.2f} | {2 * routes / seconds:,.0f} | {seconds / total:.0%} |")
    print(f"| all | {total:.2f} | {2 * routes / total:,.0f} | |", flush=True)

    if profile:
        rib = transit_rib()
        parsed_a = [bgp_pb2.BgpMessage.FromString(w) for w in announce]
        parsed_w = [bgp_pb2.BgpMessage.FromString(w) for w in withdraw]
        profiler = cProfile.Profile()
        profiler.enable()
        for parsed, now in ((parsed_a, 1.0), (parsed_w, 2.0)):
            for message in parsed:
                update = codec.decode(message)
                assert isinstance(update, Update)
                rib.receive(INJECTOR[0], update, now)
            while rib.has_pending(MONITOR[0], now):
                for out in rib.take_updates(MONITOR[0], now, 50_000):
                    codec.encode(out).SerializeToString()
        profiler.disable()
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime")
        stats.print_stats(15)
        print(f"\ncProfile of stages 2-5 at N={routes:,} (announce + withdraw), by own time:")
        print(text.getvalue().split("\n\n", 1)[-1].rstrip(), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument(
        "--routes", type=int, nargs="+", help="table sizes (default: from AGENTMESH_BENCH_SIZE)"
    )
    parser.add_argument("--profile", action="store_true", help="also print a cProfile breakdown")
    parser.add_argument(
        "--no-index",
        action="store_true",
        help="what-if: switch the resolution indexes (capability sets, label trie) off, to see their cost",
    )
    args = parser.parse_args()
    size = os.environ.get("AGENTMESH_BENCH_SIZE", "full")
    if size not in SIZES:
        parser.error(f"AGENTMESH_BENCH_SIZE must be one of {', '.join(SIZES)}, not {size!r}")
    print("rib_pipeline: one transit node's per-route work (injector -> this Rib -> monitor), sans-IO")
    for routes in args.routes or SIZES[size]:
        run(routes, args.profile, index=not args.no_index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
