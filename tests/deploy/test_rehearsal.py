"""A rehearsal of the Kubernetes deployment: the mtls overlay's pods as OS processes on loopback.

The mtls overlay is the single-as topology (two route reflectors, three client nodes that host
agents) with mutual TLS. Each pod of its rendered StatefulSets becomes an `agentmesh serve` process
that reads its ConfigMap's node.yaml, as the container would, with what Kubernetes would give it:

- its own host name (the pod name, so the node name and router id come out as in the cluster) and
  a pod IP, 127.0.0.x here, through the same environment variables the downward API sets;
- cluster DNS: each process runs in its own user, mount and UTS namespaces (`unshare`) with an
  /etc/hosts that maps the pods' and headless Services' names to their 127.0.0.x addresses, so the
  nodes resolve `agentmesh-rr.agentmesh.svc.cluster.local` to both reflectors through getaddrinfo;
- the certificates the overlay's cert-manager `Certificate`s describe (same DNS names), issued by a
  CA made for the test and put where the pods' secrets would be.

What cannot be the same on one host is adapted, and only that: every pod listens on its own pod IP
rather than 0.0.0.0, with one OS-chosen port standing for the cluster's 7000 (and others for MCP,
metrics and the admin API); the reflectors' pod network range becomes 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import Client

from agentmesh.config import split_host_port
from tests.deploy.manifests import NodeSet, Obj, node_sets, of_kind, render, requires_kubectl
from tests.support.certs import CertificateAuthority
from tests.support.processes import NodeProcess, count, node_processes

REHEARSED = "overlays/mtls"
CLUSTER_PORT = 7000
#: Where the pods mount their certificate secret, as the configs name it.
SECRET_MOUNT = "/etc/agentmesh/tls/"


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rmu", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


requires_unshare = pytest.mark.skipif(
    not _can_unshare(), reason="unshare -rmu (user, mount and UTS namespaces) is not available here"
)
pytestmark = [requires_kubectl, requires_unshare]


@dataclass(frozen=True)
class Pod:
    node_set: NodeSet
    ordinal: int
    ip: str

    @property
    def name(self) -> str:
        return f"{self.node_set.name}-{self.ordinal}"

    @property
    def service(self) -> str:
        """The headless Service's DNS name (the StatefulSet's serviceName)."""
        return (
            f"{self.node_set.statefulset['spec']['serviceName']}.{self.node_set.namespace}.svc.cluster.local"
        )

    @property
    def dns_name(self) -> str:
        return f"{self.name}.{self.service}"

    @property
    def secret(self) -> str:
        [name] = [s["secret"]["name"] for s in self.node_set.volume_sources() if "secret" in s]
        return str(name)


@dataclass(frozen=True)
class Ports:
    """One OS-chosen port free on every pod IP for each port the pods use."""

    peering: int
    mcp: int
    metrics: int
    admin: int


def pods_of(objects: tuple[Obj, ...]) -> list[Pod]:
    pods: list[Pod] = []
    for node_set in sorted(node_sets(objects), key=lambda s: s.name):
        for ordinal in range(int(node_set.statefulset["spec"]["replicas"])):
            pods.append(Pod(node_set, ordinal, f"127.0.0.{11 + len(pods)}"))
    return pods


def hosts_file(pods: list[Pod]) -> str:
    """What cluster DNS answers: each pod's own name, and every pod behind its headless Service."""
    lines = ["127.0.0.1 localhost"]
    lines += [f"{pod.ip} {pod.dns_name}" for pod in pods]
    lines += [f"{pod.ip} {pod.service}" for pod in pods]
    return "\n".join(lines) + "\n"


def issue_certificates(objects: tuple[Obj, ...], directory: Path) -> dict[str, Path]:
    """Each leaf `Certificate` of the overlay issued by a test CA; secret name -> its directory."""
    ca = CertificateAuthority.create(directory / "ca")
    secrets: dict[str, Path] = {}
    for certificate in of_kind(objects, "Certificate"):
        spec = certificate["spec"]
        if spec.get("isCA"):
            continue
        target = directory / spec["secretName"]
        ca.issue(target, spec["secretName"], dns=list(spec["dnsNames"]))
        secrets[spec["secretName"]] = target
    return secrets


def common_port(ips: list[str]) -> int:
    """A port the OS chose on the first IP that every other IP can bind too."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind((ips[0], 0))
            port = int(sock.getsockname()[1])
        if all(_bindable(ip, port) for ip in ips[1:]):
            return port
    raise RuntimeError("no port free on every pod address")


def _bindable(ip: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((ip, port))
        except OSError:
            return False
        return True


def local_config(pod: Pod, ports: Ports, secrets: dict[str, Path]) -> dict[str, Any]:
    """The pod's node.yaml with only what one host cannot share adapted (see the module docstring)."""
    config = pod.node_set.raw_config
    node = config["node"]
    assert split_host_port(node["listen"]) == ("0.0.0.0", CLUSTER_PORT)
    node["listen"] = f"${{POD_IP}}:{ports.peering}"
    node["advertise_address"] = _on_port(node["advertise_address"], ports.peering)
    for neighbor in config.get("neighbors", []):
        neighbor["address"] = _on_port(neighbor["address"], ports.peering)
    for entry in config.get("dynamic_neighbors", []):
        entry["prefix"] = "127.0.0.0/8"  # the pod network
    for key, port in (("mcp", ports.mcp), ("metrics", ports.metrics)):
        if config.get(key, {}).get("listen"):
            config[key]["listen"] = f"${{POD_IP}}:{port}"
    config["admin"] = {"listen": f"${{POD_IP}}:{ports.admin}"}
    tls = config["tls"]
    for key in ("cert_file", "key_file", "ca_file"):
        assert tls[key].startswith(SECRET_MOUNT)
        tls[key] = str(secrets[pod.secret] / tls[key].removeprefix(SECRET_MOUNT))
    return dict(config)


def _on_port(address: str, port: int) -> str:
    host, _, cluster_port = address.rpartition(":")  # the host may hold ${VAR}s
    assert cluster_port == str(CLUSTER_PORT), address
    return f"{host}:{port}"


def start_pod(pod: Pod, config: Path, hosts: Path, log: Path) -> NodeProcess:
    """`agentmesh serve` as the pod's container runs it, in namespaces giving it the pod's name and DNS."""
    script = 'hostname "$POD_NAME" && mount --bind "$HOSTS" /etc/hosts && exec "$0" "$@"'
    command = ["unshare", "-rmu", "sh", "-c", script, sys.executable, "-m", "agentmesh.cli"]
    command += ["serve", "--config", str(config)]
    env = os.environ | pod.node_set.environment(pod.ordinal) | {"POD_IP": pod.ip, "HOSTS": str(hosts)}
    return NodeProcess([], log, command=command, env=env)


@contextlib.contextmanager
def deployment(tmp_path: Path) -> Iterator[tuple[list[Pod], Ports, list[NodeProcess]]]:
    objects = render(REHEARSED)
    pods = pods_of(objects)
    ips = [pod.ip for pod in pods]
    ports = Ports(*(common_port(ips) for _ in range(4)))
    assert len(set(vars(ports).values())) == 4, ports  # freed at once: the OS may hand one out twice
    secrets = issue_certificates(objects, tmp_path / "secrets")
    hosts = tmp_path / "hosts"
    hosts.write_text(hosts_file(pods))
    with node_processes() as started:
        for pod in pods:
            config = tmp_path / f"{pod.name}.yaml"
            config.write_text(yaml.safe_dump(local_config(pod, ports, secrets)))
            started.append(start_pod(pod, config, hosts, tmp_path / f"{pod.name}.log"))
        yield pods, ports, started


async def test_the_mtls_deployment_converges_and_serves_calls_through_the_mesh(tmp_path: Path) -> None:
    with deployment(tmp_path) as (pods, ports, processes):
        clients = [
            (pod, p) for pod, p in zip(pods, processes, strict=True) if "mcp" in pod.node_set.raw_config
        ]
        reflectors = [(pod, p) for pod, p in zip(pods, processes, strict=True) if (pod, p) not in clients]
        assert (len(clients), len(reflectors)) == (3, 2)
        # Every client has a session with each reflector, over mutual TLS, and nothing was refused.
        for _, process in clients:
            await process.wait_for(lambda events: count(events, "session_established") == 2, timeout=60)
        for _, process in reflectors:
            await process.wait_for(lambda events: count(events, "session_established") == 3, timeout=60)
        for process in processes:
            assert count(process.events(), "connection_refused") == 0, process.log_path.read_text()[-2000:]

        entry, far = clients[0][0], clients[-1][0]
        async with Client(f"http://{entry.ip}:{ports.mcp}/mcp") as client:
            answer = await _call(client, f"{far.name}.echo", "over mTLS")  # hosted by the last pod only
        # Forwarded over mutual TLS straight to the pod hosting it: the reflectors kept its NEXT_HOP.
        assert (answer["served_by"], len(answer["trace"])) == (far.name, 2), answer

        # demo.* is hosted by every client: each reflector sent the entry pod both other clients'
        # paths (ADD-PATH), not only its best one, so calls from there could spread over them.
        admin = f"{entry.ip}:{ports.admin}"
        for reflector, _ in reflectors:
            session = f"{reflector.ip}:{ports.peering}"
            routes = _cli("routes", "--table", "adj-in", "--peer", session, "--name", "demo.echo", at=admin)
            hops = {route["attributes"]["next_hop"] for route in routes}
            assert hops == {f"{pod.dns_name}:{ports.peering}" for pod, _ in clients[1:]}, routes


def _cli(*args: str, at: str) -> Any:
    argv = [sys.executable, "-m", "agentmesh.cli", *args, "--json", "--admin", at]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    return json.loads(done.stdout)


async def _call(client: Client, name: str, message: str) -> dict[str, Any]:
    for _ in range(100):  # the route may still be on its way to the entry pod
        result = await client.call_tool("call_agent", {"name": name, "message": message})
        if not result.is_error:
            return dict(json.loads(result.content[0].text))  # type: ignore[union-attr]
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name} never answered: {result.content}")
