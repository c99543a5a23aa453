"""Evaluations through the engine: a local model type over a small labelled dataset, the metrics
the job stores (the hand-computed example of tests/test_metrics.py), failures counted, and a job
resumed by another engine over the same stores (a server restart) without predicting twice; over
SQLite and PostgreSQL (the `metadata_uri` fixture)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pellucid.server.engine import Engine, Principal
from pellucid.server.engine.errors import FailedPrecondition, NotFound
from pellucid.server.engine.evaluations import EvaluationResult
from pellucid.server.engine.inputs import InputSpec
from pellucid.server.engine.local_models import LocalModelType
from pellucid.server.engine.models import VersionSpec
from pellucid.server.engine.predict import OutputCode, OutputData, PredictInput, PredictOutput
from pellucid.server.records import ConceptValue, EvaluationState, ModelRecord, ModelVersionRecord
from pellucid.server.storage import open_metadata_store
from pellucid.server.storage.registry import open_blob_store
from tests.test_metrics import CONCEPTS, LABELS, SCORES

ADMIN = Principal("admin", is_admin=True, token_id="t")

# the hand-computed example's six inputs, then one the model fails on, one without labels and
# one labelled only with a concept the model never predicts
TABLE = {f"text {i}": row for i, row in enumerate(SCORES)}
TABLE["bird picture"] = [0.5, 0.2, 0.1]
TABLE["no label"] = [0.1, 0.1, 0.8]
LABELLED = {f"text {i}": (label,) for i, label in enumerate(LABELS)}
LABELLED |= {"boom": ("cat",), "bird picture": ("bird",), "no label": ()}


class Lookup(LocalModelType):
    """Answers each text's row of TABLE as cat/dog/fox scores; fails on "boom"."""

    type_id = "test-lookup"
    reads = ("text",)
    makes = ("concepts",)

    def __init__(self, on_predict: Callable[[list[str]], None] | None = None) -> None:
        self.seen: list[str] = []
        self.on_predict = on_predict

    def predict(
        self, model: ModelRecord, version: ModelVersionRecord, inputs: Sequence[PredictInput], params: dict[str, Any]
    ) -> list[PredictOutput]:
        texts = [i.media[0].data.decode() for i in inputs]
        self.seen += texts
        if self.on_predict is not None:
            self.on_predict(texts)
        outputs = []
        for given, text in zip(inputs, texts):
            if text == "boom":
                outputs.append(PredictOutput(given.id, OutputCode.INVALID_ARGUMENT, "cannot read boom"))
            else:
                concepts = tuple(ConceptValue(c, value=v) for c, v in zip(CONCEPTS, TABLE[text]))
                outputs.append(PredictOutput(given.id, data=OutputData(concepts)))
        return outputs


def open_engine(path: Path, model_type: LocalModelType, metadata_uri: str) -> Engine:
    engine = Engine(open_metadata_store(metadata_uri), open_blob_store(f"file://{path / 'blobs'}"))
    engine.models.local.register(model_type)
    engine.evaluations.poll_seconds = 0.05
    return engine


@pytest.fixture
def engine(tmp_path: Path, metadata_uri: str) -> Iterator[Engine]:
    engine = open_engine(tmp_path, Lookup(), metadata_uri)
    setup(engine)
    yield engine
    engine.close()


def setup(engine: Engine) -> None:
    engine.users.bootstrap("admin")
    engine.apps.create(ADMIN, "admin", "app")
    engine.datasets.create(ADMIN, "admin", "app", "ds")
    specs = [
        InputSpec(
            id=f"in-{i}",
            text=text,
            labels=tuple(ConceptValue(c) for c in labels),
            dataset_ids=("ds",),
        )
        for i, (text, labels) in enumerate(LABELLED.items())
    ]
    outcomes, _ = engine.inputs.post(ADMIN, "admin", "app", specs)
    assert all(o.error is None for o in outcomes)
    engine.models.create(ADMIN, "admin", "app", "clf", model_type_id="test-lookup")


def check_hand_computed(result: EvaluationResult) -> None:
    record, m = result.record, result.metrics
    assert record.state is EvaluationState.DONE, record.message
    assert m is not None
    assert (record.total, record.processed, record.failed) == (9, 9, 1)
    assert (result.evaluated, result.unlabelled, result.skipped) == (6, 1, 1)
    assert result.failures == (("in-6", "the model failed on this input: cannot read boom"),)
    assert m.concepts == CONCEPTS  # "bird" labels an input but the model never predicts it
    assert m.summary.top1_accuracy == pytest.approx(5 / 6)
    assert m.summary.macro_avg_roc_auc == pytest.approx(203 / 216)
    assert m.summary.mean_avg_precision == pytest.approx(11 / 12)
    assert m.summary.majority_class_accuracy == 0.5
    assert m.confusion == (("cat", "cat", 2), ("cat", "dog", 1), ("dog", "dog", 2), ("fox", "fox", 1))
    assert {b.concept: b.roc_auc for b in m.binary} == pytest.approx({"cat": 17 / 18, "dog": 7 / 8, "fox": 1.0})


def test_an_evaluation_measures_the_hand_computed_example(engine: Engine) -> None:
    queued = engine.evaluations.create(
        ADMIN, "admin", "app", "clf", dataset_id="ds", eval_id="first", eval_info={"split": "all"}
    )
    assert queued.state is EvaluationState.QUEUED and queued.total == 9
    assert engine.evaluations.run_once()
    assert not engine.evaluations.run_once()  # nothing left
    result = engine.evaluations.get(ADMIN, "admin", "app", "clf", "first", with_test_set=True)
    check_hand_computed(result)
    assert result.record.eval_info == {"split": "all"}
    by_id = {item.input_id: item for item in result.test_set}
    assert sorted(by_id) == [f"in-{i}" for i in (0, 1, 2, 3, 4, 5, 7)]  # labelled and predicted
    assert by_id["in-1"].truth == ("cat",)
    assert [(c.id, c.value) for c in by_id["in-1"].predicted] == [("dog", 0.6), ("cat", 0.4), ("fox", 0.0)]
    assert engine.evaluations.latest(ADMIN, "admin", "app", "clf").record.id == "first"


def test_a_job_stopped_midway_is_resumed_by_the_next_engine_without_predicting_twice(
    tmp_path: Path, metadata_uri: str
) -> None:
    first_engine: Engine

    def stop_after_the_second_batch(texts: list[str]) -> None:
        if len(first_model.seen) >= 4:  # batches of 2: the engine stops while the second one runs
            first_engine.evaluations.request_stop()

    first_model = Lookup(stop_after_the_second_batch)
    first_engine = open_engine(tmp_path, first_model, metadata_uri)
    first_engine.evaluations.batch_size = 2
    setup(first_engine)
    first_engine.evaluations.create(ADMIN, "admin", "app", "clf", dataset_id="ds", eval_id="resumed")
    assert first_engine.evaluations.run_once()
    stopped = first_engine.evaluations.get(ADMIN, "admin", "app", "clf", "resumed")
    assert stopped.record.state is EvaluationState.RUNNING
    assert stopped.record.processed == 4  # both batches recorded; the job is left, claimed, for later
    first_engine.close()

    second_model = Lookup()
    second = open_engine(tmp_path, second_model, metadata_uri)
    try:
        assert not second.evaluations.run_once()  # the first engine's lease has not lapsed
        assert second.evaluations.run_once(reclaim=True)  # alone on the store: take it over at once
        result = second.evaluations.get(ADMIN, "admin", "app", "clf", "resumed")
        check_hand_computed(result)
        # the first engine predicted the first four labelled inputs, the second only the rest
        assert first_model.seen == ["text 0", "text 1", "text 2", "text 3"]
        assert second_model.seen == ["text 4", "text 5", "boom", "bird picture"]
    finally:
        second.close()


def test_workers_run_queued_jobs_in_the_background(engine: Engine) -> None:
    engine.evaluations.start(1)
    try:
        record = engine.evaluations.create(ADMIN, "admin", "app", "clf", dataset_id="ds")
        done = threading.Event()
        for _ in range(200):
            result = engine.evaluations.get(ADMIN, "admin", "app", "clf", record.id)
            if result.record.state is EvaluationState.DONE:
                done.set()
                break
            done.wait(0.05)
        assert done.is_set()
        check_hand_computed(result)
    finally:
        engine.evaluations.stop()


def test_requests_that_cannot_be_evaluated_say_what_to_fix(engine: Engine) -> None:
    engine.datasets.create(ADMIN, "admin", "app", "empty")
    with pytest.raises(FailedPrecondition, match="'empty' has no inputs: upload labelled inputs"):
        engine.evaluations.create(ADMIN, "admin", "app", "clf", dataset_id="empty")
    engine.datasets.create(ADMIN, "admin", "app", "bare")
    engine.inputs.post(ADMIN, "admin", "app", [InputSpec(id="x", text="hello", dataset_ids=("bare",))])
    with pytest.raises(FailedPrecondition, match="none is labelled with a concept"):
        engine.evaluations.create(ADMIN, "admin", "app", "clf", dataset_id="bare")
    engine.models.create(
        ADMIN,
        "admin",
        "app",
        "other",
        model_type_id="test-lookup",
        version=VersionSpec(concepts=(ConceptValue("car"),)),
    )
    with pytest.raises(
        FailedPrecondition, match=r"predicts \[car\] and dataset 'ds' is labelled \[bird, cat, dog, fox\]"
    ):
        engine.evaluations.create(ADMIN, "admin", "app", "other", dataset_id="ds")
    with pytest.raises(NotFound, match="dataset 'nope'"):
        engine.evaluations.create(ADMIN, "admin", "app", "clf", dataset_id="nope")
    with pytest.raises(NotFound, match="evaluation 'nope'"):
        engine.evaluations.get(ADMIN, "admin", "app", "clf", "nope")
    with pytest.raises(NotFound, match="has not been evaluated"):
        engine.evaluations.latest(ADMIN, "admin", "app", "clf")


def test_a_batch_no_runner_answers_is_retried_then_fails_the_job_saying_why(tmp_path: Path) -> None:
    from tests.test_predict_engine import JsonCodec

    engine = Engine(
        open_metadata_store(f"sqlite://{tmp_path / 'metadata.db'}"),
        open_blob_store(f"file://{tmp_path / 'blobs'}"),
        work_codec=JsonCodec(),
    )
    try:
        engine.models.local.register(Lookup())
        setup(engine)
        engine.models.create(ADMIN, "admin", "app", "remote", version=VersionSpec(runner_labels=("nowhere",)))
        engine.evaluations.lease_seconds = 0.4  # each attempt waits half a lease for a runner
        engine.evaluations.poll_seconds = 0.01
        engine.evaluations.create(ADMIN, "admin", "app", "remote", dataset_id="ds", eval_id="lonely")
        assert engine.evaluations.run_once()
        failed = engine.evaluations.get(ADMIN, "admin", "app", "remote", "lonely").record
        assert failed.state is EvaluationState.FAILED and failed.processed == 0
        assert failed.message.startswith("no answer for a batch of inputs after 3 attempts: ")
        assert "nowhere" in failed.message  # the router's reason names the labels to serve it with
    finally:
        engine.close()


def test_an_input_the_model_cannot_read_fails_alone_with_the_reason(engine: Engine) -> None:
    from pellucid.server.engine.inputs import MediaSpec
    from tests.media_samples import png

    picture = InputSpec(
        id="picture", media=(MediaSpec("image", png("cat")),), labels=(ConceptValue("cat"),), dataset_ids=("ds",)
    )
    outcomes, _ = engine.inputs.post(ADMIN, "admin", "app", [picture])
    assert outcomes[0].error is None
    engine.models.create(ADMIN, "admin", "app", "texts-only", model_type_id="test-lookup", input_fields=("text",))
    engine.evaluations.create(ADMIN, "admin", "app", "texts-only", dataset_id="ds", eval_id="mixed")
    assert engine.evaluations.run_once()
    result = engine.evaluations.get(ADMIN, "admin", "app", "texts-only", "mixed")
    assert result.record.state is EvaluationState.DONE and result.record.failed == 2
    assert ("picture", "the input is an image, and model 'texts-only' reads only text") in result.failures
    assert result.metrics is not None and result.metrics.summary.top1_accuracy == pytest.approx(5 / 6)
