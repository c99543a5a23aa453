"""WorkflowService: workflows, their versions, and runs of their graphs."""

from __future__ import annotations

import grpc

from pellucid.api import v1
from pellucid.server.engine import Engine
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.convert import page_request
from pellucid.server.grpc.idempotency import replayable
from pellucid.server.grpc.models import runner_wait
from pellucid.server.grpc.translate.workflows import (
    run_request,
    run_response,
    version_message,
    version_spec,
    workflow_message,
    workflow_spec,
)


class WorkflowServicer(v1.WorkflowServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @replayable(v1.PostWorkflowsResponse)
    def PostWorkflows(
        self, request: v1.PostWorkflowsRequest, context: grpc.ServicerContext
    ) -> v1.PostWorkflowsResponse:
        created = self.engine.workflows.create(
            principal(), request.user_id, request.app_id, [workflow_spec(w) for w in request.workflows]
        )
        return v1.PostWorkflowsResponse(workflows=[workflow_message(w, v) for w, v in created])

    @replayable(v1.WorkflowVersion)
    def PostWorkflowVersions(
        self, request: v1.PostWorkflowVersionsRequest, context: grpc.ServicerContext
    ) -> v1.WorkflowVersion:
        return version_message(
            self.engine.workflows.create_version(
                principal(), request.user_id, request.app_id, request.workflow_id, version_spec(request.version)
            )
        )

    def GetWorkflow(self, request: v1.GetWorkflowRequest, context: grpc.ServicerContext) -> v1.Workflow:
        return workflow_message(
            *self.engine.workflows.get(
                principal(), request.user_id, request.app_id, request.workflow_id, request.version_id
            )
        )

    def ListWorkflows(
        self, request: v1.ListWorkflowsRequest, context: grpc.ServicerContext
    ) -> v1.ListWorkflowsResponse:
        workflows, token = self.engine.workflows.list(
            principal(), request.user_id, request.app_id, page_request(request), request.query
        )
        return v1.ListWorkflowsResponse(workflows=[workflow_message(w, v) for w, v in workflows], next_page_token=token)

    @replayable(v1.DeleteWorkflowResponse)
    def DeleteWorkflow(
        self, request: v1.DeleteWorkflowRequest, context: grpc.ServicerContext
    ) -> v1.DeleteWorkflowResponse:
        self.engine.workflows.delete(principal(), request.user_id, request.app_id, request.workflow_id)
        return v1.DeleteWorkflowResponse()

    def ListWorkflowVersions(
        self, request: v1.ListWorkflowVersionsRequest, context: grpc.ServicerContext
    ) -> v1.ListWorkflowVersionsResponse:
        versions, token = self.engine.workflows.list_versions(
            principal(), request.user_id, request.app_id, request.workflow_id, page_request(request)
        )
        return v1.ListWorkflowVersionsResponse(versions=[version_message(v) for v in versions], next_page_token=token)

    def PostWorkflowResults(
        self, request: v1.PostWorkflowResultsRequest, context: grpc.ServicerContext
    ) -> v1.PostWorkflowResultsResponse:
        # one deadline for the whole graph: the caller's, less the margin to send the answer back
        wait = runner_wait(context.time_remaining())
        return run_response(self.engine.workflow_runs.run(principal(), run_request(request, wait)))
