"""PostgreSQL schema migrations, applied under an advisory lock (storage/migrations.py: each number a
store lacks, lowest first); `schema_version` records each one. Numbered on their own (not SQLite's)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg

from pellucid.server.records import AnnotationRecord
from pellucid.server.storage.module_rows import MODULE_TABLES
from pellucid.server.storage.postgres_data import DATA_SCHEMA
from pellucid.server.storage.postgres_evaluations import MIGRATION as EVALUATIONS_MIGRATION
from pellucid.server.storage.rows import concepts_from, regions_from
from pellucid.server.storage.search_sql import UNINDEXED_STATES
from pellucid.server.storage.search_terms import annotation_rows, label_rows
from pellucid.server.storage.training_sql import POSTGRES_TABLES as TRAINING_TABLES

# Version 1 is the schema SQLite reached at its version 7, in PostgreSQL's types.
# a migration is a script (statements split at ';') or a function of the open transaction
MIGRATIONS: list[tuple[int, str | Callable[[psycopg.Connection[Any]], None]]] = [
    (
        1,
        """
        CREATE TABLE users (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            is_admin BOOLEAN NOT NULL,
            metadata TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        );
        CREATE TABLE tokens (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            description TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            request_id TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION,
            revoked_at DOUBLE PRECISION
        );
        CREATE INDEX tokens_by_user ON tokens (user_id, kind, seq);
        CREATE UNIQUE INDEX tokens_by_request ON tokens (user_id, request_id) WHERE request_id IS NOT NULL;
        CREATE TABLE apps (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id TEXT NOT NULL,
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            description TEXT NOT NULL,
            base_workflow TEXT NOT NULL,
            metadata TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            modified_at DOUBLE PRECISION NOT NULL,
            UNIQUE (user_id, id)
        );
        CREATE INDEX apps_by_user ON apps (user_id, seq);
        CREATE TABLE concepts (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            app_seq BIGINT NOT NULL REFERENCES apps(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            UNIQUE (app_seq, id)
        );
        CREATE INDEX concepts_by_app ON concepts (app_seq, seq);
        CREATE TABLE request_log (
            user_id TEXT NOT NULL,
            request_id TEXT NOT NULL,
            method TEXT NOT NULL,
            done BOOLEAN NOT NULL,
            response BYTEA,
            updated_at DOUBLE PRECISION NOT NULL,
            owner TEXT NOT NULL DEFAULT '',
            replica TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (user_id, request_id)
        );
        CREATE INDEX request_log_by_age ON request_log (updated_at);
        CREATE INDEX request_log_unfinished ON request_log (replica) WHERE NOT done;
        CREATE TABLE replicas (
            id TEXT PRIMARY KEY,
            heartbeat_at DOUBLE PRECISION NOT NULL
        );
        CREATE TABLE datasets (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            app_seq BIGINT NOT NULL REFERENCES apps(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            description TEXT NOT NULL,
            metadata TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            modified_at DOUBLE PRECISION NOT NULL,
            UNIQUE (app_seq, id)
        );
        CREATE TABLE inputs (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            app_seq BIGINT NOT NULL REFERENCES apps(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            input_type TEXT NOT NULL,
            content_key TEXT NOT NULL,
            media_sha256 TEXT NOT NULL,
            media_size BIGINT NOT NULL,
            media_mime TEXT NOT NULL,
            media_url TEXT NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            text TEXT NOT NULL,
            text_url TEXT NOT NULL,
            metadata TEXT NOT NULL,
            geo_lon DOUBLE PRECISION,
            geo_lat DOUBLE PRECISION,
            labels TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            UNIQUE (app_seq, id)
        );
        CREATE INDEX inputs_by_type ON inputs (app_seq, input_type, seq);
        CREATE INDEX inputs_by_media ON inputs (media_sha256) WHERE media_sha256 <> '';
        CREATE TABLE dataset_inputs (
            dataset_seq BIGINT NOT NULL REFERENCES datasets(seq) ON DELETE CASCADE,
            input_seq BIGINT NOT NULL REFERENCES inputs(seq) ON DELETE CASCADE,
            PRIMARY KEY (dataset_seq, input_seq)
        );
        CREATE INDEX dataset_inputs_by_input ON dataset_inputs (input_seq);
        CREATE TABLE annotations (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            input_seq BIGINT NOT NULL REFERENCES inputs(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            concepts TEXT NOT NULL,
            regions TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            UNIQUE (input_seq, id)
        );
        CREATE TABLE dataset_versions (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            dataset_seq BIGINT NOT NULL REFERENCES datasets(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            description TEXT NOT NULL,
            metadata TEXT NOT NULL,
            stats TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            UNIQUE (dataset_seq, id)
        );
        CREATE TABLE dataset_version_inputs (
            version_seq BIGINT NOT NULL REFERENCES dataset_versions(seq) ON DELETE CASCADE,
            input_seq BIGINT NOT NULL,
            PRIMARY KEY (version_seq, input_seq)
        );
        CREATE TABLE input_jobs (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            app_seq BIGINT NOT NULL REFERENCES apps(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            received BIGINT NOT NULL,
            stored BIGINT NOT NULL,
            duplicates BIGINT NOT NULL,
            failed BIGINT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            modified_at DOUBLE PRECISION NOT NULL,
            UNIQUE (app_seq, id)
        );
        CREATE TABLE models (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            app_seq BIGINT NOT NULL REFERENCES apps(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            description TEXT NOT NULL,
            model_type_id TEXT NOT NULL,
            input_fields TEXT NOT NULL,
            output_fields TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            modified_at DOUBLE PRECISION NOT NULL,
            UNIQUE (app_seq, id)
        );
        CREATE TABLE model_versions (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            model_seq BIGINT NOT NULL REFERENCES models(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            description TEXT NOT NULL,
            output_info TEXT NOT NULL,
            runner_labels TEXT NOT NULL,
            item_timeout_seconds INTEGER NOT NULL,
            metadata TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            UNIQUE (model_seq, id)
        );
        CREATE TABLE runners (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id TEXT NOT NULL,
            id TEXT NOT NULL,
            labels TEXT NOT NULL,
            description TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            UNIQUE (user_id, id)
        )
        """,
    ),
]


# rows of input_concepts, sent as arrays (one statement per batch)
CONCEPT_INSERT = (
    "INSERT INTO input_concepts (app_seq, concept_id, value, input_seq, annotation_seq) SELECT * FROM"
    " unnest(%s::bigint[], %s::text[], %s::double precision[], %s::bigint[], %s::bigint[])"
)


def insert_concepts(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
    if rows:
        conn.execute(CONCEPT_INSERT, [list(column) for column in zip(*rows)])


def _search_indexes(conn: psycopg.Connection[Any]) -> None:
    """2 (search, issue #10; SQLite's 8): each input's index state; metadata becomes JSONB with a GIN
    index (containment by `@>`); the concept table and the indexes that filter inputs by concept,
    state and geo point without reading every row. Existing inputs are READY, their concepts
    filled in from their labels and annotations."""
    for statement in (
        "ALTER TABLE inputs ADD COLUMN index_state INTEGER NOT NULL DEFAULT 30000,"
        " ADD COLUMN index_message TEXT NOT NULL DEFAULT '', ADD COLUMN index_claimed_until DOUBLE PRECISION,"
        " ALTER COLUMN metadata TYPE jsonb USING metadata::jsonb",
        "CREATE INDEX inputs_by_metadata ON inputs USING gin (metadata jsonb_path_ops)",
        "CREATE INDEX inputs_by_state ON inputs (app_seq, index_state, seq)",
        f"CREATE INDEX inputs_unindexed ON inputs (seq) WHERE index_state IN {UNINDEXED_STATES}",
        "CREATE INDEX inputs_by_geo ON inputs (app_seq, geo_lat, geo_lon) WHERE geo_lat IS NOT NULL",
        """CREATE TABLE input_concepts (
            app_seq BIGINT NOT NULL,
            concept_id TEXT NOT NULL,
            value DOUBLE PRECISION NOT NULL,
            input_seq BIGINT NOT NULL REFERENCES inputs(seq) ON DELETE CASCADE,
            annotation_seq BIGINT REFERENCES annotations(seq) ON DELETE CASCADE
        )""",
        "CREATE INDEX input_concepts_by_concept ON input_concepts (app_seq, concept_id, value, input_seq)",
        "CREATE INDEX input_concepts_by_input ON input_concepts (input_seq)",
        "CREATE INDEX input_concepts_by_annotation ON input_concepts (annotation_seq) WHERE annotation_seq IS NOT NULL",
    ):
        conn.execute(statement.encode())
    rows: list[tuple[Any, ...]] = []
    for row in conn.execute("SELECT seq, app_seq, labels FROM inputs WHERE labels <> '[]'").fetchall():
        rows += label_rows(row["app_seq"], row["seq"], concepts_from(json.loads(row["labels"])))
    for row in conn.execute(
        "SELECT a.seq AS seq, a.input_seq AS input_seq, i.app_seq AS app_seq, a.concepts AS concepts,"
        " a.regions AS regions FROM annotations a JOIN inputs i ON i.seq = a.input_seq"
    ).fetchall():
        record = AnnotationRecord(
            input_id="",
            id="",
            created_at=0,
            concepts=concepts_from(json.loads(row["concepts"])),
            regions=regions_from(row["regions"]),
        )
        rows += annotation_rows(row["app_seq"], row["input_seq"], row["seq"], record)
    insert_concepts(conn, rows)


MIGRATIONS.append((2, _search_indexes))

# 4: modules, their versions and which version each app has installed (as SQLite's 10; 3 is
# another part of issue #11's)
MIGRATIONS.append(
    (
        4,
        MODULE_TABLES.format(
            seq="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", ref="BIGINT", real="DOUBLE PRECISION"
        ),
    )
)

# 8 (algorithms, issue #12): published algorithms, their version tags, calls and insights
from pellucid.server.storage.algorithm_rows import POSTGRES_SCHEMA as _ALGORITHM_TABLES  # noqa: E402

MIGRATIONS.append((8, ";\n".join(_ALGORITHM_TABLES)))
# 5 (SQLite's 11): training jobs (issue #11), see storage/training_sql.py

MIGRATIONS.append((5, TRAINING_TABLES))
# 3: workflows, their immutable versions (nodes as JSON), and one pin per node naming the model
# version it runs: deleting that model version records why on the pin (the version is deprecated)
MIGRATIONS.append(
    (
        3,
        """
        CREATE TABLE workflows (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            app_seq BIGINT NOT NULL REFERENCES apps(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            description TEXT NOT NULL,
            metadata TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            modified_at DOUBLE PRECISION NOT NULL,
            UNIQUE (app_seq, id)
        );
        CREATE TABLE workflow_versions (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            workflow_seq BIGINT NOT NULL REFERENCES workflows(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            description TEXT NOT NULL,
            nodes TEXT NOT NULL,
            metadata TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            UNIQUE (workflow_seq, id)
        );
        CREATE TABLE workflow_pins (
            pin_seq BIGINT GENERATED ALWAYS AS IDENTITY,
            version_seq BIGINT NOT NULL REFERENCES workflow_versions(seq) ON DELETE CASCADE,
            node_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            app_id TEXT NOT NULL,
            model_id TEXT NOT NULL,
            model_version_id TEXT NOT NULL,
            deleted_reason TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (version_seq, node_id)
        );
        CREATE INDEX workflow_pins_by_model ON workflow_pins(user_id, app_id, model_id, model_version_id)
        """,
    )
)

# 6 (issue #11; SQLite's 12): evaluations and their per-input results (postgres_evaluations.py holds the script)
MIGRATIONS.append((6, EVALUATIONS_MIGRATION))

# 9 (SQLite's 15; deployments, issue #13): the features a model declares it reads and writes
MIGRATIONS.append((9, "ALTER TABLE models ADD COLUMN feature_specs TEXT NOT NULL DEFAULT '{}'"))
LATEST_VERSION = max(version for version, _ in MIGRATIONS)
# 7 (hosted data, issue #12; SQLite's 13): data:// directories and files (server/storage/postgres_data.py)
MIGRATIONS.append((7, DATA_SCHEMA))

# 10 (SQLite's 16; deployments, issue #13): deployments and their tokens
from pellucid.server.storage.deployment_rows import POSTGRES_SCHEMA as _DEPLOYMENT_TABLES  # noqa: E402

MIGRATIONS.append((10, ";\n".join(_DEPLOYMENT_TABLES)))
LATEST_VERSION = max(version for version, _ in MIGRATIONS)

# 12 (SQLite's 18; review of issues #11/#12): when each user's training job was last claimed,
# and the indexes of algorithm calls' retention and per-call insight count
from pellucid.server.storage.algorithm_rows import RETENTION_INDEXES as _ALGORITHM_RETENTION  # noqa: E402
from pellucid.server.storage.training_sql import CLAIMS_TABLE as _TRAINING_CLAIMS  # noqa: E402

MIGRATIONS.append((12, ";\n".join([_TRAINING_CLAIMS.format(real="DOUBLE PRECISION"), *_ALGORITHM_RETENTION])))
LATEST_VERSION = max(version for version, _ in MIGRATIONS)

# 13 (SQLite's 20): the hashes of deleted deployments' tokens
from pellucid.server.storage.deployment_rows import DELETED_TOKENS_TABLE as _DELETED_TOKENS  # noqa: E402

MIGRATIONS.append((13, _DELETED_TOKENS.format(seq="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")))
LATEST_VERSION = max(version for version, _ in MIGRATIONS)
