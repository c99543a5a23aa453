"""The Open Inference Protocol over gRPC (inference.GRPCInferenceService on pellucid's port), called
with pellucid's own copy of the protocol's stubs; tests/test_oip_triton.py calls it with the stock
tritonclient."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest

from pellucid.api.oip import grpc_service_pb2 as pb
from pellucid.api.oip import grpc_service_pb2_grpc as pb_grpc
from pellucid.client.app import App
from pellucid.client.user import User
from pellucid.tensors import pack_bytes, unpack_bytes
from tests.conftest import RunningServer
from tests.runner_models import TensorMath, tensor_math

MATH_INPUTS = [
    {"name": "x", "type": "array", "dtype": "float32", "shape": [-1, 3]},
    {"name": "n", "type": "array", "dtype": "int64", "shape": [-1]},
    {"name": "s", "type": "array", "dtype": "bytes", "shape": [-1], "required": False},
]
MATH_OUTPUTS = [
    {"name": "y", "type": "array", "dtype": "float32", "shape": [-1, 3]},
    {"name": "total", "type": "array", "dtype": "int64", "shape": [-1]},
    {"name": "shout", "type": "array", "dtype": "bytes", "shape": [-1]},
]


@dataclass
class MathModel:
    """A runner-served model over named arrays, reachable as `name` by the holder of `pat`."""

    user: User
    app: App
    name: str
    plain_name: str  # the same runner behind a model that declares no features
    pat: str


@pytest.fixture
def math_model(alice: User, unique: str) -> Iterator[MathModel]:
    label = f"oip-{unique}"
    app = alice.create_app(f"oip-{unique}")
    app.create_model("math", runner_labels=[label], input_specs=MATH_INPUTS, output_specs=MATH_OUTPUTS)
    app.create_model("plain", runner_labels=[label])
    alice.create_runner(f"math-{unique}", labels=[label])
    pat = alice._connection.settings.pat
    runner = TensorMath(f"math-{unique}", base_url=alice.base_url, pat=pat, num_parallel_polls=2)
    thread = threading.Thread(target=runner.start, daemon=True)
    thread.start()
    assert runner.wait_connected(10)
    yield MathModel(alice, app, f"{app.id}/math", f"{app.id}/plain", pat)
    runner.stop(drain=False)
    thread.join(10)


@pytest.fixture
def stub(server: RunningServer) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.server.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def auth(pat: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {pat}")]


def raw_request(name: str, tensors: dict[str, np.ndarray]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=name, id="req-1")
    for tensor_name, array in tensors.items():
        if array.dtype == object:
            request.inputs.add(name=tensor_name, datatype="BYTES", shape=list(array.shape))
            request.raw_input_contents.append(pack_bytes(array.ravel().tolist()))
        else:
            datatype = {"float32": "FP32", "int64": "INT64", "float64": "FP64"}[array.dtype.name]
            request.inputs.add(name=tensor_name, datatype=datatype, shape=list(array.shape))
            request.raw_input_contents.append(array.astype(array.dtype.newbyteorder("<")).tobytes())
    return request


def response_arrays(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    arrays = {}
    assert len(response.raw_output_contents) == len(response.outputs)
    for output, raw in zip(response.outputs, response.raw_output_contents):
        assert not output.HasField("contents"), "replies use raw_output_contents only"
        if output.datatype == "BYTES":
            items = np.empty(len(unpack_bytes(raw)), dtype=object)
            items[:] = unpack_bytes(raw)
            arrays[output.name] = items.reshape(tuple(output.shape))
        else:
            dtype = {"FP32": "<f4", "INT64": "<i8"}[output.datatype]
            arrays[output.name] = np.frombuffer(raw, dtype=dtype).reshape(tuple(output.shape))
    return arrays


def sample() -> dict[str, np.ndarray]:
    strings = np.empty(2, dtype=object)
    strings[:] = [b"hello", "gr\u00fc\u00df".encode()]
    return {
        "x": np.arange(6, dtype=np.float32).reshape(2, 3) / 4,
        "n": np.array([1, -2, 2**40], dtype=np.int64),
        "s": strings,
    }


def assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    for name, array in expected.items():
        assert got[name].shape == array.shape, name
        assert got[name].tolist() == array.tolist(), name


def test_health_and_server_metadata(stub: pb_grpc.GRPCInferenceServiceStub, math_model: MathModel) -> None:
    # liveness and readiness answer probes without a token; the rest needs one
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    with pytest.raises(grpc.RpcError) as refused:
        stub.ServerMetadata(pb.ServerMetadataRequest())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    meta = stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=auth(math_model.pat))
    assert meta.name == "pellucid" and meta.version
    ready = stub.ModelReady(pb.ModelReadyRequest(name=math_model.name), metadata=auth(math_model.pat))
    assert ready.ready
    missing = pb.ModelReadyRequest(name=f"{math_model.app.id}/nope")
    assert not stub.ModelReady(missing, metadata=auth(math_model.pat)).ready


def test_model_metadata_reports_the_declared_tensors(
    stub: pb_grpc.GRPCInferenceServiceStub, math_model: MathModel
) -> None:
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=math_model.name), metadata=auth(math_model.pat))
    assert meta.name == math_model.name and meta.platform == "pellucid" and len(meta.versions) == 1
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("x", "FP32", [-1, 3]),
        ("n", "INT64", [-1]),
        ("s", "BYTES", [-1]),
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("y", "FP32", [-1, 3]),
        ("total", "INT64", [-1]),
        ("shout", "BYTES", [-1]),
    ]
    with pytest.raises(grpc.RpcError) as missing:
        stub.ModelMetadata(pb.ModelMetadataRequest(name=f"{math_model.app.id}/nope"), metadata=auth(math_model.pat))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_infer_with_raw_contents_matches_the_runner(
    stub: pb_grpc.GRPCInferenceServiceStub, math_model: MathModel
) -> None:
    inputs = sample()
    response = stub.ModelInfer(raw_request(math_model.name, inputs), metadata=auth(math_model.pat), timeout=30)
    assert response.id == "req-1" and response.model_name == math_model.name and response.model_version
    assert_same(response_arrays(response), tensor_math(inputs))
    # requested outputs: only those, in the order asked
    request = raw_request(math_model.name, inputs)
    request.outputs.add(name="total")
    response = stub.ModelInfer(request, metadata=auth(math_model.pat), timeout=30)
    assert [o.name for o in response.outputs] == ["total"]


def test_infer_with_typed_contents(stub: pb_grpc.GRPCInferenceServiceStub, math_model: MathModel) -> None:
    inputs = sample()
    request = pb.ModelInferRequest(model_name=math_model.name)
    x = request.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    x.contents.fp32_contents.extend(inputs["x"].ravel().tolist())
    n = request.inputs.add(name="n", datatype="INT64", shape=[3])
    n.contents.int64_contents.extend(inputs["n"].tolist())
    s = request.inputs.add(name="s", datatype="BYTES", shape=[2])
    s.contents.bytes_contents.extend(inputs["s"].tolist())
    response = stub.ModelInfer(request, metadata=auth(math_model.pat), timeout=30)
    assert_same(response_arrays(response), tensor_math(inputs))
    # raw and typed together are refused
    request.raw_input_contents.extend([b"", b"", b""])
    with pytest.raises(grpc.RpcError) as both:
        stub.ModelInfer(request, metadata=auth(math_model.pat), timeout=30)
    assert both.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents and typed contents" in (both.value.details() or "")


def test_a_model_without_specs_takes_tensors_by_name(
    stub: pb_grpc.GRPCInferenceServiceStub, math_model: MathModel
) -> None:
    inputs = {"x": np.ones((1, 2), dtype=np.float32)}
    response = stub.ModelInfer(raw_request(math_model.plain_name, inputs), metadata=auth(math_model.pat), timeout=30)
    assert_same(response_arrays(response), tensor_math(inputs))


def test_bad_tensors_are_refused_naming_the_tensor(
    stub: pb_grpc.GRPCInferenceServiceStub, math_model: MathModel
) -> None:
    good = sample()

    def refused(request: pb.ModelInferRequest, *, pat: str = math_model.pat) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, metadata=auth(pat), timeout=30)
        return caught.value.code(), caught.value.details() or ""

    wrong_dtype = raw_request(math_model.name, {**good, "x": good["x"].astype(np.float64)})
    code, message = refused(wrong_dtype)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'x'" in message and "FP32" in message
    wrong_shape = raw_request(math_model.name, {**good, "x": np.zeros((2, 4), dtype=np.float32)})
    code, message = refused(wrong_shape)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'x'" in message and "[-1, 3]" in message
    short = raw_request(math_model.name, good)
    short.raw_input_contents[1] = short.raw_input_contents[1][:-1]
    code, message = refused(short)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'n'" in message and "bytes" in message
    unknown = raw_request(math_model.name, {**good, "z": np.zeros(1, dtype=np.float32)})
    code, message = refused(unknown)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no input 'z'" in message
    missing = raw_request(math_model.name, {"x": good["x"]})
    code, message = refused(missing)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "needs input 'n'" in message
    bad_datatype = raw_request(math_model.name, good)
    bad_datatype.inputs[0].datatype = "BF16"
    code, message = refused(bad_datatype)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'x'" in message and "BF16" in message
    unknown_output = raw_request(math_model.name, good)
    unknown_output.outputs.add(name="nope")
    code, message = refused(unknown_output)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no output 'nope'" in message
    code, _ = refused(raw_request(math_model.name, good), pat="not-a-token")
    assert code == grpc.StatusCode.UNAUTHENTICATED
    code, message = refused(raw_request("no-slash", good))
    assert code == grpc.StatusCode.NOT_FOUND and "<app>/<model>" in message


def test_another_users_model_is_not_found(
    stub: pb_grpc.GRPCInferenceServiceStub, math_model: MathModel, bob: User
) -> None:
    bob_pat = bob._connection.settings.pat
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(raw_request(math_model.name, sample()), metadata=auth(bob_pat), timeout=30)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_oip_module_loads_only_when_needed_and_outside_the_default_pool() -> None:
    """tritonclient and kserve register `inference.*` in protobuf's default pool: pellucid's copy
    must not (two definitions of one name cannot share it), and `import pellucid` loads none."""
    code = (
        "import sys, pellucid, pellucid.api.v1, pellucid.client.runner\n"
        "assert 'pellucid.api.oip.grpc_service_pb2' not in sys.modules\n"
        "from google.protobuf import descriptor_pool\n"
        "from pellucid.api.oip import grpc_service_pb2 as pb\n"
        "assert pb.DESCRIPTOR.pool is not descriptor_pool.Default()\n"
        "try:\n"
        "    descriptor_pool.Default().FindMessageTypeByName('inference.ModelInferRequest')\n"
        "    raise SystemExit('inference.ModelInferRequest is in the default pool')\n"
        "except KeyError:\n"
        "    pass\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_far_deadline_waits_for_a_bounded_time() -> None:
    """tritonclient's calls arrive with a deadline years away: a wait that long overflows the
    platform's timer (it answered INTERNAL before), so the wait for a runner is capped."""
    from pellucid.server.grpc.models import MAX_RUNNER_WAIT, runner_wait

    assert 0 < runner_wait(1e12) <= MAX_RUNNER_WAIT
    assert threading.Event().wait(runner_wait(1e12) / 1e9) is False  # a wait the timer can take


# The Open Inference Protocol's gRPC definition, field for field (specification/protocol/
# open_inference_grpc.proto of github.com/kserve/open-inference-protocol); [0]: in the oneof.
PROTOCOL = {
    "package": "inference",
    "ServerLiveRequest": "",
    "ServerLiveResponse": "bool live = 1",
    "ServerReadyRequest": "",
    "ServerReadyResponse": "bool ready = 1",
    "ModelReadyRequest": "string name = 1, string version = 2",
    "ModelReadyResponse": "bool ready = 1",
    "ServerMetadataRequest": "",
    "ServerMetadataResponse": "string name = 1, string version = 2, repeated string extensions = 3",
    "ModelMetadataRequest": "string name = 1, string version = 2",
    "ModelMetadataResponse": "string name = 1, repeated string versions = 2, string platform = 3, "
    "repeated TensorMetadata inputs = 4, repeated TensorMetadata outputs = 5, map<string, string> properties = 6",
    "ModelMetadataResponse.TensorMetadata": "string name = 1, string datatype = 2, repeated int64 shape = 3",
    "ModelInferRequest": "string model_name = 1, string model_version = 2, string id = 3, "
    "map<string, InferParameter> parameters = 4, repeated InferInputTensor inputs = 5, "
    "repeated InferRequestedOutputTensor outputs = 6, repeated bytes raw_input_contents = 7",
    "ModelInferRequest.InferInputTensor": "string name = 1, string datatype = 2, repeated int64 shape = 3, "
    "map<string, InferParameter> parameters = 4, InferTensorContents contents = 5",
    "ModelInferRequest.InferRequestedOutputTensor": "string name = 1, map<string, InferParameter> parameters = 2",
    "ModelInferResponse": "string model_name = 1, string model_version = 2, string id = 3, "
    "map<string, InferParameter> parameters = 4, repeated InferOutputTensor outputs = 5, "
    "repeated bytes raw_output_contents = 6",
    "ModelInferResponse.InferOutputTensor": "string name = 1, string datatype = 2, repeated int64 shape = 3, "
    "map<string, InferParameter> parameters = 4, InferTensorContents contents = 5",
    "InferParameter": "bool bool_param = 1 [0], int64 int64_param = 2 [0], string string_param = 3 [0], "
    "double double_param = 4 [0], uint64 uint64_param = 5 [0]",
    "InferTensorContents": "repeated bool bool_contents = 1, repeated int32 int_contents = 2, "
    "repeated int64 int64_contents = 3, repeated uint32 uint_contents = 4, repeated uint64 uint64_contents = 5, "
    "repeated float fp32_contents = 6, repeated double fp64_contents = 7, repeated bytes bytes_contents = 8",
    **{
        f"GRPCInferenceService/{method}": f"{method}Request -> {method}Response"
        for method in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")
    },
}


def protocol_fields() -> dict[str, str]:
    """pellucid's copy of the protocol, written as PROTOCOL is."""
    from google.protobuf import descriptor_pb2

    file = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(file)
    types = {number: name[5:].lower() for name, number in descriptor_pb2.FieldDescriptorProto.Type.items()}
    found = {"package": file.package}

    def type_of(field: descriptor_pb2.FieldDescriptorProto) -> str:
        return field.type_name.rsplit(".", 1)[-1] if field.type_name else types[field.type]

    def walk(messages: Any, prefix: str) -> None:
        for message in messages:
            entries = {n.name: n for n in message.nested_type if n.options.map_entry}
            described = []
            for field in message.field:
                entry = entries.get(field.type_name.rsplit(".", 1)[-1])
                if entry is not None:
                    key, value = entry.field
                    text = f"map<{type_of(key)}, {type_of(value)}>"
                else:
                    repeated = "repeated " if field.label == field.LABEL_REPEATED else ""
                    text = repeated + type_of(field)
                oneof = f" [{field.oneof_index}]" if field.HasField("oneof_index") else ""
                described.append(f"{text} {field.name} = {field.number}{oneof}")
            found[prefix + message.name] = ", ".join(described)
            walk([n for n in message.nested_type if not n.options.map_entry], f"{prefix}{message.name}.")

    walk(file.message_type, "")
    for service in file.service:
        for method in service.method:
            given, answered = (t.removeprefix(".inference.") for t in (method.input_type, method.output_type))
            found[f"{service.name}/{method.name}"] = f"{given} -> {answered}"
    return found


def test_the_vendored_protocol_matches_the_specification_field_for_field() -> None:
    assert protocol_fields() == PROTOCOL


def test_an_image_tensor_is_brought_to_the_declared_size_as_the_http_forward_does() -> None:
    """OIP and the HTTP forward read an image feature alike: decoded (a broken one refused
    naming the tensor), resized and converted to the spec's width, height and channels."""
    import io

    from PIL import Image

    from pellucid.server.engine.errors import InvalidArgument
    from pellucid.server.engine.inference import InferTarget, ModelRef, NamedTensor, input_features
    from pellucid.server.engine.predict import BYTES_DTYPE, Tensor
    from pellucid.server.records import FeatureSpec

    spec = FeatureSpec(name="photo", type="image", width=4, height=3, channels=1)
    target = InferTarget(ModelRef("u", "a", "m"), "model 'm'", (spec,), (), ("v",))
    buffer = io.BytesIO()
    Image.new("RGB", (10, 10), (200, 10, 10)).save(buffer, format="PNG")

    def image_tensor(raw: bytes) -> NamedTensor:
        return NamedTensor("photo", Tensor(BYTES_DTYPE, (1,), pack_bytes([raw])))

    (feature,) = input_features(target, [image_tensor(buffer.getvalue())])
    assert feature.media is not None
    with Image.open(io.BytesIO(feature.media.data)) as image:
        assert image.size == (4, 3) and image.mode == "L"
    with pytest.raises(InvalidArgument, match="does not decode") as refused:
        input_features(target, [image_tensor(b"not an image")])
    assert refused.value.field == "inputs.photo"
