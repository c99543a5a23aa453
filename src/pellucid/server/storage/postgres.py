"""MetadataStore on PostgreSQL: pooled connections (psycopg 3), migrations on open, keyset pages.

Replicas of the server share one database: every write is a transaction of its own (or a
savepoint of the caller's unit of work), ids are unique by constraint rather than by a
check-then-insert, and the request log's claims are taken with row locks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from pellucid.server.records import (
    AppRecord,
    ConceptRecord,
    ModelRecord,
    ModelVersionRecord,
    Page,
    PageQuery,
    RunnerRecord,
    TokenRecord,
    UserRecord,
)
from pellucid.server.storage.base import Claim, ClaimOutcome, Conflict, MetadataStore, StoreUnavailable
from pellucid.server.storage.migrations import pending_migrations
from pellucid.server.storage.postgres_algorithms import PostgresAlgorithmTables
from pellucid.server.storage.postgres_connections import PoolConnections
from pellucid.server.storage.postgres_data import PostgresDataTables
from pellucid.server.storage.postgres_deployments import PostgresDeploymentTables
from pellucid.server.storage.postgres_evaluations import PostgresEvaluationTables
from pellucid.server.storage.postgres_inputs import PostgresInputTables
from pellucid.server.storage.postgres_modules import PostgresModuleTables
from pellucid.server.storage.postgres_schema import MIGRATIONS
from pellucid.server.storage.postgres_search import PostgresSearchTables
from pellucid.server.storage.postgres_training import PostgresTrainingTables
from pellucid.server.storage.postgres_workflows import PostgresWorkflowTables
from pellucid.server.storage.rows import (
    TOKEN_USER_COLUMNS,
    app_from_row,
    concept_from_row,
    feature_specs_json,
    model_from_row,
    model_version_from_row,
    output_info_json,
    runner_from_row,
    token_and_user_from_row,
    token_from_row,
    user_from_row,
)

T = TypeVar("T")

# pg_advisory_xact_lock key of the migrations: replicas starting at once migrate one at a time
MIGRATION_LOCK = 0x70656C6C  # "pell"


class PostgresMetadataStore(
    PostgresInputTables,
    PostgresSearchTables,
    PostgresModuleTables,
    PostgresAlgorithmTables,
    PostgresTrainingTables,
    PostgresWorkflowTables,
    PostgresEvaluationTables,
    PostgresDataTables,
    PostgresDeploymentTables,
    MetadataStore,
):
    def __init__(self, uri: str) -> None:
        self._connections = PoolConnections(uri)
        try:
            self._migrate()
        except BaseException:
            self._connections.close()
            raise

    def _migrate(self) -> None:
        with self._write() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
            )
            applied = {row["version"] for row in conn.execute("SELECT version FROM schema_version")}
            for version, script in pending_migrations(MIGRATIONS, applied, self._connections.description):
                if callable(script):
                    script(conn)
                else:
                    for statement in filter(str.strip, script.split(";")):
                        conn.execute(statement.encode())  # bytes: a migration has no parameters
                conn.execute("INSERT INTO schema_version VALUES (%s, %s)", (version, time.time()))

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._connections.read() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection[Any]]:
        """A write transaction; a unique or foreign key violation is a Conflict."""
        try:
            with self._connections.write() as conn:
                yield conn
        except psycopg.errors.IntegrityError as exc:
            raise Conflict(str(exc).strip()) from None
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        """A lost or refused connection: the pool replaces it, and the caller may retry."""
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreUnavailable(f"PostgreSQL at {self._connections.description} is unavailable: {reason}")

    def schema_version(self) -> int:
        with self._read() as conn:
            row = conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
            return int(row["v"]) if row else 0

    def check(self) -> None:
        try:
            self._connections.probe()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc

    def close(self) -> None:
        self._connections.close()

    def unit_of_work(self) -> AbstractContextManager[None]:
        return self._unit_of_work()

    @contextmanager
    def _unit_of_work(self) -> Iterator[None]:
        """The connections' unit, with a connection lost at its commit (or rollback) reported as
        StoreUnavailable like any other call's."""
        try:
            with self._connections.unit_of_work():
                yield
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc

    def _page(
        self,
        sql: str,
        params: tuple[Any, ...],
        query: PageQuery,
        to_record: Callable[[dict[str, Any]], T],
        seq: str = "seq",
    ) -> Page[T]:
        """`sql` (a SELECT of `seq`, ending in its WHERE clause) as one keyset page."""
        if query.after is not None:
            sql, params = f"{sql} AND {seq} > %s", (*params, query.after)
        sql += f" ORDER BY {seq} LIMIT %s OFFSET %s"
        with self._read() as conn:
            rows = conn.execute(sql, (*params, query.limit + 1, query.offset)).fetchall()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        return Page([to_record(r) for r in rows], rows[-1]["seq"] if more else None)

    # users

    def insert_user(self, user: UserRecord, first_token: TokenRecord | None = None) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO users (id, is_admin, metadata, created_at) VALUES (%s, %s, %s, %s)",
                (user.id, user.is_admin, json.dumps(user.metadata), user.created_at),
            )
            if first_token is not None:
                self._insert_token(conn, first_token)

    def get_user(self, user_id: str) -> UserRecord | None:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM users WHERE id = %s", (user_id,)).fetchone()
        return user_from_row(row) if row else None

    def list_users(self, query: PageQuery) -> Page[UserRecord]:
        return self._page("SELECT * FROM users WHERE TRUE", (), query, user_from_row)

    def count_users(self) -> int:
        with self._read() as conn:
            row = conn.execute("SELECT COUNT(*) AS n FROM users").fetchone()
        return int(row["n"]) if row else 0

    # tokens

    @staticmethod
    def _insert_token(conn: psycopg.Connection[Any], t: TokenRecord) -> None:
        conn.execute(
            "INSERT INTO tokens (id, user_id, kind, description, token_hash, request_id, created_at, expires_at,"
            " revoked_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                t.id,
                t.user_id,
                t.kind,
                t.description,
                t.token_hash,
                t.request_id,
                t.created_at,
                t.expires_at,
                t.revoked_at,
            ),
        )

    def insert_token(self, token: TokenRecord) -> None:
        with self._write() as conn:
            self._insert_token(conn, token)

    def _token_where(self, where: str, params: tuple[Any, ...]) -> TokenRecord | None:
        with self._read() as conn:
            row = conn.execute(f"SELECT * FROM tokens WHERE {where}", params).fetchone()
        return token_from_row(row) if row else None

    def get_token(self, user_id: str, token_id: str) -> TokenRecord | None:
        return self._token_where("user_id = %s AND id = %s", (user_id, token_id))

    def get_token_with_user(self, token_hash: str) -> tuple[TokenRecord, UserRecord] | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {TOKEN_USER_COLUMNS} FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = %s",
                (token_hash,),
            ).fetchone()
        return token_and_user_from_row(row) if row else None

    def get_token_by_request(self, user_id: str, request_id: str) -> TokenRecord | None:
        return self._token_where("user_id = %s AND request_id = %s", (user_id, request_id))

    def list_tokens(
        self, user_id: str, kind: str, include_inactive: bool, now: float, query: PageQuery
    ) -> Page[TokenRecord]:
        sql = "SELECT * FROM tokens WHERE user_id = %s AND kind = %s"
        params: tuple[Any, ...] = (user_id, kind)
        if not include_inactive:
            sql += " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > %s)"
            params = (*params, now)
        return self._page(sql, params, query, token_from_row)

    def replace_token_hash(self, token_id: str, token_hash: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE tokens SET token_hash = %s WHERE id = %s", (token_hash, token_id))

    def revoke_token(self, token_id: str, revoked_at: float) -> TokenRecord:
        with self._write() as conn:
            conn.execute(
                "UPDATE tokens SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL", (revoked_at, token_id)
            )
            row = conn.execute("SELECT * FROM tokens WHERE id = %s", (token_id,)).fetchone()
        if row is None:
            raise LookupError(f"token {token_id!r} does not exist")
        return token_from_row(row)

    # apps

    def insert_app(self, app: AppRecord) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO apps (user_id, id, name, description, base_workflow, metadata, created_at, modified_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    app.user_id,
                    app.id,
                    app.name,
                    app.description,
                    app.base_workflow,
                    json.dumps(app.metadata),
                    app.created_at,
                    app.modified_at,
                ),
            )

    def get_app(self, user_id: str, app_id: str) -> AppRecord | None:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM apps WHERE user_id = %s AND id = %s", (user_id, app_id)).fetchone()
        return app_from_row(row) if row else None

    def list_apps(self, user_id: str, text: str, query: PageQuery) -> Page[AppRecord]:
        sql, params = "SELECT * FROM apps WHERE user_id = %s", (user_id,)
        params_any: tuple[Any, ...] = params
        if text:
            pattern = contains_pattern(text)
            sql += " AND (lower(id) LIKE %s ESCAPE '\\' OR lower(name) LIKE %s ESCAPE '\\')"
            params_any = (user_id, pattern, pattern)
        return self._page(sql, params_any, query, app_from_row)

    def update_app(self, app: AppRecord) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE apps SET name = %s, description = %s, base_workflow = %s, metadata = %s, modified_at = %s"
                " WHERE user_id = %s AND id = %s",
                (
                    app.name,
                    app.description,
                    app.base_workflow,
                    json.dumps(app.metadata),
                    app.modified_at,
                    app.user_id,
                    app.id,
                ),
            )

    def delete_app(self, user_id: str, app_id: str) -> bool:
        with self._write() as conn:
            self.keep_deleted_app_tokens(conn, user_id, app_id)
            return conn.execute("DELETE FROM apps WHERE user_id = %s AND id = %s", (user_id, app_id)).rowcount > 0

    # concepts

    def insert_concepts(self, concepts: list[ConceptRecord]) -> list[bool]:
        inserted = []
        with self._write() as conn:
            app_seqs: dict[tuple[str, str], int] = {}
            for c in concepts:
                key = (c.user_id, c.app_id)
                if key not in app_seqs:
                    app_seqs[key] = self._app_seq(conn, c.user_id, c.app_id)
                cursor = conn.execute(
                    "INSERT INTO concepts (app_seq, id, name, created_at) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    (app_seqs[key], c.id, c.name, c.created_at),
                )
                inserted.append(cursor.rowcount == 1)
        return inserted

    _CONCEPT_SELECT = (
        "SELECT c.seq AS seq, a.user_id AS user_id, a.id AS app_id, c.id AS id, c.name AS name,"
        " c.created_at AS created_at FROM concepts c JOIN apps a ON a.seq = c.app_seq"
        " WHERE a.user_id = %s AND a.id = %s"
    )

    def get_concept(self, user_id: str, app_id: str, concept_id: str) -> ConceptRecord | None:
        with self._read() as conn:
            row = conn.execute(self._CONCEPT_SELECT + " AND c.id = %s", (user_id, app_id, concept_id)).fetchone()
        return concept_from_row(row) if row else None

    def list_concepts(self, user_id: str, app_id: str, query: PageQuery) -> Page[ConceptRecord]:
        return self._page(self._CONCEPT_SELECT, (user_id, app_id), query, concept_from_row, seq="c.seq")

    def rename_concepts(self, user_id: str, app_id: str, names: dict[str, str]) -> list[ConceptRecord]:
        renamed = []
        with self._write() as conn:
            for concept_id, name in names.items():
                row = conn.execute(
                    "UPDATE concepts c SET name = %s FROM apps a WHERE a.seq = c.app_seq AND a.user_id = %s"
                    " AND a.id = %s AND c.id = %s RETURNING c.seq AS seq, a.user_id AS user_id, a.id AS app_id,"
                    " c.id AS id, c.name AS name, c.created_at AS created_at",
                    (name, user_id, app_id, concept_id),
                ).fetchone()
                if row is not None:
                    renamed.append(concept_from_row(row))
        return renamed

    # models

    _MODEL_SEQ = (
        "SELECT m.seq FROM models m JOIN apps a ON a.seq = m.app_seq WHERE a.user_id = %s AND a.id = %s AND m.id = %s"
    )

    def _model_seq(self, conn: psycopg.Connection[Any], user_id: str, app_id: str, model_id: str) -> int | None:
        row = conn.execute(self._MODEL_SEQ, (user_id, app_id, model_id)).fetchone()
        return row["seq"] if row else None

    def insert_model(self, model: ModelRecord, version: ModelVersionRecord) -> None:
        with self._write() as conn:
            row = conn.execute(
                "INSERT INTO models (app_seq, id, name, description, model_type_id, input_fields, output_fields, feature_specs,"
                " created_at, modified_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING seq",
                (
                    self._app_seq(conn, model.user_id, model.app_id),
                    model.id,
                    model.name,
                    model.description,
                    model.model_type_id,
                    json.dumps(model.input_fields),
                    json.dumps(model.output_fields),
                    feature_specs_json(model),
                    model.created_at,
                    model.modified_at,
                ),
            ).fetchone()
            assert row is not None
            self._insert_version(conn, row["seq"], version)

    @staticmethod
    def _insert_version(conn: psycopg.Connection[Any], model_seq: int, v: ModelVersionRecord) -> None:
        conn.execute(
            "INSERT INTO model_versions (model_seq, id, description, output_info, runner_labels,"
            " item_timeout_seconds, metadata, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                model_seq,
                v.id,
                v.description,
                output_info_json(v),
                json.dumps(list(v.runner_labels)),
                v.item_timeout_seconds,
                json.dumps(v.metadata),
                v.created_at,
            ),
        )

    _MODEL_SELECT = (
        "SELECT m.seq AS seq, a.user_id AS user_id, a.id AS app_id, m.id AS id, m.name AS name,"
        " m.description AS description, m.model_type_id AS model_type_id, m.input_fields AS input_fields,"
        " m.output_fields AS output_fields, m.feature_specs AS feature_specs, m.created_at AS created_at, m.modified_at AS modified_at"
        " FROM models m JOIN apps a ON a.seq = m.app_seq WHERE a.user_id = %s AND a.id = %s"
    )

    def get_model(self, user_id: str, app_id: str, model_id: str) -> ModelRecord | None:
        with self._read() as conn:
            row = conn.execute(self._MODEL_SELECT + " AND m.id = %s", (user_id, app_id, model_id)).fetchone()
        return model_from_row(row) if row else None

    def list_models(self, user_id: str, app_id: str, text: str, query: PageQuery) -> Page[ModelRecord]:
        sql, params = self._MODEL_SELECT, [user_id, app_id]
        if text:
            pattern = contains_pattern(text)
            sql += " AND (lower(m.id) LIKE %s ESCAPE '\\' OR lower(m.name) LIKE %s ESCAPE '\\')"
            params += [pattern, pattern]
        return self._page(sql, tuple(params), query, model_from_row, seq="m.seq")

    def delete_model(self, user_id: str, app_id: str, model_id: str) -> bool:
        with self._write() as conn:
            seq = self._model_seq(conn, user_id, app_id, model_id)
            return seq is not None and conn.execute("DELETE FROM models WHERE seq = %s", (seq,)).rowcount > 0

    def insert_model_version(self, version: ModelVersionRecord) -> None:
        with self._write() as conn:
            seq = self._model_seq(conn, version.user_id, version.app_id, version.model_id)
            if seq is None:
                raise LookupError(f"model {version.model_id!r} does not exist")
            self._insert_version(conn, seq, version)
            conn.execute("UPDATE models SET modified_at = %s WHERE seq = %s", (version.created_at, seq))

    _VERSION_SELECT = (
        "SELECT v.seq AS seq, v.id AS id, v.description AS description, v.output_info AS output_info,"
        " v.runner_labels AS runner_labels, v.item_timeout_seconds AS item_timeout_seconds,"
        " v.metadata AS metadata, v.created_at AS created_at, %s AS user_id, %s AS app_id, %s AS model_id"
        " FROM model_versions v WHERE v.model_seq = %s"
    )

    def get_model_version(
        self, user_id: str, app_id: str, model_id: str, version_id: str = ""
    ) -> ModelVersionRecord | None:
        # one round trip (a predict's path): the model's seq is found inside the statement
        sql = self._VERSION_SELECT.replace("v.model_seq = %s", "v.model_seq = (" + self._MODEL_SEQ + ")")
        params = (user_id, app_id, model_id, user_id, app_id, model_id)
        with self._read() as conn:
            if version_id:
                row = conn.execute(sql + " AND v.id = %s", (*params, version_id)).fetchone()
            else:
                row = conn.execute(sql + " ORDER BY v.seq DESC LIMIT 1", params).fetchone()
        return model_version_from_row(row) if row else None

    def list_model_versions(
        self, user_id: str, app_id: str, model_id: str, query: PageQuery
    ) -> Page[ModelVersionRecord]:
        with self._read() as conn:
            seq = self._model_seq(conn, user_id, app_id, model_id)
        if seq is None:
            raise LookupError(f"model {model_id!r} does not exist")
        return self._page(
            self._VERSION_SELECT, (user_id, app_id, model_id, seq), query, model_version_from_row, seq="v.seq"
        )

    def delete_model_version(self, user_id: str, app_id: str, model_id: str, version_id: str) -> bool:
        with self._write() as conn:
            seq = self._model_seq(conn, user_id, app_id, model_id)
            return (
                seq is not None
                and conn.execute(
                    "DELETE FROM model_versions WHERE model_seq = %s AND id = %s", (seq, version_id)
                ).rowcount
                > 0
            )

    # runners

    def insert_runner(self, runner: RunnerRecord) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO runners (user_id, id, labels, description, created_at) VALUES (%s, %s, %s, %s, %s)",
                (runner.user_id, runner.id, json.dumps(list(runner.labels)), runner.description, runner.created_at),
            )

    def get_runner(self, user_id: str, runner_id: str) -> RunnerRecord | None:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM runners WHERE user_id = %s AND id = %s", (user_id, runner_id)).fetchone()
        return runner_from_row(row) if row else None

    def list_runners(self, user_id: str, labels: tuple[str, ...], query: PageQuery) -> Page[RunnerRecord]:
        return self._page(
            "SELECT * FROM runners WHERE user_id = %s AND labels::jsonb @> %s::jsonb",
            (user_id, json.dumps(list(labels))),
            query,
            runner_from_row,
        )

    def update_runner(self, runner: RunnerRecord) -> bool:
        with self._write() as conn:
            return (
                conn.execute(
                    "UPDATE runners SET labels = %s, description = %s WHERE user_id = %s AND id = %s",
                    (json.dumps(list(runner.labels)), runner.description, runner.user_id, runner.id),
                ).rowcount
                > 0
            )

    def delete_runner(self, user_id: str, runner_id: str) -> bool:
        with self._write() as conn:
            return conn.execute("DELETE FROM runners WHERE user_id = %s AND id = %s", (user_id, runner_id)).rowcount > 0

    # request log

    def claim_request(
        self,
        user_id: str,
        request_id: str,
        method: str,
        now: float,
        stale_after: float,
        owner: str,
        replica: str = "",
    ) -> Claim:
        with self._write() as conn:
            while True:
                inserted = conn.execute(
                    "INSERT INTO request_log (user_id, request_id, method, done, response, updated_at, owner, replica)"
                    " VALUES (%s, %s, %s, FALSE, NULL, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (user_id, request_id, method, now, owner, replica),
                ).rowcount
                if inserted:
                    return Claim(ClaimOutcome.CLAIMED)
                row = conn.execute(
                    "SELECT method, done, response, updated_at FROM request_log"
                    " WHERE user_id = %s AND request_id = %s FOR UPDATE",
                    (user_id, request_id),
                ).fetchone()
                if row is not None:  # else it was deleted since the insert: insert again
                    break
            if not row["done"] and row["updated_at"] < now - stale_after:
                conn.execute(
                    "UPDATE request_log SET method = %s, done = FALSE, response = NULL, updated_at = %s, owner = %s,"
                    " replica = %s WHERE user_id = %s AND request_id = %s",
                    (method, now, owner, replica, user_id, request_id),
                )
                return Claim(ClaimOutcome.CLAIMED)
            return Claim.of_logged(method, row["method"], bool(row["done"]), row["response"])

    def finish_request(self, user_id: str, request_id: str, response: bytes, now: float, owner: str) -> bool:
        with self._write() as conn:
            return (
                conn.execute(
                    "UPDATE request_log SET done = TRUE, response = %s, updated_at = %s"
                    " WHERE user_id = %s AND request_id = %s AND owner = %s AND NOT done",
                    (response, now, user_id, request_id, owner),
                ).rowcount
                == 1
            )

    def release_request(self, user_id: str, request_id: str, owner: str) -> None:
        with self._write() as conn:
            conn.execute(
                "DELETE FROM request_log WHERE user_id = %s AND request_id = %s AND NOT done AND owner = %s",
                (user_id, request_id, owner),
            )

    def renew_replica(self, replica_id: str, now: float) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO replicas (id, heartbeat_at) VALUES (%s, %s)"
                " ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at",
                (replica_id, now),
            )

    def retire_replica(self, replica_id: str) -> int:
        with self._write() as conn:
            conn.execute("DELETE FROM replicas WHERE id = %s", (replica_id,))
            return conn.execute("DELETE FROM request_log WHERE NOT done AND replica = %s", (replica_id,)).rowcount

    def release_gone_replicas(self, alive_since: float, this_replica: str) -> int:
        with self._write() as conn:
            conn.execute("DELETE FROM replicas WHERE heartbeat_at < %s AND id <> %s", (alive_since, this_replica))
            return conn.execute(
                "DELETE FROM request_log r WHERE NOT r.done AND r.replica <> %s"
                " AND NOT EXISTS (SELECT 1 FROM replicas p WHERE p.id = r.replica)",
                (this_replica,),
            ).rowcount

    def purge_requests(self, older_than: float) -> int:
        with self._write() as conn:
            return conn.execute("DELETE FROM request_log WHERE updated_at < %s", (older_than,)).rowcount


def contains_pattern(text: str) -> str:
    """A LIKE pattern (ESCAPE '\\') matching `text` anywhere, for comparison with lower(column)."""
    return "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
