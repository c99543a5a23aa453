#!/usr/bin/env python3
"""Held-out accuracy of a trained embedding-classifier against the majority-class baseline, in one run.

Reads a labelled CSV of texts (columns `input` and `concepts`, one concept per row, as
examples/data/reviews.csv), splits it into k folds (stratified by label, seeded), and for each
fold trains an `embedding-classifier` (the built-in text embedder) on the other folds through the
SDK and evaluates it on the fold with `Model.evaluate`, on a fresh embedded server. Every input is
predicted exactly once, by a model that did not see it. The baseline is scikit-learn's
DummyClassifier(strategy="most_frequent"): each fold's test inputs answered with the most
frequent label of that fold's training inputs. Prints one row per fold and the totals.

    python scripts/eval_classifier.py [--csv examples/data/reviews.csv] [--folds 5] [--seed 0]

Stratified folds keep each fold's label mix that of the file. Avoid leave-one-out (--folds 0) for
the baseline on balanced data: leaving one input out makes the other label the training majority,
so the baseline is wrong on every input (0 of 10 on the demo's reviews), which flatters the model.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def read_rows(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8") as handle:
        rows = [(row["input"], row["concepts"].strip()) for row in csv.DictReader(handle)]
    return [(text, label) for text, label in rows if label and "," not in label]


def folds_of(labels: list[str], folds: int, seed: int) -> list[list[int]]:
    """Indices per fold, each label spread round-robin over the folds after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i in rng.permutation(len(labels)).tolist():
        by_label.setdefault(labels[i], []).append(i)
    out: list[list[int]] = [[] for _ in range(folds)]
    position = 0
    for label in sorted(by_label):
        for i in by_label[label]:
            out[position % folds].append(i)
            position += 1
    return [sorted(f) for f in out if f]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=ROOT / "examples" / "data" / "reviews.csv")
    parser.add_argument("--folds", type=int, default=5, help="0: leave-one-out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = read_rows(args.csv)
    labels = [label for _, label in rows]
    concepts = sorted(set(labels))
    splits = folds_of(labels, args.folds or len(rows), args.seed)

    home = tempfile.mkdtemp(prefix="pellucid-eval-")
    os.environ["PELLUCID_HOME"] = home  # a fresh embedded server
    atexit.register(shutil.rmtree, home, True)  # after the embedded server stops (registered before it)
    from pellucid.client.user import User  # after PELLUCID_HOME: the embedded server reads it

    app = User().create_app("eval-classifier", base_workflow="Empty")
    inputs = app.inputs()
    model_right = baseline_right = 0
    print(f"{len(rows)} inputs, labels {dict(Counter(labels))}, {len(splits)} folds\n")
    print("| fold | test inputs | model right | majority of the training folds | baseline right |")
    print("| ---: | ---: | ---: | --- | ---: |")
    for k, test in enumerate(splits):
        train = [i for i in range(len(rows)) if i not in set(test)]
        for name, members in ((f"train-{k}", train), (f"test-{k}", test)):
            app.create_dataset(name)
            batch = [
                inputs.get_text_input(f"{name}-{i}", rows[i][0], dataset_id=name, labels=[rows[i][1]]) for i in members
            ]
            result = inputs.upload_inputs(batch, show_log=False)
            if result.failed:
                raise SystemExit(f"upload failed: {result.failed[0].reason}")
        model = app.create_model(f"clf-{k}", model_type_id="embedding-classifier")
        model.update_params(dataset_id=f"train-{k}", concepts=concepts, validation_fraction=0.0, seed=args.seed)
        trained = model.wait_for_training(model.train(), timeout=600)
        if trained["state"] != "trained":
            raise SystemExit(f"fold {k}: training ended {trained['state']}: {trained.get('reason', '')}")
        evaluated = model.evaluate(f"test-{k}", wait=True, timeout=600)
        if evaluated.progress.evaluated_inputs != len(test):
            raise SystemExit(f"fold {k}: evaluated {evaluated.progress.evaluated_inputs} of {len(test)}: {evaluated}")
        right = round(evaluated.summary.top1_accuracy * len(test))
        majority = Counter(labels[i] for i in train).most_common(1)[0][0]
        baseline = sum(labels[i] == majority for i in test)
        model_right += right
        baseline_right += baseline
        print(f"| {k} | {len(test)} | {right} | {majority} | {baseline} |")
    n = len(rows)
    print(f"\nheld-out accuracy: embedding-classifier {model_right / n:.3f} ({model_right}/{n}),")
    print(f"majority-class baseline {baseline_right / n:.3f} ({baseline_right}/{n})")


if __name__ == "__main__":
    main()
