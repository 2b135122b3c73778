"""uvicorn as the node embeds it: on a socket bound beforehand, without its own signal handling."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import uvicorn


class EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without signal handlers: the process that embeds the node owns its signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; binding here rather than in uvicorn makes a bind error raise at once."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)
