"""Forwarding decisions: resolve, refuse, invoke the hosting backend, or pass the call on.

Theory of operation
-------------------
Each hop re-resolves the call's name in its own Loc-RIB (longest match), like IP forwarding:

* its own id already in the trace -> LOOP; no route -> NOT_FOUND;
* a locally originated best path -> the node's call policy (`access.call_policy`) is checked
  against the ASes the call crossed (PERMISSION_DENIED, audited as `call_denied`), then the backend
  hosting the agent is invoked here;
* otherwise, if it has hops left, the call goes to the best path's NEXT_HOP with one hop less and
  this node's id appended to the trace (and its ASN to `trace_asns`), within what is left of the
  deadline; with none left -> HOP_LIMIT. Like an IP TTL, the hop limit counts hops between nodes:
  a call with a limit of 1 reaches a neighbour's agent, and serving an agent locally takes no hop.

Only the lookup runs in the owner task; invoking a backend or a next hop happens in the caller's
task, so a slow agent never holds up routing. gRPC passes deadline and cancellation downstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from agentmesh.access import CallPolicy
from agentmesh.agents.base import AgentReply, Backend, CallErrorCode, CallFailure
from agentmesh.obs.logging import get_logger
from agentmesh.rib.decision import Path
from agentmesh.speaker.multipath import PathChooser
from agentmesh.transport.forwarding import NextHops, Routed, Served

#: Hops a call may take unless the caller says otherwise (like an IP TTL).
DEFAULT_HOP_LIMIT = 16
#: Deadline of a call whose caller gave none.
DEFAULT_TIMEOUT = 60.0


class CallMonitor(Protocol):
    """Told about every call a hosted backend serves here: passive health monitoring
    (agentmesh.agents.health), which ejects a backend whose calls keep failing.

    Each `call_started` is followed by exactly one `call_finished` (the backend answered or failed,
    `error` None or what it raised; a missed deadline is a TimeoutError) or `call_abandoned` (the
    caller went away, or no time was left to call the backend: that says nothing about it).
    """

    def call_started(self) -> None: ...

    def call_finished(self, seconds: float, error: BaseException | None) -> None: ...

    def call_abandoned(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Hosted:
    """An agent this node hosts: the backend and the agent's id there."""

    backend: Backend
    agent_id: str
    #: Told of each call served here; None: nobody watches this backend's calls.
    monitor: CallMonitor | None = None


#: The Loc-RIB entry serving a name and its equally good paths, best first (`Rib.lookup_paths`).
Lookup = Callable[[str], Awaitable[tuple[str, list[Path]] | None]]
#: Told the role of this node for the call ("ingress" where it entered the mesh, else "transit"), the
#: result ("ok" or a CallErrorCode value) and the duration in seconds of every call handled here.
Observer = Callable[[str, str, float], None]


class Forwarder:
    """The forwarding plane of one node."""

    def __init__(
        self,
        node_name: str,
        node_id: str,
        lookup: Lookup,
        *,
        observe: Observer | None = None,
        asn: int | None = None,
        call_policy: CallPolicy | None = None,
        chooser: PathChooser | None = None,
        next_hops: NextHops | None = None,
    ) -> None:
        self.node_name = node_name
        self.node_id = node_id
        #: Recorded in each call's `trace_asns`; None records nothing, so a call policy further on
        #: sees the caller's AS as unknown and refuses the call.
        self.asn = asn
        #: Who may call the agents hosted here (access.call_policy); empty: everyone.
        self.call_policy = call_policy or CallPolicy()
        self._log = get_logger(node=node_name)
        self._lookup = lookup
        self._observe = observe or (lambda role, result, seconds: None)
        self.hosted: dict[str, Hosted] = {}
        #: Channels to next hops; the node passes its own when it speaks TLS.
        self.next_hops = next_hops or NextHops(node_name)
        #: Orders a name's equally good paths for each call (multipath).
        self.chooser = chooser or PathChooser()

    async def call(self, call: Routed, timeout: float | None) -> Served:
        async with self._observed(call):
            return await self._call(call, timeout)

    async def stream(self, call: Routed, timeout: float | None) -> AsyncIterator[str | Served]:
        async with self._observed(call):
            async for event in self._stream(call, timeout):
                yield event

    @contextlib.asynccontextmanager
    async def _observed(self, call: Routed) -> AsyncIterator[None]:
        """Report each call's result and duration; a call its caller abandoned is not counted."""
        role = "transit" if call.trace else "ingress"  # summing "ingress" over nodes counts each call once
        started = time.monotonic()
        try:
            yield
        except CallFailure as failure:
            self._observe(role, failure.code.value, time.monotonic() - started)
            raise
        self._observe(role, "ok", time.monotonic() - started)

    async def _call(self, call: Routed, timeout: float | None) -> Served:
        deadline = _deadline(timeout)
        route, target = await self._route(call)
        if isinstance(target, Hosted):
            reply = await self._invoke(target, call, deadline)
            return Served(reply, self.node_name, route, (*call.trace, self.node_id))
        onward = self._onward(call)
        for attempt, next_hop in enumerate(target):
            self.chooser.started(next_hop)
            try:
                return await self.next_hops.call(next_hop, onward, _remaining(deadline, self.node_name))
            except CallFailure as failure:
                if failure.delivered or attempt == len(target) - 1:
                    raise
                # Never sent: no backend ran it, so the next equally good path may (multipath).
                self._log.info("call_moved", name=call.name, failed=next_hop, reason=failure.reason)
            finally:
                self.chooser.finished(next_hop)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _stream(self, call: Routed, timeout: float | None) -> AsyncIterator[str | Served]:
        deadline = _deadline(timeout)
        route, target = await self._route(call)
        if isinstance(target, Hosted):
            chunks: list[str] = []
            async with self._backend(target, deadline):
                async for chunk in target.backend.stream(target.agent_id, call.request):
                    chunks.append(chunk)
                    yield chunk
            yield Served(AgentReply("".join(chunks)), self.node_name, route, (*call.trace, self.node_id))
            return
        next_hop = target[0]  # a stream that has started cannot move: it takes the chosen path only
        self.chooser.started(next_hop)
        try:
            async for event in self.next_hops.stream(
                next_hop, self._onward(call), _remaining(deadline, self.node_name)
            ):
                yield event
        finally:
            self.chooser.finished(next_hop)

    async def _route(self, call: Routed) -> tuple[str, Hosted | list[str]]:
        """Where the call goes from here: the serving Loc-RIB entry, and a hosted agent or the next
        hops to try in order (several when multipath found equally good paths)."""
        if self.node_id in call.trace:
            passed = " -> ".join(call.trace)
            raise CallFailure(CallErrorCode.LOOP, self.node_name, f"the call came back here after {passed}")
        found = await self._lookup(call.name)
        if found is None:
            raise CallFailure(CallErrorCode.NOT_FOUND, self.node_name, f"no route to {call.name!r}")
        route, paths = found
        path = paths[0]
        if not path.source.local:
            if call.hop_limit <= 0:
                next_hop = path.attrs.next_hop
                raise CallFailure(
                    CallErrorCode.HOP_LIMIT, self.node_name, f"no hops left to go on to {next_hop}"
                )
            return route, [p.attrs.next_hop for p in self.chooser.order(route, paths)]
        hosted = self.hosted.get(call.name) or self.hosted.get(route)
        if hosted is None:
            raise CallFailure(
                CallErrorCode.NOT_FOUND, self.node_name, f"{route!r} is announced here but hosts no agent"
            )
        self._admit(call)
        return route, hosted

    def _admit(self, call: Routed) -> None:
        """Apply the call policy here, at the origin: only the node that runs the agent may refuse by AS."""
        if not self.call_policy:
            return
        path = self._caller_path(call)
        verdict = self.call_policy.check(call.name, path)
        if verdict.allowed:
            return
        self._log.warning(
            "call_denied",
            caller=f"AS{path[0]}" if path else "unknown",
            name=call.name,
            rule=verdict.rule,
            trace=list(call.trace),
            trace_asns=list(call.trace_asns),
        )
        raise CallFailure(CallErrorCode.PERMISSION_DENIED, self.node_name, verdict.reason)

    def _caller_path(self, call: Routed) -> tuple[int, ...]:
        """The ASes the call crossed, the caller's first; () when a node on the way did not say."""
        if not call.trace:
            return () if self.asn is None else (self.asn,)  # the call entered the mesh here
        return call.trace_asns if len(call.trace_asns) == len(call.trace) else ()

    def _onward(self, call: Routed) -> Routed:
        asns = call.trace_asns if self.asn is None else (*call.trace_asns, self.asn)
        return Routed(call.name, call.request, call.hop_limit - 1, (*call.trace, self.node_id), asns)

    async def _invoke(self, hosted: Hosted, call: Routed, deadline: float) -> AgentReply:
        async with self._backend(hosted, deadline):
            return await hosted.backend.call(hosted.agent_id, call.request)

    @contextlib.asynccontextmanager
    async def _backend(self, hosted: Hosted, deadline: float) -> AsyncIterator[None]:
        """Work with a hosted backend within the deadline; its failures become CallFailures from here.

        The outcome goes to the hosted agent's monitor, if any (passive outlier detection).
        """
        monitor = hosted.monitor
        if monitor is not None:
            monitor.call_started()
        started = time.monotonic()
        # Stays False when the body is left by cancellation, a closed stream or a deadline that had
        # already passed: nothing was learnt about the backend then.
        finished = False
        error: BaseException | None = None
        try:
            async with asyncio.timeout(_remaining(deadline, self.node_name)):
                yield
            finished = True
        except TimeoutError as timeout:
            finished, error = True, timeout
            raise CallFailure(
                CallErrorCode.DEADLINE, self.node_name, "the agent did not answer in time"
            ) from timeout
        except CallFailure:
            raise
        except Exception as failure:
            finished, error = True, failure
            reason = f"{hosted.backend.name}:{hosted.agent_id}: {failure or type(failure).__name__}"
            raise CallFailure(CallErrorCode.BACKEND_ERROR, self.node_name, reason) from failure
        finally:
            if monitor is not None:
                if finished:
                    monitor.call_finished(time.monotonic() - started, error)
                else:
                    monitor.call_abandoned()

    async def close(self) -> None:
        await self.next_hops.close()


def _deadline(timeout: float | None) -> float:
    return time.monotonic() + (DEFAULT_TIMEOUT if timeout is None else timeout)


def _remaining(deadline: float, node: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise CallFailure(CallErrorCode.DEADLINE, node, "the deadline passed before the call could go on")
    return left
