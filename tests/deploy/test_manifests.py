"""What `kubectl kustomize` makes of deploy/: the objects fit together (selectors, ports, names, probes) and
agree with the node configs they carry. Schemas are checked by `make deploy-check` (kubernetes-validate)."""

from __future__ import annotations

import fnmatch

import pytest

from agentmesh.config import derive_router_id, split_host_port
from agentmesh.mcp.frontend import HTTP_SHUTDOWN_GRACE
from agentmesh.speaker.node import SHUTDOWN_FLUSH_TIMEOUT
from agentmesh.transport import admin, server
from tests.deploy.manifests import (
    KUSTOMIZATIONS,
    NodeSet,
    Obj,
    expanded_config,
    named,
    namespace,
    node_sets,
    of_kind,
    render,
    requires_kubectl,
    selects,
)

pytestmark = [requires_kubectl, pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)]

CLUSTER_DOMAIN = "svc.cluster.local"
READINESS, LIVENESS = "", "agentmesh.v1.PeeringService"
TLS_PROBE = "/etc/agentmesh/probes/tls_health.py"


def _pod_labels(node_set: NodeSet) -> dict[str, str]:
    return dict(node_set.statefulset["spec"]["template"]["metadata"]["labels"])


def _selector(obj: Obj) -> dict[str, str]:
    spec = obj["spec"]
    if obj["kind"] == "Service":
        return dict(spec["selector"])
    if obj["kind"] == "NetworkPolicy":
        return dict(spec["podSelector"]["matchLabels"])
    return dict(spec["selector"]["matchLabels"])


def _headless_service(objects: tuple[Obj, ...], node_set: NodeSet) -> Obj:
    return named(objects, "Service", node_set.statefulset["spec"]["serviceName"], node_set.namespace)


def _node_set_behind(objects: tuple[Obj, ...], host: str) -> NodeSet:
    """The StatefulSet whose headless Service a DNS neighbour names (SERVICE.NAMESPACE.svc.cluster.local)."""
    service, _, rest = host.partition(".")
    ns, _, domain = rest.partition(".")
    assert domain == CLUSTER_DOMAIN, f"{host}: not a Service name"
    found = [
        s for s in node_sets(objects) if s.namespace == ns and s.statefulset["spec"]["serviceName"] == service
    ]
    assert len(found) == 1, f"{host}: no StatefulSet of agentmesh nodes behind it"
    return found[0]


def test_every_selector_picks_the_pods_of_exactly_one_statefulset(kustomization: str) -> None:
    objects = render(kustomization)
    sets = node_sets(objects)
    assert sets
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        for obj in of_kind(objects, kind):
            chosen = [
                s.name
                for s in sets
                if s.namespace == namespace(obj) and selects(_selector(obj), _pod_labels(s))
            ]
            assert len(chosen) == 1, f"{kind} {obj['metadata']['name']} selects {chosen}"
    for node_set in sets:
        assert selects(node_set.statefulset["spec"]["selector"]["matchLabels"], _pod_labels(node_set))
        assert [
            p for p in of_kind(objects, "PodDisruptionBudget") if selects(_selector(p), _pod_labels(node_set))
        ]


def test_headless_services_publish_not_ready_pods(kustomization: str) -> None:
    objects = render(kustomization)
    for node_set in node_sets(objects):
        service = _headless_service(objects, node_set)["spec"]
        assert service["clusterIP"] == "None"
        # Readiness waits for the first table exchange with the neighbours, who must find the pod first.
        assert service["publishNotReadyAddresses"] is True
        peering = {p["name"]: p for p in service["ports"]}["peering"]
        assert peering["port"] == node_set.container_port("peering")


def test_probes_ask_the_health_service_for_readiness_and_liveness(kustomization: str) -> None:
    for node_set in node_sets(render(kustomization)):
        container = node_set.container
        config = expanded_config(node_set)
        port = split_host_port(config["node"]["listen"])[1]
        for probe, service in (("readinessProbe", READINESS), ("livenessProbe", LIVENESS)):
            action = container[probe]
            if "tls" in config:
                # Kubelet's gRPC probe cannot present a client certificate: the TLS probe script instead.
                assert action["exec"]["command"] == ["python", TLS_PROBE, service]
                assert node_set.environment().get("AGENTMESH_PROBE_TLS_NAME")
            else:
                assert action["grpc"] == {"port": port, "service": service}


def test_the_grace_period_outlasts_the_nodes_shutdown(kustomization: str) -> None:
    # What SIGTERM sets off (agentmesh/run.py): the MCP server's grace, the admin server's, then Node.stop:
    # the flush of the Cease NOTIFICATIONs, the gRPC server's grace, the tasks' end. With
    # timers.drain_time both graces are the drain time.
    for node_set in node_sets(render(kustomization)):
        drain = expanded_config(node_set).get("timers", {}).get("drain_time")
        http, grpc = (HTTP_SHUTDOWN_GRACE, server.STOP_GRACE) if drain is None else (drain, drain)
        shutdown = http + admin.STOP_GRACE + 2 * SHUTDOWN_FLUSH_TIMEOUT + grpc
        pause = node_set.container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert node_set.pod["terminationGracePeriodSeconds"] >= pause + shutdown + 10


def test_the_config_is_mounted_where_the_command_reads_it(kustomization: str) -> None:
    for node_set in node_sets(render(kustomization)):
        args = node_set.container["args"]
        assert "command" not in node_set.container  # the image's entry point, agentmesh
        assert args[args.index("--config") + 1] == "/etc/agentmesh/node.yaml"
        config = node_set.raw_config
        service = node_set.statefulset["spec"]["serviceName"]
        pod_dns = "${POD_NAME}." + f"{service}.{node_set.namespace}.svc.cluster.local:7000"
        assert config["node"]["advertise_address"] in ("${POD_IP}:7000", pod_dns)
        for variable, field in (("POD_IP", "status.podIP"), ("POD_NAME", "metadata.name")):
            assert {"name": variable, "valueFrom": {"fieldRef": {"fieldPath": field}}} in node_set.container[
                "env"
            ]
        assert "admin" not in config, "the admin API stays at its loopback default"


def test_network_policies_open_only_node_ports(kustomization: str) -> None:
    objects = render(kustomization)
    for policy in of_kind(objects, "NetworkPolicy"):
        node_set = next(
            s
            for s in node_sets(objects)
            if s.namespace == namespace(policy) and selects(_selector(policy), _pod_labels(s))
        )
        opened = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
        assert opened <= {"peering", "mcp"}  # the peering/forwarding and MCP ports only
        assert "peering" in opened
        for name in opened:
            node_set.container_port(name)  # a named port of the container
        peering_rule = next(
            r for r in policy["spec"]["ingress"] if {"port": "peering", "protocol": "TCP"} in r["ports"]
        )
        # From agentmesh pods of any namespace (meshes peer across namespaces), never from anywhere.
        assert peering_rule["from"] == [
            {
                "namespaceSelector": {},
                "podSelector": {
                    "matchExpressions": [
                        {"key": "app.kubernetes.io/part-of", "operator": "In", "values": ["agentmesh"]}
                    ]
                },
            }
        ]
        assert _pod_labels(node_set)["app.kubernetes.io/part-of"] == "agentmesh"


def test_dns_neighbours_name_headless_services_of_nodes_in_their_as(kustomization: str) -> None:
    objects = render(kustomization)
    for node_set in node_sets(objects):
        config = expanded_config(node_set)
        for neighbour in config.get("neighbors", []):
            host, port = split_host_port(neighbour["address"])
            peer = _node_set_behind(objects, host)
            assert port == peer.container_port("peering")
            assert neighbour["asn"] == expanded_config(peer)["node"]["asn"], f"{node_set.name} -> {host}"


def test_router_ids_are_unique_in_the_whole_render(kustomization: str) -> None:
    seen: dict[str, str] = {}
    for node_set in node_sets(render(kustomization)):
        for ordinal in range(node_set.statefulset["spec"]["replicas"]):
            config = expanded_config(node_set, ordinal)
            # Without node.name the name is the host name, which is the pod name in a StatefulSet.
            name = config["node"].get("name", f"{node_set.name}-{ordinal}")
            router_id = config["node"].get("router_id", derive_router_id(name))
            where = f"{node_set.namespace}/{node_set.name}-{ordinal}"
            assert router_id not in seen, f"{where} and {seen.get(router_id)} share router id {router_id}"
            seen[router_id] = where


def test_route_reflectors_share_a_cluster_and_accept_clients(kustomization: str) -> None:
    for node_set in node_sets(render(kustomization)):
        config = expanded_config(node_set)
        clients = [d for d in config.get("dynamic_neighbors", []) if d.get("route_reflector_client")]
        if not clients:
            continue
        assert node_set.statefulset["spec"]["replicas"] >= 2
        assert config["node"]["cluster_id"], "the reflectors of one cluster need one CLUSTER_ID"
        assert all(d["asn"] == config["node"]["asn"] for d in clients), "clients are iBGP"


def _certificate_for(objects: tuple[Obj, ...], node_set: NodeSet) -> Obj:
    secrets = [s["secret"]["name"] for s in node_set.volume_sources() if "secret" in s]
    assert len(secrets) == 1, f"{node_set.name}: one certificate secret expected"
    found = [
        c
        for c in of_kind(objects, "Certificate")
        if namespace(c) == node_set.namespace and c["spec"]["secretName"] == secrets[0]
    ]
    assert len(found) == 1, f"{node_set.name}: no Certificate makes secret {secrets[0]}"
    return found[0]


def test_tls_names_are_in_the_certificates_of_the_peers(kustomization: str) -> None:
    objects = render(kustomization)
    for node_set in node_sets(objects):
        config = expanded_config(node_set)
        if "tls" not in config:
            continue
        mounted = {
            f"/etc/agentmesh/{item['path']}"
            for source in node_set.volume_sources()
            if "secret" in source
            for item in source["secret"]["items"]
        }
        assert {config["tls"][k] for k in ("cert_file", "key_file", "ca_file")} <= mounted
        own = _certificate_for(objects, node_set)["spec"]["dnsNames"]
        service = f"{node_set.statefulset['spec']['serviceName']}.{node_set.namespace}.{CLUSTER_DOMAIN}"
        assert set(own) == {service, f"*.{service}"}
        assert node_set.environment()["AGENTMESH_PROBE_TLS_NAME"] in own
        # Calls are forwarded to a node's advertise address (the NEXT_HOP of its agents) and checked
        # against it: the node's certificate must name it, which a pod IP it cannot know could not.
        advertised = split_host_port(config["node"]["advertise_address"])[0]
        assert any(fnmatch.fnmatchcase(advertised, name) for name in own), (advertised, own)
        for neighbour in config.get("neighbors", []):
            peer = _node_set_behind(objects, split_host_port(neighbour["address"])[0])
            assert neighbour["tls_name"] in _certificate_for(objects, peer)["spec"]["dnsNames"]
        for dynamic in config.get("dynamic_neighbors", []):
            presented = [
                name
                for other in node_sets(objects)
                if other.name != node_set.name
                for name in _certificate_for(objects, other)["spec"]["dnsNames"]
            ]
            assert any(fnmatch.fnmatchcase(name, dynamic["tls_name"]) for name in presented)


def test_certificates_come_from_the_mesh_ca(kustomization: str) -> None:
    objects = render(kustomization)
    issuers = {(namespace(i), i["metadata"]["name"]): i for i in of_kind(objects, "Issuer")}
    for certificate in of_kind(objects, "Certificate"):
        ref = certificate["spec"]["issuerRef"]
        assert ref["kind"] == "Issuer"
        issuer = issuers[(namespace(certificate), ref["name"])]["spec"]
        if certificate["spec"].get("isCA"):
            assert "selfSigned" in issuer
            continue
        ca = next(c for c in of_kind(objects, "Certificate") if c["spec"].get("isCA"))
        assert issuer["ca"]["secretName"] == ca["spec"]["secretName"]
        assert set(certificate["spec"]["usages"]) >= {"server auth", "client auth"}
