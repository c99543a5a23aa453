"""Run in .venv-triton (tests/triton_venv.py) by tests/test_oip_triton.py: the stock tritonclient
against a pellucid server, over gRPC and REST. Reads the inputs from an .npz file, writes what it
got back to another; argv: grpc_address http_address pat model inputs.npz outputs.npz
[output names, comma-separated: y,total,shout (tests/runner_models.py:tensor_math's) unless given]."""

from __future__ import annotations

import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

# pellucid in the same process as tritonclient: both define the protocol's `inference.*` messages
import pellucid  # noqa: F401
from pellucid.api.oip import grpc_service_pb2 as pellucid_oip


def infer_inputs(module: object, arrays: dict, binary: bool | None = None) -> list:
    datatypes = {"float32": "FP32", "int64": "INT64", "object": "BYTES"}
    inputs = []
    for name, array in arrays.items():
        given = module.InferInput(name, list(array.shape), datatypes[array.dtype.name])  # type: ignore[attr-defined]
        if binary is None:
            given.set_data_from_numpy(array)
        else:
            given.set_data_from_numpy(array, binary_data=binary)
        inputs.append(given)
    return inputs


def described(meta: dict) -> np.ndarray:
    """name:datatype:shape of each input (shapes as ints: protobuf's JSON writes int64 as strings)."""
    return np.array([f"{t['name']}:{t['datatype']}:{[int(d) for d in t['shape']]}" for t in meta["inputs"]])


def main(
    grpc_address: str,
    http_address: str,
    pat: str,
    model: str,
    inputs_path: str,
    outputs_path: str,
    output_names: str = "y,total,shout",
) -> None:
    names = output_names.split(",")
    headers = {"authorization": f"Bearer {pat}"}
    arrays = dict(np.load(inputs_path, allow_pickle=True))
    got: dict[str, np.ndarray] = {}

    client = grpcclient.InferenceServerClient(url=grpc_address)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(model, headers=headers)
    meta = client.get_model_metadata(model, headers=headers, as_json=True)
    assert meta["name"] == model and meta["platform"] == "pellucid", meta
    got["grpc_meta_inputs"] = described(meta)
    result = client.infer(model, infer_inputs(grpcclient, arrays), headers=headers, request_id="t1")
    assert result.get_response().id == "t1"
    for name in names:
        got[f"grpc_{name}"] = result.as_numpy(name)
    # the request tritonclient sent parses with pellucid's copy of the protocol, in this process
    request = grpcclient.service_pb2.ModelInferRequest(model_name=model, raw_input_contents=[b"\x01"])
    assert pellucid_oip.ModelInferRequest.FromString(request.SerializeToString()).model_name == model

    web = httpclient.InferenceServerClient(url=http_address)
    assert web.is_server_live() and web.is_model_ready(model, headers=headers)
    meta = web.get_model_metadata(model, headers=headers)
    got["http_meta_inputs"] = described(meta)
    for binary in (True, False):
        outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in names]
        # a copy each call: tritonclient.http adds Inference-Header-Content-Length to the dict it is given
        result = web.infer(model, infer_inputs(httpclient, arrays, binary), outputs=outputs, headers=dict(headers))
        for name in names:
            got[f"http_{'binary' if binary else 'json'}_{name}"] = result.as_numpy(name)
    np.savez(outputs_path, **got)


if __name__ == "__main__":
    main(*sys.argv[1:8])
