"""Evaluations (engine/evaluations.py's results, engine/metrics.py's numbers) -> EvalMetrics."""

from __future__ import annotations

from dataclasses import dataclass

from pellucid.api import v1
from pellucid.server.engine import metrics
from pellucid.server.engine.evaluations import EvaluationResult
from pellucid.server.grpc.convert import to_struct, to_timestamp
from pellucid.server.records import EvaluationState

STATUS = {
    EvaluationState.QUEUED: (v1.Status.MODEL_QUEUED_FOR_EVALUATION, "queued for evaluation"),
    EvaluationState.RUNNING: (v1.Status.MODEL_EVALUATING, "evaluating"),
    EvaluationState.DONE: (v1.Status.MODEL_EVALUATED, "evaluated"),
    EvaluationState.FAILED: (v1.Status.MODEL_EVALUATION_FAILED, "evaluation failed"),
}


@dataclass(frozen=True)
class Parts:
    """Which of the larger parts of an EvalMetrics the caller asked for."""

    label_counts: bool = False
    test_set: bool = False
    binary_metrics: bool = False
    confusion_matrix: bool = False
    metrics_by_class: bool = False
    metrics_by_area: bool = False


def eval_metrics_message(result: EvaluationResult, parts: Parts = Parts()) -> v1.EvalMetrics:
    r = result.record
    code, description = STATUS[r.state]
    message = v1.EvalMetrics(
        status=v1.Status(code=code, message=r.message, description=description),
        id=r.id,
        user_id=r.user_id,
        app_id=r.app_id,
        model_id=r.model_id,
        model_version_id=r.model_version_id,
        dataset_user_id=r.dataset_user_id,
        dataset_app_id=r.dataset_app_id,
        dataset_id=r.dataset_id,
        dataset_version_id=r.dataset_version_id,
        eval_info=v1.EvalInfo(params=to_struct(r.eval_info)),
        extended_metrics=to_struct(r.extended_metrics),
        progress=v1.EvalProgress(
            total_inputs=r.total,
            processed_inputs=r.processed,
            failed_inputs=r.failed,
            evaluated_inputs=result.evaluated,
            unlabelled_inputs=result.unlabelled,
            skipped_inputs=result.skipped,
        ),
        failures=[v1.EvalInputFailure(input_id=i, message=m) for i, m in result.failures],
        created_at=to_timestamp(r.created_at),
        modified_at=to_timestamp(r.modified_at),
    )
    m = result.metrics
    if m is not None:
        s = m.summary
        message.summary.CopyFrom(
            v1.MetricsSummary(
                top1_accuracy=s.top1_accuracy,
                top5_accuracy=s.top5_accuracy,
                macro_avg_roc_auc=s.macro_avg_roc_auc,
                macro_std_roc_auc=s.macro_std_roc_auc,
                macro_avg_f1_score=s.macro_avg_f1_score,
                macro_std_f1_score=s.macro_std_f1_score,
                macro_avg_precision=s.macro_avg_precision,
                macro_avg_recall=s.macro_avg_recall,
                mean_avg_precision=s.mean_avg_precision,
                majority_class_accuracy=s.majority_class_accuracy,
                majority_class=s.majority_class,
            )
        )
        if parts.confusion_matrix:
            message.confusion_matrix.CopyFrom(
                v1.ConfusionMatrix(
                    matrix=[v1.ConfusionMatrixEntry(predicted=p, actual=a, value=n) for a, p, n in m.confusion],
                    concepts=[v1.Concept(id=c, name=c) for c in m.concepts],
                )
            )
        if parts.label_counts:
            message.label_counts.CopyFrom(
                v1.LabelDistribution(
                    positive_label_counts=[
                        v1.LabelCount(concept_name=c, count=n, concept=v1.Concept(id=c, name=c))
                        for c, n in m.label_counts
                    ]
                )
            )
        if parts.binary_metrics:
            message.binary_metrics.extend(binary_message(b) for b in m.binary)
        if parts.metrics_by_class:
            message.metrics_by_class.extend(class_message(c, s.inputs) for c in m.by_class)
        # metrics_by_area: detection metrics by region area, which classifiers do not have
    if parts.test_set:
        message.test_set.extend(
            v1.EvalTestSetEntry(
                input=v1.Input(id=item.input_id),
                predicted_concepts=[v1.Concept(id=c.id, name=c.id, value=c.value) for c in item.predicted],
                ground_truth_concepts=[v1.Concept(id=c, name=c, value=1.0) for c in item.truth],
            )
            for item in result.test_set
        )
    return message


def binary_message(b: metrics.BinaryMetrics) -> v1.BinaryMetrics:
    c = b.curves
    return v1.BinaryMetrics(
        num_pos=b.num_pos,
        num_neg=b.num_neg,
        num_tot=b.num_tot,
        roc_auc=b.roc_auc,
        f1=b.f1,
        concept=v1.Concept(id=b.concept, name=b.concept),
        roc_curve=v1.ROC(fpr=c.fpr, tpr=c.tpr, thresholds=c.roc_thresholds),
        precision_recall_curve=v1.PrecisionRecallCurve(
            recall=c.recall, precision=c.precision, thresholds=c.pr_thresholds
        ),
        avg_precision=b.avg_precision,
        precision=b.precision,
        recall=b.recall,
        threshold=b.threshold,
        true_positives=b.true_positives,
        false_positives=b.false_positives,
        false_negatives=b.false_negatives,
        true_negatives=b.true_negatives,
    )


def class_message(c: metrics.ClassMetrics, inputs: int) -> v1.BinaryMetrics:
    return v1.BinaryMetrics(
        num_pos=c.support,
        num_neg=inputs - c.support,
        num_tot=inputs,
        concept=v1.Concept(id=c.concept, name=c.concept),
        precision=c.precision,
        recall=c.recall,
        f1=c.f1,
        true_positives=c.true_positives,
        false_positives=c.predicted - c.true_positives,
        false_negatives=c.support - c.true_positives,
    )
