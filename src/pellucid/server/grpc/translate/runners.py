"""Runners and the runner wire format: protos <-> engine types, and the WorkCodec the engine uses."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from pellucid.api import v1
from pellucid.server.engine.predict import PredictOutput, RunnerWork
from pellucid.server.engine.routing import StreamEnd, StreamMessage, WorkOrder
from pellucid.server.grpc.convert import to_struct, to_timestamp
from pellucid.server.grpc.translate.concepts import concept_messages
from pellucid.server.grpc.translate.models import input_message, output_config_message, output_record
from pellucid.server.records import RunnerRecord


def runner_message(runner: RunnerRecord, live: tuple[int, int] = (0, 0)) -> v1.Runner:
    return v1.Runner(
        id=runner.id,
        user_id=runner.user_id,
        labels=list(runner.labels),
        description=runner.description,
        created_at=to_timestamp(runner.created_at),
        connections=live[0],
        capacity=live[1],
    )


class ProtoWorkCodec:
    """The engine's WorkCodec for runners on the gRPC stream: a WorkItem out, a PostModelOutputsResponse back."""

    def encode_work(self, work: RunnerWork) -> bytes:
        version = work.version
        request = v1.PostModelOutputsRequest(
            user_id=version.user_id,
            app_id=version.app_id,
            model_id=version.model_id,
            version_id=version.id,
            inputs=[input_message(i) for i in work.inputs],
            inference_params=to_struct(work.params),
            output_config=output_config_message(work.output_config),
            method=work.method,
        )
        item = v1.WorkItem(
            method=work.method,
            request=request,
            output_info=v1.OutputInfo(
                params=to_struct(work.params),
                concepts=concept_messages(version.concepts),
                output_config=output_config_message(work.output_config),
            ),
        )
        return item.SerializeToString()

    def decode_outputs(self, result: bytes) -> list[PredictOutput]:
        return [output_record(o) for o in v1.PostModelOutputsResponse.FromString(result).outputs]


def server_message(message: StreamMessage) -> v1.ServerMessage | None:
    """What the runner is sent for an engine message (None for the end of the stream)."""
    if isinstance(message, StreamEnd):
        return None
    if isinstance(message, WorkOrder):
        work = v1.WorkItem.FromString(message.payload)
        work.item_id = message.item_id
        lease = Timestamp()
        lease.FromNanoseconds(int(message.lease_deadline * 1e9))
        work.lease_deadline.CopyFrom(lease)
        return v1.ServerMessage(work=work)
    return v1.ServerMessage(cancel=v1.CancelItem(item_id=message.item_id, reason=message.reason))
