#!/usr/bin/env python3
"""Indexing benchmark: ingestion with the server embedding behind it, against two baselines, in one run.

1. `upload_dataset` of N short texts into an "Empty" app (nothing embedded): ingestion alone;
2. the same into a "Text" app, the server's index workers embedding the texts while they
   arrive: the ingestion rate (target: within 10% of 1), how many texts were embedded by
   the time the upload ended, and the time until every text is embedded;
3. the text embedder's raw speed: `TextEmbedder().embed` called directly on the same kind
   of sentences, in batches of the indexer's size (target: indexing during and after
   ingestion at >= 80% of it).

1 and 2 alternate for --rounds rounds, each into a fresh server in this process (as the
embedded server runs), on new sentences; the table shows medians. Sentences are made from
word lists with a seeded generator, so every run embeds the same texts.

    python scripts/bench_indexing.py [--n 20000] [--rounds 3] [--raw-n 4000]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pellucid.client.user import User
from pellucid.datasets import DataLoader, TextFeatures
from pellucid.server.embedders.text import TextEmbedder
from pellucid.server.engine.indexing import DEFAULT_BATCH_SIZE
from pellucid.server.runtime import PellucidServer, ServerSettings

SUBJECTS = [
    "the cat",
    "my neighbour",
    "a small child",
    "the old train",
    "our team",
    "the river",
    "a pilot",
    "the market",
]
VERBS = ["watched", "crossed", "painted", "followed", "ignored", "repaired", "described", "carried"]
OBJECTS = ["the bridge", "a red kite", "the evening news", "an empty box", "the tax form", "a new engine", "the garden"]
PLACES = ["in the morning", "near the station", "after the storm", "at the harbour", "before lunch", "in the city"]


def sentences(n: int, first: int = 0, seed: int = 10) -> list[str]:
    """N distinct short sentences (the index makes each one unique), the same on every run."""
    rng = random.Random(seed * 1_000_003 + first)
    return [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}, note {first + i}"
        for i in range(n)
    ]


class Texts(DataLoader):
    task = "text_classification"

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> TextFeatures:
        return TextFeatures(text=self.texts[index])


def ingest(home: Path, workflow: str, texts: list[str]) -> dict[str, float]:
    """Upload the texts into a fresh server's app with this base workflow; seconds of each phase."""
    server = PellucidServer(ServerSettings(data_dir=home, port=0))
    server.start()
    try:
        credentials = server.data_dir.read_credentials()
        assert credentials is not None
        user = User(base_url=f"grpc://{server.address}", pat=credentials.pat)
        if workflow != "Empty":  # a running server has its model loaded: load it before timing
            warm = user.create_app("warm-up", base_workflow=workflow)
            warm.inputs().upload_text("warm-up", "the model loads once per server process")
            warm.wait_until_indexed(timeout=600, show_progress=False)
        app = user.create_app("bench", base_workflow=workflow)
        dataset = app.create_dataset("texts")
        started = time.perf_counter()
        result = dataset.upload_dataset(Texts(texts), progress=False)
        uploaded = time.perf_counter()
        assert result.ok and len(result.stored_ids) == len(texts), result
        during = app.index_status()
        embedded_during = during.ready if workflow != "Empty" else 0
        status = app.wait_until_indexed(timeout=3600, show_progress=False)
        finished = time.perf_counter()
        assert status.failed == 0, list(status.failed_inputs)
        user.close()
        return {
            "ingest": uploaded - started,
            "embedded_during": float(embedded_during),
            "until_indexed": finished - started,
            "after": finished - uploaded,
        }
    finally:
        server.stop(grace=1.0)


def raw_speed(texts: list[str]) -> float:
    """Sentences per second of the text embedder called directly, in the indexer's batches (its
    own session, at normal CPU priority: the index workers run theirs at a lower one)."""
    embedder = TextEmbedder()
    embedder.embed([t.encode() for t in texts[:DEFAULT_BATCH_SIZE]])  # load and warm up
    items = [t.encode() for t in texts]
    started = time.perf_counter()
    for i in range(0, len(items), DEFAULT_BATCH_SIZE):
        embedder.embed(items[i : i + DEFAULT_BATCH_SIZE])
    return len(items) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="texts per upload")
    parser.add_argument("--rounds", type=int, default=3, help="alternating Empty / Text rounds (medians reported)")
    parser.add_argument("--raw-n", type=int, default=4_000, help="sentences for the embedder's raw speed, per round")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pellucid-bench-indexing-"))
    print(f"{args.n:,} short texts per upload, {args.rounds} rounds; servers in {root}")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}\n")
    empty, text, raw = [], [], []
    try:
        for round_ in range(args.rounds):
            first = round_ * 2 * args.n
            empty.append(ingest(root / f"empty-{round_}", "Empty", sentences(args.n, first)))
            text.append(ingest(root / f"text-{round_}", "Text", sentences(args.n, first + args.n)))
            raw.append(raw_speed(sentences(args.raw_n, 10**9 + round_ * args.raw_n)))
            e, t = empty[-1], text[-1]
            print(
                f"round {round_ + 1}: Empty {args.n / e['ingest']:,.0f} inputs/s; Text {args.n / t['ingest']:,.0f} "
                f"inputs/s ({t['embedded_during']:,.0f} embedded during the upload, all after "
                f"{t['until_indexed']:.1f} s); embedder alone {raw[-1]:,.0f} sentences/s"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    empty_rate = args.n / median(empty, "ingest")
    text_rate = args.n / median(text, "ingest")
    ratio = statistics.median(e["ingest"] / t["ingest"] for e, t in zip(empty, text))
    raw_rate = statistics.median(raw)
    during_rate = statistics.median(t["embedded_during"] / t["ingest"] for t in text)
    after_rate = statistics.median((args.n - t["embedded_during"]) / t["after"] for t in text if t["after"] > 0)
    overall = args.n / median(text, "until_indexed")
    rows = [
        ("ingestion into an Empty app (nothing embedded)", f"{empty_rate:,.0f} inputs/s", "1.00"),
        ("ingestion into a Text app, index workers embedding behind it", f"{text_rate:,.0f} inputs/s", f"{ratio:.2f}"),
        ("text embedder called directly (batches of 32)", f"{raw_rate:,.0f} sentences/s", "1.00"),
        ("embedding while the upload runs", f"{during_rate:,.0f} sentences/s", f"{during_rate / raw_rate:.2f}"),
        ("embedding after the upload ended", f"{after_rate:,.0f} sentences/s", f"{after_rate / raw_rate:.2f}"),
        (
            "from the first upload until every text is embedded",
            f"{overall:,.0f} sentences/s",
            f"{overall / raw_rate:.2f}",
        ),
    ]
    print("\n| row | rate | ratio to its baseline |\n| --- | --- | --- |")
    for name, rate, against in rows:
        print(f"| {name} | {rate} | {against} |")
    print(
        f"\ntargets: ingestion not slowed by more than 10% (ratio {ratio:.2f}: "
        f"{'held' if ratio >= 0.9 else 'not held'}); embedding at >= 80% of the model's raw speed "
        f"(during {during_rate / raw_rate:.2f}, after {after_rate / raw_rate:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
