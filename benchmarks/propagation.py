"""Propagation benchmark: how fast a full table crosses one node, and what it costs that node in memory.

Three nodes in three ASes on loopback, in a chain::

    injector (AS65101)  ->  node under test (AS65102)  ->  monitor (AS65103)

The node under test (NUT) is always a separate OS process started with the real CLI (`agentmesh serve`),
so its CPU is its own and its peak RSS can be read from /proc/<pid>/status (VmHWM). The injector and the
monitor are `Node`s, each in a child process of its own (`--ends processes`, the default, so that every
process's CPU is reported separately) or both in this script's event loop (`--ends inprocess`). A child
process is this script run with `--role`, driven by JSON lines on its stdin and stdout.

With a Node as injector, the injector is the bottleneck at 1M routes: its one `announce_agents` call
originates the whole table before the first UPDATE leaves. `--injector raw` replaces it with a minimal
speaker in this process that writes UPDATEs encoded before the clock starts, so that the NUT is what is
measured.

For each table size N, with a fresh NUT, injector and monitor:

1. wait until both of the NUT's sessions are Established, and note the NUT's RSS with an empty table;
2. time `injector.announce_agents(N names)` until the monitor's Loc-RIB holds all N routes (polled every
   5 ms);
3. time `injector.withdraw_agents(all)` until the monitor's Loc-RIB is empty.

routes/s is N over the time from the announce call to the full table at the monitor, so it covers the
injector's origination and encoding, the NUT's work, and the monitor's decoding and install. The CPU
seconds each process spent over the same interval show which one was the bottleneck.

Sizes: `AGENTMESH_BENCH_SIZE=small` runs N=2,000 (the `make bench` smoke test); `full` (the default) runs
10k, 100k and 1M; `--routes N [N ...]` picks the sizes explicitly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from policy_eval import POLICY, partner_names  # the sibling benchmark: the same 20-statement policy

from agentmesh.bgp.fsm import State
from agentmesh.bgp.messages import KEEPALIVE, AgentAttributes, Open, Origin, PathAttributes, Update
from agentmesh.config import Config, NeighborConfig, NodeConfig, TimersConfig, router_id_to_int
from agentmesh.obs.logging import configure
from agentmesh.rib.rib import UPDATE_NAME_BYTES
from agentmesh.speaker.node import Node
from agentmesh.transport import codec
from agentmesh.transport.streams import ClientStream
from agentmesh.v1 import bgp_pb2

REPO = Path(__file__).resolve().parents[1]
SIZES = {"small": [2_000], "full": [10_000, 100_000, 1_000_000]}

INJECTOR = ("injector", 65101, "10.0.0.101")
NUT_ASN = 65102
MONITOR = ("monitor", 65103, "10.0.0.103")
#: Generous, so a node that is busy for seconds with a big table does not drop its sessions.
HOLD_TIME = 90
#: The timing resolution: at 10k routes the whole run takes tens of milliseconds.
POLL_INTERVAL = 0.005
SESSION_TIMEOUT = 30.0
STOP_GRACE = 10.0
AGENT = AgentAttributes(capabilities=("bench",), description="benchmark agent")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: Child processes still running; `main` kills whatever is left here, whatever way the run ends.
_CHILDREN: list[subprocess.Popen[bytes]] = []


def bench_names(routes: int) -> list[str]:
    return [f"bench.agent{i:07d}" for i in range(routes)]


def free_port() -> int:
    """A port the OS just handed out on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_status_kib(pid: int, key: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def endpoint_config(name: str, asn: int, router_id: str) -> Config:
    return Config(
        node=NodeConfig(name=name, asn=asn, router_id=router_id, listen="127.0.0.1:0"),
        timers=TimersConfig(hold_time=HOLD_TIME, connect_retry_time=2.0, connect_retry_initial=0.2),
    )


def _spawn(argv: list[str], log_path: Path, *, stdin: int, stdout: int) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, cwd=REPO, stdin=stdin, stdout=stdout, stderr=log, start_new_session=True
        )
    _CHILDREN.append(proc)
    return proc


def _terminate(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """SIGTERM the process group, SIGKILL it if it takes too long; forget the process."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    with contextlib.suppress(ValueError):
        _CHILDREN.remove(proc)


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""


# -- the node under test -------------------------------------------------------------------------


class NutProcess:
    """`python -m agentmesh.cli serve --config FILE`, log level warning, in its own process group."""

    def __init__(
        self,
        workdir: Path,
        routes: int,
        port: int,
        injector: str,
        monitor: str,
        *,
        injector_dials: bool,
        mrai: float | None,
        policy: dict[str, Any] | None = None,
    ) -> None:
        timers: dict[str, float] = {
            "hold_time": HOLD_TIME,
            "connect_retry_time": 2.0,
            "connect_retry_initial": 0.2,
        }
        if mrai is not None:
            timers["min_advertisement_interval"] = mrai
        config = {
            "node": {"name": "nut", "asn": NUT_ASN, "router_id": "10.0.0.102", "listen": f"127.0.0.1:{port}"},
            "timers": timers,
            "neighbors": [
                {
                    "address": injector,
                    "asn": INJECTOR[1],
                    "description": "injector",
                    "passive": injector_dials,
                },
                {"address": monitor, "asn": MONITOR[1], "description": "monitor"},
            ],
        }
        if policy is not None:
            config["policy"] = policy
        config_path = workdir / f"nut-{routes}.yaml"
        config_path.write_text(yaml.safe_dump(config))
        self.address = f"127.0.0.1:{port}"
        self.log_path = workdir / f"nut-{routes}.log"
        argv = [sys.executable, "-m", "agentmesh.cli", "--log-level", "warning", "serve", "--config"]
        self.proc = _spawn(
            [*argv, str(config_path)], self.log_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"node under test exited with {self.proc.returncode}: {_log_tail(self.log_path)}"
            )

    def stop(self) -> None:
        _terminate(self.proc)


# -- injector and monitor ------------------------------------------------------------------------


class Endpoint(Protocol):
    """The injector or the monitor, wherever it runs."""

    address: str
    pid: int

    async def start(self) -> None: ...
    async def peer_with(self, nut: str) -> None: ...
    async def established(self, nut: str) -> None: ...
    async def prepare(self, routes: int) -> None: ...
    async def announce(self) -> None: ...
    async def withdraw(self) -> None: ...
    async def loc_rib(self) -> int: ...
    async def stop(self) -> None: ...


class InProcessEndpoint:
    """A `Node` in this script's event loop."""

    def __init__(self, name: str, asn: int, router_id: str) -> None:
        self.node = Node(endpoint_config(name, asn, router_id))
        self.pid = os.getpid()
        self.address = ""
        self._names: list[str] = []
        self._started = False

    async def start(self) -> None:
        await self.node.start()
        self._started = True
        self.address = self.node.advertise_address

    async def peer_with(self, nut: str) -> None:
        # The NUT dials; this end only answers, so no collision has to be resolved.
        await self.node.add_neighbor(NeighborConfig(address=nut, asn=NUT_ASN, passive=True))

    async def established(self, nut: str) -> None:
        await self.node.wait_for_state(nut, State.ESTABLISHED, SESSION_TIMEOUT)

    async def prepare(self, routes: int) -> None:
        self._names = bench_names(routes)

    async def announce(self) -> None:
        await self.node.announce_agents(self._names, AGENT)

    async def withdraw(self) -> None:
        await self.node.withdraw_agents(self._names)

    async def loc_rib(self) -> int:
        return (await self.node.rib_counts()).loc_rib

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self.node.stop()


class ChildEndpoint:
    """This script run with `--role`: a `Node` in a process of its own, driven by JSON lines."""

    def __init__(self, name: str, asn: int, router_id: str, workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        argv = [sys.executable, str(Path(__file__).resolve()), "--role", name, "--asn", str(asn)]
        self.proc = _spawn(
            [*argv, "--router-id", router_id], self.log_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.pid = self.proc.pid
        self.address = ""

    async def _call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        request = (json.dumps({"op": op, **args}) + "\n").encode()
        stdin, stdout = self.proc.stdin, self.proc.stdout

        def exchange() -> bytes:
            stdin.write(request)
            stdin.flush()
            return stdout.readline()

        line = await asyncio.to_thread(exchange)
        if not line:
            raise RuntimeError(f"{self.name} exited with {self.proc.poll()}: {_log_tail(self.log_path)}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {op} failed: {reply['error']}")
        return reply

    async def start(self) -> None:
        self.address = (await self._call("address"))["address"]

    async def peer_with(self, nut: str) -> None:
        await self._call("peer", address=nut)

    async def established(self, nut: str) -> None:
        await self._call("established", address=nut)

    async def prepare(self, routes: int) -> None:
        await self._call("prepare", routes=routes)

    async def announce(self) -> None:
        await self._call("announce")

    async def withdraw(self) -> None:
        await self._call("withdraw")

    async def loc_rib(self) -> int:
        return int((await self._call("loc_rib"))["loc_rib"])

    async def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._call("stop"), STOP_GRACE)
        await asyncio.to_thread(_terminate, self.proc)


class RawInjector:
    """A minimal speaker in this process that dials the NUT and writes UPDATEs encoded beforehand.

    It takes the injector's origination, export and encoding out of the timed interval, so the NUT (and
    the monitor) are what is measured. It claims an address it never listens on: the NUT is configured
    not to dial it.
    """

    def __init__(self) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.pid = os.getpid()
        self._stream: ClientStream | None = None
        self._write_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._announce: list[bgp_pb2.BgpMessage] = []
        self._withdraw: list[bgp_pb2.BgpMessage] = []
        self._established = asyncio.Event()

    async def start(self) -> None:
        pass

    async def _write(self, message: bgp_pb2.BgpMessage) -> None:
        assert self._stream is not None
        async with self._write_lock:
            await self._stream.write(message)

    async def peer_with(self, nut: str) -> None:
        _, asn, router_id = INJECTOR
        deadline = time.perf_counter() + SESSION_TIMEOUT
        while self._stream is None:
            try:
                self._stream = await ClientStream.dial(nut, self.address, SESSION_TIMEOUT)
            except Exception:
                # The NUT process is still starting: not listening yet, or not yet configured.
                if time.perf_counter() > deadline:
                    raise
                await asyncio.sleep(0.1)
        await self._write(codec.encode(Open(asn, HOLD_TIME, router_id_to_int(router_id))))
        self._tasks.append(asyncio.create_task(self._read()))

    async def _read(self) -> None:
        """Answer the NUT's OPEN with KEEPALIVE, then read (and drop) whatever it sends."""
        assert self._stream is not None
        while (wire := await self._stream.read()) is not None:
            message = codec.decode(wire)
            if isinstance(message, Open):
                await self._write(codec.encode(KEEPALIVE))
                self._tasks.append(asyncio.create_task(self._keepalives(message.hold_time)))
            elif isinstance(message, Update) and message.end_of_rib:
                self._established.set()  # the NUT sends End-of-RIB once the session is Established
        self._established.set()

    async def _keepalives(self, hold_time: int) -> None:
        while hold_time:
            await asyncio.sleep(min(hold_time, HOLD_TIME) / 3)
            await self._write(codec.encode(KEEPALIVE))

    async def established(self, nut: str) -> None:
        await asyncio.wait_for(self._established.wait(), SESSION_TIMEOUT)
        if self._tasks[0].done():
            raise RuntimeError("the NUT closed the raw injector's session")

    async def prepare(self, routes: int) -> None:
        names = bench_names(routes)
        attrs = PathAttributes(origin=Origin.IGP, as_path=(INJECTOR[1],), next_hop=self.address, agent=AGENT)
        # The same UPDATE size budget as a node's own (agentmesh.rib.rib.UPDATE_NAME_BYTES).
        step = max(1, UPDATE_NAME_BYTES // (max(map(len, names), default=1) + 4))
        chunks = [tuple(names[i : i + step]) for i in range(0, len(names), step)]
        self._announce = [codec.encode(Update(attributes=attrs, announced=chunk)) for chunk in chunks]
        self._withdraw = [codec.encode(Update(withdrawn=chunk)) for chunk in chunks]

    async def announce(self) -> None:
        for message in self._announce:
            await self._write(message)

    async def withdraw(self) -> None:
        for message in self._withdraw:
            await self._write(message)

    async def loc_rib(self) -> int:
        raise NotImplementedError("the raw injector keeps no RIB")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._stream is not None:
            await self._stream.close()
            self._stream = None


async def serve_role(name: str, asn: int, router_id: str) -> None:
    """The child side of `ChildEndpoint`: one request line in, one reply line out, until stop or EOF."""
    endpoint = InProcessEndpoint(name, asn, router_id)
    await endpoint.start()
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            request = json.loads(line)
            op = request["op"]
            reply: dict[str, Any] = {}
            try:
                if op == "address":
                    reply["address"] = endpoint.address
                elif op == "peer":
                    await endpoint.peer_with(request["address"])
                elif op == "established":
                    await endpoint.established(request["address"])
                elif op == "prepare":
                    await endpoint.prepare(request["routes"])
                elif op == "announce":
                    await endpoint.announce()
                elif op == "withdraw":
                    await endpoint.withdraw()
                elif op == "loc_rib":
                    reply["loc_rib"] = await endpoint.loc_rib()
                elif op == "stop":
                    await endpoint.stop()
                else:
                    reply["error"] = f"unknown op {op!r}"
            except Exception as error:
                reply["error"] = f"{type(error).__name__}: {error}"
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
            if op == "stop":
                return
    finally:
        await endpoint.stop()


# -- one run -------------------------------------------------------------------------------------


@dataclass
class Phase:
    #: From the call at the injector to the last route's arrival (or departure) at the monitor.
    seconds: float
    #: When the injector's call returned (origination done, or the raw UPDATEs handed to gRPC).
    call_seconds: float
    #: When the monitor's Loc-RIB first changed.
    first_seconds: float
    cpu: dict[str, float]


@dataclass
class Result:
    routes: int
    announce: Phase
    withdraw: Phase
    baseline_kib: int
    table_kib: int
    peak_kib: int

    @property
    def rate(self) -> float:
        return self.routes / self.announce.seconds

    @property
    def withdraw_rate(self) -> float:
        return self.routes / self.withdraw.seconds

    @property
    def raw_bytes_per_route(self) -> float:
        return self.peak_kib * 1024 / self.routes

    @property
    def net_bytes_per_route(self) -> float:
        return (self.peak_kib - self.baseline_kib) * 1024 / self.routes


async def timed(
    start: Callable[[], Awaitable[None]],
    count: Callable[[], Awaitable[int]],
    target: int,
    nut: NutProcess,
    pids: dict[str, int],
    timeout: float,
    what: str,
) -> Phase:
    """Time `start()` until `count()` is `target`, with the CPU seconds each process in `pids` spent."""
    initial = await count()
    first = None
    cpu0 = {label: proc_cpu_seconds(pid) for label, pid in pids.items()}
    t0 = time.perf_counter()
    # The call runs as a task so that the monitor is watched meanwhile (the raw injector's writes
    # overlap the propagation).
    call = asyncio.create_task(start())
    call_seconds = None
    try:
        while (n := await count()) != target or not call.done():
            if first is None and n != initial:
                first = time.perf_counter() - t0
            if call_seconds is None and call.done():
                call.result()
                call_seconds = time.perf_counter() - t0
            nut.check_alive()
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(
                    f"{what} not reached within {timeout:.0f} s; NUT log: {_log_tail(nut.log_path)}"
                )
            await asyncio.sleep(POLL_INTERVAL)
        seconds = time.perf_counter() - t0
        await call
    finally:
        if not call.done():
            call.cancel()
            with contextlib.suppress(BaseException):
                await call
    cpu = {label: proc_cpu_seconds(pid) - cpu0[label] for label, pid in pids.items()}
    return Phase(seconds, call_seconds or seconds, first or seconds, cpu)


async def run_one(
    routes: int, workdir: Path, ends: str, raw: bool, mrai: float | None, policy: dict[str, Any] | None
) -> Result:
    timeout = 120 + routes / 2_000
    injector: Endpoint
    monitor: Endpoint
    if ends == "processes":
        monitor = ChildEndpoint(*MONITOR, workdir)
        injector = RawInjector() if raw else ChildEndpoint(*INJECTOR, workdir)
    else:
        monitor = InProcessEndpoint(*MONITOR)
        injector = RawInjector() if raw else InProcessEndpoint(*INJECTOR)
    nut: NutProcess | None = None
    try:
        for end in (injector, monitor):
            await end.start()
        port = free_port()
        nut_address = f"127.0.0.1:{port}"
        # Configured before the NUT starts, so its first dial is not refused; the raw injector dials.
        dialled = [monitor] if raw else [injector, monitor]
        for end in dialled:
            await end.peer_with(nut_address)
        nut = NutProcess(
            workdir,
            routes,
            port,
            injector.address,
            monitor.address,
            injector_dials=raw,
            mrai=mrai,
            policy=policy,
        )
        if raw:
            await injector.peer_with(nut.address)
        for end in (injector, monitor):
            await end.established(nut.address)
        await injector.prepare(routes)
        await asyncio.sleep(0.5)  # let the End-of-RIB exchange and start-up allocations settle
        baseline_kib = proc_status_kib(nut.pid, "VmRSS")

        if ends == "processes":
            # The raw injector runs in this process (its pid is ours).
            pids = {"NUT": nut.pid, "injector": injector.pid, "monitor": monitor.pid}
        else:
            pids = {"NUT": nut.pid, "injector+monitor": os.getpid()}

        count = monitor.loc_rib
        what = f"{routes} routes at the monitor"
        announce = await timed(injector.announce, count, routes, nut, pids, timeout, what)
        table_kib = proc_status_kib(nut.pid, "VmRSS")
        peak_kib = proc_status_kib(nut.pid, "VmHWM")
        withdraw = await timed(injector.withdraw, count, 0, nut, pids, timeout, "empty table at the monitor")
        peak_kib = max(peak_kib, proc_status_kib(nut.pid, "VmHWM"))  # the withdrawal may be the peak
        return Result(routes, announce, withdraw, baseline_kib, table_kib, peak_kib)
    finally:
        if nut is not None:
            await asyncio.to_thread(nut.stop)
        for end in (monitor, injector):
            await end.stop()


# -- output --------------------------------------------------------------------------------------


def _cpu(phase: Phase) -> str:
    return ", ".join(f"{label} {seconds:.2f}" for label, seconds in phase.cpu.items())


def _steps(phase: Phase) -> str:
    return f"call returned {phase.call_seconds:.2f} s, first change at monitor {phase.first_seconds:.2f} s"


def report(r: Result) -> None:
    print(
        f"N={r.routes:>9,}  announce: {r.announce.seconds:7.2f} s {r.rate:>9,.0f} routes/s  "
        f"(CPU s: {_cpu(r.announce)}; {_steps(r.announce)})",
        flush=True,
    )
    print(
        f"{'':13}withdraw: {r.withdraw.seconds:7.2f} s {r.withdraw_rate:>9,.0f} routes/s  "
        f"(CPU s: {_cpu(r.withdraw)}; {_steps(r.withdraw)})",
        flush=True,
    )
    print(
        f"{'':13}NUT RSS MiB: empty {r.baseline_kib / 1024:.1f}, full table {r.table_kib / 1024:.1f}, "
        f"peak {r.peak_kib / 1024:.1f}; peak bytes/route: raw {r.raw_bytes_per_route:,.0f}, "
        f"net of empty {r.net_bytes_per_route:,.0f}",
        flush=True,
    )


def summary(results: list[Result], setup: str) -> None:
    print(f"\nsummary ({setup}):")
    print("| routes | time to full table (s) | routes/s | NUT CPU (s) | NUT peak RSS (MiB) "
          "| bytes/route raw | bytes/route net | withdraw (s) | withdrawn routes/s |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.routes:,} | {r.announce.seconds:.2f} | {r.rate:,.0f} | {r.announce.cpu['NUT']:.2f} "
            f"| {r.peak_kib / 1024:.1f} | {r.raw_bytes_per_route:,.0f} | {r.net_bytes_per_route:,.0f} "
            f"| {r.withdraw.seconds:.2f} | {r.withdraw_rate:,.0f} |"
        )


async def run(
    sizes: list[int], ends: str, raw: bool, mrai: float | None, policy: dict[str, Any] | None, setup: str
) -> None:
    # SIGTERM does what asyncio.run does for Ctrl-C: cancel this task alone, so that its cleanup still has
    # the nodes' owner tasks to talk to, and every child process is stopped.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    configure("warning")
    results = []
    with tempfile.TemporaryDirectory(prefix="agentmesh-bench-") as tmp:
        for routes in sizes:
            result = await run_one(routes, Path(tmp), ends, raw, mrai, policy)
            report(result)
            results.append(result)
    summary(results, setup)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument(
        "--routes", type=int, nargs="+", help="table sizes (default: from AGENTMESH_BENCH_SIZE)"
    )
    parser.add_argument(
        "--ends",
        choices=["processes", "inprocess"],
        default="processes",
        help="run injector and monitor each in a child process (default) or both in this process",
    )
    parser.add_argument(
        "--injector",
        choices=["node", "raw"],
        default="node",
        help="node: a Node that originates the routes (default); raw: UPDATEs encoded beforehand and "
        "written by a minimal speaker in this process, which leaves the NUT and the monitor to measure",
    )
    parser.add_argument(
        "--mrai",
        type=float,
        help="the NUT's timers.min_advertisement_interval in seconds (default: the node's default, 0.1)",
    )
    parser.add_argument(
        "--policy",
        action="store_true",
        help="give the NUT the 20-statement import policy of benchmarks/policy_eval.py (it accepts"
        " every benchmark route, after evaluating them)",
    )
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--asn", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--router-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        configure("warning")
        asyncio.run(serve_role(args.role, args.asn, args.router_id))
        return 0

    size = os.environ.get("AGENTMESH_BENCH_SIZE", "full")
    if size not in SIZES:
        parser.error(f"AGENTMESH_BENCH_SIZE must be one of {', '.join(SIZES)}, not {size!r}")
    sizes = args.routes or SIZES[size]
    raw = args.injector == "raw"
    if raw:
        where = "raw injector in this process, monitor " + (
            "in a child process" if args.ends == "processes" else "in this process"
        )
    else:
        where = "injector and monitor " + (
            "each in a child process" if args.ends == "processes" else "both in this process"
        )
    if args.mrai is not None:
        where += f"; NUT min_advertisement_interval {args.mrai:g} s"
    policy = None
    if args.policy:
        policy = yaml.safe_load(POLICY.replace("PARTNERS", partner_names()))
        statements = sum(len(p["statements"]) for p in policy["policies"])
        where += f"; NUT import policy of {statements} statements"
    print(
        f"propagation: injector AS{INJECTOR[1]} -> NUT AS{NUT_ASN} (agentmesh serve, own process) -> "
        f"monitor AS{MONITOR[1]}; {where}",
        flush=True,
    )
    try:
        asyncio.run(run(sizes, args.ends, raw, args.mrai, policy, where))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for proc in list(_CHILDREN):
            _terminate(proc, grace=2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
