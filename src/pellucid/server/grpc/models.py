"""ModelService: models, versions and predictions (routed to runners)."""

from __future__ import annotations

import grpc

from pellucid.api import v1
from pellucid.server.engine import Engine
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.convert import page_request
from pellucid.server.grpc.idempotency import replayable
from pellucid.server.grpc.translate.models import (
    feature_spec_record,
    model_message,
    predict_request,
    predict_response,
    version_message,
    version_spec,
)

# A predict waits for a runner until a margin before the caller's deadline, so that the caller
# hears why ("no runner serves ...") instead of a bare DEADLINE_EXCEEDED. The deadline reaches the
# server in the grpc-timeout header, which keeps at most 3-4 digits and rounds up: a 30 s timeout
# arrives up to 100 ms longer, a 300 s one up to 1 s (always under 1%). The margin covers that
# rounding plus the trip of the answer back, and takes at most an eighth of a short deadline.
ANSWER_MARGIN = 0.25
TIMEOUT_ROUNDING = 0.01
NO_DEADLINE_WAIT = 60.0
# grpc reports a far deadline (some clients send one of years) as seconds that no wait can take
MAX_RUNNER_WAIT = 24 * 3600.0


def runner_wait(remaining: float | None) -> float:
    """How long a predict may wait for its runner when the caller has `remaining` seconds left."""
    if remaining is None:
        return NO_DEADLINE_WAIT
    remaining = min(remaining, MAX_RUNNER_WAIT)
    margin = min(ANSWER_MARGIN + TIMEOUT_ROUNDING * remaining, remaining / 8)
    return max(remaining - margin, 0.0)


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
            input_specs=tuple(feature_spec_record(s) for s in m.input_specs),
            output_specs=tuple(feature_spec_record(s) for s in m.output_specs),
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
        wait = runner_wait(context.time_remaining())
        pending = self.engine.models.submit(principal(), predict_request(request, wait))
        # runs when the call ends, also when the caller cancels it (after an answer: a no-op)
        if not context.add_callback(pending.cancel):
            pending.cancel()  # the call has already ended
        return predict_response(pending.result())
