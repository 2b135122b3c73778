"""Every AdminService RPC driven by a real gRPC client against real nodes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh.agents.demo import demo_backend
from agentmesh.bgp.fsm import State
from agentmesh.bgp.messages import AgentAttributes
from agentmesh.config import Config, NeighborConfig, NodeConfig
from agentmesh.speaker.node import Node
from agentmesh.transport.admin import AdminServer
from agentmesh.v1 import admin_pb2 as pb
from agentmesh.v1 import admin_pb2_grpc, bgp_pb2, forwarding_pb2
from tests.support.nodes import (
    FAST_TIMERS,
    established,
    eventually,
    neighbor_of,
    node_config,
    running,
    status,
)

TOKEN = "s3cret-admin-token-for-tests"


Pair = tuple[Node, Node, admin_pb2_grpc.AdminServiceStub]


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    """a (AS65001, with its admin API) peering with b (AS65002, hosting the demo agents)."""
    async with running(node_config("a", 65001, "10.0.0.1"), node_config("b", 65002, "10.0.0.2")) as (a, b):
        await a.add_neighbor(neighbor_of(b))
        await b.add_neighbor(neighbor_of(a))
        await established(a, b)
        await b.host(demo_backend(), "demo")
        await eventually(lambda: _has(a, "demo.capitals"), 10)
        admin = AdminServer(a, "127.0.0.1:0")
        port = await admin.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield a, b, admin_pb2_grpc.AdminServiceStub(channel)
        finally:
            await admin.stop()


async def _has(node: Node, name: str) -> bool:
    return await node.resolve(name) is not None


async def _peers(stub: admin_pb2_grpc.AdminServiceStub, address: str = "") -> list[pb.Peer]:
    return [reply.peer async for reply in stub.ListPeers(pb.ListPeersRequest(address=address))]


async def _routes(stub: admin_pb2_grpc.AdminServiceStub, **request: object) -> list[list[pb.Route]]:
    return [list(reply.routes) async for reply in stub.ListRoutes(pb.ListRoutesRequest(**request))]  # type: ignore[arg-type]


async def _code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call  # type: ignore[misc]
    return failed.value.code()


async def test_get_node_describes_identity_readiness_tables_and_backends(pair: Pair) -> None:
    a, _b, stub = pair
    node = (await stub.GetNode(pb.GetNodeRequest())).node
    assert (node.name, node.asn, node.router_id) == ("a", 65001, "10.0.0.1")
    assert node.advertise_address == a.advertise_address and node.ready
    assert node.rib.loc_rib == 3 and node.rib.adj_rib_in == 3 and node.uptime_seconds > 0
    assert list(node.backends) == []  # a hosts nothing; b does
    assert node.version


async def test_list_peers_reports_session_state_counts_and_filter(pair: Pair) -> None:
    _a, b, stub = pair
    [peer] = await _peers(stub)
    assert peer.config.address == b.advertise_address and peer.config.asn == 65002
    assert peer.state == pb.SESSION_STATE_ESTABLISHED and peer.enabled and not peer.internal
    assert peer.peer_router_id == "10.0.0.2" and peer.negotiated_hold_time == 3
    assert peer.routes_received == 3 and peer.connections == 1
    assert (await _peers(stub, b.advertise_address))[0].config.address == b.advertise_address
    assert await _code_of(_peers(stub, "127.0.0.1:1")) is grpc.StatusCode.NOT_FOUND


async def test_add_and_delete_peer_take_effect_without_restart(pair: Pair) -> None:
    a, b, stub = pair
    async with running(node_config("c", 65003, "10.0.0.3")) as (c,):
        await c.add_neighbor(neighbor_of(a))
        config = pb.PeerConfig(address=c.advertise_address, asn=65003, description="c")
        await stub.AddPeer(pb.AddPeerRequest(peer=config))
        await established(a, c)
        await eventually(lambda: _has(c, "demo.echo"), 10)  # a passes b's routes on to c
        assert await _code_of(stub.AddPeer(pb.AddPeerRequest(peer=config))) is grpc.StatusCode.ALREADY_EXISTS
        await stub.DeletePeer(pb.DeletePeerRequest(address=c.advertise_address))
        assert [p.config.address for p in await _peers(stub)] == [b.advertise_address]
        await eventually(lambda: _gone(c, "demo.echo"), 10)
        assert (await status(c, a.advertise_address)).last_notification.subcode == 3  # type: ignore[union-attr]
    missing = stub.DeletePeer(pb.DeletePeerRequest(address="127.0.0.1:1"))
    assert await _code_of(missing) is grpc.StatusCode.NOT_FOUND


async def _gone(node: Node, name: str) -> bool:
    return await node.resolve(name) is None


async def test_add_peer_validates_like_the_config_file(pair: Pair) -> None:
    _a, _b, stub = pair
    bad = pb.PeerConfig(address="not an address", asn=23456)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.AddPeer(pb.AddPeerRequest(peer=bad))
    assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "peer.address" in failed.value.details() and "AS_TRANS" in failed.value.details()


async def test_update_peer_resets_only_for_negotiated_changes(pair: Pair) -> None:
    a, b, stub = pair
    same = pb.PeerConfig(address=b.advertise_address, asn=65002, description="renamed")
    assert not (await stub.UpdatePeer(pb.UpdatePeerRequest(peer=same))).session_reset
    assert (await _peers(stub))[0].config.description == "renamed"
    assert (await status(a, b.advertise_address)).state is State.ESTABLISHED
    longer = pb.PeerConfig(address=b.advertise_address, asn=65002, description="renamed", hold_time=6)
    assert (await stub.UpdatePeer(pb.UpdatePeerRequest(peer=longer))).session_reset
    await eventually(lambda: _notified(b, a, 6, 6), 10)  # Cease/Other Configuration Change
    await established(a, b)
    assert (await _peers(stub))[0].config.hold_time == 6


async def _notified(receiver: Node, sender: Node, code: int, subcode: int) -> bool:
    last = (await status(receiver, sender.advertise_address)).last_notification
    return last is not None and (last.code, last.subcode) == (code, subcode)


async def test_disable_sends_the_communication_and_enable_brings_the_session_back(pair: Pair) -> None:
    a, b, stub = pair
    await stub.DisablePeer(pb.DisablePeerRequest(address=b.advertise_address, communication="maintenance"))
    await eventually(lambda: _notified(b, a, 6, 2), 10)
    assert (await status(b, a.advertise_address)).last_notification.shutdown_communication == "maintenance"  # type: ignore[union-attr]
    [peer] = await _peers(stub)
    assert not peer.enabled and peer.state == pb.SESSION_STATE_IDLE and peer.routes_received == 0
    await asyncio.sleep(0.5)  # b keeps trying; a disabled neighbour stays down
    assert (await status(a, b.advertise_address)).state is State.IDLE
    await stub.EnablePeer(pb.EnablePeerRequest(address=b.advertise_address))
    await established(a, b)
    await eventually(lambda: _has(a, "demo.echo"), 10)


async def test_hard_reset_restarts_the_session_with_administrative_reset(pair: Pair) -> None:
    a, b, stub = pair
    await stub.ResetPeer(pb.ResetPeerRequest(address=b.advertise_address, communication="new config"))
    await eventually(lambda: _notified(b, a, 6, 4), 10)
    await established(a, b)
    await eventually(lambda: _has(a, "demo.echo"), 10)


async def test_soft_reset_out_resends_the_table_and_in_asks_for_it(pair: Pair) -> None:
    a, b, stub = pair
    await a.announce_agents(["ops.tool"], AgentAttributes(description="a's own"))
    await eventually(lambda: _has(b, "ops.tool"), 10)
    resent: list[tuple[str, str]] = []
    for node in (a, b):
        _spy_on_resend(node, resent)
    subscription = await b.subscribe(peers=False, routes=True)
    try:
        out = pb.ResetPeerRequest(address=b.advertise_address, soft=pb.SOFT_RESET_DIRECTION_OUT)
        await stub.ResetPeer(out)
        assert resent == [("a", b.advertise_address)]
        inbound = pb.ResetPeerRequest(address=b.advertise_address, soft=pb.SOFT_RESET_DIRECTION_IN)
        await stub.ResetPeer(inbound)
        # b got a's ROUTE-REFRESH (RFC 2918) and queued its table for a again.
        await eventually(lambda: _async(len(resent) == 2), 5)
        assert resent[1] == ("b", a.advertise_address)
        await asyncio.sleep(0.3)
        # No session reset, and routes re-sent unchanged move no best path.
        assert (await status(a, b.advertise_address)).state is State.ESTABLISHED
        assert subscription.drain() == []
    finally:
        b.unsubscribe(subscription)
    unknown = stub.ResetPeer(pb.ResetPeerRequest(address="127.0.0.1:1", soft=pb.SOFT_RESET_DIRECTION_IN))
    assert await _code_of(unknown) is grpc.StatusCode.NOT_FOUND


def _spy_on_resend(node: Node, calls: list[tuple[str, str]]) -> None:
    resend = node.rib.resend

    def recording(key: str) -> None:
        calls.append((node.name, key))
        resend(key)

    node.rib.resend = recording  # type: ignore[method-assign]


async def _async(value: bool) -> bool:
    return value


async def test_soft_reset_needs_an_established_session(pair: Pair) -> None:
    _a, b, stub = pair
    await stub.DisablePeer(pb.DisablePeerRequest(address=b.advertise_address))
    soft = pb.ResetPeerRequest(address=b.advertise_address, soft=pb.SOFT_RESET_DIRECTION_IN)
    assert await _code_of(stub.ResetPeer(soft)) is grpc.StatusCode.FAILED_PRECONDITION


async def test_list_routes_of_each_table(pair: Pair) -> None:
    a, b, stub = pair
    await a.announce_agents(["ops.tool"], AgentAttributes())
    await eventually(lambda: _has(b, "ops.tool"), 10)
    loc = [r for batch in await _routes(stub) for r in batch]
    assert [r.name for r in loc] == ["demo.calculator", "demo.capitals", "demo.echo", "ops.tool"]
    assert all(r.best for r in loc) and loc[3].peer == "" and loc[0].peer == b.advertise_address
    assert list(loc[0].attributes.as_path) == [65002]
    adj_in = await _routes(stub, table=pb.TABLE_ADJ_RIB_IN, peer=b.advertise_address, name="demo.c*")
    assert [r.name for r in adj_in[0]] == ["demo.calculator", "demo.capitals"]
    adj_out = await _routes(stub, table=pb.TABLE_ADJ_RIB_OUT, peer=b.advertise_address)
    [route] = adj_out[0]
    assert route.name == "ops.tool" and list(route.attributes.as_path) == [65001]
    assert route.attributes.next_hop == a.advertise_address
    from_b = await _routes(stub, table=pb.TABLE_LOC_RIB, peer=b.advertise_address, batch_size=2)
    assert [len(batch) for batch in from_b] == [2, 1]
    no_peer = _routes(stub, table=pb.TABLE_ADJ_RIB_IN)
    assert await _code_of(no_peer) is grpc.StatusCode.INVALID_ARGUMENT
    too_big = _routes(stub, batch_size=100_000)
    assert await _code_of(too_big) is grpc.StatusCode.INVALID_ARGUMENT


async def test_announce_resolve_and_withdraw(pair: Pair) -> None:
    _a, b, stub = pair
    agent = bgp_pb2.AgentAttributes(description="a tool", capabilities=["ops"])
    await stub.AnnounceAgent(pb.AnnounceAgentRequest(names=["demo.echo", "tools.*"], agent=agent, med=5))
    resolved = await stub.ResolveAgent(pb.ResolveAgentRequest(name="demo.echo"))
    assert resolved.found and resolved.entry == "demo.echo" and resolved.reason == "locally_originated"
    assert resolved.best.peer == "" and resolved.best.attributes.med == 5
    assert [r.peer for r in resolved.alternatives] == [b.advertise_address]
    aggregate = await stub.ResolveAgent(pb.ResolveAgentRequest(name="tools.hammer"))
    assert aggregate.found and aggregate.entry == "tools.*" and aggregate.reason == "only_path"
    await eventually(lambda: _has(b, "tools.hammer"), 10)
    await stub.WithdrawAgent(pb.WithdrawAgentRequest(names=["tools.*", "demo.echo"]))
    assert not (await stub.ResolveAgent(pb.ResolveAgentRequest(name="tools.hammer"))).found
    assert (await stub.ResolveAgent(pb.ResolveAgentRequest(name="demo.echo"))).reason == "only_path"
    bad = stub.AnnounceAgent(pb.AnnounceAgentRequest(names=["not a name"], agent=agent))
    assert await _code_of(bad) is grpc.StatusCode.INVALID_ARGUMENT


async def test_call_agent_returns_the_reply_or_the_error(pair: Pair) -> None:
    _a, _b, stub = pair
    call = forwarding_pb2.AgentCall(name="demo.capitals", arguments_json='{"country": "Japan"}')
    reply = await stub.CallAgent(pb.CallAgentRequest(call=call, timeout_seconds=10))
    assert reply.result.text == "The capital of Japan is Tokyo." and reply.result.served_by == "b"
    assert list(reply.result.trace) == ["10.0.0.1", "10.0.0.2"] and reply.elapsed_seconds > 0
    missing = await stub.CallAgent(pb.CallAgentRequest(call=forwarding_pb2.AgentCall(name="nobody.here")))
    assert missing.error.code == forwarding_pb2.CALL_ERROR_CODE_NOT_FOUND and missing.error.node == "a"


async def test_watch_events_snapshot_marker_then_numbered_live_events(pair: Pair) -> None:
    a, _b, stub = pair
    stream = stub.WatchEvents(pb.WatchEventsRequest())
    events = [await stream.read() for _ in range(5)]
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
    assert events[0].peer.new_state == pb.SESSION_STATE_ESTABLISHED
    assert events[0].peer.old_state == pb.SESSION_STATE_UNSPECIFIED
    assert sorted(e.route.name for e in events[1:4]) == ["demo.calculator", "demo.capitals", "demo.echo"]
    assert all(e.route.reason == "snapshot" for e in events[1:4])
    assert events[4].end_of_snapshot.events == 4
    await a.announce_agents(["ops.tool"], AgentAttributes())
    live = await stream.read()
    assert live.sequence == 6 and live.route.name == "ops.tool" and live.route.reason == "new_route"
    stream.cancel()


async def test_watch_events_has_no_gap_while_peers_flap(pair: Pair) -> None:
    a, b, stub = pair
    stream = stub.WatchEvents(pb.WatchEventsRequest(peers=True))
    snapshot = [await stream.read() for _ in range(2)]
    assert snapshot[1].HasField("end_of_snapshot")
    for _ in range(3):
        await stub.DisablePeer(pb.DisablePeerRequest(address=b.advertise_address))
        await stub.EnablePeer(pb.EnablePeerRequest(address=b.advertise_address))
        await established(a, b)
    seen: list[pb.WatchEventsResponse] = []
    async with asyncio.timeout(10):
        while sum(e.peer.new_state == pb.SESSION_STATE_ESTABLISHED for e in seen) < 3:
            seen.append(await stream.read())
    stream.cancel()
    assert [e.sequence for e in seen] == list(range(3, 3 + len(seen)))
    assert all(e.HasField("peer") for e in seen)  # only what was asked for
    # Each event starts where the one before ended: in order, nothing lost.
    for before, after in itertools.pairwise(seen):
        assert after.peer.old_state == before.peer.new_state
    assert seen[0].peer.reason == "manual_stop"


async def test_list_routes_streams_100k_routes_in_batches_under_the_message_limit() -> None:
    config = Config(node=NodeConfig(name="big", asn=65001, router_id="10.0.0.9", listen="127.0.0.1:0"))
    async with running(config) as (node,):
        names = [f"bulk.agent{i:06d}" for i in range(100_000)]
        await node.announce_agents(names, AgentAttributes(description="x" * 40, capabilities=("bulk",)))
        admin = AdminServer(node, "127.0.0.1:0")
        port = await admin.start()
        try:
            # A client that accepts no message over 4 MiB, gRPC's default.
            options = [("grpc.max_receive_message_length", 4 * 1024 * 1024)]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
                stub = admin_pb2_grpc.AdminServiceStub(channel)
                batches = await _routes(stub, batch_size=10_000)
        finally:
            await admin.stop()
    assert len(batches) == 10 and all(len(batch) == 10_000 for batch in batches)
    assert [r.name for batch in batches for r in batch] == names


async def test_token_is_required_when_configured_but_not_for_health() -> None:
    async with running(node_config("t", 65001, "10.0.0.1")) as (node,):
        admin = AdminServer(node, "127.0.0.1:0", token=TOKEN)
        port = await admin.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = admin_pb2_grpc.AdminServiceStub(channel)
                assert await _code_of(stub.GetNode(pb.GetNodeRequest())) is grpc.StatusCode.UNAUTHENTICATED
                wrong = stub.GetNode(pb.GetNodeRequest(), metadata=[("authorization", "Bearer nope")])
                assert await _code_of(wrong) is grpc.StatusCode.UNAUTHENTICATED
                listing = _peers_with_metadata(stub, [])
                assert await _code_of(listing) is grpc.StatusCode.UNAUTHENTICATED
                good = [("authorization", f"Bearer {TOKEN}")]
                assert (await stub.GetNode(pb.GetNodeRequest(), metadata=good)).node.name == "t"
                check = health_pb2.HealthCheckRequest(service="")
                reply = await health_pb2_grpc.HealthStub(channel).Check(check)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            await admin.stop()


async def _peers_with_metadata(
    stub: admin_pb2_grpc.AdminServiceStub, metadata: list[tuple[str, str]]
) -> None:
    async for _ in stub.ListPeers(pb.ListPeersRequest(), metadata=metadata):
        pass


def test_an_admin_api_off_loopback_needs_a_token() -> None:
    with pytest.raises(ValueError, match="needs a token"):
        AdminServer(Node(Config()), "0.0.0.0:0")


async def test_readiness_waits_for_the_initial_table_exchange() -> None:
    async with running(node_config("b", 65002, "10.0.0.2")) as (b,):
        await b.host(demo_backend("echo"), "demo")
        timers = FAST_TIMERS.model_copy(update={"readiness_timeout": 30.0})
        late = Config(
            node=NodeConfig(name="a", asn=65001, router_id="10.0.0.1", listen="127.0.0.1:0"),
            timers=timers,
            neighbors=(neighbor_of(b),),
        )
        async with running(late) as (a,):
            await b.add_neighbor(neighbor_of(a))
            await eventually(lambda: _health(a), 10)
            assert a.ready and await a.resolve("demo.echo") is not None


async def test_readiness_gives_up_waiting_after_the_timeout() -> None:
    timers = FAST_TIMERS.model_copy(update={"readiness_timeout": 0.3})
    nobody = NeighborConfig(address="127.0.0.1:1", asn=65009)
    config = Config(
        node=NodeConfig(name="a", asn=65001, router_id="10.0.0.1", listen="127.0.0.1:0"),
        timers=timers,
        neighbors=(nobody,),
    )
    async with running(config) as (a,):
        assert not await _health(a)
        await eventually(lambda: _health(a), 5)


async def _health(node: Node) -> bool:
    async with grpc.aio.insecure_channel(node.listen_address) as channel:
        check = health_pb2.HealthCheckRequest(service="")
        reply = await health_pb2_grpc.HealthStub(channel).Check(check)
        liveness = health_pb2.HealthCheckRequest(service="agentmesh.v1.PeeringService")
        live = await health_pb2_grpc.HealthStub(channel).Check(liveness)
        assert live.status == health_pb2.HealthCheckResponse.SERVING
        return reply.status == health_pb2.HealthCheckResponse.SERVING


REJECT_ECHO = """
policy:
  defined_sets: {names: {echo: [demo.echo]}}
  policies:
    - name: no-echo
      statements:
        - {name: echo, conditions: {names: {set: echo}}, actions: {route: reject}}
        - {name: prefer, actions: {local_pref: {set: 150}}}
  import: {policies: [no-echo], default: accept}
"""


async def test_set_policy_filters_at_run_time_and_every_route_explains_itself(pair: Pair) -> None:
    a, b, stub = pair
    assert (await stub.GetPolicy(pb.GetPolicyRequest())).policy_yaml == ""
    reply = await stub.SetPolicy(pb.SetPolicyRequest(policy_yaml=REJECT_ECHO))
    assert reply.reevaluated == 3
    assert "no-echo" in (await stub.GetPolicy(pb.GetPolicyRequest())).policy_yaml
    assert not (await stub.ResolveAgent(pb.ResolveAgentRequest(name="demo.echo"))).found
    resolved = await stub.ResolveAgent(pb.ResolveAgentRequest(name="demo.capitals"))
    assert resolved.best.attributes.local_pref == 150
    assert [(s.policy, s.statement, s.outcome) for s in resolved.best.policy_trail] == [
        ("no-echo", "prefer", "continued"),
        ("", "", "default_accepted"),
    ]
    assert list(resolved.best.policy_trail[0].actions) == ["local_pref=150"]
    listing = await _routes(stub, table=pb.TABLE_ADJ_RIB_IN, peer=b.advertise_address, explain=True)
    routes = {route.name: route for batch in listing for route in batch}
    assert routes["demo.echo"].filtered and not routes["demo.echo"].best
    assert routes["demo.echo"].policy_trail[0].outcome == "rejected"
    assert not routes["demo.capitals"].filtered and routes["demo.capitals"].best
    # The session was never reset, and removing the policy brings demo.echo back.
    assert (await status(a, b.advertise_address)).state is State.ESTABLISHED
    assert (await stub.SetPolicy(pb.SetPolicyRequest(policy_yaml=""))).reevaluated == 3
    assert (await stub.ResolveAgent(pb.ResolveAgentRequest(name="demo.echo"))).found


async def test_set_policy_refuses_an_invalid_policy_with_its_location(pair: Pair) -> None:
    _a, _b, stub = pair
    bad = "policies: [{name: p, statements: [{name: s, conditions: {names: {set: nowhere}}}]}]"
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.SetPolicy(pb.SetPolicyRequest(policy_yaml=bad))
    assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "policy.policies[0].statements[0]" in failed.value.details()
    assert (await stub.GetPolicy(pb.GetPolicyRequest())).policy_yaml == ""  # nothing changed


async def test_get_node_reports_each_backends_health(pair: Pair) -> None:
    _a, b, _stub = pair
    admin = AdminServer(b, "127.0.0.1:0")
    port = await admin.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            node = (await admin_pb2_grpc.AdminServiceStub(channel).GetNode(pb.GetNodeRequest())).node
    finally:
        await admin.stop()
    [backend] = node.backends
    assert backend.namespace == "demo" and len(backend.agents) == 3
    assert backend.health.state == "healthy" and backend.health.last_probe_error == ""
