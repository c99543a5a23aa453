"""Deployments and their tokens: protos <-> records."""

from __future__ import annotations

from pellucid.api import v1
from pellucid.server.grpc.convert import to_timestamp
from pellucid.server.grpc.translate.models import feature_spec_message, feature_spec_record
from pellucid.server.records import DeploymentRecord, DeploymentTokenRecord, FeatureSpec


def deployment_message(d: DeploymentRecord, http_base_url: str = "") -> v1.Deployment:
    return v1.Deployment(
        id=d.id,
        user_id=d.user_id,
        app_id=d.app_id,
        model_id=d.model_id,
        workflow_id=d.workflow_id,
        version_id=d.version_id,
        input_specs=[feature_spec_message(s) for s in d.input_specs],
        output_specs=[feature_spec_message(s) for s in d.output_specs],
        enabled=d.enabled,
        description=d.description,
        created_at=to_timestamp(d.created_at),
        modified_at=to_timestamp(d.modified_at),
        url=f"{http_base_url}/v1/deployments/{d.id}/forward" if http_base_url else "",
    )


def given_specs(request: v1.CreateDeploymentRequest, field: str) -> tuple[FeatureSpec, ...] | None:
    """The specs a create request gives for `field` (input_specs or output_specs); None: the model's."""
    if not request.HasField(field):  # type: ignore[arg-type]
        return None
    return tuple(feature_spec_record(s) for s in getattr(request, field).specs)


def token_message(t: DeploymentTokenRecord) -> v1.DeploymentToken:
    return v1.DeploymentToken(
        id=t.id,
        deployment_id=t.deployment_id,
        description=t.description,
        created_at=to_timestamp(t.created_at),
        revoked_at=to_timestamp(t.revoked_at),
    )
