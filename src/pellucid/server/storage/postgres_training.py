"""PostgreSQL tables of training jobs and their results (a mixin of PostgresMetadataStore).

Replicas claim jobs with `FOR UPDATE SKIP LOCKED`: two replicas never claim the same job; the
next job is that of the user whose last claim is the least recent (training_sql.NEXT_JOB)."""

from __future__ import annotations

import json
from typing import Any

from pellucid.server.records import (
    ClusterAssignment,
    Page,
    PageQuery,
    TrainingJobRecord,
    TrainingState,
)
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
    pg,
)


class PostgresTrainingTables:
    """Needs _read, _write and _page of the store."""

    _read: Any
    _write: Any
    _page: Any

    def insert_training_job(self, job: TrainingJobRecord) -> None:
        with self._write() as conn:
            row = conn.execute(pg(f"SELECT {VERSION_SEQ} AS seq"), ids(job)).fetchone()
            if row is None or row["seq"] is None:
                raise LookupError(f"version {job.version_id!r} of model {job.model_id!r} does not exist")
            conn.execute(
                "INSERT INTO training_jobs (version_seq, model_type_id, params, state, progress, reason, logs,"
                " metrics, attempts, owner, claimed_until, created_at, modified_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    row["seq"],
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

    def get_training_job(self, user_id: str, app_id: str, model_id: str, version_id: str) -> TrainingJobRecord | None:
        with self._read() as conn:
            row = conn.execute(pg(JOB_SELECT + BY_IDS), (user_id, app_id, model_id, version_id)).fetchone()
        return job_from_row(row) if row else None

    def claim_training_job(self, now: float, lease_seconds: float, owner: str) -> TrainingJobRecord | None:
        with self._write() as conn:
            claimed = conn.execute(
                "UPDATE training_jobs SET state = 'training', owner = %s, claimed_until = %s, attempts = attempts + 1,"
                f" started_at = COALESCE(started_at, %s), modified_at = %s WHERE version_seq = ({pg(NEXT_JOB)}"
                " FOR UPDATE OF j SKIP LOCKED) RETURNING version_seq",
                (owner, now + lease_seconds, now, now, now),
            ).fetchone()
            if claimed is None:
                return None
            conn.execute(pg(NOTE_CLAIM), (now, claimed["version_seq"]))
            row = conn.execute(JOB_SELECT + " WHERE j.version_seq = %s", (claimed["version_seq"],)).fetchone()
        return job_from_row(row)

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
            cursor = conn.execute(
                pg(
                    "UPDATE training_jobs SET progress = ?, logs = logs || ?, claimed_until = ?, modified_at = ?"
                    f" WHERE version_seq = {VERSION_SEQ} AND state = 'training' AND owner = ?"
                ),
                (progress, log_lines, claimed_until, now, *ids(job), owner),
            )
            return cursor.rowcount == 1

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
            row = conn.execute(
                pg(
                    "UPDATE training_jobs SET state = ?, reason = ?, logs = logs || ?, metrics = ?, artifact = ?,"
                    " progress = CASE WHEN ? = 'trained' THEN 1.0 ELSE progress END, claimed_until = NULL,"
                    f" finished_at = ?, modified_at = ? WHERE version_seq = {VERSION_SEQ} AND state = 'training'"
                    " AND owner = ? RETURNING version_seq"
                ),
                (
                    state.value,
                    reason,
                    log_lines,
                    json.dumps(metrics or {}),
                    artifact,
                    state.value,
                    now,
                    now,
                    *ids(job),
                    owner,
                ),
            ).fetchone()
            if row is None:
                return False
            seq = row["version_seq"]
            conn.execute("DELETE FROM training_assignments WHERE version_seq = %s", (seq,))
            if assignments:
                with conn.cursor() as cursor:
                    cursor.executemany(
                        pg(ASSIGNMENT_INSERT), [(seq, a.input_id, a.cluster, a.distance) for a in assignments]
                    )
            return True

    def get_training_artifact(self, user_id: str, app_id: str, model_id: str, version_id: str) -> bytes | None:
        with self._read() as conn:
            row = conn.execute(
                pg(f"SELECT artifact FROM training_jobs WHERE version_seq = {VERSION_SEQ}"),
                (user_id, app_id, model_id, version_id),
            ).fetchone()
        return bytes(row["artifact"]) if row and row["artifact"] is not None else None

    def list_cluster_assignments(
        self,
        user_id: str,
        app_id: str,
        model_id: str,
        version_id: str,
        query: PageQuery,
        input_ids: list[str] | None = None,
    ) -> Page[ClusterAssignment]:
        sql = pg(
            "SELECT t.seq AS seq, t.input_id AS input_id, t.cluster AS cluster, t.distance AS distance"
            f" FROM training_assignments t WHERE t.version_seq = {VERSION_SEQ}"
        )
        params: tuple[Any, ...] = (user_id, app_id, model_id, version_id)
        if input_ids is not None:
            sql += " AND t.input_id = ANY(%s)"
            params = (*params, list(input_ids))
        return self._page(sql, params, query, assignment_from_row, seq="t.seq")
