"""SQLite tables of training jobs and their results (a mixin of SqliteMetadataStore)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from pellucid.server.records import (
    ClusterAssignment,
    Page,
    PageQuery,
    TrainingJobRecord,
    TrainingState,
)
from pellucid.server.storage.base import Conflict
from pellucid.server.storage.training_sql import (
    ASSIGNMENT_INSERT,
    BY_IDS,
    JOB_SELECT,
    NEXT_JOB,
    NOTE_CLAIM,
    VERSION_SEQ,
    assignment_from_row,
    ids,
    job_from_row,
)


class TrainingTables:
    _conn: Any
    _write: Any
    _page: Any

    def insert_training_job(self, job: TrainingJobRecord) -> None:
        try:
            with self._write() as conn:
                seq = conn.execute(f"SELECT {VERSION_SEQ}", ids(job)).fetchone()
                if seq is None or seq[0] is None:
                    raise LookupError(f"version {job.version_id!r} of model {job.model_id!r} does not exist")
                conn.execute(
                    "INSERT INTO training_jobs (version_seq, model_type_id, params, state, progress, reason, logs,"
                    " metrics, attempts, owner, claimed_until, created_at, modified_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        seq[0],
                        job.model_type_id,
                        json.dumps(job.params),
                        job.state.value,
                        job.progress,
                        job.reason,
                        job.logs,
                        json.dumps(job.metrics),
                        job.attempts,
                        job.owner,
                        job.claimed_until,
                        job.created_at,
                        job.modified_at,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    def get_training_job(self, user_id: str, app_id: str, model_id: str, version_id: str) -> TrainingJobRecord | None:
        row = self._conn().execute(JOB_SELECT + BY_IDS, (user_id, app_id, model_id, version_id)).fetchone()
        return job_from_row(row) if row else None

    def claim_training_job(self, now: float, lease_seconds: float, owner: str) -> TrainingJobRecord | None:
        with self._write() as conn:  # SQLite has one writer: no other claim runs between the two statements
            row = conn.execute(NEXT_JOB, (now,)).fetchone()
            if row is None:
                return None
            conn.execute(NOTE_CLAIM, (now, row[0]))
            conn.execute(
                "UPDATE training_jobs SET state = 'training', owner = ?, claimed_until = ?, attempts = attempts + 1,"
                " started_at = COALESCE(started_at, ?), modified_at = ? WHERE version_seq = ?",
                (owner, now + lease_seconds, now, now, row[0]),
            )
            return job_from_row(conn.execute(JOB_SELECT + " WHERE j.version_seq = ?", (row[0],)).fetchone())

    def requeue_training_jobs(self) -> int:
        with self._write() as conn:
            return int(
                conn.execute(
                    "UPDATE training_jobs SET state = 'queued', owner = '', claimed_until = NULL WHERE state = 'training'"
                ).rowcount
            )

    def update_training_job(
        self,
        job: TrainingJobRecord,
        owner: str,
        now: float,
        claimed_until: float,
        progress: float,
        log_lines: str = "",
    ) -> bool:
        with self._write() as conn:
            return (
                conn.execute(
                    "UPDATE training_jobs SET progress = ?, logs = logs || ?, claimed_until = ?, modified_at = ?"
                    f" WHERE version_seq = {VERSION_SEQ} AND state = 'training' AND owner = ?",
                    (progress, log_lines, claimed_until, now, *ids(job), owner),
                ).rowcount
                == 1
            )

    def finish_training_job(
        self,
        job: TrainingJobRecord,
        owner: str,
        now: float,
        state: TrainingState,
        reason: str = "",
        log_lines: str = "",
        metrics: dict[str, Any] | None = None,
        artifact: bytes | None = None,
        assignments: list[ClusterAssignment] | None = None,
    ) -> bool:
        with self._write() as conn:
            seq_row = conn.execute(f"SELECT {VERSION_SEQ}", ids(job)).fetchone()
            if seq_row is None or seq_row[0] is None:
                return False
            seq = seq_row[0]
            updated = conn.execute(
                "UPDATE training_jobs SET state = ?, reason = ?, logs = logs || ?, metrics = ?, artifact = ?,"
                " progress = CASE WHEN ? = 'trained' THEN 1.0 ELSE progress END, claimed_until = NULL,"
                " finished_at = ?, modified_at = ? WHERE version_seq = ? AND state = 'training' AND owner = ?",
                (
                    state.value,
                    reason,
                    log_lines,
                    json.dumps(metrics or {}),
                    artifact,
                    state.value,
                    now,
                    now,
                    seq,
                    owner,
                ),
            ).rowcount
            if updated != 1:
                return False
            conn.execute("DELETE FROM training_assignments WHERE version_seq = ?", (seq,))
            conn.executemany(ASSIGNMENT_INSERT, [(seq, a.input_id, a.cluster, a.distance) for a in assignments or []])
            return True

    def get_training_artifact(self, user_id: str, app_id: str, model_id: str, version_id: str) -> bytes | None:
        row = (
            self._conn()
            .execute(
                f"SELECT artifact FROM training_jobs WHERE version_seq = {VERSION_SEQ}",
                (user_id, app_id, model_id, version_id),
            )
            .fetchone()
        )
        return bytes(row[0]) if row and row[0] is not None else None

    def list_cluster_assignments(
        self,
        user_id: str,
        app_id: str,
        model_id: str,
        version_id: str,
        query: PageQuery,
        input_ids: list[str] | None = None,
    ) -> Page[ClusterAssignment]:
        sql = f"SELECT t.seq AS seq, t.input_id AS input_id, t.cluster AS cluster, t.distance AS distance FROM training_assignments t WHERE t.version_seq = {VERSION_SEQ}"
        params: tuple[Any, ...] = (user_id, app_id, model_id, version_id)
        if input_ids is not None:
            sql += " AND t.input_id IN (SELECT value FROM json_each(?))"
            params = (*params, json.dumps(input_ids))
        return self._page(sql + " {after}", params, query, assignment_from_row, seq="t.seq")
