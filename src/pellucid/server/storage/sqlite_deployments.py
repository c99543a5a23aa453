"""SQLite tables of deployments and their tokens (a mixin of SqliteMetadataStore)."""

from __future__ import annotations

import sqlite3
from typing import Any

from pellucid.server.records import DeletedDeploymentToken, DeploymentRecord, DeploymentTokenRecord, Page, PageQuery
from pellucid.server.storage import deployment_rows as rows
from pellucid.server.storage.base import Conflict


def _q(template: str) -> str:
    return rows.sql(template, "?")


class DeploymentTables:
    _conn: Any
    _write: Any
    _page: Any

    def insert_deployment(self, deployment: DeploymentRecord) -> None:
        try:
            with self._write() as conn:
                cursor = conn.execute(_q(rows.INSERT_DEPLOYMENT), rows.deployment_params(deployment))
                if cursor.rowcount != 1:
                    raise LookupError(f"app {deployment.app_id!r} of user {deployment.user_id!r} does not exist")
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    def get_deployment(self, deployment_id: str) -> DeploymentRecord | None:
        row = self._conn().execute(_q(rows.DEPLOYMENT_SELECT) + " WHERE d.id = ?", (deployment_id,)).fetchone()
        return rows.deployment_from_row(row) if row else None

    def list_deployments(self, user_id: str, app_id: str, query: PageQuery) -> Page[DeploymentRecord]:
        sql = _q(rows.DEPLOYMENT_SELECT) + " WHERE a.user_id = ? AND a.id = ? {after}"
        return self._page(sql, (user_id, app_id), query, rows.deployment_from_row, seq="d.seq")

    def update_deployment(self, deployment: DeploymentRecord) -> bool:
        with self._write() as conn:
            return bool(conn.execute(_q(rows.UPDATE_DEPLOYMENT), rows.update_params(deployment)).rowcount)

    def delete_deployment(self, deployment_id: str) -> bool:
        with self._write() as conn:
            conn.execute(_q(rows.KEEP_TOKENS_OF_DEPLOYMENT), (deployment_id,))
            conn.execute(_q(rows.PRUNE_DELETED_TOKENS), (rows.DELETED_TOKENS_KEPT,))
            return bool(conn.execute("DELETE FROM deployments WHERE id = ?", (deployment_id,)).rowcount)

    def keep_deleted_app_tokens(self, conn: Any, user_id: str, app_id: str) -> None:
        """In the transaction deleting an app: keep its deployments' tokens' hashes."""
        conn.execute(_q(rows.KEEP_TOKENS_OF_APP), (user_id, app_id))
        conn.execute(_q(rows.PRUNE_DELETED_TOKENS), (rows.DELETED_TOKENS_KEPT,))

    def get_deleted_deployment_token(self, token_hash: str) -> DeletedDeploymentToken | None:
        row = self._conn().execute(_q(rows.DELETED_TOKEN_SELECT), (token_hash,)).fetchone()
        return rows.deleted_token_from_row(row) if row else None

    def insert_deployment_token(self, token: DeploymentTokenRecord) -> None:
        try:
            with self._write() as conn:
                cursor = conn.execute(_q(rows.INSERT_TOKEN), rows.token_params(token))
                if cursor.rowcount != 1:
                    raise LookupError(f"deployment {token.deployment_id!r} does not exist")
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    def list_deployment_tokens(
        self, deployment_id: str, include_revoked: bool, query: PageQuery
    ) -> Page[DeploymentTokenRecord]:
        sql = _q(rows.TOKEN_SELECT) + " WHERE d.id = ?" + ("" if include_revoked else " AND t.revoked_at IS NULL")
        return self._page(sql + " {after}", (deployment_id,), query, rows.token_from_row, seq="t.seq")

    def get_deployment_token_by_request(self, deployment_id: str, request_id: str) -> DeploymentTokenRecord | None:
        sql = _q(rows.TOKEN_SELECT) + " WHERE d.id = ? AND t.request_id = ?"
        row = self._conn().execute(sql, (deployment_id, request_id)).fetchone()
        return rows.token_from_row(row) if row else None

    def replace_deployment_token_hash(self, token_id: str, token_hash: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE deployment_tokens SET token_hash = ? WHERE id = ?", (token_hash, token_id))

    def get_deployment_token_by_hash(self, token_hash: str) -> DeploymentTokenRecord | None:
        row = self._conn().execute(_q(rows.TOKEN_SELECT) + " WHERE t.token_hash = ?", (token_hash,)).fetchone()
        return rows.token_from_row(row) if row else None

    def revoke_deployment_token(self, deployment_id: str, token_id: str, now: float) -> DeploymentTokenRecord | None:
        with self._write() as conn:
            conn.execute(
                "UPDATE deployment_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
                " AND deployment_seq = (SELECT seq FROM deployments WHERE id = ?)",
                (now, token_id, deployment_id),
            )
            row = conn.execute(
                _q(rows.TOKEN_SELECT) + " WHERE d.id = ? AND t.id = ?", (deployment_id, token_id)
            ).fetchone()
        return rows.token_from_row(row) if row else None
