"""ForwardingService at the edge: protobuf calls in and out, a channel pool per next hop.

The decisions (resolve, refuse, invoke, pass on) are the node's (`speaker.forwarder`); this module
only converts between `agentmesh.v1` messages and the call values of `agents.base`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from agentmesh.agents.base import AgentReply, AgentRequest, CallErrorCode, CallFailure, ChatMessage
from agentmesh.transport.tls import PLAINTEXT, ChannelFactory
from agentmesh.v1 import forwarding_pb2 as pb
from agentmesh.v1 import forwarding_pb2_grpc

_CODES = {
    CallErrorCode.NOT_FOUND: pb.CALL_ERROR_CODE_NOT_FOUND,
    CallErrorCode.LOOP: pb.CALL_ERROR_CODE_LOOP,
    CallErrorCode.HOP_LIMIT: pb.CALL_ERROR_CODE_HOP_LIMIT,
    CallErrorCode.BACKEND_ERROR: pb.CALL_ERROR_CODE_BACKEND_ERROR,
    CallErrorCode.DEADLINE: pb.CALL_ERROR_CODE_DEADLINE,
    CallErrorCode.UNAVAILABLE: pb.CALL_ERROR_CODE_UNAVAILABLE,
    CallErrorCode.INVALID_ARGUMENT: pb.CALL_ERROR_CODE_INVALID_ARGUMENT,
    CallErrorCode.PERMISSION_DENIED: pb.CALL_ERROR_CODE_PERMISSION_DENIED,
}
_CODES_BACK = {wire: code for code, wire in _CODES.items()}
#: Seconds a replaced next-hop channel keeps serving the calls already on it before it is closed.
RETIRE_GRACE = 60.0


@dataclass(frozen=True, slots=True)
class Routed:
    """A call as a hop sees it: the request plus where it may still go and where it has been.

    `trace_asns` runs parallel to `trace`: the ASN of each node passed, the caller's first. It is
    shorter than `trace` when a node on the way did not record its ASN (`AgentCall.trace_asns`).
    """

    name: str
    request: AgentRequest
    hop_limit: int
    trace: tuple[str, ...]
    trace_asns: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Served:
    """A reply and where it came from."""

    reply: AgentReply
    served_by: str
    route: str
    trace: tuple[str, ...]


# -- conversions ------------------------------------------------------------------------------


def encode_call(call: Routed) -> pb.AgentCall:
    wire = pb.AgentCall(
        name=call.name, hop_limit=call.hop_limit, trace=call.trace, trace_asns=call.trace_asns
    )
    request = call.request
    if request.arguments is not None:
        wire.arguments_json = json.dumps(request.arguments)
    else:
        wire.chat.messages.extend(pb.ChatMessage(role=m.role, content=m.content) for m in request.messages)
    if request.options:
        wire.options_json = json.dumps(request.options)
    return wire


def decode_call(wire: pb.AgentCall, node: str) -> Routed:
    """The call values of a received call; raises CallFailure(INVALID_ARGUMENT) for bad JSON."""
    arguments = (
        _json_object(wire.arguments_json, "arguments_json", node) if wire.HasField("arguments_json") else None
    )
    options = _json_object(wire.options_json, "options_json", node) if wire.options_json else {}
    messages = tuple(ChatMessage(m.role, m.content) for m in wire.chat.messages)
    request = AgentRequest(messages, arguments, options)
    return Routed(wire.name, request, wire.hop_limit, tuple(wire.trace), tuple(wire.trace_asns))


def _json_object(text: str, field: str, node: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise CallFailure(CallErrorCode.INVALID_ARGUMENT, node, f"{field} is not JSON: {error}") from error
    if not isinstance(value, dict):
        raise CallFailure(CallErrorCode.INVALID_ARGUMENT, node, f"{field} must be a JSON object")
    return value


def encode_result(served: Served) -> pb.CallResult:
    data = "" if served.reply.data is None else json.dumps(served.reply.data, default=str)
    return pb.CallResult(
        text=served.reply.text,
        data_json=data,
        served_by=served.served_by,
        route=served.route,
        trace=served.trace,
    )


def decode_result(wire: pb.CallResult) -> Served:
    data = json.loads(wire.data_json) if wire.data_json else None
    return Served(AgentReply(wire.text, data), wire.served_by, wire.route, tuple(wire.trace))


def encode_error(failure: CallFailure) -> pb.CallError:
    return pb.CallError(code=_CODES[failure.code], node=failure.node, reason=failure.reason)


def decode_error(wire: pb.CallError) -> CallFailure:
    return CallFailure(_CODES_BACK.get(wire.code, CallErrorCode.BACKEND_ERROR), wire.node, wire.reason)


# -- the service ------------------------------------------------------------------------------

CallHandler = Callable[[Routed, float | None], Awaitable[Served]]
StreamHandler = Callable[[Routed, float | None], AsyncIterator[str | Served]]


class ForwardingServicer(forwarding_pb2_grpc.ForwardingServiceServicer):
    """Hands each call to the node with the time it has left."""

    def __init__(self, node_name: str, call: CallHandler, stream: StreamHandler) -> None:
        self._node = node_name
        self._call = call
        self._stream = stream

    async def Call(
        self, request: pb.CallRequest, context: grpc.aio.ServicerContext[pb.CallRequest, pb.CallResponse]
    ) -> pb.CallResponse:
        try:
            served = await self._call(decode_call(request.call, self._node), context.time_remaining())
        except CallFailure as failure:
            return pb.CallResponse(error=encode_error(failure))
        return pb.CallResponse(result=encode_result(served))

    async def CallStream(  # an async generator, as grpc.aio allows
        self,
        request: pb.CallStreamRequest,
        context: grpc.aio.ServicerContext[pb.CallStreamRequest, pb.CallStreamResponse],
    ) -> AsyncIterator[pb.CallStreamResponse]:
        try:
            async for event in self._stream(decode_call(request.call, self._node), context.time_remaining()):
                if isinstance(event, Served):
                    yield pb.CallStreamResponse(result=encode_result(event))
                else:
                    yield pb.CallStreamResponse(chunk=pb.CallChunk(text=event))
        except CallFailure as failure:
            yield pb.CallStreamResponse(error=encode_error(failure))


class NextHops:
    """One channel per next hop, kept for the life of the node (DESIGN: channels pooled per next hop).

    With TLS, a channel is replaced once the node's credentials change on disk, so that rotated
    certificates reach next hops too; the old channel is closed once its calls had time to finish.
    """

    def __init__(
        self,
        node_name: str,
        *,
        channels: ChannelFactory = PLAINTEXT,
        tls_name_for: Callable[[str], str | None] = lambda address: None,
    ) -> None:
        self._node = node_name
        self._factory = channels
        self._tls_name_for = tls_name_for
        #: Per next hop: what its channel was made with (credentials generation, TLS name), the channel.
        self._channels: dict[str, tuple[tuple[object, str | None], grpc.aio.Channel]] = {}
        #: Replaced channels, each closing in its task once its calls are done (or RETIRE_GRACE passed).
        self._retiring: dict[grpc.aio.Channel, asyncio.Task[None]] = {}

    def _stub(self, address: str) -> Any:
        """The stub for a next hop (typed Any: the generated stubs describe the synchronous API)."""
        made_with = (self._factory.generation(), self._tls_name_for(address))
        pooled = self._channels.get(address)
        if pooled is None or pooled[0] != made_with:
            if pooled is not None:
                self._retire(pooled[1])
            channel = self._factory.channel(address, made_with[1])
            pooled = self._channels[address] = (made_with, channel)
        return forwarding_pb2_grpc.ForwardingServiceStub(pooled[1])

    def _retire(self, channel: grpc.aio.Channel) -> None:
        task = asyncio.create_task(channel.close(RETIRE_GRACE))
        self._retiring[channel] = task
        task.add_done_callback(lambda _: self._retiring.pop(channel, None))

    async def call(self, address: str, call: Routed, timeout: float | None) -> Served:
        try:
            response = await self._stub(address).Call(pb.CallRequest(call=encode_call(call)), timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise self._failure(address, error) from error
        if response.HasField("error"):
            raise decode_error(response.error)
        return decode_result(response.result)

    async def stream(self, address: str, call: Routed, timeout: float | None) -> AsyncIterator[str | Served]:
        responses = self._stub(address).CallStream(
            pb.CallStreamRequest(call=encode_call(call)), timeout=timeout
        )
        try:
            async for response in responses:
                kind = response.WhichOneof("event")
                if kind == "chunk":
                    yield response.chunk.text
                elif kind == "result":
                    yield decode_result(response.result)
                elif kind == "error":
                    raise decode_error(response.error)
        except grpc.aio.AioRpcError as error:
            raise self._failure(address, error) from error

    def _failure(self, address: str, error: grpc.aio.AioRpcError) -> CallFailure:
        if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
            return CallFailure(
                CallErrorCode.DEADLINE, self._node, f"deadline passed waiting for next hop {address}"
            )
        details = error.details() or ""
        # gRPC fails an RPC with this when no connection to the target could be made: nothing was sent.
        unsent = error.code() is grpc.StatusCode.UNAVAILABLE and "failed to connect" in details.lower()
        return CallFailure(
            CallErrorCode.UNAVAILABLE,
            self._node,
            f"next hop {address}: {error.code().name} {details}",
            delivered=not unsent,
        )

    async def close(self) -> None:
        for _, channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        retiring = list(self._retiring.items())
        for _, task in retiring:
            task.cancel()
        await asyncio.gather(*(task for _, task in retiring), return_exceptions=True)
        for channel, _ in retiring:
            await channel.close()  # what the cancelled graceful close left: cancel its calls, free it
