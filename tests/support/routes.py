"""Builders for routing-core tests: attribute sets, a RIB with a few neighbours, and UPDATE readers.

The node under test is AS 65000 at `SELF`. Its neighbours are two eBGP peers in different ASes and two
iBGP peers, each keyed by its address (as the speaker keys them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agentmesh.bgp.messages import AgentAttributes, Origin, PathAttributes, Update
from agentmesh.rib.rib import Received, Rib

ASN = 65000
ROUTER_ID = 0x0A000001
SELF = "10.0.0.1:50051"

E1, E1_ASN = "192.0.2.1:179", 65001
E2, E2_ASN = "192.0.2.2:179", 65002
I1 = "10.0.0.2:179"
I2 = "10.0.0.3:179"

#: key -> (asn, router id)
NEIGHBOURS: Mapping[str, tuple[int, int]] = {
    E1: (E1_ASN, 0xC0000201),
    E2: (E2_ASN, 0xC0000202),
    I1: (ASN, 0x0A000002),
    I2: (ASN, 0x0A000003),
}


def attrs(
    *as_path: int,
    next_hop: str = "192.0.2.100:179",
    origin: Origin = Origin.IGP,
    capabilities: tuple[str, ...] = (),
    agent: AgentAttributes | None = None,
    **fields: Any,
) -> PathAttributes:
    """A fresh attribute set (never the same object twice, so interning is really exercised)."""
    if agent is None:
        agent = AgentAttributes(capabilities=capabilities)
    return PathAttributes(origin=origin, as_path=tuple(as_path), next_hop=next_hop, agent=agent, **fields)


def make_rib(
    interval: float = 0.0, peers: Iterable[str] = tuple(NEIGHBOURS), *, up: bool = True, now: float = 0.0
) -> Rib:
    """A RIB with the given neighbours added (and Established, their End-of-RIB already taken)."""
    rib = Rib(ASN, ROUTER_ID, SELF, min_advertisement_interval=interval)
    for key in peers:
        asn, router_id = NEIGHBOURS[key]
        rib.add_peer(key, asn, router_id)
        if up:
            rib.peer_up(key, router_id)
            assert rib.take_updates(key, now) == [Update(end_of_rib=True)]
    return rib


def announce(
    rib: Rib, key: str, names: Sequence[str], attributes: PathAttributes, now: float = 0.0
) -> Received:
    received = rib.receive(key, Update(attributes=attributes, announced=tuple(names)), now)
    assert received.error is None and received.dropped is None, received
    return received


def withdraw(rib: Rib, key: str, names: Sequence[str], now: float = 0.0) -> Received:
    received = rib.receive(key, Update(withdrawn=tuple(names)), now)
    assert received.error is None, received
    return received


def take_all(rib: Rib, now: float) -> dict[str, list[Update]]:
    """Every established neighbour's UPDATEs at `now` (so no queue is left to skew `next_deadline`)."""
    return {key: rib.take_updates(key, now) for key in NEIGHBOURS if _known(rib, key)}


def _known(rib: Rib, key: str) -> bool:
    try:
        rib.has_pending(key, 0.0)
    except KeyError:
        return False
    return True


def announced(updates: Iterable[Update]) -> dict[str, PathAttributes]:
    """Name -> attribute set announced, over a list of UPDATEs (a name announced twice fails)."""
    found: dict[str, PathAttributes] = {}
    for update in updates:
        for name in update.announced:
            assert name not in found, f"{name} announced twice"
            assert update.attributes is not None
            found[name] = update.attributes
    return found


def withdrawn(updates: Iterable[Update]) -> list[str]:
    return [name for update in updates for name in update.withdrawn]


def loc_snapshot(rib: Rib) -> dict[str, int]:
    """The Loc-RIB as name -> id of the best path (to prove nothing changed)."""
    return {name: id(path) for name, path in rib.loc_rib()}
