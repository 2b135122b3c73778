"""Mutual TLS between real nodes on loopback: who is accepted, who is refused and why, and rotation.

Certificates come from a CA made for each test (tests/support/certs.py). Each node's certificate
names it as `<name>.mesh.test`, and its neighbours expect exactly that (`tls_name`) while dialling
127.0.0.1: the client checks the server certificate against the name, not the address it dialled.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from structlog.testing import capture_logs

from agentmesh.agents.base import AgentRequest, ChatMessage
from agentmesh.agents.demo import demo_backend
from agentmesh.bgp.errors import ErrorCode, OpenSubcode
from agentmesh.bgp.fsm import State
from agentmesh.config import (
    Config,
    DynamicNeighborConfig,
    NeighborConfig,
    NodeConfig,
    TlsConfig,
    join_host_port,
    split_host_port,
)
from agentmesh.speaker.node import Node
from agentmesh.transport.tls import TlsSetupError
from agentmesh.v1 import peering_pb2_grpc
from tests.support.certs import CertFiles, CertificateAuthority
from tests.support.nodes import FAST_TIMERS, established, eventually, running, status
from tests.support.processes import NodeProcess, node_processes, write_config

ECHO = AgentRequest(messages=(ChatMessage("user", "over TLS"),))


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path / "ca")


def issue(ca: CertificateAuthority, directory: Path, name: str) -> CertFiles:
    return ca.issue(directory / name, name, dns=[f"{name}.mesh.test"])


def config(
    name: str, asn: int, files: CertFiles | None, *, require_client_cert: bool = True, host: str = "127.0.0.1"
) -> Config:
    tls = None
    if files is not None:
        tls = TlsConfig(
            cert_file=str(files.cert),
            key_file=str(files.key),
            ca_file=str(files.ca),
            require_client_cert=require_client_cert,
        )
    listen = join_host_port(host, 0)
    node = NodeConfig(name=name, asn=asn, router_id=f"10.0.0.{asn % 100}", listen=listen)
    return Config(node=node, timers=FAST_TIMERS, tls=tls)


def neighbor(
    node: Node, *, tls_name: str | None = None, passive: bool = False, asn: int = 0
) -> NeighborConfig:
    return NeighborConfig(
        address=node.advertise_address,
        asn=asn or node.asn,
        passive=passive,
        tls_name=tls_name if tls_name is not None else f"{node.name}.mesh.test",
    )


def events(logs: list[dict[str, Any]], event: str, **fields: Any) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == event and all(e.get(k) == v for k, v in fields.items())]


async def logged(
    logs: list[dict[str, Any]], event: str, timeout: float = 10, **fields: Any
) -> dict[str, Any]:
    """The first log line `event` with `fields`, waiting for it."""

    async def seen() -> bool:
        return bool(events(logs, event, **fields))

    await eventually(seen, timeout)
    return events(logs, event, **fields)[0]


async def never_established(a: Node, b: Node) -> None:
    for node, other in ((a, b), (b, a)):
        assert (await status(node, other.advertise_address)).state is not State.ESTABLISHED


# -- accepted --------------------------------------------------------------------------------


async def test_nodes_with_certificates_of_the_mesh_ca_peer_and_forward_calls(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    a_files, b_files = issue(ca, tmp_path, "a"), issue(ca, tmp_path, "b")
    async with running(config("a", 65001, a_files), config("b", 65002, b_files)) as (a, b):
        await b.host(demo_backend(), "demo")
        await a.add_neighbor(neighbor(b))
        await b.add_neighbor(neighbor(a))
        await established(a, b)

        async def route() -> bool:
            return "demo.echo" in await a.loc_rib()

        await eventually(route, 10)
        served = await a.call_agent("demo.echo", ECHO, timeout=10)
        assert (served.reply.text, served.served_by) == ("echo: over TLS", "b")
        # The health service shares the port, and so its TLS: a client with a mesh certificate asks it.
        credentials = grpc.ssl_channel_credentials(
            a_files.ca.read_bytes(), a_files.key.read_bytes(), a_files.cert.read_bytes()
        )
        options = (("grpc.ssl_target_name_override", "b.mesh.test"),)
        async with grpc.aio.secure_channel(b.advertise_address, credentials, options) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            health = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_the_default_tls_name_is_the_host_of_the_neighbours_address(
    ca: CertificateAuthority, tmp_path: Path, host: str
) -> None:
    """No `tls_name`: a certificate for the dialled IP (an IP SAN) is what each side expects."""
    a_files = ca.issue(tmp_path / "a", "a", ips=[host])
    b_files = ca.issue(tmp_path / "b", "b", ips=[host])
    configs = (config("a", 65001, a_files, host=host), config("b", 65002, b_files, host=host))
    async with running(*configs) as (a, b):
        await a.add_neighbor(NeighborConfig(address=b.advertise_address, asn=b.asn))
        await b.add_neighbor(NeighborConfig(address=a.advertise_address, asn=a.asn))
        await established(a, b)


# -- refused ---------------------------------------------------------------------------------


async def test_a_client_certificate_from_another_ca_is_refused_by_the_handshake(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    """b trusts a's CA but holds a certificate of its own CA: a's server refuses it before any call."""
    other = CertificateAuthority.create(tmp_path / "other-ca", "another CA")
    a_files = issue(ca, tmp_path, "a")
    b_own = issue(other, tmp_path, "b")
    b_files = CertFiles(b_own.cert, b_own.key, a_files.ca)
    with capture_logs() as logs:
        async with running(config("a", 65001, a_files), config("b", 65002, b_files)) as (a, b):
            await a.add_neighbor(neighbor(b, passive=True))
            await b.add_neighbor(neighbor(a))
            line = await logged(logs, "tls_handshake_failed", peer=a.advertise_address)
            await never_established(a, b)
    # TLS 1.3 tells the client of its refused certificate only by closing the connection; the server's
    # own reason (CERTIFICATE_VERIFY_FAILED) is in gRPC's log, where its handshake failed.
    assert "does not accept this node's certificate" in line["why"], line


async def test_a_server_certificate_from_another_ca_is_refused_by_the_dialler(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    other = CertificateAuthority.create(tmp_path / "other-ca", "another CA")
    a_files, b_files = issue(ca, tmp_path, "a"), issue(other, tmp_path, "b")
    with capture_logs() as logs:
        async with running(config("a", 65001, a_files), config("b", 65002, b_files)) as (a, b):
            await a.add_neighbor(neighbor(b))
            await b.add_neighbor(neighbor(a, passive=True))
            line = await logged(logs, "tls_handshake_failed", peer=b.advertise_address)
            await never_established(a, b)
    assert line["why"] == "the server's certificate is not signed by a CA in tls.ca_file"
    assert "CERTIFICATE_VERIFY_FAILED" in line["error"]


async def test_a_certificate_naming_someone_else_is_refused_both_ways(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    """a expects b to be `other.mesh.test`; b's certificate says `b.mesh.test`."""
    a_files, b_files = issue(ca, tmp_path, "a"), issue(ca, tmp_path, "b")
    with capture_logs() as logs:
        async with running(config("a", 65001, a_files), config("b", 65002, b_files)) as (a, b):
            await a.add_neighbor(neighbor(b, tls_name="other.mesh.test"))
            await b.add_neighbor(neighbor(a))
            # b dials a: a's server took the handshake (same CA) but the identity is not the neighbour's.
            refused = await logged(logs, "connection_refused", peer=b.advertise_address)
            assert (
                refused["why"] == "certificate identity b.mesh.test does not match tls_name 'other.mesh.test'"
            )
            assert refused["source"] == "127.0.0.1"
            told = await logged(logs, "dial_refused", peer=a.advertise_address)
            assert "PERMISSION_DENIED" in told["error"] and "other.mesh.test" in told["error"]
            # a dials b: a's client checks b's server certificate against other.mesh.test.
            dialled = await logged(logs, "tls_handshake_failed", peer=b.advertise_address)
            assert dialled["why"] == "the server's certificate does not carry the expected tls_name"
            await never_established(a, b)


async def test_a_dynamic_range_admits_only_peers_whose_certificate_it_names(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    """r accepts peers from 127.0.0.0/8 whose certificate matches *.clients.mesh.test; c1 has one, c2 not."""
    r_files = issue(ca, tmp_path, "r")
    c1_files = ca.issue(tmp_path / "c1", "c1", dns=["c1.clients.mesh.test"])
    c2_files = ca.issue(tmp_path / "c2", "c2", dns=["c2.others.mesh.test"])
    dynamic = DynamicNeighborConfig(prefix="127.0.0.0/8", asn=65001, tls_name="*.clients.mesh.test")
    r_config = config("r", 65001, r_files).model_copy(update={"dynamic_neighbors": (dynamic,)})
    configs = [r_config, config("c1", 65001, c1_files), config("c2", 65001, c2_files)]
    configs = [
        c.model_copy(update={"node": c.node.model_copy(update={"router_id": f"10.0.1.{i}"})})
        for i, c in enumerate(configs, 1)
    ]
    with capture_logs() as logs:
        async with running(*configs) as (r, c1, c2):
            for client in (c1, c2):
                await client.add_neighbor(neighbor(r))
            await established(c1, r)
            refused = await logged(logs, "connection_refused", peer=c2.advertise_address)
            assert refused["why"] == (
                "certificate identity c2.others.mesh.test does not match tls_name '*.clients.mesh.test'"
            )
            assert {peer.address for peer in await r.peers()} == {c1.advertise_address}


async def test_calls_reach_a_dynamic_neighbour_whose_range_names_a_wildcard(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    """The wildcard checks c1 when it dials in; a call to c1 checks its certificate against its address."""
    r_files = issue(ca, tmp_path, "r")
    c1_files = ca.issue(tmp_path / "c1", "c1", dns=["c1.clients.mesh.test"], ips=["127.0.0.1"])
    dynamic = DynamicNeighborConfig(prefix="127.0.0.0/8", asn=65001, tls_name="*.clients.mesh.test")
    r_config = config("r", 65001, r_files).model_copy(update={"dynamic_neighbors": (dynamic,)})
    c_config = config("c1", 65001, c1_files)
    c_config = c_config.model_copy(
        update={"node": c_config.node.model_copy(update={"router_id": "10.0.1.2"})}
    )
    async with running(r_config, c_config) as (r, c1):
        await c1.host(demo_backend(), "demo")
        await c1.add_neighbor(neighbor(r))
        await established(c1, r)

        async def route() -> bool:
            return await r.resolve("demo.echo") is not None

        await eventually(route, 10)
        served = await r.call_agent("demo.echo", ECHO, timeout=10)
        assert (served.reply.text, served.served_by) == ("echo: over TLS", "c1")


async def test_a_plaintext_peer_is_refused_either_way(ca: CertificateAuthority, tmp_path: Path) -> None:
    a_files = issue(ca, tmp_path, "a")
    with capture_logs() as logs:
        async with running(config("a", 65001, a_files), config("b", 65002, None)) as (a, b):
            await a.add_neighbor(neighbor(b))
            await b.add_neighbor(NeighborConfig(address=a.advertise_address, asn=a.asn))
            # a's TLS client meets b's plaintext server.
            line = await logged(logs, "tls_handshake_failed", peer=b.advertise_address)
            assert line["why"] == "the server does not speak TLS (a plaintext node?)"
            # b's plaintext client meets a's TLS server: gRPC closes the connection in the handshake.
            await logged(logs, "dial_failed", peer=a.advertise_address)
            await never_established(a, b)
            # A plaintext gRPC client gets no answer from the peering port either.
            async with grpc.aio.insecure_channel(a.advertise_address) as channel:
                call = peering_pb2_grpc.PeeringServiceStub(channel).Session()
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await asyncio.wait_for(call.read(), 5)
                assert failed.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_neighbour_whose_open_carries_another_asn_gets_bad_peer_as(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    """The certificate is right, the AS is not: the OPEN check refuses it (RFC 4271 §6.2, 2/2)."""
    a_files, b_files = issue(ca, tmp_path, "a"), issue(ca, tmp_path, "b")
    with capture_logs() as logs:
        async with running(config("a", 65001, a_files), config("b", 65002, b_files)) as (a, b):
            await a.add_neighbor(neighbor(b, asn=65099, passive=True))
            await b.add_neighbor(neighbor(a))
            refused = await logged(logs, "connection_refused", peer=b.advertise_address)
            assert refused["why"] == "its OPEN carries AS65002, not AS65099 as configured"
            sent = await logged(logs, "notification_sent", peer=b.advertise_address)
            assert (sent["code"], sent["subcode"]) == (ErrorCode.OPEN_MESSAGE, OpenSubcode.BAD_PEER_AS)

            async def told() -> bool:
                notification = (await status(b, a.advertise_address)).last_notification
                return notification is not None

            await eventually(told, 10)
            notification = (await status(b, a.advertise_address)).last_notification
            assert notification is not None
            assert (notification.code, notification.subcode) == (
                ErrorCode.OPEN_MESSAGE,
                OpenSubcode.BAD_PEER_AS,
            )
            await never_established(a, b)


async def test_without_client_certificates_the_open_is_the_only_check(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    """`require_client_cert: false`: TLS encrypts and authenticates the server, callers stay anonymous."""
    a_files, b_files = issue(ca, tmp_path, "a"), issue(ca, tmp_path, "b")
    configs = (config("a", 65001, a_files, require_client_cert=False), config("b", 65002, b_files))
    async with running(*configs) as (a, b):
        await a.add_neighbor(neighbor(b, tls_name="not-checked.mesh.test", passive=True))
        await b.add_neighbor(neighbor(a))
        await established(a, b)


async def test_a_reload_reports_that_a_changed_tls_section_needs_a_restart(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    files = issue(ca, tmp_path, "a")
    async with running(config("a", 65001, files)) as (a,):
        changed = config("a", 65001, files, require_client_cert=False)
        report = await a.reload(changed.model_copy(update={"node": a.config.node}))
    assert report.restart_needed == ["tls"]


# -- bad files -------------------------------------------------------------------------------


@pytest.mark.parametrize("problem", ["missing", "mismatched", "garbage"])
async def test_unusable_files_stop_the_start_with_the_reason(
    ca: CertificateAuthority, tmp_path: Path, problem: str
) -> None:
    files = issue(ca, tmp_path, "a")
    if problem == "missing":
        files.key.unlink()
        expected = f"tls.key_file: {files.key}: file not found"
    elif problem == "mismatched":
        shutil.copy(issue(ca, tmp_path, "b").key, files.key)
        expected = f"tls.key_file: {files.key}: the key does not match the certificate in tls.cert_file"
    else:
        files.cert.write_text("not a certificate\n")
        expected = f"tls.cert_file: {files.cert}: no PEM certificate in the file"
    node = Node(config("a", 65001, files))
    with pytest.raises(TlsSetupError) as failed:
        await node.start()
    assert str(failed.value).startswith(expected)
    await node.stop()  # nothing was started: nothing to stop


async def test_serve_with_a_key_that_does_not_match_exits_2_naming_the_file(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    files = issue(ca, tmp_path, "a")
    shutil.copy(issue(ca, tmp_path, "b").key, files.key)
    tls = {"cert_file": str(files.cert), "key_file": str(files.key), "ca_file": str(files.ca)}
    path = write_config(tmp_path / "a.yaml", {"node": {"listen": "127.0.0.1:0"}, "tls": tls})
    with node_processes() as started:
        started.append(NodeProcess(["serve", "--config", str(path)], tmp_path / "a.log"))
        assert await started[0].wait_exit() == 2
        text = started[0].log_path.read_text()
    assert f"agentmesh: cannot set up TLS: tls.key_file: {files.key}: the key does not match" in text
    assert "Traceback" not in text


# -- rotation --------------------------------------------------------------------------------


def rotate(ca: CertificateAuthority, files: CertFiles, name: str, scratch: Path) -> x509.Certificate:
    """Issue `name` a new certificate and key and move them over the old files, as a rotation does."""
    fresh = issue(ca, scratch, name)
    os.replace(fresh.key, files.key)
    os.replace(fresh.cert, files.cert)
    return x509.load_pem_x509_certificate(files.cert.read_bytes())


def served_certificate(address: str, client: CertFiles) -> x509.Certificate:
    """The certificate a node's server presents to a new TLS connection (a plain handshake, no gRPC)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(client.ca))
    context.load_cert_chain(str(client.cert), str(client.key))
    context.check_hostname = False
    context.set_alpn_protocols(["h2"])
    host, port = split_host_port(address)
    with socket.create_connection((host, port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "scratch"
    path.mkdir()
    yield path


async def test_a_rotated_certificate_serves_new_connections_and_keeps_the_session(
    ca: CertificateAuthority, tmp_path: Path, scratch: Path
) -> None:
    a_files, b_files, c_files = (issue(ca, tmp_path, name) for name in ("a", "b", "c"))
    configs = (config("a", 65001, a_files), config("b", 65002, b_files), config("c", 65003, c_files))
    with capture_logs() as logs:
        async with running(*configs) as (a, b, c):
            await b.host(demo_backend(), "demo")
            await a.add_neighbor(neighbor(b))
            await b.add_neighbor(neighbor(a))
            await established(a, b)

            async def route() -> bool:
                return "demo.echo" in await a.loc_rib()

            await eventually(route, 10)
            assert (await a.call_agent("demo.echo", ECHO, timeout=10)).served_by == "b"
            before = served_certificate(b.advertise_address, c_files)
            watch = b.watch()

            new_b = rotate(ca, b_files, "b", scratch / "b")
            rotate(ca, a_files, "a", scratch / "a")
            assert new_b.serial_number != before.serial_number
            # A new connection to b gets b's new certificate.
            after = await asyncio.to_thread(served_certificate, b.advertise_address, c_files)
            assert after.serial_number == new_b.serial_number
            await logged(logs, "tls_reloaded", cert_file=str(b_files.cert))
            # New sessions come up with the new certificates, both ways.
            await c.add_neighbor(neighbor(b))
            await b.add_neighbor(neighbor(c))
            await established(b, c)
            # a's next-hop channel to b is replaced by one with a's new certificate; calls still reach b.
            assert (await a.call_agent("demo.echo", ECHO, timeout=10)).served_by == "b"
            await logged(logs, "tls_reloaded", cert_file=str(a_files.cert))
            # The session a-b never went down.
            assert watch.empty() or all(e.address != a.advertise_address for e in drain(watch))
            assert (await status(b, a.advertise_address)).state is State.ESTABLISHED


def drain(queue: asyncio.Queue[Any]) -> list[Any]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
