"""pgvector's HNSW index comes when a space holds `hnsw_threshold` vectors: below it there is
none and searches are exact scans; crossing it builds the index once (also with two stores on
one database, as replicas), and an INVALID index a stopped build left behind is rebuilt."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from pellucid.server.storage import open_metadata_store
from pellucid.server.storage.postgres_connections import split_pool_parameters, vector_parameters
from pellucid.server.storage.vectors import Metric
from pellucid.server.storage.vectors_pgvector import PgvectorIndex
from tests import pg
from tests.test_vector_contract import brute_force, clustered

SPACE = "alice/photos/text"
THRESHOLD = 500


@pytest.fixture
def uri(_postgres_session: None) -> str:
    return pg.new_database()


@pytest.fixture
def opened() -> Iterator[list[PgvectorIndex]]:
    stores: list[PgvectorIndex] = []
    yield stores
    for store in stores:
        store.close()


def open_store(uri: str, opened: list[PgvectorIndex], threshold: int = THRESHOLD) -> PgvectorIndex:
    opened.append(PgvectorIndex(uri, filter_exact_max=50, ef_search=100, hnsw_threshold=threshold))
    return opened[-1]


def table_of(uri: str, space: str = SPACE) -> str:
    with psycopg.connect(uri) as conn:
        row = conn.execute("SELECT table_name FROM vector_spaces WHERE name = %s", (space,)).fetchone()
    assert row is not None
    return str(row[0])


def hnsw_indexes(uri: str, space: str = SPACE) -> list[tuple[int, bool]]:
    """The space table's HNSW indexes as the catalog has them: (oid, valid)."""
    with psycopg.connect(uri) as conn:
        rows = conn.execute(
            "SELECT i.indexrelid::bigint, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_am a ON a.oid = c.relam WHERE i.indrelid = to_regclass(%s) AND a.amname = 'hnsw'",
            (table_of(uri, space),),
        ).fetchall()
    return [(int(oid), bool(valid)) for oid, valid in rows]


def advisory_locks(uri: str) -> int:
    """Advisory locks any session of the database holds (a build's would stop other builds)."""
    with psycopg.connect(uri) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
    return int(row[0]) if row else 0


def recall(store: PgvectorIndex, vectors: np.ndarray, keys: np.ndarray, seed: int) -> float:
    found = 0
    queries = clustered(30, vectors.shape[1], seed=seed)
    for query in queries:
        hits = {h.key for h in store.search(SPACE, query, 10)}
        found += len(hits & set(brute_force(vectors, keys, query, Metric.COSINE, 10)))
    return found / (10 * len(queries))


def test_a_space_below_the_threshold_has_no_index_and_searches_exactly(uri: str, opened: list[PgvectorIndex]) -> None:
    store = open_store(uri, opened)
    vectors = clustered(THRESHOLD - 1, 32, seed=20)
    keys = np.arange(THRESHOLD - 1, dtype=np.int64) * 7
    store.upsert(SPACE, keys[:300], vectors[:300])
    store.upsert(SPACE, keys[300:], vectors[300:])
    store.wait_for_index_builds()
    assert hnsw_indexes(uri) == [] and not store.uses_ann(SPACE) and store.indexes_built == 0
    rng = np.random.default_rng(21)
    for query in clustered(10, 32, seed=22):  # not exact=True: the default path, a sequential scan
        hits = store.search(SPACE, query, 10)
        assert [h.key for h in hits] == brute_force(vectors, keys, query, Metric.COSINE, 10)
        allowed = np.sort(rng.choice(keys, 200, replace=False))  # past filter_exact_max: the "indexed" filter path
        picked = np.isin(keys, allowed)
        filtered = store.search(SPACE, query, 10, allowed=allowed)
        assert [h.key for h in filtered] == brute_force(vectors[picked], keys[picked], query, Metric.COSINE, 10)


def test_crossing_the_threshold_builds_the_index_once_and_recall_holds(uri: str, opened: list[PgvectorIndex]) -> None:
    store = open_store(uri, opened)
    vectors = clustered(3000, 32, seed=23)
    keys = np.arange(3000, dtype=np.int64)
    store.upsert(SPACE, keys[:300], vectors[:300])
    store.wait_for_index_builds()
    assert hnsw_indexes(uri) == []
    store.upsert(SPACE, keys[300:2000], vectors[300:2000])  # crosses it: built from these 2,000 rows
    store.wait_for_index_builds()
    built = hnsw_indexes(uri)
    assert len(built) == 1 and built[0][1] and store.uses_ann(SPACE) and store.indexes_built == 1
    store.upsert(SPACE, keys[2000:], vectors[2000:])  # into the graph, no second build
    store.wait_for_index_builds()
    assert hnsw_indexes(uri) == built and store.indexes_built == 1
    assert recall(store, vectors, keys, seed=24) >= 0.95  # the contract's bar, through the index


def test_two_stores_crossing_together_end_with_one_valid_index(uri: str, opened: list[PgvectorIndex]) -> None:
    """Two replicas on one database cross the threshold at once: one builds, the other goes on."""
    stores = [open_store(uri, opened), open_store(uri, opened)]
    vectors = clustered(1200, 32, seed=25)
    keys = np.arange(1200, dtype=np.int64)
    both = threading.Barrier(2)
    errors: list[BaseException] = []

    def write(part: int) -> None:
        try:
            mine = slice(part * 600, part * 600 + 600)
            stores[part].upsert(SPACE, keys[mine][:200], vectors[mine][:200])
            both.wait(timeout=30)  # 400 rows: below it; each next batch makes at least 600
            stores[part].upsert(SPACE, keys[mine][200:], vectors[mine][200:])
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(part,)) for part in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for store in stores:
        store.wait_for_index_builds()
    indexes = hnsw_indexes(uri)
    assert len(indexes) == 1 and indexes[0][1]
    assert sum(store.indexes_built for store in stores) == 1
    assert stores[0].count(SPACE) == 1200 and all(store.uses_ann(SPACE) for store in stores)
    query = vectors[77]
    assert [h.key for h in stores[1].search(SPACE, query, 1)] == [77]


def test_an_invalid_index_left_by_a_stopped_build_is_rebuilt(uri: str, opened: list[PgvectorIndex]) -> None:
    """A replica closed (or killed) mid-build leaves an INVALID index: searches stay exact, and
    the next upsert by any replica drops and rebuilds it."""
    first = open_store(uri, opened)
    vectors = clustered(800, 32, seed=26)
    keys = np.arange(800, dtype=np.int64)
    first.upsert(SPACE, keys[:400], vectors[:400])
    table = table_of(uri)
    with psycopg.connect(uri) as writer:  # an uncommitted write: CONCURRENTLY waits for it after its catalog entry
        writer.execute(f"INSERT INTO {table} VALUES (%s, %s)".encode(), (10_000, "[" + ",".join(["1"] * 32) + "]"))
        first.upsert(SPACE, keys[400:], vectors[400:])  # crosses it: the build starts, then waits
        deadline = time.monotonic() + 30
        while not hnsw_indexes(uri) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hnsw_indexes(uri) and not hnsw_indexes(uri)[0][1]  # in the catalog, not valid yet
        first.close()  # cancels the build
        writer.rollback()
    stale = hnsw_indexes(uri)
    assert len(stale) == 1 and not stale[0][1] and first.indexes_built == 0
    assert advisory_locks(uri) == 0  # the cancelled build's session ended with its lock

    second = open_store(uri, opened)  # another replica
    assert not second.uses_ann(SPACE)
    for query in clustered(5, 32, seed=27):  # exact while the index is INVALID
        assert [h.key for h in second.search(SPACE, query, 10)] == brute_force(vectors, keys, query, Metric.COSINE, 10)
    second.upsert(SPACE, keys[:1], vectors[:1])
    second.wait_for_index_builds()
    rebuilt = hnsw_indexes(uri)
    assert len(rebuilt) == 1 and rebuilt[0][1] and rebuilt[0][0] != stale[0][0] and second.indexes_built == 1
    assert advisory_locks(uri) == 0
    assert second.uses_ann(SPACE) and recall(second, vectors, keys, seed=28) >= 0.95


def test_a_lock_timeout_of_the_database_does_not_cancel_the_build(uri: str, opened: list[PgvectorIndex]) -> None:
    """A build waits for older writes: a database (or role) lock_timeout would cancel every long
    one, leaving an INVALID index each time. The build's session sets none."""
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET lock_timeout = 200', current_database()); END $$"
        )
    store = open_store(uri, opened)
    vectors = clustered(600, 16, seed=33)
    store.upsert(SPACE, np.arange(400, dtype=np.int64), vectors[:400])
    table = table_of(uri)
    with psycopg.connect(uri) as writer, psycopg.connect(uri, autocommit=True) as watcher:
        writer.execute(f"INSERT INTO {table} VALUES (%s, %s)".encode(), (10_000, "[" + ",".join(["1"] * 16) + "]"))
        store.upsert(SPACE, np.arange(400, 600, dtype=np.int64), vectors[400:])
        waited = 0.0
        deadline = time.monotonic() + 30
        while waited < 1.0 and not store.wait_for_index_builds(timeout=0) and time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT extract(epoch FROM now() - query_start) FROM pg_stat_activity"
                " WHERE query LIKE 'CREATE INDEX CONCURRENTLY%%' AND state = 'active'"
            ).fetchone()
            waited = float(row[0]) if row else 0.0
            time.sleep(0.02)
        assert waited >= 1.0, "the build ended (cancelled by the lock timeout) before the writer did"
        writer.rollback()
    assert store.wait_for_index_builds(timeout=30)
    assert [valid for _, valid in hnsw_indexes(uri)] == [True] and store.indexes_built == 1


def test_dropping_a_space_cancels_its_index_build(uri: str, opened: list[PgvectorIndex]) -> None:
    """DROP TABLE would wait for a build in flight (and the build for the drop's snapshot, until
    PostgreSQL's deadlock check ends one): drop_space cancels the build first."""
    store = open_store(uri, opened)
    vectors = clustered(600, 16, seed=31)
    store.upsert(SPACE, np.arange(400, dtype=np.int64), vectors[:400])
    table = table_of(uri)
    dropped: list[BaseException | None] = []
    with psycopg.connect(uri) as writer:  # holds the build in its first wait
        writer.execute(f"INSERT INTO {table} VALUES (%s, %s)".encode(), (10_000, "[" + ",".join(["1"] * 16) + "]"))
        store.upsert(SPACE, np.arange(400, 600, dtype=np.int64), vectors[400:])
        deadline = time.monotonic() + 30
        while not hnsw_indexes(uri) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hnsw_indexes(uri), "the build did not start"

        def drop() -> None:
            try:
                store.drop_space(SPACE)
                dropped.append(None)
            except BaseException as exc:  # noqa: BLE001 - reported by the assert below
                dropped.append(exc)

        dropping = threading.Thread(target=drop)
        dropping.start()
        # cancelled while the writer still holds it back
        assert store.wait_for_index_builds(timeout=30), "the build was not cancelled"
        writer.rollback()  # DROP TABLE waits for this writer's lock, as for any write
    dropping.join(30)
    assert dropped == [None] and store.indexes_built == 0
    assert store.count(SPACE) == 0 and store.dimension(SPACE) is None
    with psycopg.connect(uri) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,)
    store.upsert(SPACE, np.arange(3, dtype=np.int64), np.ones((3, 4), dtype=np.float32))  # made anew
    assert store.dimension(SPACE) == 4


def test_threshold_zero_indexes_at_creation_and_indexed_spaces_keep_theirs(
    uri: str, opened: list[PgvectorIndex]
) -> None:
    """hnsw_threshold=0 is the earlier behaviour (the index made with the table); a space made so
    keeps its index under a store with a threshold, below it."""
    eager = open_store(uri, opened, threshold=0)
    eager.upsert(SPACE, np.arange(10, dtype=np.int64), clustered(10, 8, seed=29))
    made = hnsw_indexes(uri)
    assert len(made) == 1 and made[0][1] and eager.uses_ann(SPACE) and eager.indexes_built == 0
    later = open_store(uri, opened)
    later.upsert(SPACE, np.arange(10, 20, dtype=np.int64), clustered(10, 8, seed=30))
    later.wait_for_index_builds()
    assert hnsw_indexes(uri) == made and later.uses_ann(SPACE) and later.indexes_built == 0
    with pytest.raises(ValueError, match="hnsw_threshold"):
        PgvectorIndex(uri, hnsw_threshold=-1)


def test_closing_while_a_build_is_between_statements_builds_nothing(uri: str, opened: list[PgvectorIndex]) -> None:
    """A cancel reaches only a statement running at that instant: close() cancels until the build
    thread ends, and a build checks for it before its long statement."""
    store = open_store(uri, opened)
    started, go = threading.Event(), threading.Event()
    build_index = store._build_index

    def held(conn: psycopg.Connection, table: str) -> bool:  # type: ignore[type-arg]
        started.set()
        go.wait(10)
        return build_index(conn, table)

    store._build_index = held  # type: ignore[method-assign]
    store.upsert(SPACE, np.arange(600, dtype=np.int64), clustered(600, 16, seed=35))
    assert started.wait(10)
    closing = threading.Thread(target=store.close)
    closing.start()
    deadline = time.monotonic() + 10
    while not store._closing and time.monotonic() < deadline:
        time.sleep(0.01)
    go.set()
    closing.join(30)
    assert not closing.is_alive() and store.indexes_built == 0
    assert hnsw_indexes(uri) == [] and advisory_locks(uri) == 0


def test_settings_come_from_the_uri_unless_given_and_the_metadata_store_ignores_them(
    uri: str, opened: list[PgvectorIndex]
) -> None:
    """One postgresql:// URI may be the metadata store's and the vector index's (replicas): the
    index reads its settings from it and libpq never sees them."""
    tuned = uri + ("&" if "?" in uri else "?") + "hnsw_threshold=3&ef_search=77&filter_exact_max=9&rerank_factor=2"
    assert vector_parameters(tuned) == {"hnsw_threshold": 3, "ef_search": 77, "filter_exact_max": 9, "rerank_factor": 2}
    assert split_pool_parameters(tuned)[0] == uri
    store = PgvectorIndex(tuned, ef_search=100)  # an argument wins over the URI
    opened.append(store)
    assert (store.hnsw_threshold, store.ef_search, store.filter_exact_max, store.rerank_factor) == (3, 100, 9, 2)
    store.upsert(SPACE, np.arange(3, dtype=np.int64), clustered(3, 8, seed=41))
    assert store.wait_for_index_builds(timeout=30) and store.uses_ann(SPACE)  # 3 vectors: the URI's threshold
    metadata = open_metadata_store(tuned)
    try:
        assert metadata.get_app("u", "nothing") is None  # connected: libpq was not given them
    finally:
        metadata.close()
    for bad in ("hnsw_threshold=-1", "ef_search=x"):
        with pytest.raises(ValueError, match=bad.split("=")[0]):
            PgvectorIndex(uri + ("&" if "?" in uri else "?") + bad)
