"""Forwarding benchmark: latency a mesh hop adds to an agent call.

Four nodes in four ASes, each its own OS process, peer in a line n0 - n1 - n2 - n3; n3 hosts the demo
`echo` agent. A gRPC client in this process calls `ForwardingService.Call` for `demo.echo` through

  * n3 itself  (0 mesh hops: client -> node -> backend),
  * n2         (1 hop),
  * n0         (3 hops),

and, as the floor, the local backend directly (no gRPC at all). Calls are sequential, so p50 is the
latency of one call; "added per hop" is (p50 at k hops - p50 at 0 hops) / k.

    .venv/bin/python benchmarks/forwarding_latency.py                 # 2,000 calls per setup
    AGENTMESH_BENCH_SIZE=small .venv/bin/python benchmarks/forwarding_latency.py   # the CI smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc.aio

from agentmesh.agents.base import AgentRequest, ChatMessage
from agentmesh.agents.demo import demo_backend
from agentmesh.v1 import forwarding_pb2, forwarding_pb2_grpc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def time_calls(address: str, calls: int) -> list[float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = forwarding_pb2_grpc.ForwardingServiceStub(channel)
        call = forwarding_pb2.AgentCall(name="demo.echo", hop_limit=16)
        call.chat.messages.add(role="user", content="ping")
        request = forwarding_pb2.CallRequest(call=call)
        await warm_up(stub, request)
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            response = await stub.Call(request, timeout=5)
            samples.append(time.perf_counter() - started)
            assert response.result.text == "echo: ping", response
        return samples


async def warm_up(
    stub: forwarding_pb2_grpc.ForwardingServiceStub, request: forwarding_pb2.CallRequest
) -> None:
    """Wait until the node is up and the route has arrived, then make a few calls to warm the channels."""
    answered = 0
    deadline = time.monotonic() + 60
    while answered < 50:
        if time.monotonic() > deadline:
            raise TimeoutError("the mesh did not start serving demo.echo within 60 s")
        try:
            response = await stub.Call(request, timeout=5)
        except grpc.aio.AioRpcError:
            response = None
        if response is not None and response.HasField("result"):
            answered += 1
        else:
            await asyncio.sleep(0.1)


async def time_direct(calls: int) -> list[float]:
    backend = demo_backend("echo")
    request = AgentRequest(messages=(ChatMessage("user", "ping"),))
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        await backend.call("echo", request)
        samples.append(time.perf_counter() - started)
    return samples


def start_mesh(ports: list[int]) -> list[subprocess.Popen[bytes]]:
    processes = []
    for index, port in enumerate(ports):
        neighbours = [
            f"127.0.0.1:{ports[j]}:{65001 + j}" for j in (index - 1, index + 1) if 0 <= j < len(ports)
        ]
        argv = [
            sys.executable,
            str(HERE / "_mesh_node.py"),
            f"n{index}",
            str(65001 + index),
            str(port),
            *neighbours,
        ]
        if index == len(ports) - 1:
            argv.append("--host-echo")
        processes.append(
            subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return processes


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    small = os.environ.get("AGENTMESH_BENCH_SIZE") == "small"
    parser.add_argument("--calls", type=int, default=100 if small else 2000)
    args = parser.parse_args()
    ports = [free_port() for _ in range(4)]
    processes = start_mesh(ports)
    try:
        results = {"direct backend call (no gRPC)": await time_direct(args.calls)}
        for label, port in (
            ("0 hops (via n3)", ports[3]),
            ("1 hop (via n2)", ports[2]),
            ("3 hops (via n0)", ports[0]),
        ):
            results[label] = await asyncio.wait_for(time_calls(f"127.0.0.1:{port}", args.calls), 300)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    base = percentile(results["0 hops (via n3)"], 0.5)
    print(f"forwarding latency: {args.calls} sequential calls of demo.echo per setup, one process per node")
    print("| path | p50 (ms) | p99 (ms) | calls/s | added per hop, p50 (ms) |")
    print("|---|---:|---:|---:|---:|")
    for label, samples in results.items():
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        hops = 1 if label.startswith("1 hop") else 3 if label.startswith("3") else 0
        added = f"{(p50 - base) / hops * 1000:.3f}" if hops else ""
        rate = len(samples) / sum(samples)
        print(f"| {label} | {p50 * 1000:.3f} | {p99 * 1000:.3f} | {rate:,.0f} | {added} |")


if __name__ == "__main__":
    asyncio.run(main())
