"""`agentmesh serve` refuses an access configuration it could not enforce."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.processes import NodeProcess, node_processes, write_config


async def test_the_old_proxys_tools_and_access_control_do_not_mix(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "guarded.yaml",
        {"node": {"listen": "127.0.0.1:0"}, "access": {"callers": [{"name": "ops", "tokens": ["t" * 20]}]}},
    )
    with node_processes() as started:
        env = {**os.environ, "MASTRA_SERVERS": "http://127.0.0.1:9"}
        process = NodeProcess(["serve", "--config", str(config)], tmp_path / "guarded.log", env=env)
        started.append(process)
        assert await process.wait_exit() == 2
        assert "would bypass access control" in process.log_path.read_text()
