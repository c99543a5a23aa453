"""SQLite tables of models, model versions and runners (a mixin of SqliteMetadataStore)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from pellucid.server.records import (
    ModelRecord,
    ModelVersionRecord,
    Page,
    PageQuery,
    RunnerRecord,
)
from pellucid.server.storage.base import Conflict
from pellucid.server.storage.rows import (
    feature_specs_json,
    model_from_row,
    model_version_from_row,
    output_info_json,
    runner_from_row,
)
from pellucid.server.storage.sqlite_connections import like_pattern


class ModelTables:
    _conn: Any
    _write: Any
    _page: Any
    _app_seq: Any

    def _model_seq(self, conn: sqlite3.Connection, user_id: str, app_id: str, model_id: str) -> int | None:
        row = conn.execute(
            "SELECT m.seq FROM models m JOIN apps a ON a.seq = m.app_seq WHERE a.user_id = ? AND a.id = ? AND m.id = ?",
            (user_id, app_id, model_id),
        ).fetchone()
        return row[0] if row else None

    def insert_model(self, model: ModelRecord, version: ModelVersionRecord) -> None:
        try:
            with self._write() as conn:
                cursor = conn.execute(
                    "INSERT INTO models (app_seq, id, name, description, model_type_id, input_fields, output_fields, feature_specs,"
                    " created_at, modified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                )
                self._insert_version(conn, cursor.lastrowid, version)
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    @staticmethod
    def _insert_version(conn: sqlite3.Connection, model_seq: int, v: ModelVersionRecord) -> None:
        conn.execute(
            "INSERT INTO model_versions (model_seq, id, description, output_info, runner_labels, item_timeout_seconds,"
            " metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
        " FROM models m JOIN apps a ON a.seq = m.app_seq WHERE a.user_id = ? AND a.id = ?"
    )

    def get_model(self, user_id: str, app_id: str, model_id: str) -> ModelRecord | None:
        row = self._conn().execute(self._MODEL_SELECT + " AND m.id = ?", (user_id, app_id, model_id)).fetchone()
        return model_from_row(row) if row else None

    def list_models(self, user_id: str, app_id: str, text: str, query: PageQuery) -> Page[ModelRecord]:
        sql, params = self._MODEL_SELECT, [user_id, app_id]
        if text:
            pattern = like_pattern(text)
            sql += " AND (lower(m.id) LIKE ? ESCAPE '\\' OR lower(m.name) LIKE ? ESCAPE '\\')"
            params += [pattern, pattern]
        return self._page(sql + " {after}", tuple(params), query, model_from_row, seq="m.seq")

    def delete_model(self, user_id: str, app_id: str, model_id: str) -> bool:
        with self._write() as conn:
            seq = self._model_seq(conn, user_id, app_id, model_id)
            return seq is not None and conn.execute("DELETE FROM models WHERE seq = ?", (seq,)).rowcount > 0

    def insert_model_version(self, version: ModelVersionRecord) -> None:
        try:
            with self._write() as conn:
                seq = self._model_seq(conn, version.user_id, version.app_id, version.model_id)
                if seq is None:
                    raise LookupError(f"model {version.model_id!r} does not exist")
                self._insert_version(conn, seq, version)
                conn.execute("UPDATE models SET modified_at = ? WHERE seq = ?", (version.created_at, seq))
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    _VERSION_SELECT = (
        "SELECT v.seq AS seq, v.id AS id, v.description AS description, v.output_info AS output_info,"
        " v.runner_labels AS runner_labels, v.item_timeout_seconds AS item_timeout_seconds, v.metadata AS metadata,"
        " v.created_at AS created_at, ? AS user_id, ? AS app_id, ? AS model_id FROM model_versions v WHERE v.model_seq = ?"
    )

    def get_model_version(
        self, user_id: str, app_id: str, model_id: str, version_id: str = ""
    ) -> ModelVersionRecord | None:
        conn = self._conn()
        seq = self._model_seq(conn, user_id, app_id, model_id)
        if seq is None:
            return None
        params = (user_id, app_id, model_id, seq)
        if version_id:
            row = conn.execute(self._VERSION_SELECT + " AND v.id = ?", (*params, version_id)).fetchone()
        else:
            row = conn.execute(self._VERSION_SELECT + " ORDER BY v.seq DESC LIMIT 1", params).fetchone()
        return model_version_from_row(row) if row else None

    def list_model_versions(
        self, user_id: str, app_id: str, model_id: str, query: PageQuery
    ) -> Page[ModelVersionRecord]:
        conn = self._conn()
        seq = self._model_seq(conn, user_id, app_id, model_id)
        if seq is None:
            raise LookupError(f"model {model_id!r} does not exist")
        return self._page(
            self._VERSION_SELECT + " {after}",
            (user_id, app_id, model_id, seq),
            query,
            model_version_from_row,
            seq="v.seq",
        )

    def delete_model_version(self, user_id: str, app_id: str, model_id: str, version_id: str) -> bool:
        with self._write() as conn:
            seq = self._model_seq(conn, user_id, app_id, model_id)
            return (
                seq is not None
                and conn.execute(
                    "DELETE FROM model_versions WHERE model_seq = ? AND id = ?", (seq, version_id)
                ).rowcount
                > 0
            )

    # runners

    def insert_runner(self, runner: RunnerRecord) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO runners (user_id, id, labels, description, created_at) VALUES (?, ?, ?, ?, ?)",
                    (runner.user_id, runner.id, json.dumps(list(runner.labels)), runner.description, runner.created_at),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    def get_runner(self, user_id: str, runner_id: str) -> RunnerRecord | None:
        row = (
            self._conn().execute("SELECT * FROM runners WHERE user_id = ? AND id = ?", (user_id, runner_id)).fetchone()
        )
        return runner_from_row(row) if row else None

    def list_runners(self, user_id: str, labels: tuple[str, ...], query: PageQuery) -> Page[RunnerRecord]:
        sql = (
            "SELECT * FROM runners WHERE user_id = ? AND NOT EXISTS (SELECT 1 FROM json_each(?) wanted"
            " WHERE wanted.value NOT IN (SELECT value FROM json_each(runners.labels))) {after}"
        )
        return self._page(sql, (user_id, json.dumps(list(labels))), query, runner_from_row)

    def update_runner(self, runner: RunnerRecord) -> bool:
        with self._write() as conn:
            return (
                conn.execute(
                    "UPDATE runners SET labels = ?, description = ? WHERE user_id = ? AND id = ?",
                    (json.dumps(list(runner.labels)), runner.description, runner.user_id, runner.id),
                ).rowcount
                > 0
            )

    def delete_runner(self, user_id: str, runner_id: str) -> bool:
        with self._write() as conn:
            return conn.execute("DELETE FROM runners WHERE user_id = ? AND id = ?", (user_id, runner_id)).rowcount > 0
