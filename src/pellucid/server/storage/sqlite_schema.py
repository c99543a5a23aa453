"""SQLite schema migrations: storage/migrations.py applies each number a store lacks, lowest first."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from pellucid.server.records import AnnotationRecord
from pellucid.server.storage.module_rows import MODULE_TABLES
from pellucid.server.storage.rows import concepts_from, regions_from
from pellucid.server.storage.search_sql import UNINDEXED_STATES
from pellucid.server.storage.search_terms import annotation_rows, label_rows, term_rows
from pellucid.server.storage.sqlite_connections import insert_rows
from pellucid.server.storage.sqlite_data import DATA_SCHEMA
from pellucid.server.storage.sqlite_evaluations import MIGRATION as EVALUATIONS_MIGRATION
from pellucid.server.storage.training_sql import SQLITE_TABLES as TRAINING_TABLES

# a migration is a script (statements split at ';') or a function of the open transaction
MIGRATIONS: list[tuple[int, str | Callable[[sqlite3.Connection], None]]] = [
    (
        1,
        """
        CREATE TABLE users (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            is_admin INTEGER NOT NULL,
            metadata TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE tokens (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            kind TEXT NOT NULL,
            description TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            request_id TEXT,
            created_at REAL NOT NULL,
            expires_at REAL,
            revoked_at REAL
        );
        CREATE INDEX tokens_by_user ON tokens(user_id, kind, seq);
        CREATE UNIQUE INDEX tokens_by_request ON tokens(user_id, request_id) WHERE request_id IS NOT NULL;
        CREATE TABLE apps (
            seq INTEGER PRIMARY KEY,
            user_id TEXT NOT NULL,
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            description TEXT NOT NULL,
            base_workflow TEXT NOT NULL,
            metadata TEXT NOT NULL,
            created_at REAL NOT NULL,
            modified_at REAL NOT NULL,
            UNIQUE (user_id, id)
        );
        CREATE INDEX apps_by_user ON apps(user_id, seq);
        CREATE TABLE concepts (
            seq INTEGER PRIMARY KEY,
            app_seq INTEGER NOT NULL REFERENCES apps(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (app_seq, id)
        );
        CREATE INDEX concepts_by_app ON concepts(app_seq, seq);
        CREATE TABLE request_log (
            user_id TEXT NOT NULL,
            request_id TEXT NOT NULL,
            method TEXT NOT NULL,
            done INTEGER NOT NULL,
            response BLOB,
            updated_at REAL NOT NULL,
            PRIMARY KEY (user_id, request_id)
        );
        CREATE INDEX request_log_by_age ON request_log(updated_at);
        """,
    ),
]


MIGRATIONS.append(
    (
        2,
        """
        CREATE TABLE datasets (
            seq INTEGER PRIMARY KEY,
            app_seq INTEGER NOT NULL REFERENCES apps(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            description TEXT NOT NULL,
            metadata TEXT NOT NULL,
            created_at REAL NOT NULL,
            modified_at REAL NOT NULL,
            UNIQUE (app_seq, id)
        );
        CREATE TABLE inputs (
            seq INTEGER PRIMARY KEY,
            app_seq INTEGER NOT NULL REFERENCES apps(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            input_type TEXT NOT NULL,
            content_key TEXT NOT NULL,
            media_sha256 TEXT NOT NULL,
            media_size INTEGER NOT NULL,
            media_mime TEXT NOT NULL,
            media_url TEXT NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            text TEXT NOT NULL,
            text_url TEXT NOT NULL,
            metadata TEXT NOT NULL,
            geo_lon REAL,
            geo_lat REAL,
            labels TEXT NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (app_seq, id)
        );
        CREATE INDEX inputs_by_type ON inputs(app_seq, input_type, seq);
        CREATE TABLE dataset_inputs (
            dataset_seq INTEGER NOT NULL REFERENCES datasets(seq) ON DELETE CASCADE,
            input_seq INTEGER NOT NULL REFERENCES inputs(seq) ON DELETE CASCADE,
            PRIMARY KEY (dataset_seq, input_seq)
        ) WITHOUT ROWID;
        CREATE INDEX dataset_inputs_by_input ON dataset_inputs(input_seq);
        CREATE TABLE annotations (
            seq INTEGER PRIMARY KEY,
            input_seq INTEGER NOT NULL REFERENCES inputs(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            concepts TEXT NOT NULL,
            regions TEXT NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (input_seq, id)
        );
        CREATE TABLE dataset_versions (
            seq INTEGER PRIMARY KEY,
            dataset_seq INTEGER NOT NULL REFERENCES datasets(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            description TEXT NOT NULL,
            metadata TEXT NOT NULL,
            stats TEXT NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (dataset_seq, id)
        );
        CREATE TABLE dataset_version_inputs (
            version_seq INTEGER NOT NULL REFERENCES dataset_versions(seq) ON DELETE CASCADE,
            input_seq INTEGER NOT NULL,
            PRIMARY KEY (version_seq, input_seq)
        ) WITHOUT ROWID;
        CREATE TABLE input_jobs (
            seq INTEGER PRIMARY KEY,
            app_seq INTEGER NOT NULL REFERENCES apps(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            received INTEGER NOT NULL,
            stored INTEGER NOT NULL,
            duplicates INTEGER NOT NULL,
            failed INTEGER NOT NULL,
            created_at REAL NOT NULL,
            modified_at REAL NOT NULL,
            UNIQUE (app_seq, id)
        )
        """,
    )
)

MIGRATIONS.append(
    (
        3,
        """
        CREATE TABLE models (
            seq INTEGER PRIMARY KEY,
            app_seq INTEGER NOT NULL REFERENCES apps(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            description TEXT NOT NULL,
            model_type_id TEXT NOT NULL,
            input_fields TEXT NOT NULL,
            output_fields TEXT NOT NULL,
            created_at REAL NOT NULL,
            modified_at REAL NOT NULL,
            UNIQUE (app_seq, id)
        );
        CREATE TABLE model_versions (
            seq INTEGER PRIMARY KEY,
            model_seq INTEGER NOT NULL REFERENCES models(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            description TEXT NOT NULL,
            output_info TEXT NOT NULL,
            runner_labels TEXT NOT NULL,
            item_timeout_seconds INTEGER NOT NULL,
            metadata TEXT NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (model_seq, id)
        );
        CREATE TABLE runners (
            seq INTEGER PRIMARY KEY,
            user_id TEXT NOT NULL,
            id TEXT NOT NULL,
            labels TEXT NOT NULL,
            description TEXT NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (user_id, id)
        )
        """,
    )
)

MIGRATIONS.append((4, "ALTER TABLE request_log ADD COLUMN owner TEXT NOT NULL DEFAULT ''"))

# PATs minted before lifetimes were bounded (engine.users.PAT_MAX_TTL, 366 days) could expire
# past what a Timestamp holds, which failed every ListPats of their user: clamp them to the bound.
MIGRATIONS.append(
    (
        5,
        """
        UPDATE tokens SET expires_at = created_at + 31622400
        WHERE kind = 'pat' AND expires_at IS NOT NULL AND expires_at > created_at + 31622400
        """,
    )
)
# 6: which inputs hold a blob, for blob garbage collection (media inputs only: text ones hold none)
MIGRATIONS.append((6, "CREATE INDEX inputs_by_media ON inputs(media_sha256) WHERE media_sha256 != ''"))
# 7: replicas (server processes sharing the store) heartbeat; a claim records its replica, so a
# starting replica releases the claims of gone replicas only (never those of live ones)
MIGRATIONS.append(
    (
        7,
        """
        CREATE TABLE replicas (id TEXT PRIMARY KEY, heartbeat_at REAL NOT NULL);
        ALTER TABLE request_log ADD COLUMN replica TEXT NOT NULL DEFAULT ''
        """,
    )
)


def _search_indexes(conn: sqlite3.Connection) -> None:
    """8 (search, issue #10): each input's index state, and the tables and indexes that filter inputs
    by concept, metadata, state and geo point without reading every row; existing inputs are
    READY and their concepts and metadata terms are filled in from their rows."""
    for statement in (
        "ALTER TABLE inputs ADD COLUMN index_state INTEGER NOT NULL DEFAULT 30000",
        "ALTER TABLE inputs ADD COLUMN index_message TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE inputs ADD COLUMN index_claimed_until REAL",
        "CREATE INDEX inputs_by_state ON inputs(app_seq, index_state, seq)",
        "CREATE INDEX inputs_unindexed ON inputs(seq, index_state, index_claimed_until)"
        f" WHERE index_state IN {UNINDEXED_STATES}",
        "CREATE INDEX inputs_by_geo ON inputs(app_seq, geo_lat, geo_lon) WHERE geo_lat IS NOT NULL",
        """CREATE TABLE input_concepts (
            app_seq INTEGER NOT NULL,
            concept_id TEXT NOT NULL,
            value REAL NOT NULL,
            input_seq INTEGER NOT NULL REFERENCES inputs(seq) ON DELETE CASCADE,
            annotation_seq INTEGER REFERENCES annotations(seq) ON DELETE CASCADE
        )""",
        "CREATE INDEX input_concepts_by_concept ON input_concepts(app_seq, concept_id, value, input_seq)",
        "CREATE INDEX input_concepts_by_input ON input_concepts(input_seq)",
        "CREATE INDEX input_concepts_by_annotation ON input_concepts(annotation_seq) WHERE annotation_seq IS NOT NULL",
        """CREATE TABLE input_terms (
            app_seq INTEGER NOT NULL,
            term TEXT NOT NULL,
            input_seq INTEGER NOT NULL REFERENCES inputs(seq) ON DELETE CASCADE,
            PRIMARY KEY (app_seq, term, input_seq)
        ) WITHOUT ROWID""",
        "CREATE INDEX input_terms_by_input ON input_terms(input_seq)",
    ):
        conn.execute(statement)
    rows = conn.execute("SELECT seq, app_seq, labels, metadata FROM inputs WHERE labels != '[]' OR metadata != '{}'")
    for seq, app_seq, labels, metadata in rows.fetchall():
        insert_rows(conn, CONCEPT_INSERT, label_rows(app_seq, seq, concepts_from(json.loads(labels))))
        insert_rows(conn, TERM_INSERT, term_rows(app_seq, seq, json.loads(metadata)), "ON CONFLICT DO NOTHING")
    annotations = conn.execute(
        "SELECT a.seq, a.input_seq, i.app_seq, a.concepts, a.regions FROM annotations a JOIN inputs i ON i.seq = a.input_seq"
    )
    for seq, input_seq, app_seq, concepts, regions in annotations.fetchall():
        record = AnnotationRecord(
            input_id="",
            id="",
            created_at=0,
            concepts=concepts_from(json.loads(concepts)),
            regions=regions_from(regions),
        )
        insert_rows(conn, CONCEPT_INSERT, annotation_rows(app_seq, input_seq, seq, record))


CONCEPT_INSERT = "INSERT INTO input_concepts (app_seq, concept_id, value, input_seq, annotation_seq)"
TERM_INSERT = "INSERT INTO input_terms (app_seq, term, input_seq)"
MIGRATIONS.append((8, _search_indexes))

# 10: modules, their versions (where the code is: git or an entry point), and which version
# each app has installed (one per module and app). 9 is another part of issue #11's.
MIGRATIONS.append((10, MODULE_TABLES.format(seq="INTEGER PRIMARY KEY", ref="INTEGER", real="REAL")))

# 14 (algorithms, issue #12): published algorithms, their version tags, calls and insights
from pellucid.server.storage.algorithm_rows import SQLITE_SCHEMA as _ALGORITHM_TABLES  # noqa: E402

MIGRATIONS.append((14, ";\n".join(_ALGORITHM_TABLES)))
# 11: training jobs (issue #11): one per trained model version, claimed by server workers with a
# lease; the trained weights, and a clusterer's cluster of each training input

MIGRATIONS.append((11, TRAINING_TABLES))
# 9: workflows, their immutable versions (nodes as JSON), and one pin per node naming the model
# version it runs: deleting that model version records why on the pin (the version is deprecated)
MIGRATIONS.append(
    (
        9,
        """
        CREATE TABLE workflows (
            seq INTEGER PRIMARY KEY,
            app_seq INTEGER NOT NULL REFERENCES apps(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            description TEXT NOT NULL,
            metadata TEXT NOT NULL,
            created_at REAL NOT NULL,
            modified_at REAL NOT NULL,
            UNIQUE (app_seq, id)
        );
        CREATE TABLE workflow_versions (
            seq INTEGER PRIMARY KEY,
            workflow_seq INTEGER NOT NULL REFERENCES workflows(seq) ON DELETE CASCADE,
            id TEXT NOT NULL,
            description TEXT NOT NULL,
            nodes TEXT NOT NULL,
            metadata TEXT NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (workflow_seq, id)
        );
        CREATE TABLE workflow_pins (
            version_seq INTEGER NOT NULL REFERENCES workflow_versions(seq) ON DELETE CASCADE,
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

# 12 (issue #11): evaluations and their per-input results (sqlite_evaluations.py holds the script)
MIGRATIONS.append((12, EVALUATIONS_MIGRATION))

# 15 (deployments, issue #13): the features a model declares it reads and writes, as JSON
MIGRATIONS.append((15, "ALTER TABLE models ADD COLUMN feature_specs TEXT NOT NULL DEFAULT '{}'"))
LATEST_VERSION = max(version for version, _ in MIGRATIONS)
# 13 (hosted data, issue #12): data:// directories and files (server/storage/sqlite_data.py)
MIGRATIONS.append((13, DATA_SCHEMA))

# 16 (deployments, issue #13): deployments and their tokens (storage/deployment_rows.py)
from pellucid.server.storage.deployment_rows import SQLITE_SCHEMA as _DEPLOYMENT_TABLES  # noqa: E402

MIGRATIONS.append((16, ";\n".join(_DEPLOYMENT_TABLES)))
LATEST_VERSION = max(version for version, _ in MIGRATIONS)

# 18 (review of issues #11/#12): when each user's training job was last claimed (claims take
# turns between users), and the indexes of algorithm calls' retention and per-call insight count
from pellucid.server.storage.algorithm_rows import RETENTION_INDEXES as _ALGORITHM_RETENTION  # noqa: E402
from pellucid.server.storage.training_sql import CLAIMS_TABLE as _TRAINING_CLAIMS  # noqa: E402

MIGRATIONS.append((18, ";\n".join([_TRAINING_CLAIMS.format(real="REAL"), *_ALGORITHM_RETENTION])))
LATEST_VERSION = max(version for version, _ in MIGRATIONS)

# 19: inputs' seqs are never reused (AUTOINCREMENT), as they key vectors, dataset version snapshots,
# evaluation items and cursors outside the row: a table rebuild (storage/sqlite_rebuild.py)
from pellucid.server.storage.sqlite_rebuild import never_reuse_input_seqs  # noqa: E402

MIGRATIONS.append((19, never_reuse_input_seqs))

# 20: the hashes of deleted deployments' tokens (a call with one hears its deployment was deleted)
from pellucid.server.storage.deployment_rows import DELETED_TOKENS_TABLE as _DELETED_TOKENS  # noqa: E402

MIGRATIONS.append((20, _DELETED_TOKENS.format(seq="INTEGER PRIMARY KEY AUTOINCREMENT")))
LATEST_VERSION = max(version for version, _ in MIGRATIONS)
