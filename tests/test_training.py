"""Training (#11): trainable model types with declared params, training jobs run by the server
(states, progress, logs, failures with their reasons, resumed after a restart), trained
versions served with no runner, cluster assignments, and model.tar exports."""

from __future__ import annotations

import csv
import hashlib
import struct
import tarfile
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

import pellucid.errors as errors
from pellucid.api import v1
from pellucid.client.app import App
from pellucid.client.input import Inputs
from pellucid.client.model import Model
from pellucid.client.user import User
from pellucid.server.engine.media import encode_png
from pellucid.server.runtime import PellucidServer, ServerSettings
from pellucid.server.storage import open_metadata_store
from pellucid.trained import KMeans, SoftmaxClassifier, load_weights
from tests.conftest import running_server
from tests.media_samples import png
from tests.runner_models import ColourEmbedder

ROOT = Path(__file__).resolve().parent.parent
REVIEWS = ROOT / "examples" / "data" / "reviews.csv"

TOPICS = {
    "cats": [
        "A kitten is asleep on the warm windowsill",
        "The cat chased a mouse across the kitchen floor",
        "My tabby purrs whenever I scratch behind her ears",
        "Kittens love to play with balls of yarn",
    ],
    "taxes": [
        "File your income tax return before the April deadline",
        "The accountant found deductions that lowered our tax bill",
        "Property taxes rose again in the county this year",
        "Capital gains are taxed at a different rate than wages",
    ],
}


def _reviews() -> list[tuple[str, str]]:
    with REVIEWS.open(encoding="utf-8") as handle:
        return [(row["input"], row["concepts"]) for row in csv.DictReader(handle)]


def _upload_texts(app: App, dataset_id: str, rows: list[tuple[str, str]], first: int = 0) -> None:
    app.create_dataset(dataset_id, exist_ok=True)
    inputs = app.inputs()
    messages = [
        Inputs.get_text_input(f"{dataset_id}-{i}", text, dataset_id=dataset_id, labels=[label] if label else None)
        for i, (text, label) in enumerate(rows, start=first)
    ]
    result = inputs.upload_inputs(messages, show_log=False)
    assert not result.failed, result.failed


def _trained(model: Model, version_id: str) -> dict:
    status = model.wait_for_training(version_id, timeout=120)
    assert status["state"] == "trained", status
    return status


def _top(response: v1.PostModelOutputsResponse) -> str:
    return str(response.outputs[0].data.concepts[0].id)


@pytest.fixture
def app(alice: User, unique: str) -> App:
    return alice.create_app(f"train-{unique}", base_workflow="Empty")


def test_trainable_types_declare_their_params_and_update_params_checks_them(app: App, tmp_path: Path) -> None:
    types = {t["id"]: t for t in app.list_trainable_model_types()}
    assert {"embedding-classifier", "clusterer"} <= set(types)
    for model_type in types.values():
        names = {p["name"] for p in model_type["params"]}
        assert {"dataset_id", "dataset_version_id", "concepts", "embedder", "seed"} <= names
        assert all(p["help"] and p["kind"] for p in model_type["params"])
    epochs = next(p for p in types["embedding-classifier"]["params"] if p["name"] == "epochs")
    assert epochs["kind"] == "int" and epochs["default"] == 200 and epochs["minimum"] == 1
    assert "num_clusters" in {p["name"] for p in types["clusterer"]["params"]}
    first = app._call(v1.TrainingServiceStub, "ListTrainableModelTypes", v1.ListTrainableModelTypesRequest(page_size=1))
    rest = app._call(
        v1.TrainingServiceStub,
        "ListTrainableModelTypes",
        v1.ListTrainableModelTypesRequest(page_size=100, page_token=first.next_page_token),
    )
    assert [t.id for t in [*first.model_types, *rest.model_types]] == sorted(types) and not rest.next_page_token

    model = app.create_model("sentiment", model_type_id="embedding-classifier")
    assert model.list_training_templates() == ["logistic-regression", "mlp"]
    params_file = tmp_path / "params.yaml"
    params = model.get_params(save_to=str(params_file))
    assert params["epochs"] == 200 and params["hidden_units"] == 0 and params["concepts"] == []
    assert params["embedder"] == "builtin" and params["dataset_id"] == ""
    assert yaml.safe_load(params_file.read_text()) == params  # every param, with its default
    assert "# units of one ReLU hidden layer" in params_file.read_text()
    assert model.get_params(template="mlp", save_to="")["hidden_units"] == 128

    updated = model.update_params(dataset_id="reviews", concepts=["positive", "negative"], epochs=50)
    assert updated["epochs"] == 50 and updated["concepts"] == ["positive", "negative"]
    assert model.training_params == updated
    with pytest.raises(errors.InvalidArgument) as unknown:
        model.update_params(batch_size=8)
    assert "'batch_size'" in unknown.value.message and "dataset_id" in unknown.value.message
    assert "epochs" in unknown.value.message  # the error lists the known keys
    with pytest.raises(errors.InvalidArgument, match=r"out of range: use 1 to 100000"):
        model.update_params(epochs=0)
    with pytest.raises(errors.InvalidArgument, match="list of strings"):
        model.update_params(concepts="positive")
    with pytest.raises(errors.InvalidArgument, match="use one of auto, text, image"):
        model.update_params(input_type="pdf")
    assert model.training_params["epochs"] == 50  # a refused update changes nothing
    info = model.get_param_info("learning_rate")
    assert info["kind"] == "float" and info["default"] == 0.05 and info["help"]
    with pytest.raises(errors.UserError, match="known ones are"):
        model.get_param_info("nope")

    # a model the server does not train says so, for every training call
    plain = app.create_model("runner-served", runner_labels=["gpu"])
    for call in (plain.list_training_templates, lambda: plain.get_params(save_to=""), plain.train):
        with pytest.raises(errors.FailedPrecondition, match=r"served by runners.*trainable type"):
            call()


def test_an_embedding_classifier_trained_on_the_reviews_predicts_with_no_runner(app: App, tmp_path: Path) -> None:
    _upload_texts(app, "reviews", _reviews())
    model = app.create_model("sentiment", model_type_id="embedding-classifier")
    with pytest.raises(errors.FailedPrecondition, match=r"not made by training.*Model.train"):
        model.predict_by_bytes(b"Great kettle", "text")  # the version create_model made has no weights
    with pytest.raises(errors.InvalidArgument, match=r"params.dataset_id is required"):
        model.train()
    model.update_params(dataset_id="reviews", concepts=["positive", "negative"], validation_fraction=0.0)
    started = time.monotonic()
    version_id = model.train()
    assert time.monotonic() - started < 5  # answers at once
    assert model.training_status(version_id)["state"] in ("queued", "training", "trained")
    status = _trained(model, version_id)
    assert status["progress"] == 1.0 and status["attempts"] == 1
    metrics = status["metrics"]
    labelled = [label for _, label in _reviews() if label]
    assert metrics["examples"] == len(labelled) and metrics["train_accuracy"] == 1.0
    assert metrics["concept_counts"] == {c: labelled.count(c) for c in ("positive", "negative")}
    assert metrics["dimension"] == 384 and metrics["skipped_inputs"] == {"not labelled with a wanted concept": 1}

    # served in-process: this server has no runner at all
    good = model.predict_by_bytes(b"Works perfectly, I love it and would recommend it", "text")
    bad = model.predict_by_bytes(b"Broke on day two, total waste of money, refund refused", "text")
    assert (_top(good), _top(bad)) == ("positive", "negative")
    scores = {c.id: c.value for c in good.outputs[0].data.concepts}
    assert set(scores) == {"positive", "negative"} and abs(sum(scores.values()) - 1.0) < 1e-4
    trimmed = model.predict_by_bytes(b"Lovely", "text", output_config={"max_concepts": 1})
    assert len(trimmed.outputs[0].data.concepts) == 1

    with_logs = model.training_status(version_id, training_logs=True)
    logs = Path(with_logs["logs_file"]).read_text()
    Path(with_logs["logs_file"]).unlink()
    assert f"{len(_reviews())} inputs" in logs and "epoch 1/200" in logs and logs.rstrip().endswith("trained")

    # export: the weights and config re-create the same scores without a server
    path = model.export(str(tmp_path / "export"), version_id=version_id)
    with tarfile.open(path) as tar:
        assert sorted(tar.getnames()) == ["config.yaml", "training.log", "weights.npz"]
        config = yaml.safe_load(tar.extractfile("config.yaml").read())  # type: ignore[union-attr]
        weights = tar.extractfile("weights.npz").read()  # type: ignore[union-attr]
    assert config["model"]["model_type_id"] == "embedding-classifier" and config["version"]["id"] == version_id
    assert config["version"]["params"]["dataset_id"] == "reviews" and config["version"]["params"]["epochs"] == 200
    assert config["training"]["metrics"]["examples"] == len(labelled)
    classifier = load_weights(weights)
    assert isinstance(classifier, SoftmaxClassifier) and classifier.concept_ids == ["positive", "negative"]
    vector = np.random.default_rng(3).standard_normal(384).astype(np.float32)
    served = model.predict([v1.Input(data=v1.Data(embeddings=[v1.Embedding(vector=vector.tolist())]))])
    local = classifier.probabilities(vector[None, :])[0]
    by_id = {c.id: c.value for c in served.outputs[0].data.concepts}
    assert abs(by_id["positive"] - local[0]) < 1e-5 and abs(by_id["negative"] - local[1]) < 1e-5
    # re-created from the exported config: a model trained again with those params scores alike
    again = app.create_model("sentiment-again", model_type_id="embedding-classifier")
    again.update_params(**config["version"]["params"])
    _trained(again, again.train())
    assert _top(again.predict_by_bytes(b"Broke on day two, total waste of money", "text")) == "negative"


def test_a_clusterer_finds_clear_clusters_and_keeps_each_inputs_cluster(app: App, tmp_path: Path) -> None:
    rows = [(text, topic) for topic, texts in TOPICS.items() for text in texts]
    _upload_texts(app, "topics", rows)
    frozen = app.dataset("topics").create_version(id="eight")
    _upload_texts(app, "topics", [("Stock markets fell sharply this morning", ""), ("The orchestra tuned up", "")], 8)
    model = app.create_model("topics", model_type_id="clusterer")
    model.update_params(dataset_id="topics", dataset_version_id="nine")
    with pytest.raises(errors.NotFound, match="version 'nine' of dataset 'topics' not found"):
        model.train()
    model.update_params(dataset_version_id=frozen.id, num_clusters=2)  # the 8 inputs it froze, not the 2 added since
    version_id = model.train()
    status = _trained(model, version_id)
    assert status["metrics"]["cluster_sizes"] == [4, 4]
    assignments = {a.input_id: a.cluster for a in model.list_cluster_assignments(version_id)}
    assert len(assignments) == 8
    cats = {assignments[f"topics-{i}"] for i in range(4)}
    taxes = {assignments[f"topics-{i}"] for i in range(4, 8)}
    assert len(cats) == 1 and len(taxes) == 1 and cats != taxes
    only = list(model.list_cluster_assignments(version_id, input_ids=["topics-5"]))
    assert [(a.input_id, a.concept_id) for a in only] == [("topics-5", f"cluster-{taxes.pop()}")]
    # a predict by id alone answers the stored cluster; one by content, the nearest
    stored = model.predict([v1.Input(id="topics-0")])
    assert stored.outputs[0].data.concepts[0].id == f"cluster-{cats.pop()}"
    assert stored.outputs[0].data.metadata["from_training"] is True
    new = model.predict_by_bytes(b"The kitten napped beside the cat", "text")
    assert new.outputs[0].data.concepts[0].id == stored.outputs[0].data.concepts[0].id
    unknown = model.predict([v1.Input(id="never-trained-on")])
    assert unknown.outputs[0].status.code == v1.Status.NOT_FOUND
    with tarfile.open(model.export(str(tmp_path), version_id)) as tar:
        assert "assignments.csv" in tar.getnames()
        table = tar.extractfile("assignments.csv").read().decode()  # type: ignore[union-attr]
        assert isinstance(load_weights(tar.extractfile("weights.npz").read()), KMeans)  # type: ignore[union-attr]
    assert table.startswith("input_id,cluster,distance\n") and len(table.splitlines()) == 9


def test_failures_end_with_their_reason(app: App) -> None:
    app.create_dataset("empty")
    _upload_texts(app, "one-concept", [("Nice", "positive"), ("Great", "positive"), ("Odd", "")])
    _upload_texts(app, "unlabelled", [("Nothing to see here", "")])
    app.inputs().upload_inputs(
        [
            Inputs.get_input_from_bytes(
                "an-image", image_bytes=png("red"), dataset_id="one-concept", labels=["negative"]
            )
        ],
        show_log=False,
    )
    model = app.create_model("classifier", model_type_id="embedding-classifier")
    model.update_params(dataset_id="missing")
    with pytest.raises(errors.NotFound, match="dataset 'missing' not found"):
        model.train()

    def outcome(**params: object) -> dict:
        model.update_params(**params)
        version_id = model.train()
        status = model.wait_for_training(version_id, timeout=120)
        return {**status, "version_id": version_id}

    empty = outcome(dataset_id="empty", input_type="auto")
    assert empty["state"] == "no_data" and "holds no inputs" in empty["reason"]
    unlabelled = outcome(dataset_id="unlabelled")
    assert unlabelled["state"] == "no_data" and "labelled with any concept" in unlabelled["reason"]
    mixed = outcome(dataset_id="one-concept")
    assert mixed["state"] == "failed" and "set input_type" in mixed["reason"]
    single = outcome(dataset_id="one-concept", input_type="text")
    assert single["state"] == "no_data" and "at least two concepts" in single["reason"]
    with pytest.raises(errors.FailedPrecondition, match="found no data: a classifier needs"):
        model.predict_by_bytes(b"x", "text")  # the latest version is the one that found no data
    with pytest.raises(errors.FailedPrecondition, match=r"failed: .*set input_type"):
        Model(
            model_id="classifier",
            app_id=app.id,
            user_id=app.user_id,
            model_version={"id": mixed["version_id"]},
            _connection=app._connection,
        ).predict_by_bytes(b"x", "text")
    with pytest.raises(errors.FailedPrecondition, match=r"served by runners.*live with the runner"):
        app.create_model("detector", runner_labels=["gpu"]).export()
    with pytest.raises(errors.FailedPrecondition, match="found no data"):
        model.export()


def test_a_job_left_running_by_a_crashed_server_is_trained_after_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = ServerSettings(
        data_dir=data_dir, port=0, training_workers=0, training_max_seconds=120.0, algorithm_call_retention_seconds=7200
    )
    server = PellucidServer(settings)
    server.start()
    try:
        assert (
            server.engine is not None and server.engine.training.max_seconds == 120.0
        )  # the settings reach the engine
        assert server.engine.algorithms.call_retention_seconds == 7200
        credentials = server.data_dir.read_credentials()
        assert credentials is not None
        user = User(base_url=f"grpc://{server.address}", pat=credentials.pat)
        app = user.create_app("resume", base_workflow="Empty")
        _upload_texts(app, "reviews", _reviews())
        model = app.create_model("sentiment", model_type_id="embedding-classifier")
        model.update_params(dataset_id="reviews", validation_fraction=0.0)
        version_id = model.train()
        assert model.training_status(version_id)["state"] == "queued"  # no worker runs here
        user_id = app.user_id
    finally:
        server.stop(grace=0.5)
    # the job is claimed by a worker that then dies with its server: a claim far from lapsing
    store = open_metadata_store(f"sqlite://{data_dir / 'metadata.sqlite3'}")
    try:
        claimed = store.claim_training_job(time.time(), 3600.0, "crashed-server-0")
        assert claimed is not None and claimed.version_id == version_id
    finally:
        store.close()
    server = PellucidServer(ServerSettings(data_dir=data_dir, port=0))
    server.start()
    try:
        user = User(base_url=f"grpc://{server.address}", pat=credentials.pat)
        model = user.app("resume").model("sentiment")
        status = _trained(model, version_id)
        assert status["attempts"] == 2 and model._user_id in ("", user_id)
        assert _top(model.predict_by_bytes(b"It broke after a week, awful", "text")) == "negative"
    finally:
        server.stop(grace=0.5)


def test_training_with_the_metadata_in_postgresql(tmp_path: Path, _postgres_session: None) -> None:
    for running in running_server(tmp_path / "pg-data", "postgresql"):
        user = running.client(running.admin_pat)
        app = user.create_app("pg-train", base_workflow="Empty")
        _upload_texts(app, "reviews", _reviews())
        model = app.create_model("sentiment", model_type_id="embedding-classifier")
        model.update_params(dataset_id="reviews", concepts=["positive", "negative"])
        status = _trained(model, model.train())
        labelled = [label for _, label in _reviews() if label]
        assert status["metrics"]["train_examples"] + status["metrics"]["validation_examples"] == len(labelled)
        assert _top(model.predict_by_bytes(b"Stopped working, support never answered", "text")) == "negative"


@pytest.fixture
def colour_runner(alice: User, unique: str) -> Iterator[ColourEmbedder]:
    alice.create_runner(f"colour-{unique}", labels=[f"colour-{unique}"])
    runner = ColourEmbedder(f"colour-{unique}", base_url=alice.base_url, pat=alice._connection.settings.pat)
    thread = threading.Thread(target=runner.start, daemon=True)
    thread.start()
    assert runner.wait_connected(10)
    yield runner
    runner.stop(drain=False)
    thread.join(10)


def broken_png() -> bytes:
    """A PNG whose structure is sound (ingestion takes it) but whose pixels do not decode."""
    good = png("broken")
    garbage = hashlib.sha256(b"not zlib").digest() * 4
    idat = struct.pack(">I", len(garbage)) + b"IDAT" + garbage + struct.pack(">I", zlib.crc32(b"IDAT" + garbage))
    return good[:33] + idat + good[-12:]


def _solid_png(rgb: tuple[int, int, int], noise: int) -> bytes:
    jitter = hashlib.shake_128(str(noise).encode()).digest(16 * 16 * 3)
    return encode_png(16, 16, bytes(max(0, min(255, rgb[i % 3] + jitter[i] % 24 - 12)) for i in range(16 * 16 * 3)))


def test_a_classifier_over_the_embeddings_of_a_model_of_the_app(
    app: App, unique: str, colour_runner: ColourEmbedder
) -> None:
    """The embedder param names a runner-served embedding model: the job embeds the images through
    it (the app stores no vectors), and so does every predict of the trained version."""
    app.create_model("colour", runner_labels=[f"colour-{unique}"], input_fields=["image"])
    app.create_dataset("swatches")
    images = [
        Inputs.get_input_from_bytes(f"{name}-{i}", image_bytes=_solid_png(rgb, i), dataset_id="swatches", labels=[name])
        for name, rgb in (("red", (210, 30, 30)), ("blue", (20, 40, 220)))
        for i in range(4)
    ]
    images.append(Inputs.get_input_from_bytes("odd", image_bytes=broken_png(), dataset_id="swatches", labels=["red"]))
    assert not app.inputs().upload_inputs(images, show_log=False).failed
    model = app.create_model("swatch-classifier", model_type_id="embedding-classifier")
    model.update_params(dataset_id="swatches", embedder="colour", validation_fraction=0.0)
    status = _trained(model, model.train())
    assert status["metrics"]["dimension"] == 12 and status["metrics"]["embedder"] == "model:colour"
    # an image whose pixels the colour model cannot decode is left out, with its reason
    assert status["metrics"]["examples"] == 8 and status["metrics"]["skipped_inputs"] == {"could not be embedded": 1}
    logs_file = Path(model.training_status(training_logs=True)["logs_file"])
    assert "odd: model 'colour'" in logs_file.read_text()
    logs_file.unlink()
    assert _top(model.predict_by_bytes(_solid_png((200, 25, 40), 99), "image")) == "red"
    assert _top(model.predict_by_bytes(_solid_png((30, 30, 200), 98), "image")) == "blue"
    text = model.predict([Inputs.get_text_input("t", "a text")])
    assert text.outputs[0].status.code == v1.Status.FAILED_PRECONDITION  # the colour model reads images only


def test_an_embedder_model_that_returns_no_embeddings_fails_the_job_saying_why(app: App) -> None:
    rows = [(text, topic) for topic, texts in TOPICS.items() for text in texts]
    _upload_texts(app, "topics", rows)
    classifier = app.create_model("classifier", model_type_id="embedding-classifier")
    classifier.update_params(dataset_id="topics", validation_fraction=0.0)
    _trained(classifier, classifier.train())
    model = app.create_model("on-concepts", model_type_id="embedding-classifier")
    model.update_params(dataset_id="topics", embedder="classifier", validation_fraction=0.0)  # makes concepts
    status = model.wait_for_training(model.train(), timeout=120)
    assert status["state"] == "failed", status
    assert "could be embedded (the first, topics-0: model 'classifier' returned no embedding" in status["reason"]
