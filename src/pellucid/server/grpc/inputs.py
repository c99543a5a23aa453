"""InputService: ingestion, listing, download and annotations."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Literal

import grpc

from pellucid.api import v1
from pellucid.server.engine import Engine
from pellucid.server.engine.inputs import AnnotationOutcome, InputOutcome, InputSpec, MediaSpec
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.convert import page_request, to_dict, to_struct, to_timestamp
from pellucid.server.grpc.errors import item_status
from pellucid.server.grpc.idempotency import replayable
from pellucid.server.grpc.translate.concepts import concept_messages, concept_values
from pellucid.server.records import (
    AnnotationRecord,
    IndexState,
    InputRecord,
    JobRecord,
    RegionRecord,
)

MEDIA_KINDS: tuple[Literal["image", "video", "audio"], ...] = ("image", "video", "audio")
_ACTIONS = {
    v1.ANNOTATION_ACTION_UNSPECIFIED: "merge",
    v1.ANNOTATION_ACTION_MERGE: "merge",
    v1.ANNOTATION_ACTION_OVERWRITE: "overwrite",
    v1.ANNOTATION_ACTION_REMOVE: "remove",
}


def region_records(regions: Iterable[v1.Region]) -> tuple[RegionRecord, ...]:
    records = []
    for r in regions:
        info = r.region_info
        box = info.bounding_box if info.HasField("bounding_box") else None
        records.append(
            RegionRecord(
                id=r.id,
                bbox=(box.top_row, box.left_col, box.bottom_row, box.right_col) if box is not None else None,
                polygon=tuple((p.row, p.col) for p in info.polygon.points) if info.HasField("polygon") else None,
                concepts=concept_values(r.data.concepts),
            )
        )
    return tuple(records)


def region_messages(regions: tuple[RegionRecord, ...]) -> list[v1.Region]:
    messages = []
    for r in regions:
        info = v1.RegionInfo()
        if r.bbox is not None:
            info.bounding_box.CopyFrom(
                v1.BoundingBox(top_row=r.bbox[0], left_col=r.bbox[1], bottom_row=r.bbox[2], right_col=r.bbox[3])
            )
        if r.polygon is not None:
            info.polygon.CopyFrom(v1.Polygon(points=[v1.Point(row=row, col=col) for row, col in r.polygon]))
        messages.append(v1.Region(id=r.id, region_info=info, data=v1.Data(concepts=concept_messages(r.concepts))))
    return messages


def input_spec(message: v1.Input) -> InputSpec:
    data = message.data
    media = [
        MediaSpec(kind, getattr(data, kind).base64, getattr(data, kind).url, getattr(data, kind).blob_sha256)
        for kind in MEDIA_KINDS
        if data.HasField(kind)
    ]
    geo = (data.geo.geo_point.longitude, data.geo.geo_point.latitude) if data.HasField("geo") else None
    return InputSpec(
        id=message.id,
        media=tuple(media),
        text=data.text.raw,
        text_url=data.text.url,
        labels=concept_values(data.concepts),
        regions=region_records(data.regions),
        metadata=to_dict(data.metadata),
        geo=geo,
        dataset_ids=tuple(message.dataset_ids),
    )


INDEX_STATUS_DESCRIPTIONS = {
    IndexState.READY: "indexed",
    IndexState.PENDING: "waiting to be indexed",
    IndexState.IN_PROGRESS: "being indexed",
    IndexState.FAILED: "indexing failed",
}


def index_status(record: InputRecord) -> v1.Status:
    """An input's index state as a Status (codes INPUT_INDEX_*, the reason of a failure in message)."""
    return v1.Status(
        code=int(record.index_state),  # type: ignore[arg-type]
        description=INDEX_STATUS_DESCRIPTIONS[record.index_state],
        message=record.index_message,
    )


def input_message(record: InputRecord) -> v1.Input:
    data = v1.Data(concepts=concept_messages(record.labels), metadata=to_struct(record.metadata))
    if record.input_type == "image":
        data.image.CopyFrom(
            v1.Image(
                url=record.media_url,
                blob_sha256=record.media_sha256,
                size=record.media_size,
                mime=record.media_mime,
                width=record.width,
                height=record.height,
            )
        )
    elif record.input_type in ("video", "audio"):
        getattr(data, record.input_type).CopyFrom(
            getattr(v1, record.input_type.title())(
                url=record.media_url, blob_sha256=record.media_sha256, size=record.media_size, mime=record.media_mime
            )
        )
    if record.text or record.text_url:
        data.text.CopyFrom(v1.Text(raw=record.text, url=record.text_url))
    if record.geo is not None:
        data.geo.geo_point.CopyFrom(v1.GeoPoint(longitude=record.geo[0], latitude=record.geo[1]))
    return v1.Input(
        id=record.id,
        data=data,
        dataset_ids=list(record.dataset_ids),
        input_type=record.input_type,
        created_at=to_timestamp(record.created_at),
        status=index_status(record),
    )


def annotation_record(message: v1.Annotation) -> AnnotationRecord:
    return AnnotationRecord(
        input_id=message.input_id,
        id=message.id,
        created_at=0.0,
        concepts=concept_values(message.data.concepts),
        regions=region_records(message.data.regions),
    )


def annotation_message(record: AnnotationRecord) -> v1.Annotation:
    return v1.Annotation(
        id=record.id,
        input_id=record.input_id,
        created_at=to_timestamp(record.created_at),
        data=v1.Data(concepts=concept_messages(record.concepts), regions=region_messages(record.regions)),
    )


def job_message(job: JobRecord) -> v1.InputsAddJob:
    return v1.InputsAddJob(
        id=job.id,
        received=job.received,
        stored=job.stored,
        duplicates=job.duplicates,
        failed=job.failed,
        created_at=to_timestamp(job.created_at),
        modified_at=to_timestamp(job.modified_at),
    )


def input_result(outcome: InputOutcome) -> v1.InputResult:
    return v1.InputResult(status=item_status(outcome.error), input_id=outcome.input_id, duplicate=outcome.duplicate)


class InputServicer(v1.InputServiceServicer):
    CHUNK_BYTES = 1024 * 1024

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @replayable(v1.PostInputsResponse)
    def PostInputs(self, request: v1.PostInputsRequest, context: grpc.ServicerContext) -> v1.PostInputsResponse:
        outcomes, job = self.engine.inputs.post(
            principal(),
            request.user_id,
            request.app_id,
            [input_spec(i) for i in request.inputs],
            request.inputs_add_job_id,
        )
        response = v1.PostInputsResponse(results=[input_result(o) for o in outcomes])
        if job is not None:
            response.job.CopyFrom(job_message(job))
        return response

    def UploadBlob(self, request_iterator: Iterator[v1.BlobChunk], context: grpc.ServicerContext) -> v1.BlobRef:
        first = next(request_iterator, v1.BlobChunk())
        chunks = (c.data for c in itertools.chain([first], request_iterator))
        sha, size = self.engine.inputs.upload_blob(principal(), first.user_id, first.app_id, chunks, first.sha256)
        return v1.BlobRef(sha256=sha, size=size)

    def GetInputsAddJob(self, request: v1.GetInputsAddJobRequest, context: grpc.ServicerContext) -> v1.InputsAddJob:
        return job_message(self.engine.inputs.get_job(principal(), request.user_id, request.app_id, request.job_id))

    def GetInput(self, request: v1.GetInputRequest, context: grpc.ServicerContext) -> v1.Input:
        return input_message(self.engine.inputs.get(principal(), request.user_id, request.app_id, request.input_id))

    def ListInputs(self, request: v1.ListInputsRequest, context: grpc.ServicerContext) -> v1.ListInputsResponse:
        records, token = self.engine.inputs.list(
            principal(),
            request.user_id,
            request.app_id,
            page_request(request),
            dataset_id=request.dataset_id,
            version_id=request.dataset_version_id,
            input_type=request.input_type,
            ids=list(request.ids),
        )
        return v1.ListInputsResponse(inputs=[input_message(r) for r in records], next_page_token=token)

    @replayable(v1.DeleteInputsResponse)
    def DeleteInputs(self, request: v1.DeleteInputsRequest, context: grpc.ServicerContext) -> v1.DeleteInputsResponse:
        outcomes = self.engine.inputs.delete(principal(), request.user_id, request.app_id, list(request.ids))
        return v1.DeleteInputsResponse(results=[input_result(o) for o in outcomes])

    def DownloadInputs(
        self, request: v1.DownloadInputsRequest, context: grpc.ServicerContext
    ) -> Iterator[v1.InputBytes]:
        for record, chunks in self.engine.inputs.download(
            principal(), request.user_id, request.app_id, list(request.ids)
        ):
            pending = None
            for chunk in chunks:
                if pending is not None:
                    yield pending
                pending = v1.InputBytes(input_id=record.id, data=chunk, mime=record.media_mime or "text/plain")
            pending = pending or v1.InputBytes(input_id=record.id, mime=record.media_mime or "text/plain")
            pending.last = True
            yield pending

    def _annotations(self, outcomes: list[AnnotationOutcome]) -> v1.AnnotationsResponse:
        return v1.AnnotationsResponse(
            results=[
                v1.AnnotationResult(
                    status=item_status(o.error),
                    duplicate=o.duplicate,
                    annotation=annotation_message(o.annotation) if o.annotation else None,
                )
                for o in outcomes
            ]
        )

    @replayable(v1.AnnotationsResponse)
    def PostAnnotations(
        self, request: v1.PostAnnotationsRequest, context: grpc.ServicerContext
    ) -> v1.AnnotationsResponse:
        return self._annotations(
            self.engine.inputs.post_annotations(
                principal(), request.user_id, request.app_id, [annotation_record(a) for a in request.annotations]
            )
        )

    @replayable(v1.AnnotationsResponse)
    def PatchAnnotations(
        self, request: v1.PatchAnnotationsRequest, context: grpc.ServicerContext
    ) -> v1.AnnotationsResponse:
        return self._annotations(
            self.engine.inputs.patch_annotations(
                principal(),
                request.user_id,
                request.app_id,
                [annotation_record(a) for a in request.annotations],
                _ACTIONS.get(request.action, "?"),
            )
        )

    def ListAnnotations(
        self, request: v1.ListAnnotationsRequest, context: grpc.ServicerContext
    ) -> v1.ListAnnotationsResponse:
        records, token = self.engine.inputs.list_annotations(
            principal(), request.user_id, request.app_id, page_request(request), list(request.input_ids)
        )
        return v1.ListAnnotationsResponse(annotations=[annotation_message(r) for r in records], next_page_token=token)
