"""The AlgorithmStore contract, over SQLite and PostgreSQL (the `metadata_uri` fixture)."""

from __future__ import annotations

import pytest

from pellucid.server.records import AlgorithmCallRecord, AlgorithmRecord, AlgorithmTagRecord, InsightRecord, PageQuery
from pellucid.server.storage import Conflict, open_metadata_store


def algorithm(name: str, public: bool = False, user_id: str = "u", at: float = 1.0) -> AlgorithmRecord:
    return AlgorithmRecord(user_id, name, "app", f"model-{name}", public, at, at)


def test_algorithms_are_saved_replaced_and_listed_in_publishing_order(metadata_uri: str) -> None:
    store = open_metadata_store(metadata_uri)
    try:
        for i in range(7):
            store.save_algorithm(algorithm(f"a{i}", public=i % 2 == 0))
        store.save_algorithm(algorithm("a0", user_id="other"))
        assert store.get_algorithm("u", "a3") == algorithm("a3")
        assert store.get_algorithm("u", "missing") is None
        replaced = AlgorithmRecord("u", "a1", "app2", "m2", True, 1.0, 5.0)
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
        store.save_algorithm(algorithm("hello"))
        store.insert_algorithm_tag(AlgorithmTagRecord("u", "hello", "1.0.0", "v1", 1.0))
        store.insert_algorithm_tag(AlgorithmTagRecord("u", "hello", "1.1.0", "v2", 2.0))
        with pytest.raises(Conflict):
            store.insert_algorithm_tag(AlgorithmTagRecord("u", "hello", "1.0.0", "v3", 3.0))
        with pytest.raises(LookupError):
            store.insert_algorithm_tag(AlgorithmTagRecord("u", "nothing", "1.0.0", "v1", 1.0))
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
            store.insert_insights(InsightRecord("u", "hello", "c1", "v1", "caller", {"score": i / 4, "n": i}, 5.0 + i))
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
