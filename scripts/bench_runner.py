#!/usr/bin/env python3
"""Routing benchmark: predictions through runner processes, against a plain gRPC round trip.

Measured in one run, every process on this machine's loopback:

1. a plain unary gRPC round trip to a bare server process (the limit for one call);
2. a predict routed through one runner with a trivial model: caller -> server -> runner ->
   server -> caller, sequential calls, p50 and p99, and the overhead over (1);
3. throughput with 1, 2 and 4 runner processes, with 16 concurrent callers, for the trivial
   model (bound by routing: the server's one core) and for a model that computes ~5 ms of
   CPU per input (bound by the runners until the 2 cores are full).

    python scripts/bench_runner.py [--seconds 5] [--calls 2000]
    python scripts/bench_runner.py --temp-postgres queue --latency-only  # through the PostgreSQL queue
    python scripts/bench_runner.py --temp-postgres both --latency-only --across-replicas

`--metadata URI --queue URI` run the server over those stores (`--temp-postgres`: a throwaway
PostgreSQL from tests/pg.py for both), to compare the memory queue with the PostgreSQL one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

from pellucid.api import v1
from pellucid.client.runner import Runner
from pellucid.client.user import User
from pellucid.errors import AlreadyExists

ROOT = Path(__file__).resolve().parent.parent

BARE_SERVER = """
import sys, time
from concurrent import futures
import grpc
handler = grpc.method_handlers_generic_handler("bench.Plain", {
    "Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)})
server = grpc.server(futures.ThreadPoolExecutor(16))
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.readline()
"""


class Trivial(Runner):
    """The cheapest model: one concept per input."""

    def run_inputs(self, inputs: list[v1.Input], output_info: v1.OutputInfo) -> list[v1.Output]:
        return [v1.Output(data=v1.Data(concepts=[v1.Concept(id="ok", value=1.0)])) for _ in inputs]


class Busy(Runner):
    """A model that computes for ~5 ms of CPU per input (pure Python, so it holds its process's GIL)."""

    def run_inputs(self, inputs: list[v1.Input], output_info: v1.OutputInfo) -> list[v1.Output]:
        outputs = []
        for _ in inputs:
            until = time.process_time() + 0.005
            total = 0
            while time.process_time() < until:
                total += sum(range(200))
            outputs.append(v1.Output(data=v1.Data(concepts=[v1.Concept(id="ok", value=1.0)])))
        return outputs


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] * 1000, ordered[int(len(ordered) * 0.99)] * 1000


def plain_round_trips(calls: int, payload: bytes) -> list[float]:
    bare = subprocess.Popen(
        [sys.executable, "-c", BARE_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(bare.stdout.readline())  # type: ignore[union-attr]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary("/bench.Plain/Echo")
            for _ in range(200):
                echo(payload, timeout=5)
            samples = []
            for _ in range(calls):
                started = time.perf_counter()
                echo(payload, timeout=5)
                samples.append(time.perf_counter() - started)
        return samples
    finally:
        bare.stdin.close()  # type: ignore[union-attr]
        bare.wait(10)


def start_runner(address: str, pat: str, runner_id: str, concurrency: int, model: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pellucid.cli",
            "runner",
            "start",
            f"{Path(__file__).resolve()}:{model}",
            "--runner-id",
            runner_id,
            "--concurrency",
            str(concurrency),
            "--api",
            f"grpc://{address}",
            "--pat",
            pat,
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
    )


def start_server(data_dir: str, stores: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pellucid.cli",
            "server",
            "--data-dir",
            data_dir,
            "--port",
            "0",
            "--log-level",
            "warning",
            *stores,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def server_address(server: subprocess.Popen) -> str:
    while True:
        line = server.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise SystemExit("the server did not start")
        if line.startswith("listening on"):
            return line.split()[-1]


def throughput(model, seconds: float, callers: int, request: v1.Input) -> float:  # type: ignore[no-untyped-def]
    stop = time.monotonic() + seconds
    counts = [0] * callers

    def call(slot: int) -> None:
        while time.monotonic() < stop:
            model.predict([request])
            counts[slot] += 1

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls for the latency measurements")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each throughput run")
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--metadata", default="", help="the server's metadata store URI (default: SQLite)")
    parser.add_argument("--queue", default="", help="the server's work queue URI (default: memory:)")
    parser.add_argument(
        "--temp-postgres",
        choices=["queue", "both"],
        help="a throwaway PostgreSQL (tests/pg.py) for the queue, or for the queue and the metadata",
    )
    parser.add_argument("--latency-only", action="store_true", help="skip the throughput runs")
    parser.add_argument(
        "--across-replicas",
        action="store_true",
        help="predicts go to a second replica over the same stores (needs --temp-postgres both)",
    )
    args = parser.parse_args()
    if args.across_replicas and not (args.temp_postgres == "both" or args.metadata.startswith("postgres")):
        parser.error(
            "--across-replicas needs replicas that share their stores: --temp-postgres both, or --metadata/--queue"
        )
    if args.temp_postgres:
        sys.path.insert(0, str(ROOT))
        from tests import pg

        args.queue = pg.new_database()
        args.metadata = args.queue if args.temp_postgres == "both" else args.metadata
    stores = [
        *(["--metadata", args.metadata] if args.metadata else []),
        *(["--queue", args.queue] if args.queue else []),
    ]

    request = v1.Input(id="x", data=v1.Data(text=v1.Text(raw="a short text")))
    plain = plain_round_trips(args.calls, v1.PostModelOutputsRequest(inputs=[request]).SerializeToString())

    data_dir = tempfile.mkdtemp(prefix="pellucid-bench-runner-")
    data_dirs = [data_dir]  # removed at the end, with the servers' data
    server = start_server(data_dir, stores)
    servers = [server]
    runners: list[subprocess.Popen] = []
    try:
        address = server_address(server)
        caller_address = address
        if args.across_replicas:  # a second replica over the same stores receives the predicts
            data_dirs.append(tempfile.mkdtemp(prefix="pellucid-bench-runner-"))
            second = start_server(data_dirs[-1], stores)
            servers.append(second)
            caller_address = server_address(second)
        pat = json.loads((Path(data_dir) / "credentials.json").read_text())["pat"]
        user = User(base_url=f"grpc://{address}", pat=pat)
        app = user.create_app("bench")
        models = {
            "Trivial": app.create_model("trivial", runner_labels=["trivial"]),
            "Busy": app.create_model("busy", runner_labels=["busy"]),
        }

        def connect(kind: str, n: int) -> None:
            """Exactly n runner processes serving `kind`."""
            while runners:
                stopping = runners.pop()
                stopping.terminate()
                stopping.wait(30)
            for i in range(n):
                runner_id = f"{kind.lower()}{i}"
                try:
                    user.create_runner(runner_id, labels=[kind.lower()])
                except AlreadyExists:
                    pass
                runners.append(start_runner(address, pat, runner_id, 4, kind))
            deadline = time.monotonic() + 60
            while sum(user.runner(f"{kind.lower()}{i}").connections for i in range(n)) < n:
                if time.monotonic() > deadline:
                    raise SystemExit("runners did not connect")
                time.sleep(0.1)

        connect("Trivial", 1)
        model = models["Trivial"]
        if caller_address != address:
            model = User(base_url=f"grpc://{caller_address}", pat=pat).app("bench").model("trivial")
        for _ in range(200):
            model.predict([request])
        routed = []
        for _ in range(args.calls):
            started = time.perf_counter()
            model.predict([request])
            routed.append(time.perf_counter() - started)

        rows = {}
        for kind in ("Trivial", "Busy") if not args.latency_only else ():
            for n in (1, 2, 4):
                connect(kind, n)
                rows[(kind, n)] = throughput(models[kind], args.seconds, args.callers, request)
    finally:
        for r in runners:
            r.terminate()
        for r in runners:
            r.wait(30)
        for running in servers:
            running.terminate()
            running.wait(30)
        for directory in data_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        if args.temp_postgres:
            pg.stop()

    (p50, p99), (q50, q99) = percentiles(plain), percentiles(routed)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, grpcio {grpc.__version__}\n")
    print(f"{'sequential calls':44} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'plain unary gRPC round trip (the limit)':44} {p50:8.2f} {p99:8.2f}")
    where = " (runner on another replica)" if args.across_replicas else ""
    print(f"{'predict routed through 1 runner' + where:44} {q50:8.2f} {q99:8.2f}")
    print(f"{'routing overhead':44} {q50 - p50:8.2f} {q99 - p99:8.2f}")
    print(f"(work queue: {args.queue or 'memory:'}, metadata: {args.metadata or 'SQLite'})")
    if args.latency_only:
        return 0
    print(f"\nthroughput, predictions/s with {args.callers} concurrent callers (each runner takes 4 items at a time):")
    print(f"{'runner processes':>18} {'trivial model':>14} {'5 ms CPU model':>15}")
    for n in (1, 2, 4):
        print(f"{n:18d} {rows[('Trivial', n)]:14,.0f} {rows[('Busy', n)]:15,.0f}")
    print(f"\nplain round trips/s from one sequential caller: {1000 / p50:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
