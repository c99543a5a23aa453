"""The Open Inference Protocol's REST form (server/http/oip.py) on a real uvicorn server, called with httpx."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette

from pellucid.server.engine import Engine
from pellucid.server.http.oip import oip_routes
from pellucid.tensors import pack_bytes, unpack_bytes
from tests.conftest import RunningServer
from tests.runner_models import tensor_math
from tests.test_oip import MathModel, assert_same, math_model, sample  # noqa: F401 - math_model is a fixture


def http_app(engine: Engine) -> Starlette:
    """The app the tests serve: the OIP routes alone (the server's HTTP app mounts the same routes)."""
    return Starlette(routes=oip_routes(engine))


@pytest.fixture(scope="module")
def http_url(server: RunningServer) -> Iterator[str]:
    """A uvicorn server on 127.0.0.1, a port the OS picks, serving http_app over the test server's engine."""
    assert server.server.engine is not None
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    web = uvicorn.Server(uvicorn.Config(http_app(server.server.engine), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=web.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not web.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    web.should_exit = True
    thread.join(10)
    sock.close()


def bearer(pat: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {pat}"}


def json_inputs(inputs: dict[str, np.ndarray]) -> list[dict]:
    datatypes = {"float32": "FP32", "int64": "INT64", "float64": "FP64", "object": "BYTES"}
    return [
        {
            "name": name,
            "shape": list(array.shape),
            "datatype": datatypes[array.dtype.name],
            "data": [b.decode() for b in array.ravel()] if array.dtype == object else array.ravel().tolist(),
        }
        for name, array in inputs.items()
    ]


def json_outputs(reply: dict) -> dict[str, np.ndarray]:
    arrays = {}
    for out in reply["outputs"]:
        if out["datatype"] == "BYTES":
            items = np.empty(len(out["data"]), dtype=object)
            items[:] = [s.encode() for s in out["data"]]
            arrays[out["name"]] = items.reshape(out["shape"])
        else:
            arrays[out["name"]] = np.array(out["data"]).reshape(out["shape"])
    return arrays


def test_health_and_metadata(http_url: str, math_model: MathModel) -> None:  # noqa: F811
    assert httpx.get(f"{http_url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{http_url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{http_url}/v2").status_code == 401
    assert httpx.get(f"{http_url}/v2", headers=bearer(math_model.pat)).json()["name"] == "pellucid"
    app_id = math_model.app.id
    # the three URL forms of a name with a slash
    for path in (f"{app_id}/math", f"{app_id}%2Fmath", f"{app_id}--math"):
        meta = httpx.get(f"{http_url}/v2/models/{path}", headers=bearer(math_model.pat))
        assert meta.status_code == 200, meta.text
        body = meta.json()
        assert body["name"] == f"{app_id}/math" and body["platform"] == "pellucid"
        assert body["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": [-1, 3]}
        ready = httpx.get(f"{http_url}/v2/models/{path}/ready", headers=bearer(math_model.pat))
        assert ready.status_code == 200 and ready.json()["ready"] is True
    missing = httpx.get(f"{http_url}/v2/models/{app_id}--nope", headers=bearer(math_model.pat))
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    assert httpx.get(f"{http_url}/v2/models/{app_id}--math").status_code == 401


def test_infer_with_json_tensors_matches_the_runner(http_url: str, math_model: MathModel) -> None:  # noqa: F811
    inputs = sample()
    reply = httpx.post(
        f"{http_url}/v2/models/{math_model.app.id}--math/infer",
        json={"id": "r1", "inputs": json_inputs(inputs)},
        headers=bearer(math_model.pat),
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["id"] == "r1" and body["model_name"] == math_model.name and body["model_version"]
    assert_same(json_outputs(body), tensor_math(inputs))


def test_infer_with_binary_tensors(http_url: str, math_model: MathModel) -> None:  # noqa: F811
    """Triton's binary data extension, as tritonclient.http sends it by default."""
    inputs = sample()
    blobs = [inputs["x"].tobytes(), inputs["n"].tobytes(), pack_bytes(inputs["s"].tolist())]
    head = {
        "inputs": [
            {"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": len(blobs[0])}},
            {"name": "n", "shape": [3], "datatype": "INT64", "parameters": {"binary_data_size": len(blobs[1])}},
            {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(blobs[2])}},
        ],
        "outputs": [{"name": "shout", "parameters": {"binary_data": True}}, {"name": "y"}],
    }
    header = json.dumps(head).encode()
    reply = httpx.post(
        f"{http_url}/v2/models/{math_model.name}/infer",
        content=header + b"".join(blobs),
        headers={**bearer(math_model.pat), "Inference-Header-Content-Length": str(len(header))},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    length = int(reply.headers["inference-header-content-length"])
    body = json.loads(reply.content[:length])
    expected = tensor_math(inputs)
    shout, y = body["outputs"]
    assert shout["name"] == "shout" and shout["parameters"]["binary_data_size"] == len(reply.content) - length
    assert unpack_bytes(reply.content[length:]) == expected["shout"].tolist()
    assert y["name"] == "y" and np.array(y["data"]).reshape(y["shape"]).tolist() == expected["y"].tolist()


def test_bad_requests_get_statuses_a_client_can_act_on(http_url: str, math_model: MathModel) -> None:  # noqa: F811
    url = f"{http_url}/v2/models/{math_model.app.id}--math/infer"
    good = json_inputs(sample())

    def post(body: object, pat: str = math_model.pat) -> httpx.Response:
        return httpx.post(url, json=body, headers=bearer(pat), timeout=30)

    wrong_dtype = [dict(good[0], datatype="FP64"), *good[1:]]
    reply = post({"inputs": wrong_dtype})
    assert reply.status_code == 400 and "'x'" in reply.json()["error"] and "FP32" in reply.json()["error"]
    short = [dict(good[0], data=good[0]["data"][:-1]), *good[1:]]
    reply = post({"inputs": short})
    assert reply.status_code == 400 and "'x'" in reply.json()["error"] and "6 elements" in reply.json()["error"]
    assert post({"nothing": 1}).status_code == 400
    assert post({"inputs": good}, pat="wrong").status_code == 401
    bad_json = httpx.post(url, content=b"{", headers=bearer(math_model.pat))
    assert bad_json.status_code == 400 and "not JSON" in bad_json.json()["error"]
    deep = httpx.post(
        url, content=b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", headers=bearer(math_model.pat)
    )
    assert deep.status_code == 400 and "too deeply" in deep.json()["error"]


def test_a_chunked_body_is_refused_once_it_passes_the_limit(
    http_url: str,
    math_model: MathModel,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A chunked body announces no length: the server stops reading it at the limit, not at its end."""
    monkeypatch.setattr("pellucid.server.http.oip.MAX_BODY_BYTES", 1 << 20)
    host, port = http_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            f"POST /v2/models/{math_model.app.id}--math/infer HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {math_model.pat}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"x" * 65536
        for _ in range(24):  # 1.5 MiB, and never the last chunk: a server reading to the end would wait for ever
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        reply = conn.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
