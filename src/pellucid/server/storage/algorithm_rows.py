"""Rows of the algorithm tables <-> records, for both SQL backends (their SQL differs only in placeholders)."""

from __future__ import annotations

import json
from typing import Any

from pellucid.server.records import AlgorithmCallRecord, AlgorithmRecord, AlgorithmTagRecord, InsightRecord

# an algorithm belongs to its model, a tag to its model version: deleting them (or the app)
# deletes the algorithm or the tag (foreign keys), so a re-created model starts unpublished
ALGORITHM_SELECT = (
    "SELECT al.seq AS seq, al.user_id AS user_id, al.name AS name, a.id AS app_id, m.id AS model_id,"
    " al.public AS public, al.created_at AS created_at, al.modified_at AS modified_at"
    " FROM algorithms al JOIN models m ON m.seq = al.model_seq JOIN apps a ON a.seq = m.app_seq"
    " WHERE al.user_id = {p}"
)
SAVE_ALGORITHM = (
    "INSERT INTO algorithms (user_id, name, model_seq, public, created_at, modified_at)"
    " SELECT {p}, {p}, m.seq, {p}, {p}, {p} FROM models m JOIN apps a ON a.seq = m.app_seq"
    " WHERE a.user_id = {p} AND a.id = {p} AND m.id = {p}"
    " ON CONFLICT (user_id, name) DO UPDATE SET"
    " model_seq = excluded.model_seq, public = excluded.public, modified_at = excluded.modified_at"
)
INSERT_TAG = (
    "INSERT INTO algorithm_tags (algorithm_seq, tag, version_seq, created_at)"
    " SELECT al.seq, {p}, v.seq, {p} FROM algorithms al JOIN model_versions v ON v.model_seq = al.model_seq"
    " WHERE al.user_id = {p} AND al.name = {p} AND v.id = {p}"
)
TAG_SELECT = (
    "SELECT al.user_id AS user_id, al.name AS name, t.tag AS tag, v.id AS version_id, t.created_at AS created_at"
    " FROM algorithm_tags t JOIN algorithms al ON al.seq = t.algorithm_seq JOIN model_versions v ON v.seq = t.version_seq"
    " WHERE al.user_id = {p} AND al.name = {p} ORDER BY t.created_at, t.tag"
)
INSERT_CALL = (
    "INSERT INTO algorithm_calls (id, algorithm_seq, version_id, caller, created_at)"
    " SELECT {p}, seq, {p}, {p}, {p} FROM algorithms WHERE user_id = {p} AND name = {p}"
)
CALL_SELECT = (
    "SELECT c.id AS id, al.user_id AS user_id, al.name AS name, c.version_id AS version_id, c.caller AS caller,"
    " c.created_at AS created_at FROM algorithm_calls c JOIN algorithms al ON al.seq = c.algorithm_seq"
    " WHERE c.id = {p}"
)
INSERT_INSIGHTS = (
    "INSERT INTO algorithm_insights (algorithm_seq, call_id, version_id, reported_by, insights, created_at)"
    " SELECT seq, {p}, {p}, {p}, {p}, {p} FROM algorithms WHERE user_id = {p} AND name = {p}"
)
INSIGHT_SELECT = (
    "SELECT i.seq AS seq, al.user_id AS user_id, al.name AS name, i.call_id AS call_id, i.version_id AS version_id,"
    " i.reported_by AS reported_by, i.insights AS insights, i.created_at AS created_at"
    " FROM algorithm_insights i JOIN algorithms al ON al.seq = i.algorithm_seq"
    " WHERE al.user_id = {p} AND al.name = {p}"
)


# calls older than the retention go (Algorithms.call purges now and then); their insights stay
PURGE_CALLS = "DELETE FROM algorithm_calls WHERE created_at < {p}"
COUNT_CALL_INSIGHTS = "SELECT COUNT(*) AS n FROM algorithm_insights WHERE call_id = {p}"
# PostgreSQL: concurrent reports on one call take turns (counted then inserted in one transaction);
# SQLite's writes are serial already
LOCK_CALL_INSIGHTS = "SELECT pg_advisory_xact_lock(hashtext('pellucid insights ' || {p}))"
# SQLite 18 / PostgreSQL 12: the indexes of the purge and of the per-call count of insight reports
RETENTION_INDEXES = [
    "CREATE INDEX algorithm_calls_by_time ON algorithm_calls (created_at)",
    "CREATE INDEX algorithm_insights_by_call ON algorithm_insights (call_id)",
]


def sql(template: str, placeholder: str) -> str:
    return template.replace("{p}", placeholder)


def algorithm_params(a: AlgorithmRecord) -> tuple[Any, ...]:
    return (a.user_id, a.name, a.public, a.created_at, a.modified_at, a.user_id, a.app_id, a.model_id)


def algorithm_from_row(row: Any) -> AlgorithmRecord:
    return AlgorithmRecord(
        user_id=row["user_id"],
        name=row["name"],
        app_id=row["app_id"],
        model_id=row["model_id"],
        public=bool(row["public"]),
        created_at=row["created_at"],
        modified_at=row["modified_at"],
    )


def tag_from_row(row: Any) -> AlgorithmTagRecord:
    return AlgorithmTagRecord(row["user_id"], row["name"], row["tag"], row["version_id"], row["created_at"])


def call_from_row(row: Any) -> AlgorithmCallRecord:
    return AlgorithmCallRecord(
        row["id"], row["user_id"], row["name"], row["version_id"], row["caller"], row["created_at"]
    )


def insight_params(i: InsightRecord) -> tuple[Any, ...]:
    return (i.call_id, i.version_id, i.reported_by, json.dumps(i.values), i.created_at, i.user_id, i.name)


def insight_from_row(row: Any) -> InsightRecord:
    return InsightRecord(
        user_id=row["user_id"],
        name=row["name"],
        call_id=row["call_id"],
        version_id=row["version_id"],
        reported_by=row["reported_by"],
        values=json.loads(row["insights"]),
        created_at=row["created_at"],
    )


def schema(seq: str, real: str, boolean: str) -> list[str]:
    """The tables, in either backend's column types."""
    return [
        f"""CREATE TABLE algorithms (
            seq {seq},
            user_id TEXT NOT NULL,
            name TEXT NOT NULL,
            model_seq BIGINT NOT NULL REFERENCES models(seq) ON DELETE CASCADE,
            public {boolean} NOT NULL,
            created_at {real} NOT NULL,
            modified_at {real} NOT NULL,
            UNIQUE (user_id, name)
        )""",
        "CREATE INDEX algorithms_by_user ON algorithms (user_id, seq)",
        f"""CREATE TABLE algorithm_tags (
            algorithm_seq BIGINT NOT NULL REFERENCES algorithms(seq) ON DELETE CASCADE,
            tag TEXT NOT NULL,
            version_seq BIGINT NOT NULL REFERENCES model_versions(seq) ON DELETE CASCADE,
            created_at {real} NOT NULL,
            PRIMARY KEY (algorithm_seq, tag)
        )""",
        f"""CREATE TABLE algorithm_calls (
            id TEXT PRIMARY KEY,
            algorithm_seq BIGINT NOT NULL REFERENCES algorithms(seq) ON DELETE CASCADE,
            version_id TEXT NOT NULL,
            caller TEXT NOT NULL,
            created_at {real} NOT NULL
        )""",
        f"""CREATE TABLE algorithm_insights (
            seq {seq},
            algorithm_seq BIGINT NOT NULL REFERENCES algorithms(seq) ON DELETE CASCADE,
            call_id TEXT NOT NULL,
            version_id TEXT NOT NULL,
            reported_by TEXT NOT NULL,
            insights TEXT NOT NULL,
            created_at {real} NOT NULL
        )""",
        "CREATE INDEX algorithm_insights_by_algorithm ON algorithm_insights (algorithm_seq, seq)",
        "CREATE INDEX algorithm_calls_by_algorithm ON algorithm_calls (algorithm_seq)",
        "CREATE INDEX algorithms_by_model ON algorithms (model_seq)",
        "CREATE INDEX algorithm_tags_by_version ON algorithm_tags (version_seq)",
    ]


SQLITE_SCHEMA = schema("INTEGER PRIMARY KEY", "REAL", "INTEGER")
POSTGRES_SCHEMA = schema("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "DOUBLE PRECISION", "BOOLEAN")
