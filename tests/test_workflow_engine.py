"""Workflows through the engine alone, on SQLite and PostgreSQL: validation that names the node
and stores nothing, models created from their type, the graph's execution (failures propagate to
descendants of that input only; image-crop fans out per region), deprecation on model deletes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pellucid.server.engine import Engine, Principal
from pellucid.server.engine.errors import FailedPrecondition, InvalidArgument, NotFound
from pellucid.server.engine.local_models import LocalModelType, ParamInfo
from pellucid.server.engine.models import VersionSpec
from pellucid.server.engine.paging import PageRequest
from pellucid.server.engine.predict import (
    Media,
    OutputCode,
    OutputData,
    OutputRegion,
    PredictInput,
    PredictOutput,
)
from pellucid.server.engine.workflow_runs import WorkflowRunRequest
from pellucid.server.engine.workflows import NodeSpec, WorkflowSpec
from pellucid.server.records import ConceptValue, ModelRecord, ModelVersionRecord
from pellucid.server.storage import open_metadata_store
from pellucid.server.storage.registry import open_blob_store

ADMIN = Principal("admin", is_admin=True, token_id="t")


class Words(LocalModelType):
    """Text -> one concept per word (value: the `score` param); fails on the word "boom"."""

    type_id = "wf-words"
    reads = ("text",)
    makes = ("concepts",)
    params = (ParamInfo("score", "float", 0.5, "each concept's value", minimum=0.0, maximum=1.0),)

    def predict(
        self, model: ModelRecord, version: ModelVersionRecord, inputs: Sequence[PredictInput], params: dict[str, Any]
    ) -> list[PredictOutput]:
        outputs = []
        for given in inputs:
            text = given.media[0].data.decode()
            if "boom" in text:
                outputs.append(PredictOutput(given.id, OutputCode.INVALID_ARGUMENT, "cannot read boom"))
                continue
            concepts = tuple(ConceptValue(w, value=params.get("score", 0.5)) for w in text.split())
            outputs.append(PredictOutput(given.id, data=OutputData(concepts=concepts)))
        return outputs


class Raises(LocalModelType):
    """A broken model: raises instead of answering."""

    type_id = "wf-raises"
    reads = ("text",)
    makes = ("concepts",)

    def predict(
        self, model: ModelRecord, version: ModelVersionRecord, inputs: Sequence[PredictInput], params: dict[str, Any]
    ) -> list[PredictOutput]:
        raise RuntimeError("out of cheese")


class Count(LocalModelType):
    """Concepts -> one concept "count" (how many it got, in hundredths)."""

    type_id = "wf-count"
    reads = ("concepts",)
    makes = ("concepts",)

    def predict(
        self, model: ModelRecord, version: ModelVersionRecord, inputs: Sequence[PredictInput], params: dict[str, Any]
    ) -> list[PredictOutput]:
        return [
            PredictOutput(g.id, data=OutputData(concepts=(ConceptValue("count", value=len(g.concepts) / 100),)))
            for g in inputs
        ]


class Embed(LocalModelType):
    """Text -> a 2-d vector."""

    type_id = "wf-embed"
    reads = ("text",)
    makes = ("embeddings",)

    def predict(
        self, model: ModelRecord, version: ModelVersionRecord, inputs: Sequence[PredictInput], params: dict[str, Any]
    ) -> list[PredictOutput]:
        return [PredictOutput(g.id, data=OutputData(embeddings=((1.0, float(len(g.media))),))) for g in inputs]


class Halves(LocalModelType):
    """An image -> two regions (left and right half), each with its own 'cropped' image."""

    type_id = "wf-halves"
    reads = ("image",)
    makes = ("regions", "image")  # cropped regions, as image-crop makes: an image reader runs once per region

    def predict(
        self, model: ModelRecord, version: ModelVersionRecord, inputs: Sequence[PredictInput], params: dict[str, Any]
    ) -> list[PredictOutput]:
        outputs = []
        for g in inputs:
            data = g.media[0].data
            half = len(data) // 2
            regions = (
                OutputRegion(id="left", bbox=(0, 0, 1, 0.5), image=Media("image", data[:half])),
                OutputRegion(id="right", bbox=(0, 0.5, 1, 1), image=Media("image", data[half:])),
            )
            outputs.append(PredictOutput(g.id, data=OutputData(regions=regions)))
        return outputs


class Size(LocalModelType):
    """An image -> concept "size" (its length in bytes, in hundredths)."""

    type_id = "wf-size"
    reads = ("image",)
    makes = ("concepts",)

    def predict(
        self, model: ModelRecord, version: ModelVersionRecord, inputs: Sequence[PredictInput], params: dict[str, Any]
    ) -> list[PredictOutput]:
        return [
            PredictOutput(g.id, data=OutputData(concepts=(ConceptValue("size", value=len(g.media[0].data) / 100),)))
            for g in inputs
        ]


@pytest.fixture
def engine(metadata_uri: str, tmp_path: Path) -> Iterator[Engine]:
    engine = Engine(open_metadata_store(metadata_uri), open_blob_store(f"file://{tmp_path / 'blobs'}"))
    for model_type in (Words(), Count(), Embed(), Halves(), Size(), Raises()):
        engine.models.local.register(model_type)
    engine.users.bootstrap("admin")
    engine.apps.create(ADMIN, "admin", "app")
    yield engine
    engine.close()


def node(node_id: str, model_id: str, *inputs: str, model_type_id: str = "", **params: Any) -> NodeSpec:
    return NodeSpec(node_id, model_id, model_type_id=model_type_id, params=params, node_inputs=inputs)


def create(engine: Engine, *nodes: NodeSpec, workflow_id: str = "wf") -> None:
    engine.workflows.create(ADMIN, "admin", "app", [WorkflowSpec(id=workflow_id, nodes=nodes)])


def run(engine: Engine, *texts: str, workflow_id: str = "wf", version_id: str = "") -> list[list[PredictOutput]]:
    inputs = tuple(PredictInput(f"in{i}", (Media("text", t.encode()),)) for i, t in enumerate(texts))
    result = engine.workflow_runs.run(
        ADMIN, WorkflowRunRequest("admin", "app", workflow_id, version_id, inputs, deadline_seconds=10)
    )
    return [[o.output for o in r.outputs] for r in result.results]


def test_models_are_created_from_their_type_and_a_failing_node_fails_its_descendants_only(engine: Engine) -> None:
    create(
        engine,
        node("words", "words", model_type_id="wf-words", score=0.75),
        node("count", "count", "words", model_type_id="wf-count"),
        node("embed", "embed", model_type_id="wf-embed"),
    )
    model, version = engine.models.get(ADMIN, "admin", "app", "words")
    assert model.model_type_id == "wf-words" and version is not None and version.params == {"score": 0.75}
    _, pinned = engine.workflows.get(ADMIN, "admin", "app", "wf")
    assert pinned.nodes[0].model_version_id == version.id  # the created version is pinned

    ok, bad = run(engine, "a cat sat", "boom here")
    assert [o.code for o in ok] == [OutputCode.OK] * 3
    assert [(c.id, c.value) for c in ok[0].data.concepts] == [("a", 0.75), ("cat", 0.75), ("sat", 0.75)]
    assert ok[1].data.concepts[0].value == pytest.approx(0.03)  # count saw words' three concepts
    assert ok[2].data.embeddings == ((1.0, 1.0),)
    words, count, embed = bad
    assert words.code is OutputCode.INVALID_ARGUMENT and "node 'words'" in words.message and "boom" in words.message
    assert count.code is OutputCode.INVALID_ARGUMENT
    assert count.message == "node 'count' did not run: node 'words' failed on this input: cannot read boom"
    assert embed.code is OutputCode.OK  # not a descendant of the failed node


def test_nodes_sharing_a_model_to_create_pin_the_one_version_created(engine: Engine) -> None:
    create(
        engine,
        node("first", "words", model_type_id="wf-words", score=0.25),
        node("second", "words", model_type_id="wf-words", score=0.25),
    )
    versions, _ = engine.models.list_versions(ADMIN, "admin", "app", "words", PageRequest())
    _, pinned = engine.workflows.get(ADMIN, "admin", "app", "wf")
    assert [n.model_version_id for n in pinned.nodes] == [versions[0].id] * 2 and len(versions) == 1
    assert [o.code for o in run(engine, "fine")[0]] == [OutputCode.OK] * 2
    with pytest.raises(InvalidArgument, match="node 'b': model 'other' is to be created twice, with different"):
        create(
            engine,
            node("a", "other", model_type_id="wf-words", score=0.25),
            node("b", "other", model_type_id="wf-words", score=0.5),
            workflow_id="wf2",
        )


def test_workflows_of_one_request_sharing_a_model_to_create_create_it_once(engine: Engine) -> None:
    shared = node("n", "shared", model_type_id="wf-words", score=0.25)
    made = engine.workflows.create(
        ADMIN, "admin", "app", [WorkflowSpec(id="one", nodes=(shared,)), WorkflowSpec(id="two", nodes=(shared,))]
    )
    assert [w.id for w, _ in made] == ["one", "two"]
    versions, _ = engine.models.list_versions(ADMIN, "admin", "app", "shared", PageRequest())
    assert len(versions) == 1 and {v.nodes[0].model_version_id for _, v in made} == {versions[0].id}


def test_a_model_that_raises_fails_its_node_not_the_call(engine: Engine) -> None:
    create(
        engine, node("broken", "broken", model_type_id="wf-raises"), node("words", "words", model_type_id="wf-words")
    )
    broken, words = run(engine, "fine")[0]
    assert broken.code is OutputCode.INTERNAL and "RuntimeError: out of cheese" in broken.message
    assert words.code is OutputCode.OK


def test_after_a_crop_a_node_runs_once_per_region(engine: Engine) -> None:
    create(
        engine,
        node("halves", "halves", model_type_id="wf-halves"),
        node("size", "size", "halves", model_type_id="wf-size"),
    )
    inputs = (PredictInput("img", (Media("image", b"x" * 30),)),)
    (result,) = engine.workflow_runs.run(ADMIN, WorkflowRunRequest("admin", "app", "wf", inputs=inputs)).results
    halves, size = (o.output for o in result.outputs)
    assert [r.id for r in halves.data.regions] == ["left", "right"]
    assert [(r.id, r.bbox, r.concepts[0].value) for r in size.data.regions] == [
        ("left", (0, 0, 1, 0.5), pytest.approx(0.15)),
        ("right", (0, 0.5, 1, 1), pytest.approx(0.15)),
    ]


@pytest.mark.parametrize(
    ("nodes", "error", "message"),
    [
        (
            [node("a", "words", model_type_id="wf-words"), node("b", "count", "nope", model_type_id="wf-count")],
            InvalidArgument,
            "node 'b': node_inputs[0] names 'nope', which is not a node of this workflow",
        ),
        (
            [
                node("a", "words", "c", model_type_id="wf-words"),
                node("b", "count", "a", model_type_id="wf-count"),
                node("c", "count", "b", model_type_id="wf-count"),
            ],
            InvalidArgument,
            "is part of a cycle (",
        ),
        (
            [node("a", "words", model_type_id="wf-words"), node("ghost", "no-such-model", "a")],
            NotFound,
            "node 'ghost': model 'no-such-model' not found in app 'app', and it cannot be created",
        ),
        (
            [node("a", "words", model_type_id="wf-words"), node("b", "count", "a", "a", model_type_id="wf-count")],
            InvalidArgument,
            "node 'b': node_inputs[1] names 'a' again (node_inputs[0]): name each input node once",
        ),
        (
            [node("a", "words", model_type_id="wf-words"), node("a", "count", model_type_id="wf-count")],
            InvalidArgument,
            "node 'a' is defined twice (nodes[0] and nodes[1])",
        ),
        (
            [node("emb", "embed", model_type_id="wf-embed"), node("reader", "words", "emb", model_type_id="wf-words")],
            InvalidArgument,
            "node 'reader' (model 'words') reads text, but its input node 'emb' (model 'embed') makes embeddings",
        ),
        (
            [node("a", "words", model_type_id="wf-words", score=2)],
            InvalidArgument,
            "node 'a': param.score = 2.0 is out of range: use 0.0 to 1.0",
        ),
        (
            [node("a", "words", model_type_id="wf-words", colour="red")],
            InvalidArgument,
            "node 'a': unknown param 'colour': the known ones are score",
        ),
    ],
)
def test_a_bad_workflow_is_refused_naming_the_node_and_stores_nothing(
    engine: Engine, nodes: list[NodeSpec], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        create(engine, *nodes)
    assert message in str(raised.value)
    workflows, _ = engine.workflows.list(ADMIN, "admin", "app", PageRequest())
    models, _ = engine.models.list(ADMIN, "admin", "app", PageRequest())
    assert workflows == [] and models == []  # not even the models the valid nodes would have created


def test_a_node_after_a_crop_makes_regions_for_the_nodes_after_it(engine: Engine) -> None:
    class ReadsRegions(Count):
        type_id = "wf-reads-regions"
        reads = ("regions",)

    engine.models.local.register(ReadsRegions())
    create(
        engine,
        node("halves", "halves", model_type_id="wf-halves"),
        node("size", "size", "halves", model_type_id="wf-size"),  # makes concepts, but once per region
        node("after", "after", "size", model_type_id="wf-reads-regions"),
    )
    with pytest.raises(InvalidArgument, match=r"node 'after' \(model 'after'\) reads regions, but its input node 'w'"):
        create(
            engine,
            node("w", "words", model_type_id="wf-words"),
            node("after", "after", "w", model_type_id="wf-reads-regions"),
            workflow_id="other",
        )


def test_a_runner_models_declared_fields_are_checked_on_its_edges(engine: Engine) -> None:
    engine.models.create(ADMIN, "admin", "app", "texter", input_fields=("text",), version=VersionSpec())
    engine.models.create(ADMIN, "admin", "app", "vectors", output_fields=("embeddings",), version=VersionSpec())
    with pytest.raises(InvalidArgument, match=r"node 'texter' \(model 'texter'\) reads text, but its input node 'vec'"):
        create(engine, node("vec", "vectors"), node("texter", "texter", "vec"))
    with pytest.raises(InvalidArgument, match="exists with model_type_id '', not 'wf-words'"):
        create(engine, node("t", "texter", model_type_id="wf-words"))


def test_deleting_an_app_deprecates_the_workflow_versions_elsewhere_that_pin_its_models(engine: Engine) -> None:
    """A node may pin a model of another app; deleting that app deprecates the version (it
    refused to run with NOT_FOUND before), naming the node and the app."""
    engine.apps.create(ADMIN, "admin", "shared")
    engine.models.create(ADMIN, "admin", "shared", "words", model_type_id="wf-words", version=VersionSpec(id="v1"))
    shared = NodeSpec("w", "words", model_app_id="shared")
    create(engine, shared, node("c", "count", "w", model_type_id="wf-count"))
    create(engine, node("c", "count", model_type_id="wf-count"), workflow_id="own")  # pins only its app's model
    assert [o.code for o in run(engine, "fine")[0]] == [OutputCode.OK, OutputCode.OK]

    engine.apps.delete(ADMIN, "admin", "shared")
    _, version = engine.workflows.get(ADMIN, "admin", "app", "wf")
    assert version.deleted_pins == (("w", "its model's app 'shared' was deleted"),)
    with pytest.raises(FailedPrecondition, match=r"is deprecated \(node 'w': its model's app 'shared' was deleted\)"):
        run(engine, "fine")
    _, own = engine.workflows.get(ADMIN, "admin", "app", "own")
    assert own.deleted_pins == () and run(engine, "fine", workflow_id="own")[0][0].code is OutputCode.OK


def test_deleting_a_pinned_model_version_deprecates_the_workflow_version(engine: Engine) -> None:
    engine.models.create(ADMIN, "admin", "app", "words", model_type_id="wf-words", version=VersionSpec(id="v1"))
    create(engine, node("w", "words"), node("c", "count", "w", model_type_id="wf-count"))
    assert [o.code for o in run(engine, "fine")[0]] == [OutputCode.OK, OutputCode.OK]
    engine.models.create_version(ADMIN, "admin", "app", "words", VersionSpec(id="v2"))
    engine.workflows.create_version(
        ADMIN, "admin", "app", "wf", WorkflowSpec(version_id="later", nodes=(node("w", "words"),))
    )
    _, latest = engine.workflows.get(ADMIN, "admin", "app", "wf")
    assert latest.id == "later" and latest.nodes[0].model_version_id == "v2"  # the latest version, pinned
    first = engine.workflows.list_versions(ADMIN, "admin", "app", "wf", PageRequest())[0][0]

    engine.models.delete_version(ADMIN, "admin", "app", "words", "v1")
    _, old = engine.workflows.get(ADMIN, "admin", "app", "wf", first.id)
    assert old.deleted_pins == (("w", "version 'v1' of model 'words' (app 'app') was deleted"),)
    with pytest.raises(FailedPrecondition, match=r"is deprecated \(node 'w': version 'v1' of model 'words'"):
        run(engine, "fine", version_id=first.id)
    assert run(engine, "fine")[0][0].code is OutputCode.OK  # the version pinning v2 still runs

    engine.models.delete(ADMIN, "admin", "app", "words")
    with pytest.raises(FailedPrecondition, match="node 'w': model 'words' \\(app 'app'\\) was deleted"):
        run(engine, "fine")
