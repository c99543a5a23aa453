"""What the SQLite and PostgreSQL training tables share: the job's SELECT and its row reading.

Placeholders are written `?` and turned into `%s` for PostgreSQL by `pg`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pellucid.server.records import ClusterAssignment, TrainingJobRecord, TrainingState

JOB_SELECT = (
    "SELECT j.version_seq AS seq, a.user_id AS user_id, a.id AS app_id, m.id AS model_id, v.id AS version_id,"
    " j.model_type_id AS model_type_id, j.params AS params, j.state AS state, j.progress AS progress,"
    " j.reason AS reason, j.logs AS logs, j.metrics AS metrics, j.attempts AS attempts, j.owner AS owner,"
    " j.claimed_until AS claimed_until, j.created_at AS created_at, j.modified_at AS modified_at,"
    " j.started_at AS started_at, j.finished_at AS finished_at"
    " FROM training_jobs j JOIN model_versions v ON v.seq = j.version_seq JOIN models m ON m.seq = v.model_seq"
    " JOIN apps a ON a.seq = m.app_seq"
)
# the seq of one model version, by its ids (user, app, model, version)
VERSION_SEQ = (
    "(SELECT v.seq FROM model_versions v JOIN models m ON m.seq = v.model_seq JOIN apps a ON a.seq = m.app_seq"
    " WHERE a.user_id = ? AND a.id = ? AND m.id = ? AND v.id = ?)"
)
BY_IDS = " WHERE a.user_id = ? AND a.id = ? AND m.id = ? AND v.id = ?"
# a job that waits for a worker: QUEUED, or TRAINING with its holder's claim lapsed
CLAIMABLE = "(j.state = 'queued' OR (j.state = 'training' AND j.claimed_until < ?))"
# the next job to claim, fairly across users: of the user whose last claim is the least recent
# (never claimed: first), that user's oldest; one user's long queue cannot starve the others
NEXT_JOB = (
    "SELECT j.version_seq FROM training_jobs j JOIN model_versions v ON v.seq = j.version_seq"
    " JOIN models m ON m.seq = v.model_seq JOIN apps a ON a.seq = m.app_seq"
    " LEFT JOIN training_claims c ON c.user_id = a.user_id"
    f" WHERE {CLAIMABLE} ORDER BY COALESCE(c.claimed_at, -1), j.created_at, j.version_seq LIMIT 1"
)
# record the user's claim (the owner of the job's app) at ?
NOTE_CLAIM = (
    "INSERT INTO training_claims (user_id, claimed_at) SELECT a.user_id, ? FROM training_jobs j"
    " JOIN model_versions v ON v.seq = j.version_seq JOIN models m ON m.seq = v.model_seq"
    " JOIN apps a ON a.seq = m.app_seq WHERE j.version_seq = ?"
    " ON CONFLICT (user_id) DO UPDATE SET claimed_at = excluded.claimed_at"
)
ASSIGNMENT_INSERT = "INSERT INTO training_assignments (version_seq, input_id, cluster, distance) VALUES (?, ?, ?, ?)"


def pg(sql: str) -> str:
    return sql.replace("?", "%s")


def ids(job: TrainingJobRecord) -> tuple[str, str, str, str]:
    return (job.user_id, job.app_id, job.model_id, job.version_id)


def job_from_row(row: Mapping[str, Any]) -> TrainingJobRecord:
    return TrainingJobRecord(
        user_id=row["user_id"],
        app_id=row["app_id"],
        model_id=row["model_id"],
        version_id=row["version_id"],
        model_type_id=row["model_type_id"],
        created_at=row["created_at"],
        modified_at=row["modified_at"],
        params=json.loads(row["params"]),
        state=TrainingState(row["state"]),
        progress=row["progress"],
        reason=row["reason"],
        logs=row["logs"],
        metrics=json.loads(row["metrics"]),
        attempts=row["attempts"],
        owner=row["owner"],
        claimed_until=row["claimed_until"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def assignment_from_row(row: Mapping[str, Any]) -> ClusterAssignment:
    return ClusterAssignment(row["input_id"], int(row["cluster"]), float(row["distance"]))


SQLITE_TABLES = """
CREATE TABLE training_jobs (
    version_seq INTEGER PRIMARY KEY REFERENCES model_versions(seq) ON DELETE CASCADE,
    model_type_id TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    logs TEXT NOT NULL DEFAULT '',
    metrics TEXT NOT NULL DEFAULT '{}',
    attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT '',
    claimed_until REAL,
    created_at REAL NOT NULL,
    modified_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    artifact BLOB
);
CREATE INDEX training_jobs_waiting ON training_jobs(created_at) WHERE state IN ('queued', 'training');
CREATE TABLE training_assignments (
    seq INTEGER PRIMARY KEY,
    version_seq INTEGER NOT NULL REFERENCES training_jobs(version_seq) ON DELETE CASCADE,
    input_id TEXT NOT NULL,
    cluster INTEGER NOT NULL,
    distance REAL NOT NULL
);
CREATE UNIQUE INDEX training_assignments_by_input ON training_assignments(version_seq, input_id)
"""

POSTGRES_TABLES = """
CREATE TABLE training_jobs (
    version_seq BIGINT PRIMARY KEY REFERENCES model_versions(seq) ON DELETE CASCADE,
    model_type_id TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    logs TEXT NOT NULL DEFAULT '',
    metrics TEXT NOT NULL DEFAULT '{}',
    attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT '',
    claimed_until DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    modified_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    artifact BYTEA
);
CREATE INDEX training_jobs_waiting ON training_jobs (created_at) WHERE state IN ('queued', 'training');
CREATE TABLE training_assignments (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version_seq BIGINT NOT NULL REFERENCES training_jobs(version_seq) ON DELETE CASCADE,
    input_id TEXT NOT NULL,
    cluster INTEGER NOT NULL,
    distance DOUBLE PRECISION NOT NULL
);
CREATE UNIQUE INDEX training_assignments_by_input ON training_assignments (version_seq, input_id)
"""

# SQLite 18 / PostgreSQL 12: when each user's training job was last claimed (fair claims)
CLAIMS_TABLE = "CREATE TABLE training_claims (user_id TEXT PRIMARY KEY, claimed_at {real} NOT NULL)"
