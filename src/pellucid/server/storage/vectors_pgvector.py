"""The pgvector VectorIndex (`postgresql://...`): vectors in PostgreSQL, beside the metadata.

A table per space (`vector_space_<hash>`: bigint key, `vector(dimension)`), listed in
`vector_spaces`; a fixed dimension per table is what lets pgvector build an HNSW index
(`vector_cosine_ops`: cosine is the search default; dot and euclidean queries are exact
scans). Spaces of more than 2000 dimensions (pgvector's HNSW limit) are searched exactly.

The index is built once, when a space first holds `hnsw_threshold` (10,000) vectors, after the
upsert that crossed it commits: inserting row by row into a live HNSW graph costs several times
building it from the table (10,000 x 384-d in batches of 1,000: 18-20 s with the index from the
first row, 7-8 s of inserts and a build at the end; README "Search speed"), and below the
threshold a sequential scan is exact and fast enough (p50 3.6 ms at 10,000 x 384-d, 13.5 ms at
20,000, past which it grows with the table; HNSW ~1.5 ms). The build runs in a thread of its
own (the upsert returns; an indexing worker is not held for it) as `CREATE INDEX CONCURRENTLY`
(searches and writes go on meanwhile, exact until the index is valid), under a session advisory
lock per table taken with try-lock: of replicas crossing the threshold together one builds, the
others go on. An INVALID index (a build killed or failed mid-way, or cancelled by close or
drop_space) is dropped and rebuilt after the next upsert into the space; until then the space
is searched exactly. Spaces made before this (index from creation) keep theirs;
`hnsw_threshold=0` is that behaviour.

- exact (`exact=True`): the index scan turned off for the query's transaction (SET LOCAL),
  so PostgreSQL computes every distance.
- filters: up to `filter_exact_max` allowed keys, exact over just those rows (a primary
  key lookup); larger sets go through the HNSW index with `key = ANY(...)` in the WHERE and
  pgvector's iterative scan (0.8+: `hnsw.iterative_scan`), which keeps walking the graph
  until k rows pass the filter. If it still yields fewer than k while k allowed exist, the
  search falls back to exact over the allowed rows.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from pellucid.server.storage.base import StoreUnavailable
from pellucid.server.storage.postgres_connections import (
    CONNECT_TIMEOUT_SECONDS,
    redacted,
    split_pool_parameters,
    vector_parameters,
)
from pellucid.server.storage.vectors import DimensionMismatch, Metric, VectorHit, VectorIndex
from pellucid.server.storage.vectors_exact import as_keys, as_query, as_vectors

DEFAULT_EF_SEARCH = 64
DEFAULT_FILTER_EXACT_MAX = 20_000
DEFAULT_RERANK_FACTOR = 4
DEFAULT_HNSW_THRESHOLD = 10_000
MAX_CONCURRENT_BUILDS = 2  # index builds at once in this process (each a session and CPU of the database's)
BUILD_RETRY_SECONDS = 60.0  # a build that failed is not tried again for this long (upserts come often)
HNSW_MAX_DIMENSIONS = 2000
_OPERATORS = {Metric.COSINE: "<=>", Metric.DOT: "<#>", Metric.EUCLIDEAN: "<->"}
_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS vector_spaces (
    name TEXT PRIMARY KEY,
    table_name TEXT NOT NULL UNIQUE,
    dimension INTEGER NOT NULL
);
"""
# the space's table and the state of its HNSW index (indisvalid: NULL when there is none)
_SPACE_QUERY = """
SELECT s.table_name, s.dimension, i.indisvalid
FROM vector_spaces s LEFT JOIN pg_index i ON i.indexrelid = to_regclass(s.table_name || '_hnsw')
WHERE s.name = %s
"""

log = logging.getLogger(__name__)


class _Space(NamedTuple):
    table: str
    dimension: int
    indexed: bool | None  # its HNSW index: valid, INVALID (being built, or a failed build) or none


def _table_name(space: str) -> str:
    return "vector_space_" + hashlib.sha256(space.encode("utf-8")).hexdigest()[:24]


def _literal(vector: npt.NDArray[np.float32]) -> str:
    return "[" + ",".join(repr(v) for v in vector.tolist()) + "]"


def _parse(text: str) -> npt.NDArray[np.float32]:
    return np.array(text.strip("[]").split(","), dtype=np.float32)


def _score(metric: Metric, distance: float) -> float:
    """pgvector's distance as pellucid's score (larger is closer)."""
    if metric is Metric.COSINE:
        return 0.0 if distance != distance else 1.0 - distance  # NaN: a zero vector
    return -distance  # <#> is the negative inner product; <-> the L2 distance


class PgvectorIndex(VectorIndex):
    def __init__(
        self,
        uri: str,
        ef_search: int | None = None,
        filter_exact_max: int | None = None,
        rerank_factor: int | None = None,
        hnsw_threshold: int | None = None,
    ) -> None:
        """`ef_search`: hnsw.ef_search, also the least number of candidates k' fetched
        (k' = max(k * rerank_factor, ef_search)), of which the best k are returned.
        `hnsw_threshold`: the vectors a space holds when its HNSW index is built (0: at creation).
        Each not given here may come from the URI (`?hnsw_threshold=20000&ef_search=100`), else
        its default."""
        given = vector_parameters(uri)
        ef_search = ef_search if ef_search is not None else given.get("ef_search", DEFAULT_EF_SEARCH)
        filter_exact_max = (
            filter_exact_max
            if filter_exact_max is not None
            else given.get("filter_exact_max", DEFAULT_FILTER_EXACT_MAX)
        )
        rerank_factor = (
            rerank_factor if rerank_factor is not None else given.get("rerank_factor", DEFAULT_RERANK_FACTOR)
        )
        hnsw_threshold = (
            hnsw_threshold if hnsw_threshold is not None else given.get("hnsw_threshold", DEFAULT_HNSW_THRESHOLD)
        )
        if hnsw_threshold < 0:
            raise ValueError(f"hnsw_threshold={hnsw_threshold}: give a number of vectors, 0 or more")
        if ef_search < 1 or rerank_factor < 1:
            raise ValueError(f"ef_search={ef_search}, rerank_factor={rerank_factor}: give 1 or more")
        conninfo, min_size, max_size = split_pool_parameters(uri)
        self.description = redacted(conninfo)
        self.ef_search = ef_search
        self.filter_exact_max = filter_exact_max
        self.rerank_factor = rerank_factor
        self.hnsw_threshold = hnsw_threshold
        self.indexes_built = 0  # HNSW indexes this instance built (after a space crossed the threshold)
        self._builds_lock = threading.Lock()
        self._builds: dict[str, threading.Thread] = {}  # table -> the thread building its index
        self._build_connections: dict[str, psycopg.Connection[Any]] = {}
        self._build_slots = threading.BoundedSemaphore(MAX_CONCURRENT_BUILDS)
        self._failed_builds: dict[str, float] = {}  # table -> when its last build failed (monotonic)
        self._closing = False
        self._conninfo = conninfo
        self._pool = ConnectionPool(
            conninfo,
            min_size=min(min_size, 2),
            max_size=max_size,
            kwargs={"autocommit": True},
            open=False,
            name="pellucid-vectors",
            timeout=CONNECT_TIMEOUT_SECONDS * 3,
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except PoolTimeout:
            self._pool.close()
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL for the vector index at {self.description} within"
                f" {CONNECT_TIMEOUT_SECONDS:.0f} s: check that it runs, and the URI"
            ) from None
        try:
            with self._conn() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('pellucid vector schema'))")
                conn.execute(_SCHEMA.encode())
                row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
                version = tuple(int(p) for p in str(row[0] if row else "0").split(".")[:2])
            self.iterative_scan = version >= (0, 8)
        except BaseException:
            self._pool.close()
            raise

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; the database down or unreachable is StoreUnavailable (retryable)."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(
                f"the vector index in PostgreSQL at {self.description} is unavailable: {exc}"
            ) from exc

    def check(self) -> None:
        """The health probe: one cheap query."""
        with self._conn() as conn:
            conn.execute("SELECT 1")

    def _space(self, conn: psycopg.Connection[Any], space: str) -> _Space | None:
        row = conn.execute(_SPACE_QUERY, (space,)).fetchone()
        return None if row is None else _Space(str(row[0]), int(row[1]), None if row[2] is None else bool(row[2]))

    def _create_space(self, conn: psycopg.Connection[Any], space: str, dimension: int) -> _Space:
        """The space's table if new (inside the caller's transaction); its HNSW index comes when
        it holds `hnsw_threshold` vectors (with 0, now)."""
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("pellucid vector space " + space,))
        held = self._space(conn, space)
        if held is not None:
            return held
        table = _table_name(space)
        conn.execute(
            f"CREATE TABLE {table} (key BIGINT PRIMARY KEY, embedding vector({int(dimension)}) NOT NULL)".encode()
        )
        indexed = self.hnsw_threshold == 0 and dimension <= HNSW_MAX_DIMENSIONS
        if indexed:
            conn.execute(f"CREATE INDEX {table}_hnsw ON {table} USING hnsw (embedding vector_cosine_ops)".encode())
        conn.execute("INSERT INTO vector_spaces VALUES (%s, %s, %s)", (space, table, dimension))
        return _Space(table, dimension, True if indexed else None)

    def _wants_index(self, conn: psycopg.Connection[Any], held: _Space) -> bool:
        """Whether the space lacks a valid HNSW index it should have: at least `hnsw_threshold`
        rows (counted up to the threshold, so a large space without one costs no full count)."""
        if held.indexed or held.dimension > HNSW_MAX_DIMENSIONS:
            return False
        row = conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {held.table} LIMIT %s) AS head".encode(), (self.hnsw_threshold,)
        ).fetchone()
        return row is not None and int(row[0]) >= self.hnsw_threshold

    def _start_build(self, table: str) -> None:
        """Build the table's HNSW index in a thread (one per table in this process; none for a
        while after one failed, as every upsert would otherwise start a full build again)."""
        with self._builds_lock:
            failed = self._failed_builds.get(table)
            if self._closing or table in self._builds or (failed and time.monotonic() - failed < BUILD_RETRY_SECONDS):
                return
            thread = threading.Thread(target=self._build, args=(table,), name=f"pellucid-hnsw-{table}", daemon=True)
            self._builds[table] = thread
            thread.start()  # under the lock: close() never joins a thread not started

    def _build(self, table: str) -> None:
        """On a connection of its own, not the pool's: the session's advisory lock and settings end
        with it whatever happens, and builds never take the connections searches need."""
        built = False
        try:
            with self._build_slots:
                with self._builds_lock:
                    if self._closing:
                        return
                try:
                    conn = psycopg.connect(
                        self._conninfo, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_SECONDS)
                    )
                except psycopg.OperationalError as exc:
                    log.warning("building the HNSW index of %s: cannot connect: %s", table, exc)
                    return
                with conn:
                    with self._builds_lock:
                        if self._closing:
                            return
                        self._build_connections[table] = conn  # close() cancels the build through it
                    built = self._build_index(conn, table)
        finally:
            with self._builds_lock:
                self._build_connections.pop(table, None)
                self._builds.pop(table, None)
                if built:
                    self._failed_builds.pop(table, None)
                elif not self._closing:
                    self._failed_builds[table] = time.monotonic()

    def wait_for_index_builds(self, timeout: float | None = None) -> bool:
        """Wait for the HNSW index builds this instance started (tests and benchmarks), each up
        to `timeout` seconds: whether they all ended."""
        with self._builds_lock:
            threads = list(self._builds.values())
        for thread in threads:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in threads)

    def _build_index(self, conn: psycopg.Connection[Any], table: str) -> bool:
        """Build the table's HNSW index (outside any transaction: CONCURRENTLY cannot run in one),
        dropping an INVALID one first, on `conn`, a session of its own that ends after. One
        session at a time per table (an advisory lock, held until the session ends): the others
        skip it. A failure is logged, not raised: the upsert it follows committed, the space is
        searched exactly meanwhile, and a later upsert tries again. Whether the index is there now."""
        try:
            row = conn.execute(
                "SELECT pg_try_advisory_lock(hashtext(%s))", ("pellucid vector index " + table,)
            ).fetchone()
            if not (row and row[0]):
                return False
            row = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL, (SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s))",
                (table, table + "_hnsw"),
            ).fetchone()
            if row is None or not row[0] or row[1]:
                return row is not None and bool(row[1])  # the space was dropped, or another session built it
            # a role's statement or lock timeout would cancel every long build (each leaving an
            # INVALID index to build again): none for this session
            conn.execute(b"SET statement_timeout = 0")
            conn.execute(b"SET lock_timeout = 0")
            if row[1] is False:
                log.warning("the HNSW index of %s is INVALID (a build failed or was stopped): rebuilding it", table)
                conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {table}_hnsw".encode())
            started = time.monotonic()
            with self._builds_lock:
                if self._closing:  # close() may have cancelled between two statements
                    return False
            conn.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {table}_hnsw ON {table}"
                " USING hnsw (embedding vector_cosine_ops)".encode()
            )
            with self._builds_lock:
                self.indexes_built += 1
            log.info("built the HNSW index of %s in %.1f s", table, time.monotonic() - started)
            return True
        except psycopg.errors.QueryCanceled:
            log.info("the HNSW index build of %s was cancelled (its space dropped, or the store closed)", table)
            return False
        except psycopg.Error as exc:
            log.warning(
                "building the HNSW index of %s failed; searched exactly until a later upsert builds it: %s", table, exc
            )
            return False

    def uses_ann(self, space: str) -> bool:
        """Whether the space has a valid HNSW index (cosine searches go through it; else exact scans)."""
        with self._conn() as conn:
            held = self._space(conn, space)
            return held is not None and held.indexed is True

    def upsert(self, space: str, keys: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        keys = as_keys(keys)
        matrix = as_vectors(vectors, keys.shape[0])
        if keys.shape[0] == 0:
            return
        # the last vector of a key repeated in the batch wins (ON CONFLICT cannot touch a row twice)
        _, last = np.unique(keys[::-1], return_index=True)
        picked = np.sort(keys.shape[0] - 1 - last)
        keys, matrix = keys[picked], matrix[picked]
        with self._conn() as conn:
            with conn.transaction():
                held = self._space(conn, space) or self._create_space(conn, space, matrix.shape[1])
                if matrix.shape[1] != held.dimension:
                    raise DimensionMismatch(
                        f"vectors of {matrix.shape[1]} dimensions; space {space!r} holds {held.dimension}"
                    )
                conn.execute(
                    f"INSERT INTO {held.table} (key, embedding) SELECT * FROM unnest(%s::bigint[], %s::vector[])"
                    " ON CONFLICT (key) DO UPDATE SET embedding = EXCLUDED.embedding".encode(),
                    (keys.tolist(), [_literal(v) for v in matrix]),
                )
            wanted = self._wants_index(conn, held)
        if wanted:  # after the commit: the build sees this batch's rows
            self._start_build(held.table)

    def remove(self, space: str, keys: npt.NDArray[np.int64]) -> int:
        keys = as_keys(keys)
        with self._conn() as conn:
            held = self._space(conn, space)
            if held is None or keys.shape[0] == 0:
                return 0
            cursor = conn.execute(f"DELETE FROM {held.table} WHERE key = ANY(%s)".encode(), (keys.tolist(),))
            return cursor.rowcount

    def get(self, space: str, keys: npt.NDArray[np.int64]) -> dict[int, npt.NDArray[np.float32]]:
        keys = as_keys(keys)
        with self._conn() as conn:
            held = self._space(conn, space)
            if held is None:
                return {}
            rows = conn.execute(
                f"SELECT key, embedding::text FROM {held.table} WHERE key = ANY(%s)".encode(), (keys.tolist(),)
            ).fetchall()
        return {int(key): _parse(text) for key, text in rows}

    def search(
        self,
        space: str,
        query: npt.NDArray[np.float32],
        k: int,
        metric: Metric = Metric.COSINE,
        allowed: npt.NDArray[np.int64] | None = None,
        exact: bool = False,
    ) -> list[VectorHit]:
        with self._conn() as conn:
            held = self._space(conn, space)
            vector = as_query(query, held.dimension if held else None, space)
            if held is None or k <= 0:
                return []
            table = held.table
            literal = _literal(vector)
            operator = _OPERATORS[metric]
            allowed_keys = None if allowed is None else as_keys(allowed).tolist()
            use_index = (
                not exact
                and metric is Metric.COSINE
                and held.indexed is True  # none yet (or INVALID): a sequential scan, exact
                and (allowed_keys is None or len(allowed_keys) > self.filter_exact_max)
            )
            if use_index:
                hits = self._indexed(conn, table, literal, operator, metric, k, allowed_keys)
                if len(hits) >= k:
                    return hits
                available = self._available(conn, table, allowed_keys)
                if len(hits) >= available:
                    return hits
            return self._exact(conn, table, literal, operator, metric, k, allowed_keys)

    def _indexed(
        self,
        conn: psycopg.Connection[Any],
        table: str,
        literal: str,
        operator: str,
        metric: Metric,
        k: int,
        allowed: list[int] | None,
    ) -> list[VectorHit]:
        where = "" if allowed is None else "WHERE key = ANY(%(allowed)s)"
        wanted = max(k * self.rerank_factor, self.ef_search)
        with conn.transaction():
            conn.execute(f"SET LOCAL hnsw.ef_search = {min(1000, int(wanted))}".encode())
            if self.iterative_scan:
                conn.execute(b"SET LOCAL hnsw.iterative_scan = relaxed_order")
            rows = conn.execute(
                f"SELECT key, embedding {operator} %(q)s::vector AS distance FROM {table} {where}"
                f" ORDER BY embedding {operator} %(q)s::vector LIMIT %(k)s".encode(),
                {"q": literal, "k": wanted, "allowed": allowed},
            ).fetchall()
        hits = [VectorHit(int(key), _score(metric, float(distance))) for key, distance in rows]
        return sorted(hits, key=lambda hit: -hit.score)[:k]  # the distances are exact: the best k of k'

    def _exact(
        self,
        conn: psycopg.Connection[Any],
        table: str,
        literal: str,
        operator: str,
        metric: Metric,
        k: int,
        allowed: list[int] | None,
    ) -> list[VectorHit]:
        with conn.transaction():
            if allowed is None:
                conn.execute(b"SET LOCAL enable_indexscan = off")
                source = table
            else:  # the allowed rows by primary key, then every distance (the CTE hides the HNSW index)
                source = "candidates"
            prefix = (
                ""
                if allowed is None
                else f"WITH candidates AS MATERIALIZED (SELECT key, embedding FROM {table} WHERE key = ANY(%(allowed)s)) "
            )
            rows = conn.execute(
                f"{prefix}SELECT key, embedding {operator} %(q)s::vector AS distance FROM {source}"
                " ORDER BY distance, key LIMIT %(k)s".encode(),
                {"q": literal, "k": k, "allowed": allowed},
            ).fetchall()
        return [VectorHit(int(key), _score(metric, float(distance))) for key, distance in rows]

    def _available(self, conn: psycopg.Connection[Any], table: str, allowed: list[int] | None) -> int:
        if allowed is None:
            row = conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
        else:
            row = conn.execute(f"SELECT count(*) FROM {table} WHERE key = ANY(%s)".encode(), (allowed,)).fetchone()
        return int(row[0]) if row else 0

    def count(self, space: str) -> int:
        with self._conn() as conn:
            held = self._space(conn, space)
            return 0 if held is None else self._available(conn, held.table, None)

    def dimension(self, space: str) -> int | None:
        with self._conn() as conn:
            held = self._space(conn, space)
            return None if held is None else held.dimension

    def drop_space(self, space: str) -> None:
        with self._conn() as conn:
            # an index build on the table (any replica's) would hold DROP TABLE until PostgreSQL's
            # deadlock check ends one of them (the build waits for older snapshots, the drop's among
            # them): cancel it first; the table goes with whatever it left
            conn.execute(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_progress_create_index WHERE relid = to_regclass(%s)",
                (_table_name(space),),
            )
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("pellucid vector space " + space,))
                held = self._space(conn, space)
                if held is not None:
                    conn.execute(f"DROP TABLE IF EXISTS {held.table}".encode())
                    conn.execute("DELETE FROM vector_spaces WHERE name = %s", (space,))

    def close(self) -> None:
        """Cancel index builds in flight (an INVALID index they leave is rebuilt after the space's
        next upsert, by this replica or another) and close the pool."""
        with self._builds_lock:
            self._closing = True
            threads = list(self._builds.values())
        deadline = time.monotonic() + CONNECT_TIMEOUT_SECONDS
        for thread in threads:  # cancelled again until it ends: a cancel between two statements is lost
            while thread.is_alive() and time.monotonic() < deadline:
                with self._builds_lock:
                    building = list(self._build_connections.values())
                for conn in building:
                    try:
                        conn.cancel_safe(timeout=CONNECT_TIMEOUT_SECONDS)
                    except psycopg.Error as exc:
                        log.warning("cancelling an HNSW index build: %s", exc)
                thread.join(0.2)
        self._pool.close()
