"""A synchronous client of one node's AdminService, for the operator CLI and scripts.

`AdminClient` wraps the generated stub with a plain (blocking) gRPC channel: one method per RPC, streams
turned into iterators of their items, and every `grpc.RpcError` turned into an `AdminError` that carries
the status code. `NodeUnreachable`, a subclass, says that the admin API could not be reached at all, so that
a caller can tell "nothing answers at that address" apart from "the node refused the request".

Reaching the node fails fast: before the first RPC the client waits, at most `connect_timeout` seconds,
for the channel to connect or fail. A refused connection fails at once (the channel reports
TRANSIENT_FAILURE and the RPC, sent without wait-for-ready, fails with the transport's reason); an address
that swallows packets fails when the connect timeout passes. Without this wait an RPC with no deadline,
such as WatchEvents, would hang forever on a black-holed address.

Deadlines: every unary RPC and every listing (the whole stream) must finish within `timeout` seconds;
CallAgent gets the call's own timeout plus a little; WatchEvents has none.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from types import TracebackType
from typing import Any, TypeVar

import grpc

from agentmesh.v1 import admin_pb2, admin_pb2_grpc, bgp_pb2, forwarding_pb2

T = TypeVar("T")

#: Extra seconds of gRPC deadline granted to a CallAgent beyond the call's own timeout, so that the node
#: reports its own DEADLINE error (which names the node where time ran out) before gRPC gives up.
CALL_DEADLINE_GRACE = 2.0
#: Longest wait for the first connection unless told otherwise: an operator should not wait long to learn
#: that nothing listens there.
DEFAULT_CONNECT_TIMEOUT = 5.0


class AdminError(Exception):
    """An AdminService RPC failed; `code` is the gRPC status code, `message` says why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def unreachable(self) -> bool:
        """Whether the admin API could not be reached at all (as opposed to refusing the request)."""
        return False


class NodeUnreachable(AdminError):
    """Nothing serving the AdminService answers at the client's address."""

    @property
    def unreachable(self) -> bool:
        return True


class AdminClient:
    """One node's AdminService over a plain gRPC channel; use it as a context manager or call close()."""

    def __init__(
        self,
        address: str,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        connect_timeout: float | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.connect_timeout = (
            min(timeout, DEFAULT_CONNECT_TIMEOUT) if connect_timeout is None else connect_timeout
        )
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel = grpc.insecure_channel(address)
        self._stub = admin_pb2_grpc.AdminServiceStub(self._channel)
        self._settled = False  # the first connection attempt has succeeded or failed
        self._connected = False  # the channel has been READY at least once

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # --- the node and its neighbours ----------------------------------------------------------------

    def get_node(self) -> admin_pb2.NodeInfo:
        return self._unary(self._stub.GetNode, admin_pb2.GetNodeRequest()).node

    def list_peers(self, address: str = "") -> Iterator[admin_pb2.Peer]:
        request = admin_pb2.ListPeersRequest(address=address)
        for response in self._stream(self._stub.ListPeers, request, self.timeout):
            yield response.peer

    def add_peer(self, config: admin_pb2.PeerConfig) -> None:
        self._unary(self._stub.AddPeer, admin_pb2.AddPeerRequest(peer=config))

    def delete_peer(self, address: str) -> None:
        self._unary(self._stub.DeletePeer, admin_pb2.DeletePeerRequest(address=address))

    def update_peer(self, config: admin_pb2.PeerConfig) -> bool:
        """Replace a neighbour's configuration; True when that needed (and started) a new session."""
        return self._unary(self._stub.UpdatePeer, admin_pb2.UpdatePeerRequest(peer=config)).session_reset

    def reset_peer(
        self,
        address: str,
        soft: admin_pb2.SoftResetDirection.ValueType = admin_pb2.SOFT_RESET_DIRECTION_UNSPECIFIED,
        communication: str = "",
    ) -> None:
        request = admin_pb2.ResetPeerRequest(address=address, soft=soft, communication=communication)
        self._unary(self._stub.ResetPeer, request)

    def enable_peer(self, address: str) -> None:
        self._unary(self._stub.EnablePeer, admin_pb2.EnablePeerRequest(address=address))

    def disable_peer(self, address: str, communication: str = "") -> None:
        request = admin_pb2.DisablePeerRequest(address=address, communication=communication)
        self._unary(self._stub.DisablePeer, request)

    # --- routes and agents --------------------------------------------------------------------------

    def list_routes(
        self,
        table: admin_pb2.Table.ValueType = admin_pb2.TABLE_LOC_RIB,
        peer: str = "",
        name: str = "",
        batch_size: int = 0,
        explain: bool = False,
    ) -> Iterator[admin_pb2.Route]:
        """Every route of the table, in name order, however the node batched them."""
        request = admin_pb2.ListRoutesRequest(
            table=table, peer=peer, name=name, batch_size=batch_size, explain=explain
        )
        for response in self._stream(self._stub.ListRoutes, request, self.timeout):
            yield from response.routes

    def announce_agent(
        self,
        names: list[str],
        agent: bgp_pb2.AgentAttributes | None = None,
        med: int | None = None,
        communities: list[int] | None = None,
    ) -> None:
        request = admin_pb2.AnnounceAgentRequest(names=names, agent=agent, med=med, communities=communities)
        self._unary(self._stub.AnnounceAgent, request)

    def get_policy(self) -> str:
        """The routing policy in force, as YAML ("" for none)."""
        return self._unary(self._stub.GetPolicy, admin_pb2.GetPolicyRequest()).policy_yaml

    def set_policy(self, policy_yaml: str) -> int:
        """Replace the routing policy; returns how many received routes were evaluated again."""
        reply = self._unary(self._stub.SetPolicy, admin_pb2.SetPolicyRequest(policy_yaml=policy_yaml))
        return reply.reevaluated

    def withdraw_agent(self, names: list[str]) -> list[str]:
        """Withdraws the names; returns those the node had not originated."""
        reply = self._unary(self._stub.WithdrawAgent, admin_pb2.WithdrawAgentRequest(names=names))
        return list(reply.unknown)

    def resolve_agent(self, name: str) -> admin_pb2.ResolveAgentResponse:
        return self._unary(self._stub.ResolveAgent, admin_pb2.ResolveAgentRequest(name=name))

    def call_agent(
        self, call: forwarding_pb2.AgentCall, timeout_seconds: float = 0.0
    ) -> admin_pb2.CallAgentResponse:
        """Call an agent through the node; a failed call is a response with `error` set, not an exception.

        With `timeout_seconds` 0 the call is bounded by the client's timeout alone.
        """
        request = admin_pb2.CallAgentRequest(call=call, timeout_seconds=timeout_seconds)
        deadline = timeout_seconds + CALL_DEADLINE_GRACE if timeout_seconds > 0 else self.timeout
        return self._unary(self._stub.CallAgent, request, deadline)

    def watch_events(
        self, peers: bool = False, routes: bool = False
    ) -> Generator[admin_pb2.WatchEventsResponse, None, None]:
        """The node's events: a snapshot, its end marker, then live events until the iterator is closed.

        The stream has no deadline; closing the iterator (or leaving a `for` loop over it and dropping
        it) cancels the RPC.
        """
        request = admin_pb2.WatchEventsRequest(peers=peers, routes=routes)
        return self._stream(self._stub.WatchEvents, request, None)

    # --- plumbing -----------------------------------------------------------------------------------

    def _unary(
        self, method: grpc.UnaryUnaryMultiCallable[Any, T], request: object, deadline: float | None = None
    ) -> T:
        self._settle()
        try:
            return method(
                request, timeout=deadline or self.timeout, metadata=self._metadata, wait_for_ready=False
            )
        except grpc.RpcError as error:
            raise self._translate(error) from None

    def _stream(
        self, method: grpc.UnaryStreamMultiCallable[Any, T], request: object, deadline: float | None
    ) -> Generator[T, None, None]:
        self._settle()
        call = method(request, timeout=deadline, metadata=self._metadata, wait_for_ready=False)
        try:
            yield from call
        except grpc.RpcError as error:
            raise self._translate(error) from None
        finally:
            # Ends the RPC when the caller stops early (a --count, Ctrl-C, a break); a no-op once done.
            call.cancel()

    def _settle(self) -> None:
        """Wait until the first connection attempt has succeeded or failed, at most connect_timeout."""
        if self._settled:
            return
        outcome: list[grpc.ChannelConnectivity] = []
        decided = threading.Event()
        final = (
            grpc.ChannelConnectivity.READY,
            grpc.ChannelConnectivity.TRANSIENT_FAILURE,
            grpc.ChannelConnectivity.SHUTDOWN,
        )

        def observe(state: grpc.ChannelConnectivity) -> None:
            if state in final and not decided.is_set():
                outcome.append(state)
                decided.set()

        self._channel.subscribe(observe, try_to_connect=True)
        try:
            if not decided.wait(self.connect_timeout):
                raise NodeUnreachable(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    self._unreachable_text(f"no answer within {self.connect_timeout:g} s"),
                )
        finally:
            self._channel.unsubscribe(observe)
        self._settled = True
        # After a TRANSIENT_FAILURE the RPC itself fails at once and brings the transport's reason.
        self._connected = outcome[0] is grpc.ChannelConnectivity.READY

    def _translate(self, error: grpc.RpcError) -> AdminError:
        # The errors a stub raises are also grpc.Calls, which carry the status.
        code: grpc.StatusCode = error.code()
        details: str = error.details() or code.name.lower()
        if code is grpc.StatusCode.UNAVAILABLE:
            if not self._connected:
                return NodeUnreachable(code, self._unreachable_text(_transport_reason(details)))
            return NodeUnreachable(code, f"lost the node's admin API at {self.address}: {details}")
        if code is grpc.StatusCode.UNIMPLEMENTED:
            # Typically a node's peering port, or another gRPC server, given where the admin API was meant.
            return NodeUnreachable(code, f"{self.address} does not serve the agentmesh admin API ({details})")
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return AdminError(code, f"the node did not answer within the deadline ({details})")
        return AdminError(code, details)

    def _unreachable_text(self, reason: str) -> str:
        return f"cannot reach the node's admin API at {self.address}: {reason}"


def _transport_reason(details: str) -> str:
    """The telling part of gRPC's "failed to connect to all addresses; last error: ..." text."""
    lowered = details.lower()
    if "connection refused" in lowered:
        return "connection refused"
    if "resolving" in lowered or "dns" in lowered:
        return f"cannot resolve the host name ({details})"
    return details
