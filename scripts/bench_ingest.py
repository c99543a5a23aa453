#!/usr/bin/env python3
"""Bulk ingestion benchmark: pellucid's upload path against two baselines, in one run.

1. raw gRPC client streaming of the same bytes (one message per image) to a bare
   server on loopback: the transport's limit for this data;
2. `Dataset.upload_dataset` into the embedded server (what a user runs).
   1 and 2 alternate for --rounds rounds, each round into a fresh embedded server:
   this VM's speed drifts by +-20% within a minute, so a ratio of two single runs
   taken at different moments says more about the drift than about pellucid. The
   table shows the median of each; every round is printed too;
3. the reference platform's design against the same server: batches of 128 sent by a
   pool of 10 threads as separate unary calls (all submitted up front), each followed
   by polling its inputs-add job and listing the batch's inputs to check them;
4. listing every input of the dataset through `list_inputs`.

Images are synthetic PNGs of about 10 KB (noise, so they do not compress), generated
lazily from their index, so memory reflects the uploader, not the test data. Every
stage runs in this process, like the embedded server does.

    python scripts/bench_ingest.py [--n 20000] [--rounds 3] [--image-bytes 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import struct
import sys
import tempfile
import time
import uuid
import zlib
from concurrent import futures

import grpc

from pellucid.api import v1
from pellucid.client import _embedded
from pellucid.client.user import User
from pellucid.datasets import DataLoader, VisualClassificationFeatures
from pellucid.server.engine.media import encode_png


class SyntheticPngs:
    """Distinct valid PNGs of noise, made fast so that the benchmark measures ingestion.

    One template is encoded with zlib level 0 (one stored block: noise does not compress
    anyway); image i is the template with i written over its first pixels and the zlib
    and chunk checksums recomputed: ~5 us per image instead of ~35 us for a fresh encode.
    """

    def __init__(self, side: int) -> None:
        self.template = bytearray(encode_png(side, side, hashlib.shake_128(b"bench").digest(side * side * 3), level=0))
        self.idat = self.template.index(b"IDAT") + 4  # start of the chunk's data
        self.length = struct.unpack(">I", self.template[self.idat - 8 : self.idat - 4])[0]
        self.raw = self.idat + 2 + 5  # zlib header, stored-block header
        self.raw_end = self.idat + self.length - 4  # adler32 follows the raw bytes

    def __call__(self, index: int) -> bytes:
        png = bytearray(self.template)
        png[self.raw + 1 : self.raw + 9] = index.to_bytes(8, "little")  # after row 0's filter byte
        png[self.raw_end : self.raw_end + 4] = struct.pack(">I", zlib.adler32(png[self.raw : self.raw_end]))
        end = self.idat + self.length
        png[end : end + 4] = struct.pack(">I", zlib.crc32(png[self.idat - 4 : end]))
        return bytes(png)


_generators: dict[int, SyntheticPngs] = {}


def synthetic_png(index: int, side: int) -> bytes:
    generator = _generators.get(side) or _generators.setdefault(side, SyntheticPngs(side))
    return generator(index)


class SyntheticImages(DataLoader):
    task = "visual_classification"

    def __init__(self, n: int, side: int, labels: tuple[str, ...] = ("cat", "dog", "bird"), first: int = 0) -> None:
        self.n, self.side, self.labels, self.first = n, side, labels, first
        self.rss_samples: list[tuple[int, float]] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> VisualClassificationFeatures:
        if index % max(self.n // 4, 1) == 0:
            self.rss_samples.append((index, rss_mb()))
        return VisualClassificationFeatures(
            image_bytes=synthetic_png(self.first + index, self.side), labels=[self.labels[index % len(self.labels)]]
        )


class SlowStorageImages(SyntheticImages):
    """Each read waits 1 ms first, like a file on network storage: one reader could not pass 1,000/s."""

    def __getitem__(self, index: int) -> VisualClassificationFeatures:
        time.sleep(0.001)
        return super().__getitem__(index)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def raw_streaming(n: int, side: int, first: int = 0) -> tuple[float, int]:
    """Client-streams every image as one message to a server that only counts bytes."""
    received = [0]

    def upload(request_iterator, context):  # type: ignore[no-untyped-def]
        for chunk in request_iterator:
            received[0] += len(chunk)
        return b""

    handler = grpc.method_handlers_generic_handler(
        "bench.Raw", {"Upload": grpc.stream_unary_rpc_method_handler(upload)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_unary("/bench.Raw/Upload", request_serializer=None, response_deserializer=None)
            started = time.perf_counter()
            call((synthetic_png(first + i, side) for i in range(n)), timeout=3600)
            return time.perf_counter() - started, received[0]
    finally:
        server.stop(0)


def reference_design(user: User, app_id: str, n: int, side: int, first: int) -> float:
    """Batches of 128 as unary calls from 10 threads, each then polling its job and listing its inputs."""
    app = user.app(app_id)

    def backoff(count: int) -> float:
        return 0.1 * 1.3**count  # their BackoffIterator(10) starts at count 10

    def one_batch(start: int) -> None:
        indices = range(start, min(start + 128, n))
        job_id = uuid.uuid4().hex
        ids = [f"ref-{uuid.uuid4().hex[:8]}" for _ in indices]
        inputs = [
            v1.Input(
                id=input_id,
                dataset_ids=["reference"],
                data=v1.Data(
                    image=v1.Image(base64=synthetic_png(first + i, side)),
                    concepts=[v1.Concept(id="cat", name="cat", value=1.0)],
                ),
            )
            for input_id, i in zip(ids, indices)
        ]
        app._call(
            v1.InputServiceStub,
            "PostInputs",
            v1.PostInputsRequest(app_id=app_id, inputs=inputs, inputs_add_job_id=job_id),
            timeout=600,
        )
        count = 10
        while True:
            job = app._call(
                v1.InputServiceStub, "GetInputsAddJob", v1.GetInputsAddJobRequest(app_id=app_id, job_id=job_id)
            )
            if job.stored + job.duplicates + job.failed >= len(inputs):
                break
            time.sleep(backoff(count))
            count += 1
        app._call(v1.InputServiceStub, "ListInputs", v1.ListInputsRequest(app_id=app_id, ids=ids, page_size=len(ids)))

    app.create_dataset("reference")
    started = time.perf_counter()
    with futures.ThreadPoolExecutor(10) as pool:
        for f in [pool.submit(one_batch, start) for start in range(0, n, 128)]:
            f.result()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="number of images")
    parser.add_argument("--image-bytes", type=int, default=10_000, help="approximate size of each PNG")
    parser.add_argument("--rounds", type=int, default=3, help="alternating raw / pellucid rounds (median reported)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the embedded servers' data dirs")
    args = parser.parse_args()
    homes: list[str] = []
    try:
        return run(args, homes)
    finally:
        for home in homes:
            _embedded.forget(home)
            if not args.keep:
                shutil.rmtree(home, ignore_errors=True)  # 2 GB at --n 200000
        if args.keep and homes:
            print(f"kept the data dirs: {', '.join(homes)}")


def run(args: argparse.Namespace, homes: list[str]) -> int:
    side = int((args.image_bytes / 3) ** 0.5)
    image_size = len(synthetic_png(0, side))
    homes += [tempfile.mkdtemp(prefix=f"pellucid-bench-{round_ + 1}-") for round_ in range(args.rounds)]
    print(
        f"{args.n:,} synthetic PNGs of {image_size:,} bytes ({side}x{side} noise); embedded servers in {', '.join(homes)}"
    )
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, grpcio {grpc.__version__}\n")

    raw_runs: list[float] = []
    ours_runs: list[float] = []
    for round_, home in enumerate(homes):
        first = round_ * args.n  # new images each round
        raw_seconds, raw_bytes = raw_streaming(args.n, side, first)
        assert raw_bytes == args.n * image_size
        os.environ["PELLUCID_HOME"] = home
        loader = SyntheticImages(args.n, side, first=first)
        round_user = User()
        dataset = round_user.create_app("bench").create_dataset("images")
        rss_before = rss_mb()
        result = dataset.upload_dataset(loader, progress=False)
        assert result.ok and len(result.stored_ids) == args.n, result
        if round_ == 0:  # the first round's server serves the rest of the benchmark
            user, first_dataset, first_loader, first_rss = round_user, dataset, loader, (rss_before, rss_mb())
        else:
            _embedded.forget(home)
        raw_runs.append(raw_seconds)
        ours_runs.append(result.seconds)
        print(
            f"round {round_ + 1}: raw {args.n / raw_seconds:,.0f}/s, pellucid {args.n / result.seconds:,.0f}/s, "
            f"ratio {raw_seconds / result.seconds:.2f}"
        )
    raw_seconds, ours_seconds = statistics.median(raw_runs), statistics.median(ours_runs)
    ours_ratio = statistics.median(r / o for r, o in zip(raw_runs, ours_runs))
    raw_rate = args.n / raw_seconds
    dataset, loader, (rss_before, rss_after) = first_dataset, first_loader, first_rss

    rerun = dataset.upload_dataset(SyntheticImages(args.n, side), progress=False)
    assert len(rerun.duplicate_ids) == args.n, rerun

    slow_n = min(args.n, 5_000)
    slow = (
        user.app("bench")
        .create_dataset("slow-storage")
        .upload_dataset(SlowStorageImages(slow_n, side, first=(args.rounds + 1) * args.n), progress=False)
    )
    assert slow.ok and len(slow.stored_ids) == slow_n, slow

    reference_seconds = None
    if not args.skip_reference:
        reference_seconds = reference_design(user, "bench", args.n, side, first=args.rounds * args.n)

    started = time.perf_counter()
    quarter_rates, listed, mark = [], 0, time.perf_counter()
    for _ in dataset.list_inputs():
        listed += 1
        if listed % max(args.n // 4, 1) == 0:
            now = time.perf_counter()
            quarter_rates.append((args.n // 4) / (now - mark))
            mark = now
    list_seconds = time.perf_counter() - started
    assert listed == args.n

    mb = args.n * image_size / 1e6
    print(f"\nmedians of {args.rounds} rounds; 'vs raw' for pellucid is the median of the rounds' ratios")
    rows = [("raw gRPC client streaming (1 message per image)", raw_seconds, 1.0)]
    rows.append(("pellucid Dataset.upload_dataset", ours_seconds, ours_ratio))
    rows.append(("re-run of the same upload (all duplicates)", rerun.seconds, (args.n / rerun.seconds) / raw_rate))
    if reference_seconds is not None:
        rows.append(
            (
                "reference design (10 threads x unary 128 + job poll)",
                reference_seconds,
                (args.n / reference_seconds) / raw_rate,
            )
        )
    print(f"{'path':56} {'seconds':>8} {'inputs/s':>10} {'MB/s':>8} {'vs raw':>7}")
    for name, seconds, ratio in rows:
        print(f"{name:56} {seconds:8.2f} {args.n / seconds:10,.0f} {mb / seconds:8.1f} {ratio:7.2f}")
    if reference_seconds is not None:
        print(f"\npellucid / reference design: {reference_seconds / ours_seconds:.2f}x")
    print(
        f"\nloader whose reads each wait 1 ms (network storage), {slow_n:,} images: "
        f"{slow_n / slow.seconds:,.0f} inputs/s (batches are read in parallel; one reader: at most 1,000/s)"
    )
    print(
        f"\nlist_inputs over {listed:,} inputs: {list_seconds:.2f}s, {listed / list_seconds:,.0f} items/s; "
        f"per quarter: {', '.join(f'{r:,.0f}/s' for r in quarter_rates)} (flat = linear time)"
    )
    samples = ", ".join(f"{i:,}: {mb_:.0f} MB" for i, mb_ in loader.rss_samples)
    print(f"RSS during the upload (item: RSS): {samples}; before {rss_before:.0f} MB, after {rss_after:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
