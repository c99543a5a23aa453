#!/usr/bin/env python3
"""Training benchmark: an embedding-classifier trained by the server's job over N stored
embeddings, against a closed-form baseline on the same vectors, in one run.

The data: N text inputs in a dataset, each labelled with one of C concepts, whose 384-d
vectors (seeded synthetic: one Gaussian centre per concept, unit-normalised, as the built-in
text embedder's are) are stored in the app's vector space, as the indexer stores them for
search. The job reads them back from there (nothing is embedded), fits the softmax model and
stores the weights; the time is the whole job: listing the dataset and its labels, reading
the vectors, 200 epochs of full-batch Adam, storing the result (target: under 10 s at N =
10,000). The baseline is ridge regression of the one-hot labels in closed form (numpy
least squares) on the same training split; both are scored on the same held-out 20%.

    python scripts/bench_training.py [--n 10000] [--concepts 5] [--separation 0.008]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from pellucid.server.engine import Engine, Principal
from pellucid.server.engine.inputs import InputSpec
from pellucid.server.engine.spaces import space_name
from pellucid.server.engine.trainable import stratified_split
from pellucid.server.records import ConceptValue, TrainingState
from pellucid.server.storage import open_metadata_store
from pellucid.server.storage.registry import open_blob_store, open_vector_index

DIMENSION = 384
BATCH = 128


def synthetic(n: int, concepts: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((concepts, DIMENSION)).astype(np.float32)
    labels = rng.integers(concepts, size=n)
    vectors = centres[labels] * separation + rng.standard_normal((n, DIMENSION)).astype(np.float32) / np.sqrt(DIMENSION)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), labels


def ridge_baseline(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, concepts: int
) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    x = np.hstack([train_x, np.ones((len(train_x), 1), dtype=np.float32)])
    targets = np.eye(concepts, dtype=np.float32)[train_y]
    weights = np.linalg.solve(x.T @ x + 1e-2 * np.eye(x.shape[1], dtype=np.float32), x.T @ targets)
    predicted = (np.hstack([test_x, np.ones((len(test_x), 1), dtype=np.float32)]) @ weights).argmax(axis=1)
    return time.perf_counter() - started, predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--concepts", type=int, default=5)
    parser.add_argument(
        "--separation",
        type=float,
        default=0.008,
        help="centre scale over the noise (lower: harder; 0.008 keeps it short of separable)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    vectors, labels = synthetic(args.n, args.concepts, args.separation, args.seed)
    concept_ids = [f"c{k}" for k in range(args.concepts)]

    with tempfile.TemporaryDirectory(prefix="bench-training-") as scratch:
        root = Path(scratch)
        store = open_metadata_store(f"sqlite://{root / 'metadata.sqlite3'}")
        engine = Engine(store, open_blob_store(f"file://{root}", root), vectors=open_vector_index("memory:", None))
        try:
            admin = Principal(user_id="bench", is_admin=True, token_id="bench")
            engine.apps.create(admin, "bench", "bench", base_workflow="Empty")
            engine.datasets.create(admin, "bench", "bench", "data")
            started = time.perf_counter()
            for start in range(0, args.n, BATCH):
                specs = [
                    InputSpec(
                        id=f"in-{i}",
                        text=f"synthetic input {i}",
                        labels=(ConceptValue(concept_ids[labels[i]]),),
                        dataset_ids=("data",),
                    )
                    for i in range(start, min(start + BATCH, args.n))
                ]
                engine.inputs.post(admin, "bench", "bench", specs)
            seqs = store.input_seqs("bench", "bench", [f"in-{i}" for i in range(args.n)])
            keys = np.array([seqs[f"in-{i}"] for i in range(args.n)], dtype=np.int64)
            engine.vectors.upsert(space_name("bench", "bench", "text"), keys, vectors)
            setup = time.perf_counter() - started

            engine.models.create(admin, "bench", "bench", "classifier", model_type_id="embedding-classifier")
            started = time.perf_counter()
            version, _ = engine.training.train(
                admin,
                "bench",
                "bench",
                "classifier",
                {"dataset_id": "data", "concepts": concept_ids, "seed": args.seed},
            )
            assert engine.training.run_once()
            job_seconds = time.perf_counter() - started
            job = store.get_training_job("bench", "bench", "classifier", version.id)
            assert job is not None and job.state is TrainingState.TRAINED, job
            metrics = job.metrics

            # the same held-out split as the job (validation_fraction 0.2, stratified by concept, seeded)
            train_rows, held_rows = stratified_split(labels, args.concepts, 0.2, args.seed)
            ridge_seconds, predicted = ridge_baseline(
                vectors[train_rows], labels[train_rows], vectors[held_rows], args.concepts
            )
            ridge_accuracy = float((predicted == labels[held_rows]).mean())
        finally:
            engine.close()

    print(
        f"{args.n} stored {DIMENSION}-d embeddings, {args.concepts} concepts (setup: ingest + store vectors {setup:.1f} s)"
    )
    print()
    print(f"{'method':<58} {'seconds':>8} {'held-out accuracy':>18}")
    print(f"{'-' * 58} {'-' * 8} {'-' * 18}")
    label = f"pellucid training job (embedding-classifier, {int(metrics['epochs_run'])} epochs)"
    print(f"{label:<58} {job_seconds:>8.2f} {metrics['validation_accuracy']:>18.3f}")
    print(f"{'baseline: ridge regression, closed form (numpy)':<58} {ridge_seconds:>8.2f} {ridge_accuracy:>18.3f}")
    print()
    print(f"target: the job under 10 s -> {'met' if job_seconds < 10 else 'NOT met'} ({job_seconds:.2f} s)")


if __name__ == "__main__":
    main()
