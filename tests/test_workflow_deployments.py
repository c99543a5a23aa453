"""Deployments of a workflow, against a real server with an HTTP port: the built-in text embedder
feeding a classifier the server trained and a thresholder, called over HTTP (httpx and the
sidekick client) and compared with what `Workflow.predict` answers for the same texts."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import pellucid.errors as errors
from pellucid.api import v1
from pellucid.client.app import App
from pellucid.client.input import Inputs
from pellucid.client.runner import Runner
from pellucid.client.user import User
from pellucid.client.workflow import Workflow
from pellucid.deployment import Deployment, InvalidRows
from pellucid.server.engine import workflow_deployments
from pellucid.server.engine.access import Principal
from pellucid.server.engine.errors import Unavailable
from pellucid.server.engine.fair_pool import FairPool
from pellucid.server.engine.validation import MAX_BATCH
from pellucid.server.runtime import PellucidServer, ServerSettings
from tests.media_samples import png
from tests.runner_models import Tabular
from tests.test_workflow_integration import BOXES, CLEAR, Vision, _reviews, node, write

TEXTS = list(CLEAR)


@dataclass
class Served:
    server: PellucidServer
    admin: User
    user: User
    app: App
    workflow: Workflow
    classifier_version: str
    base: str
    token: str

    def post(self, rows: Any, deployment: str = "reviews", token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token if token is None else token}"}
        url = f"{self.base}/v1/deployments/{deployment}/forward"
        return httpx.post(url, json={"rows": rows}, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """An app with a classifier trained on the demo's reviews, and the workflow `reviews`: the
    text embedder feeding it and a thresholder after it (leaf `sure`), and the embedder alone
    (leaf `vector`), deployed as `reviews`."""
    server = PellucidServer(ServerSettings(data_dir=tmp_path_factory.mktemp("wf-deploy"), port=0, http_port=0))
    server.start()
    credentials = server.data_dir.read_credentials()
    assert credentials is not None
    admin = User(base_url=f"grpc://{server.address}", pat=credentials.pat)
    created = admin.create_user("alice")
    user = User(base_url=f"grpc://{server.address}", pat=created.pat.secret, user_id=created.user.id)
    try:
        app = user.create_app("shop", base_workflow="Empty")
        app.create_dataset("reviews")
        uploads = [
            Inputs.get_text_input(f"review-{i}", text, dataset_id="reviews", labels=[label] if label else None)
            for i, (text, label) in enumerate(_reviews())
        ]
        assert not app.inputs().upload_inputs(uploads, show_log=False).failed
        model = app.create_model("sentiment", model_type_id="embedding-classifier")
        model.update_params(dataset_id="reviews", concepts=["positive", "negative"], validation_fraction=0.0)
        version_id = model.train()
        assert model.wait_for_training(version_id, timeout=120)["state"] == "trained"
        config = write(
            tmp_path_factory.mktemp("yaml") / "reviews.yaml",
            "reviews",
            node("embed", "text-embed", model_type_id="text-embedder"),
            node("classify", "sentiment", "embed"),
            node(
                "sure",
                "sure",
                "classify",
                model_type_id="concept-thresholder",
                output_info={"params": {"threshold": 0.6}},
            ),
            node("vector", "text-embed", model_type_id="text-embedder"),
        )
        workflow = app.create_workflow(config, display=False)
        _, token = app.create_deployment("reviews", workflow_id="reviews").create_token("tests")
        base = f"http://127.0.0.1:{server.http_port}"
        yield Served(server, admin, user, app, workflow, version_id, base, token)
    finally:
        user.close()
        admin.close()
        server.stop(grace=0.5)


def _workflow_answers(workflow: Workflow, texts: list[str]) -> list[dict[str, Any]]:
    """What Workflow.predict answers for each text: the leaves' concepts and vector."""
    response = workflow.predict([v1.Input(data=v1.Data(text=v1.Text(raw=t))) for t in texts])
    answers = []
    for result in response.results:
        outputs = {o.id: o for o in result.outputs}
        assert all(o.status.code == v1.Status.OK for o in result.outputs), result
        answers.append(
            {
                "sure": {c.id: c.value for c in outputs["sure"].data.concepts},
                "vector": list(outputs["vector"].data.embeddings[0].vector),
            }
        )
    return answers


def test_a_workflow_deployment_answers_as_the_workflow_does(served: Served) -> None:
    deployment = served.app.deployment("reviews")
    version = served.workflow.load_info().version.id
    info = deployment.info
    # the target is the workflow, at the version that was its latest at creation
    assert (info.workflow_id, info.model_id, info.version_id) == ("reviews", "", version)
    assert [d.info.workflow_id for d in served.app.list_deployments()] == ["reviews"]
    assert "workflow_id='reviews'" in repr(deployment)
    # inputs from the root nodes (both read text: one required text), outputs from the leaves by node id
    assert [(s.name, s.type, s.required) for s in info.input_specs] == [("text", "text", True)]
    assert [(s.name, s.type) for s in info.output_specs] == [("vector", "array"), ("sure", "categorical")]
    assert list(info.output_specs[1].categories) == ["positive", "negative"]
    assert info.output_specs[0].dtype == "float32"

    described = httpx.get(
        f"{served.base}/v1/deployments/reviews", headers={"Authorization": f"Bearer {served.token}"}
    ).json()
    assert described["workflow_id"] == "reviews" and described["version_id"] == version

    expected = _workflow_answers(served.workflow, TEXTS)
    response = served.post([{"text": t} for t in TEXTS])
    assert response.status_code == 200, response.text
    rows = response.json()["rows"]
    assert len(rows) == len(TEXTS)
    for text, row, want in zip(TEXTS, rows, expected, strict=True):
        assert row.keys() == {"vector", "sure"}
        assert row["vector"]["shape"] == [384] and row["vector"]["data"] == want["vector"]
        assert row["sure"].keys() == want["sure"].keys() == {CLEAR[text]}  # the clear class passed 0.6
        assert row["sure"] == pytest.approx(want["sure"], abs=1e-6)

    client = Deployment(url=deployment.url, token=served.token, batch_size=3)
    assert [s["name"] for s in client.feature_specs_out] == ["vector", "sure"]
    one = client.predict(text=TEXTS[0])
    assert isinstance(one["vector"], np.ndarray) and one["vector"].dtype == np.float32
    assert np.array_equal(one["vector"], np.asarray(expected[0]["vector"], dtype=np.float32))
    many = client.predict_many({"text": t} for t in TEXTS)
    assert [m["sure"] for m in many] == [r["sure"] for r in rows]
    assert all(np.array_equal(m["vector"], np.asarray(w["vector"], np.float32)) for m, w in zip(many, expected))


def test_specs_given_at_creation_name_any_node(served: Served) -> None:
    """Output specs given at creation name their node (`<node_id>`): here the classifier before the
    thresholder, with every class's probability."""
    specs = {"output": [{"name": "classify", "type": "categorical", "categories": ["positive", "negative"]}]}
    managed = served.app.create_deployment("reviews-raw", workflow_id="reviews", feature_specs=specs)
    _, token = managed.create_token()
    response = served.post([{"text": TEXTS[1]}], deployment="reviews-raw", token=token)
    assert response.status_code == 200, response.text
    (row,) = response.json()["rows"]
    direct = served.app.model("sentiment").predict([v1.Input(data=v1.Data(text=v1.Text(raw=TEXTS[1])))])
    assert row["classify"] == pytest.approx({c.id: c.value for c in direct.outputs[0].data.concepts}, abs=1e-6)
    assert max(row["classify"], key=row["classify"].get) == CLEAR[TEXTS[1]]
    with pytest.raises(errors.InvalidArgument, match=r"'nowhere' names no node of workflow 'reviews'"):
        served.app.create_deployment(
            "reviews-bad", workflow_id="reviews", feature_specs={"output": [{"name": "nowhere", "type": "text"}]}
        )


def test_rows_are_checked_before_the_workflow_runs_and_a_failing_node_names_itself(served: Served) -> None:
    response = served.post([{"text": "fine"}, {}, {"text": 3}, {"text": "x", "colour": "red"}])
    assert response.status_code == 400
    bad = response.json()["error"]["rows"]
    assert [(r["row"], r["feature"]) for r in bad] == [(1, "text"), (2, "text"), (3, "colour")]
    assert "missing" in bad[0]["message"] and "expected a string" in bad[1]["message"]
    with pytest.raises(InvalidRows) as raised:
        Deployment(url=f"{served.base}/v1/deployments/reviews", token=served.token).predict_many(
            [{"text": "fine"}, {"text": ["a list"]}]
        )
    assert raised.value.row == 1 and raised.value.feature == "text"
    # an empty text passes the spec but the embedder has nothing to read: that row fails, naming the node
    response = served.post([{"text": "fine"}, {"text": ""}])
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["rows"][0]["row"] == 1
    assert "the workflow refused it: node 'embed' (model 'text-embed') failed" in error["message"]


def test_a_deployment_serves_one_target_of_its_owner(served: Served) -> None:
    app = served.app
    with pytest.raises(errors.InvalidArgument, match=r"both was given: send model_id .* or workflow_id"):
        app.create_deployment("two", model_id="sentiment", workflow_id="reviews")
    with pytest.raises(errors.InvalidArgument, match="neither was given"):
        app.create_deployment("none")
    with pytest.raises(errors.NotFound, match="version 'nope' of workflow 'reviews' not found"):
        app.create_deployment("old", workflow_id="reviews", version_id="nope")
    with pytest.raises(errors.NotFound, match="workflow 'missing' not found"):
        app.create_deployment("missing", workflow_id="missing")
    bob_created = served.admin.create_user("bob")
    bob = User(base_url=served.user.base_url, pat=bob_created.pat.secret, user_id=bob_created.user.id)
    try:
        with pytest.raises(errors.NotFound, match="workflow 'reviews' not found"):  # alice's workflow is not his
            bob.create_app("bobs").create_deployment("bobs-reviews", workflow_id="reviews")
    finally:
        bob.close()
    # a workflow deployment's token calls that deployment only
    other = app.create_deployment("reviews-other", workflow_id="reviews")
    response = served.post([{"text": "fine"}], deployment="reviews-other")
    assert response.status_code == 403 and response.json()["error"]["reason"] == "WRONG_DEPLOYMENT_TOKEN"
    _, token = other.create_token()
    assert served.post([{"text": "fine"}], deployment="reviews-other", token=token).status_code == 200
    assert served.post([{"text": "fine"}], deployment="reviews", token=token).status_code == 403


def test_an_image_row_reaches_an_image_embedder(served: Served, tmp_path: Path) -> None:
    """A workflow's image input: the row's data URI is the workflow input's image."""
    app = served.app
    config = write(
        tmp_path / "pictures.yaml", "pictures", node("picture", "image-embed", model_type_id="image-embedder")
    )
    workflow = app.create_workflow(config, display=False)
    managed = app.create_deployment("pictures", workflow_id="pictures")
    assert [(s.name, s.type, s.required) for s in managed.info.input_specs] == [("image", "image", True)]
    _, token = managed.create_token()
    photo = png("pictures", side=32)
    (expected,) = workflow.predict_by_bytes(photo, "image").results
    vector = Deployment(url=managed.url, token=token).predict(image=photo)["picture"]
    assert vector.shape == (len(expected.outputs[0].data.embeddings[0].vector),)
    assert np.array_equal(vector, np.asarray(expected.outputs[0].data.embeddings[0].vector, np.float32))


@contextlib.contextmanager
def running(user: User, runner_class: type[Runner], label: str) -> Iterator[str]:
    """A runner of `runner_class` on a thread, polling for `label`, while the block runs."""
    user.create_runner(label, labels=[label])
    runner = runner_class(label, base_url=user.base_url, pat=user._connection.settings.pat, num_parallel_polls=2)
    thread = threading.Thread(target=runner.start, daemon=True)
    thread.start()
    try:
        assert runner.wait_connected(10)
        yield label
    finally:
        runner.stop(drain=False)
        thread.join(10)


def test_a_runner_served_node_gets_the_row_and_names_its_outputs_by_node(served: Served, tmp_path: Path) -> None:
    """A workflow of a runner-served model of named features (tests/runner_models.py:Tabular): the
    row's features reach it, its several outputs come back as `<node_id>.<feature>`, and a row it
    fails on fails the call naming the row and the node, as for a model deployment."""
    app = served.app
    with running(served.user, Tabular, "tabular-wf") as label:
        app.create_model(
            "tabular",
            [label],
            input_specs=[
                {"name": "Size", "type": "numeric"},
                {"name": "Type", "type": "categorical", "categories": ["animal", "plant"]},
                {"name": "Sound", "type": "text"},
            ],
            output_specs=[
                {"name": "Score", "type": "numeric"},
                {"name": "Kind", "type": "categorical", "categories": ["cat", "dog"]},
                {"name": "Echo", "type": "text"},
            ],
        )
        app.create_workflow(write(tmp_path / "pets.yaml", "pets", node("pets", "tabular")), display=False)
        managed = app.create_deployment("pets-wf", workflow_id="pets")
        assert [s.name for s in managed.info.output_specs] == ["pets.Score", "pets.Kind", "pets.Echo"]
        _, token = managed.create_token()
        rows = [{"Size": 0.25, "Type": "animal", "Sound": "Miaow"}, {"Size": 2, "Type": "plant", "Sound": "Rustle"}]
        response = served.post(rows, deployment="pets-wf", token=token)
        assert response.status_code == 200, response.text
        assert response.json()["rows"] == [
            {"pets.Score": 5.5, "pets.Kind": {"cat": 0.9, "dog": 0.1}, "pets.Echo": "MIAOW"},
            {"pets.Score": 10.0, "pets.Kind": {"cat": 0.2, "dog": 0.8}, "pets.Echo": "RUSTLE"},
        ]
        crash = served.post([rows[0], {**rows[1], "Sound": "crash"}], deployment="pets-wf", token=token)
        assert crash.status_code == 502, crash.text
        error = crash.json()["error"]
        assert error["field"] == "rows[1]" and error["reason"] == "MODEL_FAILED"
        assert error["message"].startswith("workflow 'pets' failed on row 1: node 'pets' (model 'tabular') failed")
        refused = served.post([{**rows[0], "Size": -1}], deployment="pets-wf", token=token)
        assert refused.status_code == 400 and refused.json()["error"]["rows"][0]["row"] == 0
        assert "Size must not be negative" in refused.json()["error"]["message"]


def test_a_leaf_declaring_one_output_gives_it_though_its_runner_returns_more(served: Served, tmp_path: Path) -> None:
    """Tabular returns Score, Kind and Echo; a model of it declaring only Echo is a leaf of one
    output, named by its node: that output is Echo, not nothing."""
    app = served.app
    with running(served.user, Tabular, "tabular-one") as label:
        app.create_model(
            "tabular-one",
            [label],
            input_specs=[
                {"name": "Size", "type": "numeric"},
                {"name": "Type", "type": "categorical", "categories": ["animal", "plant"]},
                {"name": "Sound", "type": "text"},
            ],
            output_specs=[{"name": "Echo", "type": "text"}],
        )
        app.create_workflow(write(tmp_path / "one.yaml", "one", node("shout", "tabular-one")), display=False)
        managed = app.create_deployment("one-output", workflow_id="one")
        assert [s.name for s in managed.info.output_specs] == ["shout"]
        _, token = managed.create_token()
        response = served.post([{"Size": 1, "Type": "animal", "Sound": "Miaow"}], deployment="one-output", token=token)
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [{"shout": "MIAOW"}]


class Ragged(Runner):
    """An embedder whose two vectors differ in length: no array holds them."""

    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        output = v1.Output()
        output.data.embeddings.add(vector=[1.0, 2.0])
        output.data.embeddings.add(vector=[1.0, 2.0, 3.0])
        return output


def test_embeddings_no_array_holds_fail_the_row_as_the_nodes_fault(served: Served, tmp_path: Path) -> None:
    app = served.app
    with running(served.user, Ragged, "ragged-wf") as label:
        app.create_model("ragged", [label], input_fields=["text"], output_fields=["embeddings"])
        app.create_workflow(write(tmp_path / "ragged.yaml", "ragged", node("vectors", "ragged")), display=False)
        _, token = app.create_deployment("ragged", workflow_id="ragged").create_token()
        response = served.post([{"text": "hi"}], deployment="ragged", token=token)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["field"] == "rows[0]" and "node 'vectors' returned 'vectors'" in error["message"]


def test_the_pool_gives_one_owner_at_most_its_share_and_runs_every_task() -> None:
    pool = FairPool(workers=4, per_owner=2, name="test-pool")
    release = threading.Event()
    lock = threading.Lock()
    running: dict[str, int] = {"a": 0}
    most = [0]

    def blocked() -> Any:
        with lock:
            running["a"] += 1
            most[0] = max(most[0], running["a"])
        release.wait(30)
        with lock:
            running["a"] -= 1
        return "a"

    try:
        stuck = [pool.submit("a", blocked) for _ in range(20)]
        assert pool.submit("b", lambda: "b").result(timeout=30) == "b"  # b's task passes a's queue
        assert pool.submit("c", lambda: "c").result(timeout=30) == "c"
        assert most[0] <= 2 and not any(f.done() for f in stuck)
        release.set()
        assert [f.result(timeout=30) for f in stuck] == ["a"] * 20
        assert most[0] == 2
    finally:
        release.set()
        pool.close()
    with pytest.raises(Unavailable, match="stopping"):
        pool.submit("a", lambda: "a")


def test_owners_with_stuck_runs_leave_threads_for_an_owner_with_none() -> None:
    """Four owners' stuck runs at their cap (8 each) would fill all 32 threads: the pool keeps its
    reserve for an owner with nothing running, who is answered while they stay stuck."""
    workers, per_owner = workflow_deployments.DEFAULT_WORKERS, workflow_deployments.RUNS_PER_OWNER
    stuck_owners = [f"stuck-{i}" for i in range(workers // per_owner)]
    pool = FairPool(workers, per_owner, name="test-reserve")
    release = threading.Event()
    started = threading.Condition()
    running = [0]

    def blocked() -> Any:
        with started:
            running[0] += 1
            started.notify_all()
        release.wait(60)
        return "stuck"

    try:
        stuck = [pool.submit(owner, blocked) for owner in stuck_owners for _ in range(per_owner + 2)]
        shared = workers - max(1, workers // 8)  # what owners already running may hold together
        with started:
            assert started.wait_for(lambda: running[0] >= shared, timeout=30)
        assert pool.submit("newcomer", lambda: "answered").result(timeout=30) == "answered"
        assert pool.submit("another", lambda: "answered").result(timeout=30) == "answered"
        assert running[0] == shared and not any(f.done() for f in stuck)
        release.set()
        assert [f.result(timeout=30) for f in stuck] == ["stuck"] * len(stuck)
    finally:
        release.set()
        pool.close()


def test_a_task_ending_starts_both_tasks_it_lets_run() -> None:
    """x's one run ends: that frees a spare thread (taken by a's queued run, first in turn) and
    leaves x with nothing running, so x's next run may take the reserve: an idle thread takes it
    while a's runs stay stuck."""
    pool = FairPool(workers=4, per_owner=4, name="test-wake", reserve=1)
    stuck, x_first = threading.Event(), threading.Event()
    started = threading.Condition()
    running: list[str] = []

    def blocked(name: str, until: threading.Event) -> Any:
        with started:
            running.append(name)
            started.notify_all()
        until.wait(60)
        return name

    try:
        a = [pool.submit("a", blocked, "a", stuck) for _ in range(2)]
        with started:
            assert started.wait_for(lambda: len(running) == 2, timeout=30)
        first = pool.submit("x", blocked, "x", x_first)
        with started:
            assert started.wait_for(lambda: len(running) == 3, timeout=30)
        a.append(pool.submit("a", blocked, "a", stuck))  # no spare thread: waits, a thread idles
        second = pool.submit("x", lambda: "x again")
        x_first.set()
        assert first.result(timeout=30) == "x"
        assert second.result(timeout=30) == "x again"
        assert not any(f.done() for f in a)
    finally:
        stuck.set()
        x_first.set()
        pool.close()
    assert [f.result(timeout=30) for f in a] == ["a"] * 3


def test_one_owners_stuck_runs_leave_threads_for_the_other_owners(served: Served, tmp_path: Path) -> None:
    """A run holds its thread while its node waits for a runner (here one that is not there yet,
    up to the call's deadline): another owner's deployment answers meanwhile, though the stuck
    call queued more runs than the pool has threads."""
    created = served.admin.create_user("mallory")
    mallory = User(base_url=f"grpc://{served.server.address}", pat=created.pat.secret, user_id=created.user.id)
    specs = [
        {"name": "Size", "type": "numeric"},
        {"name": "Type", "type": "categorical", "categories": ["animal", "plant"]},
        {"name": "Sound", "type": "text"},
    ]
    try:
        app = mallory.create_app("stuck", base_workflow="Empty")
        outputs = [
            {"name": "Score", "type": "numeric"},
            {"name": "Kind", "type": "categorical", "categories": ["cat", "dog"]},
            {"name": "Echo", "type": "text"},
        ]
        app.create_model("echo", ["stuck-echo"], input_specs=specs, output_specs=outputs)
        app.create_workflow(write(tmp_path / "stuck.yaml", "stuck", node("echo", "echo")), display=False)
        app.create_deployment("stuck", workflow_id="stuck")
        owner = Principal(user_id=created.user.id, is_admin=False, token_id="test")
        rows = [{"Size": 1, "Type": "animal", "Sound": "hi"}] * (MAX_BATCH * 9)  # more runs than one owner may hold
        stuck = served.server.engine.deployments.submit_json(owner, "stuck", rows, deadline_seconds=120)
        stuck_done = threading.Event()
        stuck.add_done_callback(stuck_done.set)
        response = served.post([{"text": TEXTS[0]}])
        assert response.status_code == 200, response.text
        assert workflow_deployments.RUNS_PER_OWNER < 9 and not stuck_done.is_set()  # answered while it waits
        with running(mallory, Tabular, "stuck-echo"):  # the runner comes: the stuck call ends
            assert stuck_done.wait(60)
            assert [row[2].text for row in stuck.result()] == ["HI"] * len(rows)
    finally:
        mallory.close()


def test_a_detectors_regions_are_an_array_of_boxes(served: Served, tmp_path: Path) -> None:
    """A leaf that makes regions (tests/test_workflow_integration.py:Vision's detector) answers
    its boxes as an array, one row of top, left, bottom, right per region."""
    app = served.app
    with running(served.user, Vision, "vision-wf") as label:
        app.create_model("detect", [label], input_fields=["image"], output_fields=["regions"], params={"op": "detect"})
        app.create_workflow(write(tmp_path / "boxes.yaml", "boxes", node("find", "detect")), display=False)
        managed = app.create_deployment("boxes", workflow_id="boxes")
        assert [(s.name, s.type, list(s.shape)) for s in managed.info.output_specs] == [("find", "array", [-1, 4])]
        _, token = managed.create_token()
        boxes = Deployment(url=managed.url, token=token).predict(image=png("boxes", side=16))["find"]
    assert boxes.dtype == np.float32 and boxes.tolist() == np.asarray(list(BOXES.values()), np.float32).tolist()


def test_a_server_run_model_is_deployed_alone_with_the_specs_it_implies(served: Served) -> None:
    """Built-in and trained models declare no feature specs: deployed alone, a model gets its
    inputs from what it reads and its outputs from what it makes (as a workflow's root and leaf),
    a row's text reaches it as the input's text, and it answers what the same nodes answer inside
    the workflow (the embedder's vector; the trained classifier's concepts)."""
    embedder = served.app.create_deployment("text-embed-alone", model_id="text-embed")
    info = embedder.info
    assert [(s.name, s.type, s.required) for s in info.input_specs] == [("text", "text", True)]
    assert [(s.name, s.type, s.dtype) for s in info.output_specs] == [("embedding", "array", "float32")]
    classifier = served.app.create_deployment(
        "sentiment-alone", model_id="sentiment", version_id=served.classifier_version
    )
    assert [(s.name, s.type) for s in classifier.info.output_specs] == [("concepts", "categorical")]
    assert list(classifier.info.output_specs[0].categories) == ["positive", "negative"]

    expected = _workflow_answers(served.workflow, TEXTS[:3])
    _, token = embedder.create_token()
    answer = Deployment(url=f"{served.base}/v1/deployments/text-embed-alone", token=token)
    for row, want in zip(answer.predict_many([{"text": t} for t in TEXTS[:3]]), expected, strict=True):
        assert np.allclose(row["embedding"], want["vector"], atol=1e-5)
    # the Open Inference Protocol naming the deployment takes the same path
    text = {"name": "text", "datatype": "BYTES", "shape": [1], "data": [TEXTS[0]]}
    reply = httpx.post(
        f"{served.base}/v2/models/text-embed-alone/infer",
        json={"inputs": [text]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    (output,) = reply.json()["outputs"]
    assert output["name"] == "embedding" and np.allclose(output["data"], expected[0]["vector"], atol=1e-5)

    _, token = classifier.create_token()
    response = served.post([{"text": t} for t in TEXTS[:3]], deployment="sentiment-alone", token=token)
    assert response.status_code == 200, response.text
    workflow = served.workflow.predict([v1.Input(data=v1.Data(text=v1.Text(raw=t))) for t in TEXTS[:3]])
    for row, result in zip(response.json()["rows"], workflow.results, strict=True):
        (classify,) = [o for o in result.outputs if o.id == "classify"]
        want = {c.id: c.value for c in classify.data.concepts}
        assert set(row["concepts"]) == set(want)
        assert all(abs(row["concepts"][c] - want[c]) < 1e-5 for c in want)
    # the classifier reads text or images (either may come: neither is required); a row with
    # neither is refused by the model, naming the row
    assert [(s.name, s.required) for s in classifier.info.input_specs] == [("text", False), ("image", False)]
    refused = served.post([{"text": TEXTS[0]}, {}], deployment="sentiment-alone", token=token)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["rows"][0]["row"] == 1 and "reads text" in refused.json()["error"]["message"]
    # the embedder needs its text: a row without it is refused before the model runs, naming it
    _, token = embedder.create_token()
    refused = served.post([{}], deployment="text-embed-alone", token=token)
    assert refused.status_code == 400 and refused.json()["error"]["rows"][0]["feature"] == "text", refused.text


def test_a_pass_through_leaf_outputs_what_reaches_it(served: Served, tmp_path: Path) -> None:
    """random-sample passes its input on: after the classifier its output is the classifier's
    concepts (the same categories), and an input it leaves out answers no concepts."""
    config = write(
        tmp_path / "gates.yaml",
        "gates",
        node("embed", "text-embed", model_type_id="text-embedder"),
        node("classify", "sentiment", "embed"),
        node(
            "none",
            "keep-none",
            "classify",
            model_type_id="random-sample",
            output_info={"params": {"keep_fraction": 0.0}},
        ),
        node(
            "all", "keep-all", "classify", model_type_id="random-sample", output_info={"params": {"keep_fraction": 1.0}}
        ),
    )
    served.app.create_workflow(config, display=False)
    managed = served.app.create_deployment("gates", workflow_id="gates")
    specs = managed.info.output_specs
    assert [(s.name, s.type, list(s.categories)) for s in specs] == [
        ("none", "categorical", ["positive", "negative"]),
        ("all", "categorical", ["positive", "negative"]),
    ]
    _, token = managed.create_token()
    (row,) = served.post([{"text": TEXTS[0]}], deployment="gates", token=token).json()["rows"]
    assert row["none"] == {} and max(row["all"], key=row["all"].get) == CLEAR[TEXTS[0]]
    assert sum(row["all"].values()) == pytest.approx(1.0, abs=1e-5)


def test_deleting_an_app_deprecates_the_deployed_workflows_elsewhere_pinning_its_models(
    served: Served, tmp_path: Path
) -> None:
    """A workflow of app B pins a model of app A; deleting A: B's deployment of it answers 409
    (deprecated, naming the node and A), no more a NOT_FOUND when run; A's own deployments are
    gone with it (404)."""
    source = served.user.create_app("pinned-source", base_workflow="Empty")
    embed = node("embed", "text-embed", model_type_id="text-embedder")
    source.create_workflow(write(tmp_path / "source.yaml", "source", embed), display=False)  # creates the model
    source.create_deployment("source-embed", model_id="text-embed")
    using = served.user.create_app("pinned-user", base_workflow="Empty")
    pinning = node("embed", "text-embed", app_id=source.id)
    using.create_workflow(write(tmp_path / "pinning.yaml", "pinning", pinning), display=False)
    _, token = using.create_deployment("pinning", workflow_id="pinning").create_token()
    pat = served.user._connection.settings.pat
    assert served.post([{"text": "fine"}], deployment="pinning", token=token).status_code == 200
    assert served.post([{"text": "fine"}], deployment="source-embed", token=pat).status_code == 200

    served.user.delete_app(source.id)
    response = served.post([{"text": "fine"}], deployment="pinning", token=token)
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["reason"] == "WORKFLOW_VERSION_DEPRECATED"
    assert "node 'embed': its model's app 'pinned-source' was deleted" in error["message"]
    gone = served.post([{"text": "fine"}], deployment="source-embed", token=pat)
    assert gone.status_code == 404 and gone.json()["error"]["reason"] == "DEPLOYMENT_NOT_FOUND", gone.text


def test_deprecated_and_deleted_workflows_answer_clearly(served: Served, tmp_path: Path) -> None:
    """Last in this file: it deletes what the others use."""
    app = served.app
    copy = write(tmp_path / "copy.yaml", "copy", node("embed", "text-embed", model_type_id="text-embedder"))
    app.create_workflow(copy, display=False)
    _, token = app.create_deployment("copy", workflow_id="copy").create_token()
    app.delete_workflow("copy")
    response = served.post([{"text": "fine"}], deployment="copy", token=token)
    assert response.status_code == 404, response.text
    assert "its workflow was deleted" in response.json()["error"]["message"]

    app.model("sentiment").delete_version(served.classifier_version)  # deprecates the versions pinning it
    response = served.post([{"text": "fine"}])
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["status"] == "FAILED_PRECONDITION" and error["reason"] == "WORKFLOW_VERSION_DEPRECATED"
    assert "deployment 'reviews': version" in error["message"] and "node 'classify'" in error["message"]
    # the Open Inference Protocol says it is not ready (and no version to run), and its infer says why
    ready = httpx.get(f"{served.base}/v2/models/reviews/ready", headers={"Authorization": f"Bearer {served.token}"})
    assert ready.json() == {"name": "reviews", "ready": False}


def test_specs_come_from_the_root_and_leaf_models_declarations(alice: User, unique: str, tmp_path: Path) -> None:
    """Runner-served models (no runner needed to deploy): a root's declared input_specs are the
    deployment's inputs; a leaf with one output feature gives it as `<node_id>`, with several as
    `<node_id>.<feature>`; a leaf's concepts take its version's concepts as categories."""
    app = alice.create_app(f"wfspecs-{unique}", base_workflow="Empty")
    size = {"name": "Size", "type": "numeric"}
    app.create_model("scale", ["x"], input_specs=[size], output_specs=[{"name": "Scaled", "type": "numeric"}])
    app.create_model(
        "stats",
        ["x"],
        input_specs=[size, {"name": "Note", "type": "text", "required": False}],
        output_specs=[{"name": "Mean", "type": "numeric"}, {"name": "Grid", "type": "array", "dtype": "int64"}],
    )
    app.create_model("kinds", ["x"], input_fields=["image"], output_fields=["concepts"], concepts=["cat", "dog"])
    app.create_model("vague", ["x"], input_fields=["image"], output_fields=["concepts"])
    config = write(
        tmp_path / "tabular.yaml",
        "tabular",
        node("scale", "scale"),
        node("stats", "stats"),
        node("kinds", "kinds"),
    )
    app.create_workflow(config, display=False)
    info = app.create_deployment(f"tabular-{unique}", workflow_id="tabular").info
    assert [(s.name, s.type, s.required) for s in info.input_specs] == [
        ("Size", "numeric", True),
        ("Note", "text", False),
        ("image", "image", True),  # what the classifier reads, as it declares no input_specs
    ]
    assert [(s.name, s.type) for s in info.output_specs] == [
        ("scale", "numeric"),
        ("stats.Mean", "numeric"),
        ("stats.Grid", "array"),
        ("kinds", "categorical"),
    ]
    assert list(info.output_specs[3].categories) == ["cat", "dog"]
    # concepts nobody names cannot become a categorical feature: the error says what to give
    app.create_workflow(write(tmp_path / "vague.yaml", "vague", node("vague", "vague")), display=False)
    with pytest.raises(errors.InvalidArgument, match=r"node 'vague' \(model 'vague'\) outputs concepts.*output_specs"):
        app.create_deployment(f"vague-{unique}", workflow_id="vague")
    given = {"output": [{"name": "vague", "type": "categorical", "categories": ["a", "b"]}]}
    assert app.create_deployment(f"vague-{unique}", workflow_id="vague", feature_specs=given).info.output_specs
