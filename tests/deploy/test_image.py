"""The Dockerfile, without a Docker engine: what it installs is what the tests run with, what it copies is
in the build context, its HEALTHCHECK works against a real node, and the manifests run it as it expects."""

from __future__ import annotations

import asyncio
import json
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from agentmesh.config import Config, NeighborConfig, NodeConfig, TimersConfig
from tests.deploy.dockerfile import healthcheck_status, instruction
from tests.deploy.manifests import REPO, node_sets, render, requires_kubectl
from tests.support.nodes import running
from tests.support.processes import free_port


def _locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        name, _, version = line.partition("==")
        pins[canonicalize_name(name)] = version
    return pins


def _runtime_requirements(
    lines: list[str], extras: frozenset[str], seen: dict[str, list[Requirement]]
) -> None:
    """Walk the installed distributions down from requirement `lines`, recording who requires what (extras
    followed, markers evaluated for this Python), as `pip install .` without [dev] resolves them."""
    for line in lines:
        requirement = Requirement(line)
        environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
        if requirement.marker and not any(requirement.marker.evaluate(env) for env in environments):
            continue
        key = canonicalize_name(requirement.name)
        first = key not in seen
        seen.setdefault(key, []).append(requirement)
        if first or requirement.extras:
            requires = metadata.requires(requirement.name) or []
            _runtime_requirements(requires, frozenset(requirement.extras), seen)


def test_the_lock_pins_every_runtime_dependency_the_image_installs() -> None:
    # The image installs `-c requirements.lock .`: a dependency the lock does not pin would be resolved
    # afresh at build time (and the build's own check would fail), one pinned outside its range would not
    # install at all.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required: dict[str, list[Requirement]] = {}
    _runtime_requirements(project["dependencies"], frozenset(), required)
    locked = _locked()
    assert len(required) > len(project["dependencies"])
    for name, requirements in sorted(required.items()):
        assert name in locked, f"{name} is a runtime dependency but not in requirements.lock: run make lock"
        for requirement in requirements:
            assert requirement.specifier.contains(locked[name], prereleases=True), (
                f"requirements.lock pins {name}=={locked[name]}, outside {requirement}"
            )


def test_the_dockerfile_installs_with_the_lock_and_only_wheels() -> None:
    (install,) = [run for run in instruction("RUN") if "pip install" in run]
    assert "--constraint requirements.lock" in install
    assert "--only-binary=:all:" in install
    assert "[dev]" not in install


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    allowed = set()
    for line in (REPO / ".dockerignore").read_text().splitlines():
        if line.startswith("!"):
            allowed.add(line[1:].rstrip("/"))
    assert "*" in (REPO / ".dockerignore").read_text().splitlines()
    for copy in instruction("COPY"):
        if copy.startswith("--from"):
            continue
        *sources, _ = copy.split()
        for source in sources:
            assert source.rstrip("/") in allowed, f"COPY {source}: excluded by .dockerignore"
            assert (REPO / source).exists()


@requires_kubectl
def test_the_statefulsets_run_the_images_command_as_its_user() -> None:
    (entrypoint,) = instruction("ENTRYPOINT")
    (command,) = instruction("CMD")
    (user,) = instruction("USER")
    uid, gid = (int(part) for part in user.split(":"))
    for node_set in node_sets(render("base")):
        assert json.loads(entrypoint) == ["agentmesh"]
        assert node_set.container["args"] == json.loads(command)
        security = node_set.pod["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (uid, gid, gid)
        assert security["runAsNonRoot"] is True


async def _status_becomes(address: str, status: int, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while await healthcheck_status(address) != status:
            await asyncio.sleep(0.2)


async def test_the_healthcheck_passes_once_the_node_is_ready() -> None:
    config = Config(node=NodeConfig(name="hc", asn=65000, router_id="10.9.0.1", listen="127.0.0.1:0"))
    async with running(config) as (node,):
        # No configured neighbours: ready at once.
        await _status_becomes(node.advertise_address, 0)


async def test_the_healthcheck_fails_while_the_node_is_not_ready() -> None:
    # A neighbour that never answers holds readiness back until the timeout, far beyond this test.
    silent = f"127.0.0.1:{free_port()}"
    config = Config(
        node=NodeConfig(name="hc", asn=65000, router_id="10.9.0.1", listen="127.0.0.1:0"),
        timers=TimersConfig(readiness_timeout=600),
        neighbors=[NeighborConfig(address=silent, asn=65001)],
    )
    async with running(config) as (node,):
        assert await healthcheck_status(node.advertise_address) == 1


async def test_the_healthcheck_fails_when_nothing_listens() -> None:
    assert await healthcheck_status(f"127.0.0.1:{free_port()}") == 1


@pytest.mark.parametrize("kustomization", ["base"])
@requires_kubectl
def test_the_image_exposes_the_ports_the_pods_name(kustomization: str) -> None:
    (exposed,) = instruction("EXPOSE")
    for node_set in node_sets(render(kustomization)):
        ports = {p["containerPort"] for p in node_set.container["ports"]}
        assert ports == {int(port) for port in exposed.split()}
