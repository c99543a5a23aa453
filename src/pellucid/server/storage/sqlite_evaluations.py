"""SQLite tables of evaluations and their per-input items (a mixin of SqliteMetadataStore)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from pellucid.server.records import EvaluationItem, EvaluationRecord, EvaluationState, Page, PageQuery
from pellucid.server.storage.base import Conflict
from pellucid.server.storage.evaluation_rows import (
    EVALUATION_COLUMNS,
    EVALUATION_FROM,
    evaluation_from_row,
    item_from_row,
    item_row,
)

# 12 (issue #11): evaluations, each claimed by a worker with a lease, and the result of each input
MIGRATION = """
    CREATE TABLE evaluations (
        seq INTEGER PRIMARY KEY,
        model_seq INTEGER NOT NULL REFERENCES models(seq) ON DELETE CASCADE,
        id TEXT NOT NULL,
        model_version_id TEXT NOT NULL,
        dataset_user_id TEXT NOT NULL,
        dataset_app_id TEXT NOT NULL,
        dataset_id TEXT NOT NULL,
        dataset_version_id TEXT NOT NULL,
        state TEXT NOT NULL,
        message TEXT NOT NULL,
        total INTEGER NOT NULL,
        processed INTEGER NOT NULL,
        failed INTEGER NOT NULL,
        last_input_seq INTEGER NOT NULL,
        eval_info TEXT NOT NULL,
        extended_metrics TEXT NOT NULL,
        metrics TEXT NOT NULL,
        owner TEXT NOT NULL,
        claimed_until REAL,
        created_at REAL NOT NULL,
        modified_at REAL NOT NULL,
        UNIQUE (model_seq, id)
    );
    CREATE INDEX evaluations_unfinished ON evaluations(seq) WHERE state IN ('queued', 'running');
    CREATE TABLE evaluation_items (
        eval_seq INTEGER NOT NULL REFERENCES evaluations(seq) ON DELETE CASCADE,
        input_seq INTEGER NOT NULL,
        input_id TEXT NOT NULL,
        truth TEXT NOT NULL,
        predicted TEXT NOT NULL,
        error TEXT NOT NULL,
        PRIMARY KEY (eval_seq, input_seq)
    ) WITHOUT ROWID
"""

_SELECT = f"SELECT {EVALUATION_COLUMNS} FROM {EVALUATION_FROM}"
_UNFINISHED = (EvaluationState.QUEUED.value, EvaluationState.RUNNING.value)


class EvaluationTables:
    _conn: Any
    _write: Any
    _page: Any
    _model_seq: Any

    def insert_evaluation(self, evaluation: EvaluationRecord) -> EvaluationRecord:
        e = evaluation
        try:
            with self._write() as conn:
                model_seq = self._model_seq(conn, e.user_id, e.app_id, e.model_id)
                if model_seq is None:
                    raise LookupError(f"model {e.model_id!r} does not exist")
                cursor = conn.execute(
                    "INSERT INTO evaluations (model_seq, id, model_version_id, dataset_user_id, dataset_app_id,"
                    " dataset_id, dataset_version_id, state, message, total, processed, failed, last_input_seq,"
                    " eval_info, extended_metrics, metrics, owner, claimed_until, created_at, modified_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None
        return EvaluationRecord(**{**e.__dict__, "seq": cursor.lastrowid})

    def get_evaluation(self, user_id: str, app_id: str, model_id: str, eval_id: str) -> EvaluationRecord | None:
        row = (
            self._conn()
            .execute(
                _SELECT + " WHERE a.user_id = ? AND a.id = ? AND m.id = ? AND e.id = ?",
                (user_id, app_id, model_id, eval_id),
            )
            .fetchone()
        )
        return evaluation_from_row(row) if row else None

    def latest_evaluation(self, user_id: str, app_id: str, model_id: str) -> EvaluationRecord | None:
        row = (
            self._conn()
            .execute(
                _SELECT + " WHERE a.user_id = ? AND a.id = ? AND m.id = ? ORDER BY e.seq DESC LIMIT 1",
                (user_id, app_id, model_id),
            )
            .fetchone()
        )
        return evaluation_from_row(row) if row else None

    def list_evaluations(self, user_id: str, app_id: str, model_id: str, query: PageQuery) -> Page[EvaluationRecord]:
        return self._page(
            _SELECT + " WHERE a.user_id = ? AND a.id = ? AND m.id = ? {after}",
            (user_id, app_id, model_id),
            query,
            evaluation_from_row,
            seq="e.seq",
        )

    def claim_evaluation(self, owner: str, now: float, lease_seconds: float) -> EvaluationRecord | None:
        with self._write() as conn:  # one write transaction: no other claimer runs in between
            row = conn.execute(
                "SELECT seq FROM evaluations WHERE state IN (?, ?) AND (state = ? OR claimed_until < ?)"
                " ORDER BY seq LIMIT 1",
                (*_UNFINISHED, EvaluationState.QUEUED.value, now),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE evaluations SET state = ?, owner = ?, claimed_until = ?, modified_at = ? WHERE seq = ?",
                (EvaluationState.RUNNING.value, owner, now + lease_seconds, now, row[0]),
            )
            claimed = conn.execute(_SELECT + " WHERE e.seq = ?", (row[0],)).fetchone()
        return evaluation_from_row(claimed)

    def record_evaluation_batch(
        self, seq: int, owner: str, items: list[EvaluationItem], last_input_seq: int, claimed_until: float, now: float
    ) -> bool:
        with self._write() as conn:
            if not self._held(conn, seq, owner):
                return False
            new = 0
            failed = 0
            for item in items:
                inserted = conn.execute(
                    "INSERT INTO evaluation_items (eval_seq, input_seq, input_id, truth, predicted, error)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    item_row(seq, item),
                ).rowcount
                new += inserted
                failed += inserted if item.error else 0
            conn.execute(
                "UPDATE evaluations SET processed = processed + ?, failed = failed + ?,"
                " last_input_seq = MAX(last_input_seq, ?), claimed_until = ?, modified_at = ? WHERE seq = ?",
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
                "UPDATE evaluations SET state = ?, message = ?, metrics = ?, claimed_until = NULL, modified_at = ?"
                " WHERE seq = ?",
                (state.value, message, json.dumps(metrics), now, seq),
            )
        return True

    @staticmethod
    def _held(conn: sqlite3.Connection, seq: int, owner: str) -> bool:
        row = conn.execute("SELECT state, owner FROM evaluations WHERE seq = ?", (seq,)).fetchone()
        return row is not None and row[0] == EvaluationState.RUNNING.value and row[1] == owner

    def evaluation_items(self, seq: int, after_input_seq: int, limit: int) -> list[EvaluationItem]:
        rows = (
            self._conn()
            .execute(
                "SELECT input_seq, input_id, truth, predicted, error FROM evaluation_items"
                " WHERE eval_seq = ? AND input_seq > ? ORDER BY input_seq LIMIT ?",
                (seq, after_input_seq, limit),
            )
            .fetchall()
        )
        return [item_from_row(r) for r in rows]
