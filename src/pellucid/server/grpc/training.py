"""TrainingService: trainable model types, training jobs, cluster assignments and exports."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from pellucid.api import v1
from pellucid.server.engine import Engine
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.convert import page_request, to_dict, to_struct
from pellucid.server.grpc.idempotency import replayable
from pellucid.server.grpc.translate.training import (
    assignment_message,
    model_type_message,
    param_info_message,
    status_message,
)

EXPORT_CHUNK_BYTES = 1 << 20


class TrainingServicer(v1.TrainingServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ListTrainableModelTypes(
        self, request: v1.ListTrainableModelTypesRequest, context: grpc.ServicerContext
    ) -> v1.ListTrainableModelTypesResponse:
        types, token = self.engine.training.list_types(page_request(request))
        return v1.ListTrainableModelTypesResponse(
            model_types=[model_type_message(t) for t in types], next_page_token=token
        )

    def GetTrainingParams(
        self, request: v1.GetTrainingParamsRequest, context: grpc.ServicerContext
    ) -> v1.TrainingParams:
        model_type, params = self.engine.training.params(
            principal(), request.user_id, request.app_id, request.model_id, request.template, to_dict(request.params)
        )
        return v1.TrainingParams(
            model_type_id=model_type.type_id,
            template=request.template,
            params=to_struct(params),
            param_info=[param_info_message(p) for p in model_type.params],
        )

    @replayable(v1.TrainingStatus)
    def Train(self, request: v1.TrainRequest, context: grpc.ServicerContext) -> v1.TrainingStatus:
        _, job = self.engine.training.train(
            principal(),
            request.user_id,
            request.app_id,
            request.model_id,
            to_dict(request.params),
            request.template,
            request.version_id,
            request.description,
        )
        return status_message(job)

    def GetTrainingStatus(
        self, request: v1.GetTrainingStatusRequest, context: grpc.ServicerContext
    ) -> v1.TrainingStatus:
        job = self.engine.training.status(
            principal(), request.user_id, request.app_id, request.model_id, request.version_id
        )
        return status_message(job, request.include_logs)

    def ListClusterAssignments(
        self, request: v1.ListClusterAssignmentsRequest, context: grpc.ServicerContext
    ) -> v1.ListClusterAssignmentsResponse:
        assignments, token, job = self.engine.training.assignments(
            principal(),
            request.user_id,
            request.app_id,
            request.model_id,
            request.version_id,
            page_request(request),
            list(request.input_ids) or None,
        )
        return v1.ListClusterAssignmentsResponse(
            assignments=[assignment_message(a) for a in assignments], next_page_token=token, version_id=job.version_id
        )

    def GetModelExport(
        self, request: v1.GetModelExportRequest, context: grpc.ServicerContext
    ) -> Iterator[v1.ExportChunk]:
        version_id, data = self.engine.training.export(
            principal(), request.user_id, request.app_id, request.model_id, request.version_id
        )
        for start in range(0, max(len(data), 1), EXPORT_CHUNK_BYTES):
            chunk = v1.ExportChunk(data=data[start : start + EXPORT_CHUNK_BYTES])
            if not start:
                chunk.total_bytes, chunk.version_id = len(data), version_id
            yield chunk
