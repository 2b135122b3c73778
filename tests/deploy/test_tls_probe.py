"""The mtls overlay's exec probe, deploy/overlays/mtls/tls_health.py, against real nodes with mutual TLS.

It needs the node's TLS support (the `tls` config section) and the test CA of tests/support/certs.py,
imported inside the tests so that nothing else in this directory depends on them.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from agentmesh.config import Config, NeighborConfig, NodeConfig, TimersConfig
from tests.deploy.dockerfile import healthcheck_status
from tests.deploy.manifests import DEPLOY
from tests.support.nodes import running
from tests.support.processes import free_port

PROBE = DEPLOY / "overlays" / "mtls" / "tls_health.py"
SERVICE = "agentmesh.agentmesh.svc.cluster.local"
READINESS, LIVENESS = "", "agentmesh.v1.PeeringService"


async def _probe(tls_dir: Path, address: str, service: str, name: str = SERVICE) -> tuple[int, str]:
    env = {
        **os.environ,
        "AGENTMESH_PROBE_TLS_DIR": str(tls_dir),
        "AGENTMESH_PROBE_ADDRESS": address,
        "AGENTMESH_PROBE_TLS_NAME": name,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(PROBE), service, env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def _until_serving(tls_dir: Path, address: str, service: str, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while (await _probe(tls_dir, address, service))[0] != 0:
            await asyncio.sleep(0.2)


def _mtls_config(tmp_path: Path, **extra: Any) -> tuple[Config, Path]:
    """A node with the mtls overlay's certificate layout: one leaf for the Service name and its pods."""
    from agentmesh.config import TlsConfig
    from tests.support.certs import CertificateAuthority

    ca = CertificateAuthority.create(tmp_path / "ca")
    files = ca.issue(tmp_path / "tls", "agentmesh", dns=[SERVICE, f"*.{SERVICE}"])
    tls = TlsConfig(cert_file=str(files.cert), key_file=str(files.key), ca_file=str(files.ca))
    node = NodeConfig(name="agentmesh-0", asn=65000, router_id="10.9.0.2", listen="127.0.0.1:0")
    return Config(node=node, tls=tls, **extra), files.cert.parent


async def test_the_probe_reports_readiness_and_liveness_over_mutual_tls(tmp_path: Path) -> None:
    config, tls_dir = _mtls_config(tmp_path)
    async with running(config) as (node,):
        await _until_serving(tls_dir, node.advertise_address, READINESS)
        assert await _probe(tls_dir, node.advertise_address, LIVENESS) == (0, "")


async def test_the_probe_tells_a_live_node_that_is_not_ready_yet(tmp_path: Path) -> None:
    silent = NeighborConfig(address=f"127.0.0.1:{free_port()}", asn=65001)
    config, tls_dir = _mtls_config(tmp_path, timers=TimersConfig(readiness_timeout=600), neighbors=[silent])
    async with running(config) as (node,):
        await _until_serving(tls_dir, node.advertise_address, LIVENESS)
        status, why = await _probe(tls_dir, node.advertise_address, READINESS)
        assert status == 1
        assert "NOT_SERVING" in why


async def test_the_probe_fails_on_a_certificate_problem(tmp_path: Path) -> None:
    from tests.support.certs import CertificateAuthority

    config, tls_dir = _mtls_config(tmp_path)
    # The right CA bundle, but a client certificate and key from another CA.
    stranger = CertificateAuthority.create(tmp_path / "other-ca").issue(
        tmp_path / "other", "x", dns=[SERVICE]
    )
    stranger.ca.write_bytes((tls_dir / "ca.crt").read_bytes())
    async with running(config) as (node,):
        await _until_serving(tls_dir, node.advertise_address, LIVENESS)
        # The node's certificate does not carry the name the probe expects.
        assert (await _probe(tls_dir, node.advertise_address, LIVENESS, name="elsewhere.test"))[0] == 1
        # The node refuses the foreign client certificate in the handshake.
        assert (await _probe(stranger.cert.parent, node.advertise_address, LIVENESS))[0] == 1
        # And a plaintext check, as kubelet's gRPC probe makes, fails: hence the exec probe.
        assert await healthcheck_status(node.advertise_address) == 1
