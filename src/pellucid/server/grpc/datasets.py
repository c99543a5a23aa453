"""DatasetService: datasets, versions and their stats."""

from __future__ import annotations

import grpc

from pellucid.api import v1
from pellucid.server.engine import Engine
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.convert import page_request, to_dict, to_struct, to_timestamp
from pellucid.server.grpc.idempotency import replayable
from pellucid.server.records import DatasetRecord, DatasetStats, DatasetVersionRecord


def stats_message(stats: DatasetStats) -> v1.DatasetStats:
    return v1.DatasetStats(
        inputs=stats.inputs,
        inputs_by_type=stats.inputs_by_type,
        annotations=stats.annotations,
        regions=stats.regions,
        concept_counts=stats.concept_counts,
    )


def dataset_message(d: DatasetRecord) -> v1.Dataset:
    return v1.Dataset(
        id=d.id,
        app_id=d.app_id,
        user_id=d.user_id,
        description=d.description,
        metadata=to_struct(d.metadata),
        created_at=to_timestamp(d.created_at),
        modified_at=to_timestamp(d.modified_at),
        input_count=d.input_count,
    )


def version_message(v: DatasetVersionRecord) -> v1.DatasetVersion:
    return v1.DatasetVersion(
        id=v.id,
        dataset_id=v.dataset_id,
        app_id=v.app_id,
        user_id=v.user_id,
        description=v.description,
        metadata=to_struct(v.metadata),
        created_at=to_timestamp(v.created_at),
        stats=stats_message(v.stats),
    )


class DatasetServicer(v1.DatasetServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @replayable(v1.Dataset)
    def CreateDataset(self, request: v1.CreateDatasetRequest, context: grpc.ServicerContext) -> v1.Dataset:
        d = request.dataset
        return dataset_message(
            self.engine.datasets.create(
                principal(), request.user_id, request.app_id, d.id, d.description, to_dict(d.metadata)
            )
        )

    def GetDataset(self, request: v1.GetDatasetRequest, context: grpc.ServicerContext) -> v1.Dataset:
        return dataset_message(
            self.engine.datasets.get(principal(), request.user_id, request.app_id, request.dataset_id)
        )

    def ListDatasets(self, request: v1.ListDatasetsRequest, context: grpc.ServicerContext) -> v1.ListDatasetsResponse:
        items, token = self.engine.datasets.list(principal(), request.user_id, request.app_id, page_request(request))
        return v1.ListDatasetsResponse(datasets=[dataset_message(d) for d in items], next_page_token=token)

    @replayable(v1.DeleteDatasetResponse)
    def DeleteDataset(
        self, request: v1.DeleteDatasetRequest, context: grpc.ServicerContext
    ) -> v1.DeleteDatasetResponse:
        self.engine.datasets.delete(
            principal(), request.user_id, request.app_id, request.dataset_id, request.delete_inputs
        )
        return v1.DeleteDatasetResponse()

    @replayable(v1.DatasetVersion)
    def CreateDatasetVersion(
        self, request: v1.CreateDatasetVersionRequest, context: grpc.ServicerContext
    ) -> v1.DatasetVersion:
        return version_message(
            self.engine.datasets.create_version(
                principal(),
                request.user_id,
                request.app_id,
                request.dataset_id,
                request.version_id,
                request.description,
                to_dict(request.metadata),
            )
        )

    def ListDatasetVersions(
        self, request: v1.ListDatasetVersionsRequest, context: grpc.ServicerContext
    ) -> v1.ListDatasetVersionsResponse:
        items, token = self.engine.datasets.list_versions(
            principal(), request.user_id, request.app_id, request.dataset_id, page_request(request)
        )
        return v1.ListDatasetVersionsResponse(versions=[version_message(v) for v in items], next_page_token=token)

    @replayable(v1.DeleteDatasetVersionResponse)
    def DeleteDatasetVersion(
        self, request: v1.DeleteDatasetVersionRequest, context: grpc.ServicerContext
    ) -> v1.DeleteDatasetVersionResponse:
        self.engine.datasets.delete_version(
            principal(), request.user_id, request.app_id, request.dataset_id, request.version_id
        )
        return v1.DeleteDatasetVersionResponse()

    def GetDatasetStats(self, request: v1.GetDatasetStatsRequest, context: grpc.ServicerContext) -> v1.DatasetStats:
        return stats_message(
            self.engine.datasets.stats(
                principal(), request.user_id, request.app_id, request.dataset_id, request.version_id
            )
        )
