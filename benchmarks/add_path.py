"""What sending several paths per name costs a route reflector (ADD-PATH, RFC 7911), sans IO.

A reflector holds N names, each originated by K clients with equally good paths (as an agent hosted
on K nodes is). Its table goes to one more client twice: once with the best path per name (no
ADD-PATH), once with up to K paths per name under Path Identifiers. Each run times `Rib.take_updates`
over the whole table and prints names/s and paths/s; the client side times `Rib.receive` of the
ADD-PATH UPDATEs, which gives it one candidate per path id. One thread, no sockets, no event loop.

Sizes: `AGENTMESH_BENCH_SIZE=small` runs 10k names; `full` (the default) 100k; `--names` and
`--origins` pick them.
"""

from __future__ import annotations

import argparse
import os
import time

from agentmesh.bgp.messages import AgentAttributes, Origin, PathAttributes, Update
from agentmesh.rib.rib import Rib

SIZES = {"small": 10_000, "full": 100_000}
AS = 65000
REFLECTOR = ("10.0.0.1:7000", 0x0A000001)
RECEIVER = ("10.0.2.1:7000", 0x0A000201)
AGENT = AgentAttributes(capabilities=("bench",), description="benchmark agent")
#: Names per UPDATE the origins send (an UPDATE may carry at most 200k).
CHUNK = 50_000


def reflector(names: list[str], origins: int, send_paths: int) -> Rib:
    rib = Rib(AS, REFLECTOR[1], REFLECTOR[0], 0.0)
    for i in range(origins):
        key = f"10.0.1.{i + 1}:7000"
        rib.add_peer(key, AS, 0x0A000101 + i, rr_client=True)
        rib.peer_up(key, 0x0A000101 + i)
        attrs = PathAttributes(origin=Origin.IGP, as_path=(), next_hop=key, local_pref=100, agent=AGENT)
        for start in range(0, len(names), CHUNK):
            update = Update(attributes=attrs, announced=tuple(names[start : start + CHUNK]))
            assert rib.receive(key, update, 0.0).error is None
        rib.take_updates(key, 0.0, max_names=len(names) + 1)
    rib.add_peer(RECEIVER[0], AS, RECEIVER[1], rr_client=True)
    rib.peer_up(RECEIVER[0], RECEIVER[1], send_paths=send_paths, receive_paths=True)
    return rib


def send(rib: Rib, names: int) -> tuple[float, list[Update]]:
    started = time.perf_counter()
    updates = rib.take_updates(RECEIVER[0], 1.0, max_names=names + 1)
    return time.perf_counter() - started, updates


def receive(updates: list[Update]) -> float:
    rib = Rib(AS, RECEIVER[1], RECEIVER[0], 0.0)
    rib.add_peer(REFLECTOR[0], AS, REFLECTOR[1])
    rib.peer_up(REFLECTOR[0], REFLECTOR[1], receive_paths=True)
    started = time.perf_counter()
    for update in updates:
        rib.receive(REFLECTOR[0], update, 1.0)
    return time.perf_counter() - started


def paths_in(updates: list[Update]) -> int:
    return sum(len(update.announced) for update in updates)


def run(names_count: int, origins: int) -> None:
    names = [f"bench.agent{i:07d}" for i in range(names_count)]
    print(f"N={names_count:,} names, {origins} equally good origins each, one reflector client receiving")
    for label, send_paths in (("best path only", 0), (f"ADD-PATH, up to {origins} paths", origins)):
        rib = reflector(names, origins, send_paths)
        seconds, updates = send(rib, names_count)
        paths = paths_in(updates)
        received = receive(updates)
        print(
            f"  {label:<28} send {seconds:6.2f} s ({names_count / seconds:>9,.0f} names/s,"
            f" {paths / seconds:>9,.0f} paths/s, {paths:,} paths in {len(updates):,} UPDATEs);"
            f" receive {received:6.2f} s ({paths / received:>9,.0f} paths/s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = os.environ.get("AGENTMESH_BENCH_SIZE", "full")
    parser.add_argument("--names", type=int, default=SIZES.get(size, SIZES["full"]))
    parser.add_argument("--origins", type=int, default=3)
    args = parser.parse_args()
    run(args.names, args.origins)


if __name__ == "__main__":
    main()
