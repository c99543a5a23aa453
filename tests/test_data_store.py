"""The HostedDataStore contract (data://), over SQLite and PostgreSQL, and listing cost on large directories."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

import pytest

from pellucid.server.records import PageQuery
from pellucid.server.storage import Conflict, MetadataStore, open_metadata_store

SHA_A, SHA_B = "a" * 64, "b" * 64
T = TypeVar("T")


@pytest.fixture
def store(metadata_uri: str) -> MetadataStore:
    opened = open_metadata_store(metadata_uri)
    yield opened
    opened.close()


def test_directories_files_overwrite_and_cascading_delete(store: MetadataStore) -> None:
    photos = store.data_insert_dir("alice", None, "photos", "private", 1.0)
    assert (photos.is_dir, photos.parent_seq, photos.acl) == (True, None, "private")
    with pytest.raises(Conflict):
        store.data_insert_dir("alice", None, "photos", "public", 2.0)
    store.data_insert_dir("bob", None, "photos", "public", 2.0)  # names are per owner
    trip = store.data_insert_dir("alice", photos.seq, "trip", "", 3.0)
    with pytest.raises(Conflict):
        store.data_insert_dir("alice", photos.seq, "trip", "", 3.0)
    first, clash = store.data_put_files("alice", [(trip.seq, "a.jpg", SHA_A, 10), (photos.seq, "trip", SHA_A, 1)], 4.0)
    assert first is not None and (first.size, first.sha256, first.is_dir) == (10, SHA_A, False)
    assert clash is None  # a directory holds the name
    (again,) = store.data_put_files("alice", [(trip.seq, "a.jpg", SHA_B, 20)], 5.0)
    assert again is not None and (again.seq, again.size, again.sha256, again.modified_at) == (first.seq, 20, SHA_B, 5.0)
    assert [e.name for e in store.data_lookup("alice", ["photos", "trip", "a.jpg"])] == ["photos", "trip", "a.jpg"]
    assert [e.name for e in store.data_lookup("alice", ["photos", "nope", "a.jpg"])] == ["photos"]
    assert store.data_lookup("carol", ["photos"]) == []
    assert store.data_has_children(photos.seq) and not store.data_has_children(first.seq)
    children = store.data_children(photos.seq, ["trip", "nope", "trip"])
    assert list(children) == ["trip"] and children["trip"].seq == trip.seq and children["trip"].is_dir
    assert store.data_children(trip.seq, []) == {}

    assert store.referenced_data_blobs([("alice", SHA_B), ("alice", SHA_A), ("bob", SHA_B)]) == {("alice", SHA_B)}
    assert store.data_delete("bob", photos.seq) == 0  # not bob's
    assert store.data_delete("alice", photos.seq) == 3
    assert store.data_lookup("alice", ["photos"]) == []
    assert store.referenced_data_blobs([("alice", SHA_B)]) == set()
    (orphan,) = store.data_put_files("alice", [(trip.seq, "late.jpg", SHA_A, 1)], 6.0)
    assert orphan is None  # its directory is gone
    with pytest.raises(Conflict):
        store.data_insert_dir("alice", trip.seq, "late", "", 6.0)


def test_the_files_of_a_directory_are_found_in_one_call(store: MetadataStore) -> None:
    inbox = store.data_insert_dir("alice", None, "inbox", "private", 1.0)
    other = store.data_insert_dir("alice", inbox.seq, "other", "", 1.0)
    many = [f"f{i}.bin" for i in range(1000)]  # more than one IN (...) list of SQLite
    store.data_put_files("alice", [(inbox.seq, name, SHA_A, i) for i, name in enumerate(many)], 2.0)
    store.data_put_files("alice", [(other.seq, "f1.bin", SHA_B, 5)], 2.0)
    found = store.data_children(inbox.seq, [*many, "missing", "f1.bin"])
    assert set(found) == set(many) and found["f7.bin"].size == 7 and found["f1.bin"].parent_seq == inbox.seq
    assert set(store.data_children(inbox.seq, ["other", "missing"])) == {"other"}
    assert store.data_children(other.seq, many[:3]) == {
        "f1.bin": store.data_lookup("alice", ["inbox", "other", "f1.bin"])[-1]
    }


def test_acls_and_listing_pages(store: MetadataStore) -> None:
    shared = store.data_insert_dir("alice", None, "shared", "my_algos", 1.0)
    store.data_insert_dir("alice", None, "hidden", "private", 1.0)
    updated = store.data_set_acl("alice", shared.seq, "public", 2.0)
    assert updated is not None and updated.acl == "public"
    assert store.data_set_acl("bob", shared.seq, "private", 2.0) is None
    assert [c.name for c in store.data_list("alice", None, PageQuery(limit=10)).items] == ["shared", "hidden"]
    assert [c.name for c in store.data_list("alice", None, PageQuery(limit=10), public_only=True).items] == ["shared"]

    store.data_put_files("alice", [(shared.seq, f"f{i:03}", SHA_A, i) for i in range(25)], 3.0)
    names, after = [], None
    while True:
        page = store.data_list("alice", shared.seq, PageQuery(limit=10, after=after))
        names += [e.name for e in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    assert names == [f"f{i:03}" for i in range(25)]


def _vm_steps(conn: sqlite3.Connection, run: Callable[[], T]) -> tuple[T, int]:
    """What `run` returns and the SQLite virtual machine steps it took (a measure of work that does not
    depend on the machine's speed or load)."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 1)
    try:
        result = run()
    finally:
        conn.set_progress_handler(None, 1)
    return result, steps[0]


def test_a_page_of_a_large_directory_costs_the_same_at_its_end(tmp_path: object) -> None:
    """Keyset pages: listing n files is n/page pages of equal cost (100,000 files list in linear time)."""
    store = open_metadata_store(f"sqlite://{tmp_path}/m.sqlite3")
    try:
        big = store.data_insert_dir("alice", None, "big", "private", 1.0)
        for start in range(0, 20_000, 5_000):
            store.data_put_files("alice", [(big.seq, f"f{i}", SHA_A, 1) for i in range(start, start + 5_000)], 2.0)
        conn = store._conn()  # type: ignore[attr-defined]
        pages, after, costs = 0, None, []
        while True:
            query = PageQuery(1000, after)
            page, cost = _vm_steps(conn, lambda q=query: store.data_list("alice", big.seq, q))  # type: ignore[misc]
            costs.append(cost)
            pages += 1
            if page.next_after is None:
                break
            after = page.next_after
        assert pages == 20
        full = costs[:-1]  # the last page may be shorter
        assert max(full) <= 1.1 * min(full), costs  # the 19th page costs what the first does
    finally:
        store.close()
