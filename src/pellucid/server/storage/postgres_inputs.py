"""PostgreSQL tables of datasets, dataset versions, inputs, annotations and input jobs.

A mixin of PostgresMetadataStore. A batch goes in with one statement per table: rows are
sent as arrays and spread by unnest(), and ids taken meanwhile by another replica are
resolved by ON CONFLICT, not by a check before the insert.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import psycopg

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
from pellucid.server.storage.base import AnnotationResult, IngestResult
from pellucid.server.storage.postgres_schema import insert_concepts
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
from pellucid.server.storage.search_terms import annotation_rows, label_rows

Connection = psycopg.Connection[Any]

_INPUT_COLUMNS = (
    "id",
    "input_type",
    "content_key",
    "media_sha256",
    "media_size",
    "media_mime",
    "media_url",
    "width",
    "height",
    "text",
    "text_url",
    "metadata",
    "geo_lon",
    "geo_lat",
    "labels",
    "created_at",
    "index_state",
)
_INPUT_TYPES = (
    "text",
    "text",
    "text",
    "text",
    "bigint",
    "text",
    "text",
    "integer",
    "integer",
    "text",
    "text",
    "text",
    "double precision",
    "double precision",
    "text",
    "double precision",
    "integer",
)
_INSERT_INPUTS = (
    f"INSERT INTO inputs (app_seq, {', '.join(_INPUT_COLUMNS)}) SELECT %s, "
    + ", ".join(f"u.{c}::jsonb" if c == "metadata" else f"u.{c}" for c in _INPUT_COLUMNS)
    + " FROM unnest("
    + ", ".join(f"%b::{t}[]" for t in _INPUT_TYPES)
    + f") AS u({', '.join(_INPUT_COLUMNS)}) ON CONFLICT (app_seq, id) DO NOTHING RETURNING id, seq"
)
_SELECT_INPUT_COLUMNS = ", ".join(f"i.{c} AS {c}" for c in _INPUT_COLUMNS) + ", i.index_message AS index_message"


class PostgresInputTables:
    """Datasets, versions, inputs, annotations and jobs (needs _read, _write and _page)."""

    _read: Callable[[], AbstractContextManager[Connection]]
    _write: Callable[[], AbstractContextManager[Connection]]
    _page: Any
    INPUT_SELECT = "i.seq AS seq, " + _SELECT_INPUT_COLUMNS

    def _app_seq(self, conn: Connection, user_id: str, app_id: str) -> int:
        row = conn.execute("SELECT seq FROM apps WHERE user_id = %s AND id = %s", (user_id, app_id)).fetchone()
        if row is None:
            raise LookupError(f"app {app_id!r} of user {user_id!r} does not exist")
        return int(row["seq"])

    def _dataset_seq(self, conn: Connection, app_seq: int, dataset_id: str) -> int:
        row = conn.execute("SELECT seq FROM datasets WHERE app_seq = %s AND id = %s", (app_seq, dataset_id)).fetchone()
        if row is None:
            raise LookupError(f"dataset {dataset_id!r} does not exist")
        return int(row["seq"])

    # datasets

    def insert_dataset(self, dataset: DatasetRecord) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO datasets (app_seq, id, description, metadata, created_at, modified_at)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    self._app_seq(conn, dataset.user_id, dataset.app_id),
                    dataset.id,
                    dataset.description,
                    json.dumps(dataset.metadata),
                    dataset.created_at,
                    dataset.modified_at,
                ),
            )

    _DATASET_SELECT = (
        "SELECT d.seq AS seq, a.user_id AS user_id, a.id AS app_id, d.id AS id, d.description AS description,"
        " d.metadata AS metadata, d.created_at AS created_at, d.modified_at AS modified_at,"
        " (SELECT COUNT(*) FROM dataset_inputs di WHERE di.dataset_seq = d.seq) AS input_count"
        " FROM datasets d JOIN apps a ON a.seq = d.app_seq WHERE a.user_id = %s AND a.id = %s"
    )

    def get_dataset(self, user_id: str, app_id: str, dataset_id: str) -> DatasetRecord | None:
        with self._read() as conn:
            row = conn.execute(self._DATASET_SELECT + " AND d.id = %s", (user_id, app_id, dataset_id)).fetchone()
        return dataset_from_row(row) if row else None

    def existing_datasets(self, user_id: str, app_id: str, dataset_ids: list[str]) -> set[str]:
        if not dataset_ids:
            return set()
        with self._read() as conn:
            rows = conn.execute(
                "SELECT d.id FROM datasets d JOIN apps a ON a.seq = d.app_seq"
                " WHERE a.user_id = %s AND a.id = %s AND d.id = ANY(%s)",
                (user_id, app_id, dataset_ids),
            ).fetchall()
        return {r["id"] for r in rows}

    def list_datasets(self, user_id: str, app_id: str, query: PageQuery) -> Page[DatasetRecord]:
        return self._page(self._DATASET_SELECT, (user_id, app_id), query, dataset_from_row, seq="d.seq")

    def delete_dataset(self, user_id: str, app_id: str, dataset_id: str, delete_inputs: bool) -> bool:
        with self._write() as conn:
            try:
                dataset_seq = self._dataset_seq(conn, self._app_seq(conn, user_id, app_id), dataset_id)
            except LookupError:
                return False
            if delete_inputs:
                conn.execute(
                    "DELETE FROM inputs WHERE seq IN (SELECT di.input_seq FROM dataset_inputs di"
                    " WHERE di.dataset_seq = %s AND NOT EXISTS (SELECT 1 FROM dataset_inputs o"
                    " WHERE o.input_seq = di.input_seq AND o.dataset_seq <> %s))",
                    (dataset_seq, dataset_seq),
                )
            conn.execute("DELETE FROM datasets WHERE seq = %s", (dataset_seq,))
            return True

    def _stats(self, conn: Connection, dataset_seq: int) -> DatasetStats:
        by_type = {
            r["input_type"]: int(r["n"])
            for r in conn.execute(
                "SELECT i.input_type AS input_type, COUNT(*) AS n FROM dataset_inputs m"
                " JOIN inputs i ON i.seq = m.input_seq WHERE m.dataset_seq = %s GROUP BY i.input_type",
                (dataset_seq,),
            )
        }
        annotations, regions, concepts = 0, 0, Counter[str]()
        for row in conn.execute(
            "SELECT a.concepts AS concepts, a.regions AS regions FROM dataset_inputs m"
            " JOIN annotations a ON a.input_seq = m.input_seq WHERE m.dataset_seq = %s",
            (dataset_seq,),
        ):
            annotations += 1
            concepts.update(c["id"] for c in json.loads(row["concepts"]))
            for region in json.loads(row["regions"]):
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
        with self._read() as conn:
            dataset_seq = self._dataset_seq(conn, self._app_seq(conn, user_id, app_id), dataset_id)
            if not version_id:
                return self._stats(conn, dataset_seq)
            row = conn.execute(
                "SELECT stats FROM dataset_versions WHERE dataset_seq = %s AND id = %s", (dataset_seq, version_id)
            ).fetchone()
        if row is None:
            raise LookupError(f"version {version_id!r} of dataset {dataset_id!r} does not exist")
        return stats_from_json(row["stats"])

    def insert_dataset_version(self, version: DatasetVersionRecord) -> DatasetVersionRecord:
        with self._write() as conn:
            dataset_seq = self._dataset_seq(
                conn, self._app_seq(conn, version.user_id, version.app_id), version.dataset_id
            )
            stats = self._stats(conn, dataset_seq)
            row = conn.execute(
                "INSERT INTO dataset_versions (dataset_seq, id, description, metadata, stats, created_at)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING seq",
                (
                    dataset_seq,
                    version.id,
                    version.description,
                    json.dumps(version.metadata),
                    json.dumps(stats.__dict__),
                    version.created_at,
                ),
            ).fetchone()
            assert row is not None
            conn.execute(
                "INSERT INTO dataset_version_inputs (version_seq, input_seq)"
                " SELECT %s, input_seq FROM dataset_inputs WHERE dataset_seq = %s",
                (row["seq"], dataset_seq),
            )
        return DatasetVersionRecord(**{**version.__dict__, "stats": stats})

    def list_dataset_versions(
        self, user_id: str, app_id: str, dataset_id: str, query: PageQuery
    ) -> Page[DatasetVersionRecord]:
        with self._read() as conn:
            dataset_seq = self._dataset_seq(conn, self._app_seq(conn, user_id, app_id), dataset_id)
        return self._page(
            "SELECT v.seq AS seq, v.id AS id, v.description AS description, v.metadata AS metadata,"
            " v.stats AS stats, v.created_at AS created_at, %s AS user_id, %s AS app_id, %s AS dataset_id"
            " FROM dataset_versions v WHERE v.dataset_seq = %s",
            (user_id, app_id, dataset_id, dataset_seq),
            query,
            dataset_version_from_row,
            seq="v.seq",
        )

    def delete_dataset_version(self, user_id: str, app_id: str, dataset_id: str, version_id: str) -> bool:
        with self._write() as conn:
            try:
                dataset_seq = self._dataset_seq(conn, self._app_seq(conn, user_id, app_id), dataset_id)
            except LookupError:
                return False
            return (
                conn.execute(
                    "DELETE FROM dataset_versions WHERE dataset_seq = %s AND id = %s", (dataset_seq, version_id)
                ).rowcount
                > 0
            )

    # inputs

    def ingest(
        self, user_id: str, app_id: str, items: list[IngestItem], concepts: list[ConceptRecord], job: JobRecord | None
    ) -> tuple[list[IngestResult], JobRecord | None]:
        with self._write() as conn:
            app_seq = self._app_seq(conn, user_id, app_id)
            if concepts:
                conn.execute(
                    "INSERT INTO concepts (app_seq, id, name, created_at)"
                    " SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::double precision[])"
                    " ON CONFLICT DO NOTHING",
                    (app_seq, *map(list, zip(*sorted((c.id, c.name, c.created_at) for c in concepts)))),
                )
            # every id is inserted (ON CONFLICT DO NOTHING), and only those that were not are
            # looked up: a fresh batch costs one statement, not a lookup and an insert
            known: dict[str, tuple[int, str]] = {}
            first: dict[str, InputRecord] = {}  # the batch's first item of each id
            for item in items:
                first.setdefault(item.input.id, item.input)
            inserted: dict[str, int] = {}
            if first:
                columns: list[list[Any]] = [[] for _ in _INPUT_COLUMNS]
                # in id order: replicas inserting overlapping batches take the unique index's
                # locks in the same order, so one waits for the other instead of deadlocking
                for record in sorted(first.values(), key=lambda r: r.id):
                    for column, value in zip(columns, _input_values(record)):
                        column.append(value)
                for row in conn.execute(_INSERT_INPUTS, (app_seq, *columns)).fetchall():
                    inserted[row["id"]] = int(row["seq"])
                stored_before = [i for i in first if i not in inserted]  # earlier, or by another replica now
                known.update(self._input_keys(conn, app_seq, stored_before))
                known.update({i: (seq, first[i].content_key) for i, seq in inserted.items()})
            insert_concepts(
                conn, [row for i, seq in inserted.items() for row in label_rows(app_seq, seq, first[i].labels)]
            )
            outcomes: list[IngestResult] = []
            counted_new: set[str] = set()
            for item in items:
                record = item.input
                if record.id in inserted and record.id not in counted_new and first[record.id] is record:
                    counted_new.add(record.id)
                    outcomes.append(IngestResult.NEW)
                elif known[record.id][1] == record.content_key:
                    outcomes.append(IngestResult.DUPLICATE)
                else:
                    outcomes.append(IngestResult.CONFLICT)
            dataset_seqs: dict[str, int] = {}
            member_datasets: list[int] = []
            member_inputs: list[int] = []
            annotations: list[tuple[int, str, str, str, float]] = []
            for item, outcome in zip(items, outcomes):
                if outcome is IngestResult.CONFLICT:
                    continue
                input_seq = known[item.input.id][0]
                for dataset_id in item.input.dataset_ids:
                    if dataset_id not in dataset_seqs:
                        dataset_seqs[dataset_id] = self._dataset_seq(conn, app_seq, dataset_id)
                    member_datasets.append(dataset_seqs[dataset_id])
                    member_inputs.append(input_seq)
                annotations += [
                    (input_seq, a.id, concepts_json(a.concepts), regions_json(a.regions), a.created_at)
                    for a in item.annotations
                ]
            if member_inputs:  # sorted, like the inputs: the same lock order in every replica
                member_datasets, member_inputs = map(list, zip(*sorted(zip(member_datasets, member_inputs))))
                conn.execute(
                    "INSERT INTO dataset_inputs (dataset_seq, input_seq)"
                    " SELECT * FROM unnest(%s::bigint[], %s::bigint[]) ON CONFLICT DO NOTHING",
                    (member_datasets, member_inputs),
                )
            if annotations:
                stored = conn.execute(
                    "INSERT INTO annotations (input_seq, id, concepts, regions, created_at)"
                    " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::double precision[])"
                    " ON CONFLICT DO NOTHING RETURNING seq, input_seq, id",
                    [list(column) for column in zip(*sorted(annotations, key=lambda a: (a[0], a[1])))],
                ).fetchall()
                by_key: dict[tuple[int, str], AnnotationRecord] = {}
                for item, outcome in zip(items, outcomes):
                    if outcome is not IngestResult.CONFLICT:
                        for a in item.annotations:  # the first of an id is the one stored
                            by_key.setdefault((known[item.input.id][0], a.id), a)
                insert_concepts(
                    conn,
                    [
                        row
                        for r in stored
                        for row in annotation_rows(app_seq, r["input_seq"], r["seq"], by_key[(r["input_seq"], r["id"])])
                    ],
                )
            totals = None
            if job is not None:
                counts = Counter(outcomes)
                row = conn.execute(
                    "INSERT INTO input_jobs AS j (app_seq, id, received, stored, duplicates, failed, created_at,"
                    " modified_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (app_seq, id) DO UPDATE SET"
                    " received = j.received + EXCLUDED.received, stored = j.stored + EXCLUDED.stored,"
                    " duplicates = j.duplicates + EXCLUDED.duplicates, failed = j.failed + EXCLUDED.failed,"
                    " modified_at = EXCLUDED.modified_at RETURNING *",
                    (
                        app_seq,
                        job.id,
                        job.received,
                        counts[IngestResult.NEW],
                        counts[IngestResult.DUPLICATE],
                        job.failed + counts[IngestResult.CONFLICT],
                        job.created_at,
                        job.modified_at,
                    ),
                ).fetchone()
                totals = _job(user_id, app_id, row) if row else None
        return outcomes, totals

    @staticmethod
    def _input_keys(conn: Connection, app_seq: int, input_ids: list[str]) -> dict[str, tuple[int, str]]:
        """seq and content key of those of `input_ids` that exist."""
        if not input_ids:
            return {}
        rows = conn.execute(
            "SELECT id, seq, content_key FROM inputs WHERE app_seq = %s AND id = ANY(%s)", (app_seq, input_ids)
        ).fetchall()
        return {r["id"]: (int(r["seq"]), r["content_key"]) for r in rows}

    def referenced_blobs(self, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        wanted = set(pairs)
        if not wanted:
            return set()
        with self._read() as conn:
            rows = conn.execute(
                "SELECT DISTINCT a.user_id AS user_id, i.media_sha256 AS sha256 FROM inputs i"
                " JOIN apps a ON a.seq = i.app_seq WHERE i.media_sha256 <> '' AND i.media_sha256 = ANY(%s)",
                (sorted({sha256 for _, sha256 in wanted}),),
            ).fetchall()
        return {(r["user_id"], r["sha256"]) for r in rows} & wanted

    def blob_references(self) -> Iterator[tuple[str, str]]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT DISTINCT a.user_id AS user_id, i.media_sha256 AS sha256 FROM inputs i"
                " JOIN apps a ON a.seq = i.app_seq WHERE i.media_sha256 <> ''"
            ).fetchall()
        yield from ((r["user_id"], r["sha256"]) for r in rows)

    def get_job(self, user_id: str, app_id: str, job_id: str) -> JobRecord | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT * FROM input_jobs WHERE app_seq = %s AND id = %s",
                (self._app_seq(conn, user_id, app_id), job_id),
            ).fetchone()
        return _job(user_id, app_id, row) if row else None

    def _with_datasets(
        self, conn: Connection, user_id: str, app_id: str, rows: list[dict[str, Any]]
    ) -> list[InputRecord]:
        if not rows:
            return []
        memberships: dict[int, list[str]] = {}
        for row in conn.execute(
            "SELECT di.input_seq AS input_seq, d.id AS id FROM dataset_inputs di"
            " JOIN datasets d ON d.seq = di.dataset_seq WHERE di.input_seq = ANY(%s) ORDER BY d.seq",
            ([r["seq"] for r in rows],),
        ):
            memberships.setdefault(row["input_seq"], []).append(row["id"])
        return [input_from_row(user_id, app_id, r, tuple(memberships.get(r["seq"], ()))) for r in rows]

    def get_inputs(self, user_id: str, app_id: str, input_ids: list[str]) -> dict[str, InputRecord]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT i.seq AS seq, {_SELECT_INPUT_COLUMNS} FROM inputs i WHERE i.app_seq = %s AND i.id = ANY(%s)",
                (self._app_seq(conn, user_id, app_id), input_ids),
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
        params: list[Any] = []
        with self._read() as conn:
            app_seq = self._app_seq(conn, user_id, app_id)
            if version_id:
                dataset_seq = self._dataset_seq(conn, app_seq, dataset_id)
                row = conn.execute(
                    "SELECT seq FROM dataset_versions WHERE dataset_seq = %s AND id = %s", (dataset_seq, version_id)
                ).fetchone()
                if row is None:
                    raise LookupError(f"version {version_id!r} of dataset {dataset_id!r} does not exist")
                sql = (
                    f"SELECT m.input_seq AS seq, {_SELECT_INPUT_COLUMNS} FROM dataset_version_inputs m"
                    " JOIN inputs i ON i.seq = m.input_seq WHERE m.version_seq = %s"
                )
                params.append(row["seq"])
                seq = "m.input_seq"
            elif dataset_id:
                sql = (
                    f"SELECT m.input_seq AS seq, {_SELECT_INPUT_COLUMNS} FROM dataset_inputs m"
                    " JOIN inputs i ON i.seq = m.input_seq WHERE m.dataset_seq = %s"
                )
                params.append(self._dataset_seq(conn, app_seq, dataset_id))
                seq = "m.input_seq"
            else:
                sql = f"SELECT i.seq AS seq, {_SELECT_INPUT_COLUMNS} FROM inputs i WHERE i.app_seq = %s"
                params.append(app_seq)
                seq = "i.seq"
        if input_type:
            sql += " AND i.input_type = %s"
            params.append(input_type)
        if ids:
            sql += " AND i.id = ANY(%s)"
            params.append(ids)
        page = self._page(sql, tuple(params), query, lambda r: r, seq=seq)
        with self._read() as conn:
            return Page(self._with_datasets(conn, user_id, app_id, page.items), page.next_after)

    def delete_inputs(self, user_id: str, app_id: str, input_ids: list[str]) -> list[bool]:
        with self._write() as conn:
            rows = conn.execute(
                "DELETE FROM inputs WHERE app_seq = %s AND id = ANY(%s) RETURNING id",
                (self._app_seq(conn, user_id, app_id), input_ids),
            ).fetchall()
        deleted = {r["id"] for r in rows}
        flags = []
        for input_id in input_ids:  # a repeated id is deleted once
            flags.append(input_id in deleted)
            deleted.discard(input_id)
        return flags

    # annotations

    def put_annotations(
        self, user_id: str, app_id: str, annotations: list[AnnotationRecord], replace: bool
    ) -> list[AnnotationResult]:
        outcomes = []
        with self._write() as conn:
            app_seq = self._app_seq(conn, user_id, app_id)
            input_seqs = self._input_keys(conn, app_seq, sorted({a.input_id for a in annotations}))
            for a in annotations:
                if a.input_id not in input_seqs:
                    outcomes.append(AnnotationResult.MISSING_INPUT)
                    continue
                input_seq = input_seqs[a.input_id][0]
                values = (concepts_json(a.concepts), regions_json(a.regions))
                new = conn.execute(
                    "INSERT INTO annotations (input_seq, id, concepts, regions, created_at)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING seq",
                    (input_seq, a.id, *values, a.created_at),
                ).fetchone()
                if new is not None:
                    outcomes.append(AnnotationResult.NEW)
                elif replace:
                    new = conn.execute(
                        "UPDATE annotations SET concepts = %s, regions = %s WHERE input_seq = %s AND id = %s RETURNING seq",
                        (*values, input_seq, a.id),
                    ).fetchone()
                    if new is None:  # its input was deleted meanwhile
                        outcomes.append(AnnotationResult.MISSING_INPUT)
                        continue
                    conn.execute("DELETE FROM input_concepts WHERE annotation_seq = %s", (new["seq"],))
                    outcomes.append(AnnotationResult.UPDATED)
                else:
                    outcomes.append(AnnotationResult.DUPLICATE)
                    continue
                insert_concepts(conn, annotation_rows(app_seq, input_seq, new["seq"], a))
            concept_names = {c.id: c.name for a in annotations for c in all_concepts(a)}
            if concept_names:
                conn.execute(
                    "INSERT INTO concepts (app_seq, id, name, created_at)"
                    " SELECT %s, id, name, %s FROM unnest(%s::text[], %s::text[]) AS c(id, name)"
                    " ON CONFLICT DO NOTHING",
                    (
                        app_seq,
                        annotations[0].created_at,
                        list(concept_names),
                        [name or cid for cid, name in concept_names.items()],
                    ),
                )
        return outcomes

    _ANNOTATION_SELECT = (
        "SELECT a.seq AS seq, i.id AS input_id, a.id AS id, a.concepts AS concepts, a.regions AS regions,"
        " a.created_at AS created_at FROM annotations a JOIN inputs i ON i.seq = a.input_seq WHERE i.app_seq = %s"
    )

    def get_annotations(
        self, user_id: str, app_id: str, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], AnnotationRecord]:
        found = {}
        with self._read() as conn:
            app_seq = self._app_seq(conn, user_id, app_id)
            for input_id, annotation_id in keys:
                row = conn.execute(
                    self._ANNOTATION_SELECT + " AND i.id = %s AND a.id = %s", (app_seq, input_id, annotation_id)
                ).fetchone()
                if row:
                    found[(input_id, annotation_id)] = annotation_from_row(row)
        return found

    def list_annotations(
        self, user_id: str, app_id: str, query: PageQuery, input_ids: list[str] | None = None
    ) -> Page[AnnotationRecord]:
        with self._read() as conn:
            sql, params = self._ANNOTATION_SELECT, [self._app_seq(conn, user_id, app_id)]
        if input_ids:
            sql += " AND i.id = ANY(%s)"
            params.append(input_ids)  # type: ignore[arg-type]
        return self._page(sql, tuple(params), query, annotation_from_row, seq="a.seq")


def _input_values(record: InputRecord) -> tuple[Any, ...]:
    """The record's values in _INPUT_COLUMNS order."""
    return (
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


def _job(user_id: str, app_id: str, row: dict[str, Any]) -> JobRecord:
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
