"""PostgreSQL tables of workflows, their versions and the model versions they pin (a mixin of
PostgresMetadataStore)."""

from __future__ import annotations

import json
from typing import Any

from psycopg import Connection

from pellucid.server.records import Page, PageQuery, WorkflowRecord, WorkflowVersionRecord
from pellucid.server.storage.base import Conflict
from pellucid.server.storage.workflow_rows import nodes_json, pin_rows, workflow_from_row, workflow_version_from_row

PIN_INSERT = (
    "INSERT INTO workflow_pins (version_seq, node_id, user_id, app_id, model_id, model_version_id)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)


def like_pattern(text: str) -> str:
    """A LIKE pattern (ESCAPE '\\') matching `text` anywhere, for comparison with lower(column)."""
    return "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


WORKFLOW_SEQ = (
    "SELECT w.seq FROM workflows w JOIN apps a ON a.seq = w.app_seq WHERE a.user_id = %s AND a.id = %s AND w.id = %s"
)


class PostgresWorkflowTables:
    _read: Any
    _write: Any
    _page: Any
    _app_seq: Any

    def _workflow_seq(self, conn: Connection[Any], user_id: str, app_id: str, workflow_id: str) -> int | None:
        row = conn.execute(WORKFLOW_SEQ, (user_id, app_id, workflow_id)).fetchone()
        return int(row["seq"]) if row else None

    @staticmethod
    def _insert_workflow_version(conn: Connection[Any], workflow_seq: int, v: WorkflowVersionRecord) -> None:
        row = conn.execute(
            "INSERT INTO workflow_versions (workflow_seq, id, description, nodes, metadata, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING seq",
            (workflow_seq, v.id, v.description, nodes_json(v.nodes), json.dumps(v.metadata), v.created_at),
        ).fetchone()
        assert row is not None
        with conn.cursor() as cursor:
            cursor.executemany(PIN_INSERT, pin_rows(row["seq"], v))

    def _exists(self, conn: Connection[Any], sql: str, params: tuple[Any, ...]) -> bool:
        return conn.execute(sql, params).fetchone() is not None

    def insert_workflow(self, workflow: WorkflowRecord, version: WorkflowVersionRecord) -> None:
        with self._write() as conn:
            app_seq = self._app_seq(conn, workflow.user_id, workflow.app_id)
            row = conn.execute(
                "INSERT INTO workflows (app_seq, id, description, metadata, created_at, modified_at)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING seq",
                (
                    app_seq,
                    workflow.id,
                    workflow.description,
                    json.dumps(workflow.metadata),
                    workflow.created_at,
                    workflow.modified_at,
                ),
            ).fetchone()
            if row is None:
                raise Conflict(f"workflow {workflow.id!r} exists")
            self._insert_workflow_version(conn, row["seq"], version)

    def insert_workflow_version(self, version: WorkflowVersionRecord) -> None:
        with self._write() as conn:
            seq = self._workflow_seq(conn, version.user_id, version.app_id, version.workflow_id)
            if seq is None:
                raise LookupError(f"workflow {version.workflow_id!r} does not exist")
            if self._exists(
                conn, "SELECT 1 FROM workflow_versions WHERE workflow_seq = %s AND id = %s", (seq, version.id)
            ):
                raise Conflict(f"version {version.id!r} exists")
            self._insert_workflow_version(conn, seq, version)
            conn.execute("UPDATE workflows SET modified_at = %s WHERE seq = %s", (version.created_at, seq))

    _WORKFLOW_SELECT = (
        "SELECT w.seq AS seq, a.user_id AS user_id, a.id AS app_id, w.id AS id, w.description AS description,"
        " w.metadata AS metadata, w.created_at AS created_at, w.modified_at AS modified_at"
        " FROM workflows w JOIN apps a ON a.seq = w.app_seq WHERE a.user_id = %s AND a.id = %s"
    )

    def get_workflow(self, user_id: str, app_id: str, workflow_id: str) -> WorkflowRecord | None:
        with self._read() as conn:
            row = conn.execute(self._WORKFLOW_SELECT + " AND w.id = %s", (user_id, app_id, workflow_id)).fetchone()
        return workflow_from_row(row) if row else None

    def list_workflows(self, user_id: str, app_id: str, text: str, query: PageQuery) -> Page[WorkflowRecord]:
        sql, params = self._WORKFLOW_SELECT, [user_id, app_id]
        if text:
            sql += " AND lower(w.id) LIKE %s ESCAPE '\\'"
            params.append(like_pattern(text))
        return self._page(sql, tuple(params), query, workflow_from_row, seq="w.seq")

    def delete_workflow(self, user_id: str, app_id: str, workflow_id: str) -> bool:
        with self._write() as conn:
            seq = self._workflow_seq(conn, user_id, app_id, workflow_id)
            return seq is not None and conn.execute("DELETE FROM workflows WHERE seq = %s", (seq,)).rowcount > 0

    _WORKFLOW_VERSION_SELECT = (
        "SELECT v.seq AS seq, v.id AS id, v.description AS description, v.nodes AS nodes, v.metadata AS metadata,"
        " v.created_at AS created_at, %s AS user_id, %s AS app_id, %s AS workflow_id"
        " FROM workflow_versions v WHERE v.workflow_seq = %s"
    )

    def _with_pins(self, rows: list[dict[str, Any]]) -> list[WorkflowVersionRecord]:
        deleted: dict[int, list[tuple[str, str]]] = {row["seq"]: [] for row in rows}
        if deleted:
            with self._read() as conn:
                for pin in conn.execute(
                    "SELECT version_seq, node_id, deleted_reason FROM workflow_pins WHERE version_seq = ANY(%s)"
                    " AND deleted_reason != '' ORDER BY version_seq, pin_seq",
                    (list(deleted),),
                ).fetchall():
                    deleted[pin["version_seq"]].append((pin["node_id"], pin["deleted_reason"]))
        return [workflow_version_from_row(row, deleted[row["seq"]]) for row in rows]

    def get_workflow_version(
        self, user_id: str, app_id: str, workflow_id: str, version_id: str = ""
    ) -> WorkflowVersionRecord | None:
        with self._read() as conn:
            seq = self._workflow_seq(conn, user_id, app_id, workflow_id)
            if seq is None:
                return None
            params = (user_id, app_id, workflow_id, seq)
            if version_id:
                row = conn.execute(self._WORKFLOW_VERSION_SELECT + " AND v.id = %s", (*params, version_id)).fetchone()
            else:
                row = conn.execute(self._WORKFLOW_VERSION_SELECT + " ORDER BY v.seq DESC LIMIT 1", params).fetchone()
        return self._with_pins([row])[0] if row else None

    def list_workflow_versions(
        self, user_id: str, app_id: str, workflow_id: str, query: PageQuery
    ) -> Page[WorkflowVersionRecord]:
        with self._read() as conn:
            seq = self._workflow_seq(conn, user_id, app_id, workflow_id)
        if seq is None:
            raise LookupError(f"workflow {workflow_id!r} does not exist")
        page: Page[Any] = self._page(
            self._WORKFLOW_VERSION_SELECT, (user_id, app_id, workflow_id, seq), query, lambda row: row, seq="v.seq"
        )
        return Page(self._with_pins(page.items), page.next_after)

    def deprecate_workflow_pins(
        self, user_id: str, app_id: str, model_id: str, model_version_id: str, reason: str
    ) -> int:
        sql = "UPDATE workflow_pins SET deleted_reason = %s WHERE user_id = %s AND app_id = %s AND deleted_reason = ''"
        params: tuple[Any, ...] = (reason, user_id, app_id)
        if model_id:  # else the whole app went
            sql, params = sql + " AND model_id = %s", (*params, model_id)
        if model_id and model_version_id:
            sql, params = sql + " AND model_version_id = %s", (*params, model_version_id)
        with self._write() as conn:
            return int(conn.execute(sql, params).rowcount)
