"""Training: protos <-> engine types (trainable model types, params, job records)."""

from __future__ import annotations

from typing import Any

from google.protobuf.struct_pb2 import Value

from pellucid.api import v1
from pellucid.server.engine.local_models import ParamInfo
from pellucid.server.engine.trainable import TrainableModelType, cluster_concept
from pellucid.server.grpc.convert import to_struct, to_timestamp
from pellucid.server.records import ClusterAssignment, TrainingJobRecord, TrainingState

STATES = {
    TrainingState.QUEUED: v1.TrainingStatus.QUEUED,
    TrainingState.TRAINING: v1.TrainingStatus.TRAINING,
    TrainingState.TRAINED: v1.TrainingStatus.TRAINED,
    TrainingState.FAILED: v1.TrainingStatus.FAILED,
    TrainingState.NO_DATA: v1.TrainingStatus.NO_DATA,
}


def _value(value: Any) -> Value:
    return to_struct({"v": value}).fields["v"]


def param_info_message(info: ParamInfo) -> v1.TrainingParamInfo:
    return v1.TrainingParamInfo(
        name=info.name,
        kind=info.kind,
        default=_value(info.default),
        help=info.help,
        minimum=info.minimum,
        maximum=info.maximum,
        choices=list(info.choices),
        required=info.required,
    )


def model_type_message(model_type: TrainableModelType) -> v1.TrainableModelType:
    return v1.TrainableModelType(
        id=model_type.type_id,
        description=model_type.description,
        reads=list(model_type.reads),
        makes=list(model_type.makes),
        params=[param_info_message(p) for p in model_type.params],
        templates=[
            v1.TrainingTemplate(name=name, params=to_struct(values)) for name, values in model_type.templates.items()
        ],
    )


def status_message(job: TrainingJobRecord, include_logs: bool = False) -> v1.TrainingStatus:
    return v1.TrainingStatus(
        model_id=job.model_id,
        version_id=job.version_id,
        model_type_id=job.model_type_id,
        state=STATES[job.state],
        reason=job.reason,
        progress=job.progress,
        attempts=job.attempts,
        params=to_struct(job.params),
        metrics=to_struct(job.metrics),
        logs=job.logs if include_logs else "",
        created_at=to_timestamp(job.created_at),
        started_at=to_timestamp(job.started_at),
        finished_at=to_timestamp(job.finished_at),
    )


def assignment_message(assignment: ClusterAssignment) -> v1.ClusterAssignment:
    return v1.ClusterAssignment(
        input_id=assignment.input_id,
        cluster=assignment.cluster,
        concept_id=cluster_concept(assignment.cluster),
        distance=assignment.distance,
    )
