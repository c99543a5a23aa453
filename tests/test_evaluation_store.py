"""The EvaluationStore contract, over SQLite and PostgreSQL (the `metadata_uri` fixture)."""

from __future__ import annotations

import math
import threading

import pytest

from pellucid.server.records import (
    AppRecord,
    ConceptValue,
    EvaluationItem,
    EvaluationRecord,
    EvaluationState,
    ModelRecord,
    ModelVersionRecord,
    PageQuery,
)
from pellucid.server.storage import Conflict, MetadataStore, open_metadata_store


def _model(store: MetadataStore, app_id: str = "app", model_id: str = "m") -> None:
    if store.get_app("u", app_id) is None:
        store.insert_app(AppRecord(user_id="u", id=app_id, created_at=0, modified_at=0))
    store.insert_model(
        ModelRecord(user_id="u", app_id=app_id, id=model_id, created_at=0, modified_at=0),
        ModelVersionRecord(user_id="u", app_id=app_id, model_id=model_id, id="v1", created_at=0),
    )


def _evaluation(eval_id: str, model_id: str = "m", app_id: str = "app", **fields: object) -> EvaluationRecord:
    return EvaluationRecord(
        user_id="u",
        app_id=app_id,
        model_id=model_id,
        id=eval_id,
        model_version_id="v1",
        dataset_user_id="u",
        dataset_app_id=app_id,
        dataset_id="ds",
        dataset_version_id="",
        created_at=1.0,
        modified_at=1.0,
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
def store(metadata_uri: str):  # type: ignore[no-untyped-def]
    opened = open_metadata_store(metadata_uri)
    yield opened
    opened.close()


def test_insert_get_latest_and_list(store: MetadataStore) -> None:
    _model(store)
    _model(store, model_id="other")
    first = store.insert_evaluation(_evaluation("e1", total=3, eval_info={"note": "first"}))
    assert first.seq > 0
    store.insert_evaluation(_evaluation("e2", extended_metrics={"custom": 0.5}))
    store.insert_evaluation(_evaluation("e1", model_id="other"))  # ids are per model
    with pytest.raises(Conflict):
        store.insert_evaluation(_evaluation("e1"))
    with pytest.raises(LookupError):
        store.insert_evaluation(_evaluation("e9", model_id="missing"))

    got = store.get_evaluation("u", "app", "m", "e1")
    assert got is not None and got == first
    assert (got.state, got.total, got.eval_info, got.dataset_id) == (EvaluationState.QUEUED, 3, {"note": "first"}, "ds")
    assert store.get_evaluation("u", "app", "m", "nope") is None
    latest = store.latest_evaluation("u", "app", "m")
    assert latest is not None and (latest.id, latest.extended_metrics) == ("e2", {"custom": 0.5})
    assert store.latest_evaluation("u", "app", "none") is None

    page = store.list_evaluations("u", "app", "m", PageQuery(limit=1))
    assert [e.id for e in page.items] == ["e1"] and page.next_after is not None
    rest = store.list_evaluations("u", "app", "m", PageQuery(limit=10, after=page.next_after))
    assert [e.id for e in rest.items] == ["e2"] and rest.next_after is None

    store.delete_model("u", "app", "m")  # evaluations go with their model
    assert store.get_evaluation("u", "app", "m", "e1") is None
    assert store.get_evaluation("u", "app", "other", "e1") is not None


def test_claims_progress_items_and_finish(store: MetadataStore) -> None:
    _model(store)
    _model(store, app_id="app2")
    a = store.insert_evaluation(_evaluation("a", total=4))
    b = store.insert_evaluation(_evaluation("b", app_id="app2"))

    claimed = store.claim_evaluation("w1", now=100.0, lease_seconds=30)
    assert claimed is not None and claimed.seq == a.seq  # oldest first
    assert (claimed.state, claimed.owner, claimed.claimed_until) == (EvaluationState.RUNNING, "w1", 130.0)
    second = store.claim_evaluation("w2", now=101.0, lease_seconds=30)
    assert second is not None and second.seq == b.seq and second.app_id == "app2"
    assert store.claim_evaluation("w3", now=102.0, lease_seconds=30) is None  # both held

    items = [
        EvaluationItem(5, "i5", ("cat",), (ConceptValue("cat", value=0.9), ConceptValue("dog", value=0.1))),
        EvaluationItem(7, "i7", ("dog",), (), error="the runner failed: boom"),
    ]
    assert store.record_evaluation_batch(a.seq, "w1", items, last_input_seq=7, claimed_until=140.0, now=110.0)
    assert not store.record_evaluation_batch(a.seq, "w2", items, 9, 150.0, 111.0)  # not its claim: nothing stored
    # the same inputs again (a batch retried after a lost answer) are not counted twice
    assert store.record_evaluation_batch(a.seq, "w1", items[:1], 7, 140.0, 112.0)
    now = store.get_evaluation("u", "app", "m", "a")
    assert now is not None
    assert (now.processed, now.failed, now.last_input_seq, now.claimed_until) == (2, 1, 7, 140.0)
    assert store.evaluation_items(a.seq, 0, 10) == items
    assert store.evaluation_items(a.seq, 5, 10) == items[1:]
    assert store.evaluation_items(a.seq, 0, 1) == items[:1]
    assert store.evaluation_items(b.seq, 0, 10) == []

    assert store.finish_evaluation(b.seq, "w2", EvaluationState.FAILED, "the dataset is gone", {}, 120.0)
    failed = store.get_evaluation("u", "app2", "m", "b")
    assert failed is not None and (failed.state, failed.message) == (EvaluationState.FAILED, "the dataset is gone")

    # the lease lapses: another worker takes it over, and the first one can no longer write
    assert store.claim_evaluation("w3", now=139.0, lease_seconds=30) is None
    taken = store.claim_evaluation("w3", now=141.0, lease_seconds=30)
    assert taken is not None and taken.seq == a.seq and taken.last_input_seq == 7 and taken.processed == 2
    assert not store.record_evaluation_batch(a.seq, "w1", [], 9, 200.0, 142.0)
    metrics = {"summary": {"top1_accuracy": 1.0, "macro_avg_roc_auc": math.nan}, "roc": [math.inf, 0.5]}
    assert not store.finish_evaluation(a.seq, "w1", EvaluationState.DONE, "", metrics, 143.0)
    assert store.finish_evaluation(a.seq, "w3", EvaluationState.DONE, "", metrics, 143.0)
    done = store.get_evaluation("u", "app", "m", "a")
    assert done is not None and done.state is EvaluationState.DONE and done.claimed_until is None
    assert done.metrics["summary"]["top1_accuracy"] == 1.0 and math.isnan(done.metrics["summary"]["macro_avg_roc_auc"])
    assert done.metrics["roc"][0] == math.inf
    assert not store.record_evaluation_batch(a.seq, "w3", [], 9, 200.0, 144.0)  # finished: no more writes
    assert store.claim_evaluation("w4", now=1e9, lease_seconds=30) is None  # finished ones are never claimed


def test_two_claimers_never_get_the_same_evaluation(metadata_uri: str) -> None:
    stores = [open_metadata_store(metadata_uri), open_metadata_store(metadata_uri)]  # two replicas
    try:
        _model(stores[0])
        for i in range(20):
            stores[0].insert_evaluation(_evaluation(f"e{i}"))
        got: list[list[int]] = [[], [], [], []]
        barrier = threading.Barrier(4)

        def claim(k: int) -> None:
            barrier.wait()
            while (e := stores[k % 2].claim_evaluation(f"w{k}", now=0.0, lease_seconds=60)) is not None:
                got[k].append(e.seq)

        threads = [threading.Thread(target=claim, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        every = [seq for g in got for seq in g]
        assert len(every) == 20 and len(set(every)) == 20
    finally:
        for s in stores:
            s.close()
