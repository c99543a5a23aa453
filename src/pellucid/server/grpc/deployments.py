"""DeploymentService: deployments, enabling them, and their tokens (calls go through HTTP)."""

from __future__ import annotations

import grpc

from pellucid.api import v1
from pellucid.server.engine import Engine
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.convert import page_request
from pellucid.server.grpc.idempotency import replayable
from pellucid.server.grpc.translate.deployments import deployment_message, given_specs, token_message
from pellucid.server.records import DeploymentRecord


class DeploymentServicer(v1.DeploymentServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _message(self, deployment: DeploymentRecord) -> v1.Deployment:
        return deployment_message(deployment, self.engine.deployments.http_base_url)

    @replayable(v1.Deployment)
    def CreateDeployment(self, request: v1.CreateDeploymentRequest, context: grpc.ServicerContext) -> v1.Deployment:
        return self._message(
            self.engine.deployments.create(
                principal(),
                request.user_id,
                request.app_id,
                request.deployment_id,
                model_id=request.model_id,
                workflow_id=request.workflow_id,
                version_id=request.version_id,
                input_specs=given_specs(request, "input_specs"),
                output_specs=given_specs(request, "output_specs"),
                description=request.description,
                enabled=not request.disabled,
            )
        )

    def GetDeployment(self, request: v1.GetDeploymentRequest, context: grpc.ServicerContext) -> v1.Deployment:
        return self._message(self.engine.deployments.get(principal(), request.deployment_id))

    def ListDeployments(
        self, request: v1.ListDeploymentsRequest, context: grpc.ServicerContext
    ) -> v1.ListDeploymentsResponse:
        found, token = self.engine.deployments.list(principal(), request.user_id, request.app_id, page_request(request))
        return v1.ListDeploymentsResponse(deployments=[self._message(d) for d in found], next_page_token=token)

    @replayable(v1.DeleteDeploymentResponse)
    def DeleteDeployment(
        self, request: v1.DeleteDeploymentRequest, context: grpc.ServicerContext
    ) -> v1.DeleteDeploymentResponse:
        self.engine.deployments.delete(principal(), request.deployment_id)
        return v1.DeleteDeploymentResponse()

    def SetDeploymentEnabled(
        self, request: v1.SetDeploymentEnabledRequest, context: grpc.ServicerContext
    ) -> v1.Deployment:
        # setting the same value twice is harmless, so a retry needs no request log
        return self._message(self.engine.deployments.set_enabled(principal(), request.deployment_id, request.enabled))

    def CreateDeploymentToken(
        self, request: v1.CreateDeploymentTokenRequest, context: grpc.ServicerContext
    ) -> v1.CreateDeploymentTokenResponse:
        # the answer holds the secret, so it is not stored: the engine replays a retry (a new secret)
        token, secret = self.engine.deployments.create_token(
            principal(), request.deployment_id, request.description, request.request_id
        )
        return v1.CreateDeploymentTokenResponse(token=token_message(token), secret=secret)

    def ListDeploymentTokens(
        self, request: v1.ListDeploymentTokensRequest, context: grpc.ServicerContext
    ) -> v1.ListDeploymentTokensResponse:
        tokens, token = self.engine.deployments.list_tokens(
            principal(), request.deployment_id, request.include_revoked, page_request(request)
        )
        return v1.ListDeploymentTokensResponse(tokens=[token_message(t) for t in tokens], next_page_token=token)

    def RevokeDeploymentToken(
        self, request: v1.RevokeDeploymentTokenRequest, context: grpc.ServicerContext
    ) -> v1.DeploymentToken:
        # revoking twice is harmless, so a retry needs no request log
        return token_message(self.engine.deployments.revoke_token(principal(), request.deployment_id, request.token_id))
