"""The Open Inference Protocol naming a deployment as its model, over gRPC (pellucid's own copy of
the stubs) and REST (httpx): a deployment token reaches its own deployment and nothing else, a
PAT reaches its owner's deployments, a disabled deployment refuses as the HTTP forward does; a
deployment of a workflow answers as its HTTP forward does. tests/test_oip_deployment_clients.py
calls a deployment with the stock tritonclient, curl and the sidekick-style client; this file calls a workflow deployment with tritonclient too."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from pellucid.api import v1
from pellucid.api.oip import grpc_service_pb2 as pb
from pellucid.api.oip import grpc_service_pb2_grpc as pb_grpc
from pellucid.client.deployments import ManagedDeployment
from pellucid.client.user import User
from tests import triton_venv
from tests.conftest import RunningServer
from tests.runner_models import tensor_math
from tests.test_oip import (  # noqa: F401 - math_model and stub are fixtures
    MATH_INPUTS,
    MATH_OUTPUTS,
    MathModel,
    assert_same,
    auth,
    math_model,
    raw_request,
    response_arrays,
    sample,
    stub,
)
from tests.test_oip_http import bearer, http_url, json_inputs, json_outputs  # noqa: F401 - http_url is a fixture
from tests.test_workflow_deployments import TEXTS, Served, served  # noqa: F401 - served is a fixture


@dataclass
class Deployed:
    math: MathModel
    deployment: ManagedDeployment
    token: str
    other_token: str  # of another deployment of the same model and owner

    @property
    def id(self) -> str:
        return self.deployment.id


@pytest.fixture
def deployed(math_model: MathModel, unique: str) -> Iterator[Deployed]:  # noqa: F811
    deployment = math_model.app.create_deployment(f"oip-dep-{unique}", model_id="math")
    _, token = deployment.create_token("oip")
    other = math_model.app.create_deployment(f"oip-other-{unique}", model_id="math")
    _, other_token = other.create_token("oip")
    yield Deployed(math_model, deployment, token, other_token)


def refusal(call: object, request: object, secret: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, metadata=auth(secret), timeout=30)  # type: ignore[operator]
    return caught.value.code(), caught.value.details() or ""


def test_a_deployment_token_calls_its_deployment_by_id(
    stub: pb_grpc.GRPCInferenceServiceStub,  # noqa: F811
    deployed: Deployed,
) -> None:
    token = deployed.token
    assert stub.ServerLive(pb.ServerLiveRequest()).live  # health needs no token, as before
    assert stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=auth(token)).name == "pellucid"
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=deployed.id), metadata=auth(token))
    assert meta.name == deployed.id and len(meta.versions) == 1
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("x", "FP32", [-1, 3]),
        ("n", "INT64", [-1]),
        ("s", "BYTES", [-1]),
    ]
    assert stub.ModelReady(pb.ModelReadyRequest(name=deployed.id), metadata=auth(token)).ready
    inputs = sample()
    response = stub.ModelInfer(raw_request(deployed.id, inputs), metadata=auth(token), timeout=30)
    assert response.model_name == deployed.id and response.model_version == meta.versions[0]
    assert_same(response_arrays(response), tensor_math(inputs))
    # the owner's PAT names it too
    response = stub.ModelInfer(raw_request(deployed.id, inputs), metadata=auth(deployed.math.pat), timeout=30)
    assert_same(response_arrays(response), tensor_math(inputs))


def test_a_deployment_token_reaches_nothing_else(
    stub: pb_grpc.GRPCInferenceServiceStub,  # noqa: F811
    deployed: Deployed,
    server: RunningServer,
    bob: User,
) -> None:
    token, inputs = deployed.token, sample()
    for name in (deployed.math.name, deployed.math.plain_name, f"oip-other-{deployed.id.removeprefix('oip-dep-')}"):
        for call, request in (
            (stub.ModelInfer, raw_request(name, inputs)),
            (stub.ModelMetadata, pb.ModelMetadataRequest(name=name)),
            (stub.ModelReady, pb.ModelReadyRequest(name=name)),
        ):
            code, message = refusal(call, request, token)
            assert code == grpc.StatusCode.PERMISSION_DENIED, (name, message)
            assert deployed.id in message and "token" in message
    # a deployment id that does not exist is refused as one of another deployment: the holder learns nothing
    code, message = refusal(stub.ModelInfer, raw_request("no-such-deployment", inputs), token)
    assert code == grpc.StatusCode.PERMISSION_DENIED and deployed.id in message and "token" in message
    code, message = refusal(stub.ModelInfer, raw_request("no-such-deployment", inputs), deployed.math.pat)
    assert code == grpc.StatusCode.NOT_FOUND and "<app>/<model>" in message and "deployment" in message
    code, _ = refusal(stub.ModelInfer, raw_request(deployed.id, inputs), "pel_dep_not-a-token")
    assert code == grpc.StatusCode.UNAUTHENTICATED
    # another user's PAT: as if the deployment did not exist (the HTTP forward answers 404 too)
    code, _ = refusal(stub.ModelInfer, raw_request(deployed.id, inputs), bob._connection.settings.pat)
    assert code == grpc.StatusCode.NOT_FOUND
    # the rest of the API refuses a deployment token, however valid
    with grpc.insecure_channel(server.server.address) as channel:
        apps = v1.AppServiceStub(channel)
        code, message = refusal(apps.ListApps, v1.ListAppsRequest(), token)
        assert code == grpc.StatusCode.PERMISSION_DENIED and "deployment token" in message and "PAT" in message
        deployments = v1.DeploymentServiceStub(channel)
        code, _ = refusal(deployments.GetDeployment, v1.GetDeploymentRequest(deployment_id=deployed.id), token)
        assert code == grpc.StatusCode.PERMISSION_DENIED
        code, _ = refusal(apps.ListApps, v1.ListAppsRequest(), "pel_dep_not-a-token")
        assert code == grpc.StatusCode.UNAUTHENTICATED


def test_a_disabled_deployment_refuses_as_the_forward_does(
    stub: pb_grpc.GRPCInferenceServiceStub,  # noqa: F811
    deployed: Deployed,
) -> None:
    deployed.deployment.disable()
    for secret in (deployed.token, deployed.math.pat):
        for call, request in (
            (stub.ModelInfer, raw_request(deployed.id, sample())),
            (stub.ModelMetadata, pb.ModelMetadataRequest(name=deployed.id)),
            (stub.ModelReady, pb.ModelReadyRequest(name=deployed.id)),
        ):
            code, message = refusal(call, request, secret)
            assert code == grpc.StatusCode.PERMISSION_DENIED and "disabled" in message
    deployed.deployment.enable()
    assert stub.ModelReady(pb.ModelReadyRequest(name=deployed.id), metadata=auth(deployed.token)).ready


def test_a_deployment_serves_its_pinned_version_only(
    stub: pb_grpc.GRPCInferenceServiceStub,  # noqa: F811
    deployed: Deployed,
) -> None:
    (version,) = stub.ModelMetadata(pb.ModelMetadataRequest(name=deployed.id), metadata=auth(deployed.token)).versions
    pinned = deployed.math.app.create_deployment(f"{deployed.id}-pinned", model_id="math", version_id=version)
    _, token = pinned.create_token()
    request = raw_request(pinned.id, sample())
    request.model_version = version
    assert stub.ModelInfer(request, metadata=auth(token), timeout=30).model_version == version
    request.model_version = "another"
    code, message = refusal(stub.ModelInfer, request, token)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and repr(version) in message and "empty" in message
    code, message = refusal(stub.ModelReady, pb.ModelReadyRequest(name=deployed.id, version="another"), deployed.token)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "latest version" in message


def test_rest_names_a_deployment_with_its_token(http_url: str, deployed: Deployed, bob: User) -> None:  # noqa: F811
    base, token, inputs = f"{http_url}/v2/models", deployed.token, sample()
    meta = httpx.get(f"{base}/{deployed.id}", headers=bearer(token))
    assert meta.status_code == 200 and meta.json()["name"] == deployed.id, meta.text
    assert httpx.get(f"{base}/{deployed.id}/ready", headers=bearer(token)).json()["ready"] is True
    assert httpx.get(f"{http_url}/v2", headers=bearer(token)).status_code == 200

    def infer(name: str, secret: str) -> httpx.Response:
        body = {"inputs": json_inputs(inputs)}
        return httpx.post(f"{base}/{name}/infer", json=body, headers=bearer(secret), timeout=30)

    reply = infer(deployed.id, token)
    assert reply.status_code == 200 and reply.json()["model_name"] == deployed.id, reply.text
    assert_same(json_outputs(reply.json()), tensor_math(inputs))
    assert infer(deployed.id, deployed.math.pat).status_code == 200
    # wrong names for the token: 403, as the forward answers another deployment's token
    for name in (deployed.math.name, f"{deployed.math.app.id}--math"):
        assert infer(name, token).status_code == 403
    assert httpx.get(f"{base}/{deployed.math.name}", headers=bearer(token)).status_code == 403
    assert infer(deployed.id, deployed.other_token).status_code == 403
    assert infer(deployed.id, bob._connection.settings.pat).status_code == 404
    assert infer(deployed.id, "pel_dep_not-a-token").status_code == 401
    deployed.deployment.disable()
    refused = infer(deployed.id, token)
    assert refused.status_code == 403 and "disabled" in refused.json()["error"]
    assert httpx.get(f"{base}/{deployed.id}/ready", headers=bearer(token)).status_code == 403
    deployed.deployment.enable()
    assert np.array_equal(json_outputs(infer(deployed.id, token).json())["total"], tensor_math(inputs)["total"])


def test_rest_tells_a_dashed_deployment_id_from_app_dash_dash_model(
    http_url: str,  # noqa: F811
    deployed: Deployed,
    unique: str,
) -> None:
    """REST also names models `<app>--<model>`: a deployment id with "--" in it is still its deployment."""
    dashed = deployed.math.app.create_deployment(f"pets--{unique}", model_id="math")
    _, token = dashed.create_token()
    inputs = sample()
    for name, secret in ((dashed.id, token), (dashed.id, deployed.math.pat), (f"{deployed.math.app.id}--math", None)):
        headers = bearer(secret or deployed.math.pat)
        reply = httpx.post(
            f"{http_url}/v2/models/{name}/infer", json={"inputs": json_inputs(inputs)}, headers=headers, timeout=30
        )
        assert reply.status_code == 200, (name, reply.text)
        assert reply.json()["model_name"] == (name if secret else deployed.math.name)
        assert_same(json_outputs(reply.json()), tensor_math(inputs))
        ready = httpx.get(f"{http_url}/v2/models/{name}/ready", headers=headers)
        assert ready.json() == {"name": name if secret else deployed.math.name, "ready": True}
    refused = httpx.get(f"{http_url}/v2/models/{deployed.math.app.id}--math", headers=bearer(token))
    assert refused.status_code == 403


def test_tensors_map_to_the_deployments_feature_specs(
    stub: pb_grpc.GRPCInferenceServiceStub,  # noqa: F811
    deployed: Deployed,
) -> None:
    """A deployment's specs (given at creation) are what its name takes, as its HTTP forward does."""
    narrower = deployed.math.app.create_deployment(
        f"{deployed.id}-xn", model_id="math", feature_specs={"input": MATH_INPUTS[:2], "output": MATH_OUTPUTS}
    )
    _, token = narrower.create_token()
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=narrower.id), metadata=auth(token))
    assert [t.name for t in meta.inputs] == ["x", "n"]
    inputs = sample()
    code, message = refusal(stub.ModelInfer, raw_request(narrower.id, inputs), token)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no input 's'" in message
    del inputs["s"]
    response = stub.ModelInfer(raw_request(narrower.id, inputs), metadata=auth(token), timeout=30)
    assert_same(response_arrays(response), tensor_math(inputs))


# the workflow deployment `reviews` of tests/test_workflow_deployments.py: text -> the embedder
# (leaf `vector`) and the embedder -> a trained classifier -> a thresholder (leaf `sure`)
CATEGORIES = ["positive", "negative"]


def text_tensor(text: str, name: str = "text") -> dict[str, np.ndarray]:
    items = np.empty(1, dtype=object)
    items[:] = [text.encode()]
    return {name: items}


def forwarded(reviews: Served, text: str) -> dict[str, Any]:
    """The HTTP /v1 forward's answer for one row of `reviews`, as the OIP tensors should carry it."""
    response = reviews.post([{"text": text}])
    assert response.status_code == 200, response.text
    (row,) = response.json()["rows"]
    expected = {}
    if "vector" in row:
        expected["vector"] = np.asarray(row["vector"]["data"], dtype=np.float32).reshape(row["vector"]["shape"])
    expected["sure"] = np.asarray([row["sure"].get(c, 0.0) for c in CATEGORIES], dtype=np.float32)
    return expected


def assert_close(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    for name, array in expected.items():
        assert got[name].shape == array.shape, name
        assert np.allclose(got[name], array, atol=1e-6), name


@pytest.fixture
def workflow_stub(served: Served) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:  # noqa: F811
    with grpc.insecure_channel(served.server.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def test_a_workflow_deployment_answers_over_oip_grpc_as_its_forward_does(
    workflow_stub: pb_grpc.GRPCInferenceServiceStub,
    served: Served,  # noqa: F811
) -> None:
    oip, token = workflow_stub, served.token
    version = served.app.deployment("reviews").info.version_id
    meta = oip.ModelMetadata(pb.ModelMetadataRequest(name="reviews"), metadata=auth(token))
    assert meta.name == "reviews" and list(meta.versions) == [version]  # the workflow version it pins
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("text", "BYTES", [1])]
    # outputs named by their leaf node; the thresholder's concepts as one probability per category
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("vector", "FP32", []),
        ("sure", "FP32", [2]),
    ]
    assert oip.ModelReady(pb.ModelReadyRequest(name="reviews"), metadata=auth(token)).ready
    for text in TEXTS[:2]:
        response = oip.ModelInfer(raw_request("reviews", text_tensor(text)), metadata=auth(token), timeout=30)
        assert (response.model_name, response.model_version, response.id) == ("reviews", version, "req-1")
        got = response_arrays(response)
        assert got["vector"].shape == (384,)
        assert_close(got, forwarded(served, text))
    # only the outputs asked for
    request = raw_request("reviews", text_tensor(TEXTS[0]))
    request.outputs.add(name="sure")
    response = oip.ModelInfer(request, metadata=auth(served.user._connection.settings.pat), timeout=30)
    assert [o.name for o in response.outputs] == ["sure"]
    # a spec-narrowed deployment of the same workflow: its own specs, its node named as it names it
    specs = {"output": [{"name": "classify", "type": "categorical", "categories": CATEGORIES}]}
    narrowed = served.app.create_deployment("reviews-oip-raw", workflow_id="reviews", feature_specs=specs)
    _, raw_token = narrowed.create_token()
    meta = oip.ModelMetadata(pb.ModelMetadataRequest(name=narrowed.id), metadata=auth(raw_token))
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("classify", "FP32", [2])]
    response = oip.ModelInfer(raw_request(narrowed.id, text_tensor(TEXTS[1])), metadata=auth(raw_token), timeout=30)
    (classify,) = response_arrays(response).values()
    row = served.post([{"text": TEXTS[1]}], deployment=narrowed.id, token=raw_token).json()["rows"][0]
    assert np.allclose(classify, [row["classify"][c] for c in CATEGORIES], atol=1e-6)


def test_a_workflow_deployment_refuses_over_oip_as_its_forward_does(
    workflow_stub: pb_grpc.GRPCInferenceServiceStub,
    served: Served,  # noqa: F811
) -> None:
    oip, token = workflow_stub, served.token
    code, message = refusal(oip.ModelInfer, raw_request("reviews", text_tensor("fine", name="txt")), token)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "deployment 'reviews' has no input 'txt'" in message
    assert "its inputs are text" in message
    wrong = {"text": np.ones(1, dtype=np.float32)}
    code, message = refusal(oip.ModelInfer, raw_request("reviews", wrong), token)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tensor 'text'" in message and "BYTES" in message
    request = raw_request("reviews", text_tensor("fine"))
    request.outputs.add(name="nowhere")
    code, message = refusal(oip.ModelInfer, request, token)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no output 'nowhere'" in message
    # an empty text passes the spec, and the embedder refuses it: the node names itself
    code, message = refusal(oip.ModelInfer, raw_request("reviews", text_tensor("")), token)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, message
    assert "the workflow refused it: node 'embed' (model 'text-embed') failed" in message
    request = raw_request("reviews", text_tensor("fine"))
    request.model_version = "another"
    code, message = refusal(oip.ModelInfer, request, token)
    pinned = served.app.deployment("reviews").info.version_id
    assert code == grpc.StatusCode.INVALID_ARGUMENT and repr(pinned) in message and "empty" in message


def test_a_workflow_deployment_answers_over_oip_rest_as_its_forward_does(served: Served) -> None:  # noqa: F811
    base, token = f"{served.base}/v2/models/reviews", served.token
    version = served.app.deployment("reviews").info.version_id
    meta = httpx.get(base, headers=bearer(token))
    assert meta.status_code == 200, meta.text
    assert meta.json() == {
        "name": "reviews",
        "versions": [version],
        "platform": "pellucid",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1]}],
        "outputs": [
            {"name": "vector", "datatype": "FP32", "shape": []},
            {"name": "sure", "datatype": "FP32", "shape": [2]},
        ],
    }
    assert httpx.get(f"{base}/ready", headers=bearer(token)).json() == {"name": "reviews", "ready": True}
    text = TEXTS[2]
    reply = httpx.post(
        f"{base}/infer", json={"inputs": json_inputs(text_tensor(text))}, headers=bearer(token), timeout=30
    )
    assert reply.status_code == 200, reply.text
    assert (reply.json()["model_name"], reply.json()["model_version"]) == ("reviews", version)
    assert_close(json_outputs(reply.json()), forwarded(served, text))
    bad = httpx.post(
        f"{base}/infer", json={"inputs": json_inputs(text_tensor(text, name="txt"))}, headers=bearer(token), timeout=30
    )
    assert bad.status_code == 400 and "no input 'txt'" in bad.json()["error"]
    refused = httpx.post(
        f"{base}/infer", json={"inputs": json_inputs(text_tensor(""))}, headers=bearer(token), timeout=30
    )
    assert refused.status_code == 400 and "node 'embed'" in refused.json()["error"]


@pytest.mark.timeout(300)
def test_tritonclient_calls_a_workflow_deployment(served: Served, tmp_path: Path) -> None:  # noqa: F811
    """The stock tritonclient (tests/triton_venv.py), over gRPC and REST, with the deployment token."""
    text = TEXTS[-1]
    np.savez(tmp_path / "inputs.npz", **text_tensor(text))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the venv's own pellucid install
    result = subprocess.run(
        [
            str(triton_venv.python()),
            str(triton_venv.ROOT / "tests" / "triton_client.py"),
            served.server.address,
            served.base.removeprefix("http://"),
            served.token,
            "reviews",
            str(tmp_path / "inputs.npz"),
            str(tmp_path / "outputs.npz"),
            "vector,sure",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    got = dict(np.load(tmp_path / "outputs.npz", allow_pickle=True))
    assert got["grpc_meta_inputs"].tolist() == got["http_meta_inputs"].tolist() == ["text:BYTES:[1]"]
    expected = forwarded(served, text)
    for prefix in ("grpc", "http_binary", "http_json"):
        assert_close({name: got[f"{prefix}_{name}"] for name in expected}, expected)


def test_a_deployments_contract_holds_over_oip_as_over_http(
    stub: pb_grpc.GRPCInferenceServiceStub,  # noqa: F811
    math_model: MathModel,  # noqa: F811
    unique: str,
) -> None:
    """The HTTP forward refuses a number that is not finite before the model runs; OIP naming the
    deployment checks its tensors against the same specs the same way."""
    deployment = math_model.app.create_deployment(
        f"oip-num-{unique}", model_id="math", feature_specs=[MATH_INPUTS[0], {"name": "n", "type": "numeric"}]
    )
    _, token = deployment.create_token()
    request = raw_request(deployment.id, {"x": sample()["x"], "n": np.array([np.nan])})
    code, message = refusal(stub.ModelInfer, request, token)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tensor 'n'" in message and "finite number" in message


def test_a_deleted_deployments_token_hears_it_was_deleted_everywhere(
    workflow_stub: pb_grpc.GRPCInferenceServiceStub,
    served: Served,  # noqa: F811
) -> None:
    """A token of a deleted deployment (alone, or with its app) is told so (NOT_FOUND / 404
    DEPLOYMENT_DELETED) over OIP gRPC, OIP REST and the deployment's own routes; a token that
    never was stays UNAUTHENTICATED / 401, and the owner's PAT gets its 404 as before."""
    app = served.user.create_app("short-lived", base_workflow="Empty")
    app.create_model("vectors", model_type_id="text-embedder")
    _, alone = app.create_deployment("gone-alone", model_id="vectors").create_token()
    _, with_app = app.create_deployment("gone-with-app", model_id="vectors").create_token()
    app.deployment("gone-alone").delete()
    pat = served.user._connection.settings.pat

    def refusals(deployment_id: str, secret: str) -> list[tuple[object, str]]:
        """What each surface answers `secret` naming `deployment_id`: gRPC status or HTTP status, and the message."""
        answers: list[tuple[object, str]] = []
        for call, request in (
            (workflow_stub.ModelInfer, raw_request(deployment_id, text_tensor("hi"))),
            (workflow_stub.ModelMetadata, pb.ModelMetadataRequest(name=deployment_id)),
            (workflow_stub.ModelReady, pb.ModelReadyRequest(name=deployment_id)),
        ):
            answers.append(refusal(call, request, secret))
        base, headers = f"{served.base}/v2/models/{deployment_id}", bearer(secret)
        body = {"inputs": json_inputs(text_tensor("hi"))}
        for reply in (
            httpx.post(f"{base}/infer", json=body, headers=headers, timeout=30),
            httpx.get(base, headers=headers),
            httpx.get(f"{base}/ready", headers=headers),
        ):
            answers.append((reply.status_code, reply.json()["error"]))
        own = f"{served.base}/v1/deployments/{deployment_id}"
        for reply in (httpx.get(own, headers=headers), served.post([{"text": "hi"}], deployment_id, secret)):
            error = reply.json()["error"]
            answers.append((reply.status_code, f"{error['reason']}: {error['message']}"))
        return answers

    def assert_deleted(answers: list[tuple[object, str]], message: str) -> None:
        assert [code for code, _ in answers] == [grpc.StatusCode.NOT_FOUND] * 3 + [404] * 5, answers
        assert all(message in text for _, text in answers), answers
        assert all(text.startswith("DEPLOYMENT_DELETED") for _, text in answers[-2:]), answers

    assert_deleted(refusals("gone-alone", alone), "deployment 'gone-alone' was deleted: this token")
    # naming another deployment's id tells of its own deployment only, nothing of the id named
    assert_deleted(refusals("reviews", alone), "deployment 'gone-alone' was deleted: this token")
    served.user.delete_app("short-lived")
    assert_deleted(refusals("gone-with-app", with_app), "deployment 'gone-with-app' was deleted with its app")
    # a token that never was: UNAUTHENTICATED / 401 as before; the owner's PAT: the deployment's 404
    never = refusals("gone-alone", "pel_dep_never-a-token")
    assert [code for code, _ in never] == [grpc.StatusCode.UNAUTHENTICATED] * 3 + [401] * 5, never
    by_pat = served.post([{"text": "hi"}], "gone-alone", pat)
    assert by_pat.status_code == 404 and by_pat.json()["error"]["reason"] == "DEPLOYMENT_NOT_FOUND", by_pat.text
