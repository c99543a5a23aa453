"""SQLite tables of datasets, dataset versions, inputs, annotations and input jobs.

A mixin of SqliteMetadataStore: it uses its connections, transactions and pages.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from typing import Any

from pellucid.server.records import (
    AnnotationRecord,
    ConceptRecord,
    DatasetRecord,
    DatasetStats,
    DatasetVersionRecord,
    IngestItem,
    InputRecord,
    JobRecord,
    Page,
    PageQuery,
)
from pellucid.server.storage.base import AnnotationResult, Conflict, IngestResult
from pellucid.server.storage.rows import (
    all_concepts,
    annotation_from_row,
    concepts_json,
    dataset_from_row,
    dataset_version_from_row,
    input_from_row,
    regions_json,
    stats_from_json,
)
from pellucid.server.storage.search_terms import annotation_rows, label_rows, term_rows
from pellucid.server.storage.sqlite_connections import insert_rows, insert_rows_returning
from pellucid.server.storage.sqlite_schema import CONCEPT_INSERT, TERM_INSERT

_INPUT_COLUMNS = (
    "id, input_type, content_key, media_sha256, media_size, media_mime, media_url, width, height, text, text_url,"
    " metadata, geo_lon, geo_lat, labels, created_at, index_state"
)
# every column of an InputRecord, from `inputs i`
INPUT_SELECT = (
    "i.seq AS seq, "
    + ", ".join(f"i.{c.strip()} AS {c.strip()}" for c in _INPUT_COLUMNS.split(","))
    + (", i.index_message AS index_message")
)


class InputTables:
    """Datasets, versions, inputs, annotations and jobs (needs _conn, _write, _page, _app_seq)."""

    _conn: Any
    _write: Any
    _page: Any
    INPUT_SELECT = INPUT_SELECT

    def _app_seq(self, conn: sqlite3.Connection, user_id: str, app_id: str) -> int:
        row = conn.execute("SELECT seq FROM apps WHERE user_id = ? AND id = ?", (user_id, app_id)).fetchone()
        if row is None:
            raise LookupError(f"app {app_id!r} of user {user_id!r} does not exist")
        return row[0]

    def _dataset_seq(self, conn: sqlite3.Connection, app_seq: int, dataset_id: str) -> int:
        row = conn.execute("SELECT seq FROM datasets WHERE app_seq = ? AND id = ?", (app_seq, dataset_id)).fetchone()
        if row is None:
            raise LookupError(f"dataset {dataset_id!r} does not exist")
        return row[0]

    # datasets

    def insert_dataset(self, dataset: DatasetRecord) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO datasets (app_seq, id, description, metadata, created_at, modified_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        self._app_seq(conn, dataset.user_id, dataset.app_id),
                        dataset.id,
                        dataset.description,
                        json.dumps(dataset.metadata),
                        dataset.created_at,
                        dataset.modified_at,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    _DATASET_SELECT = (
        "SELECT d.seq AS seq, a.user_id AS user_id, a.id AS app_id, d.id AS id, d.description AS description,"
        " d.metadata AS metadata, d.created_at AS created_at, d.modified_at AS modified_at,"
        " (SELECT COUNT(*) FROM dataset_inputs di WHERE di.dataset_seq = d.seq) AS input_count"
        " FROM datasets d JOIN apps a ON a.seq = d.app_seq WHERE a.user_id = ? AND a.id = ?"
    )

    def get_dataset(self, user_id: str, app_id: str, dataset_id: str) -> DatasetRecord | None:
        row = self._conn().execute(self._DATASET_SELECT + " AND d.id = ?", (user_id, app_id, dataset_id)).fetchone()
        return dataset_from_row(row) if row else None

    def existing_datasets(self, user_id: str, app_id: str, dataset_ids: list[str]) -> set[str]:
        if not dataset_ids:
            return set()
        rows = self._conn().execute(
            f"SELECT d.id FROM datasets d JOIN apps a ON a.seq = d.app_seq WHERE a.user_id = ? AND a.id = ?"
            f" AND d.id IN ({','.join('?' * len(dataset_ids))})",
            (user_id, app_id, *dataset_ids),
        )
        return {r[0] for r in rows}

    def list_datasets(self, user_id: str, app_id: str, query: PageQuery) -> Page[DatasetRecord]:
        return self._page(self._DATASET_SELECT + " {after}", (user_id, app_id), query, dataset_from_row, seq="d.seq")

    def delete_dataset(self, user_id: str, app_id: str, dataset_id: str, delete_inputs: bool) -> bool:
        with self._write() as conn:
            try:
                dataset_seq = self._dataset_seq(conn, self._app_seq(conn, user_id, app_id), dataset_id)
            except LookupError:
                return False
            if delete_inputs:
                conn.execute(
                    "DELETE FROM inputs WHERE seq IN (SELECT di.input_seq FROM dataset_inputs di WHERE di.dataset_seq = ?"
                    " AND NOT EXISTS (SELECT 1 FROM dataset_inputs o WHERE o.input_seq = di.input_seq AND o.dataset_seq != ?))",
                    (dataset_seq, dataset_seq),
                )
            conn.execute("DELETE FROM datasets WHERE seq = ?", (dataset_seq,))
            return True

    def _stats(self, conn: sqlite3.Connection, membership: str, key: int) -> DatasetStats:
        """Stats over the inputs of `membership` (dataset_inputs or dataset_version_inputs) row `key`."""
        column = "dataset_seq" if membership == "dataset_inputs" else "version_seq"
        by_type = dict(
            conn.execute(
                f"SELECT i.input_type, COUNT(*) FROM {membership} m JOIN inputs i ON i.seq = m.input_seq"
                f" WHERE m.{column} = ? GROUP BY i.input_type",
                (key,),
            ).fetchall()
        )
        annotations, regions, concepts = 0, 0, Counter[str]()
        rows = conn.execute(
            f"SELECT a.concepts, a.regions FROM {membership} m JOIN annotations a ON a.input_seq = m.input_seq"
            f" WHERE m.{column} = ?",
            (key,),
        )
        for concepts_text, regions_text in rows:
            annotations += 1
            concepts.update(c["id"] for c in json.loads(concepts_text))
            for region in json.loads(regions_text):
                regions += 1
                concepts.update(c["id"] for c in region["concepts"])
        return DatasetStats(
            inputs=sum(by_type.values()),
            inputs_by_type=by_type,
            annotations=annotations,
            regions=regions,
            concept_counts=dict(concepts),
        )

    def dataset_stats(self, user_id: str, app_id: str, dataset_id: str, version_id: str = "") -> DatasetStats:
        conn = self._conn()
        dataset_seq = self._dataset_seq(conn, self._app_seq(conn, user_id, app_id), dataset_id)
        if not version_id:
            return self._stats(conn, "dataset_inputs", dataset_seq)
        row = conn.execute(
            "SELECT stats FROM dataset_versions WHERE dataset_seq = ? AND id = ?", (dataset_seq, version_id)
        ).fetchone()
        if row is None:
            raise LookupError(f"version {version_id!r} of dataset {dataset_id!r} does not exist")
        return stats_from_json(row[0])

    def insert_dataset_version(self, version: DatasetVersionRecord) -> DatasetVersionRecord:
        try:
            with self._write() as conn:
                dataset_seq = self._dataset_seq(
                    conn, self._app_seq(conn, version.user_id, version.app_id), version.dataset_id
                )
                stats = self._stats(conn, "dataset_inputs", dataset_seq)
                cursor = conn.execute(
                    "INSERT INTO dataset_versions (dataset_seq, id, description, metadata, stats, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        dataset_seq,
                        version.id,
                        version.description,
                        json.dumps(version.metadata),
                        json.dumps(stats.__dict__),
                        version.created_at,
                    ),
                )
                conn.execute(
                    "INSERT INTO dataset_version_inputs (version_seq, input_seq) SELECT ?, input_seq FROM dataset_inputs WHERE dataset_seq = ?",
                    (cursor.lastrowid, dataset_seq),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None
        return DatasetVersionRecord(**{**version.__dict__, "stats": stats})

    def list_dataset_versions(
        self, user_id: str, app_id: str, dataset_id: str, query: PageQuery
    ) -> Page[DatasetVersionRecord]:
        sql = (
            "SELECT v.seq AS seq, v.id AS id, v.description AS description, v.metadata AS metadata, v.stats AS stats,"
            " v.created_at AS created_at, ? AS user_id, ? AS app_id, ? AS dataset_id FROM dataset_versions v"
            " WHERE v.dataset_seq = ? {after}"
        )
        conn = self._conn()
        dataset_seq = self._dataset_seq(conn, self._app_seq(conn, user_id, app_id), dataset_id)
        return self._page(sql, (user_id, app_id, dataset_id, dataset_seq), query, dataset_version_from_row, seq="v.seq")

    def delete_dataset_version(self, user_id: str, app_id: str, dataset_id: str, version_id: str) -> bool:
        with self._write() as conn:
            try:
                dataset_seq = self._dataset_seq(conn, self._app_seq(conn, user_id, app_id), dataset_id)
            except LookupError:
                return False
            return (
                conn.execute(
                    "DELETE FROM dataset_versions WHERE dataset_seq = ? AND id = ?", (dataset_seq, version_id)
                ).rowcount
                > 0
            )

    # inputs

    def ingest(
        self, user_id: str, app_id: str, items: list[IngestItem], concepts: list[ConceptRecord], job: JobRecord | None
    ) -> tuple[list[IngestResult], JobRecord | None]:
        outcomes: list[IngestResult] = []
        with self._write() as conn:
            app_seq = self._app_seq(conn, user_id, app_id)
            if concepts:
                insert_rows(
                    conn,
                    "INSERT INTO concepts (app_seq, id, name, created_at)",
                    [(app_seq, c.id, c.name, c.created_at) for c in concepts],
                    "ON CONFLICT DO NOTHING",
                )
            known = self._input_keys(conn, app_seq, [item.input.id for item in items])
            rows: list[tuple[Any, ...]] = []
            fresh: dict[str, str] = {}
            for item in items:  # set-based: one statement per table for the whole batch
                record = item.input
                key = known.get(record.id, (None, None))[1] or fresh.get(record.id)
                if key is None:
                    fresh[record.id] = record.content_key
                    outcomes.append(IngestResult.NEW)
                    rows.append(
                        (
                            app_seq,
                            record.id,
                            record.input_type,
                            record.content_key,
                            record.media_sha256,
                            record.media_size,
                            record.media_mime,
                            record.media_url,
                            record.width,
                            record.height,
                            record.text,
                            record.text_url,
                            json.dumps(record.metadata) if record.metadata else "{}",
                            record.geo[0] if record.geo else None,
                            record.geo[1] if record.geo else None,
                            concepts_json(record.labels),
                            record.created_at,
                            int(record.index_state),
                        )
                    )
                else:
                    outcomes.append(IngestResult.DUPLICATE if key == record.content_key else IngestResult.CONFLICT)
            if rows:
                insert_rows(conn, f"INSERT INTO inputs (app_seq, {_INPUT_COLUMNS})", rows)
                known.update(self._input_keys(conn, app_seq, list(fresh)))
                self._index_new_inputs(conn, app_seq, items, outcomes, known)
            dataset_seqs: dict[str, int] = {}
            memberships, annotations = [], []
            for item, outcome in zip(items, outcomes):
                if outcome is IngestResult.CONFLICT:
                    continue
                record = item.input
                input_seq = known[record.id][0]
                for dataset_id in record.dataset_ids:
                    if dataset_id not in dataset_seqs:
                        dataset_seqs[dataset_id] = self._dataset_seq(conn, app_seq, dataset_id)
                    memberships.append((dataset_seqs[dataset_id], input_seq))
                annotations += [
                    (input_seq, a.id, concepts_json(a.concepts), regions_json(a.regions), a.created_at)
                    for a in item.annotations
                ]
            if memberships:
                insert_rows(
                    conn, "INSERT INTO dataset_inputs (dataset_seq, input_seq)", memberships, "ON CONFLICT DO NOTHING"
                )
            if annotations:
                inserted = insert_rows_returning(
                    conn,
                    "INSERT INTO annotations (input_seq, id, concepts, regions, created_at)",
                    annotations,
                    "ON CONFLICT DO NOTHING",
                    "seq, input_seq, id",
                )
                by_key: dict[tuple[int, str], AnnotationRecord] = {}
                for item, outcome in zip(items, outcomes):
                    if outcome is not IngestResult.CONFLICT:
                        for a in item.annotations:  # the first of an id is the one stored
                            by_key.setdefault((known[item.input.id][0], a.id), a)
                insert_rows(
                    conn,
                    CONCEPT_INSERT,
                    [
                        row
                        for seq, input_seq, annotation_id in inserted
                        for row in annotation_rows(app_seq, input_seq, seq, by_key[(input_seq, annotation_id)])
                    ],
                )
            totals = None
            if job is not None:
                counts = Counter(outcomes)
                conn.execute(
                    "INSERT INTO input_jobs (app_seq, id, received, stored, duplicates, failed, created_at, modified_at)"
                    " VALUES (?, ?, 0, 0, 0, 0, ?, ?) ON CONFLICT DO NOTHING",
                    (app_seq, job.id, job.created_at, job.modified_at),
                )
                conn.execute(
                    "UPDATE input_jobs SET received = received + ?, stored = stored + ?, duplicates = duplicates + ?,"
                    " failed = failed + ?, modified_at = ? WHERE app_seq = ? AND id = ?",
                    (
                        job.received,
                        counts[IngestResult.NEW],
                        counts[IngestResult.DUPLICATE],
                        job.failed + counts[IngestResult.CONFLICT],
                        job.modified_at,
                        app_seq,
                        job.id,
                    ),
                )
                totals = self._job(conn, user_id, app_id, app_seq, job.id)
        return outcomes, totals

    @staticmethod
    def _index_new_inputs(
        conn: sqlite3.Connection,
        app_seq: int,
        items: list[IngestItem],
        outcomes: list[IngestResult],
        known: dict[str, tuple[int, str]],
    ) -> None:
        """The concept rows of new inputs' labels and the terms of their metadata (filters read those)."""
        concepts: list[tuple[Any, ...]] = []
        terms: list[tuple[Any, ...]] = []
        for item, outcome in zip(items, outcomes):
            record = item.input
            if outcome is IngestResult.NEW and (record.labels or record.metadata):
                seq = known[record.id][0]
                concepts += label_rows(app_seq, seq, record.labels)
                terms += term_rows(app_seq, seq, record.metadata)
        insert_rows(conn, CONCEPT_INSERT, concepts)
        insert_rows(conn, TERM_INSERT, terms, "ON CONFLICT DO NOTHING")

    @staticmethod
    def _input_keys(conn: sqlite3.Connection, app_seq: int, input_ids: list[str]) -> dict[str, tuple[int, str]]:
        """seq and content key of those of `input_ids` that exist."""
        found = {}
        for start in range(0, len(input_ids), 900):
            part = input_ids[start : start + 900]
            for input_id, seq, key in conn.execute(
                f"SELECT id, seq, content_key FROM inputs WHERE app_seq = ? AND id IN ({','.join('?' * len(part))})",
                (app_seq, *part),
            ):
                found[input_id] = (seq, key)
        return found

    def referenced_blobs(self, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        wanted, found = set(pairs), set[tuple[str, str]]()
        digests = sorted({sha256 for _, sha256 in wanted})
        conn = self._conn()
        for start in range(0, len(digests), 900):
            part = digests[start : start + 900]
            rows = conn.execute(  # media_sha256 != '' lets SQLite use the partial index inputs_by_media
                f"SELECT DISTINCT a.user_id, i.media_sha256 FROM inputs i JOIN apps a ON a.seq = i.app_seq"
                f" WHERE i.media_sha256 != '' AND i.media_sha256 IN ({','.join('?' * len(part))})",
                part,
            )
            found.update(pair for pair in map(tuple, rows) if pair in wanted)
        return found

    def blob_references(self) -> Iterator[tuple[str, str]]:
        rows = self._conn().execute(
            "SELECT DISTINCT a.user_id, i.media_sha256 FROM inputs i JOIN apps a ON a.seq = i.app_seq"
            " WHERE i.media_sha256 != ''"
        )
        yield from ((user_id, sha256) for user_id, sha256 in rows)

    def _job(self, conn: sqlite3.Connection, user_id: str, app_id: str, app_seq: int, job_id: str) -> JobRecord | None:
        row = conn.execute("SELECT * FROM input_jobs WHERE app_seq = ? AND id = ?", (app_seq, job_id)).fetchone()
        if row is None:
            return None
        return JobRecord(
            user_id=user_id,
            app_id=app_id,
            id=row["id"],
            created_at=row["created_at"],
            modified_at=row["modified_at"],
            received=row["received"],
            stored=row["stored"],
            duplicates=row["duplicates"],
            failed=row["failed"],
        )

    def get_job(self, user_id: str, app_id: str, job_id: str) -> JobRecord | None:
        conn = self._conn()
        return self._job(conn, user_id, app_id, self._app_seq(conn, user_id, app_id), job_id)

    def _with_datasets(
        self, conn: sqlite3.Connection, user_id: str, app_id: str, rows: list[sqlite3.Row]
    ) -> list[InputRecord]:
        if not rows:
            return []
        seqs = [r["seq"] for r in rows]
        memberships: dict[int, list[str]] = {}
        for start in range(0, len(seqs), 900):
            part = seqs[start : start + 900]
            for input_seq, dataset_id in conn.execute(
                f"SELECT di.input_seq, d.id FROM dataset_inputs di JOIN datasets d ON d.seq = di.dataset_seq"
                f" WHERE di.input_seq IN ({','.join('?' * len(part))}) ORDER BY d.seq",
                part,
            ):
                memberships.setdefault(input_seq, []).append(dataset_id)
        return [input_from_row(user_id, app_id, r, tuple(memberships.get(r["seq"], ()))) for r in rows]

    def get_inputs(self, user_id: str, app_id: str, input_ids: list[str]) -> dict[str, InputRecord]:
        conn = self._conn()
        app_seq = self._app_seq(conn, user_id, app_id)
        rows: list[sqlite3.Row] = []
        for start in range(0, len(input_ids), 900):
            part = input_ids[start : start + 900]
            rows += conn.execute(
                f"SELECT {INPUT_SELECT} FROM inputs i WHERE i.app_seq = ? AND i.id IN ({','.join('?' * len(part))})",
                (app_seq, *part),
            ).fetchall()
        return {r.id: r for r in self._with_datasets(conn, user_id, app_id, rows)}

    def list_inputs(
        self,
        user_id: str,
        app_id: str,
        query: PageQuery,
        dataset_id: str = "",
        version_id: str = "",
        input_type: str = "",
        ids: list[str] | None = None,
    ) -> Page[InputRecord]:
        conn = self._conn()
        app_seq = self._app_seq(conn, user_id, app_id)
        columns = ", ".join(f"i.{c.strip()}" for c in _INPUT_COLUMNS.split(",")) + ", i.index_message"
        params: list[Any] = []
        if version_id:
            dataset_seq = self._dataset_seq(conn, app_seq, dataset_id)
            row = conn.execute(
                "SELECT seq FROM dataset_versions WHERE dataset_seq = ? AND id = ?", (dataset_seq, version_id)
            ).fetchone()
            if row is None:
                raise LookupError(f"version {version_id!r} of dataset {dataset_id!r} does not exist")
            sql = f"SELECT m.input_seq AS seq, {columns} FROM dataset_version_inputs m JOIN inputs i ON i.seq = m.input_seq WHERE m.version_seq = ?"
            params.append(row[0])
            seq = "m.input_seq"
        elif dataset_id:
            sql = f"SELECT m.input_seq AS seq, {columns} FROM dataset_inputs m JOIN inputs i ON i.seq = m.input_seq WHERE m.dataset_seq = ?"
            params.append(self._dataset_seq(conn, app_seq, dataset_id))
            seq = "m.input_seq"
        else:
            sql = f"SELECT i.seq AS seq, {columns} FROM inputs i WHERE i.app_seq = ?"
            params.append(app_seq)
            seq = "i.seq"
        if input_type:
            sql += " AND i.input_type = ?"
            params.append(input_type)
        if ids:
            sql += f" AND i.id IN ({','.join('?' * len(ids))})"
            params += ids
        page = self._page(sql + " {after}", tuple(params), query, lambda r: r, seq=seq)
        return Page(self._with_datasets(conn, user_id, app_id, page.items), page.next_after)

    def delete_inputs(self, user_id: str, app_id: str, input_ids: list[str]) -> list[bool]:
        with self._write() as conn:
            app_seq = self._app_seq(conn, user_id, app_id)
            return [
                conn.execute("DELETE FROM inputs WHERE app_seq = ? AND id = ?", (app_seq, i)).rowcount > 0
                for i in input_ids
            ]

    # annotations

    def put_annotations(
        self, user_id: str, app_id: str, annotations: list[AnnotationRecord], replace: bool
    ) -> list[AnnotationResult]:
        outcomes = []
        with self._write() as conn:
            app_seq = self._app_seq(conn, user_id, app_id)
            for a in annotations:
                row = conn.execute(
                    "SELECT seq FROM inputs WHERE app_seq = ? AND id = ?", (app_seq, a.input_id)
                ).fetchone()
                if row is None:
                    outcomes.append(AnnotationResult.MISSING_INPUT)
                    continue
                values = (concepts_json(a.concepts), regions_json(a.regions))
                new = _first(  # RETURNING rows are read to the end: no statement is left in progress
                    conn.execute(
                        "INSERT INTO annotations (input_seq, id, concepts, regions, created_at) VALUES (?, ?, ?, ?, ?)"
                        " ON CONFLICT DO NOTHING RETURNING seq",
                        (row[0], a.id, *values, a.created_at),
                    ).fetchall()
                )
                if new is not None:
                    outcomes.append(AnnotationResult.NEW)
                elif replace:
                    new = _first(
                        conn.execute(
                            "UPDATE annotations SET concepts = ?, regions = ? WHERE input_seq = ? AND id = ? RETURNING seq",
                            (*values, row[0], a.id),
                        ).fetchall()
                    )
                    assert new is not None  # the insert found it, in this same write transaction
                    conn.execute("DELETE FROM input_concepts WHERE annotation_seq = ?", (new[0],))
                    outcomes.append(AnnotationResult.UPDATED)
                else:
                    outcomes.append(AnnotationResult.DUPLICATE)
                    continue
                insert_rows(conn, CONCEPT_INSERT, annotation_rows(app_seq, row[0], new[0], a))
            concept_ids = {c.id: c.name for a in annotations for c in all_concepts(a)}
            conn.executemany(
                "INSERT INTO concepts (app_seq, id, name, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(app_seq, cid, name or cid, annotations[0].created_at) for cid, name in concept_ids.items()],
            )
        return outcomes

    _ANNOTATION_SELECT = (
        "SELECT a.seq AS seq, i.id AS input_id, a.id AS id, a.concepts AS concepts, a.regions AS regions,"
        " a.created_at AS created_at FROM annotations a JOIN inputs i ON i.seq = a.input_seq WHERE i.app_seq = ?"
    )

    def get_annotations(
        self, user_id: str, app_id: str, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], AnnotationRecord]:
        conn = self._conn()
        app_seq = self._app_seq(conn, user_id, app_id)
        found = {}
        for input_id, annotation_id in keys:
            row = conn.execute(
                self._ANNOTATION_SELECT + " AND i.id = ? AND a.id = ?", (app_seq, input_id, annotation_id)
            ).fetchone()
            if row:
                found[(input_id, annotation_id)] = annotation_from_row(row)
        return found

    def list_annotations(
        self, user_id: str, app_id: str, query: PageQuery, input_ids: list[str] | None = None
    ) -> Page[AnnotationRecord]:
        conn = self._conn()
        sql, params = self._ANNOTATION_SELECT, list[Any]([self._app_seq(conn, user_id, app_id)])
        if input_ids:
            sql += f" AND i.id IN ({','.join('?' * len(input_ids))})"
            params += input_ids
        return self._page(sql + " {after}", tuple(params), query, annotation_from_row, seq="a.seq")


def _first(rows: list[sqlite3.Row]) -> sqlite3.Row | None:
    return rows[0] if rows else None
