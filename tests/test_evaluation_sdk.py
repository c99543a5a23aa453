"""Evaluations through the SDK against a real server and a runner-served model: Model.evaluate,
get_eval_by_id and get_latest_eval with their flags, clear errors, and a job resumed after a
server restart."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import pellucid.errors as errors
from pellucid.api import v1
from pellucid.client.app import App
from pellucid.client.model import Model
from pellucid.client.runner import Runner
from pellucid.client.user import User
from pellucid.server.runtime import PellucidServer, ServerSettings
from tests.test_evaluations import LABELLED, TABLE
from tests.test_metrics import CONCEPTS


class Scores(Runner):
    """The test table's cat/dog/fox scores for each text; raises on "boom". `gate`, when set
    up, holds "text 4" until it opens (a restart test keeps that batch in flight)."""

    seen: list[str]
    gate: threading.Event | None = None
    holding = threading.Event()

    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        text = input.data.text.raw
        self.seen.append(text)
        if text == "boom":
            raise ValueError("cannot read boom")
        if text == "text 4" and self.gate is not None:
            self.holding.set()
            self.gate.wait(30)
        concepts = [v1.Concept(id=c, name=c, value=v) for c, v in zip(CONCEPTS, TABLE[text])]
        return v1.Output(data=v1.Data(concepts=concepts))


def serve(
    user: User, runner_id: str, label: str, gate: threading.Event | None = None
) -> tuple[Scores, threading.Thread]:
    user.create_runner(runner_id, labels=[label])
    runner = Scores(runner_id, base_url=user.base_url, pat=user._connection.settings.pat, num_parallel_polls=2)
    runner.seen, runner.gate = [], gate
    thread = threading.Thread(target=runner.start, daemon=True)
    thread.start()
    assert runner.wait_connected(10)
    return runner, thread


def fill(app: App, dataset_id: str = "ds") -> None:
    dataset = app.create_dataset(dataset_id)
    inputs = [
        app.inputs().get_text_input(f"in-{i}", text, dataset_id=dataset.id, labels=list(labels) or None)
        for i, (text, labels) in enumerate(LABELLED.items())
    ]
    result = app.inputs().upload_inputs(inputs, show_log=False)
    assert not result.failed


@pytest.fixture
def served(alice: User, unique: str) -> Iterator[tuple[App, Model, Scores]]:
    app = alice.create_app(f"evals-{unique}")
    fill(app)
    label = f"eval-{unique}"
    model = app.create_model("clf", runner_labels=[label], input_fields=["text"])
    runner, thread = serve(alice, f"scores-{unique}", label)
    yield app, model, runner
    runner.stop(drain=False)
    thread.join(10)


def approx(value: float) -> object:
    return pytest.approx(value, rel=1e-6)  # EvalMetrics carries float32


def test_evaluate_and_read_the_metrics_with_flags(served: tuple[App, Model, Scores]) -> None:
    _, model, runner = served
    assert model.get_latest_eval() is None  # not evaluated yet
    queued = model.evaluate("ds", eval_id="first", eval_info={"split": "all"}, extended_metrics={"mine": 0.5})
    assert queued.id == "first" and queued.status.code in (
        v1.Status.MODEL_QUEUED_FOR_EVALUATION,
        v1.Status.MODEL_EVALUATING,
        v1.Status.MODEL_EVALUATED,
    )
    done = model.wait_for_eval("first", timeout=60)
    assert done.status.code == v1.Status.MODEL_EVALUATED, done.status.message
    s = done.summary
    assert s.top1_accuracy == approx(5 / 6)
    assert (s.macro_avg_precision, s.macro_avg_recall, s.macro_avg_f1_score) == (
        approx(8 / 9),
        approx(8 / 9),
        approx(2.6 / 3),
    )
    assert s.macro_avg_roc_auc == approx(203 / 216) and s.mean_avg_precision == approx(11 / 12)
    assert (s.majority_class, s.majority_class_accuracy) == ("cat", 0.5)
    p = done.progress
    assert (p.total_inputs, p.processed_inputs, p.failed_inputs) == (9, 9, 1)
    assert (p.evaluated_inputs, p.unlabelled_inputs, p.skipped_inputs) == (6, 1, 1)
    assert [f.input_id for f in done.failures] == ["in-6"] and "cannot read boom" in done.failures[0].message
    assert dict(done.eval_info.params) == {"split": "all"} and dict(done.extended_metrics) == {"mine": 0.5}
    # without flags only the summary: the larger parts are asked for
    assert not done.confusion_matrix.matrix and not done.binary_metrics and not done.test_set
    assert not done.label_counts.positive_label_counts and not done.metrics_by_class

    full = model.get_eval_by_id(
        "first",
        label_counts=True,
        test_set=True,
        binary_metrics=True,
        confusion_matrix=True,
        metrics_by_class=True,
        metrics_by_area=True,
    )
    cells = {(e.actual, e.predicted): e.value for e in full.confusion_matrix.matrix}
    assert cells == {("cat", "cat"): 2, ("cat", "dog"): 1, ("dog", "dog"): 2, ("fox", "fox"): 1}
    assert [c.id for c in full.confusion_matrix.concepts] == list(CONCEPTS)
    assert {c.concept_name: c.count for c in full.label_counts.positive_label_counts} == {"cat": 3, "dog": 2, "fox": 1}
    binary = {b.concept.id: b for b in full.binary_metrics}
    cat = binary["cat"]
    assert (cat.num_pos, cat.num_neg, cat.num_tot, cat.true_positives, cat.false_negatives) == (3, 3, 6, 2, 1)
    assert (cat.roc_auc, cat.avg_precision, cat.precision, cat.recall, cat.f1) == (
        approx(17 / 18),
        approx(11 / 12),
        approx(1.0),
        approx(2 / 3),
        approx(0.8),
    )
    assert list(cat.roc_curve.fpr) == pytest.approx([0, 0, 0, 1 / 3, 2 / 3, 1])
    assert list(cat.precision_recall_curve.precision) == pytest.approx([1, 1, 0.75, 0.6, 0.5])
    assert list(cat.precision_recall_curve.thresholds) == pytest.approx([0.9, 0.6, 0.4, 0.3, 0.2])
    by_class = {c.concept.id: c for c in full.metrics_by_class}
    assert (by_class["dog"].precision, by_class["dog"].recall, by_class["dog"].false_positives) == (
        approx(2 / 3),
        approx(1.0),
        1,
    )
    assert not full.metrics_by_area  # classifiers have no metrics by region area
    entries = {e.input.id: e for e in full.test_set}
    assert sorted(entries) == [f"in-{i}" for i in (0, 1, 2, 3, 4, 5, 7)]
    assert [c.id for c in entries["in-1"].ground_truth_concepts] == ["cat"]
    assert entries["in-1"].predicted_concepts[0].id == "dog"  # its top-1, highest first

    latest = model.get_latest_eval(confusion_matrix=True)
    assert latest is not None and latest.id == "first" and latest.confusion_matrix.matrix
    assert [e.id for e in model.list_evaluations()] == ["first"]
    assert sorted(runner.seen) == sorted(t for t, labels in LABELLED.items() if labels)  # each labelled text once


def test_the_job_outlives_the_script_that_asked_for_it(served: tuple[App, Model, Scores], alice: User) -> None:
    _, model, _ = served
    script = (
        "import sys\n"
        "from pellucid.client.model import Model\n"
        "m = Model(model_id='clf', app_id=sys.argv[1], user_id=sys.argv[2], base_url=sys.argv[3], pat=sys.argv[4])\n"
        "print(m.evaluate('ds', eval_id='from-a-script').status.description)\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script, model.app_id, alice._user_id, alice.base_url, alice._connection.settings.pat],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    done = model.wait_for_eval("from-a-script", timeout=60)  # the script is gone; the server went on
    assert done.status.code == v1.Status.MODEL_EVALUATED and done.summary.top1_accuracy == approx(5 / 6)


def test_a_dataset_version_is_evaluated_as_frozen(served: tuple[App, Model, Scores]) -> None:
    app, model, _ = served
    version = app.dataset("ds").create_version(id="v1")
    app.inputs().upload_inputs(
        [app.inputs().get_text_input("late", "text 0", dataset_id="ds", labels=["dog"])], show_log=False
    )
    frozen = model.evaluate("ds", dataset_version_id=version.id, wait=True, timeout=60)
    assert frozen.status.code == v1.Status.MODEL_EVALUATED and frozen.dataset_version_id == "v1"
    assert frozen.progress.total_inputs == 9 and frozen.summary.top1_accuracy == approx(5 / 6)
    live = model.evaluate("ds", wait=True, timeout=60)
    assert live.progress.total_inputs == 10 and live.summary.top1_accuracy == approx(5 / 7)
    assert model.get_latest_eval().id == live.id  # type: ignore[union-attr]


def test_a_dataset_of_another_app_and_not_of_another_user(
    served: tuple[App, Model, Scores], alice: User, bob: User, unique: str
) -> None:
    _, model, _ = served
    other = alice.create_app(f"evals-data-{unique}")
    fill(other, "held-out")
    result = model.evaluate("held-out", dataset_app_id=other.id, wait=True, timeout=60)
    assert result.status.code == v1.Status.MODEL_EVALUATED and result.dataset_app_id == other.id
    assert result.summary.top1_accuracy == approx(5 / 6)
    bobs = bob.create_app(f"evals-bob-{unique}")
    bobs.create_dataset("private")
    with pytest.raises(errors.NotFound, match="not found"):
        model.evaluate("private", dataset_app_id=bobs.id, dataset_user_id=bob._user_id)


def test_what_cannot_be_evaluated_is_refused_saying_what_to_fix(alice: User, unique: str) -> None:
    app = alice.create_app(f"evals-bad-{unique}")
    fill(app)
    model = app.create_model("clf", runner_labels=[f"none-{unique}"], input_fields=["text"])
    app.create_dataset("empty")
    with pytest.raises(errors.FailedPrecondition, match="'empty' has no inputs"):
        model.evaluate("empty")
    app.create_dataset("bare")
    app.inputs().upload_inputs([app.inputs().get_text_input("x", "hello", dataset_id="bare")], show_log=False)
    with pytest.raises(errors.FailedPrecondition, match="none is labelled with a concept: label them"):
        model.evaluate("bare")
    cars = app.create_model("cars", runner_labels=["x"], concepts=["car", "truck"])
    with pytest.raises(errors.FailedPrecondition, match=r"predicts \[car, truck\] .* no concept in common"):
        cars.evaluate("ds")
    with pytest.raises(errors.NotFound, match="dataset 'nope'"):
        model.evaluate("nope")
    with pytest.raises(errors.NotFound, match="evaluation 'nope' of model 'clf' not found"):
        model.get_eval_by_id("nope")
    with pytest.raises(errors.NotFound, match="model 'ghost'"):
        app.model("ghost").get_latest_eval()
    with pytest.raises(errors.InvalidArgument, match="eval_info"):
        model.evaluate("ds", eval_info={"x": float("nan")})


def test_a_model_that_predicts_none_of_the_labels_fails_with_the_reason(alice: User, unique: str) -> None:
    app = alice.create_app(f"evals-other-{unique}")
    fill(app)
    label = f"other-{unique}"
    runner, thread = serve(alice, f"other-{unique}", label)
    try:
        model = app.create_model("clf", runner_labels=[label], input_fields=["text"])
        model.evaluate("ds", eval_id="e1", wait=True, timeout=60)
        with pytest.raises(errors.AlreadyExists, match="evaluation 'e1' of model 'clf' already exists"):
            model.evaluate("ds", eval_id="e1")
        # the same runner, but a model whose outputs keep only a concept no input is labelled with
        renamed = app.create_model(
            "renamed", runner_labels=[label], input_fields=["text"], output_config={"select_concepts": ["zebra"]}
        )
        failed = renamed.evaluate("ds", wait=True, timeout=60)
        assert failed.status.code == v1.Status.MODEL_EVALUATION_FAILED
        assert (
            "model 'renamed' predicted [] and dataset 'ds' is labelled [bird, cat, dog, fox]" in failed.status.message
        )
        assert "no concept in common" in failed.status.message
    finally:
        runner.stop(drain=False)
        thread.join(10)


def test_an_evaluation_is_resumed_after_a_server_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = PellucidServer(ServerSettings(data_dir=data_dir, port=0, allow_private_urls=True))
    first.start()
    port = first.port
    assert first.engine is not None
    first.engine.evaluations.batch_size = 2  # small batches: progress is recorded batch by batch
    credentials = first.data_dir.read_credentials()
    assert credentials is not None
    user = User(base_url=f"grpc://127.0.0.1:{port}", pat=credentials.pat)
    gate = threading.Event()
    Scores.holding.clear()
    second: PellucidServer | None = None
    runner: Scores | None = None
    try:
        app = user.create_app("restart")
        fill(app)
        model = app.create_model("clf", runner_labels=["restart"], input_fields=["text"])
        runner, _ = serve(user, "scores", "restart", gate)
        model.evaluate("ds", eval_id="long")
        assert Scores.holding.wait(30)  # the third batch (text 4, text 5) is in flight
        assert model.get_eval_by_id("long").progress.processed_inputs == 4
        first.stop(grace=0.5)
        gate.set()  # the runner finishes its item for a server that is gone

        second = PellucidServer(ServerSettings(data_dir=data_dir, port=port, allow_private_urls=True))
        second.start()  # its worker takes the job over at once (alone on the data dir), the runner reconnects
        done = model.wait_for_eval("long", timeout=60)
        assert done.status.code == v1.Status.MODEL_EVALUATED, done.status.message
        assert done.summary.top1_accuracy == approx(5 / 6)
        assert (done.progress.processed_inputs, done.progress.failed_inputs) == (9, 1)
        # the first two batches were not predicted again; the one in flight at the stop was
        assert sorted(runner.seen[:4]) == ["text 0", "text 1", "text 2", "text 3"]
        assert not {"text 0", "text 1", "text 2", "text 3"} & set(runner.seen[4:])
    finally:
        gate.set()
        if runner is not None:
            runner.stop(drain=False)
        user.close()
        if second is not None:
            second.stop(grace=0.5)
        else:
            first.stop(grace=0.5)


def test_a_trained_embedding_classifier_is_evaluated_with_no_runner(alice: User, unique: str) -> None:
    from tests.test_training import TOPICS

    app = alice.create_app(f"evals-trained-{unique}", base_workflow="Empty")
    app.create_dataset("topics")
    rows = [(text, topic) for topic, texts in TOPICS.items() for text in texts]
    inputs = app.inputs()
    result = inputs.upload_inputs(
        [
            inputs.get_text_input(f"t{i}", text, dataset_id="topics", labels=[topic])
            for i, (text, topic) in enumerate(rows)
        ],
        show_log=False,
    )
    assert not result.failed
    model = app.create_model("topic", model_type_id="embedding-classifier")
    with pytest.raises(errors.FailedPrecondition, match="cannot predict"):
        model.evaluate("topics")  # the version create_model made is not trained
    model.update_params(dataset_id="topics", concepts=["cats", "taxes"], validation_fraction=0.0)
    trained = model.wait_for_training(model.train(), timeout=120)
    assert trained["state"] == "trained", trained
    done = model.evaluate("topics", wait=True, timeout=120)
    assert done.status.code == v1.Status.MODEL_EVALUATED, done.status.message
    assert done.model_version_id == model.version_id and done.progress.evaluated_inputs == len(rows)
    # measured apart from the training job's own bookkeeping, the two agree on the training set
    assert done.summary.top1_accuracy == approx(trained["metrics"]["train_accuracy"])
    assert done.summary.majority_class_accuracy == approx(0.5)
