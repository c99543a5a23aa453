"""AppService: create, read, list, patch and delete apps."""

from __future__ import annotations

import grpc

from pellucid.api import v1
from pellucid.server.engine import Engine
from pellucid.server.engine.apps import IndexStatus
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.convert import page_request, to_dict, to_struct, to_timestamp
from pellucid.server.grpc.idempotency import replayable
from pellucid.server.grpc.inputs import input_message
from pellucid.server.records import AppRecord, IndexState

_METADATA_ACTIONS = {
    v1.METADATA_ACTION_UNSPECIFIED: "merge",
    v1.METADATA_ACTION_MERGE: "merge",
    v1.METADATA_ACTION_OVERWRITE: "overwrite",
    v1.METADATA_ACTION_REMOVE: "remove",
}


def app_message(app: AppRecord) -> v1.App:
    return v1.App(
        id=app.id,
        user_id=app.user_id,
        name=app.name,
        description=app.description,
        base_workflow=app.base_workflow,
        metadata=to_struct(app.metadata),
        created_at=to_timestamp(app.created_at),
        modified_at=to_timestamp(app.modified_at),
    )


def index_status_message(status: IndexStatus) -> v1.AppIndexStatus:
    return v1.AppIndexStatus(
        base_workflow=status.base_workflow,
        embedded_input_types=list(status.embedded_types),
        ready=status.counts[IndexState.READY],
        pending=status.counts[IndexState.PENDING],
        in_progress=status.counts[IndexState.IN_PROGRESS],
        failed=status.counts[IndexState.FAILED],
        failed_inputs=[input_message(r) for r in status.failed],
    )


class AppServicer(v1.AppServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @replayable(v1.App)
    def CreateApp(self, request: v1.CreateAppRequest, context: grpc.ServicerContext) -> v1.App:
        app = request.app
        return app_message(
            self.engine.apps.create(
                principal(),
                app.user_id,
                app.id,
                name=app.name,
                description=app.description,
                base_workflow=app.base_workflow,
                metadata=to_dict(app.metadata),
            )
        )

    def GetApp(self, request: v1.GetAppRequest, context: grpc.ServicerContext) -> v1.App:
        return app_message(self.engine.apps.get(principal(), request.user_id, request.app_id))

    def ListApps(self, request: v1.ListAppsRequest, context: grpc.ServicerContext) -> v1.ListAppsResponse:
        apps, token = self.engine.apps.list(principal(), request.user_id, page_request(request), request.query)
        return v1.ListAppsResponse(apps=[app_message(a) for a in apps], next_page_token=token)

    @replayable(v1.App)
    def PatchApp(self, request: v1.PatchAppRequest, context: grpc.ServicerContext) -> v1.App:
        app = request.app
        changes = {}
        for path in request.update_mask.paths:
            changes[path] = to_dict(app.metadata) if path == "metadata" else getattr(app, path, None)
        return app_message(
            self.engine.apps.patch(
                principal(), app.user_id, app.id, changes, _METADATA_ACTIONS.get(request.metadata_action, "?")
            )
        )

    def GetAppIndexStatus(
        self, request: v1.GetAppIndexStatusRequest, context: grpc.ServicerContext
    ) -> v1.AppIndexStatus:
        return index_status_message(self.engine.apps.index_status(principal(), request.user_id, request.app_id))

    @replayable(v1.DeleteAppResponse)
    def DeleteApp(self, request: v1.DeleteAppRequest, context: grpc.ServicerContext) -> v1.DeleteAppResponse:
        self.engine.apps.delete(principal(), request.user_id, request.app_id)
        return v1.DeleteAppResponse()
