"""The Open Inference Protocol's REST form (KServe v2) as starlette routes: `oip_routes(engine)`.

    GET  /v2/health/live, /v2/health/ready      200 {"live"|"ready": true}, no token needed
    GET  /v2                                     server metadata
    GET  /v2/models/{name}[/versions/{v}]        model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready  200 when ready (503 when it has no version)
    POST /v2/models/{name}[/versions/{v}]/infer  JSON tensors, or JSON plus binary tensors

Model names are `<app>/<model>`: in a URL as is (`/v2/models/shop/price/infer`, which is what
tritonclient sends), URL-encoded (`shop%2Fprice`), or as `<app>--<model>` (split at the first
`--`, unless a deployment has that id); or a deployment id (`/v2/models/pets/infer`). Calls other than health take
`Authorization: Bearer <pat or deployment token>` (a deployment token reaches only its deployment). Errors answer
{"error": message} with 400, 401, 403, 404, 413, 429, 503 or 504.

Binary tensors (Triton's binary data extension, tritonclient.http's default): the body is the
JSON header (its length in the `Inference-Header-Content-Length` header) followed by each input
whose `parameters.binary_data_size` is set, in order; outputs asked for with
`parameters.binary_data` (or the request's `binary_data_output`) come back the same way.
Engine semantics (names, tensors against the model's inputs) are in engine/inference.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pellucid.server.engine import Engine
from pellucid.server.engine.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    EngineError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from pellucid.server.engine.inference import InferResult, NamedTensor, OpenInference, tensor_dtype
from pellucid.server.engine.predict import BYTES_DTYPE, Tensor, pack_bytes
from pellucid.server.http.app import DEFAULT_MAX_CALLS_PER_USER, admit_predict

HEADER_LENGTH = "inference-header-content-length"
MAX_BODY_BYTES = 64 * 1024 * 1024  # as the gRPC port's message limit
INFER_DEADLINE_SECONDS = 60.0
_STATUS: list[tuple[type[EngineError], int]] = [
    (InvalidArgument, 400),
    (FailedPrecondition, 400),
    (AlreadyExists, 409),
    (Unauthenticated, 401),
    (PermissionDenied, 403),
    (NotFound, 404),
    (ResourceExhausted, 429),
    (Unavailable, 503),
    (DeadlineExceeded, 504),
    (Aborted, 502),  # a workflow deployment's node failed (ModelFailed), as the HTTP forward answers
]


def model_name(path_name: str) -> tuple[str, str]:
    """(model name, version) of the URL's {name} part: `app/model`, `app%2Fmodel` (decoded before
    routing), `app--model` or a deployment id (the engine tells them apart), each optionally
    followed by /versions/{version}."""
    name, _, version = path_name.partition("/versions/")
    return name, version


async def _body(request: Request) -> bytes | None:
    """The request's body, or None as soon as it passes MAX_BODY_BYTES: a chunked body announces
    no length, and read whole it could be any size."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error(exc: EngineError) -> JSONResponse:
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
    return JSONResponse({"error": exc.message}, status_code=status)


def _json_values(array: np.ndarray) -> list:
    if array.dtype == object:
        return [bytes(b).decode("utf-8", "replace") for b in array.ravel()]
    return array.ravel().tolist()


def _input_tensor(given: Any, binary: bytes | None) -> NamedTensor:
    if not isinstance(given, dict) or not isinstance(given.get("name"), str):
        raise InvalidArgument(
            "each of `inputs` must be an object with a name, shape, datatype and data", field="inputs"
        )
    name = given["name"]
    shape = given.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidArgument(f"tensor {name!r}: shape must be a list of sizes >= 0", field=f"inputs.{name}.shape")
    dtype = tensor_dtype(str(given.get("datatype", "")), name)
    if binary is not None:
        if "data" in given:
            raise InvalidArgument(
                f"tensor {name!r} has both `data` and binary_data_size: use one or the other",
                field=f"inputs.{name}.data",
            )
        return NamedTensor(name, Tensor(dtype, tuple(shape), binary))
    if "data" not in given:
        raise InvalidArgument(f"tensor {name!r} has no data", field=f"inputs.{name}.data")
    flat = np.asarray(given["data"], dtype=object).ravel().tolist()
    if dtype == BYTES_DTYPE:
        if not all(isinstance(v, str) for v in flat):
            raise InvalidArgument(f"tensor {name!r}: BYTES data must be strings", field=f"inputs.{name}.data")
        return NamedTensor(name, Tensor(dtype, tuple(shape), pack_bytes(flat)))
    size = int(np.prod(shape)) if shape else 1
    if len(flat) != size:
        raise InvalidArgument(
            f"tensor {name!r}: shape {shape} needs {size} elements, data holds {len(flat)}", field=f"inputs.{name}.data"
        )
    try:
        array = np.array(flat, dtype=np.dtype(dtype).newbyteorder("<"))
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgument(
            f"tensor {name!r}: data must be {given.get('datatype')} values", field=f"inputs.{name}.data"
        ) from None
    return NamedTensor(name, Tensor(dtype, tuple(shape), array.tobytes()))


def parse_infer_body(body: bytes, header_length: str | None) -> tuple[dict, list[NamedTensor]]:
    """The JSON header and the input tensors of an infer body (JSON, or JSON plus binary tensors)."""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            length = -1
        if not 0 <= length <= len(body):
            raise InvalidArgument(
                f"Inference-Header-Content-Length {header_length!r} does not fit a {len(body)}-byte body"
            )
        head, rest = body[:length], body[length:]
    else:
        head, rest = body, b""
    try:
        request = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"the body is not JSON: {exc}") from None
    except RecursionError:  # json.loads gives up on deep nesting (a few hundred levels)
        raise InvalidArgument("the body nests JSON arrays or objects too deeply: flatten it") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise InvalidArgument('the body must be an object with "inputs": [...]', field="inputs")
    tensors, offset = [], 0
    for given in request["inputs"]:
        size = (given.get("parameters") or {}).get("binary_data_size") if isinstance(given, dict) else None
        binary = None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(rest):
                raise InvalidArgument(f"binary_data_size {size!r} of an input runs past the body's end", field="inputs")
            binary, offset = rest[offset : offset + size], offset + size
        tensors.append(_input_tensor(given, binary))
    if offset != len(rest):
        raise InvalidArgument(f"the body has {len(rest) - offset} bytes after the tensors it declares")
    return request, tensors


def infer_reply(result: InferResult, request: dict) -> Response:
    """The infer answer: JSON, with the outputs asked for in binary appended after it."""
    binary_default = bool((request.get("parameters") or {}).get("binary_data_output", False))
    binary_wanted = {
        o.get("name"): bool((o.get("parameters") or {}).get("binary_data", binary_default))
        for o in request.get("outputs") or []
        if isinstance(o, dict)
    }
    outputs, blobs = [], []
    for named in result.outputs:
        entry: dict[str, Any] = {"name": named.name, "datatype": named.datatype, "shape": list(named.tensor.shape)}
        if binary_wanted.get(named.name, binary_default):
            entry["parameters"] = {"binary_data_size": len(named.tensor.data)}
            blobs.append(named.tensor.data)
        else:
            entry["data"] = _json_values(named.tensor.to_numpy())
        outputs.append(entry)
    reply: dict[str, Any] = {"model_name": result.model_name, "model_version": result.model_version, "outputs": outputs}
    if "id" in request:
        reply["id"] = request["id"]
    head = json.dumps(reply, separators=(",", ":")).encode()
    if not blobs:
        return Response(head, media_type="application/json")
    return Response(
        head + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )


def oip_routes(engine: Engine, max_predicts_per_user: int = DEFAULT_MAX_CALLS_PER_USER) -> list[Route]:
    """The KServe v2 REST routes over `engine` (mount them on the server's HTTP app); an infer
    counts against the caller's predicts in flight, shared with gRPC and the deployment routes."""
    oip = OpenInference(engine.models, engine.deployments, dashed_names=True)

    def principal(request: Request) -> Any:
        header = request.headers.get("authorization", "")
        secret = header[7:].strip() if header[:7].lower() == "bearer " else header
        return engine.deployments.authenticate(secret)  # a PAT, or a deployment token

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": True})

    async def server_metadata(request: Request) -> Response:
        try:
            await run_in_threadpool(principal, request)
        except EngineError as exc:
            return _error(exc)
        meta = oip.server_metadata()
        return JSONResponse({"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)})

    async def model_metadata(request: Request) -> Response:
        name, version = model_name(request.path_params["name"])
        try:
            meta = await run_in_threadpool(lambda: oip.model_metadata(principal(request), name, version))
        except EngineError as exc:
            return _error(exc)

        def tensors(items: Any) -> list[dict]:
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

        return JSONResponse(
            {
                "name": meta.name,
                "versions": list(meta.versions),
                "platform": meta.platform,
                "inputs": tensors(meta.inputs),
                "outputs": tensors(meta.outputs),
            }
        )

    async def model_ready(request: Request) -> Response:
        name, version = model_name(request.path_params["name"])

        def check() -> tuple[str, bool]:
            who = principal(request)
            meta = oip.model_metadata(who, name, version)  # NOT_FOUND for a model that is not there
            return meta.name, oip.model_ready(who, name, version)

        try:
            named, is_ready = await run_in_threadpool(check)
        except EngineError as exc:
            return _error(exc)
        return JSONResponse({"name": named, "ready": is_ready}, status_code=200 if is_ready else 503)

    async def infer(request: Request) -> Response:
        name, version = model_name(request.path_params["name"])
        too_large = JSONResponse({"error": f"the body is larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return too_large
        try:
            caller = await run_in_threadpool(principal, request)  # before the body: no one unknown sends 64 MB
            body = await _body(request)
            if body is None:
                return too_large
            payload, tensors = parse_infer_body(body, request.headers.get(HEADER_LENGTH))
            wanted = [o["name"] for o in payload.get("outputs") or [] if isinstance(o, dict) and "name" in o]
            counted = admit_predict(engine, caller.user_id, max_predicts_per_user)  # a lock, no I/O
            try:
                pending = await run_in_threadpool(
                    lambda: oip.submit(caller, name, version, tensors, wanted, INFER_DEADLINE_SECONDS)
                )
                loop = asyncio.get_running_loop()
                done: asyncio.Future[None] = loop.create_future()

                def finish() -> None:
                    if not done.done():
                        done.set_result(None)

                def wake() -> None:  # on the thread that finished the predict
                    loop.call_soon_threadsafe(finish)

                pending.add_done_callback(wake)  # no thread waits for the runner meanwhile
                try:
                    await done
                except asyncio.CancelledError:
                    pending.cancel()
                    raise
                return infer_reply(pending.result(), payload)
            finally:
                engine.predicts_in_flight.release(counted)
        except EngineError as exc:
            return _error(exc)

    return [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/models/{name:path}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name:path}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name:path}", model_metadata, methods=["GET"]),
    ]


__all__ = ["model_name", "oip_routes", "parse_infer_body"]
