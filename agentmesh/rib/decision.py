"""The decision process (RFC 4271 §9.1.2) as a total order on paths, with the reason of each choice.

Every path gets a rank, a tuple compared left to right where lower wins:

  1. highest LOCAL_PREF (absent: 100)          6. eBGP over iBGP
  2. locally originated                        7. shortest CLUSTER_LIST (RFC 4456 §9)
  3. shortest AS_PATH                          8. lowest ORIGINATOR_ID, else router id (RFC 4456 §9)
  4. lowest ORIGIN (IGP < EGP < INCOMPLETE)     9. lowest peer address
  5. lowest MED (absent: 0), compared across all candidates, not only those of one neighbouring AS

Comparing MED across all candidates (the "always-compare-med" of other daemons) is what makes this
a total order: the best path is the minimum, whatever order candidates arrived in, and a new path
only needs to be compared with the current best. The rank of a path is computed once, when the
path is created for an UPDATE's attribute set, so per-name work is one tuple comparison.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from agentmesh.bgp.messages import PathAttributes
from agentmesh.rib.attributes import DEFAULT_LOCAL_PREF


class DecisionReason(Enum):
    """Which step of the decision process separated the best path from the runner-up."""

    ONLY_PATH = "only_path"
    LOCAL_PREF = "highest_local_pref"
    LOCALLY_ORIGINATED = "locally_originated"
    AS_PATH_LENGTH = "shortest_as_path"
    ORIGIN = "lowest_origin"
    MED = "lowest_med"
    EBGP_OVER_IBGP = "ebgp_over_ibgp"
    CLUSTER_LIST_LENGTH = "shortest_cluster_list"
    ROUTER_ID = "lowest_router_id"
    PEER_ADDRESS = "lowest_peer_address"


_STEPS = (
    DecisionReason.LOCAL_PREF,
    DecisionReason.LOCALLY_ORIGINATED,
    DecisionReason.AS_PATH_LENGTH,
    DecisionReason.ORIGIN,
    DecisionReason.MED,
    DecisionReason.EBGP_OVER_IBGP,
    DecisionReason.CLUSTER_LIST_LENGTH,
    DecisionReason.ROUTER_ID,
    DecisionReason.PEER_ADDRESS,
)

Rank = tuple[int, int, int, int, int, int, int, int, tuple[int, bytes, str, int, int]]


@dataclass(frozen=True, slots=True, eq=False)
class Source:
    """Where paths come from: a neighbour, or the node itself (`local`)."""

    key: str
    asn: int
    router_id: int
    internal: bool
    local: bool = False
    #: A route reflector client of this node (RFC 4456 §2): its routes are reflected to every iBGP peer.
    rr_client: bool = False
    #: For the paths one neighbour sends under one Path Identifier (RFC 7911): that neighbour's key.
    #: Each identifier is a source of its own, so a name can have several candidates from one peer.
    peer: str = ""
    path_id: int = 0

    @property
    def neighbor(self) -> str:
        """The neighbour the paths came from (the key itself, unless this is one of its path ids)."""
        return self.peer or self.key

    def address_rank(self) -> tuple[int, bytes, str, int, int]:
        """Sort key for step 9: addresses numerically (IPv4 before IPv6), then names, port, path id."""
        key = self.neighbor
        host, colon, port_text = key.rpartition(":")
        if not colon or not port_text.isdigit():
            host, port_text = key, "0"  # a key that is not host:port sorts as a name
        host, port = host.strip("[]"), int(port_text)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return (2, b"", host, port, self.path_id)
        return (ip.version // 6, ip.packed, "", port, self.path_id)


@dataclass(frozen=True, slots=True, eq=False)
class Path:
    """One attribute set from one source; shared by every name it was announced with."""

    attrs: PathAttributes
    source: Source
    rank: Rank
    #: The attributes as received, when import policy changed them into `attrs` (None: the same).
    received: PathAttributes | None = None


def make_path(attrs: PathAttributes, source: Source, received: PathAttributes | None = None) -> Path:
    local_pref = DEFAULT_LOCAL_PREF if attrs.local_pref is None else attrs.local_pref
    rank: Rank = (
        -local_pref,
        0 if source.local else 1,
        len(attrs.as_path),
        int(attrs.origin),
        attrs.med or 0,
        1 if source.internal or source.local else 0,
        len(attrs.cluster_list),
        attrs.originator_id if attrs.originator_id is not None else source.router_id,
        source.address_rank(),
    )
    return Path(attrs, source, rank, received)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one name: the best path, why it won, and every candidate best first."""

    best: Path
    reason: DecisionReason
    ranked: tuple[Path, ...]


def decide(candidates: Iterable[Path]) -> Decision | None:
    """Run the decision process over `candidates`; None when there are none."""
    ranked = tuple(sorted(candidates, key=lambda path: path.rank))
    if not ranked:
        return None
    if len(ranked) == 1:
        return Decision(ranked[0], DecisionReason.ONLY_PATH, ranked)
    return Decision(ranked[0], why(ranked[0], ranked[1]), ranked)


def why(winner: Path, runner_up: Path) -> DecisionReason:
    """The first step at which `winner` beats `runner_up`."""
    for step, (a, b) in zip(_STEPS, zip(winner.rank, runner_up.rank, strict=True), strict=True):
        if a != b:
            return step
    return DecisionReason.PEER_ADDRESS  # identical ranks: only one path per source, so unreachable
