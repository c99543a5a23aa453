"""Rows of the deployment tables <-> records, for both SQL backends (their SQL differs only in placeholders)."""

from __future__ import annotations

import json
from typing import Any

from pellucid.server.records import DeletedDeploymentToken, DeploymentRecord, DeploymentTokenRecord
from pellucid.server.storage.rows import feature_spec_from_dict, spec_dict

# a deployment belongs to its app (deleting the app deletes it and its tokens); it names its model
# by id, so deleting the model leaves it answering "model not found" until it is pointed elsewhere
DEPLOYMENT_SELECT = (
    "SELECT d.seq AS seq, a.user_id AS user_id, a.id AS app_id, d.id AS id, d.model_id AS model_id,"
    " d.workflow_id AS workflow_id, d.version_id AS version_id, d.feature_specs AS feature_specs,"
    " d.enabled AS enabled, d.description AS description, d.created_at AS created_at,"
    " d.modified_at AS modified_at FROM deployments d JOIN apps a ON a.seq = d.app_seq"
)
INSERT_DEPLOYMENT = (
    "INSERT INTO deployments (app_seq, id, model_id, workflow_id, version_id, feature_specs, enabled, description,"
    " created_at, modified_at) SELECT a.seq, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p} FROM apps a"
    " WHERE a.user_id = {p} AND a.id = {p}"
)
UPDATE_DEPLOYMENT = (
    "UPDATE deployments SET model_id = {p}, workflow_id = {p}, version_id = {p}, feature_specs = {p}, enabled = {p},"
    " description = {p}, modified_at = {p} WHERE id = {p}"
)
TOKEN_SELECT = (
    "SELECT t.seq AS seq, d.id AS deployment_id, t.id AS id, t.token_hash AS token_hash, t.description AS description,"
    " t.created_at AS created_at, t.revoked_at AS revoked_at, t.request_id AS request_id"
    " FROM deployment_tokens t JOIN deployments d ON d.seq = t.deployment_seq"
)
INSERT_TOKEN = (
    "INSERT INTO deployment_tokens (deployment_seq, id, token_hash, description, created_at, revoked_at, request_id)"
    " SELECT seq, {p}, {p}, {p}, {p}, {p}, {p} FROM deployments WHERE id = {p}"
)

# a deleted deployment's tokens leave their hash (only): a call with one is told its deployment was
# deleted (Deployments.authenticate). Written in the transaction that deletes the deployment or app,
# which also drops all but the newest DELETED_TOKENS_KEPT (the table stays bounded; an older one is
# then "not valid", as a token never made). {seq}: the backend's auto-increment key.
DELETED_TOKENS_TABLE = """CREATE TABLE deleted_deployment_tokens (
    seq {seq},
    token_hash TEXT NOT NULL UNIQUE,
    deployment_id TEXT NOT NULL,
    deleted_with TEXT NOT NULL
)"""
DELETED_TOKENS_KEPT = 100_000
PRUNE_DELETED_TOKENS = (
    "DELETE FROM deleted_deployment_tokens WHERE seq <= (SELECT MAX(seq) FROM deleted_deployment_tokens) - {p}"
)
_KEEP_DELETED = (
    "INSERT INTO deleted_deployment_tokens (token_hash, deployment_id, deleted_with)"
    " SELECT t.token_hash, d.id, '{with}' FROM deployment_tokens t JOIN deployments d ON d.seq = t.deployment_seq"
)
KEEP_TOKENS_OF_DEPLOYMENT = _KEEP_DELETED.replace("{with}", "deployment") + " WHERE d.id = {p} ON CONFLICT DO NOTHING"
KEEP_TOKENS_OF_APP = (
    _KEEP_DELETED.replace("{with}", "app")
    + " JOIN apps a ON a.seq = d.app_seq WHERE a.user_id = {p} AND a.id = {p} ON CONFLICT DO NOTHING"
)
DELETED_TOKEN_SELECT = "SELECT deployment_id, deleted_with FROM deleted_deployment_tokens WHERE token_hash = {p}"


def deleted_token_from_row(row: Any) -> DeletedDeploymentToken:
    return DeletedDeploymentToken(deployment_id=row["deployment_id"], with_app=row["deleted_with"] == "app")


def sql(template: str, placeholder: str) -> str:
    return template.replace("{p}", placeholder)


def _specs_json(d: DeploymentRecord) -> str:
    return json.dumps({"in": [spec_dict(s) for s in d.input_specs], "out": [spec_dict(s) for s in d.output_specs]})


def deployment_params(d: DeploymentRecord) -> tuple[Any, ...]:
    return (
        d.id,
        d.model_id,
        d.workflow_id,
        d.version_id,
        _specs_json(d),
        d.enabled,
        d.description,
        d.created_at,
        d.modified_at,
        d.user_id,
        d.app_id,
    )


def update_params(d: DeploymentRecord) -> tuple[Any, ...]:
    return (d.model_id, d.workflow_id, d.version_id, _specs_json(d), d.enabled, d.description, d.modified_at, d.id)


def deployment_from_row(row: Any) -> DeploymentRecord:
    specs = json.loads(row["feature_specs"])
    return DeploymentRecord(
        user_id=row["user_id"],
        app_id=row["app_id"],
        id=row["id"],
        created_at=row["created_at"],
        modified_at=row["modified_at"],
        model_id=row["model_id"],
        workflow_id=row["workflow_id"],
        version_id=row["version_id"],
        input_specs=tuple(feature_spec_from_dict(s) for s in specs.get("in", ())),
        output_specs=tuple(feature_spec_from_dict(s) for s in specs.get("out", ())),
        enabled=bool(row["enabled"]),
        description=row["description"],
    )


def token_params(t: DeploymentTokenRecord) -> tuple[Any, ...]:
    return (t.id, t.token_hash, t.description, t.created_at, t.revoked_at, t.request_id, t.deployment_id)


def token_from_row(row: Any) -> DeploymentTokenRecord:
    return DeploymentTokenRecord(
        deployment_id=row["deployment_id"],
        id=row["id"],
        token_hash=row["token_hash"],
        created_at=row["created_at"],
        description=row["description"],
        revoked_at=row["revoked_at"],
        request_id=row["request_id"],
    )


def schema(seq: str, real: str, boolean: str) -> list[str]:
    """The tables, in either backend's column types."""
    return [
        f"""CREATE TABLE deployments (
            seq {seq},
            app_seq BIGINT NOT NULL REFERENCES apps(seq) ON DELETE CASCADE,
            id TEXT NOT NULL UNIQUE,
            model_id TEXT NOT NULL,
            workflow_id TEXT NOT NULL,
            version_id TEXT NOT NULL,
            feature_specs TEXT NOT NULL,
            enabled {boolean} NOT NULL,
            description TEXT NOT NULL,
            created_at {real} NOT NULL,
            modified_at {real} NOT NULL
        )""",
        "CREATE INDEX deployments_by_app ON deployments (app_seq, seq)",
        f"""CREATE TABLE deployment_tokens (
            seq {seq},
            deployment_seq BIGINT NOT NULL REFERENCES deployments(seq) ON DELETE CASCADE,
            id TEXT NOT NULL UNIQUE,
            token_hash TEXT NOT NULL UNIQUE,
            description TEXT NOT NULL,
            created_at {real} NOT NULL,
            revoked_at {real},
            request_id TEXT,
            UNIQUE (deployment_seq, request_id)
        )""",
        "CREATE INDEX deployment_tokens_by_deployment ON deployment_tokens (deployment_seq, seq)",
    ]


SQLITE_SCHEMA = schema("INTEGER PRIMARY KEY", "REAL", "INTEGER")
POSTGRES_SCHEMA = schema("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "DOUBLE PRECISION", "BOOLEAN")
