"""The pgvector VectorIndex (`postgresql://...`): vectors in PostgreSQL, beside the metadata.

A table per space (`vector_space_<hash>`: bigint key, `vector(dimension)`), listed in
`vector_spaces`; a fixed dimension per table is what lets pgvector build an HNSW index
(`vector_cosine_ops`: cosine is the search default; dot and euclidean queries are exact
scans). Spaces of more than 2000 dimensions (pgvector's HNSW limit) are searched exactly.

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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from pellucid.server.storage.base import StoreUnavailable
from pellucid.server.storage.postgres_connections import CONNECT_TIMEOUT_SECONDS, redacted, split_pool_parameters
from pellucid.server.storage.vectors import DimensionMismatch, Metric, VectorHit, VectorIndex
from pellucid.server.storage.vectors_exact import as_keys, as_query, as_vectors

DEFAULT_EF_SEARCH = 64
DEFAULT_FILTER_EXACT_MAX = 20_000
DEFAULT_RERANK_FACTOR = 4
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
        ef_search: int = DEFAULT_EF_SEARCH,
        filter_exact_max: int = DEFAULT_FILTER_EXACT_MAX,
        rerank_factor: int = DEFAULT_RERANK_FACTOR,
    ) -> None:
        """`ef_search`: hnsw.ef_search, also the least number of candidates k' fetched
        (k' = max(k * rerank_factor, ef_search)), of which the best k are returned."""
        conninfo, min_size, max_size = split_pool_parameters(uri)
        self.description = redacted(conninfo)
        self.ef_search = ef_search
        self.filter_exact_max = filter_exact_max
        self.rerank_factor = rerank_factor
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

    def _space(self, conn: psycopg.Connection[Any], space: str) -> tuple[str, int] | None:
        row = conn.execute("SELECT table_name, dimension FROM vector_spaces WHERE name = %s", (space,)).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    def _create_space(self, conn: psycopg.Connection[Any], space: str, dimension: int) -> tuple[str, int]:
        """The space's table, created with its HNSW index if new (inside the caller's transaction)."""
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("pellucid vector space " + space,))
        held = self._space(conn, space)
        if held is not None:
            return held
        table = _table_name(space)
        conn.execute(
            f"CREATE TABLE {table} (key BIGINT PRIMARY KEY, embedding vector({int(dimension)}) NOT NULL)".encode()
        )
        if dimension <= HNSW_MAX_DIMENSIONS:
            conn.execute(f"CREATE INDEX {table}_hnsw ON {table} USING hnsw (embedding vector_cosine_ops)".encode())
        conn.execute("INSERT INTO vector_spaces VALUES (%s, %s, %s)", (space, table, dimension))
        return table, dimension

    def upsert(self, space: str, keys: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        keys = as_keys(keys)
        matrix = as_vectors(vectors, keys.shape[0])
        if keys.shape[0] == 0:
            return
        # the last vector of a key repeated in the batch wins (ON CONFLICT cannot touch a row twice)
        _, last = np.unique(keys[::-1], return_index=True)
        picked = np.sort(keys.shape[0] - 1 - last)
        keys, matrix = keys[picked], matrix[picked]
        with self._conn() as conn, conn.transaction():
            held = self._space(conn, space) or self._create_space(conn, space, matrix.shape[1])
            table, dimension = held
            if matrix.shape[1] != dimension:
                raise DimensionMismatch(f"vectors of {matrix.shape[1]} dimensions; space {space!r} holds {dimension}")
            conn.execute(
                f"INSERT INTO {table} (key, embedding) SELECT * FROM unnest(%s::bigint[], %s::vector[])"
                " ON CONFLICT (key) DO UPDATE SET embedding = EXCLUDED.embedding".encode(),
                (keys.tolist(), [_literal(v) for v in matrix]),
            )

    def remove(self, space: str, keys: npt.NDArray[np.int64]) -> int:
        keys = as_keys(keys)
        with self._conn() as conn:
            held = self._space(conn, space)
            if held is None or keys.shape[0] == 0:
                return 0
            cursor = conn.execute(f"DELETE FROM {held[0]} WHERE key = ANY(%s)".encode(), (keys.tolist(),))
            return cursor.rowcount

    def get(self, space: str, keys: npt.NDArray[np.int64]) -> dict[int, npt.NDArray[np.float32]]:
        keys = as_keys(keys)
        with self._conn() as conn:
            held = self._space(conn, space)
            if held is None:
                return {}
            rows = conn.execute(
                f"SELECT key, embedding::text FROM {held[0]} WHERE key = ANY(%s)".encode(), (keys.tolist(),)
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
            vector = as_query(query, held[1] if held else None, space)
            if held is None or k <= 0:
                return []
            table, dimension = held
            literal = _literal(vector)
            operator = _OPERATORS[metric]
            allowed_keys = None if allowed is None else as_keys(allowed).tolist()
            use_index = (
                not exact
                and metric is Metric.COSINE
                and dimension <= HNSW_MAX_DIMENSIONS
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
            return 0 if held is None else self._available(conn, held[0], None)

    def dimension(self, space: str) -> int | None:
        with self._conn() as conn:
            held = self._space(conn, space)
            return None if held is None else held[1]

    def drop_space(self, space: str) -> None:
        with self._conn() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("pellucid vector space " + space,))
            held = self._space(conn, space)
            if held is not None:
                conn.execute(f"DROP TABLE IF EXISTS {held[0]}".encode())
                conn.execute("DELETE FROM vector_spaces WHERE name = %s", (space,))

    def close(self) -> None:
        self._pool.close()
