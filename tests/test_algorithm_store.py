"""The AlgorithmStore contract, over SQLite and PostgreSQL (the `metadata_uri` fixture)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from pellucid.server.records import (
    AlgorithmCallRecord,
    AlgorithmRecord,
    AlgorithmTagRecord,
    AppRecord,
    InsightRecord,
    ModelRecord,
    ModelVersionRecord,
    PageQuery,
)
from pellucid.server.storage import Conflict, MetadataStore, open_metadata_store

REPORTS = 100  # insight reports a call may have (the engine's limit)


def model(store: MetadataStore, model_id: str, user_id: str = "u", app_id: str = "app", versions: int = 1) -> None:
    if store.get_app(user_id, app_id) is None:
        store.insert_app(AppRecord(user_id=user_id, id=app_id, created_at=0, modified_at=0))
    store.insert_model(
        ModelRecord(user_id, app_id, model_id, 0, 0), ModelVersionRecord(user_id, app_id, model_id, "v1", 0)
    )
    for i in range(2, versions + 1):
        store.insert_model_version(ModelVersionRecord(user_id, app_id, model_id, f"v{i}", i))


def algorithm(name: str, public: bool = False, user_id: str = "u", at: float = 1.0) -> AlgorithmRecord:
    return AlgorithmRecord(user_id, name, "app", f"model-{name}", public, at, at)


def test_algorithms_are_saved_replaced_and_listed_in_publishing_order(metadata_uri: str) -> None:
    store = open_metadata_store(metadata_uri)
    try:
        for i in range(7):
            model(store, f"model-a{i}")
            store.save_algorithm(algorithm(f"a{i}", public=i % 2 == 0))
        model(store, "model-a0", user_id="other")
        store.save_algorithm(algorithm("a0", user_id="other"))
        with pytest.raises(LookupError):  # no such model
            store.save_algorithm(algorithm("nothing"))
        assert store.get_algorithm("u", "a3") == algorithm("a3")
        assert store.get_algorithm("u", "missing") is None
        replaced = AlgorithmRecord("u", "a1", "app", "model-a2", True, 1.0, 5.0)
        store.save_algorithm(replaced)  # same (user, name): replaced in place, keeps its position
        assert store.get_algorithm("u", "a1") == replaced
        names, after = [], None
        while True:
            page = store.list_algorithms("u", False, PageQuery(limit=3, after=after))
            names += [a.name for a in page.items]
            if page.next_after is None:
                break
            after = page.next_after
        assert names == [f"a{i}" for i in range(7)]
        public = store.list_algorithms("u", True, PageQuery(limit=100)).items
        assert [a.name for a in public] == ["a0", "a1", "a2", "a4", "a6"]
        assert [a.name for a in store.list_algorithms("other", False, PageQuery(limit=100)).items] == ["a0"]
    finally:
        store.close()


def test_tags_calls_and_insights(metadata_uri: str) -> None:
    store = open_metadata_store(metadata_uri)
    try:
        model(store, "model-hello", versions=3)
        store.save_algorithm(algorithm("hello"))
        store.insert_algorithm_tag(AlgorithmTagRecord("u", "hello", "1.0.0", "v1", 1.0))
        store.insert_algorithm_tag(AlgorithmTagRecord("u", "hello", "1.1.0", "v2", 2.0))
        with pytest.raises(Conflict):
            store.insert_algorithm_tag(AlgorithmTagRecord("u", "hello", "1.0.0", "v3", 3.0))
        with pytest.raises(LookupError):
            store.insert_algorithm_tag(AlgorithmTagRecord("u", "nothing", "1.0.0", "v1", 1.0))
        with pytest.raises(LookupError):  # not a version of the algorithm's model
            store.insert_algorithm_tag(AlgorithmTagRecord("u", "hello", "2.0.0", "v9", 1.0))
        assert [(t.tag, t.version_id) for t in store.list_algorithm_tags("u", "hello")] == [
            ("1.0.0", "v1"),
            ("1.1.0", "v2"),
        ]
        assert store.list_algorithm_tags("other", "hello") == []
        call = AlgorithmCallRecord("c1", "u", "hello", "v1", "caller", 4.0)
        store.insert_algorithm_call(call)
        assert store.get_algorithm_call("c1") == call and store.get_algorithm_call("c2") is None
        with pytest.raises(Conflict):
            store.insert_algorithm_call(call)
        with pytest.raises(LookupError):
            store.insert_algorithm_call(AlgorithmCallRecord("c3", "u", "nothing", "v1", "caller", 4.0))
        for i in range(5):
            store.insert_insights(
                InsightRecord("u", "hello", "c1", "v1", "caller", {"score": i / 4, "n": i}, 5.0 + i), REPORTS
            )
        seen, after = [], None
        while True:
            page = store.list_insights("u", "hello", PageQuery(limit=2, after=after))
            seen += page.items
            if page.next_after is None:
                break
            after = page.next_after
        assert [i.values for i in seen] == [{"score": i / 4, "n": i} for i in range(5)]
        assert seen[0] == InsightRecord("u", "hello", "c1", "v1", "caller", {"score": 0.0, "n": 0}, 5.0)
        assert store.list_insights("u", "other", PageQuery(limit=10)).items == []
    finally:
        store.close()


def test_deleting_a_version_drops_its_tags_and_deleting_the_model_or_app_the_algorithm(metadata_uri: str) -> None:
    store = open_metadata_store(metadata_uri)
    try:
        model(store, "model-hello", versions=2)
        store.save_algorithm(algorithm("hello"))
        store.insert_algorithm_tag(AlgorithmTagRecord("u", "hello", "1.0.0", "v1", 1.0))
        store.insert_algorithm_tag(AlgorithmTagRecord("u", "hello", "2.0.0", "v2", 2.0))
        store.insert_algorithm_call(AlgorithmCallRecord("c1", "u", "hello", "v1", "u", 3.0))
        store.insert_insights(InsightRecord("u", "hello", "c1", "v1", "u", {"x": 1.0}, 4.0), REPORTS)
        store.delete_model_version("u", "app", "model-hello", "v1")
        assert [t.tag for t in store.list_algorithm_tags("u", "hello")] == ["2.0.0"]
        store.delete_model("u", "app", "model-hello")
        assert store.get_algorithm("u", "hello") is None and store.get_algorithm_call("c1") is None
        assert store.list_insights("u", "hello", PageQuery(limit=10)).items == []
        model(store, "model-hello")  # re-created: unpublished, and the name is free again
        store.save_algorithm(algorithm("hello"))
        assert store.list_algorithm_tags("u", "hello") == []
        model(store, "model-other", app_id="app2")
        store.save_algorithm(AlgorithmRecord("u", "other", "app2", "model-other", True, 1.0, 1.0))
        store.delete_app("u", "app2")
        assert store.get_algorithm("u", "other") is None and store.get_algorithm("u", "hello") is not None
    finally:
        store.close()


def test_calls_older_than_the_retention_are_purged_and_insight_reports_are_counted_per_call(
    metadata_uri: str,
) -> None:
    store = open_metadata_store(metadata_uri)
    try:
        model(store, "model-hello")
        store.save_algorithm(algorithm("hello"))
        for i in range(4):
            store.insert_algorithm_call(AlgorithmCallRecord(f"c{i}", "u", "hello", "v1", "caller", 10.0 * i))
        for i in range(3):
            store.insert_insights(InsightRecord("u", "hello", "c3", "v1", "caller", {"n": i}, 40.0 + i), REPORTS)
        store.insert_insights(InsightRecord("u", "hello", "c0", "v1", "caller", {"n": 9}, 41.0), REPORTS)
        assert not store.insert_insights(InsightRecord("u", "hello", "c3", "v1", "caller", {"n": 3}, 43.0), 3)
        assert store.insert_insights(InsightRecord("u", "hello", "c0", "v1", "caller", {"n": 3}, 43.0), 3)
        assert store.purge_algorithm_calls(older_than=20.0) == 2  # c0 (at 0) and c1 (at 10)
        assert store.get_algorithm_call("c0") is None and store.get_algorithm_call("c1") is None
        assert store.get_algorithm_call("c2") is not None and store.get_algorithm_call("c3") is not None
        assert store.purge_algorithm_calls(older_than=20.0) == 0
        # what was reported about a purged call stays for the owner to read
        assert len(store.list_insights("u", "hello", PageQuery(limit=10)).items) == 5
    finally:
        store.close()


def test_concurrent_insight_reports_never_pass_the_limit_per_call(metadata_uri: str) -> None:
    """Counted and inserted in one transaction: 8 threads reporting 5 times each on a call that
    takes 12 store exactly 12 (a count then an insert let a few more through)."""
    store = open_metadata_store(metadata_uri)
    try:
        model(store, "model-hello")
        store.save_algorithm(algorithm("hello"))
        store.insert_algorithm_call(AlgorithmCallRecord("c1", "u", "hello", "v1", "caller", 1.0))
        start = threading.Barrier(8)

        def report(thread: int) -> int:
            start.wait()
            stored = 0
            for i in range(5):
                record = InsightRecord("u", "hello", "c1", "v1", "caller", {"thread": thread, "i": i}, 2.0)
                stored += store.insert_insights(record, 12)
            return stored

        with ThreadPoolExecutor(8) as pool:
            accepted = sum(pool.map(report, range(8)))
        assert accepted == 12
        assert len(store.list_insights("u", "hello", PageQuery(limit=100)).items) == 12
    finally:
        store.close()
