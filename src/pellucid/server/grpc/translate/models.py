"""Models, versions and predicts: protos <-> engine types (records and engine/predict.py)."""

from __future__ import annotations

from pellucid.api import v1
from pellucid.server.engine.models import VersionSpec
from pellucid.server.engine.predict import (
    INPUT_FIELDS,
    Media,
    OutputCode,
    OutputData,
    OutputRegion,
    PredictInput,
    PredictOutput,
    PredictRequest,
    PredictResult,
)
from pellucid.server.grpc.convert import to_dict, to_struct, to_timestamp
from pellucid.server.grpc.translate.concepts import concept_messages, concept_values
from pellucid.server.records import ModelRecord, ModelVersionRecord, OutputConfig


def output_config_record(config: v1.OutputConfig) -> OutputConfig:
    return OutputConfig(config.min_value, config.max_concepts, tuple(c.id for c in config.select_concepts))


def output_config_message(config: OutputConfig) -> v1.OutputConfig:
    return v1.OutputConfig(
        min_value=config.min_value,
        max_concepts=config.max_concepts,
        select_concepts=[v1.Concept(id=c) for c in config.select_concepts],
    )


def version_spec(version: v1.ModelVersion) -> VersionSpec:
    info = version.output_info
    return VersionSpec(
        id=version.id,
        description=version.description,
        params=to_dict(info.params),
        concepts=concept_values(info.concepts),
        output_config=output_config_record(info.output_config),
        runner_labels=tuple(version.runner_labels),
        item_timeout_seconds=version.item_timeout_seconds,
        metadata=to_dict(version.metadata),
    )


def version_message(v: ModelVersionRecord) -> v1.ModelVersion:
    return v1.ModelVersion(
        id=v.id,
        model_id=v.model_id,
        app_id=v.app_id,
        user_id=v.user_id,
        description=v.description,
        output_info=v1.OutputInfo(
            params=to_struct(v.params),
            concepts=concept_messages(v.concepts),
            output_config=output_config_message(v.output_config),
        ),
        runner_labels=list(v.runner_labels),
        item_timeout_seconds=v.item_timeout_seconds,
        metadata=to_struct(v.metadata),
        created_at=to_timestamp(v.created_at),
    )


def model_message(m: ModelRecord, version: ModelVersionRecord | None) -> v1.Model:
    return v1.Model(
        id=m.id,
        app_id=m.app_id,
        user_id=m.user_id,
        name=m.name,
        description=m.description,
        model_type_id=m.model_type_id,
        input_fields=list(m.input_fields),
        output_fields=list(m.output_fields),
        model_version=version_message(version) if version else None,
        created_at=to_timestamp(m.created_at),
        modified_at=to_timestamp(m.modified_at),
    )


# predicts


def predict_input(message: v1.Input) -> PredictInput:
    """The engine's view of one input: its content fields and metadata; the rest rides along in `extra`."""
    data = message.data
    present = {descriptor.name for descriptor, _ in data.ListFields()}
    media = []
    for kind in INPUT_FIELDS:
        if kind not in present:
            continue
        if kind == "text":
            media.append(Media("text", data.text.raw.encode("utf-8", "surrogatepass"), data.text.url))
        else:
            field = getattr(data, kind)
            media.append(Media(kind, field.base64, field.url, field.mime))
    rest = v1.Input()
    rest.CopyFrom(message)
    rest.id = ""
    rest.data.ClearField("image")
    rest.data.ClearField("video")
    rest.data.ClearField("audio")
    rest.data.ClearField("text")
    rest.data.ClearField("metadata")
    rest.data.ClearField("embeddings")
    rest.data.ClearField("concepts")
    rest.data.ClearField("regions")
    if not rest.data.ByteSize():
        rest.ClearField("data")
    extra = rest.SerializeToString() if rest.ByteSize() else b""
    metadata = to_dict(data.metadata) if data.HasField("metadata") else None
    return PredictInput(
        message.id,
        tuple(media),
        metadata,
        extra,
        embeddings=tuple(tuple(e.vector) for e in data.embeddings),
        concepts=concept_values(data.concepts),
        regions=tuple(region_record(r) for r in data.regions),
    )


def region_record(region: v1.Region) -> OutputRegion:
    """A region of a predict's input or output, in the engine's terms."""
    box = region.region_info.bounding_box if region.region_info.HasField("bounding_box") else None
    data = region.data
    image = None
    if data.HasField("image"):
        image = Media("image", data.image.base64, data.image.url, data.image.mime)
    rest = v1.Region()
    rest.CopyFrom(region)
    rest.id = ""
    rest.region_info.ClearField("bounding_box")
    for modelled in ("concepts", "image", "text", "embeddings"):
        rest.data.ClearField(modelled)
    for part in ("region_info", "data"):
        if not getattr(rest, part).ByteSize():
            rest.ClearField(part)
    return OutputRegion(
        id=region.id,
        bbox=(box.top_row, box.left_col, box.bottom_row, box.right_col) if box is not None else None,
        concepts=concept_values(data.concepts),
        image=image,
        text=data.text.raw,
        embeddings=tuple(tuple(e.vector) for e in data.embeddings),
        extra=rest.SerializeToString() if rest.ByteSize() else b"",
    )


def region_message(region: OutputRegion) -> v1.Region:
    message = v1.Region.FromString(region.extra) if region.extra else v1.Region()
    message.id = region.id
    if region.bbox is not None:
        top, left, bottom, right = region.bbox
        message.region_info.bounding_box.CopyFrom(
            v1.BoundingBox(top_row=top, left_col=left, bottom_row=bottom, right_col=right)
        )
    if region.concepts:
        message.data.concepts.extend(concept_messages(region.concepts))
    if region.image is not None:
        image = message.data.image
        image.SetInParent()
        image.base64, image.url, image.mime = region.image.data, region.image.url, region.image.mime
    if region.text:
        message.data.text.raw = region.text
    for vector in region.embeddings:
        message.data.embeddings.add(vector=vector, num_dimensions=len(vector))
    return message


def input_message(given: PredictInput) -> v1.Input:
    message = v1.Input.FromString(given.extra) if given.extra else v1.Input()
    message.id = given.id
    for media in given.media:
        if media.kind == "text":
            message.data.text.raw = media.data.decode("utf-8", "surrogatepass")
            message.data.text.url = media.url
            continue
        field = getattr(message.data, media.kind)
        field.SetInParent()
        field.base64, field.url, field.mime = media.data, media.url, media.mime
    if given.metadata is not None:
        message.data.metadata.update(given.metadata)
    for vector in given.embeddings:
        message.data.embeddings.add(vector=vector, num_dimensions=len(vector))
    if given.concepts:
        message.data.concepts.extend(concept_messages(given.concepts))
    message.data.regions.extend(region_message(r) for r in given.regions)
    return message


def predict_request(request: v1.PostModelOutputsRequest, deadline_seconds: float) -> PredictRequest:
    return PredictRequest(
        user_id=request.user_id,
        app_id=request.app_id,
        model_id=request.model_id,
        version_id=request.version_id,
        inputs=tuple(predict_input(i) for i in request.inputs),
        params=to_dict(request.inference_params),
        output_config=output_config_record(request.output_config) if request.HasField("output_config") else None,
        method=request.method,
        deadline_seconds=deadline_seconds,
    )


# the media an output can pass on (random-sample's kept input), as OutputData.media
_OUTPUT_MEDIA = ("image", "video", "audio")


def output_record(output: v1.Output) -> PredictOutput:
    """One output of a runner's answer; what the engine does not model rides along in `extra`."""
    try:
        code = OutputCode(output.status.code)
    except ValueError:
        code = OutputCode.UNKNOWN
    data = output.data
    rest = v1.Output()
    rest.CopyFrom(output)
    rest.ClearField("status")
    rest.input.id = ""
    rest.data.ClearField("concepts")
    rest.data.ClearField("metadata")
    rest.data.ClearField("embeddings")
    rest.data.ClearField("regions")
    for kind in _OUTPUT_MEDIA:
        rest.data.ClearField(kind)  # type: ignore[arg-type]
    rest.data.text.raw = ""
    if not rest.data.text.url:
        rest.data.ClearField("text")
    if not rest.input.ByteSize():
        rest.ClearField("input")
    if not rest.data.ByteSize():
        rest.ClearField("data")
    return PredictOutput(
        input_id=output.input.id,
        code=code,
        message=output.status.message,
        data=OutputData(
            concepts=concept_values(data.concepts),
            text=data.text.raw,
            metadata=to_dict(data.metadata) if data.HasField("metadata") else None,
            extra=rest.SerializeToString() if rest.ByteSize() else b"",
            embeddings=tuple(tuple(e.vector) for e in data.embeddings),
            regions=tuple(region_record(r) for r in data.regions),
            media=tuple(
                Media(kind, field.base64, field.url, field.mime)
                for kind in _OUTPUT_MEDIA
                if data.HasField(kind)  # type: ignore[arg-type]
                for field in (getattr(data, kind),)
            ),
        ),
    )


def output_message(output: PredictOutput) -> v1.Output:
    message = v1.Output.FromString(output.data.extra) if output.data.extra else v1.Output()
    if output.code is not OutputCode.OK or output.message:
        message.status.code = int(output.code)  # type: ignore[assignment]
        message.status.message = output.message
    if output.input_id:
        message.input.id = output.input_id
    if output.data.concepts:
        message.data.concepts.extend(concept_messages(output.data.concepts))
    if output.data.text:
        message.data.text.raw = output.data.text
    if output.data.metadata is not None:
        message.data.metadata.update(output.data.metadata)
    for vector in output.data.embeddings:
        message.data.embeddings.add(vector=vector, num_dimensions=len(vector))
    message.data.regions.extend(region_message(r) for r in output.data.regions)
    for media in output.data.media:
        field = getattr(message.data, media.kind)
        field.SetInParent()
        field.base64, field.url, field.mime = media.data, media.url, media.mime
    return message


def predict_response(result: PredictResult) -> v1.PostModelOutputsResponse:
    return v1.PostModelOutputsResponse(
        outputs=[output_message(o) for o in result.outputs],
        model_id=result.model_id,
        version_id=result.version_id,
        runner_id=result.runner_id,
    )
