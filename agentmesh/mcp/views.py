"""JSON views of a node's routing state, as the MCP front-end (tools and `/status`) shows them.

Plain functions from the in-process API's values to JSON-able dicts: the MCP tools and the HTTP
status page render the same thing, and neither needs to know how a `Path` is laid out.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from agentmesh.bgp.fsm import State
from agentmesh.bgp.messages import BackendProtocol
from agentmesh.config import int_to_router_id
from agentmesh.rib.decision import Path
from agentmesh.speaker.node import Node, PeerStatus

#: How the Loc-RIB names the node itself as the source of a path.
LOCAL_SOURCE = "local"


def input_schema(text: str) -> Any:
    """An agent's advertised input schema, parsed; None when it has none or it is not JSON."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def path_view(path: Path, own_asn: int) -> dict[str, Any]:
    """One path: where calls go next, where the agent lives, and how healthy its backend is."""
    attrs = path.attrs
    health = attrs.agent.health
    return {
        "as_path": list(attrs.as_path),
        "next_hop": attrs.next_hop,
        # An empty AS_PATH means the route was originated inside this AS (here, or by an iBGP peer).
        "origin_as": attrs.as_path[-1] if attrs.as_path else own_asn,
        "local": path.source.local,
        "source": LOCAL_SOURCE if path.source.local else path.source.key,
        "source_asn": path.source.asn,
        "internal": path.source.internal,
        "origin": attrs.origin.name.lower(),
        "local_pref": attrs.local_pref,
        "med": attrs.med,
        "health": {"latency_ms": health.latency_ms, "error_rate": health.error_rate, "load": health.load},
    }


def agent_view(name: str, path: Path, own_asn: int) -> dict[str, Any]:
    """A Loc-RIB entry: the agent as advertised, and its best path."""
    agent = path.attrs.agent
    return {
        "name": name,
        "description": agent.description,
        "capabilities": list(agent.capabilities),
        "backend_protocol": BackendProtocol(agent.backend_protocol).name.lower(),
        "region": agent.region,
        "input_schema": input_schema(agent.input_schema),
        "best_path": path_view(path, own_asn),
    }


def peer_view(peer: PeerStatus) -> dict[str, Any]:
    return {
        "address": peer.address,
        "asn": peer.asn,
        "description": peer.description,
        "internal": peer.internal,
        "enabled": peer.enabled,
        "state": peer.state.value,
        "last_reason": peer.last_reason.value if peer.last_reason is not None else None,
        "last_notification": str(peer.last_notification) if peer.last_notification is not None else None,
        "peer_router_id": int_to_router_id(peer.peer_id) if peer.peer_id is not None else None,
        "hold_time": peer.hold_time,
        "connections": peer.connections,
    }


async def mesh_status(node: Node) -> dict[str, Any]:
    """The node, its neighbours and its table sizes (the `mesh_status` tool and `GET /status`)."""
    peers = await node.peers()
    counts = await node.rib_counts()
    return {
        "node": {
            "name": node.name,
            "asn": node.asn,
            "router_id": node.router_id,
            "address": node.advertise_address,
        },
        "peers": [peer_view(peer) for peer in peers],
        "established_peers": sum(1 for peer in peers if peer.state is State.ESTABLISHED),
        "routes": dataclasses.asdict(counts),
        "backends": node.backends(),
    }
