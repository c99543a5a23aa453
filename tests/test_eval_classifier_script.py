"""scripts/eval_classifier.py on a tiny CSV, so that the script cannot rot: every input is predicted
once by a model that did not train on it, and the baseline is the training folds' majority."""

from __future__ import annotations

import csv
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tests.test_training import TOPICS

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "eval_classifier.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("eval_classifier", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_folds_are_stratified_disjoint_and_cover_every_input() -> None:
    labels = ["a"] * 6 + ["b"] * 3
    folds = _script().folds_of(labels, 3, seed=1)
    assert sorted(i for f in folds for i in f) == list(range(9))
    assert [sorted(labels[i] for i in f) for f in folds] == [["a", "a", "b"]] * 3
    assert len(_script().folds_of(labels, 9, seed=1)) == 9  # leave-one-out


def test_the_script_evaluates_each_held_out_fold(tmp_path: Path) -> None:
    path = tmp_path / "topics.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input", "concepts"])
        writer.writerows((text, topic) for topic, texts in TOPICS.items() for text in texts)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--csv", str(path), "--folds", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("8 inputs, labels {'cats': 4, 'taxes': 4}, 2 folds")
    rows = [line for line in result.stdout.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [row.split("|")[2].strip() for row in rows] == ["4", "4"]  # two folds of four test inputs
    model = re.search(r"embedding-classifier ([\d.]+) \((\d+)/8\)", result.stdout)
    baseline = re.search(r"majority-class baseline ([\d.]+) \((\d+)/8\)", result.stdout)
    assert model is not None and baseline is not None
    assert baseline.group(2) == "4"  # each training half is 2 and 2: its majority is right on half the test
    assert int(model.group(2)) > 4  # the topics are far apart: the classifier beats the baseline
