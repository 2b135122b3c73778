"""Exec probe for nodes with mutual TLS: ask the node's gRPC health service over TLS, with this pod's own
certificate as the client certificate.

    python tls_health.py SERVICE

SERVICE is "" for readiness or agentmesh.v1.PeeringService for liveness (docs/operations.md, "Readiness and
liveness"). Exit status 0 when the service is SERVING, 1 otherwise (not serving, unreachable, bad
certificate), with the reason on stderr.

Environment: AGENTMESH_PROBE_TLS_NAME, the DNS name the node's certificate is checked against (the node is
dialled on loopback, which its certificate does not name); AGENTMESH_PROBE_ADDRESS (default 127.0.0.1:7000)
and AGENTMESH_PROBE_TLS_DIR (default /etc/agentmesh/tls, holding ca.crt, tls.crt and tls.key).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT = 3.0


def check(service: str) -> str | None:
    """None when `service` is SERVING, else why not."""
    tls_dir = Path(os.environ.get("AGENTMESH_PROBE_TLS_DIR", "/etc/agentmesh/tls"))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(tls_dir / "ca.crt").read_bytes(),
        private_key=(tls_dir / "tls.key").read_bytes(),
        certificate_chain=(tls_dir / "tls.crt").read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", os.environ["AGENTMESH_PROBE_TLS_NAME"])]
    address = os.environ.get("AGENTMESH_PROBE_ADDRESS", "127.0.0.1:7000")
    with grpc.secure_channel(address, credentials, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        except grpc.RpcError as error:
            return f"{address}: {error.code().name}: {error.details()}"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return f"{address}: service {service!r} is {status}"
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: tls_health.py SERVICE", file=sys.stderr)
        return 2
    problem = check(argv[1])
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
