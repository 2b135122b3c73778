"""The Dockerfile, read the way the deploy tests need it, and its HEALTHCHECK command run on this machine."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys

from tests.deploy.manifests import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def instruction(name: str) -> list[str]:
    """The arguments of every NAME instruction, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", joined, re.MULTILINE)]


def healthcheck_argv() -> list[str]:
    """The HEALTHCHECK command, run by this Python (which has the image's packages)."""
    (healthcheck,) = instruction("HEALTHCHECK")
    argv = json.loads(healthcheck[healthcheck.index("CMD") + len("CMD") :])
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


async def healthcheck_status(address: str) -> int:
    """The exit status of the HEALTHCHECK command against the node whose peering port is `address`."""
    process = await asyncio.create_subprocess_exec(
        *healthcheck_argv(),
        env={**os.environ, "AGENTMESH_HEALTH_ADDRESS": address},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await process.wait()
