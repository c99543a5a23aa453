"""Workflows across the parts of #11 at once, through the SDK and a running server: runner-served
models with the built-in operators between them (image-crop, concept-thresholder, text-embedder),
and a classifier the server trained, on a real photo and the demo's labelled reviews."""

from __future__ import annotations

import csv
import importlib.util
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from google.protobuf import json_format

import pellucid.errors as errors
from pellucid.api import v1
from pellucid.client.app import App
from pellucid.client.input import Inputs
from pellucid.client.runner import Runner
from pellucid.client.user import User
from pellucid.client.workflow import Workflow

ROOT = Path(__file__).resolve().parent.parent
REVIEWS = ROOT / "examples" / "data" / "reviews.csv"
SKIMAGE_DATA = Path(next(iter(importlib.util.find_spec("skimage").submodule_search_locations))) / "data"  # type: ignore[union-attr]

# what the detector finds in any image: quarters of a 4 x 4 grid (top, left, bottom, right)
BOXES = {
    "sky": (0.0, 0.0, 0.25, 0.25),
    "shade": (0.25, 0.25, 0.5, 0.5),
    "suit": (0.25, 0.5, 0.5, 0.75),
    "corner": (0.75, 0.75, 1.0, 1.0),
}


def rgb(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def brightness(pixels: np.ndarray) -> tuple[str, float]:
    """The class of an image by its mean brightness, and how sure (the distance from the class edges)."""
    mean = float(pixels.mean()) / 255
    label = "dark" if mean < 0.4 else "bright" if mean >= 0.6 else "mid"
    return label, 1.0 if label != "mid" else 0.5


class Vision(Runner):
    """A detector (fixed boxes, scored) and a classifier of an image's brightness."""

    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        output = v1.Output()
        pixels = rgb(input.data.image.base64)  # anything but an image raises: that input fails alone
        if output_info.params["op"] == "detect":
            for name, (top, left, bottom, right) in BOXES.items():
                region = output.data.regions.add(id=name)
                box = region.region_info.bounding_box
                box.top_row, box.left_col, box.bottom_row, box.right_col = top, left, bottom, right
                region.data.concepts.add(id="thing", value=0.9)
        else:
            label, value = brightness(pixels)
            output.data.concepts.add(id=label, value=value)
            output.data.metadata.update({"height": pixels.shape[0], "width": pixels.shape[1]})
        return output


@pytest.fixture
def app(alice: User, unique: str) -> Iterator[App]:
    app = alice.create_app(f"wfi-{unique}", base_workflow="Empty")
    label = f"vision-{unique}"
    alice.create_runner(label, labels=[label])
    runner = Vision(label, base_url=alice.base_url, pat=alice._connection.settings.pat, num_parallel_polls=2)
    thread = threading.Thread(target=runner.start, daemon=True)
    thread.start()
    assert runner.wait_connected(10)
    app.create_model("detect", [label], input_fields=["image"], output_fields=["regions"], params={"op": "detect"})
    app.create_model(
        "brightness", [label], input_fields=["image"], output_fields=["concepts"], params={"op": "classify"}
    )
    yield app
    runner.stop(drain=False)
    thread.join(10)


def write(path: Path, workflow_id: str, *nodes: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump({"workflow": {"id": workflow_id, "nodes": list(nodes)}}))
    return str(path)


def node(node_id: str, model_id: str, *inputs: str, **model: Any) -> dict[str, Any]:
    described: dict[str, Any] = {"id": node_id, "model": {"model_id": model_id, **model}}
    if inputs:
        described["node_inputs"] = [{"node_id": i} for i in inputs]
    return described


def shape(workflow: Workflow) -> list[tuple[Any, ...]]:
    info = workflow.load_info()
    return [
        (
            n.id,
            n.model.id,
            n.model.model_version.id,
            n.model.model_type_id,
            json_format.MessageToDict(n.model.model_version.output_info.params),
            [i.node_id for i in n.node_inputs],
        )
        for n in info.nodes
    ]


def test_a_detector_then_the_built_in_crop_then_a_classifier_classifies_each_region_of_a_photo(
    app: App, alice: User, unique: str, tmp_path: Path
) -> None:
    config = write(
        tmp_path / "vision.yaml",
        "vision",
        node("detect", "detect"),
        node("crop", "crop", "detect", model_type_id="image-crop"),  # the built-in, created from the YAML
        node("classify", "brightness", "crop"),
        node(
            "sure", "sure", "classify", model_type_id="concept-thresholder", output_info={"params": {"threshold": 0.8}}
        ),
    )
    # without the crop the classifier would see the whole photo, not the boxes: refused, saying what to add
    uncropped = write(
        tmp_path / "uncropped.yaml", "uncropped", node("detect", "detect"), node("c", "brightness", "detect")
    )
    with pytest.raises(errors.InvalidArgument, match=r"node 'c' .* makes regions: .*put an image-crop node between"):
        app.create_workflow(uncropped, display=False)
    workflow = app.create_workflow(config, display=False)
    photo = (SKIMAGE_DATA / "astronaut.png").read_bytes()
    pixels = rgb(photo)
    height, width = pixels.shape[:2]
    expected = {}
    for name, (top, left, bottom, right) in BOXES.items():
        box = pixels[round(top * height) : round(bottom * height), round(left * width) : round(right * width)]
        expected[name] = brightness(box)
    assert len({label for label, _ in expected.values()}) == 3  # the regions differ: a mix-up would show

    response = workflow.predict(
        [
            v1.Input(id="astronaut", data=v1.Data(image=v1.Image(base64=photo))),
            v1.Input(id="words", data=v1.Data(text=v1.Text(raw="not an image"))),
        ]
    )
    astronaut, words = response.results
    assert astronaut.input.id == "astronaut" and astronaut.status.code == v1.Status.OK
    assert [o.id for o in astronaut.outputs] == ["detect", "crop", "classify", "sure"]  # node order
    assert [o.model.id for o in astronaut.outputs] == ["detect", "crop", "brightness", "sure"]
    assert all(o.status.code == v1.Status.OK for o in astronaut.outputs)
    detect, crop, classify, sure = astronaut.outputs
    assert [r.id for r in detect.data.regions] == list(BOXES)
    for region, (name, (top, left, bottom, right)) in zip(crop.data.regions, BOXES.items(), strict=True):
        crop_pixels = rgb(region.data.image.base64)  # the real crop of the photo, pixel for pixel
        y0, y1, x0, x1 = round(top * height), round(bottom * height), round(left * width), round(right * width)
        assert region.id == name and np.array_equal(crop_pixels, pixels[y0:y1, x0:x1])
    # each region has the class of its own crop, with its box
    assert [(r.id, r.data.concepts[0].id) for r in classify.data.regions] == [
        (name, label) for name, (label, _) in expected.items()
    ]
    assert [r.region_info.bounding_box.left_col for r in classify.data.regions] == [b[1] for b in BOXES.values()]
    assert all(len(r.data.concepts) == 1 for r in classify.data.regions)
    # the thresholder after the per-region classifier thresholds each region's concepts (mid is 0.5)
    assert [(r.id, [c.id for c in r.data.concepts]) for r in sure.data.regions] == [
        (name, [label] if value > 0.8 else []) for name, (label, value) in expected.items()
    ]
    assert [r.region_info.bounding_box.top_row for r in sure.data.regions] == [b[0] for b in BOXES.values()]

    # an input the detector cannot read fails there, and its descendants say so; the photo is unaffected
    assert words.input.id == "words" and words.status.code != v1.Status.OK
    assert words.outputs[0].status.code != v1.Status.OK and "node 'detect'" in words.outputs[0].status.details
    for output in words.outputs[1:]:
        assert output.status.details.startswith(f"node {output.id!r} did not run: node 'detect' failed")

    # exported, it is created again in another app: the operator models it names are created there
    # with the same versions, the runner-served ones are found by the versions the export pins
    exported = tmp_path / "exported.yaml"
    workflow.export(str(exported))
    pins = {
        n["model"]["model_id"]: n["model"]["model_version_id"]
        for n in yaml.safe_load(exported.read_text())["workflow"]["nodes"]
    }
    other = alice.create_app(f"wfi-other-{unique}", base_workflow="Empty")
    for model_id, op in (("detect", "detect"), ("brightness", "classify")):
        other.create_model(
            model_id, [f"vision-{unique}"], input_fields=["image"], params={"op": op}, version_id=pins[model_id]
        )
    copy = other.create_workflow(str(exported), display=False)
    assert shape(copy) == shape(workflow)
    (result,) = copy.predict_by_bytes(photo, "image").results
    assert [(r.id, r.data.concepts[0].id) for r in result.outputs[2].data.regions] == [
        (name, label) for name, (label, _) in expected.items()
    ]


def _reviews() -> list[tuple[str, str]]:
    with REVIEWS.open(encoding="utf-8") as handle:
        return [(row["input"], row["concepts"]) for row in csv.DictReader(handle)]


CLEAR = {
    "Works perfectly, I love it and would recommend it to everyone": "positive",
    "Broke on day two, total waste of money, refund refused": "negative",
    "Gorgeous screen and the battery lasts for days": "positive",
    "It leaks, it overheats and support never answered": "negative",
}


def test_text_embedder_then_a_trained_classifier_predicts_as_the_classifier_alone(app: App, tmp_path: Path) -> None:
    app.create_dataset("reviews")
    rows = _reviews()
    uploads = [
        Inputs.get_text_input(f"review-{i}", text, dataset_id="reviews", labels=[label] if label else None)
        for i, (text, label) in enumerate(rows)
    ]
    assert not app.inputs().upload_inputs(uploads, show_log=False).failed
    model = app.create_model("sentiment", model_type_id="embedding-classifier")
    nodes = (node("embed", "text-embed", model_type_id="text-embedder"), node("classify", "sentiment", "embed"))
    # a workflow pins only versions training made: not the one create_model made, nor a model never trained
    with pytest.raises(
        errors.FailedPrecondition, match=r"node 'classify': version '.*' of model 'sentiment' was not made"
    ):
        app.create_workflow(write(tmp_path / "early.yaml", "early", *nodes), display=False)
    untrained = node("classify", "fresh", "embed", model_type_id="embedding-classifier")
    with pytest.raises(
        errors.FailedPrecondition, match=r"node 'classify': model 'fresh' does not exist, and .* training"
    ):
        app.create_workflow(write(tmp_path / "fresh.yaml", "fresh", nodes[0], untrained), display=False)
    assert list(app.list_workflows()) == [] and [m.id for m in app.list_models()].count("fresh") == 0
    model.update_params(dataset_id="reviews", concepts=["positive", "negative"], validation_fraction=0.0)
    version_id = model.train()
    status = model.wait_for_training(version_id, timeout=120)
    assert status["state"] == "trained", status

    config = write(
        tmp_path / "reviews.yaml",
        "reviews",
        node("embed", "text-embed", model_type_id="text-embedder"),
        node("classify", "sentiment", "embed"),  # the trained version is the latest: it is pinned
        node(
            "sure", "sure", "classify", model_type_id="concept-thresholder", output_info={"params": {"threshold": 0.6}}
        ),
    )
    tuned = node("classify", "sentiment", "embed", output_info={"params": {"epochs": 3}})
    with pytest.raises(errors.InvalidArgument, match=r"node 'classify': .* its params \(epochs\) are training params"):
        app.create_workflow(write(tmp_path / "tuned.yaml", "tuned", nodes[0], tuned), display=False)
    workflow = app.create_workflow(config, display=False)
    assert [n[2] for n in shape(workflow)][1] == version_id
    texts = list(CLEAR)
    response = workflow.predict([v1.Input(id=f"t{i}", data=v1.Data(text=v1.Text(raw=t))) for i, t in enumerate(texts)])
    direct = model.predict([v1.Input(data=v1.Data(text=v1.Text(raw=t))) for t in texts])
    for text, result, alone in zip(texts, response.results, direct.outputs, strict=True):
        embed, classify, sure = result.outputs
        assert [o.status.code for o in result.outputs] == [v1.Status.OK] * 3, result
        assert len(embed.data.embeddings[0].vector) == 384
        assert classify.data.concepts[0].id == CLEAR[text]  # clear examples get their class
        via_workflow = {c.id: c.value for c in classify.data.concepts}
        directly = {c.id: c.value for c in alone.data.concepts}
        assert via_workflow.keys() == directly.keys() == {"positive", "negative"}
        assert all(abs(via_workflow[c] - directly[c]) < 1e-5 for c in directly)
        assert [c.id for c in sure.data.concepts] == [c for c, v in via_workflow.items() if v > 0.6]

    # random-sample gates what comes after it: an input it leaves out reaches no node after it
    gates = write(
        tmp_path / "gates.yaml",
        "gates",
        node("none", "keep-none", model_type_id="random-sample", output_info={"params": {"keep_fraction": 0.0}}),
        node("skipped", "sentiment", "none"),
        node("all", "keep-all", model_type_id="random-sample", output_info={"params": {"keep_fraction": 1.0}}),
        node("classified", "sentiment", "all"),
    )
    (gated,) = app.create_workflow(gates, display=False).predict_by_bytes(texts[0].encode(), "text").results
    assert [o.status.code for o in gated.outputs] == [v1.Status.OK] * 4
    assert not gated.outputs[0].HasField("data") or gated.outputs[0].data == v1.Data()
    assert not gated.outputs[1].data.concepts  # the classifier did not run on what was left out
    assert gated.outputs[3].data.concepts[0].id == "positive"

    # the export names the text-embedder by type and pins the trained version; it creates an equal workflow
    exported = tmp_path / "exported.yaml"
    workflow.export(str(exported))
    nodes = yaml.safe_load(exported.read_text())["workflow"]["nodes"]
    assert nodes[0]["model"]["model_type_id"] == "text-embedder"
    assert nodes[1]["model"] == {
        "model_id": "sentiment",
        "model_version_id": version_id,
        "model_type_id": "embedding-classifier",
    }
    copy = app.create_workflow(str(exported), generate_new_id=True, display=False)
    assert shape(copy) == shape(workflow)
    again = copy.predict([v1.Input(data=v1.Data(text=v1.Text(raw=texts[1])))]).results[0].outputs[1]
    assert again.data.concepts[0].id == "negative"

    # retraining makes a new version; the workflows keep the one they pinned until it is deleted
    model.update_params(epochs=20)
    newer = model.train()
    assert model.wait_for_training(newer, timeout=120)["state"] == "trained"
    model.delete_version(version_id)
    for deprecated in (workflow, copy):
        info = app.workflow(deprecated.id).workflow_info
        assert info is not None and info.version.deprecated
        with pytest.raises(errors.FailedPrecondition, match=f"node 'classify': version '{version_id}' of model"):
            deprecated.predict([v1.Input(data=v1.Data(text=v1.Text(raw="fine")))])
    with pytest.raises(errors.NotFound):
        app.create_workflow(str(exported), generate_new_id=True, display=False)  # the version it pins is gone
