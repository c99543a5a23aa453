"""The Open Inference Protocol naming a deployment as its model, over gRPC (pellucid's own copy of
the stubs) and REST (httpx): a deployment token reaches its own deployment and nothing else, a
PAT reaches its owner's deployments, a disabled deployment refuses as the HTTP forward does.
tests/test_oip_deployment_clients.py calls a deployment with the stock tritonclient, curl and the
sidekick-style client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import numpy as np
import pytest

from pellucid.api import v1
from pellucid.api.oip import grpc_service_pb2 as pb
from pellucid.api.oip import grpc_service_pb2_grpc as pb_grpc
from pellucid.client.deployments import ManagedDeployment
from pellucid.client.user import User
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
