"""SQLite tables of workflows, their versions and the model versions they pin (a mixin of
SqliteMetadataStore)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from pellucid.server.records import Page, PageQuery, WorkflowRecord, WorkflowVersionRecord
from pellucid.server.storage.base import Conflict
from pellucid.server.storage.sqlite_connections import like_pattern
from pellucid.server.storage.workflow_rows import nodes_json, pin_rows, workflow_from_row, workflow_version_from_row

PIN_INSERT = (
    "INSERT INTO workflow_pins (version_seq, node_id, user_id, app_id, model_id, model_version_id)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


class WorkflowTables:
    _conn: Any
    _write: Any
    _page: Any
    _app_seq: Any

    def _workflow_seq(self, conn: sqlite3.Connection, user_id: str, app_id: str, workflow_id: str) -> int | None:
        row = conn.execute(
            "SELECT w.seq FROM workflows w JOIN apps a ON a.seq = w.app_seq WHERE a.user_id = ? AND a.id = ?"
            " AND w.id = ?",
            (user_id, app_id, workflow_id),
        ).fetchone()
        return row[0] if row else None

    @staticmethod
    def _insert_workflow_version(conn: sqlite3.Connection, workflow_seq: int, v: WorkflowVersionRecord) -> None:
        cursor = conn.execute(
            "INSERT INTO workflow_versions (workflow_seq, id, description, nodes, metadata, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (workflow_seq, v.id, v.description, nodes_json(v.nodes), json.dumps(v.metadata), v.created_at),
        )
        assert cursor.lastrowid is not None
        conn.executemany(PIN_INSERT, pin_rows(cursor.lastrowid, v))

    def insert_workflow(self, workflow: WorkflowRecord, version: WorkflowVersionRecord) -> None:
        try:
            with self._write() as conn:
                cursor = conn.execute(
                    "INSERT INTO workflows (app_seq, id, description, metadata, created_at, modified_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        self._app_seq(conn, workflow.user_id, workflow.app_id),
                        workflow.id,
                        workflow.description,
                        json.dumps(workflow.metadata),
                        workflow.created_at,
                        workflow.modified_at,
                    ),
                )
                self._insert_workflow_version(conn, cursor.lastrowid, version)
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    def insert_workflow_version(self, version: WorkflowVersionRecord) -> None:
        try:
            with self._write() as conn:
                seq = self._workflow_seq(conn, version.user_id, version.app_id, version.workflow_id)
                if seq is None:
                    raise LookupError(f"workflow {version.workflow_id!r} does not exist")
                self._insert_workflow_version(conn, seq, version)
                conn.execute("UPDATE workflows SET modified_at = ? WHERE seq = ?", (version.created_at, seq))
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    _WORKFLOW_SELECT = (
        "SELECT w.seq AS seq, a.user_id AS user_id, a.id AS app_id, w.id AS id, w.description AS description,"
        " w.metadata AS metadata, w.created_at AS created_at, w.modified_at AS modified_at"
        " FROM workflows w JOIN apps a ON a.seq = w.app_seq WHERE a.user_id = ? AND a.id = ?"
    )

    def get_workflow(self, user_id: str, app_id: str, workflow_id: str) -> WorkflowRecord | None:
        row = self._conn().execute(self._WORKFLOW_SELECT + " AND w.id = ?", (user_id, app_id, workflow_id)).fetchone()
        return workflow_from_row(row) if row else None

    def list_workflows(self, user_id: str, app_id: str, text: str, query: PageQuery) -> Page[WorkflowRecord]:
        sql, params = self._WORKFLOW_SELECT, [user_id, app_id]
        if text:
            sql += " AND lower(w.id) LIKE ? ESCAPE '\\'"
            params.append(like_pattern(text))
        return self._page(sql + " {after}", tuple(params), query, workflow_from_row, seq="w.seq")

    def delete_workflow(self, user_id: str, app_id: str, workflow_id: str) -> bool:
        with self._write() as conn:
            seq = self._workflow_seq(conn, user_id, app_id, workflow_id)
            return seq is not None and conn.execute("DELETE FROM workflows WHERE seq = ?", (seq,)).rowcount > 0

    _WORKFLOW_VERSION_SELECT = (
        "SELECT v.seq AS seq, v.id AS id, v.description AS description, v.nodes AS nodes, v.metadata AS metadata,"
        " v.created_at AS created_at, ? AS user_id, ? AS app_id, ? AS workflow_id"
        " FROM workflow_versions v WHERE v.workflow_seq = ?"
    )

    def _with_pins(self, conn: sqlite3.Connection, rows: list[sqlite3.Row]) -> list[WorkflowVersionRecord]:
        deleted: dict[int, list[tuple[str, str]]] = {row["seq"]: [] for row in rows}
        if deleted:
            marks = ", ".join("?" * len(deleted))
            for pin in conn.execute(
                f"SELECT version_seq, node_id, deleted_reason FROM workflow_pins WHERE version_seq IN ({marks})"
                " AND deleted_reason != '' ORDER BY version_seq, rowid",
                tuple(deleted),
            ):
                deleted[pin[0]].append((pin[1], pin[2]))
        return [workflow_version_from_row(row, deleted[row["seq"]]) for row in rows]

    def get_workflow_version(
        self, user_id: str, app_id: str, workflow_id: str, version_id: str = ""
    ) -> WorkflowVersionRecord | None:
        conn = self._conn()
        seq = self._workflow_seq(conn, user_id, app_id, workflow_id)
        if seq is None:
            return None
        params = (user_id, app_id, workflow_id, seq)
        if version_id:
            row = conn.execute(self._WORKFLOW_VERSION_SELECT + " AND v.id = ?", (*params, version_id)).fetchone()
        else:
            row = conn.execute(self._WORKFLOW_VERSION_SELECT + " ORDER BY v.seq DESC LIMIT 1", params).fetchone()
        return self._with_pins(conn, [row])[0] if row else None

    def list_workflow_versions(
        self, user_id: str, app_id: str, workflow_id: str, query: PageQuery
    ) -> Page[WorkflowVersionRecord]:
        conn = self._conn()
        seq = self._workflow_seq(conn, user_id, app_id, workflow_id)
        if seq is None:
            raise LookupError(f"workflow {workflow_id!r} does not exist")
        page: Page[Any] = self._page(
            self._WORKFLOW_VERSION_SELECT + " {after}",
            (user_id, app_id, workflow_id, seq),
            query,
            lambda row: row,
            seq="v.seq",
        )
        return Page(self._with_pins(conn, page.items), page.next_after)

    def deprecate_workflow_pins(
        self, user_id: str, app_id: str, model_id: str, model_version_id: str, reason: str
    ) -> int:
        sql = "UPDATE workflow_pins SET deleted_reason = ? WHERE user_id = ? AND app_id = ? AND deleted_reason = ''"
        params: tuple[Any, ...] = (reason, user_id, app_id)
        if model_id:  # else the whole app went
            sql, params = sql + " AND model_id = ?", (*params, model_id)
        if model_id and model_version_id:
            sql, params = sql + " AND model_version_id = ?", (*params, model_version_id)
        with self._write() as conn:
            return int(conn.execute(sql, params).rowcount)
