"""Algorithms, their calls and insights: protos <-> engine types (engine/algorithms.py)."""

from __future__ import annotations

import json

from google.protobuf import json_format

from pellucid.api import v1
from pellucid.server.engine.algorithms import Resolved
from pellucid.server.engine.errors import InvalidArgument
from pellucid.server.engine.predict import PredictInput
from pellucid.server.grpc.convert import to_timestamp
from pellucid.server.grpc.translate.models import predict_input
from pellucid.server.records import AlgorithmRecord, AlgorithmTagRecord, InsightRecord

CONTENT_TYPES = ("text", "json", "binary")


def algorithm_message(algorithm: AlgorithmRecord, tags: tuple[AlgorithmTagRecord, ...]) -> v1.Algorithm:
    return v1.Algorithm(
        user_id=algorithm.user_id,
        name=algorithm.name,
        app_id=algorithm.app_id,
        model_id=algorithm.model_id,
        public=algorithm.public,
        versions=[
            v1.AlgorithmVersion(tag=t.tag, version_id=t.version_id, created_at=to_timestamp(t.created_at)) for t in tags
        ],
        created_at=to_timestamp(algorithm.created_at),
        modified_at=to_timestamp(algorithm.modified_at),
    )


def resolved_message(resolved: Resolved) -> v1.ResolvedAlgorithm:
    return v1.ResolvedAlgorithm(
        algorithm=algorithm_message(resolved.algorithm, resolved.tags),
        version_id=resolved.version.id,
        version=resolved.tag,
    )


def insight_message(insight: InsightRecord) -> v1.Insight:
    return v1.Insight(
        call_id=insight.call_id,
        version_id=insight.version_id,
        reported_by=insight.reported_by,
        insights=insight.values,
        created_at=to_timestamp(insight.created_at),
    )


def call_input(data: v1.Data) -> PredictInput:
    """An algorithm's input as the engine's predict input: text as the text field, JSON and bytes
    riding along to the runner in the input's own encoding."""
    kind = data.content_type
    if kind not in CONTENT_TYPES:
        raise InvalidArgument(
            f"input.content_type {kind!r}: use one of {', '.join(CONTENT_TYPES)}", field="input.content_type"
        )
    if kind == "json":
        try:
            json.loads(data.json)
        except ValueError as exc:
            raise InvalidArgument(f"input.json is not a JSON document: {exc}", field="input.json") from None
    carried = v1.Data(content_type=kind)
    if kind == "text":
        carried.text.raw = data.text.raw
    elif kind == "json":
        carried.json = data.json
    else:
        carried.raw = data.raw
    return predict_input(v1.Input(data=carried))


def call_result(output: v1.Output) -> v1.Data:
    """The result part of a runner's output. A runner that is not written for algorithms (no
    content type) answers its text, else its whole output data as JSON."""
    data = output.data
    kind = data.content_type
    if kind in CONTENT_TYPES:
        result = v1.Data(content_type=kind)
        if kind == "text":
            result.text.raw = data.text.raw
        elif kind == "json":
            result.json = data.json
        else:
            result.raw = data.raw
        return result
    plain = v1.Data()
    plain.CopyFrom(data)
    for field in ("stdout", "stack_trace", "content_type"):
        plain.ClearField(field)
    if [f.name for f, _ in plain.ListFields()] == ["text"] and not plain.text.url:
        return v1.Data(content_type="text", text=v1.Text(raw=plain.text.raw))
    as_json = json_format.MessageToDict(plain, preserving_proto_field_name=True)
    return v1.Data(content_type="json", json=json.dumps(as_json))
