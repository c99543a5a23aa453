"""What both backends share for modules: the tables (in each backend's types) and the rows as records."""

from __future__ import annotations

import json
from typing import Any

from pellucid.server.records import InstalledModuleVersionRecord, ModuleRecord, ModuleVersionRecord

# formatted with each backend's types: {seq} the key column, {ref} a reference to one, {real} a time
MODULE_TABLES = """
CREATE TABLE modules (
    seq {seq},
    app_seq {ref} NOT NULL REFERENCES apps(seq) ON DELETE CASCADE,
    id TEXT NOT NULL,
    description TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at {real} NOT NULL,
    modified_at {real} NOT NULL,
    UNIQUE (app_seq, id)
);
CREATE TABLE module_versions (
    seq {seq},
    module_seq {ref} NOT NULL REFERENCES modules(seq) ON DELETE CASCADE,
    id TEXT NOT NULL,
    description TEXT NOT NULL,
    git_url TEXT NOT NULL,
    git_ref TEXT NOT NULL,
    git_commit TEXT NOT NULL,
    entry_point TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at {real} NOT NULL,
    UNIQUE (module_seq, id)
);
CREATE TABLE installed_module_versions (
    seq {seq},
    app_seq {ref} NOT NULL REFERENCES apps(seq) ON DELETE CASCADE,
    id TEXT NOT NULL,
    module_seq {ref} NOT NULL REFERENCES modules(seq) ON DELETE CASCADE,
    module_version_seq {ref} NOT NULL REFERENCES module_versions(seq) ON DELETE CASCADE,
    created_at {real} NOT NULL,
    UNIQUE (app_seq, id),
    UNIQUE (app_seq, module_seq)
);
CREATE INDEX installed_module_versions_by_module ON installed_module_versions(module_seq);
CREATE INDEX installed_module_versions_by_version ON installed_module_versions(module_version_seq)
"""


MODULE_SELECT = (
    "SELECT m.seq AS seq, a.user_id AS user_id, a.id AS app_id, m.id AS id, m.description AS description,"
    " m.metadata AS metadata, m.created_at AS created_at, m.modified_at AS modified_at"
    " FROM modules m JOIN apps a ON a.seq = m.app_seq WHERE a.user_id = ? AND a.id = ?"
)
VERSION_COLUMNS = (
    "v.id AS id, v.description AS description, v.git_url AS git_url, v.git_ref AS git_ref,"
    " v.git_commit AS git_commit, v.entry_point AS entry_point, v.metadata AS metadata, v.created_at AS created_at,"
    " m.id AS module_id, a.user_id AS user_id, a.id AS app_id"
)
VERSION_SELECT = (
    f"SELECT v.seq AS seq, {VERSION_COLUMNS} FROM module_versions v JOIN modules m ON m.seq = v.module_seq"
    " JOIN apps a ON a.seq = m.app_seq WHERE a.user_id = ? AND a.id = ? AND m.id = ?"
)
# an installation with the version it names (which may belong to another app's module)
INSTALLED_SELECT = (
    f"SELECT i.seq AS seq, i.id AS installed_id, i.created_at AS installed_at, ia.user_id AS installed_user_id,"
    f" ia.id AS installed_app_id, {VERSION_COLUMNS} FROM installed_module_versions i"
    " JOIN apps ia ON ia.seq = i.app_seq JOIN module_versions v ON v.seq = i.module_version_seq"
    " JOIN modules m ON m.seq = v.module_seq JOIN apps a ON a.seq = m.app_seq WHERE ia.user_id = ? AND ia.id = ?"
)
MODULE_SEQ = (
    "SELECT m.seq FROM modules m JOIN apps a ON a.seq = m.app_seq WHERE a.user_id = ? AND a.id = ? AND m.id = ?"
)
VERSION_SEQ = (
    "SELECT v.seq, v.module_seq FROM module_versions v JOIN modules m ON m.seq = v.module_seq"
    " JOIN apps a ON a.seq = m.app_seq WHERE a.user_id = ? AND a.id = ? AND m.id = ? AND v.id = ?"
)
INSERT_MODULE = (
    "INSERT INTO modules (app_seq, id, description, metadata, created_at, modified_at) VALUES (?, ?, ?, ?, ?, ?)"
)
INSERT_VERSION = (
    "INSERT INTO module_versions (module_seq, id, description, git_url, git_ref, git_commit, entry_point, metadata,"
    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# installing replaces the app's installation of the module (of any version) in the same transaction
UNINSTALL_MODULE = "DELETE FROM installed_module_versions WHERE app_seq = ? AND module_seq = ?"
INSERT_INSTALLED = (
    "INSERT INTO installed_module_versions (app_seq, id, module_seq, module_version_seq, created_at)"
    " VALUES (?, ?, ?, ?, ?)"
)


def module_params(app_seq: int, module: ModuleRecord) -> tuple[Any, ...]:
    return (app_seq, module.id, module.description, json.dumps(module.metadata), module.created_at, module.modified_at)


def version_params(module_seq: int, v: ModuleVersionRecord) -> tuple[Any, ...]:
    return (
        module_seq,
        v.id,
        v.description,
        v.git_url,
        v.git_ref,
        v.git_commit,
        v.entry_point,
        json.dumps(v.metadata),
        v.created_at,
    )


def module_from_row(row: Any) -> ModuleRecord:
    return ModuleRecord(
        user_id=row["user_id"],
        app_id=row["app_id"],
        id=row["id"],
        created_at=row["created_at"],
        modified_at=row["modified_at"],
        description=row["description"],
        metadata=json.loads(row["metadata"]),
    )


def module_version_from_row(row: Any) -> ModuleVersionRecord:
    return ModuleVersionRecord(
        user_id=row["user_id"],
        app_id=row["app_id"],
        module_id=row["module_id"],
        id=row["id"],
        created_at=row["created_at"],
        description=row["description"],
        git_url=row["git_url"],
        git_ref=row["git_ref"],
        git_commit=row["git_commit"],
        entry_point=row["entry_point"],
        metadata=json.loads(row["metadata"]),
    )


def installed_from_row(row: Any) -> InstalledModuleVersionRecord:
    return InstalledModuleVersionRecord(
        user_id=row["installed_user_id"],
        app_id=row["installed_app_id"],
        id=row["installed_id"],
        created_at=row["installed_at"],
        version=module_version_from_row(row),
    )
