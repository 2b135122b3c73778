"""What grpcurl relies on: server reflection and the standard health service."""

from __future__ import annotations

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.nodes import node_config, running


async def test_reflection_lists_the_node_services() -> None:
    """The same request `grpcurl -plaintext HOST:PORT list` sends."""
    async with (
        running(node_config("a", 65001, "10.0.0.1")) as (node,),
        grpc.aio.insecure_channel(node.advertise_address) as channel,
    ):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = [r async for r in stub.ServerReflectionInfo(iter([request]))]
        names = {s.name for s in responses[0].list_services_response.service}
        assert names == {
            "agentmesh.v1.PeeringService",
            "agentmesh.v1.ForwardingService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        # `grpcurl describe` needs the file descriptors behind a symbol.
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="agentmesh.v1.PeeringService")
        responses = [r async for r in stub.ServerReflectionInfo(iter([request]))]
        assert responses[0].file_descriptor_response.file_descriptor_proto


async def test_health_service_reports_serving() -> None:
    async with (
        running(node_config("a", 65001, "10.0.0.1")) as (node,),
        grpc.aio.insecure_channel(node.advertise_address) as channel,
    ):
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
