"""Routing policy across real nodes: every shipped example policy, applied at run time without resets.

Each test peers a few nodes over gRPC on loopback, loads one file of `examples/policies/` (with the
example's addresses and ASNs replaced by the test's where it names them), applies it with
`Node.set_policy` while the sessions are up, and checks what the mesh then chooses.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentmesh.bgp.fsm import State
from agentmesh.bgp.messages import AgentAttributes, Health
from agentmesh.config import parse_policy_yaml
from agentmesh.policy_config import PolicyAssignment, PolicyConfig
from agentmesh.rib.attributes import NO_EXPORT
from agentmesh.speaker.node import Node, RouteTable
from tests.support.nodes import established, eventually, neighbor_of, node_config, running, status

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"


def example(name: str, replacements: dict[str, str] | None = None) -> PolicyConfig:
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    for old, new in (replacements or {}).items():
        text = text.replace(old, new)
    return parse_policy_yaml(text, source=name)


async def link(a: Node, b: Node) -> None:
    await a.add_neighbor(neighbor_of(b))
    await b.add_neighbor(neighbor_of(a))
    await established(a, b)


async def best_from(node: Node, name: str) -> str | None:
    """The neighbour the best path of `name` comes from ("" when local), None without a route."""
    found = await node.resolve(name)
    return None if found is None else found[1].source.key


async def has(node: Node, name: str) -> bool:
    return await node.resolve(name) is not None


async def sessions_up(node: Node) -> dict[str, float]:
    """Each neighbour's time in its current state: a reset would start it again from 0."""
    peers = await node.peers()
    assert all(peer.state is State.ESTABLISHED for peer in peers), peers
    return {peer.address: peer.seconds_in_state for peer in peers}


def not_reset(before: dict[str, float], after: dict[str, float]) -> bool:
    return before.keys() == after.keys() and all(after[k] >= before[k] for k in before)


async def test_keep_internal_in_as_hides_internal_agents_from_another_as() -> None:
    configs = [node_config("a", 65001, "10.0.0.1"), node_config("b", 65002, "10.0.0.2")]
    configs.append(node_config("c", 65003, "10.0.0.3"))
    async with running(*configs) as (a, b, c):
        await link(a, b)
        await link(b, c)
        await a.announce_agents(["internal.db", "ops.backup", "public.api"], AgentAttributes())
        await eventually(lambda: has(c, "internal.db"), 10)  # no policy yet: everything everywhere
        before = await sessions_up(a)
        policy = example(
            "keep-internal-in-as.yaml",
            {'"127.0.0.1:50052", "127.0.0.1:50053"': f'"{b.advertise_address}"'},
        )
        await a.set_policy(policy)
        await eventually(lambda: _gone(b, "internal.db", "ops.backup"), 10)
        found = await b.resolve("public.api")
        assert found is not None and NO_EXPORT in found[1].attrs.communities
        # NO_EXPORT keeps public.api inside b's AS: c, one AS further, loses it as well.
        await eventually(lambda: _gone(c, "public.api", "internal.db"), 10)
        assert not_reset(before, await sessions_up(a))
        decision = await a.resolve_with_policy("public.api")
        assert decision is not None and decision.verdicts == (None,)  # originated here: no import policy


async def _gone(node: Node, *names: str) -> bool:
    return all([await node.resolve(name) is None for name in names])


async def test_prefer_local_region_moves_the_best_path_without_a_session_reset() -> None:
    configs = [node_config("r", 65001, "10.0.0.1")]
    configs += [node_config("us", 65002, "10.0.0.2"), node_config("eu", 65003, "10.0.0.3")]
    async with running(*configs) as (r, us, eu):
        await link(r, us)
        await link(r, eu)
        await us.announce_agents(["shared.translate"], AgentAttributes(region="us-east"))
        await eu.announce_agents(["shared.translate"], AgentAttributes(region="eu-west"))
        await eventually(lambda: _candidates(r, "shared.translate", 2), 10)
        # Equal paths: the lower router id (us) wins without a policy.
        assert await best_from(r, "shared.translate") == us.advertise_address
        before = await sessions_up(r)
        await r.set_policy(example("prefer-local-region.yaml"))
        assert await best_from(r, "shared.translate") == eu.advertise_address
        resolution = await r.resolve_with_policy("shared.translate")
        assert resolution is not None and resolution.decision.reason.value == "highest_local_pref"
        chosen = resolution.verdicts[0]
        assert chosen is not None and str(chosen.trail[0]).startswith("prefer-local-region/local-region")
        assert not_reset(before, await sessions_up(r))


async def _candidates(node: Node, name: str, count: int) -> bool:
    decision = await node.explain(name)
    return decision is not None and len(decision.ranked) == count


async def test_reject_long_as_paths_drops_paths_made_long_by_prepending() -> None:
    async with running(node_config("r", 65001, "10.0.0.1"), node_config("far", 65010, "10.0.0.10")) as (
        r,
        far,
    ):
        await link(r, far)
        # The origin makes one route look long with an export policy that prepends its AS.
        prepend = parse_policy_yaml(
            """
            defined_sets: {names: {padded: ["padded.*"]}}
            policies:
              - name: pad
                statements:
                  - name: padded
                    conditions: {names: {set: padded}}
                    actions: {as_path_prepend: {times: 3}}
            export: {policies: [pad]}
            """
        )
        await far.set_policy(prepend)
        await far.announce_agents(["padded.agent", "plain.agent"], AgentAttributes())
        await eventually(lambda: _all_present(r, "padded.agent", "plain.agent"), 10)
        padded = await r.resolve("padded.agent")
        assert padded is not None and padded[1].attrs.as_path == (65010, 65010, 65010, 65010)
        await r.set_policy(example("reject-long-as-paths.yaml"))
        # Four ASes through 65010 is "long-via-65010"; the one-AS path stays.
        assert await r.resolve("padded.agent") is None and await r.resolve("plain.agent") is not None
        [received] = [
            e for e in await r.routes(RouteTable.ADJ_RIB_IN, far.advertise_address, "padded.*", explain=True)
        ]
        assert received.filtered and received.verdict is not None
        assert received.verdict.trail[-1].statement == "long-via-65010"


async def _all_present(node: Node, *names: str) -> bool:
    return all([await node.resolve(name) is not None for name in names])


async def test_prefer_healthy_backends_picks_the_healthy_origin() -> None:
    configs = [node_config("r", 65001, "10.0.0.1")]
    configs += [node_config("sick", 65002, "10.0.0.2"), node_config("well", 65003, "10.0.0.3")]
    async with running(*configs) as (r, sick, well):
        await link(r, sick)
        await link(r, well)
        await sick.announce_agents(
            ["shared.ocr"], AgentAttributes(health=Health(latency_ms=2500, error_rate=0.2))
        )
        await well.announce_agents(["shared.ocr"], AgentAttributes(health=Health(latency_ms=40, load=0.1)))
        await eventually(lambda: _candidates(r, "shared.ocr", 2), 10)
        assert await best_from(r, "shared.ocr") == sick.advertise_address  # lower router id, no policy
        await r.set_policy(example("prefer-healthy-backends.yaml"))
        assert await best_from(r, "shared.ocr") == well.advertise_address
        resolution = await r.resolve_with_policy("shared.ocr")
        assert resolution is not None
        best, other = resolution.decision.ranked
        assert best.attrs.local_pref == 120 and other.attrs.local_pref == 50  # healthy +20, unhealthy -50
        statements = [verdict.trail[0].statement for verdict in resolution.verdicts if verdict is not None]
        assert statements == ["healthy", "unhealthy"]


async def test_accept_only_customer_applies_to_that_neighbour_only() -> None:
    configs = [node_config("r", 65001, "10.0.0.1")]
    configs += [node_config("customer", 65020, "10.0.0.20"), node_config("peer", 65002, "10.0.0.2")]
    async with running(*configs) as (r, customer, peer):
        # The example is assigned to the customer's neighbour entry, with default reject, as its
        # comment shows; r's other neighbour keeps the global (empty) policy.
        only_customer = PolicyAssignment(policies=("accept-only-customer",), default="reject")
        customer_neighbor = neighbor_of(customer).model_copy(update={"import_policy": only_customer})
        await r.add_neighbor(customer_neighbor)
        await customer.add_neighbor(neighbor_of(r))
        await established(r, customer)
        await link(r, peer)
        await r.set_policy(example("accept-only-customer.yaml"))
        await customer.announce_agents(["customer.billing", "other.thing"], AgentAttributes())
        await peer.announce_agents(["other.thing", "partner.api"], AgentAttributes())
        await eventually(lambda: _all_present(r, "customer.billing", "partner.api"), 10)
        await asyncio.sleep(0.3)  # the customer's other.thing has arrived and been filtered by now
        billing = await r.resolve("customer.billing")
        assert billing is not None and (65001 << 16 | 20) in billing[1].attrs.communities
        assert await best_from(r, "other.thing") == peer.advertise_address  # the customer's copy: filtered
        rejected = await r.routes(
            RouteTable.ADJ_RIB_IN, customer.advertise_address, "other.thing", explain=True
        )
        assert [e.filtered for e in rejected] == [True]
        assert rejected[0].verdict is not None and rejected[0].verdict.decided_by_default
        assert (await status(r, customer.advertise_address)).state is State.ESTABLISHED
