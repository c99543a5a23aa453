"""Input seqs are never handed out twice (they key vectors, dataset version snapshots, evaluation
items and cursors outside the row), on every backend; SQLite's migration 19 that makes it so."""

import contextlib
import sqlite3
from pathlib import Path

import pytest

from pellucid.server.records import (
    AnnotationRecord,
    AppRecord,
    ConceptValue,
    DatasetRecord,
    DatasetVersionRecord,
    IngestItem,
    InputRecord,
    RegionRecord,
)
from pellucid.server.storage import open_metadata_store
from pellucid.server.storage.base import MetadataStore
from pellucid.server.storage.sqlite_rebuild import rebuild_table
from pellucid.server.storage.sqlite_schema import LATEST_VERSION, MIGRATIONS

CAT = (ConceptValue("cat", "Cat"),)


def _item(input_id: str, **extra: object) -> IngestItem:
    record = InputRecord(
        user_id="u",
        app_id="app",
        id=input_id,
        input_type="text",
        content_key=f"key:{input_id}",
        created_at=1.0,
        text=f"text of {input_id}",
    )
    return IngestItem(input=InputRecord(**{**record.__dict__, **extra}))


def _seq(store: MetadataStore, input_id: str) -> int:
    return store.input_seqs("u", "app", [input_id])[input_id]


def test_the_newest_inputs_seq_is_not_handed_out_again_after_it_is_deleted(metadata_uri: str) -> None:
    store = open_metadata_store(metadata_uri)
    try:
        store.insert_app(AppRecord(user_id="u", id="app", created_at=0, modified_at=0))
        store.ingest("u", "app", [_item("a"), _item("b"), _item("c")], [], None)
        seqs = store.input_seqs("u", "app", ["a", "b", "c"])
        assert store.delete_inputs("u", "app", ["c"]) == [True]
        store.ingest("u", "app", [_item("d")], [], None)
        assert _seq(store, "d") > seqs["c"]
        assert store.delete_inputs("u", "app", ["d"]) == [True]
    finally:
        store.close()
    reopened = open_metadata_store(metadata_uri)  # the high-water mark is stored, not held in memory
    try:
        reopened.ingest("u", "app", [_item("e")], [], None)
        assert _seq(reopened, "e") > seqs["c"] + 1
    finally:
        reopened.close()


_TABLES = {  # every table holding input seqs, with an order that makes dumps comparable
    "inputs": "seq",
    "dataset_inputs": "dataset_seq, input_seq",
    "annotations": "seq",
    "input_concepts": "input_seq, annotation_seq, concept_id",
    "input_terms": "app_seq, term, input_seq",
    "dataset_version_inputs": "version_seq, input_seq",
}


def _dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as conn:
        dump = {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
            for table, order in _TABLES.items()
        }
        dump["indexes"] = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'inputs' AND type = 'index' ORDER BY name"
        ).fetchall()
        dump["columns"] = conn.execute("PRAGMA table_info(inputs)").fetchall()
    conn.close()
    return dump


def _store_at_18(path: Path, monkeypatch: pytest.MonkeyPatch) -> MetadataStore:
    """A store as pellucid before migration 19 opened it (its runner, every migration up to 18)."""
    with monkeypatch.context() as patch:
        patch.setattr("pellucid.server.storage.sqlite.MIGRATIONS", [m for m in MIGRATIONS if m[0] <= 18])
        store = open_metadata_store(str(path))
    assert store.schema_version() == 18
    return store


def test_migration_19_rebuilds_inputs_keeping_every_row_and_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "metadata.sqlite3"
    old = _store_at_18(path, monkeypatch)
    old.insert_app(AppRecord(user_id="u", id="app", created_at=0, modified_at=0))
    for dataset in ("ds", "other"):
        old.insert_dataset(DatasetRecord(user_id="u", app_id="app", id=dataset, created_at=0, modified_at=0))
    items = [
        _item(f"i{n}", dataset_ids=("ds", "other") if n % 2 else ("ds",), labels=CAT, metadata={"n": n}, geo=(1.0, n))
        for n in range(6)
    ]
    region = RegionRecord(id="r", bbox=(0.0, 0.0, 0.5, 0.5), concepts=(ConceptValue("dog", "Dog"),))
    annotated = [IngestItem(i.input, (AnnotationRecord(i.input.id, "a", 1.0, CAT, (region,)),)) for i in items]
    old.ingest("u", "app", annotated, [], None)
    snapshot = DatasetVersionRecord(user_id="u", app_id="app", dataset_id="ds", id="v1", created_at=2.0)
    old.insert_dataset_version(snapshot)  # names every input, the newest too, after they are gone
    newest = _seq(old, "i5")
    assert old.delete_inputs("u", "app", ["i5"]) == [True]
    # the bug: at 18 the next input takes the deleted one's seq (and with it, its snapshot entry)
    old.ingest("u", "app", [_item("reused")], [], None)
    assert _seq(old, "reused") == newest
    assert old.delete_inputs("u", "app", ["reused"]) == [True]
    old.close()
    before = _dump(path)
    assert len(before["inputs"]) == 5 and len(before["dataset_inputs"]) == 7 and len(before["annotations"]) == 5

    store = open_metadata_store(str(path))
    try:
        assert store.schema_version() == LATEST_VERSION
        after = _dump(path)
        assert after == before  # every row, reference, column and index as it was
        conn = store._conn()  # type: ignore[attr-defined]
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'inputs'").fetchone()[0]
        assert "seq INTEGER PRIMARY KEY AUTOINCREMENT" in sql
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'inputs'").fetchone()[0] == newest

        with store._write() as writer:  # type: ignore[attr-defined]
            assert writer.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            with store._write() as writer:  # type: ignore[attr-defined]
                writer.execute("INSERT INTO dataset_inputs (dataset_seq, input_seq) VALUES (1, ?)", (newest + 100,))
        # the children's foreign keys name the new table: deleting an input cascades into them
        gone = _seq(store, "i1")
        assert store.delete_inputs("u", "app", ["i1"]) == [True]
        for table in ("dataset_inputs", "annotations", "input_concepts", "input_terms"):
            assert conn.execute(f"SELECT COUNT(*) FROM {table} WHERE input_seq = ?", (gone,)).fetchone()[0] == 0
        assert store.get_inputs("u", "app", ["i0"])["i0"].dataset_ids == ("ds",)
        assert store.get_annotations("u", "app", [("i3", "a")])[("i3", "a")].regions[0].id == "r"

        store.ingest("u", "app", [_item("new", dataset_ids=("ds",))], [], None)
        assert _seq(store, "new") == newest + 1  # past the deleted newest, named only by the snapshot
        assert store.dataset_stats("u", "app", "ds", "v1").inputs == 6  # the snapshot as it was taken
    finally:
        store.close()


def test_a_migration_that_breaks_a_foreign_key_commits_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migrations run with foreign keys off (a table rebuild needs it): PRAGMA foreign_key_check
    stands in for them before the commit, and they are on again afterwards."""
    path = tmp_path / "metadata.sqlite3"
    _store_at_18(path, monkeypatch).close()
    orphan = "INSERT INTO dataset_inputs (dataset_seq, input_seq) VALUES (7, 7)"
    with monkeypatch.context() as patch:
        patch.setattr("pellucid.server.storage.sqlite.MIGRATIONS", [*MIGRATIONS, (LATEST_VERSION + 1, orphan)])
        with pytest.raises(
            sqlite3.IntegrityError,
            match=r"2 foreign key violations \(dataset_inputs -> inputs, dataset_inputs -> datasets\)",
        ):
            open_metadata_store(str(path))
    store = open_metadata_store(str(path))  # the real ones apply; the orphan's row never committed
    try:
        assert store.schema_version() == LATEST_VERSION
        conn = store._conn()  # type: ignore[attr-defined]
        assert conn.execute("SELECT COUNT(*) FROM dataset_inputs").fetchone()[0] == 0
    finally:
        store.close()


def test_a_rebuild_refuses_to_run_with_foreign_keys_on(tmp_path: Path) -> None:
    """DROP TABLE under foreign keys deletes every row first, cascading into the children."""
    with sqlite3.connect(tmp_path / "db.sqlite3") as conn:
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY)")
        with pytest.raises(RuntimeError, match="needs foreign keys off"):
            rebuild_table(conn, "t", "CREATE TABLE new_t (seq INTEGER PRIMARY KEY AUTOINCREMENT)")
    conn.close()


def test_foreign_keys_are_on_again_after_a_write_without_them_ends_either_way(tmp_path: Path) -> None:
    from pellucid.server.storage.sqlite_connections import ThreadConnections

    connections = ThreadConnections(tmp_path / "db.sqlite3", foreign_keys=True)
    try:
        for fails in (False, True):
            with pytest.raises(ValueError) if fails else contextlib.nullcontext():
                with connections.write_without_foreign_keys() as conn:
                    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 0
                    if fails:
                        raise ValueError("the migration failed")
            with connections.write() as conn:
                assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        connections.close()
