"""The HTTP endpoint of deployments, against a real server with a real runner process
(tests/runner_models.py:Tabular): every feature type and every error status, with httpx and
with curl, and the sidekick-style client (pellucid.deployment)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

import pellucid.errors as errors
from pellucid.client.app import App
from pellucid.client.user import User
from pellucid.deployment import (
    Deployment,
    DeploymentNotFound,
    Forbidden,
    GatewayTimeout,
    InvalidRows,
    ModelFailed,
    Unauthorized,
)
from pellucid.server.runtime import PellucidServer, ServerSettings
from tests.test_runners import ROOT, connected, wait_for
from tests.test_server_process import ServerProcess

MAX_BODY = 256 * 1024
MAX_CALLS = 3
SLEEP = 1.5
INPUT_SPECS = [
    {"name": "Size", "type": "numeric"},
    {"name": "Type", "type": "categorical", "categories": ["animal", "plant"]},
    {"name": "Sound", "type": "text"},
    {"name": "Picture", "type": "image", "width": 4, "height": 4, "channels": 3, "required": False},
    {"name": "Grid", "type": "array", "dtype": "float32", "shape": [-1, 3], "required": False},
]
OUTPUT_SPECS = [
    {"name": "Score", "type": "numeric"},
    {"name": "Kind", "type": "categorical", "categories": ["cat", "dog"]},
    {"name": "Echo", "type": "text"},
    {"name": "Negative", "type": "image", "required": False},
    {"name": "Doubled", "type": "array", "dtype": "float32", "required": False},
]


@dataclass
class Deployed:
    server: PellucidServer
    user: User
    app: App
    pat: str
    token: str
    url: str
    base: str
    marks: Path

    def post(self, rows: Any, token: str | None = None, deployment: str = "pets", **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token if token is None else token}"} if token != "" else {}
        url = f"{self.base}/v1/deployments/{deployment}/forward"
        return httpx.post(url, json={"rows": rows}, headers=headers, params=params, timeout=30)


def png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def decode_image(uri: str) -> Image.Image:
    header, _, data = uri.partition(",")
    assert header.startswith("data:image/") and header.endswith(";base64")
    return Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    data_dir = tmp_path_factory.mktemp("http-server")
    marks = tmp_path_factory.mktemp("started")
    server = PellucidServer(
        ServerSettings(
            data_dir=data_dir,
            port=0,
            http_port=0,
            max_http_body_bytes=MAX_BODY,
            max_predicts_per_user=MAX_CALLS,
        )
    )
    server.start()
    credentials = server.data_dir.read_credentials()
    assert credentials is not None
    user = User(base_url=f"grpc://{server.address}", pat=credentials.pat)
    app = user.create_app("pets")
    app.create_model("tabular", runner_labels=["tabular"], input_specs=INPUT_SPECS, output_specs=OUTPUT_SPECS)
    managed = app.create_deployment("pets", model_id="tabular")
    _, token = managed.create_token("tests")
    user.create_runner("tabular-1", labels=["tabular"])
    env = {
        **os.environ,
        "SLEEP": str(SLEEP),
        "STARTED_DIR": str(marks),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pellucid.cli",
            "runner",
            "start",
            str(ROOT / "tests" / "runner_models.py") + ":Tabular",
            "--runner-id",
            "tabular-1",
            "--labels",
            "tabular",
            "--concurrency",
            "4",
            "--api",
            f"grpc://{server.address}",
            "--pat",
            credentials.pat,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_for(lambda: connected(user, "tabular-1"))
        base = f"http://127.0.0.1:{server.http_port}"
        yield Deployed(server, user, app, credentials.pat, token, managed.url, base, marks)
    finally:
        runner.terminate()
        runner.wait(20)
        user.close()
        server.stop(grace=0.5)


def full_row(size: float = 0.25, picture: Image.Image | None = None) -> dict[str, Any]:
    return {
        "Size": size,
        "Type": "animal",
        "Sound": "Miaow",
        "Picture": png_data_uri(picture or Image.new("RGB", (8, 8), (10, 200, 30))),
        "Grid": {"shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
    }


def test_every_feature_type_round_trips_through_httpx(deployed: Deployed) -> None:
    """Numbers, categories, text, an image and an array in; numbers, {label: probability}, text, a
    data URI image and {shape, data} out, computed by the runner from what it received."""
    assert deployed.url == f"{deployed.base}/v1/deployments/pets/forward"  # what the deployment reports
    response = deployed.post([full_row(0.25), {"Size": 3, "Type": "plant", "Sound": "Rustle"}])
    assert response.status_code == 200, response.text
    first, second = response.json()["rows"]
    assert first["Score"] == 2 * 0.25 + 5 and first["Kind"] == {"cat": 0.9, "dog": 0.1}
    assert first["Echo"] == "MIAOW"
    negative = decode_image(first["Negative"])
    assert negative.size == (4, 4)  # resized to the declared width and height before the model ran
    assert negative.getpixel((0, 0)) == (245, 55, 225)
    assert first["Doubled"] == {"shape": [2, 3], "data": [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]}
    assert second == {"Score": 6 + 6, "Kind": {"cat": 0.2, "dog": 0.8}, "Echo": "RUSTLE"}  # optional ones left out


def test_the_deployment_describes_its_feature_specs_and_openapi_is_served(deployed: Deployed) -> None:
    headers = {"Authorization": f"Bearer {deployed.token}"}
    described = httpx.get(f"{deployed.base}/v1/deployments/pets", headers=headers).json()
    assert described["url"] == deployed.url and described["enabled"] is True
    assert [s["name"] for s in described["feature_specs_in"]] == ["Size", "Type", "Sound", "Picture", "Grid"]
    assert described["feature_specs_in"][1] == {
        "name": "Type",
        "type": "categorical",
        "required": True,
        "categories": ["animal", "plant"],
    }
    assert described["feature_specs_in"][4]["shape"] == [-1, 3]
    assert [s["name"] for s in described["feature_specs_out"]] == ["Score", "Kind", "Echo", "Negative", "Doubled"]
    document = httpx.get(f"{deployed.base}/openapi.json").json()
    assert document["openapi"].startswith("3.")
    responses = document["paths"]["/v1/deployments/{deployment_id}/forward"]["post"]["responses"]
    assert {"200", "400", "401", "403", "404", "413", "429", "503", "504"} <= set(responses)
    # the same port serves the Open Inference Protocol's REST form (server/http/oip.py)
    assert httpx.get(f"{deployed.base}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{deployed.base}/v2/health/ready").status_code == 200


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == status and body["message"]
    return body


def test_rows_that_do_not_match_the_specs_fail_with_their_row_and_feature(deployed: Deployed) -> None:
    good = {"Size": 1, "Type": "animal", "Sound": "x"}
    cases = [
        ({"Type": "animal", "Sound": "x"}, "Size", "missing"),
        ({**good, "Size": "big"}, "Size", "expected a number, got a string"),
        ({**good, "Type": "mineral"}, "Type", "not a category"),
        ({**good, "Sound": 3}, "Sound", "expected a string"),
        (
            {**good, "Picture": "data:image/png;base64," + base64.b64encode(b"not a png").decode()},
            "Picture",
            "does not decode",
        ),
        ({**good, "Picture": "data:image/png;base64,!!!"}, "Picture", "not valid base64"),
        (
            {**good, "Grid": {"shape": [2, 3], "data": [1, 2, 3, 4, 5]}},
            "Grid",
            "holds 5 values but shape [2, 3] needs 6",
        ),
        (
            {**good, "Grid": {"shape": [3, 2], "data": [1, 2, 3, 4, 5, 6]}},
            "Grid",
            "does not match the declared [-1, 3]",
        ),
        ({**good, "Colour": "red"}, "Colour", "unknown feature"),
    ]
    for row, feature, words in cases:
        body = error_of(deployed.post([good, good, row]), 400)
        assert body["rows"][0]["row"] == 2 and body["rows"][0]["feature"] == feature, body
        assert words in body["rows"][0]["message"] and f"row 2, feature {feature!r}" in body["message"]
    assert "rows" in error_of(deployed.post("not a list"), 400)["message"]
    bad_json = httpx.post(
        f"{deployed.base}/v1/deployments/pets/forward",
        content=b"{nope",
        headers={"Authorization": f"Bearer {deployed.token}"},
    )
    assert "not JSON" in error_of(bad_json, 400)["message"]
    deep = httpx.post(
        f"{deployed.base}/v1/deployments/pets/forward",
        content=b'{"rows": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        headers={"Authorization": f"Bearer {deployed.token}"},
    )
    assert "too deeply" in error_of(deep, 400)["message"]


def test_tokens_and_the_enabled_switch_decide_who_may_call(deployed: Deployed) -> None:
    row = [{"Size": 1, "Type": "animal", "Sound": "x"}]
    assert error_of(deployed.post(row, token=""), 401)["reason"] == "NO_TOKEN"
    assert error_of(deployed.post(row, token="pel_dep_not-a-token"), 401)["reason"] == "BAD_TOKEN"
    assert error_of(deployed.post(row, token="pel_pat_not-a-token"), 401)["reason"] == "BAD_TOKEN"
    assert deployed.post(row, token=deployed.pat).status_code == 200  # the owner's PAT works too

    other = deployed.app.create_deployment("pets-other", model_id="tabular")
    _, other_token = other.create_token()
    assert error_of(deployed.post(row, token=other_token), 403)["reason"] == "WRONG_DEPLOYMENT_TOKEN"
    assert error_of(deployed.post(row, token=deployed.pat, deployment="nowhere"), 404)["status"] == "NOT_FOUND"
    # a token naming another deployment: refused alike whether it exists, so its holder learns nothing
    for elsewhere in ("pets-other", "nowhere"):
        refused = error_of(deployed.post(row, deployment=elsewhere), 403)
        assert refused["reason"] == "WRONG_DEPLOYMENT_TOKEN" and "for deployment 'pets'" in refused["message"]
    stranger = deployed.user.create_user(f"stranger-{uuid.uuid4().hex[:6]}")
    assert error_of(deployed.post(row, token=stranger.pat.secret), 404)  # another user's: as if absent

    other.disable()
    assert error_of(deployed.post(row, token=other_token, deployment="pets-other"), 403)["reason"] == (
        "DEPLOYMENT_DISABLED"
    )
    other.enable()
    assert deployed.post(row, token=other_token, deployment="pets-other").status_code == 200
    token_record, revoked = other.create_token("to revoke")
    other.revoke_token(token_record.id)
    assert error_of(deployed.post(row, token=revoked, deployment="pets-other"), 401)["reason"] == "REVOKED_TOKEN"
    other.delete()
    assert error_of(deployed.post(row, token=deployed.pat, deployment="pets-other"), 404)


def test_too_large_slow_busy_failing_and_unserved_calls_get_their_status(deployed: Deployed) -> None:
    big = error_of(deployed.post([{"Sound": "x" * MAX_BODY}]), 413)
    assert big["limit"] == MAX_BODY and str(MAX_BODY) in big["message"]

    refused = error_of(deployed.post([{"Size": 1, "Type": "animal", "Sound": "x"}, {**full_row(), "Size": -1}]), 400)
    assert refused["rows"][0]["row"] == 1 and "Size must not be negative" in refused["message"]
    failed = error_of(
        deployed.post([{"Size": 1, "Type": "animal", "Sound": "x"}, {**full_row(), "Sound": "crash"}]), 502
    )
    assert "row 1" in failed["message"] and "the model crashed" in failed["message"]

    slow = error_of(deployed.post([{"Size": 1, "Type": "animal", "Sound": "slow"}], timeout=0.3), 504)
    assert slow["status"] == "DEADLINE_EXCEEDED"

    deployed.app.create_model("unserved", runner_labels=["nobody-serves-this"], input_specs=INPUT_SPECS[:1])
    deployed.app.create_deployment("pets-unserved", model_id="unserved")
    unserved = error_of(deployed.post([{"Size": 1}], token=deployed.pat, deployment="pets-unserved", timeout=0.3), 503)
    assert unserved["reason"] == "NO_RUNNER"

    # MAX_CALLS calls in flight (the runner holds them), then one more: 429, with Retry-After
    for mark in deployed.marks.iterdir():
        mark.unlink()
    answers: list[int] = []
    held = [
        threading.Thread(
            target=lambda: answers.append(deployed.post([{"Size": 1, "Type": "animal", "Sound": "slow"}]).status_code)
        )
        for _ in range(MAX_CALLS)
    ]
    for thread in held:
        thread.start()
    wait_for(lambda: len(list(deployed.marks.iterdir())) >= MAX_CALLS)
    busy = deployed.post([{"Size": 1, "Type": "animal", "Sound": "x"}])
    assert error_of(busy, 429)["reason"] == "TOO_MANY_CALLS" and busy.headers["retry-after"]
    for thread in held:
        thread.join(30)
    assert answers == [200] * MAX_CALLS
    assert deployed.post([{"Size": 1, "Type": "animal", "Sound": "x"}]).status_code == 200  # counted down again


CURL = shutil.which("curl")


@pytest.mark.skipif(CURL is None, reason="curl is not installed (apt-get install curl)")
def test_curl_posts_every_feature_type_and_sees_each_error_status(deployed: Deployed, tmp_path: Path) -> None:
    def curl(body: Any, token: str | None = None, deployment: str = "pets", query: str = "") -> tuple[int, Any]:
        payload = tmp_path / "body.json"
        payload.write_text(json.dumps(body) if not isinstance(body, str) else body)
        headers = ["-H", "Content-Type: application/json"]
        if token != "":
            headers += ["-H", f"Authorization: Bearer {deployed.token if token is None else token}"]
        url = f"{deployed.base}/v1/deployments/{deployment}/forward{query}"
        done = subprocess.run(
            [CURL, "-sS", "-X", "POST", url, *headers, "--data-binary", f"@{payload}", "-w", "\n%{http_code}"],  # type: ignore[list-item]
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        text, _, code = done.stdout.rpartition("\n")
        return int(code), json.loads(text)

    code, answer = curl({"rows": [full_row(0.5)]})
    assert code == 200
    row = answer["rows"][0]
    assert row["Score"] == 6.0 and row["Kind"]["cat"] == 0.9 and row["Echo"] == "MIAOW"
    assert decode_image(row["Negative"]).size == (4, 4) and row["Doubled"]["shape"] == [2, 3]

    simple = {"Size": 1, "Type": "animal", "Sound": "x"}
    code, answer = curl({"rows": [simple, {"Size": "x", "Type": "animal", "Sound": "x"}]})
    assert code == 400 and answer["error"]["rows"][0] == {
        "row": 1,
        "feature": "Size",
        "message": "expected a number, got a string",
    }
    assert curl({"rows": [simple]}, token="")[0] == 401
    assert curl({"rows": [simple]}, token=deployed.pat, deployment="nowhere")[0] == 404
    assert curl({"rows": [simple]}, deployment="nowhere")[0] == 403  # the token is for 'pets'
    assert curl({"rows": [{"Sound": "x" * MAX_BODY}]})[0] == 413
    assert curl({"rows": [{**simple, "Sound": "crash"}]})[0] == 502
    assert curl({"rows": [{**simple, "Sound": "slow"}]}, query="?timeout=0.3")[0] == 504
    deployed.app.create_model("curl-unserved", runner_labels=["nobody"], input_specs=INPUT_SPECS[:1])
    deployed.app.create_deployment("curl-unserved", model_id="curl-unserved")
    assert curl({"rows": [{"Size": 1}]}, token=deployed.pat, deployment="curl-unserved", query="?timeout=0.3")[0] == 503
    disabled = deployed.app.create_deployment("curl-disabled", model_id="tabular", enabled=False)
    code, answer = curl({"rows": [simple]}, token=deployed.pat, deployment="curl-disabled")
    assert code == 403 and answer["error"]["reason"] == "DEPLOYMENT_DISABLED"
    disabled.delete()


def test_the_sidekick_client_encodes_and_decodes_every_type_in_order(deployed: Deployed) -> None:
    with Deployment(url=deployed.url, token=deployed.token, batch_size=16, concurrency=2) as client:
        assert [s["name"] for s in client.feature_specs_in] == ["Size", "Type", "Sound", "Picture", "Grid"]
        assert client.feature_specs_out[1]["categories"] == ["cat", "dog"]
        picture = Image.new("RGB", (6, 6), (0, 100, 255))
        grid = np.arange(9, dtype=np.float32).reshape(3, 3)
        one = client.predict(Size=np.float32(0.5), Type="animal", Sound="Miaow", Picture=picture, Grid=grid)
        assert one["Score"] == 6.0 and one["Kind"] == {"cat": 0.9, "dog": 0.1} and one["Echo"] == "MIAOW"
        assert isinstance(one["Negative"], Image.Image) and one["Negative"].getpixel((1, 1)) == (255, 155, 0)
        assert isinstance(one["Doubled"], np.ndarray) and one["Doubled"].dtype == np.float32
        assert np.array_equal(one["Doubled"], grid * 2)

        rows = [{"Size": float(i), "Type": "plant", "Sound": "ab"} for i in range(300)]
        scores = [r["Score"] for r in client.predict_many(rows, progress=False)]
        assert scores == [2.0 * i + 2 for i in range(300)]  # in order across 19 concurrent batches

        consumed = []

        def generated() -> Iterator[dict[str, Any]]:
            for i in range(100):
                consumed.append(i)
                yield {"Size": float(i), "Type": "plant", "Sound": ""}

        lazy = client.predict_lazy(generated(), progress=False)
        assert next(lazy)["Score"] == 0.0
        assert len(consumed) <= 2 * 2 * 16 + 16  # bounded: a few batches ahead, not all 100 rows
        assert [r["Score"] for r in lazy] == [2.0 * i for i in range(1, 100)]

        bad = [{"Size": 1.0, "Type": "plant", "Sound": ""} for _ in range(40)]
        bad[37] = {"Size": 1.0, "Type": "rock", "Sound": ""}
        with pytest.raises(InvalidRows) as invalid:
            client.predict_many(bad, progress=False)
        assert invalid.value.row == 37 and invalid.value.feature == "Type" and invalid.value.status == 400
        assert "row 37" in str(invalid.value)
        bad[37] = {"Size": 1.0, "Type": "plant", "Sound": "crash"}
        with pytest.raises(ModelFailed) as failed:
            client.predict_many(bad, progress=False)
        assert failed.value.row == 37
        with pytest.raises(GatewayTimeout):
            Deployment(url=deployed.url, token=deployed.token, timeout=0.3).predict(Size=1, Type="plant", Sound="slow")
    with pytest.raises(Unauthorized):
        Deployment(url=deployed.url, token="pel_dep_wrong").predict(Size=1, Type="plant", Sound="")
    with pytest.raises(DeploymentNotFound):
        assert Deployment(url=f"{deployed.base}/v1/deployments/nowhere", token=deployed.pat).feature_specs_in
    with pytest.raises(Forbidden):  # a token names its own deployment only, whether the other exists or not
        assert Deployment(url=f"{deployed.base}/v1/deployments/nowhere", token=deployed.token).feature_specs_in
    other = deployed.app.create_deployment("pets-sidekick", model_id="tabular")
    _, token = other.create_token()
    other.disable()
    with pytest.raises(Forbidden) as forbidden:
        other.client(token).predict(Size=1, Type="plant", Sound="")
    assert forbidden.value.reason == "DEPLOYMENT_DISABLED"
    other.delete()


def test_deployment_tokens_are_hashed_at_rest_and_call_nothing_else(deployed: Deployed) -> None:
    managed = deployed.app.deployment("pets")
    tokens = managed.list_tokens()
    assert [t.description for t in tokens] == ["tests"]
    store = deployed.server.engine.store  # type: ignore[union-attr]
    stored = store.get_deployment_token_by_hash(hashlib.sha256(deployed.token.encode()).hexdigest())
    assert stored is not None and stored.id == tokens[0].id
    assert deployed.token.encode() not in (deployed.server.data_dir.metadata_path).read_bytes()
    with pytest.raises(errors.PermissionDenied):  # not a PAT: the gRPC API, but the inference protocol, refuses it
        User(base_url=f"grpc://{deployed.server.address}", pat=deployed.token).list_apps().__next__()


def test_pellucid_server_http_port_serves_http_beside_grpc(tmp_path: Path) -> None:
    """`pellucid server --http-port 0`: the OS picks the port, the server says which, and stops it with itself."""
    server = ServerProcess(tmp_path / "data", "--http-port", "0")
    try:
        line = server.proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("HTTP on 127.0.0.1:"), line
        http_address = line.split()[2]
        assert httpx.get(f"http://{http_address}/openapi.json").json()["openapi"].startswith("3.")
        no_token = httpx.post(f"http://{http_address}/v1/deployments/x/forward", json={"rows": []})
        assert no_token.status_code == 401
    finally:
        assert server.stop() == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{http_address}/openapi.json")


def test_an_embedded_server_serves_http_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pellucid.client import _embedded

    monkeypatch.setenv("PELLUCID_SERVER_HTTP_PORT", "0")
    address = _embedded.local_address(str(tmp_path / "embedded"))
    try:
        server = _embedded._servers[(tmp_path / "embedded").resolve()]
        assert server.address == address and server.http_port > 0
        assert httpx.get(f"http://127.0.0.1:{server.http_port}/openapi.json").status_code == 200
    finally:
        _embedded._stop((tmp_path / "embedded").resolve())
