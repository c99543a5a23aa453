"""The owner's side of deployments (gRPC): create, enable or disable, delete, and mint the
deployment tokens that callers use. Callers then post rows over HTTP, with any HTTP client or
with `pellucid.deployment.Deployment` (`ManagedDeployment.client()` builds one)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pellucid.api import v1
from pellucid.client.base import BaseClient
from pellucid.client.features import feature_spec_protos
from pellucid.errors import UserError

if TYPE_CHECKING:
    from pellucid.deployment import Deployment

SpecsGiven = Iterable[v1.FeatureSpec | Mapping[str, Any]]


def feature_specs_request(
    feature_specs: Mapping[str, SpecsGiven] | SpecsGiven | None,
) -> dict[str, v1.FeatureSpecs]:
    """CreateDeploymentRequest fields of `feature_specs`: {"input": [...], "output": [...]}
    (either may be left out: the model's declared ones), or a list (the input specs)."""
    if feature_specs is None:
        return {}
    if isinstance(feature_specs, Mapping):
        unknown = set(feature_specs) - {"input", "output"}
        if unknown:
            raise UserError(f"feature_specs keys {sorted(unknown)}: use 'input' and 'output'")
        given = {f"{k}_specs": feature_specs[k] for k in ("input", "output") if k in feature_specs}
    else:
        given = {"input_specs": feature_specs}
    return {field: v1.FeatureSpecs(specs=feature_spec_protos(specs)) for field, specs in given.items()}


class ManagedDeployment(BaseClient):
    """A deployment as its owner sees it: `info` (the proto), its `url`, and what the owner may do."""

    def __init__(self, deployment_id: str, info: v1.Deployment | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.id = deployment_id
        self.info = info or v1.Deployment(id=deployment_id)

    def __repr__(self) -> str:
        target = (
            f"workflow_id={self.info.workflow_id!r}" if self.info.workflow_id else f"model_id={self.info.model_id!r}"
        )
        return (
            f"ManagedDeployment(id={self.id!r}, {target}, version_id={self.info.version_id!r}, enabled={self.enabled})"
        )

    def load_info(self) -> v1.Deployment:
        self.info = self._call(
            v1.DeploymentServiceStub, "GetDeployment", v1.GetDeploymentRequest(deployment_id=self.id)
        )
        return self.info

    @property
    def url(self) -> str:
        """Where to post rows (empty when the server has no HTTP port)."""
        return self.info.url

    @property
    def enabled(self) -> bool:
        return self.info.enabled

    def enable(self) -> None:
        self._set_enabled(True)

    def disable(self) -> None:
        """Refuse calls (HTTP 403) until enabled again; its tokens stay valid."""
        self._set_enabled(False)

    def _set_enabled(self, enabled: bool) -> None:
        self.info = self._call(
            v1.DeploymentServiceStub,
            "SetDeploymentEnabled",
            v1.SetDeploymentEnabledRequest(deployment_id=self.id, enabled=enabled),
        )

    def create_token(self, description: str = "") -> tuple[v1.DeploymentToken, str]:
        """A token that can call this deployment only: (its record, its secret). The secret is
        shown once; the server keeps its hash."""
        response = self._call(
            v1.DeploymentServiceStub,
            "CreateDeploymentToken",
            v1.CreateDeploymentTokenRequest(deployment_id=self.id, description=description),
        )
        return response.token, response.secret

    def list_tokens(self, include_revoked: bool = False) -> list[v1.DeploymentToken]:
        """Its tokens (not their secrets), oldest first; revoked ones too with `include_revoked`."""
        tokens: list[v1.DeploymentToken] = []
        page_token = ""
        while True:
            response = self._call(
                v1.DeploymentServiceStub,
                "ListDeploymentTokens",
                v1.ListDeploymentTokensRequest(
                    deployment_id=self.id, include_revoked=include_revoked, page_size=100, page_token=page_token
                ),
            )
            tokens += response.tokens
            page_token = response.next_page_token
            if not page_token:
                return tokens

    def revoke_token(self, token_id: str) -> v1.DeploymentToken:
        return self._call(
            v1.DeploymentServiceStub,
            "RevokeDeploymentToken",
            v1.RevokeDeploymentTokenRequest(deployment_id=self.id, token_id=token_id),
        )

    def delete(self) -> None:
        self._call(v1.DeploymentServiceStub, "DeleteDeployment", v1.DeleteDeploymentRequest(deployment_id=self.id))

    def client(self, token: str, **kwargs: Any) -> Deployment:
        """The HTTP client of this deployment (pellucid.deployment.Deployment), calling with `token`
        (a deployment token, or a PAT of the owner)."""
        from pellucid.deployment import Deployment

        if not self.url:
            raise UserError(f"deployment {self.id!r} has no URL: start the server with --http-port")
        return Deployment(url=self.url, token=token, **kwargs)


__all__ = ["ManagedDeployment", "feature_specs_request"]
