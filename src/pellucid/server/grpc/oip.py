"""inference.GRPCInferenceService: the Open Inference Protocol over gRPC (engine/inference.py decides).

Stock clients (tritonclient.grpc, kserve's InferenceGRPCClient) call it on pellucid's gRPC port
with a PAT or a deployment token in the `authorization` metadata (`Bearer <token>`); a model is
`<app>/<model>` or a deployment id (a deployment token reaches only its own). ServerLive and
ServerReady answer without a token, as health checks do. Replies always carry `raw_output_contents`: tritonclient
cannot read typed contents. Requests may use raw or typed contents, not both.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np

from pellucid.api.oip import grpc_service_pb2 as pb
from pellucid.api.oip import grpc_service_pb2_grpc as pb_grpc
from pellucid.server.engine import Engine
from pellucid.server.engine.errors import InvalidArgument
from pellucid.server.engine.inference import NamedTensor, OpenInference, tensor_dtype
from pellucid.server.engine.predict import BYTES_DTYPE, Tensor, pack_bytes
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.models import runner_wait

SERVICE_NAME = "inference.GRPCInferenceService"
# the methods that answer without a token (load balancers and orchestrators probe them)
UNAUTHENTICATED_METHODS = (f"/{SERVICE_NAME}/ServerLive", f"/{SERVICE_NAME}/ServerReady")

# the InferTensorContents field that carries each datatype's typed contents (FP16: raw only)
_TYPED_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def request_tensors(request: Any) -> list[NamedTensor]:
    """The input tensors of a ModelInferRequest, from raw or typed contents (not both)."""
    typed = [i.name for i in request.inputs if i.HasField("contents")]
    raw = list(request.raw_input_contents)
    if raw and typed:
        raise InvalidArgument(
            "the request has both raw_input_contents and typed contents (in "
            f"{', '.join(map(repr, typed))}): use one or the other",
            field="raw_input_contents",
        )
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: give one per input, in order",
            field="raw_input_contents",
        )
    tensors = []
    for i, given in enumerate(request.inputs):
        dtype = tensor_dtype(given.datatype, given.name)
        shape = tuple(given.shape)
        if raw:
            data = raw[i]
        else:
            data = _typed_data(given, dtype, shape)
        tensors.append(NamedTensor(given.name, Tensor(dtype, shape, data)))
    return tensors


def _typed_data(given: Any, dtype: str, shape: tuple[int, ...]) -> bytes:
    field = _TYPED_FIELDS.get(given.datatype)
    if field is None:
        raise InvalidArgument(
            f"tensor {given.name!r}: {given.datatype} has no typed contents; send it in raw_input_contents",
            field=f"inputs.{given.name}.contents",
        )
    values = list(getattr(given.contents, field))
    size = 1
    for dim in shape:
        size *= dim
    if len(values) != size:
        raise InvalidArgument(
            f"tensor {given.name!r}: shape {list(shape)} needs {size} elements, contents.{field} holds {len(values)}",
            field=f"inputs.{given.name}.contents",
        )
    if dtype == BYTES_DTYPE:
        return pack_bytes(values)
    try:
        array = np.array(values, dtype=np.dtype(dtype).newbyteorder("<"))
    except OverflowError:
        raise InvalidArgument(
            f"tensor {given.name!r}: a value of contents.{field} does not fit {given.datatype}",
            field=f"inputs.{given.name}.contents",
        ) from None
    return array.tobytes()


def infer_response(result: Any, request_id: str) -> Any:
    response = pb.ModelInferResponse(model_name=result.model_name, model_version=result.model_version, id=request_id)
    for named in result.outputs:
        response.outputs.add(name=named.name, datatype=named.datatype, shape=list(named.tensor.shape))
        response.raw_output_contents.append(named.tensor.data)
    return response


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The six calls of GRPCInferenceService that pellucid serves."""

    def __init__(self, engine: Engine) -> None:
        self.oip = OpenInference(engine.models, engine.deployments)

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=True)

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.ModelReadyResponse(ready=self.oip.model_ready(principal(), request.name, request.version))

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        meta = self.oip.server_metadata()
        return pb.ServerMetadataResponse(name=meta.name, version=meta.version, extensions=list(meta.extensions))

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        meta = self.oip.model_metadata(principal(), request.name, request.version)
        response = pb.ModelMetadataResponse(name=meta.name, versions=list(meta.versions), platform=meta.platform)
        for target, tensors in ((response.inputs, meta.inputs), (response.outputs, meta.outputs)):
            for t in tensors:
                target.add(name=t.name, datatype=t.datatype, shape=list(t.shape))
        return response

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:
        pending = self.oip.submit(
            principal(),
            request.model_name,
            request.model_version,
            request_tensors(request),
            [o.name for o in request.outputs],
            runner_wait(context.time_remaining()),
        )
        if not context.add_callback(pending.cancel):
            pending.cancel()
        return infer_response(pending.result(), request.id)


def add_to_server(servicer: InferenceServicer, server: grpc.Server) -> None:
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)


__all__ = ["SERVICE_NAME", "UNAUTHENTICATED_METHODS", "InferenceServicer", "add_to_server", "request_tensors"]
