"""PostgreSQL tables of hosted data (data://): a mixin of PostgresMetadataStore (see sqlite_data.py).

Replicas write at once here, so each file of a batch is its own savepoint: a directory
deleted by another replica meanwhile fails that file alone (a foreign key violation).
"""

from __future__ import annotations

from typing import Any

import psycopg

from pellucid.server.records import DataEntryRecord, Page, PageQuery
from pellucid.server.storage.rows import data_entry_from_row

DATA_SCHEMA = """
CREATE TABLE data_entries (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner TEXT NOT NULL,
    parent_seq BIGINT REFERENCES data_entries(seq) ON DELETE CASCADE,
    name TEXT NOT NULL,
    is_dir BOOLEAN NOT NULL,
    size BIGINT NOT NULL DEFAULT 0,
    sha256 TEXT NOT NULL DEFAULT '',
    acl TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL,
    modified_at DOUBLE PRECISION NOT NULL
);
CREATE UNIQUE INDEX data_collections ON data_entries (owner, name) WHERE parent_seq IS NULL;
CREATE UNIQUE INDEX data_children ON data_entries (parent_seq, name) WHERE parent_seq IS NOT NULL;
CREATE INDEX data_children_by_seq ON data_entries (parent_seq, seq);
CREATE INDEX data_collections_by_seq ON data_entries (owner, seq) WHERE parent_seq IS NULL;
CREATE INDEX data_by_blob ON data_entries (owner, sha256) WHERE sha256 <> ''
"""


class PostgresDataTables:
    _read: Any
    _write: Any

    def data_lookup(self, owner: str, names: list[str]) -> list[DataEntryRecord]:
        found: list[DataEntryRecord] = []
        with self._read() as conn:
            for name in names:
                if not found:
                    row = conn.execute(
                        "SELECT * FROM data_entries WHERE owner = %s AND parent_seq IS NULL AND name = %s",
                        (owner, name),
                    ).fetchone()
                else:
                    row = conn.execute(
                        "SELECT * FROM data_entries WHERE parent_seq = %s AND name = %s", (found[-1].seq, name)
                    ).fetchone()
                if row is None:
                    break
                found.append(data_entry_from_row(row))
        return found

    def data_children(self, parent_seq: int, names: list[str]) -> dict[str, DataEntryRecord]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM data_entries WHERE parent_seq = %s AND name = ANY(%s)",
                (parent_seq, list(dict.fromkeys(names))),
            ).fetchall()
        return {entry.name: entry for entry in map(data_entry_from_row, rows)}

    def data_insert_dir(self, owner: str, parent_seq: int | None, name: str, acl: str, now: float) -> DataEntryRecord:
        with self._write() as conn:  # a unique or foreign key violation is a Conflict
            row = conn.execute(
                "INSERT INTO data_entries (owner, parent_seq, name, is_dir, acl, created_at, modified_at)"
                " VALUES (%s, %s, %s, TRUE, %s, %s, %s) RETURNING *",
                (owner, parent_seq, name, acl, now, now),
            ).fetchone()
            return data_entry_from_row(row)

    def data_put_files(
        self, owner: str, files: list[tuple[int, str, str, int]], now: float
    ) -> list[DataEntryRecord | None]:
        results: list[DataEntryRecord | None] = []
        with self._write() as conn:
            for parent_seq, name, sha256, size in files:
                try:
                    with conn.transaction():  # a savepoint: a parent deleted meanwhile fails this file only
                        row = conn.execute(
                            "INSERT INTO data_entries (owner, parent_seq, name, is_dir, size, sha256, created_at,"
                            " modified_at) VALUES (%s, %s, %s, FALSE, %s, %s, %s, %s)"
                            " ON CONFLICT (parent_seq, name) WHERE parent_seq IS NOT NULL DO UPDATE"
                            " SET size = EXCLUDED.size, sha256 = EXCLUDED.sha256, modified_at = EXCLUDED.modified_at"
                            " WHERE data_entries.is_dir = FALSE RETURNING *",
                            (owner, parent_seq, name, size, sha256, now, now),
                        ).fetchone()
                except psycopg.errors.ForeignKeyViolation:
                    row = None
                results.append(data_entry_from_row(row) if row else None)
        return results

    def data_list(
        self, owner: str, parent_seq: int | None, query: PageQuery, public_only: bool = False
    ) -> Page[DataEntryRecord]:
        params: list[Any]
        if parent_seq is None:
            sql, params = "SELECT * FROM data_entries WHERE owner = %s AND parent_seq IS NULL", [owner]
            if public_only:
                sql += " AND acl = 'public'"
        else:
            sql, params = "SELECT * FROM data_entries WHERE parent_seq = %s", [parent_seq]
        if query.after is not None:
            sql += " AND seq > %s"
            params.append(query.after)
        sql += " ORDER BY seq LIMIT %s OFFSET %s"
        with self._read() as conn:
            rows = conn.execute(sql, (*params, query.limit + 1, query.offset)).fetchall()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        return Page([data_entry_from_row(r) for r in rows], rows[-1]["seq"] if more else None)

    def data_has_children(self, seq: int) -> bool:
        with self._read() as conn:
            return (
                conn.execute("SELECT 1 FROM data_entries WHERE parent_seq = %s LIMIT 1", (seq,)).fetchone() is not None
            )

    def data_delete(self, owner: str, seq: int) -> int:
        with self._write() as conn:
            row = conn.execute(
                "WITH RECURSIVE under(seq) AS (SELECT seq FROM data_entries WHERE seq = %s AND owner = %s"
                " UNION ALL SELECT e.seq FROM data_entries e JOIN under u ON e.parent_seq = u.seq)"
                " SELECT COUNT(*) AS n FROM under",
                (seq, owner),
            ).fetchone()
            conn.execute("DELETE FROM data_entries WHERE seq = %s AND owner = %s", (seq, owner))  # cascades
            return int(row["n"]) if row else 0

    def data_set_acl(self, owner: str, seq: int, acl: str, now: float) -> DataEntryRecord | None:
        with self._write() as conn:
            row = conn.execute(
                "UPDATE data_entries SET acl = %s, modified_at = %s"
                " WHERE seq = %s AND owner = %s AND parent_seq IS NULL RETURNING *",
                (acl, now, seq, owner),
            ).fetchone()
            return data_entry_from_row(row) if row else None

    def referenced_data_blobs(self, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        if not pairs:
            return set()
        with self._read() as conn:
            rows = conn.execute(
                "SELECT DISTINCT d.owner AS owner, d.sha256 AS sha256 FROM data_entries d"
                " JOIN unnest(%s::text[], %s::text[]) AS p(owner, sha256) ON d.owner = p.owner AND d.sha256 = p.sha256",
                ([o for o, _ in pairs], [s for _, s in pairs]),
            ).fetchall()
        return {(r["owner"], r["sha256"]) for r in rows}
