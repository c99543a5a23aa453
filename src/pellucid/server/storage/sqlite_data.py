"""SQLite tables of hosted data (data://): a mixin of SqliteMetadataStore.

One table of entries keyed by (parent, name), collections by (owner, name); a directory's
listing is a keyset scan of the (parent_seq, seq) index, so every page costs the same
however deep into a large directory it is. Deleting a directory cascades through the
foreign key to everything under it. Seqs are never reused (AUTOINCREMENT): a parent seq a
caller looked up before its directory was deleted must not name a newer directory.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from pellucid.server.records import DataEntryRecord, Page, PageQuery
from pellucid.server.storage.base import Conflict
from pellucid.server.storage.rows import data_entry_from_row

DATA_SCHEMA = """
CREATE TABLE data_entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    parent_seq INTEGER REFERENCES data_entries(seq) ON DELETE CASCADE,
    name TEXT NOT NULL,
    is_dir INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT NOT NULL DEFAULT '',
    acl TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    modified_at REAL NOT NULL
);
CREATE UNIQUE INDEX data_collections ON data_entries(owner, name) WHERE parent_seq IS NULL;
CREATE UNIQUE INDEX data_children ON data_entries(parent_seq, name) WHERE parent_seq IS NOT NULL;
CREATE INDEX data_children_by_seq ON data_entries(parent_seq, seq);
CREATE INDEX data_collections_by_seq ON data_entries(owner, seq) WHERE parent_seq IS NULL;
CREATE INDEX data_by_blob ON data_entries(owner, sha256) WHERE sha256 != ''
"""
_IN_BATCH = 900  # host parameters per IN (...) list, under SQLite's limit


class DataTables:
    _conn: Any
    _write: Any

    def data_lookup(self, owner: str, names: list[str]) -> list[DataEntryRecord]:
        conn: sqlite3.Connection = self._conn()
        found: list[DataEntryRecord] = []
        for name in names:
            if not found:
                row = conn.execute(
                    "SELECT * FROM data_entries WHERE owner = ? AND parent_seq IS NULL AND name = ?", (owner, name)
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT * FROM data_entries WHERE parent_seq = ? AND name = ?", (found[-1].seq, name)
                ).fetchone()
            if row is None:
                break
            found.append(data_entry_from_row(row))
        return found

    def data_children(self, parent_seq: int, names: list[str]) -> dict[str, DataEntryRecord]:
        conn: sqlite3.Connection = self._conn()
        found: dict[str, DataEntryRecord] = {}
        unique = list(dict.fromkeys(names))
        for start in range(0, len(unique), _IN_BATCH):
            part = unique[start : start + _IN_BATCH]
            rows = conn.execute(
                f"SELECT * FROM data_entries WHERE parent_seq = ? AND name IN ({','.join('?' * len(part))})",
                (parent_seq, *part),
            )
            found.update((entry.name, entry) for entry in map(data_entry_from_row, rows))
        return found

    def data_insert_dir(self, owner: str, parent_seq: int | None, name: str, acl: str, now: float) -> DataEntryRecord:
        try:
            with self._write() as conn:
                row = conn.execute(
                    "INSERT INTO data_entries (owner, parent_seq, name, is_dir, acl, created_at, modified_at)"
                    " VALUES (?, ?, ?, 1, ?, ?, ?) RETURNING *",
                    (owner, parent_seq, name, acl, now, now),
                ).fetchone()
                return data_entry_from_row(row)
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    def data_put_files(
        self, owner: str, files: list[tuple[int, str, str, int]], now: float
    ) -> list[DataEntryRecord | None]:
        results: list[DataEntryRecord | None] = []
        with self._write() as conn:
            for parent_seq, name, sha256, size in files:
                if conn.execute("SELECT 1 FROM data_entries WHERE seq = ?", (parent_seq,)).fetchone() is None:
                    results.append(None)  # the directory was deleted meanwhile (one writer: no race after this)
                    continue
                row = conn.execute(
                    "INSERT INTO data_entries (owner, parent_seq, name, is_dir, size, sha256, created_at, modified_at)"
                    " VALUES (?, ?, ?, 0, ?, ?, ?, ?)"
                    " ON CONFLICT (parent_seq, name) WHERE parent_seq IS NOT NULL DO UPDATE"
                    " SET size = excluded.size, sha256 = excluded.sha256, modified_at = excluded.modified_at"
                    " WHERE data_entries.is_dir = 0 RETURNING *",
                    (owner, parent_seq, name, size, sha256, now, now),
                ).fetchone()
                results.append(data_entry_from_row(row) if row else None)
        return results

    def data_list(
        self, owner: str, parent_seq: int | None, query: PageQuery, public_only: bool = False
    ) -> Page[DataEntryRecord]:
        params: list[Any]
        if parent_seq is None:
            sql, params = "SELECT * FROM data_entries WHERE owner = ? AND parent_seq IS NULL", [owner]
            if public_only:
                sql += " AND acl = 'public'"
        else:
            sql, params = "SELECT * FROM data_entries WHERE parent_seq = ?", [parent_seq]
        if query.after is not None:
            sql += " AND seq > ?"
            params.append(query.after)
        sql += " ORDER BY seq LIMIT ? OFFSET ?"
        rows = self._conn().execute(sql, (*params, query.limit + 1, query.offset)).fetchall()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        return Page([data_entry_from_row(r) for r in rows], rows[-1]["seq"] if more else None)

    def data_has_children(self, seq: int) -> bool:
        return (
            self._conn().execute("SELECT 1 FROM data_entries WHERE parent_seq = ? LIMIT 1", (seq,)).fetchone()
            is not None
        )

    def data_delete(self, owner: str, seq: int) -> int:
        with self._write() as conn:
            count = conn.execute(
                "WITH RECURSIVE under(seq) AS (SELECT seq FROM data_entries WHERE seq = ? AND owner = ?"
                " UNION ALL SELECT e.seq FROM data_entries e JOIN under u ON e.parent_seq = u.seq)"
                " SELECT COUNT(*) FROM under",
                (seq, owner),
            ).fetchone()[0]
            conn.execute("DELETE FROM data_entries WHERE seq = ? AND owner = ?", (seq, owner))  # cascades
            return int(count)

    def data_set_acl(self, owner: str, seq: int, acl: str, now: float) -> DataEntryRecord | None:
        with self._write() as conn:
            row = conn.execute(
                "UPDATE data_entries SET acl = ?, modified_at = ? WHERE seq = ? AND owner = ? AND parent_seq IS NULL"
                " RETURNING *",
                (acl, now, seq, owner),
            ).fetchone()
            return data_entry_from_row(row) if row else None

    def referenced_data_blobs(self, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        conn: sqlite3.Connection = self._conn()
        held = set()
        for owner, sha256 in pairs:
            if conn.execute(
                "SELECT 1 FROM data_entries WHERE owner = ? AND sha256 = ? LIMIT 1", (owner, sha256)
            ).fetchone():
                held.add((owner, sha256))
        return held
