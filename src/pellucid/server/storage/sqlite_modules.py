"""SQLite tables of modules, their versions and installations (a mixin of SqliteMetadataStore)."""

from __future__ import annotations

import sqlite3
from typing import Any

from pellucid.server.records import (
    InstalledModuleVersionRecord,
    ModuleRecord,
    ModuleVersionRecord,
    Page,
    PageQuery,
)
from pellucid.server.storage import module_rows as sql
from pellucid.server.storage.base import Conflict
from pellucid.server.storage.sqlite_connections import like_pattern


class ModuleTables:
    _conn: Any
    _write: Any
    _page: Any
    _app_seq: Any

    def _module_seq(self, conn: sqlite3.Connection, user_id: str, app_id: str, module_id: str) -> int | None:
        row = conn.execute(sql.MODULE_SEQ, (user_id, app_id, module_id)).fetchone()
        return row[0] if row else None

    def insert_module(self, module: ModuleRecord) -> None:
        try:
            with self._write() as conn:
                app_seq = self._app_seq(conn, module.user_id, module.app_id)
                conn.execute(sql.INSERT_MODULE, sql.module_params(app_seq, module))
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    def get_module(self, user_id: str, app_id: str, module_id: str) -> ModuleRecord | None:
        row = self._conn().execute(sql.MODULE_SELECT + " AND m.id = ?", (user_id, app_id, module_id)).fetchone()
        return sql.module_from_row(row) if row else None

    def list_modules(self, user_id: str, app_id: str, text: str, query: PageQuery) -> Page[ModuleRecord]:
        select, params = sql.MODULE_SELECT, [user_id, app_id]
        if text:
            select += " AND lower(m.id) LIKE ? ESCAPE '\\'"
            params.append(like_pattern(text))
        return self._page(select + " {after}", tuple(params), query, sql.module_from_row, seq="m.seq")

    def delete_module(self, user_id: str, app_id: str, module_id: str) -> bool:
        with self._write() as conn:
            seq = self._module_seq(conn, user_id, app_id, module_id)
            return seq is not None and conn.execute("DELETE FROM modules WHERE seq = ?", (seq,)).rowcount > 0

    def insert_module_version(self, version: ModuleVersionRecord) -> None:
        try:
            with self._write() as conn:
                seq = self._module_seq(conn, version.user_id, version.app_id, version.module_id)
                if seq is None:
                    raise LookupError(f"module {version.module_id!r} does not exist")
                conn.execute(sql.INSERT_VERSION, sql.version_params(seq, version))
                conn.execute("UPDATE modules SET modified_at = ? WHERE seq = ?", (version.created_at, seq))
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    def get_module_version(
        self, user_id: str, app_id: str, module_id: str, version_id: str = ""
    ) -> ModuleVersionRecord | None:
        params: tuple[Any, ...] = (user_id, app_id, module_id)
        if version_id:
            row = self._conn().execute(sql.VERSION_SELECT + " AND v.id = ?", (*params, version_id)).fetchone()
        else:
            row = self._conn().execute(sql.VERSION_SELECT + " ORDER BY v.seq DESC LIMIT 1", params).fetchone()
        return sql.module_version_from_row(row) if row else None

    def list_module_versions(
        self, user_id: str, app_id: str, module_id: str, query: PageQuery
    ) -> Page[ModuleVersionRecord]:
        if self._module_seq(self._conn(), user_id, app_id, module_id) is None:
            raise LookupError(f"module {module_id!r} does not exist")
        params = (user_id, app_id, module_id)
        return self._page(sql.VERSION_SELECT + " {after}", params, query, sql.module_version_from_row, seq="v.seq")

    def install_module_version(self, installed: InstalledModuleVersionRecord) -> None:
        v = installed.version
        try:
            with self._write() as conn:
                app_seq = self._app_seq(conn, installed.user_id, installed.app_id)
                row = conn.execute(sql.VERSION_SEQ, (v.user_id, v.app_id, v.module_id, v.id)).fetchone()
                if row is None:
                    raise LookupError(f"version {v.id!r} of module {v.module_id!r} does not exist")
                version_seq, module_seq = row
                conn.execute(sql.UNINSTALL_MODULE, (app_seq, module_seq))
                conn.execute(
                    sql.INSERT_INSTALLED, (app_seq, installed.id, module_seq, version_seq, installed.created_at)
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    def list_installed_module_versions(
        self, user_id: str, app_id: str, module_id: str, query: PageQuery
    ) -> Page[InstalledModuleVersionRecord]:
        select, params = sql.INSTALLED_SELECT, [user_id, app_id]
        if module_id:
            select += " AND m.id = ?"
            params.append(module_id)
        return self._page(select + " {after}", tuple(params), query, sql.installed_from_row, seq="i.seq")
