"""The VectorIndex contract, over every backend: memory, exact (a directory), faiss (a
directory, with a low ANN threshold so the ANN path runs) and pgvector (tests/pg.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from pellucid.server.storage.registry import check_vector_index_uri, open_vector_index
from pellucid.server.storage.vectors import DimensionMismatch, Metric, VectorIndex
from pellucid.server.storage.vectors_exact import ExactVectorIndex
from tests import pg

SPACE = "alice/photos/text"
BACKENDS = ["memory", "exact", "faiss", "pgvector"]
ANN_THRESHOLD = 500  # the faiss backend's spaces above this go through its ANN structure
HNSW_THRESHOLD = 1000  # the pgvector backend's spaces get their HNSW index at this size


def _faiss_index(directory: Path, **settings: object) -> VectorIndex:
    pytest.importorskip("faiss", reason="faiss-cpu (the models extra) is not installed")
    from pellucid.server.storage.vectors_faiss import FaissVectorIndex

    options: dict[str, object] = {"ann_threshold": ANN_THRESHOLD, "filter_exact_max": 50, "fsync": False}
    options.update(settings)
    return FaissVectorIndex(directory, **options)  # type: ignore[arg-type]


@pytest.fixture(params=BACKENDS)
def opener(
    request: pytest.FixtureRequest, tmp_path: Path, _postgres_session: None
) -> Iterator[Callable[[], VectorIndex]]:
    """Opens the backend's index (again, after a close: the same directory or database)."""
    opened: list[VectorIndex] = []
    if request.param == "memory":
        shared = ExactVectorIndex()

        def open_index() -> VectorIndex:
            return shared

    elif request.param == "exact":

        def open_index() -> VectorIndex:
            opened.append(ExactVectorIndex(tmp_path / "vectors", fsync=False))
            return opened[-1]

    elif request.param == "faiss":

        def open_index() -> VectorIndex:
            opened.append(_faiss_index(tmp_path / "vectors"))
            return opened[-1]

    else:
        from pellucid.server.storage.vectors_pgvector import PgvectorIndex
        from tests import pg

        uri = pg.new_database()

        def open_index() -> VectorIndex:
            # pgvector draws HNSW levels at random (unseeded): at the default ef_search (64) this
            # 3,000-vector graph's recall@10 ranged 0.94-1.0 over runs; 100 keeps it above 0.95
            opened.append(PgvectorIndex(uri, filter_exact_max=50, ef_search=100, hnsw_threshold=HNSW_THRESHOLD))
            return opened[-1]

    open_index.backend = request.param  # type: ignore[attr-defined]
    yield open_index
    for index in opened:
        index.close()


def _keys(values: object) -> npt.NDArray[np.int64]:
    return np.asarray(values, dtype=np.int64)


def clustered(count: int, dimension: int, seed: int, clusters: int = 40) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dimension)).astype(np.float32)
    vectors = centers[rng.integers(0, clusters, count)] + 0.5 * rng.standard_normal((count, dimension))
    return vectors.astype(np.float32)


def brute_force(
    vectors: npt.NDArray[np.float32],
    keys: npt.NDArray[np.int64],
    query: npt.NDArray[np.float32],
    metric: Metric,
    k: int,
) -> list[int]:
    """The reference: numpy over every vector, written out plainly."""
    if metric is Metric.DOT:
        scores = vectors @ query
    elif metric is Metric.COSINE:
        scores = (vectors @ query) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    else:
        scores = -np.linalg.norm(vectors - query, axis=1)
    order = np.argsort(-scores, kind="stable")[:k]
    return keys[order].tolist()


def test_upsert_replace_remove_get(opener: Callable[[], VectorIndex]) -> None:
    index = opener()
    assert index.count(SPACE) == 0 and index.dimension(SPACE) is None
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    index.upsert(SPACE, _keys([10, 20, 30]), vectors)
    assert index.count(SPACE) == 3 and index.dimension(SPACE) == 4
    got = index.get(SPACE, _keys([20, 99]))
    assert list(got) == [20] and np.array_equal(got[20], vectors[1])
    index.upsert(SPACE, _keys([20]), np.full((1, 4), 7.5, dtype=np.float32))  # a replacement
    assert index.count(SPACE) == 3 and np.array_equal(index.get(SPACE, _keys([20]))[20], np.full(4, 7.5))
    assert index.remove(SPACE, _keys([10, 99])) == 1
    assert index.count(SPACE) == 2 and index.get(SPACE, _keys([10])) == {}
    assert sorted(h.key for h in index.search(SPACE, vectors[0], 10)) == [20, 30]
    assert index.count("alice/other/text") == 0 and index.search("alice/other/text", vectors[0], 5) == []


def test_dimension_mismatch(opener: Callable[[], VectorIndex]) -> None:
    index = opener()
    index.upsert(SPACE, _keys([1]), np.ones((1, 8), dtype=np.float32))
    with pytest.raises(DimensionMismatch):
        index.upsert(SPACE, _keys([2]), np.ones((1, 9), dtype=np.float32))
    with pytest.raises(DimensionMismatch):
        index.search(SPACE, np.ones(7, dtype=np.float32), 3)
    assert index.count(SPACE) == 1


@pytest.mark.parametrize("metric", list(Metric))
def test_exact_search_equals_brute_force(opener: Callable[[], VectorIndex], metric: Metric) -> None:
    index = opener()
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((700, 16)).astype(np.float32)
    keys = np.arange(1000, 1700, dtype=np.int64)
    index.upsert(SPACE, keys, vectors)
    for query in rng.standard_normal((5, 16)).astype(np.float32):
        hits = index.search(SPACE, query, 10, metric, exact=True)
        assert [h.key for h in hits] == brute_force(vectors, keys, query, metric, 10)
        expected = brute_force(vectors, keys, query, metric, 700)
        reference = {Metric.DOT: vectors @ query}.get(metric)
        if reference is not None:  # scores are the metric's values
            assert hits[0].score == pytest.approx(float(reference[expected[0] - 1000]), rel=1e-4)
        allowed = np.sort(rng.choice(keys, 60, replace=False))
        filtered = index.search(SPACE, query, 10, metric, allowed=allowed, exact=True)
        picked = np.isin(keys, allowed)
        assert [h.key for h in filtered] == brute_force(vectors[picked], keys[picked], query, metric, 10)


def test_cosine_scores(opener: Callable[[], VectorIndex]) -> None:
    index = opener()
    index.upsert(SPACE, _keys([1, 2, 3]), np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32))
    hits = index.search(SPACE, np.array([2, 0], dtype=np.float32), 3)
    assert [h.key for h in hits] == [1, 2, 3]
    assert [round(h.score, 5) for h in hits] == [1.0, 0.0, -1.0]
    euclidean = index.search(SPACE, np.array([2, 0], dtype=np.float32), 1, Metric.EUCLIDEAN)
    assert euclidean[0].key == 1 and euclidean[0].score == pytest.approx(-1.0, abs=1e-5)


def _recall(index: VectorIndex, vectors: npt.NDArray[np.float32], keys: npt.NDArray[np.int64], seed: int) -> float:
    queries = clustered(30, vectors.shape[1], seed=seed)
    found = 0
    for query in queries:
        hits = index.search(SPACE, query, 10)
        found += len({h.key for h in hits} & set(brute_force(vectors, keys, query, Metric.COSINE, 10)))
    return found / (10 * len(queries))


def test_ann_recall_filters_and_removes(opener: Callable[[], VectorIndex]) -> None:
    """Large enough for the ANN path (faiss: past its threshold; pgvector: its HNSW index, built
    after the first batch and inserted into by the next two)."""
    index = opener()
    vectors = clustered(3000, 32, seed=2)
    keys = np.arange(1, 3001, dtype=np.int64) * 3
    for start in range(0, 3000, 1000):
        index.upsert(SPACE, keys[start : start + 1000], vectors[start : start + 1000])
    if getattr(opener, "backend", "") == "pgvector":
        index.wait_for_index_builds()  # type: ignore[attr-defined]
    if getattr(opener, "backend", "") in ("faiss", "pgvector"):
        assert index.uses_ann(SPACE)  # type: ignore[attr-defined]
    assert _recall(index, vectors, keys, seed=3) >= 0.95
    rng = np.random.default_rng(4)
    query = clustered(1, 32, seed=5)[0]
    for share in (0.1, 0.001):
        allowed = np.sort(rng.choice(keys, max(3, int(share * 3000)), replace=False))
        hits = index.search(SPACE, query, 10, allowed=allowed)
        assert len(hits) == min(10, allowed.shape[0])
        assert {h.key for h in hits} <= set(allowed.tolist())
        picked = np.isin(keys, allowed)  # and they are (nearly) the best allowed ones
        best = set(brute_force(vectors[picked], keys[picked], query, Metric.COSINE, 10))
        assert len({h.key for h in hits} & best) >= 0.9 * len(best)
    removed = np.sort(np.array([h.key for h in index.search(SPACE, query, 50)], dtype=np.int64))
    assert index.remove(SPACE, removed) == 50
    hits = index.search(SPACE, query, 10)
    assert len(hits) == 10 and not {h.key for h in hits} & set(removed.tolist())
    kept = ~np.isin(keys, removed)
    filtered = index.search(SPACE, query, 10, allowed=np.sort(np.concatenate([removed, keys[kept][:400]])))
    assert len(filtered) == 10 and not {h.key for h in filtered} & set(removed.tolist())
    assert _recall(index, vectors[kept], keys[kept], seed=6) >= 0.95


def test_reopen_keeps_everything(opener: Callable[[], VectorIndex]) -> None:
    index = opener()
    vectors = clustered(800, 8, seed=7)
    keys = np.arange(800, dtype=np.int64)
    index.upsert(SPACE, keys, vectors)
    index.upsert("bob/app/image", _keys([5]), np.ones((1, 3), dtype=np.float32))
    index.remove(SPACE, _keys([0, 1, 2]))
    index.upsert(SPACE, _keys([3]), np.zeros((1, 8), dtype=np.float32) + 2)
    query = vectors[10]
    before = index.search(SPACE, query, 10)
    if getattr(opener, "backend", "") == "memory":
        return  # nothing to reopen
    index.close()
    again = opener()
    assert again.count(SPACE) == 797 and again.dimension("bob/app/image") == 3
    assert again.get(SPACE, _keys([0, 3])).keys() == {3} and np.all(again.get(SPACE, _keys([3]))[3] == 2)
    assert [h.key for h in again.search(SPACE, query, 10)] == [h.key for h in before]
    if getattr(opener, "backend", "") == "faiss":  # the structure saved at close is read back, not rebuilt
        assert again.uses_ann(SPACE) and again.ann_loaded(SPACE)  # type: ignore[attr-defined]
    again.upsert(SPACE, _keys([0]), vectors[:1])  # writes go on after a reopen
    assert again.count(SPACE) == 798


def test_drop_space(opener: Callable[[], VectorIndex]) -> None:
    index = opener()
    index.upsert(SPACE, _keys([1, 2]), np.ones((2, 4), dtype=np.float32))
    index.upsert("alice/photos/image", _keys([1]), np.ones((1, 2), dtype=np.float32))
    index.drop_space(SPACE)
    assert index.count(SPACE) == 0 and index.dimension(SPACE) is None and index.search(SPACE, np.ones(5), 3) == []
    index.upsert(SPACE, _keys([7]), np.ones((1, 5), dtype=np.float32))  # a new dimension is fine after a drop
    assert index.dimension(SPACE) == 5 and index.count("alice/photos/image") == 1


def test_concurrent_upserts(opener: Callable[[], VectorIndex]) -> None:
    index = opener()
    vectors = clustered(800, 8, seed=8)

    def write(part: int) -> None:
        for start in range(part * 200, part * 200 + 200, 20):
            index.upsert(SPACE, np.arange(start, start + 20, dtype=np.int64), vectors[start : start + 20])

    threads = [threading.Thread(target=write, args=(part,)) for part in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert index.count(SPACE) == 800
    assert index.search(SPACE, vectors[123], 1, exact=True)[0].key == 123


@pytest.mark.parametrize("backend", ["exact", "faiss"])
def test_torn_log_tail_is_survived(tmp_path: Path, backend: str) -> None:
    """A crash mid-write leaves a partial record at the log's end: it is ignored and cut off."""
    directory = tmp_path / "vectors"
    index = ExactVectorIndex(directory, fsync=False) if backend == "exact" else _faiss_index(directory)
    index.upsert(SPACE, _keys([1, 2]), np.ones((2, 4), dtype=np.float32))
    index.upsert(SPACE, _keys([3]), np.full((1, 4), 3, dtype=np.float32))
    logs = list(directory.glob("spaces/*/log-*.bin"))
    assert len(logs) == 1
    whole = logs[0].read_bytes()
    # no close (a crash): release the lock by hand, and tear the last record
    exact = index if isinstance(index, ExactVectorIndex) else index.exact  # type: ignore[attr-defined]
    assert exact._dir_lock is not None
    exact._dir_lock.close()
    logs[0].write_bytes(whole[:-5])
    reopened = ExactVectorIndex(directory, fsync=False) if backend == "exact" else _faiss_index(directory)
    assert reopened.count(SPACE) == 2 and reopened.get(SPACE, _keys([3])) == {}
    reopened.upsert(SPACE, _keys([4]), np.ones((1, 4), dtype=np.float32))  # appends after the cut
    reopened.close()
    last = ExactVectorIndex(directory, fsync=False)
    assert sorted(last.get(SPACE, _keys([1, 2, 3, 4]))) == [1, 2, 4]
    last.close()


def test_a_failed_log_write_loses_no_later_write(tmp_path: Path) -> None:
    """A write that fails part way (disk full) leaves no half record behind: the writes
    acknowledged after it survive a crash (the replay stops at the first bad record)."""
    index = ExactVectorIndex(tmp_path / "vectors", fsync=False)
    index.upsert(SPACE, _keys([1]), np.ones((1, 4), dtype=np.float32))
    files = index._files[SPACE]  # type: ignore[attr-defined]
    real = files._log

    class DiskFull:
        def write(self, data: bytes) -> None:
            real.write(data[: len(data) // 2])
            real.flush()
            raise OSError(28, "No space left on device")

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    files._log = DiskFull()
    with pytest.raises(OSError):
        index.upsert(SPACE, _keys([2]), np.ones((1, 4), dtype=np.float32))
    index.upsert(SPACE, _keys([3]), np.full((1, 4), 2, dtype=np.float32))
    index.upsert(SPACE, _keys([4]), np.full((1, 4), 3, dtype=np.float32))
    index._dir_lock.close()  # type: ignore[attr-defined]  # as a crash would: the lock goes, nothing is compacted
    crashed = subprocess_open(tmp_path / "vectors")
    assert crashed == [1, 3, 4]


def subprocess_open(directory: Path) -> list[int]:
    """The keys of SPACE as a new process finds them (this one holds the directory's lock and
    never closed the index: a crash)."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys; from pathlib import Path; import numpy as np;"
        "from pellucid.server.storage.vectors_exact import ExactVectorIndex;"
        f"index = ExactVectorIndex(Path({str(directory)!r}), fsync=False);"
        f"print(json.dumps(sorted(index.get({SPACE!r}, np.arange(10, dtype=np.int64)))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [int(k) for k in json.loads(done.stdout.strip().splitlines()[-1])]


def test_vector_index_uris(tmp_path: Path) -> None:
    assert check_vector_index_uri("") == "" and check_vector_index_uri("memory:") == "memory"
    assert check_vector_index_uri(f"exact://{tmp_path}") == "exact"
    with pytest.raises(ValueError, match="unsupported vector index URI"):
        check_vector_index_uri("qdrant://somewhere")
    index = open_vector_index(f"exact://{tmp_path / 'x'}", None)
    assert isinstance(index, ExactVectorIndex) and index.directory == tmp_path / "x"
    index.close()
    default = open_vector_index("", tmp_path)
    try:
        import faiss  # noqa: F401
    except ImportError:
        assert isinstance(default, ExactVectorIndex)
    else:
        from pellucid.server.storage.vectors_faiss import FaissVectorIndex

        assert isinstance(default, FaissVectorIndex)
    assert (tmp_path / "vectors" / "LOCK").exists()
    default.close()


def test_server_keeps_its_vectors_in_the_data_dir_across_restarts(tmp_path: Path) -> None:
    from pellucid.server.runtime import PellucidServer, ServerSettings

    settings = ServerSettings(data_dir=tmp_path / "data", port=0, health_check_seconds=0, blob_gc_interval_seconds=0)
    server = PellucidServer(settings)
    server.start()
    try:
        assert server.engine is not None
        server.engine.vectors.upsert(SPACE, _keys([1, 2]), np.eye(2, dtype=np.float32))
    finally:
        server.stop(grace=0.5)
    assert (tmp_path / "data" / "vectors" / "spaces").is_dir()
    again = PellucidServer(settings)
    again.start()
    try:
        assert again.engine is not None
        assert again.engine.vectors.search(SPACE, np.array([0, 1], dtype=np.float32), 1)[0].key == 2
    finally:
        again.stop(grace=0.5)


def test_replicas_over_postgresql_share_their_vectors_by_default(tmp_path: Path, _postgres_session: None) -> None:
    """Metadata in PostgreSQL and no vector index named: the vectors go to pgvector in the same
    database, so what one replica's workers embed the other replica searches."""
    from pellucid.server.runtime import PellucidServer, ServerSettings
    from pellucid.server.storage.vectors_pgvector import PgvectorIndex

    database = pg.new_database()
    servers = []
    try:
        for name in ("a", "b"):
            settings = ServerSettings(
                data_dir=tmp_path / name,
                port=0,
                metadata_uri=database,
                health_check_seconds=0,
                blob_gc_interval_seconds=0,
            )
            servers.append(PellucidServer(settings))
            servers[-1].start()
        a, b = (server.engine for server in servers)
        assert a is not None and b is not None
        assert isinstance(a.vectors, PgvectorIndex) and isinstance(b.vectors, PgvectorIndex)
        a.vectors.upsert(SPACE, _keys([1, 2]), np.eye(2, dtype=np.float32))
        assert b.vectors.search(SPACE, np.array([0, 1], dtype=np.float32), 1)[0].key == 2
    finally:
        for server in servers:
            server.stop(grace=0.5)


def test_faiss_hnsw_kind_recall_filters_and_reopen(tmp_path: Path) -> None:
    """The other ANN kind (HNSW; the default is IVF with 8-bit scalar quantisation) holds the same bars."""
    index = _faiss_index(tmp_path / "vectors", kind="hnsw")
    vectors = clustered(3000, 32, seed=9)
    keys = np.arange(3000, dtype=np.int64)
    index.upsert(SPACE, keys, vectors)
    assert index.uses_ann(SPACE)  # type: ignore[attr-defined]
    assert _recall(index, vectors, keys, seed=10) >= 0.95
    allowed = np.arange(0, 3000, 10, dtype=np.int64)
    hits = index.search(SPACE, vectors[5], 10, allowed=allowed)
    assert len(hits) == 10 and {h.key for h in hits} <= set(allowed.tolist())
    index.close()
    again = _faiss_index(tmp_path / "vectors", kind="hnsw")
    assert again.ann_loaded(SPACE) and _recall(again, vectors, keys, seed=10) >= 0.95  # type: ignore[attr-defined]
    again.close()


def test_faiss_ivf_is_retrained_as_the_space_grows(tmp_path: Path) -> None:
    """IVF centroids trained on a space's first vectors are retrained as the space grows
    (here every doubling), and the saved structure says when it was built."""
    kind = "ivf"
    index = _faiss_index(tmp_path / "vectors", kind=kind, rebuild_growth=2.0)
    vectors = clustered(4000, 32, seed=11)
    keys = np.arange(4000, dtype=np.int64)
    built: list[int] = []
    for start in range(0, 4000, 250):
        index.upsert(SPACE, keys[start : start + 250], vectors[start : start + 250])
        if index.uses_ann(SPACE):  # type: ignore[attr-defined]
            built.append(index._anns[SPACE].built_size)  # type: ignore[attr-defined]
    assert sorted(set(built)) == [500, 1000, 2000, 4000]
    assert _recall(index, vectors, keys, seed=12) >= 0.95
    index.close()
    again = _faiss_index(tmp_path / "vectors", kind=kind, rebuild_growth=2.0)
    assert again.ann_loaded(SPACE) and again._anns[SPACE].built_size == 4000  # type: ignore[attr-defined]
    again.close()


def test_faiss_filters_with_sparse_and_dense_keys(tmp_path: Path) -> None:
    """Filters past filter_exact_max reach faiss as a bitmap (dense keys) or a hash set (keys
    spread far apart); both return exactly k allowed hits, nearly the best allowed ones."""
    vectors = clustered(3000, 32, seed=13)
    query = clustered(1, 32, seed=14)[0]
    for keys in (np.arange(3000, dtype=np.int64), np.arange(1, 3001, dtype=np.int64) * 1_000_003):
        index = _faiss_index(tmp_path / f"v{int(keys[-1])}")
        index.upsert(SPACE, keys, vectors)
        allowed = np.sort(np.random.default_rng(15).choice(keys, 300, replace=False))
        hits = index.search(SPACE, query, 10, allowed=allowed)
        assert len(hits) == 10 and {h.key for h in hits} <= set(allowed.tolist())
        picked = np.isin(keys, allowed)
        best = set(brute_force(vectors[picked], keys[picked], query, Metric.COSINE, 10))
        assert len({h.key for h in hits} & best) >= 9
        index.close()
