"""A predict through the engine alone, as a second protocol adapter (HTTP, OIP) would make it:
pellucid's own types in and out, its own runner wire format (JSON here), no proto anywhere."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pellucid.server.engine import Engine, Principal
from pellucid.server.engine.errors import DeadlineExceeded, InvalidArgument
from pellucid.server.engine.local_models import LocalModelType, ParamInfo, check_params
from pellucid.server.engine.models import VersionSpec
from pellucid.server.engine.predict import (
    Media,
    OutputCode,
    OutputData,
    PredictInput,
    PredictOutput,
    PredictRequest,
    RunnerWork,
)
from pellucid.server.engine.routing import WorkOrder
from pellucid.server.records import ConceptValue, OutputConfig
from pellucid.server.storage import open_metadata_store
from pellucid.server.storage.registry import open_blob_store


class JsonCodec:
    """A runner wire format that is not protobuf."""

    def encode_work(self, work: RunnerWork) -> bytes:
        inputs = [{"id": i.id, "text": m.data.decode()} for i in work.inputs for m in i.media]
        return json.dumps({"method": work.method, "inputs": inputs, "params": work.params}).encode()

    def decode_outputs(self, result: bytes) -> list[PredictOutput]:
        return [
            PredictOutput(
                o["input_id"],
                OutputCode(o["code"]),
                o.get("message", ""),
                OutputData(tuple(ConceptValue(c, value=v) for c, v in o["concepts"].items())),
            )
            for o in json.loads(result)
        ]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = Engine(
        open_metadata_store(f"sqlite://{tmp_path / 'metadata.db'}"),
        open_blob_store(f"file://{tmp_path / 'blobs'}"),
        work_codec=JsonCodec(),
    )
    yield engine
    engine.close()


ADMIN = Principal("admin", is_admin=True, token_id="t")


def test_a_predict_without_protos_with_the_output_config_applied_by_the_engine(engine: Engine) -> None:
    engine.users.bootstrap("admin")
    engine.apps.create(ADMIN, "admin", "app")
    engine.models.create(
        ADMIN,
        "admin",
        "app",
        "m",
        version=VersionSpec(runner_labels=("cpu",), output_config=OutputConfig(min_value=0.2)),
    )
    engine.runners.create(ADMIN, "admin", "r", ("cpu",))
    _, stream = engine.runners.connect(ADMIN, "r", capacity=2)

    def runner() -> None:
        """A runner that answers with every concept, unfiltered (the runner SDK no longer filters)."""
        order = None
        while not isinstance(order, WorkOrder):
            order = engine.runners.next_message(stream.id, 5.0)
        work = json.loads(order.payload)
        assert work["params"] == {"k": 1}
        answer = [
            {"input_id": i["id"], "code": 0, "concepts": {"a": 0.9, "b": 0.5, "c": 0.1, "d": 0.3}}
            for i in work["inputs"]
        ]
        engine.runners.complete(stream.id, order.item_id, json.dumps(answer).encode())

    thread = threading.Thread(target=runner)
    thread.start()
    result = engine.models.predict(
        ADMIN,
        PredictRequest(
            "admin",
            "app",
            "m",
            inputs=(PredictInput("i1", (Media("text", b"hello"),)),),
            params={"k": 1},
            output_config=OutputConfig(max_concepts=2),
            deadline_seconds=10.0,
        ),
    )
    thread.join(5)
    assert result.runner_id == "r" and result.model_id == "m"
    (output,) = result.outputs
    assert output.input_id == "i1" and output.code is OutputCode.OK
    # the version's min_value 0.2 and the call's max_concepts 2, highest first
    assert [c.id for c in output.data.concepts] == ["a", "b"]
    assert engine.runners.live(engine.runners.get(ADMIN, "admin", "r")) == (1, 2)


class Upper(LocalModelType):
    """A local model type: the server runs it, no runner involved."""

    type_id = "test-upper"
    reads = ("text",)
    makes = ("concepts",)
    params = (ParamInfo("score", "float", 0.5, "the concept's value", minimum=0.0, maximum=1.0),)

    def predict(self, model, version, inputs, params):  # type: ignore[no-untyped-def]
        return [
            PredictOutput(
                i.id, data=OutputData((ConceptValue(i.media[0].data.decode().upper(), value=params["score"]),))
            )
            for i in inputs
        ]


def test_a_local_model_type_is_predicted_in_process_with_no_runner(engine: Engine) -> None:
    engine.models.local.register(Upper())
    engine.users.bootstrap("admin")
    engine.apps.create(ADMIN, "admin", "app")
    engine.models.create(
        ADMIN, "admin", "app", "up", model_type_id="test-upper", version=VersionSpec(params={"score": 0.25})
    )
    request = PredictRequest(
        "admin", "app", "up", inputs=(PredictInput("i1", (Media("text", b"cat"),)),), deadline_seconds=5.0
    )
    result = engine.models.predict(ADMIN, request)
    assert result.runner_id == "" and [c.id for c in result.outputs[0].data.concepts] == ["CAT"]
    # the output config still applies: the version's score 0.25 is under min_value 0.3
    shaped = engine.models.predict(ADMIN, dataclasses.replace(request, output_config=OutputConfig(min_value=0.3)))
    assert shaped.outputs[0].data.concepts == ()
    with pytest.raises(ValueError, match="twice"):
        engine.models.local.register(Upper())


def test_declared_params_are_checked_naming_the_known_ones() -> None:
    declared = Upper.params
    assert check_params(declared, {"score": 1}) == {"score": 1.0}
    with pytest.raises(InvalidArgument, match="known ones are score"):
        check_params(declared, {"scroe": 0.1})
    with pytest.raises(InvalidArgument, match="out of range"):
        check_params(declared, {"score": 2})
    with pytest.raises(InvalidArgument, match="number"):
        check_params(declared, {"score": "high"})


class Slow(LocalModelType):
    type_id = "test-slow"

    def predict(self, model, version, inputs, params):  # type: ignore[no-untyped-def]
        time.sleep(1.0)
        return [PredictOutput(i.id) for i in inputs]


def test_a_local_model_slower_than_the_deadline_is_deadline_exceeded(engine: Engine) -> None:
    engine.models.local.register(Slow())
    engine.users.bootstrap("admin")
    engine.apps.create(ADMIN, "admin", "app")
    engine.models.create(ADMIN, "admin", "app", "slow", model_type_id="test-slow")
    request = PredictRequest(
        "admin", "app", "slow", inputs=(PredictInput("i1", (Media("text", b"x"),)),), deadline_seconds=0.2
    )
    with pytest.raises(DeadlineExceeded, match=r"did not finish within 0\.2 s"):
        engine.models.predict(ADMIN, request)
