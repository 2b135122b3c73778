"""Keeping a backend's agents announced: discover, announce what is new or changed, withdraw what is gone.

A backend is rediscovered periodically. An agent that disappears from the backend's list is
withdrawn mesh-wide; one whose description, capabilities or schema changed is announced again.
A discovery that fails changes nothing: an unreachable backend is a health matter (its calls fail
as backend errors), not a reason to drop its routes on the first hiccup.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from agentmesh.agents.base import AgentInfo, Backend
from agentmesh.bgp.messages import AgentAttributes
from agentmesh.speaker.forwarder import Hosted

Announce = Callable[[list[str], AgentAttributes], Awaitable[None]]
#: Withdraws names; what it returns (the names that were not announced) is not needed here.
Withdraw = Callable[[list[str]], Awaitable[object]]


class Hosting:
    """One backend's agents under one namespace, kept in step with what the backend reports."""

    def __init__(
        self,
        backend: Backend,
        namespace: str,
        hosted: dict[str, Hosted],
        announce: Announce,
        withdraw: Withdraw,
        log: Any,
    ) -> None:
        self.backend = backend
        self.namespace = namespace
        self._hosted = hosted
        self._announce = announce
        self._withdraw = withdraw
        self._log = log
        self.announced: dict[str, AgentAttributes] = {}
        #: Why the latest discovery failed, None after one that worked: shown for this backend only.
        self.last_error: str | None = None

    async def sync(self) -> None:
        """Discover once and make the announced routes match; a failed discovery is logged and kept out."""
        try:
            infos = await self.backend.discover()
        except Exception as error:
            self.last_error = str(error) or repr(error)
            self._log.warning("backend_discovery_failed", backend=self.backend.name, error=self.last_error)
            return
        self.last_error = None
        wanted = {f"{self.namespace}.{info.id}": info for info in infos}
        gone = [name for name in self.announced if name not in wanted]
        if gone:
            await self._withdraw(gone)
            for name in gone:
                del self.announced[name]
                self._hosted.pop(name, None)
            self._log.info("agents_withdrawn", backend=self.backend.name, agents=gone)
        for name, info in wanted.items():
            attributes = self._attributes(info)
            if self.announced.get(name) == attributes:
                continue
            try:
                await self._announce([name], attributes)
            except ValueError as error:  # an id that is no valid name label, for example
                self._log.warning("agent_not_hosted", backend=self.backend.name, agent=name, error=str(error))
                continue
            self._hosted[name] = Hosted(self.backend, info.id)
            self.announced[name] = attributes
            self._log.info("agent_hosted", agent=name, backend=self.backend.name)

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.sync()

    def _attributes(self, info: AgentInfo) -> AgentAttributes:
        return AgentAttributes(
            capabilities=info.capabilities,
            description=info.description,
            backend_protocol=self.backend.protocol,
            input_schema=json.dumps(info.input_schema, sort_keys=True)
            if info.input_schema is not None
            else "",
        )
