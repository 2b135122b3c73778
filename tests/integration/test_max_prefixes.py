"""Max-prefix per neighbour (RFC 4486 §4): a warning, then Cease 6/1, then a restart when configured."""

from __future__ import annotations

from agentmesh.bgp.errors import CeaseSubcode, ErrorCode
from agentmesh.bgp.fsm import State
from agentmesh.bgp.messages import AgentAttributes
from agentmesh.config import MaxPrefixesConfig
from agentmesh.speaker.node import Node
from tests.support.nodes import established, eventually, neighbor_of, node_config, running, status


async def _down_with_6_1(node: Node, peer: Node) -> bool:
    last = (await status(node, peer.advertise_address)).last_down_notification
    return last is not None and (last.code, last.subcode) == (
        ErrorCode.CEASE,
        CeaseSubcode.MAXIMUM_NUMBER_OF_PREFIXES_REACHED,
    )


async def test_too_many_routes_end_the_session_and_it_stays_down_without_restart() -> None:
    async with running(node_config("a", 65001, "10.0.0.1"), node_config("b", 65002, "10.0.0.2")) as (a, b):
        limited = neighbor_of(b).model_copy(update={"max_prefixes": MaxPrefixesConfig(limit=5)})
        await a.add_neighbor(limited)
        await b.add_neighbor(neighbor_of(a))
        await established(a, b)
        await b.announce_agents([f"b.agent{i}" for i in range(4)], AgentAttributes())  # 80%: a warning
        await eventually(lambda: _count(a, 4), 10)
        assert (await status(a, b.advertise_address)).state is State.ESTABLISHED
        await b.announce_agents([f"b.more{i}" for i in range(3)], AgentAttributes())
        await eventually(lambda: _down_with_6_1(a, b), 10)
        await eventually(lambda: _down_with_6_1(b, a), 10)  # b received the NOTIFICATION
        peer = await status(a, b.advertise_address)
        assert not peer.enabled and peer.state is State.IDLE and await a.resolve("b.agent0") is None


async def _count(node: Node, count: int) -> bool:
    return (await node.rib_counts()).loc_rib == count


async def test_with_restart_after_the_session_comes_back() -> None:
    async with running(node_config("a", 65001, "10.0.0.1"), node_config("b", 65002, "10.0.0.2")) as (a, b):
        bound = MaxPrefixesConfig(limit=3, restart_after=0.3)
        await a.add_neighbor(neighbor_of(b).model_copy(update={"max_prefixes": bound}))
        await b.add_neighbor(neighbor_of(a))
        await established(a, b)
        await b.announce_agents([f"b.agent{i}" for i in range(5)], AgentAttributes())
        await eventually(lambda: _down_with_6_1(a, b), 10)
        await b.withdraw_agents([f"b.agent{i}" for i in range(3)])  # b fixes its table meanwhile
        await established(a, b)
        await eventually(lambda: _count(a, 2), 10)
        assert (await status(a, b.advertise_address)).enabled
