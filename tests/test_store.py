"""The MetadataStore contract, over SQLite and PostgreSQL (the `metadata_uri` fixture), and SQLite's plumbing."""

import os
import re
import sqlite3
from pathlib import Path

import pytest

from pellucid.server.records import AppRecord, IngestItem, PageQuery
from pellucid.server.storage import Conflict, open_metadata_store
from pellucid.server.storage.migrations import pending_migrations
from pellucid.server.storage.sqlite_schema import MIGRATIONS


def test_migrations_run_on_open_and_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "meta.sqlite3"
    store = open_metadata_store(f"sqlite://{path}")
    assert store.schema_version() == LATEST_VERSION
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == sorted(v for v, _ in MIGRATIONS)  # each part of the schema has its own number
    reopened = open_metadata_store(str(path))  # a second open applies nothing twice
    assert reopened.schema_version() == LATEST_VERSION
    reopened.close()


LATEST_VERSION = max(version for version, _ in MIGRATIONS)


def test_a_migration_numbered_below_the_highest_applied_one_still_runs() -> None:
    """Parts of the schema land in any order: a store at 14 that lacks 9 gets 9, lowest first."""
    migrations = [(1, "a"), (14, "c"), (9, "b")]
    assert pending_migrations(migrations, {1, 14}, "db") == [(9, "b")]
    assert pending_migrations(migrations, set(), "db") == [(1, "a"), (9, "b"), (14, "c")]
    with pytest.raises(RuntimeError, match="schema version 15, newer"):
        pending_migrations(migrations, {1, 15}, "db")


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "meta.sqlite3"
    open_metadata_store(str(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (LATEST_VERSION + 1,))
    with pytest.raises(RuntimeError, match="upgrade pellucid"):
        open_metadata_store(str(path))


def test_unknown_store_scheme() -> None:
    with pytest.raises(ValueError, match=r"'mysql'.*sqlite:///.*postgresql://"):
        open_metadata_store("mysql://x")


def test_keyset_pages_cover_everything_once(metadata_uri: str) -> None:
    store = open_metadata_store(metadata_uri)
    for i in range(25):
        store.insert_app(AppRecord(user_id="u", id=f"app{i:02d}", created_at=i, modified_at=i))
    store.insert_app(AppRecord(user_id="other", id="app00", created_at=0, modified_at=0))
    with pytest.raises(Conflict):
        store.insert_app(AppRecord(user_id="u", id="app03", created_at=0, modified_at=0))
    seen, after = [], None
    while True:
        page = store.list_apps("u", "", PageQuery(limit=10, after=after))
        seen += [a.id for a in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [f"app{i:02d}" for i in range(25)]
    assert [a.id for a in store.list_apps("u", "app1", PageQuery(limit=100)).items] == [f"app1{i}" for i in range(10)]
    store.insert_app(AppRecord(user_id="u", id="a_b%c", created_at=0, modified_at=0))
    assert [a.id for a in store.list_apps("u", "_b%", PageQuery(limit=100)).items] == ["a_b%c"]  # no wildcards
    store.close()


def test_a_stale_attempt_cannot_touch_a_newer_claim(metadata_uri: str) -> None:
    from pellucid.server.storage.base import ClaimOutcome

    store = open_metadata_store(metadata_uri)
    assert (
        store.claim_request("u", "r1", "CreateApp", now=0.0, stale_after=10, owner="a").outcome is ClaimOutcome.CLAIMED
    )
    assert (
        store.claim_request("u", "r1", "CreateApp", now=5.0, stale_after=10, owner="b").outcome
        is ClaimOutcome.IN_PROGRESS
    )
    assert (
        store.claim_request("u", "r1", "CreateApp", now=20.0, stale_after=10, owner="b").outcome is ClaimOutcome.CLAIMED
    )
    store.release_request("u", "r1", owner="a")  # the stale attempt gives up: b's claim stays
    assert not store.finish_request("u", "r1", b"from a", now=21.0, owner="a")  # nor can it finish b's claim
    assert (
        store.claim_request("u", "r1", "CreateApp", now=22.0, stale_after=10, owner="c").outcome
        is ClaimOutcome.IN_PROGRESS
    )
    assert store.claim_request("u", "r1", "DeleteApp", now=22.0, stale_after=10, owner="c").outcome is (
        ClaimOutcome.OTHER_METHOD
    )
    assert store.finish_request("u", "r1", b"from b", now=23.0, owner="b")
    replay = store.claim_request("u", "r1", "CreateApp", now=24.0, stale_after=10, owner="d")
    assert (replay.outcome, replay.response) == (ClaimOutcome.DONE, b"from b")
    assert store.purge_requests(older_than=23.5) == 1
    assert store.claim_request("u", "r1", "CreateApp", now=25.0, stale_after=10, owner="e").outcome is (
        ClaimOutcome.CLAIMED
    )
    store.close()


def test_claims_of_gone_replicas_are_released_and_those_of_live_ones_kept(metadata_uri: str) -> None:
    from pellucid.server.storage.base import ClaimOutcome

    store = open_metadata_store(metadata_uri)
    store.renew_replica("live", 100.0)
    store.renew_replica("silent", 10.0)
    store.renew_replica("me", 100.0)
    for request_id, replica in [
        ("r-live", "live"),
        ("r-silent", "silent"),
        ("r-unknown", "never-seen"),
        ("r-me", "me"),
    ]:
        claim = store.claim_request("u", request_id, "CreateApp", 50.0, 1e9, owner=request_id, replica=replica)
        assert claim.outcome is ClaimOutcome.CLAIMED
    assert store.finish_request("u", "r-me", b"done", 51.0, owner="r-me")
    store.claim_request("u", "r-me-open", "CreateApp", 50.0, 1e9, owner="o", replica="me")
    assert store.release_gone_replicas(alive_since=60.0, this_replica="me") == 2  # silent's and never-seen's

    def outcome(request_id: str) -> ClaimOutcome:
        return store.claim_request("u", request_id, "CreateApp", 70.0, 1e9, owner="x", replica="me").outcome

    assert outcome("r-live") is ClaimOutcome.IN_PROGRESS and outcome("r-me-open") is ClaimOutcome.IN_PROGRESS
    assert outcome("r-silent") is ClaimOutcome.CLAIMED and outcome("r-unknown") is ClaimOutcome.CLAIMED
    assert outcome("r-me") is ClaimOutcome.DONE  # a finished request is never released
    assert store.retire_replica("live") == 1
    assert outcome("r-live") is ClaimOutcome.CLAIMED
    store.renew_replica("live", 80.0)  # a renewal after a retirement brings it back
    assert store.release_gone_replicas(alive_since=float("inf"), this_replica="me") == 0  # x's claims are me's
    store.close()


def _committed_app_ids(uri: str) -> list[str]:
    """What another process reading the store sees: committed rows only."""
    if uri.startswith("sqlite://"):
        with sqlite3.connect(uri[len("sqlite://") :]) as conn:
            return [i for (i,) in conn.execute("SELECT id FROM apps ORDER BY id")]
    import psycopg

    with psycopg.connect(uri) as pg:
        return [i for (i,) in pg.execute("SELECT id FROM apps ORDER BY id")]


def test_a_unit_of_work_commits_its_writes_with_the_request_log_entry_or_nothing(metadata_uri: str) -> None:
    from pellucid.server.storage.base import ClaimOutcome

    store = open_metadata_store(metadata_uri)
    assert (
        store.claim_request("u", "r1", "CreateApp", now=0.0, stale_after=10, owner="a").outcome is ClaimOutcome.CLAIMED
    )
    with store.unit_of_work():
        store.insert_app(AppRecord(user_id="u", id="a1", created_at=0, modified_at=0))
        store.insert_app(AppRecord(user_id="u", id="a2", created_at=0, modified_at=0))
        assert store.get_app("u", "a1") is not None  # this thread reads its own unit's rows
        assert store.finish_request("u", "r1", b"answer", now=1.0, owner="a")
        assert _committed_app_ids(metadata_uri) == []  # nothing is visible, or durable, before the unit ends
    assert _committed_app_ids(metadata_uri) == ["a1", "a2"]
    replay = store.claim_request("u", "r1", "CreateApp", now=2.0, stale_after=10, owner="b")
    assert (replay.outcome, replay.response) == (ClaimOutcome.DONE, b"answer")

    assert (
        store.claim_request("u", "r2", "CreateApp", now=0.0, stale_after=10, owner="a").outcome is ClaimOutcome.CLAIMED
    )
    with pytest.raises(RuntimeError, match="after the log"), store.unit_of_work():
        store.insert_app(AppRecord(user_id="u", id="a3", created_at=0, modified_at=0))
        store.finish_request("u", "r2", b"lost", now=1.0, owner="a")
        raise RuntimeError("failed after the log entry was written")
    assert _committed_app_ids(metadata_uri) == ["a1", "a2"] and store.get_app("u", "a3") is None
    assert (
        store.claim_request("u", "r2", "CreateApp", now=2.0, stale_after=10, owner="b").outcome
        is ClaimOutcome.IN_PROGRESS
    )
    store.insert_app(AppRecord(user_id="u", id="a3", created_at=0, modified_at=0))  # the writer was handed back
    store.close()


def test_a_failed_write_inside_a_unit_rolls_back_only_its_own_statements(metadata_uri: str) -> None:
    from pellucid.server.records import TokenRecord, UserRecord

    store = open_metadata_store(metadata_uri)
    store.insert_user(
        UserRecord(id="someone", is_admin=False, created_at=0),
        TokenRecord(id="t1", user_id="someone", kind="pat", token_hash="h1", created_at=0),
    )
    with store.unit_of_work():
        store.insert_app(AppRecord(user_id="u", id="kept", created_at=0, modified_at=0))
        with pytest.raises(Conflict):  # the user row goes in, then its token's id is taken
            store.insert_user(
                UserRecord(id="half", is_admin=False, created_at=0),
                TokenRecord(id="t1", user_id="half", kind="pat", token_hash="h2", created_at=0),
            )
        with pytest.raises(Conflict):
            store.insert_app(AppRecord(user_id="u", id="kept", created_at=0, modified_at=0))
        store.insert_app(AppRecord(user_id="u", id="after", created_at=0, modified_at=0))
    assert _committed_app_ids(metadata_uri) == ["after", "kept"]
    assert store.get_user("half") is None  # insert_user stayed atomic inside the unit
    store.close()


def test_a_unit_takes_the_writer_at_its_first_write_and_does_not_nest(metadata_uri: str) -> None:
    import threading

    store = open_metadata_store(metadata_uri)
    other = threading.Thread(
        target=store.insert_app, args=(AppRecord(user_id="u", id="other", created_at=0, modified_at=0),)
    )
    with store.unit_of_work():
        assert store.get_app("u", "other") is None
        other.start()  # before the unit's first write, another thread's write goes through
        other.join(timeout=30)
        assert not other.is_alive()
        assert store.get_app("u", "other") is not None
        with pytest.raises(RuntimeError, match="already open"), store.unit_of_work():
            pass
    store.close()


def test_a_unit_whose_transaction_sqlite_rolled_back_commits_nothing_after_it(tmp_path: Path) -> None:
    """SQLite rolls a whole transaction back on some errors (a full disk, an I/O error): the
    unit's later writes must not run outside any transaction and commit one by one."""
    from pellucid.server.storage.sqlite_connections import ThreadConnections

    connections = ThreadConnections(tmp_path / "t.sqlite3")
    with connections.write() as conn:
        conn.execute("CREATE TABLE t (n INTEGER)")
    with pytest.raises(sqlite3.OperationalError, match="lost its transaction"), connections.unit_of_work():
        with connections.write() as conn:
            conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlite3.OperationalError, match="disk"), connections.write() as conn:
            conn.execute("ROLLBACK")  # what SQLite does itself on SQLITE_FULL
            raise sqlite3.OperationalError("database or disk is full")
        with connections.write() as conn:
            conn.execute("INSERT INTO t VALUES (2)")
    assert connections.get().execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
    with connections.write() as conn:  # and the writer is usable again
        conn.execute("INSERT INTO t VALUES (3)")
    assert connections.get().execute("SELECT n FROM t").fetchall()[0][0] == 3
    connections.close()


def test_insert_rows_splits_at_the_variable_limit_and_keeps_every_row(tmp_path: Path) -> None:
    from pellucid.server.storage.sqlite_connections import (
        ThreadConnections,
        insert_rows,
    )

    connections = ThreadConnections(tmp_path / "t.sqlite3")
    with connections.write() as conn:
        conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT NOT NULL, c BLOB)")
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 30)  # 10 rows of 3 per statement
        insert_rows(conn, "INSERT INTO t (a, b, c)", [(i, f"row {i}", bytes([i % 256])) for i in range(95)])
        insert_rows(
            conn, "INSERT INTO t (a, b, c)", [(i, "again", b"") for i in range(90, 100)], "ON CONFLICT DO NOTHING"
        )
    rows = connections.get().execute("SELECT a, b, c FROM t ORDER BY a").fetchall()
    assert [tuple(r) for r in rows] == [(i, f"row {i}", bytes([i % 256])) for i in range(95)] + [
        (i, "again", b"") for i in range(95, 100)
    ]
    connections.close()


def test_writers_in_many_threads_all_commit_and_reads_inside_a_write_see_it(tmp_path: Path) -> None:
    import threading

    from pellucid.server.storage.sqlite_connections import ThreadConnections

    connections = ThreadConnections(tmp_path / "t.sqlite3")
    with connections.write() as conn:
        conn.execute("CREATE TABLE t (thread INTEGER, n INTEGER)")
    errors: list[BaseException] = []

    def writer(thread: int) -> None:
        try:
            for n in range(50):
                with connections.write() as conn:
                    conn.execute("INSERT INTO t VALUES (?, ?)", (thread, n))
                    # a helper that reads through get() inside the transaction sees the row
                    seen = connections.get().execute("SELECT COUNT(*) FROM t WHERE thread = ?", (thread,)).fetchone()[0]
                    assert seen == n + 1
        except BaseException as exc:  # noqa: BLE001 - the main thread re-raises what a worker hit
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert connections.get().execute("SELECT COUNT(*) FROM t").fetchone()[0] == 400
    with connections.write(), pytest.raises(RuntimeError, match="already open in this thread"), connections.write():
        pass
    connections.close()


def test_blob_digests_match_hashlib_at_every_size_around_the_piece_boundary() -> None:
    import hashlib

    from pellucid.server.storage.blobs import sha256_hex

    for size in (0, 1, 2046, 2047, 2048, 4094, 4095, 10_000, 65_536, 65_537, 100_003):
        data = bytes(i % 251 for i in range(size))
        assert sha256_hex(data) == hashlib.sha256(data).hexdigest(), size


def test_pack_appends_keep_every_part_in_order_past_the_writev_limit_and_after_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    from pellucid.server.storage import blobs

    parts = [f"part {i};".encode() * (i % 7) for i in range(3000)]  # some empty, more than IOV_MAX
    real_writev, rng, calls = os.writev, random.Random(7), []

    def short_writev(fd: int, buffers: list) -> int:  # what a signal or a full pipe can do to writev
        calls.append(len(buffers))
        data = b"".join(bytes(b) for b in buffers)
        return real_writev(fd, [data[: rng.randint(1, len(data))]])

    monkeypatch.setattr(blobs.os, "writev", short_writev)
    fd = os.open(tmp_path / "pack", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        blobs._write_all(fd, parts)
    finally:
        os.close(fd)
    assert (tmp_path / "pack").read_bytes() == b"".join(parts)
    assert max(calls) <= 1024 and len(calls) > 2


def test_a_commit_that_fails_is_rolled_back_and_the_next_write_works(tmp_path: Path) -> None:
    from pellucid.server.storage.sqlite_connections import ThreadConnections

    connections = ThreadConnections(tmp_path / "t.sqlite3", foreign_keys=True)
    with connections.write() as conn:
        conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE child (parent INTEGER NOT NULL REFERENCES parent(id))")
    with pytest.raises(sqlite3.IntegrityError), connections.write() as conn:
        conn.execute("PRAGMA defer_foreign_keys=ON")  # the violation surfaces at COMMIT
        conn.execute("INSERT INTO child VALUES (42)")
    with connections.write() as conn:  # another thread's write would get the same connection
        conn.execute("INSERT INTO parent VALUES (1)")
        conn.execute("INSERT INTO child VALUES (1)")
    assert [tuple(r) for r in connections.get().execute("SELECT parent FROM child")] == [(1,)]
    with pytest.raises(ValueError), connections.write() as conn:
        conn.execute("INSERT INTO parent VALUES (2)")
        raise ValueError("the body failed")
    assert [r[0] for r in connections.get().execute("SELECT id FROM parent")] == [1]
    connections.close()


def test_blobs_roll_over_to_new_packs_read_back_and_a_closed_store_refuses_writes(tmp_path: Path) -> None:
    from pellucid.server.storage.blobs import LocalBlobStore, sha256_hex

    store = LocalBlobStore(tmp_path)
    store.PACK_LIMIT = 50_000  # type: ignore[misc] - a new pack every few batches
    batches = [[bytes([b, i]) * 5_000 for i in range(8)] for b in range(6)]  # 10 KB each, 80 KB a batch
    for batch in batches:
        store.put_many("alice", batch)
    store.put_many("alice", batches[0])  # all known: nothing appended
    assert len(list((tmp_path / "blobs" / "packs").glob("*.pack"))) >= 3
    store.close()
    store.close()  # twice is harmless: no descriptor is closed a second time
    with pytest.raises(RuntimeError, match="closed"):
        store.put_many("alice", [b"late" * 100])
    reopened = LocalBlobStore(tmp_path)
    for blob in (blob for batch in batches for blob in batch):
        assert reopened.get(sha256_hex(blob)) == blob
    reopened.close()


def _text_input(input_id: str, text: str, **extra: object) -> IngestItem:
    from pellucid.server.records import InputRecord

    record = InputRecord(
        user_id="u", app_id="app", id=input_id, input_type="text", content_key=f"key:{text}", created_at=1.0, text=text
    )
    return IngestItem(input=InputRecord(**{**record.__dict__, **extra}))


def test_ingest_and_put_annotations_report_typed_results_per_item(metadata_uri: str) -> None:
    from pellucid.server.records import AnnotationRecord, ConceptRecord, ConceptValue, DatasetRecord, JobRecord
    from pellucid.server.storage import AnnotationResult, IngestResult

    store = open_metadata_store(metadata_uri)
    store.insert_app(AppRecord(user_id="u", id="app", created_at=0, modified_at=0))
    store.insert_dataset(DatasetRecord(user_id="u", app_id="app", id="ds", created_at=0, modified_at=0))
    cat = ConceptValue("cat", "Cat")
    first = _text_input("a", "one", labels=(cat,), dataset_ids=("ds",), geo=(2.5, 48.5), metadata={"k": [1]})
    job = JobRecord(user_id="u", app_id="app", id="job", created_at=1, modified_at=1, received=4, failed=1)
    results, totals = store.ingest(
        "u",
        "app",
        [first, _text_input("b", "two"), _text_input("a", "one"), _text_input("b", "other")],
        [ConceptRecord("u", "app", "cat", "Cat", 1.0)],
        job,
    )
    assert results == [IngestResult.NEW, IngestResult.NEW, IngestResult.DUPLICATE, IngestResult.CONFLICT]
    assert totals is not None and (totals.received, totals.stored, totals.duplicates, totals.failed) == (4, 2, 1, 2)
    again, totals = store.ingest("u", "app", [_text_input("a", "one"), _text_input("c", "three")], [], job)
    assert again == [IngestResult.DUPLICATE, IngestResult.NEW]
    assert totals is not None and (totals.received, totals.stored, totals.duplicates) == (8, 3, 2)
    stored = store.get_inputs("u", "app", ["a", "b", "missing"])
    assert sorted(stored) == ["a", "b"] and stored["b"].text == "two"
    assert stored["a"].labels == (ConceptValue("cat", "Cat", 1.0),) and stored["a"].dataset_ids == ("ds",)
    assert stored["a"].geo == (2.5, 48.5) and stored["a"].metadata == {"k": [1]}
    assert [i.id for i in store.list_inputs("u", "app", PageQuery(limit=10), dataset_id="ds").items] == ["a"]
    assert store.get_concept("u", "app", "cat") is not None

    dog = (ConceptValue("dog", "Dog"),)
    annotations = [
        AnnotationRecord("a", "n1", 2.0, dog),
        AnnotationRecord("missing", "n2", 2.0, dog),
        AnnotationRecord("a", "n1", 2.0, (cat,)),
    ]
    assert store.put_annotations("u", "app", annotations, replace=False) == [
        AnnotationResult.NEW,
        AnnotationResult.MISSING_INPUT,
        AnnotationResult.DUPLICATE,
    ]
    assert store.put_annotations("u", "app", annotations[2:], replace=True) == [AnnotationResult.UPDATED]
    assert store.get_annotations("u", "app", [("a", "n1")])[("a", "n1")].concepts == (ConceptValue("cat", "Cat"),)
    assert store.get_concept("u", "app", "dog") is not None  # concepts an annotation names are created
    assert store.dataset_stats("u", "app", "ds").annotations == 1
    assert store.delete_inputs("u", "app", ["a", "nope", "a"]) == [True, False, False]
    store.close()


def test_replicas_opening_one_database_at_once_migrate_it_once(metadata_uri: str) -> None:
    """Two replicas starting together: the migrations run once (an advisory lock on PostgreSQL,
    the write lock on SQLite) and both stores open."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: open_metadata_store(metadata_uri), range(4)))
    assert {s.schema_version() for s in stores} == {stores[0].schema_version()}
    for s in stores:
        s.close()


def test_two_stores_ingesting_the_same_ids_at_once_store_each_once(metadata_uri: str) -> None:
    """What two replicas do when a client's batches overlap: every id stored once, each item NEW
    in exactly one of the batches, DUPLICATE in the other."""
    import threading

    from pellucid.server.storage import IngestResult

    first, second = open_metadata_store(metadata_uri), open_metadata_store(metadata_uri)
    first.insert_app(AppRecord(user_id="u", id="app", created_at=0, modified_at=0))
    items = [_text_input(f"i{n}", f"text {n}") for n in range(200)]
    results: dict[int, list] = {}
    start = threading.Barrier(2)

    def ingest(n: int, store: object) -> None:
        start.wait()
        results[n] = store.ingest("u", "app", items if n == 0 else items[::-1], [], None)[0]  # type: ignore[attr-defined]

    threads = [threading.Thread(target=ingest, args=(n, s)) for n, s in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    news = [a is IngestResult.NEW for a in results[0]], [b is IngestResult.NEW for b in results[1][::-1]]
    assert all(a != b for a, b in zip(*news))  # NEW in one batch, DUPLICATE in the other
    assert set(results[0]) | set(results[1]) <= {IngestResult.NEW, IngestResult.DUPLICATE}
    page = first.list_inputs("u", "app", PageQuery(limit=1000))
    assert sorted(i.id for i in page.items) == sorted(i.input.id for i in items)
    first.close()
    second.close()


def test_postgresql_unreachable_or_lost_is_store_unavailable_and_the_pool_recovers(
    monkeypatch: pytest.MonkeyPatch, _postgres_session: None
) -> None:
    """A database that cannot be reached is StoreUnavailable (UNAVAILABLE to callers, who retry),
    never an internal error; connections the server cut are replaced by the pool."""
    import psycopg

    from pellucid.server.storage import StoreUnavailable, postgres_connections
    from tests import pg

    monkeypatch.setattr(postgres_connections, "CONNECT_TIMEOUT_SECONDS", 0.5)
    with pytest.raises(
        StoreUnavailable, match=re.escape("cannot connect to PostgreSQL at postgresql://u:***@127.0.0.1:1/x")
    ):
        open_metadata_store("postgresql://u:secret@127.0.0.1:1/x?connect_timeout=1")

    uri = pg.new_database()
    store = open_metadata_store(uri)
    store.insert_app(AppRecord(user_id="u", id="before", created_at=0, modified_at=0))
    database = uri.split("/")[3].split("?")[0]
    with psycopg.connect(pg.postgres_server().get_uri(), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
    failures = 0
    for _ in range(25):  # each cut connection fails one call, then the pool replaces it
        try:
            assert store.get_app("u", "before") is not None
            break
        except StoreUnavailable as exc:
            assert "unavailable" in str(exc)
            failures += 1
    else:
        raise AssertionError("the store did not recover")
    assert failures >= 1
    store.insert_app(AppRecord(user_id="u", id="after", created_at=0, modified_at=0))
    store.close()


def test_users_tokens_models_runners_and_dataset_versions_round_trip(metadata_uri: str) -> None:
    """Every area's reads return what its writes stored, on every backend."""
    from pellucid.server.records import (
        ConceptValue,
        DatasetRecord,
        DatasetVersionRecord,
        ModelRecord,
        ModelVersionRecord,
        OutputConfig,
        RunnerRecord,
        TokenRecord,
        UserRecord,
    )

    store = open_metadata_store(metadata_uri)
    store.insert_user(UserRecord(id="u", is_admin=True, created_at=1, metadata={"a": 1}))
    assert store.get_user("u") == UserRecord(id="u", is_admin=True, created_at=1, metadata={"a": 1})
    assert store.count_users() == 1 and [u.id for u in store.list_users(PageQuery(limit=5)).items] == ["u"]
    pat = TokenRecord(id="t1", user_id="u", kind="pat", token_hash="h1", created_at=1, request_id="req", expires_at=50)
    store.insert_token(pat)
    store.insert_token(TokenRecord(id="t2", user_id="u", kind="pat", token_hash="h2", created_at=2))
    with pytest.raises(Conflict):
        store.insert_token(TokenRecord(id="t3", user_id="u", kind="pat", token_hash="h2", created_at=3))
    assert (
        store.get_token_with_user("h1") == (pat, store.get_user("u")) and store.get_token_by_request("u", "req") == pat
    )
    assert store.get_token_with_user("nothing") is None
    assert [t.id for t in store.list_tokens("u", "pat", False, 60.0, PageQuery(limit=5)).items] == ["t2"]
    assert store.revoke_token("t2", 70.0).revoked_at == 70.0
    assert store.list_tokens("u", "pat", False, 60.0, PageQuery(limit=5)).items == []
    assert len(store.list_tokens("u", "pat", True, 60.0, PageQuery(limit=5)).items) == 2
    store.replace_token_hash("t1", "h9")
    assert store.get_token("u", "t1") is not None and store.get_token_with_user("h9") is not None

    store.insert_app(AppRecord(user_id="u", id="app", created_at=0, modified_at=0))
    version = ModelVersionRecord(
        user_id="u",
        app_id="app",
        model_id="m",
        id="v1",
        created_at=1,
        params={"p": 1},
        concepts=(ConceptValue("cat", "Cat"),),
        output_config=OutputConfig(0.5, 3, ("cat",)),
        runner_labels=("gpu",),
        item_timeout_seconds=7,
    )
    model = ModelRecord(
        user_id="u", app_id="app", id="m", created_at=1, modified_at=1, name="Model", input_fields=("image",)
    )
    store.insert_model(model, version)
    with pytest.raises(Conflict):
        store.insert_model(model, version)
    store.insert_model_version(ModelVersionRecord(user_id="u", app_id="app", model_id="m", id="v2", created_at=2))
    assert store.get_model_version("u", "app", "m", "v1") == version
    latest = store.get_model_version("u", "app", "m")
    assert latest is not None and latest.id == "v2"
    assert [v.id for v in store.list_model_versions("u", "app", "m", PageQuery(limit=5)).items] == ["v1", "v2"]
    assert [m.id for m in store.list_models("u", "app", "MOD", PageQuery(limit=5)).items] == ["m"]
    model_now = store.get_model("u", "app", "m")
    assert model_now is not None and model_now.modified_at == 2 and model_now.input_fields == ("image",)
    assert store.delete_model_version("u", "app", "m", "v2") and not store.delete_model_version("u", "app", "m", "v2")

    store.insert_runner(RunnerRecord(user_id="u", id="r1", created_at=1, labels=("gpu", "eu")))
    store.insert_runner(RunnerRecord(user_id="u", id="r2", created_at=1, labels=("cpu",)))
    assert [r.id for r in store.list_runners("u", ("gpu",), PageQuery(limit=5)).items] == ["r1"]
    assert [r.id for r in store.list_runners("u", (), PageQuery(limit=5)).items] == ["r1", "r2"]
    assert store.list_runners("u", ("gpu", "cpu"), PageQuery(limit=5)).items == []
    assert store.update_runner(RunnerRecord(user_id="u", id="r2", created_at=1, labels=("cpu", "gpu")))
    assert [r.id for r in store.list_runners("u", ("gpu",), PageQuery(limit=5)).items] == ["r1", "r2"]
    assert store.delete_runner("u", "r2") and store.get_runner("u", "r2") is None

    store.insert_dataset(DatasetRecord(user_id="u", app_id="app", id="ds", created_at=0, modified_at=0))
    store.ingest("u", "app", [_text_input("a", "one", app_id="app", dataset_ids=("ds",))], [], None)
    frozen = store.insert_dataset_version(
        DatasetVersionRecord(user_id="u", app_id="app", dataset_id="ds", id="dv1", created_at=3)
    )
    assert frozen.stats.inputs == 1 and frozen.stats.inputs_by_type == {"text": 1}
    store.ingest("u", "app", [_text_input("b", "two", dataset_ids=("ds",))], [], None)
    listed = store.list_inputs("u", "app", PageQuery(limit=5), dataset_id="ds", version_id="dv1").items
    assert [i.id for i in listed] == ["a"] and store.dataset_stats("u", "app", "ds", "dv1").inputs == 1
    assert store.dataset_stats("u", "app", "ds").inputs == 2
    assert [v.id for v in store.list_dataset_versions("u", "app", "ds", PageQuery(limit=5)).items] == ["dv1"]
    assert store.delete_dataset("u", "app", "ds", delete_inputs=True)
    assert store.get_inputs("u", "app", ["a", "b"]) == {}
    assert store.delete_app("u", "app") and store.get_model("u", "app", "m") is None
    store.close()


def test_which_blobs_inputs_hold(metadata_uri: str) -> None:
    store = open_metadata_store(metadata_uri)
    store.insert_app(AppRecord(user_id="u", id="app", created_at=0, modified_at=0))
    store.ingest("u", "app", [_text_input("a", "one", input_type="image", media_sha256="f" * 64)], [], None)
    assert store.referenced_blobs([("u", "f" * 64), ("other", "f" * 64), ("u", "0" * 64)]) == {("u", "f" * 64)}
    assert list(store.blob_references()) == [("u", "f" * 64)]
    store.close()


def test_postgresql_uri_pool_sizes_are_read_and_the_rest_reaches_libpq_unchanged(_postgres_session: None) -> None:
    from pellucid.server.storage.postgres_connections import split_pool_parameters
    from tests import pg

    uri = "postgresql://u:p@h:5/db?sslmode=require&pool_max_size=40&options=-c%20statement_timeout%3D5s&pool_min_size=4"
    assert split_pool_parameters(uri) == (
        "postgresql://u:p@h:5/db?sslmode=require&options=-c%20statement_timeout%3D5s",
        4,
        40,
    )
    for bad in ("pool_max_size=0", "pool_min_size=x", "pool_min_size=5&pool_max_size=2"):
        with pytest.raises(ValueError, match="pool_m"):
            split_pool_parameters(f"postgresql://h/db?{bad}")
    store = open_metadata_store(pg.new_database() + "&options=-c%20statement_timeout%3D1234&pool_max_size=3")
    with store._connections.read() as conn:  # type: ignore[attr-defined]
        assert conn.execute("SHOW statement_timeout").fetchone()["statement_timeout"] == "1234ms"
    store.close()


def test_a_unit_whose_postgresql_connection_is_cut_commits_nothing_and_says_unavailable(
    _postgres_session: None,
) -> None:
    import psycopg

    from pellucid.server.storage import StoreUnavailable
    from tests import pg

    uri = pg.new_database()
    store = open_metadata_store(uri)
    with pytest.raises(StoreUnavailable), store.unit_of_work():
        store.insert_app(AppRecord(user_id="u", id="lost", created_at=0, modified_at=0))
        with psycopg.connect(pg.postgres_server().get_uri(), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (uri.split("/")[3].split("?")[0],),
            )
    assert _committed_app_ids(uri) == []
    for _ in range(5):  # the pool replaces the connections cut under it
        try:
            store.insert_app(AppRecord(user_id="u", id="later", created_at=0, modified_at=0))
            break
        except StoreUnavailable:
            continue
    assert _committed_app_ids(uri) == ["later"]
    store.close()
