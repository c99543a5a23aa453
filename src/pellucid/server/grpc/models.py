"""ModelService: models, versions and predictions (routed to runners)."""

from __future__ import annotations

import threading

import grpc

from pellucid.api import v1
from pellucid.server.engine import Engine
from pellucid.server.engine.models import INPUT_FIELDS, PredictInput, VersionSpec
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.convert import page_request, to_dict, to_struct, to_timestamp
from pellucid.server.grpc.idempotency import replayable
from pellucid.server.grpc.inputs import concept_messages, concept_values
from pellucid.server.records import ModelRecord, ModelVersionRecord, OutputConfig

# A predict waits for a runner until a margin before the caller's deadline, so that the caller
# hears why ("no runner serves ...") instead of a bare DEADLINE_EXCEEDED. The deadline reaches the
# server in the grpc-timeout header, which keeps at most 3-4 digits and rounds up: a 30 s timeout
# arrives up to 100 ms longer, a 300 s one up to 1 s (always under 1%). The margin covers that
# rounding plus the trip of the answer back, and takes at most an eighth of a short deadline.
ANSWER_MARGIN = 0.25
TIMEOUT_ROUNDING = 0.01
NO_DEADLINE_WAIT = 60.0


def runner_wait(remaining: float | None) -> float:
    """How long a predict may wait for its runner when the caller has `remaining` seconds left."""
    if remaining is None:
        return NO_DEADLINE_WAIT
    margin = min(ANSWER_MARGIN + TIMEOUT_ROUNDING * remaining, remaining / 8)
    return max(remaining - margin, 0.0)


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


def predict_input(message: v1.Input) -> PredictInput:
    data = message.data
    fields = tuple(kind for kind in INPUT_FIELDS if data.HasField(kind))
    return PredictInput(fields=fields, metadata=to_dict(data.metadata))


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


class ModelServicer(v1.ModelServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @replayable(v1.Model)
    def CreateModel(self, request: v1.CreateModelRequest, context: grpc.ServicerContext) -> v1.Model:
        m = request.model
        model, version = self.engine.models.create(
            principal(),
            request.user_id,
            request.app_id,
            m.id,
            name=m.name,
            description=m.description,
            model_type_id=m.model_type_id,
            input_fields=tuple(m.input_fields),
            output_fields=tuple(m.output_fields),
            version=version_spec(request.version),
        )
        return model_message(model, version)

    def GetModel(self, request: v1.GetModelRequest, context: grpc.ServicerContext) -> v1.Model:
        return model_message(
            *self.engine.models.get(principal(), request.user_id, request.app_id, request.model_id, request.version_id)
        )

    def ListModels(self, request: v1.ListModelsRequest, context: grpc.ServicerContext) -> v1.ListModelsResponse:
        models, token = self.engine.models.list(
            principal(), request.user_id, request.app_id, page_request(request), request.query
        )
        return v1.ListModelsResponse(models=[model_message(m, v) for m, v in models], next_page_token=token)

    @replayable(v1.DeleteModelResponse)
    def DeleteModel(self, request: v1.DeleteModelRequest, context: grpc.ServicerContext) -> v1.DeleteModelResponse:
        self.engine.models.delete(principal(), request.user_id, request.app_id, request.model_id)
        return v1.DeleteModelResponse()

    @replayable(v1.ModelVersion)
    def CreateModelVersion(
        self, request: v1.CreateModelVersionRequest, context: grpc.ServicerContext
    ) -> v1.ModelVersion:
        return version_message(
            self.engine.models.create_version(
                principal(), request.user_id, request.app_id, request.model_id, version_spec(request.version)
            )
        )

    def ListModelVersions(
        self, request: v1.ListModelVersionsRequest, context: grpc.ServicerContext
    ) -> v1.ListModelVersionsResponse:
        versions, token = self.engine.models.list_versions(
            principal(), request.user_id, request.app_id, request.model_id, page_request(request)
        )
        return v1.ListModelVersionsResponse(versions=[version_message(v) for v in versions], next_page_token=token)

    @replayable(v1.DeleteModelVersionResponse)
    def DeleteModelVersion(
        self, request: v1.DeleteModelVersionRequest, context: grpc.ServicerContext
    ) -> v1.DeleteModelVersionResponse:
        self.engine.models.delete_version(
            principal(), request.user_id, request.app_id, request.model_id, request.version_id
        )
        return v1.DeleteModelVersionResponse()

    def PostModelOutputs(
        self, request: v1.PostModelOutputsRequest, context: grpc.ServicerContext
    ) -> v1.PostModelOutputsResponse:
        config = output_config_record(request.output_config) if request.HasField("output_config") else None
        prediction = self.engine.models.prepare(
            principal(),
            request.user_id,
            request.app_id,
            request.model_id,
            request.version_id,
            [predict_input(i) for i in request.inputs],
            request.method,
            to_dict(request.inference_params),
            config,
        )
        version = prediction.version
        routed = v1.PostModelOutputsRequest()
        routed.CopyFrom(request)
        routed.user_id, routed.app_id, routed.version_id = version.user_id, version.app_id, version.id
        routed.method = request.method or "predict"
        work = v1.WorkItem(
            method=routed.method,
            request=routed,
            output_info=v1.OutputInfo(
                params=to_struct(prediction.params),
                concepts=concept_messages(version.concepts),
                output_config=output_config_message(prediction.output_config),
            ),
        )
        wait = runner_wait(context.time_remaining())
        abandoned = threading.Event()
        if not context.add_callback(abandoned.set):  # runs when the call ends, including when the caller cancels it
            abandoned.set()  # the call has already ended
        result, runner_id = self.engine.models.route(prediction, work.SerializeToString(), wait, abandoned)
        response = v1.PostModelOutputsResponse.FromString(result)
        response.model_id, response.version_id, response.runner_id = version.model_id, version.id, runner_id
        return response
