"""PostgreSQL schema migrations, applied in order on open under an advisory lock;
`schema_version` records each one. Numbered on their own (not SQLite's numbers)."""

from __future__ import annotations

# Version 1 is the schema SQLite reached at its version 7, in PostgreSQL's types.
MIGRATIONS: list[tuple[int, str]] = [
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

LATEST_VERSION = MIGRATIONS[-1][0]
