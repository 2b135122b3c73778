"""Every node config that deploy/ ships loads with the node's own loader, as the pod would read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.config import Config, is_loopback, load_config, split_host_port
from tests.deploy.manifests import (
    DEPLOY,
    KUSTOMIZATIONS,
    POD_IP,
    NodeSet,
    node_sets,
    render,
    requires_kubectl,
)


def _load(node_set: NodeSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    for key, value in node_set.environment().items():
        monkeypatch.setenv(key, value)
    path = tmp_path / f"{node_set.namespace}-{node_set.name}.yaml"
    path.write_text(node_set.config_text)
    return load_config(path)


@requires_kubectl
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_config_map_loads_with_the_pods_environment(
    kustomization: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for node_set in node_sets(render(kustomization)):
        config = _load(node_set, tmp_path, monkeypatch)
        where = f"{kustomization}: {node_set.namespace}/{node_set.name}"
        peering = node_set.container_port("peering")
        # The pod IP, or the pod's own name under its headless Service (what mTLS certificates can carry).
        pod_name = f"{node_set.name}-0.{node_set.statefulset['spec']['serviceName']}"
        pod_dns = f"{pod_name}.{node_set.namespace}.svc.cluster.local"
        assert config.node.advertise_address in (f"{POD_IP}:{peering}", f"{pod_dns}:{peering}"), where
        assert split_host_port(config.node.listen) == ("0.0.0.0", peering), where
        if config.mcp.listen is not None:
            assert split_host_port(config.mcp.listen)[1] == node_set.container_port("mcp"), where
        if config.metrics.listen is not None:
            assert split_host_port(config.metrics.listen)[1] == node_set.container_port("metrics"), where
        # The admin API stays inside the pod: no port, no token needed.
        assert is_loopback(split_host_port(config.admin.listen)[0]), where


def test_the_image_default_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADVERTISE_ADDRESS", raising=False)
    config = load_config(DEPLOY / "image" / "node.yaml")
    assert config.node.advertise_address == "127.0.0.1:7000"
    monkeypatch.setenv("ADVERTISE_ADDRESS", "198.51.100.7:7000")
    assert load_config(DEPLOY / "image" / "node.yaml").node.advertise_address == "198.51.100.7:7000"


@requires_kubectl
def test_the_mtls_overlay_is_the_single_as_overlay_with_tls() -> None:
    """Its node configs differ from single-as only in the TLS keys, so the rehearsal of one covers both."""

    def without_tls(config: dict[str, object]) -> dict[str, object]:
        config = {key: value for key, value in config.items() if key != "tls"}
        for key in ("neighbors", "dynamic_neighbors"):
            entries = config.get(key)
            if isinstance(entries, list):
                config[key] = [{k: v for k, v in e.items() if k != "tls_name"} for e in entries]
        return config

    single = {s.name: without_tls(s.raw_config) for s in node_sets(render("overlays/single-as"))}
    mtls = {s.name: without_tls(s.raw_config) for s in node_sets(render("overlays/mtls"))}
    assert single == mtls
    assert all("tls" in s.raw_config for s in node_sets(render("overlays/mtls")))
