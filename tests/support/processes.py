"""Nodes as separate OS processes: started with the real CLI, watched through their JSON logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port the OS just handed out on loopback (for a node that must come back on the same port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NodeProcess:
    """`agentmesh ARGS...` with its stderr (JSON log lines) captured to a file."""

    def __init__(
        self,
        args: list[str],
        log_path: Path,
        *,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        self._log_file = log_path.open("wb")
        argv = command or [sys.executable, "-m", "agentmesh.cli", *args]
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            start_new_session=True,
        )

    def events(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    async def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.events()):
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"process exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not seen within {timeout} s; log tail: {self.log_path.read_text()[-2000:]}"
                )
            await asyncio.sleep(0.05)

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)

    async def wait_exit(self, timeout: float = 15) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError("process did not exit")
            await asyncio.sleep(0.05)
        return code

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.signal_group(signal.SIGKILL)
            self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log_file.close()


@contextlib.contextmanager
def node_processes() -> Iterator[list[NodeProcess]]:
    """Collects started processes and kills whatever is still running at the end of the test."""
    started: list[NodeProcess] = []
    try:
        yield started
    finally:
        for process in started:
            process.cleanup()


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """A node config file; its admin API on an OS-chosen port unless given (never the shared default)."""
    data = {"admin": {"listen": "127.0.0.1:0"}, **data}
    path.write_text(yaml.safe_dump(data))
    return path


def count(events: list[dict[str, Any]], event: str, **fields: Any) -> int:
    return sum(1 for e in events if e.get("event") == event and all(e.get(k) == v for k, v in fields.items()))
