"""MetadataStore on SQLite: WAL, one connection per thread, migrations run on open."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

from pellucid.server.records import (
    AppRecord,
    ConceptRecord,
    Page,
    PageQuery,
    TokenRecord,
    UserRecord,
)
from pellucid.server.storage.base import Claim, ClaimOutcome, Conflict, MetadataStore
from pellucid.server.storage.migrations import pending_migrations
from pellucid.server.storage.rows import (
    TOKEN_USER_COLUMNS,
    app_from_row,
    concept_from_row,
    token_and_user_from_row,
    token_from_row,
    user_from_row,
)
from pellucid.server.storage.sqlite_algorithms import AlgorithmTables
from pellucid.server.storage.sqlite_connections import ThreadConnections, foreign_key_violations, like_pattern
from pellucid.server.storage.sqlite_data import DataTables
from pellucid.server.storage.sqlite_deployments import DeploymentTables
from pellucid.server.storage.sqlite_evaluations import EvaluationTables
from pellucid.server.storage.sqlite_inputs import InputTables
from pellucid.server.storage.sqlite_models import ModelTables
from pellucid.server.storage.sqlite_modules import ModuleTables
from pellucid.server.storage.sqlite_schema import MIGRATIONS
from pellucid.server.storage.sqlite_search import SEARCH_FUNCTIONS, SearchTables
from pellucid.server.storage.sqlite_training import TrainingTables
from pellucid.server.storage.sqlite_workflows import WorkflowTables

T = TypeVar("T")


class SqliteMetadataStore(
    InputTables,
    SearchTables,
    ModelTables,
    ModuleTables,
    AlgorithmTables,
    TrainingTables,
    WorkflowTables,
    EvaluationTables,
    DataTables,
    DeploymentTables,
    MetadataStore,
):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connections = ThreadConnections(self.path, foreign_keys=True, functions=SEARCH_FUNCTIONS)
        self._conn = self._connections.get
        self._write = self._connections.write
        try:
            self._migrate()
        except BaseException:
            self._connections.close()
            raise

    def _migrate(self) -> None:
        """Apply the pending migrations in one transaction with foreign keys off (a table rebuild,
        such as migration 19's, drops the old table: with them on, that would cascade into every
        child row) and PRAGMA foreign_key_check clean before it commits."""
        with self._connections.write_without_foreign_keys() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at REAL NOT NULL)"
            )
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_version")}
            pending = pending_migrations(MIGRATIONS, applied, str(self.path))
            for version, script in pending:
                if callable(script):
                    script(conn)
                else:
                    for statement in filter(str.strip, script.split(";")):
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_version VALUES (?, strftime('%s','now'))", (version,))
            if pending and (problem := foreign_key_violations(conn)):
                raise sqlite3.IntegrityError(f"{self.path}: migrating left {problem}; nothing was changed")

    def schema_version(self) -> int:
        return self._conn().execute("SELECT MAX(version) FROM schema_version").fetchone()[0]

    def close(self) -> None:
        self._connections.close()

    def unit_of_work(self) -> AbstractContextManager[None]:
        return self._connections.unit_of_work()

    def _page(
        self, sql: str, params: tuple, query: PageQuery, to_record: Callable[[sqlite3.Row], T], seq: str = "seq"
    ) -> Page[T]:
        """Run `sql` (which selects `seq` and has an `{after}` slot in its WHERE) as one keyset page."""
        if query.after is not None:
            sql, params = sql.replace("{after}", f"AND {seq} > ?"), (*params, query.after)
        else:
            sql = sql.replace("{after}", "")
        sql += f" ORDER BY {seq} LIMIT ? OFFSET ?"
        rows = self._conn().execute(sql, (*params, query.limit + 1, query.offset)).fetchall()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        return Page([to_record(r) for r in rows], rows[-1]["seq"] if more else None)

    # users

    def insert_user(self, user: UserRecord, first_token: TokenRecord | None = None) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO users (id, is_admin, metadata, created_at) VALUES (?, ?, ?, ?)",
                    (user.id, int(user.is_admin), json.dumps(user.metadata), user.created_at),
                )
                if first_token is not None:
                    self._insert_token(conn, first_token)
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    def get_user(self, user_id: str) -> UserRecord | None:
        row = self._conn().execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
        return user_from_row(row) if row else None

    def list_users(self, query: PageQuery) -> Page[UserRecord]:
        return self._page("SELECT * FROM users WHERE 1=1 {after}", (), query, user_from_row)

    def count_users(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM users").fetchone()[0]

    # tokens

    @staticmethod
    def _insert_token(conn: sqlite3.Connection, t: TokenRecord) -> None:
        conn.execute(
            "INSERT INTO tokens (id, user_id, kind, description, token_hash, request_id, created_at, expires_at, revoked_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        try:
            with self._write() as conn:
                self._insert_token(conn, token)
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    def get_token(self, user_id: str, token_id: str) -> TokenRecord | None:
        row = self._conn().execute("SELECT * FROM tokens WHERE user_id = ? AND id = ?", (user_id, token_id)).fetchone()
        return token_from_row(row) if row else None

    def get_token_with_user(self, token_hash: str) -> tuple[TokenRecord, UserRecord] | None:
        row = (
            self._conn()
            .execute(
                f"SELECT {TOKEN_USER_COLUMNS} FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?",
                (token_hash,),
            )
            .fetchone()
        )
        return token_and_user_from_row(row) if row else None

    def get_token_by_request(self, user_id: str, request_id: str) -> TokenRecord | None:
        row = (
            self._conn()
            .execute("SELECT * FROM tokens WHERE user_id = ? AND request_id = ?", (user_id, request_id))
            .fetchone()
        )
        return token_from_row(row) if row else None

    def list_tokens(
        self, user_id: str, kind: str, include_inactive: bool, now: float, query: PageQuery
    ) -> Page[TokenRecord]:
        sql = "SELECT * FROM tokens WHERE user_id = ? AND kind = ? {after}"
        params: tuple = (user_id, kind)
        if not include_inactive:
            sql = sql.replace("{after}", "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) {after}")
            params = (*params, now)
        return self._page(sql, params, query, token_from_row)

    def replace_token_hash(self, token_id: str, token_hash: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE tokens SET token_hash = ? WHERE id = ?", (token_hash, token_id))

    def revoke_token(self, token_id: str, revoked_at: float) -> TokenRecord:
        with self._write() as conn:
            conn.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (revoked_at, token_id))
            return token_from_row(conn.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone())

    # apps

    def insert_app(self, app: AppRecord) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO apps (user_id, id, name, description, base_workflow, metadata, created_at, modified_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    def get_app(self, user_id: str, app_id: str) -> AppRecord | None:
        row = self._conn().execute("SELECT * FROM apps WHERE user_id = ? AND id = ?", (user_id, app_id)).fetchone()
        return app_from_row(row) if row else None

    def list_apps(self, user_id: str, text: str, query: PageQuery) -> Page[AppRecord]:
        sql, params = "SELECT * FROM apps WHERE user_id = ? {after}", tuple[Any, ...]((user_id,))
        if text:
            pattern = like_pattern(text)
            sql = sql.replace("{after}", "AND (lower(id) LIKE ? ESCAPE '\\' OR lower(name) LIKE ? ESCAPE '\\') {after}")
            params = (user_id, pattern, pattern)
        return self._page(sql, params, query, app_from_row)

    def update_app(self, app: AppRecord) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE apps SET name = ?, description = ?, base_workflow = ?, metadata = ?, modified_at = ?"
                " WHERE user_id = ? AND id = ?",
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
            return conn.execute("DELETE FROM apps WHERE user_id = ? AND id = ?", (user_id, app_id)).rowcount > 0

    # concepts

    def insert_concepts(self, concepts: list[ConceptRecord]) -> list[bool]:
        inserted = []
        with self._write() as conn:
            app_seqs: dict[tuple[str, str], int] = {}
            for c in concepts:
                key = (c.user_id, c.app_id)
                if key not in app_seqs:
                    row = conn.execute("SELECT seq FROM apps WHERE user_id = ? AND id = ?", key).fetchone()
                    if row is None:
                        raise LookupError(f"app {c.app_id!r} of user {c.user_id!r} does not exist")
                    app_seqs[key] = row[0]
                cursor = conn.execute(
                    "INSERT INTO concepts (app_seq, id, name, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (app_seqs[key], c.id, c.name, c.created_at),
                )
                inserted.append(cursor.rowcount == 1)
        return inserted

    _CONCEPT_SELECT = (
        "SELECT c.seq AS seq, a.user_id AS user_id, a.id AS app_id, c.id AS id, c.name AS name, c.created_at AS created_at"
        " FROM concepts c JOIN apps a ON a.seq = c.app_seq WHERE a.user_id = ? AND a.id = ?"
    )

    def get_concept(self, user_id: str, app_id: str, concept_id: str) -> ConceptRecord | None:
        row = self._conn().execute(self._CONCEPT_SELECT + " AND c.id = ?", (user_id, app_id, concept_id)).fetchone()
        return concept_from_row(row) if row else None

    def list_concepts(self, user_id: str, app_id: str, query: PageQuery) -> Page[ConceptRecord]:
        return self._page(self._CONCEPT_SELECT + " {after}", (user_id, app_id), query, concept_from_row, seq="c.seq")

    def rename_concepts(self, user_id: str, app_id: str, names: dict[str, str]) -> list[ConceptRecord]:
        with self._write() as conn:
            for concept_id, name in names.items():
                conn.execute(
                    "UPDATE concepts SET name = ? WHERE id = ? AND app_seq = (SELECT seq FROM apps WHERE user_id = ? AND id = ?)",
                    (name, concept_id, user_id, app_id),
                )
        found = [self.get_concept(user_id, app_id, concept_id) for concept_id in names]
        return [c for c in found if c is not None]

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
            row = conn.execute(
                "SELECT method, done, response, updated_at FROM request_log WHERE user_id = ? AND request_id = ?",
                (user_id, request_id),
            ).fetchone()
            if row is None or (not row["done"] and row["updated_at"] < now - stale_after):
                conn.execute(
                    "INSERT OR REPLACE INTO request_log"
                    " (user_id, request_id, method, done, response, updated_at, owner, replica)"
                    " VALUES (?, ?, ?, 0, NULL, ?, ?, ?)",
                    (user_id, request_id, method, now, owner, replica),
                )
                return Claim(ClaimOutcome.CLAIMED)
            return Claim.of_logged(method, row["method"], bool(row["done"]), row["response"])

    def finish_request(self, user_id: str, request_id: str, response: bytes, now: float, owner: str) -> bool:
        with self._write() as conn:
            return (
                conn.execute(
                    "UPDATE request_log SET done = 1, response = ?, updated_at = ?"
                    " WHERE user_id = ? AND request_id = ? AND owner = ? AND done = 0",
                    (response, now, user_id, request_id, owner),
                ).rowcount
                == 1
            )

    def release_request(self, user_id: str, request_id: str, owner: str) -> None:
        with self._write() as conn:
            conn.execute(
                "DELETE FROM request_log WHERE user_id = ? AND request_id = ? AND done = 0 AND owner = ?",
                (user_id, request_id, owner),
            )

    def renew_replica(self, replica_id: str, now: float) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO replicas (id, heartbeat_at) VALUES (?, ?)"
                " ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                (replica_id, now),
            )

    def retire_replica(self, replica_id: str) -> int:
        with self._write() as conn:
            conn.execute("DELETE FROM replicas WHERE id = ?", (replica_id,))
            return conn.execute("DELETE FROM request_log WHERE done = 0 AND replica = ?", (replica_id,)).rowcount

    def release_gone_replicas(self, alive_since: float, this_replica: str) -> int:
        with self._write() as conn:
            conn.execute("DELETE FROM replicas WHERE heartbeat_at < ? AND id != ?", (alive_since, this_replica))
            return conn.execute(
                "DELETE FROM request_log WHERE done = 0 AND replica != ? AND replica NOT IN (SELECT id FROM replicas)",
                (this_replica,),
            ).rowcount

    def purge_requests(self, older_than: float) -> int:
        with self._write() as conn:
            return conn.execute("DELETE FROM request_log WHERE updated_at < ?", (older_than,)).rowcount
