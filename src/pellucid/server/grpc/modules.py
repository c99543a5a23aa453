"""ModuleService: modules, their versions, and which version each app installed."""

from __future__ import annotations

import grpc

from pellucid.api import v1
from pellucid.server.engine import Engine
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.convert import page_request, to_dict
from pellucid.server.grpc.idempotency import replayable
from pellucid.server.grpc.translate.modules import installed_message, module_message, version_message, version_spec


class ModuleServicer(v1.ModuleServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @replayable(v1.Module)
    def CreateModule(self, request: v1.CreateModuleRequest, context: grpc.ServicerContext) -> v1.Module:
        m = request.module
        module = self.engine.modules.create(
            principal(), request.user_id, request.app_id, m.id, m.description, to_dict(m.metadata)
        )
        return module_message(module, None)

    def GetModule(self, request: v1.GetModuleRequest, context: grpc.ServicerContext) -> v1.Module:
        return module_message(
            *self.engine.modules.get(
                principal(), request.user_id, request.app_id, request.module_id, request.version_id
            )
        )

    def ListModules(self, request: v1.ListModulesRequest, context: grpc.ServicerContext) -> v1.ListModulesResponse:
        modules, token = self.engine.modules.list(
            principal(), request.user_id, request.app_id, page_request(request), request.query
        )
        return v1.ListModulesResponse(modules=[module_message(m, v) for m, v in modules], next_page_token=token)

    @replayable(v1.DeleteModuleResponse)
    def DeleteModule(self, request: v1.DeleteModuleRequest, context: grpc.ServicerContext) -> v1.DeleteModuleResponse:
        self.engine.modules.delete(principal(), request.user_id, request.app_id, request.module_id)
        return v1.DeleteModuleResponse()

    @replayable(v1.ModuleVersion)
    def CreateModuleVersion(
        self, request: v1.CreateModuleVersionRequest, context: grpc.ServicerContext
    ) -> v1.ModuleVersion:
        return version_message(
            self.engine.modules.create_version(
                principal(), request.user_id, request.app_id, request.module_id, version_spec(request.version)
            )
        )

    def ListModuleVersions(
        self, request: v1.ListModuleVersionsRequest, context: grpc.ServicerContext
    ) -> v1.ListModuleVersionsResponse:
        versions, token = self.engine.modules.list_versions(
            principal(), request.user_id, request.app_id, request.module_id, page_request(request)
        )
        return v1.ListModuleVersionsResponse(versions=[version_message(v) for v in versions], next_page_token=token)

    @replayable(v1.InstalledModuleVersion)
    def InstallModuleVersion(
        self, request: v1.InstallModuleVersionRequest, context: grpc.ServicerContext
    ) -> v1.InstalledModuleVersion:
        return installed_message(
            self.engine.modules.install(
                principal(),
                request.user_id,
                request.app_id,
                request.module_app_id,
                request.module_id,
                request.module_version_id,
                request.id,
            )
        )

    def ListInstalledModuleVersions(
        self, request: v1.ListInstalledModuleVersionsRequest, context: grpc.ServicerContext
    ) -> v1.ListInstalledModuleVersionsResponse:
        installed, token = self.engine.modules.list_installed(
            principal(), request.user_id, request.app_id, page_request(request), request.module_id
        )
        return v1.ListInstalledModuleVersionsResponse(
            installed_module_versions=[installed_message(i) for i in installed], next_page_token=token
        )
