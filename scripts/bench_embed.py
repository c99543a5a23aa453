#!/usr/bin/env python3
"""Raw throughput of the built-in embedders (server/embedders), by batch size, in one run.

For each batch size, two numbers on the same onnxruntime session and the same batches:

1. the baseline: the bare `session.run` on input prepared ahead of time (token ids padded to
   the batch's longest text; images decoded and preprocessed to 224x224x3 float32): the model's
   own speed on this machine;
2. `embed()`, what the indexing workers call: bytes in, L2-normalised vectors out, so
   tokenising, padding and pooling (text) or decoding, resizing and the JPEG round trip (image)
   are included. The last column is 2 as a share of 1: what the preparation costs.

The two alternate for --rounds rounds (this VM's speed drifts within a minute) and the
table shows the median of each, per wall-clock second and per CPU second of this process
(the second says more when other processes share the cores: the load average is printed). Texts are seeded sentences of 6 to 30 words; images are the
photos scikit-image ships in its wheel (skimage/data, 0.1 to 0.8 megapixels), cycled.

    python scripts/bench_embed.py [--texts 2000] [--images 96] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from pellucid.server.embedders.image import ImageEmbedder
from pellucid.server.embedders.text import TextEmbedder

WORDS = (
    "the a of and to in is was for on with as by at from that this it be are were has have had "
    "cat dog car city river market price tax report engine street window morning music team game "
    "school doctor garden kitchen bridge mountain winter summer company market election weather "
    "quickly slowly new old large small bright quiet early late open closed happy tired"
).split()
SKIMAGE_PHOTOS = [
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "grass.png", "gravel.png",
    "hubble_deep_field.jpg", "motorcycle_left.png", "retina.jpg", "rocket.jpg", "coins.png",
]  # fmt: skip

T = TypeVar("T")


def sentences(count: int) -> list[bytes]:
    rng = random.Random(10)
    out = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 30))]
        out.append((" ".join(words).capitalize() + ".").encode())
    return out


def photos(count: int) -> list[bytes]:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the image benchmark reads scikit-image's bundled photos: pip install scikit-image")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = [(data / name).read_bytes() for name in SKIMAGE_PHOTOS]
    return [files[i % len(files)] for i in range(count)]


def chunks(items: Sequence[bytes], size: int) -> list[Sequence[bytes]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def timed(work: Callable[[T], object], batches: Sequence[T]) -> tuple[float, float]:
    """Wall-clock seconds and this process's CPU seconds to call `work` on each batch."""
    start, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        work(batch)
    return time.perf_counter() - start, time.process_time() - cpu


Row = tuple[int, float, float, float, float]  # batch size; per wall second, per CPU second: raw, embed()


def median_row(size: int, count: int, raw: list[tuple[float, float]], full: list[tuple[float, float]]) -> Row:
    """Medians over the rounds, as items per second."""
    return (
        size,
        count / statistics.median(w for w, _ in raw),
        count / statistics.median(w for w, _ in full),
        count / statistics.median(c for _, c in raw),
        count / statistics.median(c for _, c in full),
    )


def text_rows(texts: list[bytes], sizes: list[int], rounds: int, threads: int) -> list[Row]:
    embedder = TextEmbedder(intra_op_threads=threads)
    rows = []
    for size in sizes:
        embedder.batch_size = size
        calls = chunks(texts, size)
        prepared = []  # what session.run gets, made before the clock starts
        for call in calls:
            ids = embedder.tokenize([t.decode() for t in call])
            width = max(len(i) for i in ids)
            padded = np.zeros((len(ids), width), dtype=np.int64)
            mask = np.zeros_like(padded)
            for row, token_ids in enumerate(ids):
                padded[row, : len(token_ids)] = token_ids
                mask[row, : len(token_ids)] = 1
            prepared.append({"input_ids": padded, "attention_mask": mask, "token_type_ids": np.zeros_like(padded)})
        raw: list[tuple[float, float]] = []
        full: list[tuple[float, float]] = []
        for _ in range(rounds):
            raw.append(timed(lambda feed: embedder.onnx_session.run(None, feed), prepared))
            full.append(timed(embedder.embed, calls))
        rows.append(median_row(size, len(texts), raw, full))
    return rows


def image_rows(images: list[bytes], sizes: list[int], rounds: int, threads: int) -> list[Row]:
    embedder = ImageEmbedder(intra_op_threads=threads)
    feed_name = embedder.onnx_session.get_inputs()[0].name
    rows = []
    for size in sizes:
        embedder.batch_size = size
        calls = chunks(images, size)
        prepared = [np.stack([embedder.decode(image) for image in call]) for call in calls]
        raw: list[tuple[float, float]] = []
        full: list[tuple[float, float]] = []
        for _ in range(rounds):
            raw.append(timed(lambda pixels: embedder.onnx_session.run(None, {feed_name: pixels}), prepared))
            full.append(timed(embedder.embed, calls))
        rows.append(median_row(size, len(images), raw, full))
    return rows


def table(title: str, unit: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    print(f"| batch | session.run ({unit}/s) | embed() ({unit}/s) | embed / run | per CPU-second: run | embed() |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size, raw, full, raw_cpu, full_cpu in rows:
        print(f"| {size} | {raw:,.0f} | {full:,.0f} | {full / raw:.0%} | {raw_cpu:,.0f} | {full_cpu:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--text-batches", default="1,8,32,64")
    parser.add_argument("--image-batches", default="1,8,16")
    args = parser.parse_args()
    text_sizes = [int(s) for s in args.text_batches.split(",")]
    image_sizes = [int(s) for s in args.image_batches.split(",")]
    print(f"{args.texts} texts, {args.images} images, {args.rounds} rounds (median), {args.threads} threads")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores", flush=True)
    table(
        "text: all-MiniLM-L6-v2 int8, 384 dims",
        "texts",
        text_rows(sentences(args.texts), text_sizes, args.rounds, args.threads),
    )
    table(
        "image: Open-NSFW ResNet-50 pooled features, 1024 dims",
        "images",
        image_rows(photos(args.images), image_sizes, args.rounds, args.threads),
    )


if __name__ == "__main__":
    main()
