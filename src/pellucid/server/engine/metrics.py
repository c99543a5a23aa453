"""Classification metrics of an evaluation, in plain numpy (no scikit-learn at run time).

Input: for n inputs and k concepts, `scores[i, j]`, the value the model gave concept j on input
i (0 where it gave none), and `truth[i, j]`, whether input i is labelled with concept j. Two
readings of the same predictions are measured:

- **Top-1** (a single-label classifier): each input's prediction is its highest-scoring concept
  (ties: the first in concept order; none if every score is 0). `top1_accuracy` counts inputs whose
  prediction is among their labels; the confusion matrix counts (actual, predicted) pairs; per
  class precision, recall and F1 (`by_class`) and their macro averages are of this decision, as
  scikit-learn's `precision_recall_fscore_support(average="macro")` on argmax predictions.
- **Binary, one concept at a time** (`binary`): the concept's scores against its labels. Counts,
  precision, recall and F1 at `threshold` (score >= threshold is a positive), and, over every
  threshold, ROC AUC (the probability that a positive outscores a negative, ties counting one
  half: the trapezoidal area under the ROC curve), average precision (sum over the distinct
  thresholds, highest first, of the recall gained times the precision there: scikit-learn's
  `average_precision_score`) and the two curves, one point per distinct score.

Undefined values are NaN: ROC AUC without positives or without negatives, average precision
without positives. Precision with nothing predicted is 0 (scikit-learn's zero_division=0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DEFAULT_THRESHOLD = 0.5
MAX_CURVE_POINTS = 200  # curves longer than this keep evenly spaced points (first and last included)
TOP_K = 5

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Curves:
    """One point per distinct score, highest threshold first. ROC starts at (0, 0) with threshold inf."""

    roc_thresholds: tuple[float, ...]
    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    pr_thresholds: tuple[float, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]


@dataclass(frozen=True)
class BinaryMetrics:
    concept: str
    num_pos: int
    num_neg: int
    num_tot: int
    threshold: float
    true_positives: int
    false_positives: int
    false_negatives: int
    true_negatives: int
    precision: float
    recall: float
    f1: float
    roc_auc: float
    avg_precision: float
    curves: Curves


@dataclass(frozen=True)
class ClassMetrics:
    """A concept as one class of the top-1 decision."""

    concept: str
    support: int  # inputs labelled with it
    predicted: int  # inputs whose top-1 concept it is
    true_positives: int
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class Summary:
    inputs: int
    top1_accuracy: float
    top5_accuracy: float  # the label among the (at most) 5 highest-scoring concepts
    macro_avg_precision: float
    macro_avg_recall: float
    macro_avg_f1_score: float
    macro_std_f1_score: float
    macro_avg_roc_auc: float  # over the concepts where it is defined
    macro_std_roc_auc: float
    mean_avg_precision: float  # over the concepts where it is defined
    majority_class: str
    majority_class_accuracy: float  # the baseline: always answering the most frequent label


@dataclass(frozen=True)
class Evaluation:
    concepts: tuple[str, ...]
    summary: Summary
    # (actual, predicted, count) for every non-zero cell; predicted "" = no concept scored above 0
    confusion: tuple[tuple[str, str, int], ...]
    label_counts: tuple[tuple[str, int], ...]  # positives per concept
    by_class: tuple[ClassMetrics, ...]
    binary: tuple[BinaryMetrics, ...]


def evaluate(
    scores: npt.ArrayLike,
    truth: npt.ArrayLike,
    concepts: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
    max_curve_points: int = MAX_CURVE_POINTS,
) -> Evaluation:
    """Every metric of the module over `scores` (n x k) and `truth` (n x k booleans)."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(truth, dtype=bool)
    n, k = s.shape if s.ndim == 2 else (0, len(concepts))
    if s.shape != (n, k) or t.shape != (n, k) or k != len(concepts):
        raise ValueError(f"scores {s.shape} and truth {t.shape} must both be (inputs, {len(concepts)} concepts)")
    if n == 0 or k == 0:
        raise ValueError("nothing to evaluate: no inputs or no concepts")
    top1 = top1_predictions(s)
    rows = np.arange(n)
    hit1 = (top1 >= 0) & t[rows, np.maximum(top1, 0)]
    support = t.sum(axis=0)
    by_class = tuple(_class_metrics(concepts[j], int(support[j]), top1, t[:, j], j) for j in range(k))
    binary = tuple(binary_metrics(concepts[j], s[:, j], t[:, j], threshold, max_curve_points) for j in range(k))
    f1s = np.array([c.f1 for c in by_class])
    aucs = np.array([b.roc_auc for b in binary if not math.isnan(b.roc_auc)])
    aps = np.array([b.avg_precision for b in binary if not math.isnan(b.avg_precision)])
    majority = int(np.argmax(support))
    summary = Summary(
        inputs=n,
        top1_accuracy=float(hit1.mean()),
        top5_accuracy=top_k_accuracy(s, t, TOP_K),
        macro_avg_precision=float(np.mean([c.precision for c in by_class])),
        macro_avg_recall=float(np.mean([c.recall for c in by_class])),
        macro_avg_f1_score=float(f1s.mean()),
        macro_std_f1_score=float(f1s.std()),
        macro_avg_roc_auc=float(aucs.mean()) if aucs.size else math.nan,
        macro_std_roc_auc=float(aucs.std()) if aucs.size else math.nan,
        mean_avg_precision=float(aps.mean()) if aps.size else math.nan,
        majority_class=concepts[majority],
        majority_class_accuracy=majority_class_accuracy(t),
    )
    confusion = []
    for a in range(k):
        predicted = top1[t[:, a]]
        for p in [*range(k), -1]:
            count = int((predicted == p).sum())
            if count:
                confusion.append((concepts[a], concepts[p] if p >= 0 else "", count))
    return Evaluation(
        concepts=tuple(concepts),
        summary=summary,
        confusion=tuple(confusion),
        label_counts=tuple((concepts[j], int(support[j])) for j in range(k)),
        by_class=by_class,
        binary=binary,
    )


def top1_predictions(scores: FloatArray) -> npt.NDArray[np.int64]:
    """Each row's highest-scoring column (the first on ties), -1 where no score is above 0."""
    top = np.argmax(scores, axis=1).astype(np.int64)
    top[scores.max(axis=1) <= 0] = -1
    return top


def top_k_accuracy(scores: FloatArray, truth: BoolArray, k: int) -> float:
    """The share of rows with a label among their k highest scores above 0 (stable: first column on ties)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    rows = np.arange(scores.shape[0])[:, None]
    hits = truth[rows, order] & (scores[rows, order] > 0)
    return float(hits.any(axis=1).mean())


def majority_class_accuracy(truth: npt.ArrayLike) -> float:
    """Top-1 accuracy of always answering the most frequent label (the baseline a model must beat)."""
    t = np.asarray(truth, dtype=bool)
    if t.size == 0:
        return math.nan
    return float(t[:, int(np.argmax(t.sum(axis=0)))].mean())


def _class_metrics(
    concept: str, support: int, top1: npt.NDArray[np.int64], labelled: BoolArray, j: int
) -> ClassMetrics:
    chosen = top1 == j
    tp = int((chosen & labelled).sum())
    predicted = int(chosen.sum())
    precision = tp / predicted if predicted else 0.0
    recall = tp / support if support else 0.0
    return ClassMetrics(concept, support, predicted, tp, precision, recall, _f1(precision, recall))


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def binary_metrics(
    concept: str,
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    threshold: float = DEFAULT_THRESHOLD,
    max_curve_points: int = MAX_CURVE_POINTS,
) -> BinaryMetrics:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    num_pos = int(y.sum())
    num_neg = int(y.size - num_pos)
    chosen = s >= threshold
    tp = int((chosen & y).sum())
    fp = int((chosen & ~y).sum())
    fn = num_pos - tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / num_pos if num_pos else 0.0
    thresholds, tps, fps = _cumulative_counts(s, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tps / num_pos if num_pos else np.full(tps.shape, math.nan)
        fpr = fps / num_neg if num_neg else np.full(fps.shape, math.nan)
        curve_precision = tps / (tps + fps)
    return BinaryMetrics(
        concept=concept,
        num_pos=num_pos,
        num_neg=num_neg,
        num_tot=int(y.size),
        threshold=threshold,
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        true_negatives=num_neg - fp,
        precision=precision,
        recall=recall,
        f1=_f1(precision, recall),
        roc_auc=roc_auc(s, y),
        avg_precision=average_precision(s, y),
        curves=Curves(
            roc_thresholds=_thin((math.inf, *thresholds.tolist()), max_curve_points),
            fpr=_thin((0.0, *fpr.tolist()), max_curve_points),
            tpr=_thin((0.0, *tpr.tolist()), max_curve_points),
            pr_thresholds=_thin(tuple(thresholds.tolist()), max_curve_points),
            precision=_thin(tuple(curve_precision.tolist()), max_curve_points),
            recall=_thin(tuple(tpr.tolist()), max_curve_points),
        ),
    )


def _cumulative_counts(scores: FloatArray, labels: BoolArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The distinct scores, highest first, with the positives and negatives scoring at least each."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last_of_each = np.r_[np.nonzero(np.diff(s))[0], s.size - 1] if s.size else np.array([], dtype=np.int64)
    tps = np.cumsum(y)[last_of_each].astype(np.float64)
    fps = (last_of_each + 1 - tps).astype(np.float64)
    return s[last_of_each], tps, fps


def roc_auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """P(a positive outscores a negative), ties one half (Mann-Whitney U over mid-ranks); NaN
    without positives or without negatives."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    num_pos = int(y.sum())
    num_neg = int(y.size - num_pos)
    if not num_pos or not num_neg:
        return math.nan
    ranks = _mid_ranks(s)
    return float((ranks[y].sum() - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))


def _mid_ranks(values: FloatArray) -> FloatArray:
    """1-based ranks, ascending; tied values share the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.r_[0, np.nonzero(np.diff(sorted_values))[0] + 1]
    ends = np.r_[starts[1:], values.size]
    mean_rank = (starts + ends + 1) / 2.0  # ranks starts+1 .. ends, averaged
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def average_precision(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Sum over distinct thresholds (highest first) of (recall gained) x (precision there); NaN
    without positives."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    num_pos = int(y.sum())
    if not num_pos:
        return math.nan
    _, tps, fps = _cumulative_counts(s, y)
    recall = tps / num_pos
    precision = tps / (tps + fps)
    gained = np.diff(np.r_[0.0, recall])
    return float((gained * precision).sum())


def _thin(points: tuple[float, ...], limit: int) -> tuple[float, ...]:
    """At most `limit` evenly spaced points, the first and the last kept."""
    if len(points) <= limit or limit < 2:
        return tuple(points)
    keep = np.unique(np.linspace(0, len(points) - 1, limit).round().astype(int))
    return tuple(points[i] for i in keep)


__all__ = [
    "DEFAULT_THRESHOLD",
    "BinaryMetrics",
    "ClassMetrics",
    "Curves",
    "Evaluation",
    "Summary",
    "average_precision",
    "binary_metrics",
    "evaluate",
    "majority_class_accuracy",
    "roc_auc",
    "top1_predictions",
    "top_k_accuracy",
]
