"""Modules, their versions and installations: protos <-> the engine's records."""

from __future__ import annotations

from pellucid.api import v1
from pellucid.server.engine.modules import ModuleVersionSpec
from pellucid.server.grpc.convert import to_dict, to_struct, to_timestamp
from pellucid.server.records import InstalledModuleVersionRecord, ModuleRecord, ModuleVersionRecord


def version_message(v: ModuleVersionRecord) -> v1.ModuleVersion:
    message = v1.ModuleVersion(
        id=v.id,
        module_id=v.module_id,
        app_id=v.app_id,
        user_id=v.user_id,
        description=v.description,
        metadata=to_struct(v.metadata),
        created_at=to_timestamp(v.created_at),
    )
    if v.entry_point:
        message.entry_point = v.entry_point
    else:
        message.git.CopyFrom(v1.GitSource(url=v.git_url, ref=v.git_ref, commit=v.git_commit))
    return message


def module_message(m: ModuleRecord, version: ModuleVersionRecord | None) -> v1.Module:
    return v1.Module(
        id=m.id,
        app_id=m.app_id,
        user_id=m.user_id,
        description=m.description,
        metadata=to_struct(m.metadata),
        created_at=to_timestamp(m.created_at),
        modified_at=to_timestamp(m.modified_at),
        module_version=version_message(version) if version else None,
    )


def installed_message(i: InstalledModuleVersionRecord) -> v1.InstalledModuleVersion:
    return v1.InstalledModuleVersion(
        id=i.id,
        app_id=i.app_id,
        user_id=i.user_id,
        module_version=version_message(i.version),
        created_at=to_timestamp(i.created_at),
    )


def version_spec(message: v1.ModuleVersion) -> ModuleVersionSpec:
    git = message.git if message.WhichOneof("source") == "git" else v1.GitSource()
    return ModuleVersionSpec(
        id=message.id,
        description=message.description,
        git_url=git.url,
        git_ref=git.ref,
        git_commit=git.commit,
        entry_point=message.entry_point,
        metadata=to_dict(message.metadata) if message.HasField("metadata") else None,
    )
