"""Neighbours given by DNS name: one session per address the name resolves to, kept up to date.

The resolver is injected so that one name can stand for several loopback nodes (each on its own
OS-chosen port); one test uses the system resolver with `localhost`.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from agentmesh.bgp.errors import CeaseSubcode, ErrorCode
from agentmesh.bgp.fsm import State
from agentmesh.config import Config, NeighborConfig, NodeConfig, TimersConfig, split_host_port
from agentmesh.speaker.neighbors import Endpoint
from agentmesh.speaker.node import Node, PeerStatus, PreconditionFailed
from tests.support.nodes import eventually, neighbor_of, node_config, running

NAME = "reflectors.test"
ENTRY = NeighborConfig(address=f"{NAME}:7000", asn=65002, description="reflectors")
#: Resolution every 0.1 s, so that tests see a changed answer quickly.
TIMERS = TimersConfig(hold_time=3, connect_retry_time=1.0, connect_retry_initial=0.2, resolve_interval=0.1)


class FakeDns:
    """Answers for names, as the system resolver would give them; an unknown name fails."""

    def __init__(self) -> None:
        self.answers: dict[str, list[Endpoint]] = {}
        self.lookups = 0

    def serve(self, name: str, *nodes: Node) -> None:
        self.answers[name] = [split_host_port(node.advertise_address) for node in nodes]

    async def __call__(self, host: str, port: int) -> list[Endpoint]:
        self.lookups += 1
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


@contextlib.asynccontextmanager
async def started(node: Node) -> AsyncIterator[Node]:
    try:
        await node.start()
        yield node
    finally:
        await node.stop()


def dialler(dns: FakeDns, *neighbors: NeighborConfig) -> Node:
    node = NodeConfig(name="a", asn=65001, router_id="10.0.0.1", listen="127.0.0.1:0")
    return Node(Config(node=node, timers=TIMERS, neighbors=neighbors), resolver=dns)


async def peers(node: Node) -> dict[str, PeerStatus]:
    return {peer.address: peer for peer in await node.peers()}


async def established_with(node: Node, *others: Node, timeout: float = 10) -> None:
    """Wait until `node`'s neighbours are exactly `others`, every session Established."""
    wanted = {other.advertise_address for other in others}

    async def done() -> bool:
        now = await peers(node)
        return set(now) == wanted and all(p.state is State.ESTABLISHED for p in now.values())

    await eventually(done, timeout)


async def test_one_session_per_resolved_address_kept_up_to_date() -> None:
    dns = FakeDns()
    configs = [node_config(name, 65002, f"10.0.0.{i}") for i, name in enumerate(("b", "c"), start=2)]
    async with running(*configs) as (b, c):
        dns.serve(NAME, b, c)
        async with started(dialler(dns, ENTRY)) as a:
            await b.add_neighbor(neighbor_of(a))
            await c.add_neighbor(neighbor_of(a))
            await established_with(a, b, c)
            listed = await peers(a)
            assert {p.description for p in listed.values()} == {f"reflectors (resolved from {NAME}:7000)"}
            # Readiness waited for the addresses of the first resolution, and the exchange with them ended.

            async def ready() -> bool:
                return a.ready

            await eventually(ready, timeout=10)

            # c leaves the answer, and a's own address joins it (a pod resolving its own Service):
            # c's session ends with Cease/Peer De-configured, and a does not peer with itself.
            watch = c.watch()
            dns.serve(NAME, b, a)
            await established_with(a, b)
            while (event := await watch.get()).old is not State.ESTABLISHED:
                pass
            assert event.notification is not None
            assert (event.notification.code, event.notification.subcode) == (
                ErrorCode.CEASE,
                CeaseSubcode.PEER_DECONFIGURED,
            )

            # c is back in the answer: a session again.
            dns.serve(NAME, b, c)
            await established_with(a, b, c)


async def test_a_failed_lookup_keeps_the_sessions_and_admin_commands_take_the_entry() -> None:
    dns = FakeDns()
    configs = [node_config(name, 65002, f"10.0.0.{i}") for i, name in enumerate(("b", "c"), start=2)]
    async with running(*configs) as (b, c):
        dns.serve(NAME, b, c)
        async with started(dialler(dns, ENTRY)) as a:
            await b.add_neighbor(neighbor_of(a))
            await c.add_neighbor(neighbor_of(a))
            await established_with(a, b, c)

            with capture_logs() as logs:
                del dns.answers[NAME]
                lookups = dns.lookups

                async def retried() -> bool:
                    return dns.lookups >= lookups + 2

                await eventually(retried, timeout=10)
            unresolved = [line for line in logs if line["event"] == "neighbor_unresolved"]
            assert unresolved and unresolved[0]["peer"] == ENTRY.address
            assert "Name or service not known" in unresolved[0]["error"]
            await established_with(a, b, c)
            dns.serve(NAME, b, c)

            # A session of the entry is not configured on its own: the entry is.
            with pytest.raises(PreconditionFailed, match=f"delete {NAME}:7000 instead"):
                await a.remove_neighbor(b.advertise_address)
            with pytest.raises(PreconditionFailed, match=f"update {NAME}:7000 instead"):
                await a.update_neighbor(neighbor_of(b))
            renamed = ENTRY.model_copy(update={"description": "route reflectors"})
            assert await a.update_neighbor(renamed) is False  # nothing the sessions negotiated changed
            descriptions = {p.description for p in (await peers(a)).values()}
            assert descriptions == {f"route reflectors (resolved from {NAME}:7000)"}

            await a.remove_neighbor(ENTRY.address)
            assert await peers(a) == {}
            await a.add_neighbor(ENTRY)  # added at run time: resolved at once
            await established_with(a, b, c)


async def test_localhost_through_the_system_resolver() -> None:
    async with running(node_config("a", 65001, "10.0.0.1"), node_config("b", 65002, "10.0.0.2")) as (a, b):
        port = split_host_port(b.advertise_address)[1]
        await b.add_neighbor(neighbor_of(a))
        await a.add_neighbor(NeighborConfig(address=f"localhost:{port}", asn=65002))
        # localhost is 127.0.0.1 here, and may be ::1 too (where b does not listen).
        await a.wait_for_state(f"127.0.0.1:{port}", State.ESTABLISHED, 10)
        session: Any = (await peers(a))[f"127.0.0.1:{port}"]
        assert session.description == f"resolved from localhost:{port}"
        assert set(await peers(a)) <= {f"127.0.0.1:{port}", f"[::1]:{port}"}


async def test_an_address_listed_after_a_name_that_resolves_to_it_keeps_its_own_settings() -> None:
    dns = FakeDns()
    dns.answers["peers.test"] = [("127.0.0.1", 7101), ("127.0.0.1", 7102)]
    by_name = NeighborConfig(address="peers.test:7101", asn=65002)
    by_address = NeighborConfig(address="127.0.0.1:7101", asn=65003, description="by address")
    async with started(dialler(dns, by_name, by_address)) as node:
        listed = {peer.address: (peer.asn, peer.description) for peer in await node.peers()}
        assert listed == {
            "127.0.0.1:7101": (65003, "by address"),
            "127.0.0.1:7102": (65002, "resolved from peers.test:7101"),
        }
