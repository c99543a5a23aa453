"""Workflows end to end: YAML -> server -> runners (real ones, in-process) -> results, through the SDK."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

import pellucid.errors as errors
from pellucid.api import v1
from pellucid.client.app import App
from pellucid.client.runner import Runner
from pellucid.client.user import User
from pellucid.client.workflow import Workflow
from pellucid.server.engine.local_models import LocalModelType, ParamInfo
from pellucid.server.engine.media import encode_png
from pellucid.server.engine.predict import Media, OutputData, OutputRegion, PredictInput, PredictOutput
from pellucid.server.records import ModelRecord, ModelVersionRecord
from tests.conftest import RunningServer

RED, BLUE = (255, 0, 0), (0, 0, 255)


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and RGB pixels of a PNG as encode_png writes it (8-bit RGB, no row filters)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", data[16:24])
    pos, idat = 33, b""
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * 3
    pixels = b"".join(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)] for y in range(height))
    return width, height, pixels


def two_colour_image() -> bytes:
    """8x4: the left half red, the right half blue."""
    row = bytes(RED) * 4 + bytes(BLUE) * 4
    return encode_png(8, 4, row * 4)


class Crop(LocalModelType):
    """A test image-crop run by the server: one cropped PNG per region of its input."""

    type_id = "wf-test-crop"
    reads = ("regions",)  # as the built-in image-crop declares: it crops the input's own image
    makes = ("regions", "image")
    params = (ParamInfo("margin", "float", 0.0, "unused: a param to round-trip", minimum=0.0, maximum=1.0),)

    def predict(
        self, model: ModelRecord, version: ModelVersionRecord, inputs: Sequence[PredictInput], params: dict[str, Any]
    ) -> list[PredictOutput]:
        outputs = []
        for given in inputs:
            width, height, pixels = decode_png(given.media[0].data)
            regions = []
            for region in given.regions:
                assert region.bbox is not None
                top, left, bottom, right = region.bbox
                x0, x1 = round(left * width), round(right * width)
                y0, y1 = round(top * height), round(bottom * height)
                rows = [pixels[(y * width + x0) * 3 : (y * width + x1) * 3] for y in range(y0, y1)]
                image = Media("image", encode_png(x1 - x0, y1 - y0, b"".join(rows)), mime="image/png")
                regions.append(OutputRegion(id=region.id, bbox=region.bbox, image=image))
            outputs.append(PredictOutput(given.id, data=OutputData(regions=tuple(regions))))
        return outputs


class Ops(Runner):
    """One runner serving every test model; each model's version says which op it is (params.op)."""

    barrier = threading.Barrier(2, timeout=20)

    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        op = output_info.params["op"]
        text = input.data.text.raw
        output = v1.Output()
        if op in ("shout", "side") and text == "together":
            self.barrier.wait()  # both root nodes must be running at once to pass
        if op == "shout":
            output.data.text.raw = text.upper()
        elif op == "count":
            if "BOOM" in text:
                raise ValueError(f"cannot count {text}")
            output.data.concepts.add(id="length", value=len(text) / 100)
        elif op == "tag":
            output.data.concepts.extend(v1.Concept(id=f"seen-{c.id}", value=c.value) for c in input.data.concepts)
        elif op == "side":
            if text == "sleep":
                time.sleep(4)
            output.data.concepts.add(id="side", value=1.0)
        elif op == "embed":  # a 2-d direction: texts starting with "a" one way, the others the other
            vector = [1.0, 0.1] if text.lower().startswith("a") else [0.1, 1.0]
            output.data.embeddings.add(vector=vector, num_dimensions=2)
        elif op == "detect":
            decode_png(input.data.image.base64)  # refuses anything but a PNG
            for name, box in (("left", (0.0, 0.0, 1.0, 0.5)), ("right", (0.0, 0.5, 1.0, 1.0))):
                region = output.data.regions.add(id=name)
                region.region_info.bounding_box.top_row, region.region_info.bounding_box.left_col = box[0], box[1]
                region.region_info.bounding_box.bottom_row, region.region_info.bounding_box.right_col = box[2], box[3]
                region.data.concepts.add(id="thing", value=0.9)
        elif op == "classify":
            _, _, pixels = decode_png(input.data.image.base64)
            reds, blues = sum(pixels[0::3]), sum(pixels[2::3])
            output.data.concepts.add(id="red" if reds > blues else "blue", value=1.0)
        return output


@pytest.fixture(scope="module")
def crop_type(server: RunningServer) -> None:
    engine = server.server.engine
    assert engine is not None
    if engine.models.local.get(Crop.type_id) is None:
        engine.models.local.register(Crop())


@pytest.fixture
def app(alice: User, unique: str, crop_type: None) -> Iterator[App]:
    app = alice.create_app(f"wf-{unique}")
    label = f"ops-{unique}"
    alice.create_runner(label, labels=[label])
    runner = Ops(label, base_url=alice.base_url, pat=alice._connection.settings.pat, num_parallel_polls=4)
    thread = threading.Thread(target=runner.start, daemon=True)
    thread.start()
    assert runner.wait_connected(10)
    for model_id, fields in {
        "shout": (["text"], ["text"]),
        "count": (["text"], ["concepts"]),
        "tag": ([], ["concepts"]),
        "side": (["text"], ["concepts"]),
        "detect": (["image"], ["regions"]),
        "classify": (["image"], ["concepts"]),
        "embed": (["text"], ["embeddings"]),
    }.items():
        app.create_model(
            model_id, [label], input_fields=fields[0], output_fields=fields[1], params={"op": model_id}, version_id="v1"
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


def text_input(text: str) -> v1.Input:
    return v1.Input(data=v1.Data(text=v1.Text(raw=text)))


def test_runner_models_chained_a_failing_node_fails_only_its_descendants_for_that_input(
    app: App, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path / "chain.yaml",
        "chain",
        node("shout", "shout"),
        node("count", "count", "shout"),
        node("tag", "tag", "count"),
        node("side", "side"),
    )
    workflow = app.create_workflow(config)
    assert "- shout: model shout (version v1)\n    - count" in capsys.readouterr().out  # display: the node tree
    response = workflow.predict([text_input("hello"), text_input("boom"), text_input("together")])
    ok, bad, together = response.results
    assert [o.status.code for o in ok.outputs] == [v1.Status.OK] * 4 and ok.status.code == v1.Status.OK
    assert [o.model.id for o in ok.outputs] == ["shout", "count", "tag", "side"]  # node order, with the model
    assert [o.id for o in ok.outputs] == ["shout", "count", "tag", "side"]
    assert ok.outputs[0].data.text.raw == "HELLO" and ok.outputs[0].model.model_version.id == "v1"
    assert [(c.id, round(c.value, 2)) for c in ok.outputs[2].data.concepts] == [("seen-length", 0.05)]

    shout, count, tag, side = bad.outputs
    assert shout.status.code == v1.Status.OK and side.status.code == v1.Status.OK  # the failure stays on its branch
    assert count.status.code == v1.Status.INVALID_ARGUMENT and count.status.description == "Invalid input"
    assert "node 'count' (model 'count') failed: ValueError: cannot count BOOM" in count.status.details
    assert tag.status.code == v1.Status.INVALID_ARGUMENT
    assert tag.status.details == (
        "node 'tag' did not run: node 'count' failed on this input: ValueError: cannot count BOOM"
    )
    assert bad.status.code != v1.Status.OK and bad.status.details.startswith("2 of 4 nodes failed")
    # "together" passes only if shout and side (independent nodes) ran at once
    assert [o.status.code for o in together.outputs] == [v1.Status.OK] * 4

    assert [w.id for w in app.list_workflows()] == ["chain"] and app.workflow("chain").id == "chain"
    # deleting a pinned model version deprecates the version, and predicting says which node lost it
    app.model("count").delete_version("v1")
    info = app.workflow("chain").workflow_info
    assert info is not None and info.version.deprecated
    assert "node 'count': version 'v1' of model 'count'" in info.version.deprecated_reason
    with pytest.raises(errors.FailedPrecondition, match="node 'count': version 'v1' of model 'count'"):
        workflow.predict([text_input("hello")])
    app.delete_workflow("chain")
    assert list(app.list_workflows()) == []


def test_detector_then_crop_then_classifier_classifies_each_region(app: App, tmp_path: Path) -> None:
    config = write(
        tmp_path / "vision.yaml",
        "vision",
        node("detect", "detect"),
        node("crop", "crop", "detect", model_type_id="wf-test-crop"),  # created: the server runs this type
        node("classify", "classify", "crop"),
    )
    workflow = app.create_workflow(config, display=False)
    image = tmp_path / "two.png"
    image.write_bytes(two_colour_image())
    (result,) = workflow.predict_by_filepath(str(image), "image").results
    detect, crop, classify = result.outputs
    assert [r.id for r in detect.data.regions] == ["left", "right"]
    assert all(r.data.image.base64.startswith(b"\x89PNG") for r in crop.data.regions)
    assert [(r.id, r.data.concepts[0].id) for r in classify.data.regions] == [("left", "red"), ("right", "blue")]
    assert classify.data.regions[1].region_info.bounding_box.left_col == 0.5


def test_export_writes_yaml_that_creates_an_equal_workflow(app: App, tmp_path: Path) -> None:
    config = write(
        tmp_path / "vision.yaml",
        "vision",
        node("detect", "detect"),
        node("crop", "crop", "detect", model_type_id="wf-test-crop", output_info={"params": {"margin": 0.25}}),
        node("classify", "classify", "crop", output_info={"params": {"extra": 3, "nested": {"k": ["a"]}}}),
    )
    original = app.create_workflow(config, display=False)
    exported = tmp_path / "exported.yaml"
    original.export(str(exported))
    described = yaml.safe_load(exported.read_text())["workflow"]
    assert described["nodes"][1]["model"]["output_info"] == {"params": {"margin": 0.25}}
    assert described["nodes"][2]["model"]["output_info"] == {"params": {"extra": 3, "nested": {"k": ["a"]}}}

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

    copy = app.create_workflow(str(exported), generate_new_id=True, display=False)
    assert copy.id != "vision" and shape(copy) == shape(original)
    app.delete_workflow("vision")
    again = app.create_workflow(str(exported), display=False)  # the same id, recreated
    assert again.id == "vision" and shape(again) == shape(copy)
    (version,) = again.list_versions()
    url = f"{app.base_url}/{app.user_id}/{app.id}/workflows/vision/versions/{version.version_id}"
    by_url = Workflow(url, pat=app._connection.settings.pat)
    assert (by_url.id, by_url.version_id) == ("vision", version.version_id) and shape(by_url) == shape(again)


def test_bad_yaml_is_refused_naming_the_node_and_nothing_is_stored(app: App, tmp_path: Path) -> None:
    cycle = write(
        tmp_path / "cycle.yaml",
        "loop",
        node("crop", "new-crop", "b", model_type_id="wf-test-crop"),
        node("b", "classify", "crop"),
    )
    with pytest.raises(errors.InvalidArgument, match=r"node '(crop|b)' is part of a cycle"):
        app.create_workflow(cycle)
    fed_wrong = write(tmp_path / "kinds.yaml", "kinds", node("count", "count"), node("shout", "shout", "count"))
    with pytest.raises(errors.InvalidArgument, match=r"node 'shout' .* reads text, but its input node 'count'"):
        app.create_workflow(fed_wrong)
    with pytest.raises(errors.UserError, match=r"nodes\[0\] \(node 'a'\): `model` must be a mapping"):
        app.create_workflow(write(tmp_path / "shape.yaml", "shape", {"id": "a", "model": "x"}))
    assert list(app.list_workflows()) == []
    assert "new-crop" not in [m.id for m in app.list_models()]  # the cycle's model was not created


def test_long_lists_are_split_and_one_deadline_covers_the_workflow(app: App, tmp_path: Path) -> None:
    config = write(
        tmp_path / "wide.yaml",
        "wide",
        node("shout", "shout"),
        node("side", "side"),
        node("after", "tag", "side"),
    )
    workflow = app.create_workflow(config, display=False)
    texts = [f"t{i}" for i in range(130)]  # over the server's 128 per call
    response = workflow.predict([text_input(t) for t in texts])
    assert [r.outputs[0].data.text.raw for r in response.results] == [t.upper() for t in texts]

    hurried = workflow.with_options(timeout=1.5)
    (result,) = hurried.predict([text_input("sleep")]).results  # side sleeps 4 s
    shout, side, after = result.outputs
    assert shout.status.code == v1.Status.OK
    assert side.status.code == v1.Status.DEADLINE_EXCEEDED and "node 'side'" in side.status.details
    assert after.status.code == v1.Status.DEADLINE_EXCEEDED
    assert after.status.details.startswith("node 'after' did not run: node 'side' failed on this input")

    # a node no runner serves fails with that reason (its predict ends just before the workflow)
    app.create_model("orphan", ["nobody-serves-this"])
    lonely = app.create_workflow(
        write(tmp_path / "orphan.yaml", "orphan", node("shout", "shout"), node("orphan", "orphan")), display=False
    )
    (result,) = lonely.with_options(timeout=2).predict([text_input("hi")]).results
    assert result.outputs[0].status.code == v1.Status.OK
    assert result.outputs[1].status.code == v1.Status.UNAVAILABLE
    assert "node 'orphan' (model 'orphan') failed: no runner serves" in result.outputs[1].status.details


def test_an_apps_base_workflow_may_name_a_workflow_whose_embeddings_are_searched(
    server: RunningServer, app: App, tmp_path: Path
) -> None:
    from tests.test_indexing import vectors_of

    with pytest.raises(errors.InvalidArgument, match="nor the id of a model or workflow"):
        app.patch(base_workflow="search")
    config = write(tmp_path / "search.yaml", "search", node("shout", "shout"), node("embed", "embed", "shout"))
    app.create_workflow(config, display=False)
    app.patch(base_workflow="search")
    app.inputs().upload_text("apple", "apples and apricots")
    app.inputs().upload_text("zebra", "zebras")
    status = app.wait_until_indexed(timeout=60, show_progress=False)
    assert (status.base_workflow, status.ready, status.failed) == ("search", 2, 0)
    assert sorted(vectors_of(server, app, "workflow:search")) == ["apple", "zebra"]
    # the query is embedded by the workflow too
    assert [h.input.id for h in app.search().query(ranks=[{"text_raw": "zoo"}])] == ["zebra", "apple"]
    assert [h.input.id for h in app.search().query(ranks=[{"text_raw": "aardvark"}])] == ["apple", "zebra"]
    app.delete_workflow("search")  # its embeddings go with it
    assert vectors_of(server, app, "workflow:search") == {}
