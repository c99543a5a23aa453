"""PostgreSQL tables of evaluations and their per-input items (a mixin of PostgresMetadataStore).

Replicas share the jobs: a claim takes the oldest claimable row with FOR UPDATE SKIP LOCKED, and
every progress write checks, under the row's lock, that its worker still holds the claim.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from pellucid.server.records import EvaluationItem, EvaluationRecord, EvaluationState, Page, PageQuery
from pellucid.server.storage.evaluation_rows import (
    EVALUATION_COLUMNS,
    EVALUATION_FROM,
    evaluation_from_row,
    item_from_row,
    item_row,
)

# 6 (issue #11; SQLite's 12): evaluations, each claimed by a worker with a lease, and the result of each input
MIGRATION = """
    CREATE TABLE evaluations (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        model_seq BIGINT NOT NULL REFERENCES models(seq) ON DELETE CASCADE,
        id TEXT NOT NULL,
        model_version_id TEXT NOT NULL,
        dataset_user_id TEXT NOT NULL,
        dataset_app_id TEXT NOT NULL,
        dataset_id TEXT NOT NULL,
        dataset_version_id TEXT NOT NULL,
        state TEXT NOT NULL,
        message TEXT NOT NULL,
        total BIGINT NOT NULL,
        processed BIGINT NOT NULL,
        failed BIGINT NOT NULL,
        last_input_seq BIGINT NOT NULL,
        eval_info TEXT NOT NULL,
        extended_metrics TEXT NOT NULL,
        metrics TEXT NOT NULL,
        owner TEXT NOT NULL,
        claimed_until DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        modified_at DOUBLE PRECISION NOT NULL,
        UNIQUE (model_seq, id)
    );
    CREATE INDEX evaluations_unfinished ON evaluations (seq) WHERE state IN ('queued', 'running');
    CREATE TABLE evaluation_items (
        eval_seq BIGINT NOT NULL REFERENCES evaluations(seq) ON DELETE CASCADE,
        input_seq BIGINT NOT NULL,
        input_id TEXT NOT NULL,
        truth TEXT NOT NULL,
        predicted TEXT NOT NULL,
        error TEXT NOT NULL,
        PRIMARY KEY (eval_seq, input_seq)
    )
"""

_SELECT = f"SELECT {EVALUATION_COLUMNS} FROM {EVALUATION_FROM}"

Connection = psycopg.Connection[Any]


class PostgresEvaluationTables:
    _read: Any
    _write: Any
    _page: Any
    _model_seq: Any

    def insert_evaluation(self, evaluation: EvaluationRecord) -> EvaluationRecord:
        e = evaluation
        with self._write() as conn:
            model_seq = self._model_seq(conn, e.user_id, e.app_id, e.model_id)
            if model_seq is None:
                raise LookupError(f"model {e.model_id!r} does not exist")
            row = conn.execute(
                "INSERT INTO evaluations (model_seq, id, model_version_id, dataset_user_id, dataset_app_id,"
                " dataset_id, dataset_version_id, state, message, total, processed, failed, last_input_seq,"
                " eval_info, extended_metrics, metrics, owner, claimed_until, created_at, modified_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " RETURNING seq",
                (
                    model_seq,
                    e.id,
                    e.model_version_id,
                    e.dataset_user_id,
                    e.dataset_app_id,
                    e.dataset_id,
                    e.dataset_version_id,
                    e.state.value,
                    e.message,
                    e.total,
                    e.processed,
                    e.failed,
                    e.last_input_seq,
                    json.dumps(e.eval_info),
                    json.dumps(e.extended_metrics),
                    json.dumps(e.metrics),
                    e.owner,
                    e.claimed_until,
                    e.created_at,
                    e.modified_at,
                ),
            ).fetchone()
        return EvaluationRecord(**{**e.__dict__, "seq": row["seq"]})

    def get_evaluation(self, user_id: str, app_id: str, model_id: str, eval_id: str) -> EvaluationRecord | None:
        with self._read() as conn:
            row = conn.execute(
                _SELECT + " WHERE a.user_id = %s AND a.id = %s AND m.id = %s AND e.id = %s",
                (user_id, app_id, model_id, eval_id),
            ).fetchone()
        return evaluation_from_row(row) if row else None

    def latest_evaluation(self, user_id: str, app_id: str, model_id: str) -> EvaluationRecord | None:
        with self._read() as conn:
            row = conn.execute(
                _SELECT + " WHERE a.user_id = %s AND a.id = %s AND m.id = %s ORDER BY e.seq DESC LIMIT 1",
                (user_id, app_id, model_id),
            ).fetchone()
        return evaluation_from_row(row) if row else None

    def list_evaluations(self, user_id: str, app_id: str, model_id: str, query: PageQuery) -> Page[EvaluationRecord]:
        return self._page(
            _SELECT + " WHERE a.user_id = %s AND a.id = %s AND m.id = %s",
            (user_id, app_id, model_id),
            query,
            evaluation_from_row,
            seq="e.seq",
        )

    def claim_evaluation(self, owner: str, now: float, lease_seconds: float) -> EvaluationRecord | None:
        with self._write() as conn:
            claimed = conn.execute(
                "UPDATE evaluations SET state = %s, owner = %s, claimed_until = %s, modified_at = %s"
                " WHERE seq = (SELECT seq FROM evaluations WHERE state IN ('queued', 'running')"
                " AND (state = 'queued' OR claimed_until < %s) ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)"
                " RETURNING seq",
                (EvaluationState.RUNNING.value, owner, now + lease_seconds, now, now),
            ).fetchone()
            if claimed is None:
                return None
            row = conn.execute(_SELECT + " WHERE e.seq = %s", (claimed["seq"],)).fetchone()
        return evaluation_from_row(row)

    def record_evaluation_batch(
        self, seq: int, owner: str, items: list[EvaluationItem], last_input_seq: int, claimed_until: float, now: float
    ) -> bool:
        with self._write() as conn:
            if not self._held(conn, seq, owner):
                return False
            new = failed = 0
            if items:
                rows = [item_row(seq, item) for item in items]
                inserted = conn.execute(
                    "INSERT INTO evaluation_items (eval_seq, input_seq, input_id, truth, predicted, error)"
                    " SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[])"
                    " ON CONFLICT DO NOTHING RETURNING error",
                    [list(column) for column in zip(*rows)],
                ).fetchall()
                new = len(inserted)
                failed = sum(1 for r in inserted if r["error"])
            conn.execute(
                "UPDATE evaluations SET processed = processed + %s, failed = failed + %s,"
                " last_input_seq = GREATEST(last_input_seq, %s), claimed_until = %s, modified_at = %s WHERE seq = %s",
                (new, failed, last_input_seq, claimed_until, now, seq),
            )
        return True

    def finish_evaluation(
        self, seq: int, owner: str, state: EvaluationState, message: str, metrics: dict[str, Any], now: float
    ) -> bool:
        with self._write() as conn:
            if not self._held(conn, seq, owner):
                return False
            conn.execute(
                "UPDATE evaluations SET state = %s, message = %s, metrics = %s, claimed_until = NULL, modified_at = %s"
                " WHERE seq = %s",
                (state.value, message, json.dumps(metrics), now, seq),
            )
        return True

    @staticmethod
    def _held(conn: Connection, seq: int, owner: str) -> bool:
        """Whether `owner` holds the evaluation; locks its row until the transaction ends."""
        row = conn.execute("SELECT state, owner FROM evaluations WHERE seq = %s FOR UPDATE", (seq,)).fetchone()
        return row is not None and row["state"] == EvaluationState.RUNNING.value and row["owner"] == owner

    def evaluation_items(self, seq: int, after_input_seq: int, limit: int) -> list[EvaluationItem]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT input_seq, input_id, truth, predicted, error FROM evaluation_items"
                " WHERE eval_seq = %s AND input_seq > %s ORDER BY input_seq LIMIT %s",
                (seq, after_input_seq, limit),
            ).fetchall()
        return [item_from_row(r) for r in rows]
