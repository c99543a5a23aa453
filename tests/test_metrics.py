"""The evaluation metrics (server/engine/metrics.py) against an example computed by hand.

Six inputs, three concepts, one label each:

    input  label  cat  dog  fox   top-1
    i0     cat    0.9  0.1  0.0   cat  (right)
    i1     cat    0.4  0.6  0.0   dog  (wrong)
    i2     dog    0.4  0.5  0.1   dog
    i3     dog    0.2  0.7  0.1   dog
    i4     fox    0.3  0.2  0.5   fox
    i5     cat    0.6  0.3  0.1   cat

Top-1 accuracy 5/6. Per class (top-1 decision): cat tp 2 of 2 predicted, 3 labelled: P 1, R 2/3,
F1 0.8; dog 2 of 3 predicted, 2 labelled: P 2/3, R 1, F1 0.8; fox P 1, R 1, F1 1. Macro P = macro
R = 8/9, macro F1 = 2.6/3, its (population) std sqrt(((-1/15)^2 * 2 + (2/15)^2) / 3).

cat's scores [.9 .4 .4 .2 .3 .6] against [1 1 0 0 0 1]: of the 9 (positive, negative) pairs the
positive wins 8 and one (0.4, 0.4) ties, so ROC AUC = 8.5/9 = 17/18. Thresholds .9 .6 .4 .3 .2
give (tp, fp) (1,0) (2,0) (3,1) (3,2) (3,3): precision 1 1 .75 .6 .5 at recall 1/3 2/3 1 1 1, so
AP = 1/3 * 1 + 1/3 * 1 + 1/3 * .75 = 11/12. dog: [.1 .6 .5 .7 .2 .3] against [0 0 1 1 0 0]: 0.7
beats all 4 negatives, 0.5 beats 3: AUC 7/8; (tp, fp) at .7 .6 .5 .3 .2 .1: (1,0) (1,1) (2,1)
(2,2) (2,3) (2,4): AP = .5 * 1 + .5 * 2/3 = 5/6. fox: its one positive (0.5) beats every
negative: AUC 1, AP 1. Macro AUC (17/18 + 7/8 + 1)/3 = 203/216; mean AP (11/12 + 5/6 + 1)/3 = 11/12.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pellucid.server.engine import metrics

CONCEPTS = ("cat", "dog", "fox")
SCORES = [
    [0.9, 0.1, 0.0],
    [0.4, 0.6, 0.0],
    [0.4, 0.5, 0.1],
    [0.2, 0.7, 0.1],
    [0.3, 0.2, 0.5],
    [0.6, 0.3, 0.1],
]
LABELS = ["cat", "cat", "dog", "dog", "fox", "cat"]
TRUTH = [[label == c for c in CONCEPTS] for label in LABELS]


def approx(value: float) -> object:
    return pytest.approx(value, abs=1e-12)


def test_summary_and_per_class_metrics_match_the_hand_computed_example() -> None:
    result = metrics.evaluate(SCORES, TRUTH, CONCEPTS)
    s = result.summary
    assert s.inputs == 6
    assert s.top1_accuracy == approx(5 / 6)
    assert s.top5_accuracy == 1.0  # three concepts: the label is always among the top 5
    assert s.macro_avg_precision == approx(8 / 9)
    assert s.macro_avg_recall == approx(8 / 9)
    assert s.macro_avg_f1_score == approx(2.6 / 3)
    assert s.macro_std_f1_score == approx(math.sqrt(((1 / 15) ** 2 * 2 + (2 / 15) ** 2) / 3))
    assert s.macro_avg_roc_auc == approx(203 / 216)
    assert s.macro_std_roc_auc == approx(math.sqrt((1**2 + 14**2 + 13**2) / 3) / 216)
    assert s.mean_avg_precision == approx(11 / 12)
    assert (s.majority_class, s.majority_class_accuracy) == ("cat", 0.5)

    by_class = {c.concept: c for c in result.by_class}
    assert (by_class["cat"].support, by_class["cat"].predicted, by_class["cat"].true_positives) == (3, 2, 2)
    assert (by_class["cat"].precision, by_class["cat"].recall, by_class["cat"].f1) == (
        approx(1.0),
        approx(2 / 3),
        approx(0.8),
    )
    assert (by_class["dog"].precision, by_class["dog"].recall, by_class["dog"].f1) == (
        approx(2 / 3),
        approx(1.0),
        approx(0.8),
    )
    assert (by_class["fox"].precision, by_class["fox"].recall, by_class["fox"].f1) == (1.0, 1.0, 1.0)

    assert result.confusion == (("cat", "cat", 2), ("cat", "dog", 1), ("dog", "dog", 2), ("fox", "fox", 1))
    assert result.label_counts == (("cat", 3), ("dog", 2), ("fox", 1))


def test_binary_metrics_with_ties_match_the_hand_computed_example() -> None:
    binary = {b.concept: b for b in metrics.evaluate(SCORES, TRUTH, CONCEPTS).binary}
    cat, dog, fox = binary["cat"], binary["dog"], binary["fox"]
    assert (cat.num_pos, cat.num_neg, cat.num_tot) == (3, 3, 6)
    # at 0.5: i0 and i5 are positives called positive, i1 (0.4) a positive missed
    assert (cat.true_positives, cat.false_positives, cat.false_negatives, cat.true_negatives) == (2, 0, 1, 3)
    assert (cat.precision, cat.recall, cat.f1) == (approx(1.0), approx(2 / 3), approx(0.8))
    assert cat.roc_auc == approx(17 / 18)
    assert cat.avg_precision == approx(11 / 12)
    assert cat.curves.roc_thresholds == (math.inf, 0.9, 0.6, 0.4, 0.3, 0.2)
    assert cat.curves.tpr == pytest.approx((0, 1 / 3, 2 / 3, 1, 1, 1))
    assert cat.curves.fpr == pytest.approx((0, 0, 0, 1 / 3, 2 / 3, 1))
    assert cat.curves.pr_thresholds == (0.9, 0.6, 0.4, 0.3, 0.2)
    assert cat.curves.precision == pytest.approx((1, 1, 0.75, 0.6, 0.5))
    assert cat.curves.recall == pytest.approx((1 / 3, 2 / 3, 1, 1, 1))

    assert (dog.true_positives, dog.false_positives, dog.false_negatives, dog.true_negatives) == (2, 1, 0, 3)
    assert (dog.precision, dog.recall, dog.f1) == (approx(2 / 3), approx(1.0), approx(0.8))
    assert dog.roc_auc == approx(7 / 8)
    assert dog.avg_precision == approx(5 / 6)
    assert dog.curves.fpr == pytest.approx((0, 0, 0.25, 0.25, 0.5, 0.75, 1))
    assert dog.curves.precision == pytest.approx((1, 0.5, 2 / 3, 0.5, 0.4, 1 / 3))

    assert (fox.roc_auc, fox.avg_precision, fox.f1) == (1.0, 1.0, 1.0)
    # the area under the ROC points is the rank statistic, ties included
    for b in binary.values():
        assert np.trapezoid(b.curves.tpr, b.curves.fpr) == approx(b.roc_auc)


def test_all_tied_scores_give_an_auc_of_one_half_and_undefined_values_are_nan() -> None:
    assert metrics.roc_auc([0.3, 0.3, 0.3, 0.3], [1, 0, 1, 0]) == 0.5
    assert metrics.average_precision([0.3, 0.3, 0.3, 0.3], [1, 0, 1, 0]) == 0.5
    assert math.isnan(metrics.roc_auc([0.1, 0.9], [1, 1]))  # no negatives
    assert math.isnan(metrics.average_precision([0.1, 0.9], [0, 0]))  # no positives
    one = metrics.binary_metrics("c", [0.2, 0.7], [0, 0])
    assert (one.precision, one.recall, one.f1, one.false_positives) == (0.0, 0.0, 0.0, 1)


def test_an_input_with_no_score_is_a_wrong_top1_answer_with_no_predicted_concept() -> None:
    result = metrics.evaluate([[0.0, 0.0], [0.8, 0.1]], [[True, False], [True, False]], ("a", "b"))
    assert result.summary.top1_accuracy == 0.5
    assert result.confusion == (("a", "a", 1), ("a", "", 1))
    assert result.summary.majority_class_accuracy == 1.0  # every input is an "a": the baseline is perfect


def test_long_curves_are_thinned_keeping_both_ends() -> None:
    rng = np.random.default_rng(0)
    scores, labels = rng.random(1000), rng.random(1000) < 0.3
    b = metrics.binary_metrics("c", scores, labels, max_curve_points=50)
    assert len(b.curves.fpr) == len(b.curves.tpr) == len(b.curves.roc_thresholds) == 50
    assert (b.curves.fpr[0], b.curves.tpr[0], b.curves.fpr[-1], b.curves.tpr[-1]) == (0, 0, 1, 1)
    # the AUC is computed from all points, not the thinned ones
    full = metrics.binary_metrics("c", scores, labels)
    assert b.roc_auc == full.roc_auc == approx(metrics.roc_auc(scores, labels))


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="concepts"):
        metrics.evaluate([[0.1, 0.2]], [[True]], ("a", "b"))
    with pytest.raises(ValueError, match="nothing to evaluate"):
        metrics.evaluate(np.zeros((0, 2)), np.zeros((0, 2), dtype=bool), ("a", "b"))
