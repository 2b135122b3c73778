"""deploy/ rendered with `kubectl kustomize`, and the questions the deploy tests ask of the result."""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmesh.config_base import expand_environment

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
#: Everything `make deploy-check` renders: the base and each overlay.
OVERLAYS = sorted(f"overlays/{p.parent.name}" for p in (DEPLOY / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZATIONS = ["base", *OVERLAYS]
#: The key of the node's config file in its ConfigMap, and where the pods mount that ConfigMap.
CONFIG_KEY = "node.yaml"

#: Values the tests give the downward API's fields. The pod IP is from the documentation range (RFC 5737):
#: nothing ever dials it.
POD_IP = "192.0.2.10"

requires_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl not found: deploy/ cannot be rendered (install kubectl)"
)

Obj = dict[str, Any]


@functools.cache
def render(kustomization: str) -> tuple[Obj, ...]:
    """The objects `kubectl kustomize deploy/<kustomization>` prints."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / kustomization)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def of_kind(objects: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def namespace(obj: Obj) -> str:
    return str(obj["metadata"].get("namespace", "default"))


def named(objects: tuple[Obj, ...], kind: str, name: str, ns: str) -> Obj:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name and namespace(o) == ns]
    assert len(found) == 1, f"{kind} {ns}/{name}: found {len(found)}"
    return found[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@dataclass(frozen=True)
class NodeSet:
    """A StatefulSet of agentmesh nodes and what it runs with."""

    statefulset: Obj
    config_map: Obj

    @property
    def name(self) -> str:
        return str(self.statefulset["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return namespace(self.statefulset)

    @property
    def pod(self) -> Obj:
        return dict(self.statefulset["spec"]["template"]["spec"])

    @property
    def container(self) -> Obj:
        containers = self.pod["containers"]
        assert len(containers) == 1, f"{self.name}: one container expected"
        return dict(containers[0])

    @property
    def config_text(self) -> str:
        return str(self.config_map["data"][CONFIG_KEY])

    @property
    def raw_config(self) -> Obj:
        """The node config as YAML, ${VAR} not expanded."""
        return dict(yaml.safe_load(self.config_text))

    def container_port(self, name: str) -> int:
        ports = {p["name"]: p["containerPort"] for p in self.container.get("ports", [])}
        return int(ports[name])

    def environment(self, ordinal: int = 0) -> dict[str, str]:
        """The container's environment in pod `ordinal`, downward API fields filled in."""
        fields = {
            "metadata.name": f"{self.name}-{ordinal}",
            "metadata.namespace": self.namespace,
            "status.podIP": POD_IP,
        }
        env = {}
        for var in self.container.get("env", []):
            if "value" in var:
                env[var["name"]] = str(var["value"])
            else:
                env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        return env

    def volume_sources(self) -> Iterator[Obj]:
        """The sources of the projected volume mounted at /etc/agentmesh."""
        mounts = {m["name"]: m["mountPath"] for m in self.container["volumeMounts"]}
        for volume in self.pod["volumes"]:
            if mounts.get(volume["name"]) == "/etc/agentmesh":
                yield from volume["projected"]["sources"]


def node_sets(objects: tuple[Obj, ...]) -> list[NodeSet]:
    """Every StatefulSet with the ConfigMap that holds its node.yaml."""
    sets = []
    for statefulset in of_kind(objects, "StatefulSet"):
        probe = NodeSet(statefulset, {})
        config_maps = [
            named(objects, "ConfigMap", source["configMap"]["name"], probe.namespace)
            for source in probe.volume_sources()
            if "configMap" in source
        ]
        with_config = [c for c in config_maps if CONFIG_KEY in c.get("data", {})]
        assert len(with_config) == 1, f"{probe.name}: one ConfigMap with {CONFIG_KEY} expected"
        sets.append(NodeSet(statefulset, with_config[0]))
    return sets


def expanded_config(node_set: NodeSet, ordinal: int = 0) -> Obj:
    """The node config of pod `ordinal` as YAML data, ${VAR} expanded."""
    expanded, problems = expand_environment(node_set.raw_config, node_set.environment(ordinal))
    assert not problems, problems  # every ${VAR} is in the container's environment
    return dict(expanded)
