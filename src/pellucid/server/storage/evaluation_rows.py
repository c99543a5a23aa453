"""Rows of the evaluation tables to records and back, for both backends.

Metrics are stored as JSON text (not JSONB): they hold NaN for undefined values (an AUC without
negatives) and Infinity (the first ROC threshold), which Python's json writes and reads back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pellucid.server.records import ConceptValue, EvaluationItem, EvaluationRecord, EvaluationState

# the columns every evaluation SELECT returns, from evaluations e JOIN models m JOIN apps a
EVALUATION_COLUMNS = (
    "e.seq AS seq, a.user_id AS user_id, a.id AS app_id, m.id AS model_id, e.id AS id,"
    " e.model_version_id AS model_version_id, e.dataset_user_id AS dataset_user_id,"
    " e.dataset_app_id AS dataset_app_id, e.dataset_id AS dataset_id, e.dataset_version_id AS dataset_version_id,"
    " e.state AS state, e.message AS message, e.total AS total, e.processed AS processed, e.failed AS failed,"
    " e.last_input_seq AS last_input_seq, e.eval_info AS eval_info, e.extended_metrics AS extended_metrics, e.metrics AS metrics,"
    " e.owner AS owner, e.claimed_until AS claimed_until, e.created_at AS created_at, e.modified_at AS modified_at"
)
EVALUATION_FROM = "evaluations e JOIN models m ON m.seq = e.model_seq JOIN apps a ON a.seq = m.app_seq"


def evaluation_from_row(row: Mapping[str, Any]) -> EvaluationRecord:
    return EvaluationRecord(
        user_id=row["user_id"],
        app_id=row["app_id"],
        model_id=row["model_id"],
        id=row["id"],
        model_version_id=row["model_version_id"],
        dataset_user_id=row["dataset_user_id"],
        dataset_app_id=row["dataset_app_id"],
        dataset_id=row["dataset_id"],
        dataset_version_id=row["dataset_version_id"],
        created_at=row["created_at"],
        modified_at=row["modified_at"],
        state=EvaluationState(row["state"]),
        message=row["message"],
        total=row["total"],
        processed=row["processed"],
        failed=row["failed"],
        last_input_seq=row["last_input_seq"],
        eval_info=json.loads(row["eval_info"]),
        extended_metrics=json.loads(row["extended_metrics"]),
        metrics=json.loads(row["metrics"]),
        seq=row["seq"],
        owner=row["owner"],
        claimed_until=row["claimed_until"],
    )


def item_row(seq: int, item: EvaluationItem) -> tuple[Any, ...]:
    """(eval_seq, input_seq, input_id, truth, predicted, error)."""
    predicted = [[c.id, c.value] for c in item.predicted]
    return (seq, item.input_seq, item.input_id, json.dumps(list(item.truth)), json.dumps(predicted), item.error)


def item_from_row(row: Mapping[str, Any]) -> EvaluationItem:
    return EvaluationItem(
        input_seq=row["input_seq"],
        input_id=row["input_id"],
        truth=tuple(json.loads(row["truth"])),
        predicted=tuple(ConceptValue(id=c, value=v) for c, v in json.loads(row["predicted"])),
        error=row["error"],
    )
