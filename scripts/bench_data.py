#!/usr/bin/env python3
"""Hosted data benchmark: `pellucid cp`'s transfers against a plain gRPC stream and local `cp`.

Measured in one run, every process on this machine's loopback:

1. many small files (default 1,000 of 100 KB) and one large file (default 256 MiB;
   `--large-mb 1024` for 1 GB), each uploaded to data:// and downloaded back with the client's
   transfer functions (client/data_transfer.py: what `pellucid cp` runs), against a
   standalone `pellucid server` process; every repeat changes the files' first bytes, so each
   upload is new content (stored content is deduplicated, not written again);
2. the limit: the same bytes in 1 MiB messages (the small files one message each) on one
   plain gRPC stream each way, to a bare gRPC server process that drops or sends them,
   measured right after pellucid's transfer in each repeat (the same load for both);
3. the disk floor: what storing the same bytes costs with no network at all (up: sha256, write
   and fsync, the server's least work; down: creating and writing the files, the client's);
4. local `cp` of the same files on this disk;
5. CPU seconds, client and server together, of pellucid's transfer, the plain stream and the
   floor: on a 2-core machine a transfer cannot take less time than half its CPU seconds.

The client's peak RSS (and its growth over the run's start) and the server's (VmHWM) show
that memory stays flat whatever the file size: `--large-size 2GiB --repeat 1` moves a 2 GiB
file both ways (the server's `max_data_file_bytes` has no limit by default).

Files written by a repeat are deleted only at the end of the run (the large ones at once): on
this machine's ext4 (no journal), creating files shortly after deleting thousands scans the
recently deleted inodes, which made every file creation of the next repeat (pellucid's, the
floor's and cp's alike) slower than in a fresh directory.

    python scripts/bench_data.py [--files 1000] [--file-kb 100] [--large-size 256MiB] [--concurrency 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import grpc

from pellucid.client import data_transfer
from pellucid.client.user import User

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 1024 * 1024

BARE_SERVER = """
import sys
from concurrent import futures
import grpc
size, chunk = int(sys.argv[1]), int(sys.argv[2])
def sink(requests, context):
    total = 0
    for message in requests:
        total += len(message)
    return str(total).encode()
def source(request, context):
    count, piece = (int(x) for x in request.decode().split())
    block = b"x" * piece
    for _ in range(count):
        yield block
handler = grpc.method_handlers_generic_handler("bench.Bytes", {
    "Sink": grpc.stream_unary_rpc_method_handler(sink),
    "Source": grpc.unary_stream_rpc_method_handler(source)})
options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
server = grpc.server(futures.ThreadPoolExecutor(16), options=options)
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.readline()
"""


def own_cpu() -> float:
    """CPU seconds of this process (every thread), user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds of another process so far, user and system (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Timed:
    """Wall time and CPU seconds of this process and of `pid` over a `with` block."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Timed:
        self._start = (time.perf_counter(), own_cpu(), process_cpu(self.pid) if self.pid else 0.0)
        return self

    def __exit__(self, *exc: object) -> None:
        wall, mine, theirs = self._start
        self.wall = time.perf_counter() - wall
        self.cpu = own_cpu() - mine + ((process_cpu(self.pid) - theirs) if self.pid else 0.0)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def server_peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def parse_size(text: str) -> int:
    """`256MiB`, `1GiB`, `2GB`, `1048576` -> bytes."""
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9, "b": 1}
    lowered = text.strip().lower()
    for unit, factor in units.items():
        if lowered.endswith(unit):
            return int(float(lowered[: -len(unit)]) * factor)
    return int(lowered)


def size_label(n: int) -> str:
    return f"{n / (1 << 30):g} GiB" if n >= 1 << 30 else f"{n / (1 << 20):g} MiB"


def mib(n: float) -> str:
    return f"{n / (1024 * 1024):.0f} MiB"


class Raw:
    """The bare gRPC server: bytes in and out on one stream, nothing else."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BARE_SERVER, "0", str(CHUNK)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        port = int(self.proc.stdout.readline())  # type: ignore[union-attr]
        options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
        self.sink = self.channel.stream_unary("/bench.Bytes/Sink")
        self.source = self.channel.unary_stream("/bench.Bytes/Source")

    def up(self, messages: Iterator[bytes]) -> Timed:
        with Timed(self.proc.pid) as timed:
            self.sink(messages, timeout=3600)
        return timed

    def down(self, count: int, piece: int) -> Timed:
        with Timed(self.proc.pid) as timed:
            for _ in self.source(f"{count} {piece}".encode(), timeout=3600):
                pass
        return timed

    def close(self) -> None:
        self.channel.close()
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(10)


def file_messages(paths: list[Path]) -> Iterator[bytes]:
    for path in paths:
        with open(path, "rb") as f:
            while data := f.read(CHUNK):
                yield data


def freshen(paths: list[Path]) -> None:
    """New bytes at the start of every file: each repeat uploads content the server has not seen
    (content already stored is deduplicated: not written again, which would flatter the upload)."""
    for path in paths:
        with open(path, "r+b") as f:
            f.write(os.urandom(16))


def opener(path: Path) -> Callable[[], IO[bytes]]:
    def open_file() -> IO[bytes]:
        return open(path, "rb")

    return open_file


def store_floor(paths: list[Path], dest: Path) -> Timed:
    """What storing the bytes costs the server at least, with no network: hash them (sha256, as
    content addressing must), append them to one file and fsync it (durable before answering).
    Its CPU leaves out reading the files (measured alone first): the plain stream's client reads them too."""
    with Timed() as reading:
        for _ in file_messages(paths):
            pass
    with Timed() as timed:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for message in file_messages(paths):
                hashlib.sha256(message).digest()
                os.write(fd, message)
            os.fsync(fd)
        finally:
            os.close(fd)
    dest.unlink()
    timed.cpu = max(0.0, timed.cpu - reading.cpu)
    return timed


def write_floor(paths: list[Path], dest: Path, concurrency: int) -> Timed:
    """What writing the downloaded files costs the client at least: create each file (under a
    temporary name, renamed when written, as the download does) and write as many bytes (from
    memory, 1 MiB at a time), with the transfers' concurrency, no sync (as the download)."""
    dest.mkdir(parents=True, exist_ok=True)
    block = memoryview(os.urandom(CHUNK))

    def write(path: Path) -> None:
        left = path.stat().st_size
        part = dest / f".{path.name}.part"
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            while left > 0:
                left -= os.write(fd, block[: min(left, CHUNK)])
        finally:
            os.close(fd)
        os.replace(part, dest / path.name)

    with Timed() as timed, ThreadPoolExecutor(max(1, min(concurrency, len(paths)))) as pool:
        list(pool.map(write, paths))
    return timed


def local_cp(sources: list[Path], dest: Path) -> Timed:
    dest.mkdir(parents=True, exist_ok=True)
    with Timed() as timed:
        subprocess.run(["cp", *map(str, sources), str(dest)], check=True)
        os.sync()
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--file-kb", type=int, default=100)
    parser.add_argument("--large-mb", type=int, default=256, help="the large file's size in MiB")
    parser.add_argument("--large-size", type=parse_size, help="the large file's size, e.g. 2GiB (overrides --large-mb)")
    parser.add_argument("--concurrency", type=int, default=data_transfer.DEFAULT_CONCURRENCY)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (the median is shown)")
    args = parser.parse_args()
    large_bytes = args.large_size or args.large_mb * CHUNK

    work = Path(tempfile.mkdtemp(prefix="pellucid-bench-data-"))
    server = subprocess.Popen(
        [sys.executable, "-m", "pellucid.cli", "server", "--data-dir", str(work / "data"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    raw = None
    try:
        address = ""
        for line in server.stdout:  # type: ignore[union-attr]
            if line.startswith("listening on "):
                address = line.split()[-1]
                break
        pat = json.loads((work / "data" / "credentials.json").read_text())["pat"]
        user = User(base_url=f"grpc://{address}", pat=pat)
        user.dir("data://.my/bench").create()
        raw = Raw()

        small_dir = work / "small"
        small_dir.mkdir()
        small = []
        for i in range(args.files):
            path = small_dir / f"f{i:05}.bin"
            path.write_bytes(os.urandom(args.file_kb * 1024))
            small.append(path)
        large = work / "large.bin"
        with open(large, "wb") as out:
            for start in range(0, large_bytes, CHUNK):
                out.write(os.urandom(min(CHUNK, large_bytes - start)))
        base_rss = peak_rss()
        cases = [(f"{args.files} x {args.file_kb} KB", small), (f"1 x {size_label(large_bytes)}", [large])]
        measured: dict[str, dict[str, list[Timed]]] = {label: {} for label, _ in cases}
        # each repeat measures pellucid and the plain stream one right after the other, so that both
        # see the same load on a shared machine; the medians are then compared
        transfers_rss = base_rss
        for attempt in range(args.repeat):
            for label, paths in cases:
                runs = measured[label]
                items = [
                    data_transfer.UploadItem(f"data://.my/bench/{p.name}", p.stat().st_size, opener(p), str(p))
                    for p in paths
                ]
                total = sum(p.stat().st_size for p in paths)
                piece = min(CHUNK, paths[0].stat().st_size)
                freshen(paths)
                with Timed(server.pid) as timed:
                    report = data_transfer.upload(user, items, args.concurrency, progress=False)
                runs.setdefault("up", []).append(timed)
                assert not report.failures, report.failures[:3]
                transfers_rss = max(transfers_rss, peak_rss())
                runs.setdefault("raw up", []).append(raw.up(file_messages(paths)))
                back, floor, copied = (work / f"{what}-{attempt}-{len(paths)}" for what in ("back", "floor", "cp"))
                downs = [data_transfer.DownloadItem(i.dest, back / Path(i.source).name, i.size) for i in items]
                with Timed(server.pid) as timed:
                    report = data_transfer.download(user, downs, args.concurrency, progress=False)
                runs.setdefault("down", []).append(timed)
                assert not report.failures, report.failures[:3]
                transfers_rss = max(transfers_rss, peak_rss())
                runs.setdefault("raw down", []).append(raw.down(total // piece, piece))
                runs.setdefault("floor up", []).append(store_floor(paths, work / "floor.bin"))
                runs.setdefault("floor down", []).append(write_floor(paths, floor, args.concurrency))
                runs.setdefault("cp", []).append(local_cp(paths, copied))
                if len(paths) == 1:  # a large file: its disk space back now (one file: no inode scan to fear)
                    for directory in (back, floor, copied):
                        shutil.rmtree(directory, ignore_errors=True)
        cores = os.cpu_count() or 1
        rows = []
        for label, paths in cases:
            total = sum(p.stat().st_size for p in paths)
            wall = {key: statistics.median(r.wall for r in runs) for key, runs in measured[label].items()}
            cpu = {key: statistics.median(r.cpu for r in runs) for key, runs in measured[label].items()}
            for direction in ("up", "down"):
                took, limit = wall[direction], wall[f"raw {direction}"]
                spent = (cpu[direction], cpu[f"raw {direction}"], cpu[f"floor {direction}"])
                walls = (wall[f"floor {direction}"], wall["cp"])
                rows.append((label, direction, took, total / took, limit, limit / took, *spent, *walls))

        load = os.getloadavg()[0]
        print(
            f"\nhosted data transfers, loopback, concurrency {args.concurrency}, median of {args.repeat}"
            f" (load average {load:.1f} on {cores} cores)"
        )
        print(
            f"{'case':<20} {'dir':<5} {'pellucid s':>10} {'MB/s':>8} {'raw gRPC s':>10} {'x raw':>6}"
            f" {'CPU s':>6} {'raw CPU s':>9} {'floor CPU s':>11} {'disk floor s':>12} {'local cp s':>10}"
        )
        for label, direction, took, rate, limit, ratio, used, raw_cpu, floor_cpu, floor_wall, cp_time in rows:
            print(
                f"{label:<20} {direction:<5} {took:>10.2f} {rate / 1e6:>8.0f} {limit:>10.2f} {ratio:>6.2f}"
                f" {used:>6.2f} {raw_cpu:>9.2f} {floor_cpu:>11.2f} {floor_wall:>12.2f} {cp_time:>10.2f}"
            )
        print(
            "disk floor: up, sha256 + write + fsync of the same bytes in one file (the server's least work);"
            " down, creating and writing the same files from memory (the client's least work)"
        )
        print(f"CPU s: client and server together (on {cores} cores a transfer takes at least CPU s / {cores})")
        print(
            f"client peak RSS during the transfers {mib(transfers_rss)} (growth {mib(transfers_rss - base_rss)});"
            f" server peak RSS {mib(server_peak_rss(server.pid))}"
        )
    finally:
        if raw is not None:
            raw.close()
        server.terminate()
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
