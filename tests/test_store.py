"""The SQLite MetadataStore: migrations on open, WAL, keyset pages."""

import sqlite3
from pathlib import Path

import pytest

from pellucid.server.records import AppRecord, PageQuery
from pellucid.server.storage import Conflict, open_metadata_store
from pellucid.server.storage.sqlite_schema import LATEST_VERSION


def test_migrations_run_on_open_and_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "meta.sqlite3"
    store = open_metadata_store(f"sqlite://{path}")
    assert store.schema_version() == LATEST_VERSION
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, LATEST_VERSION + 1))
    reopened = open_metadata_store(str(path))  # a second open applies nothing twice
    assert reopened.schema_version() == LATEST_VERSION
    reopened.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "meta.sqlite3"
    open_metadata_store(str(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (LATEST_VERSION + 1,))
    with pytest.raises(RuntimeError, match="upgrade pellucid"):
        open_metadata_store(str(path))


def test_unknown_store_scheme() -> None:
    with pytest.raises(ValueError, match="sqlite:///"):
        open_metadata_store("mysql://x")


def test_keyset_pages_cover_everything_once(tmp_path: Path) -> None:
    store = open_metadata_store(str(tmp_path / "m.sqlite3"))
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
    store.close()


def test_a_stale_attempt_cannot_touch_a_newer_claim(tmp_path: Path) -> None:
    from pellucid.server.storage.base import ClaimOutcome

    store = open_metadata_store(str(tmp_path / "m.sqlite3"))
    assert store.claim_request("u", "r1", "CreateApp", now=0.0, stale_after=10, owner="a").outcome is ClaimOutcome.CLAIMED
    assert store.claim_request("u", "r1", "CreateApp", now=5.0, stale_after=10, owner="b").outcome is ClaimOutcome.IN_PROGRESS
    assert store.claim_request("u", "r1", "CreateApp", now=20.0, stale_after=10, owner="b").outcome is ClaimOutcome.CLAIMED
    store.release_request("u", "r1", owner="a")  # the stale attempt gives up: b's claim stays
    store.finish_request("u", "r1", b"from a", now=21.0, owner="a")  # nor can it finish b's claim
    assert store.claim_request("u", "r1", "CreateApp", now=22.0, stale_after=10, owner="c").outcome is ClaimOutcome.IN_PROGRESS
    store.finish_request("u", "r1", b"from b", now=23.0, owner="b")
    replay = store.claim_request("u", "r1", "CreateApp", now=24.0, stale_after=10, owner="d")
    assert (replay.outcome, replay.response) == (ClaimOutcome.DONE, b"from b")
    store.close()
