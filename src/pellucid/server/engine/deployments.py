"""Deployments: a model or a workflow behind a URL of its own, called with rows of named features.

A deployment names its target (a model, at a version or its latest at each call; or a workflow,
at a version pinned at creation: its specs come from that version's graph), the feature specs
rows are checked against (the model's declared input and output specs, or those the workflow's
root and leaf nodes imply (engine/workflow_deployments.py), unless given at creation), and
whether it is enabled. Only its owner's PATs and its own deployment tokens may call it; a
deployment token can do nothing else (its Principal carries the deployment id, and the gRPC
interceptor accepts it for the Open Inference Protocol's calls only).

The HTTP endpoint ends in `submit`: rows are checked here before any model runs, then split into
predicts of at most MAX_BATCH inputs each, all queued at once, and answered in order. The Open
Inference Protocol names a deployment as its model: `resolve_for_inference` says which.
"""

from __future__ import annotations

import builtins
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from pellucid.server.engine.access import Principal
from pellucid.server.engine.apps import Apps
from pellucid.server.engine.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    EngineError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from pellucid.server.engine.features import (
    RowError,
    RowsInvalid,
    check_feature_specs,
    check_row,
    json_row_features,
)
from pellucid.server.engine.ids import new_id, validate_id
from pellucid.server.engine.inference import ModelRef
from pellucid.server.engine.local_models import LocalPredict
from pellucid.server.engine.models import Models, PendingPredict
from pellucid.server.engine.paging import PageRequest, next_token, to_query
from pellucid.server.engine.predict import Feature, OutputCode, PredictOutput, PredictRequest
from pellucid.server.engine.users import MAX_TOKEN_LENGTH, Users, hash_secret
from pellucid.server.engine.validation import MAX_BATCH, MAX_DESCRIPTION_LENGTH, check_text
from pellucid.server.engine.workflow_deployments import WorkflowRun, WorkflowTargets, output_feature, row_input
from pellucid.server.records import DeploymentRecord, DeploymentTokenRecord, FeatureSpec, PageQuery
from pellucid.server.storage import Conflict, MetadataStore

DEPLOYMENT_TOKEN_PREFIX = "pel_dep_"
MAX_ROWS = 10_000  # per call; predict_many sends batches far smaller
MAX_TOKENS_PER_DEPLOYMENT = 100
DEFAULT_DEADLINE_SECONDS = 60.0


class Deployments:
    def __init__(
        self, store: MetadataStore, apps: Apps, models: Models, users: Users, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._apps = apps
        self._models = models
        self._users = users
        self._clock = clock
        # where the server's HTTP endpoint is reached (set by the runtime when it listens), so a
        # deployment can report its URL; empty: no HTTP
        self.http_base_url = ""
        # what deployments of workflows need (set by the Engine once it has workflows): None, refused
        self.workflows: WorkflowTargets | None = None

    def close(self) -> None:
        if self.workflows is not None:
            self.workflows.close()

    # the resource

    def create(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        deployment_id: str,
        *,
        model_id: str = "",
        workflow_id: str = "",
        version_id: str = "",
        input_specs: Sequence[FeatureSpec] | None = None,
        output_specs: Sequence[FeatureSpec] | None = None,
        description: str = "",
        enabled: bool = True,
    ) -> DeploymentRecord:
        """Deploy a model (at `version_id`, else its latest at each call) or a workflow (at
        `version_id`, else its latest, pinned now). Specs not given are the model's declared ones
        (else those what it reads and makes implies, as for a one-node workflow), or those the
        workflow's nodes imply; a deployment needs input specs to check rows against."""
        _refuse_deployment_token(principal, "create deployments")
        app = self._apps.get(principal, user_id, app_id)
        validate_id(deployment_id, "deployment_id")
        check_text(description, "description", MAX_DESCRIPTION_LENGTH)
        if bool(model_id) == bool(workflow_id):
            given = "both" if model_id else "neither"
            raise InvalidArgument(
                f"a deployment serves one model or one workflow, and {given} was given: send model_id (with an "
                "optional version_id) or workflow_id (with an optional version_id)",
                reason="DEPLOYMENT_TARGET",
                field="model_id",
            )
        if workflow_id:
            version_id, inputs, outputs = self._workflow_specs(
                principal, app.user_id, app.id, workflow_id, version_id, input_specs, output_specs
            )
            what = f"workflow {workflow_id!r}"
        else:
            model, model_version = self._models.get(principal, app.user_id, app.id, model_id, version_id)
            implied_inputs, implied_outputs = self._workflow_targets().model_specs(principal, model, model_version)
            inputs = check_feature_specs(implied_inputs if input_specs is None else input_specs, "input_specs")
            outputs = check_feature_specs(implied_outputs if output_specs is None else output_specs, "output_specs")
            what = f"model {model_id!r}"
        if not inputs:
            raise InvalidArgument(
                f"{what} declares no input features: give the deployment's feature specs (input_specs)"
                + (", or create the model with input_specs" if model_id else ""),
                reason="NO_FEATURE_SPECS",
                field="input_specs",
            )
        now = self._clock()
        deployment = DeploymentRecord(
            user_id=app.user_id,
            app_id=app.id,
            id=deployment_id,
            created_at=now,
            modified_at=now,
            model_id=model_id,
            workflow_id=workflow_id,
            version_id=version_id,
            input_specs=inputs,
            output_specs=outputs,
            enabled=enabled,
            description=description,
        )
        try:
            self._store.insert_deployment(deployment)
        except Conflict:
            raise AlreadyExists(
                f"deployment {deployment_id!r} already exists (deployment ids are shared by all users): "
                "choose another id",
                field="deployment_id",
            ) from None
        except LookupError:
            raise NotFound(f"app {app.id!r} was deleted", field="app_id") from None
        return deployment

    def _workflow_specs(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        workflow_id: str,
        version_id: str,
        input_specs: Sequence[FeatureSpec] | None,
        output_specs: Sequence[FeatureSpec] | None,
    ) -> tuple[str, tuple[FeatureSpec, ...], tuple[FeatureSpec, ...]]:
        """The workflow version to pin (its latest if none is named) and the specs: given, or
        implied by its nodes."""
        targets = self._workflow_targets()
        version = targets.runnable(principal, user_id, app_id, workflow_id, version_id)
        inputs = targets.input_specs(principal, version) if input_specs is None else input_specs
        outputs = targets.output_specs(principal, version) if output_specs is None else output_specs
        checked_outputs = check_feature_specs(outputs, "output_specs")
        if output_specs is not None:
            targets.check_output_names(version, checked_outputs)
        return version.id, check_feature_specs(inputs, "input_specs"), checked_outputs

    def _workflow_targets(self) -> WorkflowTargets:
        if self.workflows is None:  # pragma: no cover - the Engine always sets it
            raise InvalidArgument("this server does not deploy workflows: deploy a model", field="workflow_id")
        return self.workflows

    def get(self, principal: Principal, deployment_id: str) -> DeploymentRecord:
        """The deployment, for its owner or one of its own tokens (which may read its specs)."""
        validate_id(deployment_id, "deployment_id")
        # before any lookup, so a token's holder cannot tell which other deployment ids exist
        if principal.deployment_id and principal.deployment_id != deployment_id:
            raise PermissionDenied(
                f"this deployment token is for deployment {principal.deployment_id!r}, not {deployment_id!r}: "
                "use that deployment's token (or a PAT of its owner)",
                reason="WRONG_DEPLOYMENT_TOKEN",
            )
        deployment = self._store.get_deployment(deployment_id)
        if deployment is None or (not principal.deployment_id and principal.user_id != deployment.user_id):
            raise NotFound(
                f"deployment {deployment_id!r} not found", reason="DEPLOYMENT_NOT_FOUND", field="deployment_id"
            )
        return deployment

    def _owned(self, principal: Principal, deployment_id: str, action: str) -> DeploymentRecord:
        _refuse_deployment_token(principal, action)
        return self.get(principal, deployment_id)

    def list(
        self, principal: Principal, user_id: str, app_id: str, page: PageRequest
    ) -> tuple[builtins.list[DeploymentRecord], str]:
        _refuse_deployment_token(principal, "list deployments")
        app = self._apps.get(principal, user_id, app_id)
        scope = f"deployments:{app.user_id}:{app.id}"
        result = self._store.list_deployments(app.user_id, app.id, to_query(page, scope))
        return result.items, next_token(result, scope)

    def delete(self, principal: Principal, deployment_id: str) -> None:
        """Delete it and its tokens (its URL answers 404 from now on)."""
        self._owned(principal, deployment_id, "delete deployments")
        self._store.delete_deployment(deployment_id)

    def set_enabled(self, principal: Principal, deployment_id: str, enabled: bool) -> DeploymentRecord:
        """Enable or disable it: a disabled deployment refuses calls (403) until enabled again."""
        deployment = self._owned(principal, deployment_id, "enable or disable deployments")
        changed = replace(deployment, enabled=enabled, modified_at=self._clock())
        if not self._store.update_deployment(changed):
            raise NotFound(f"deployment {deployment_id!r} was deleted", field="deployment_id")
        return changed

    # its tokens

    def create_token(
        self, principal: Principal, deployment_id: str, description: str = "", request_id: str = ""
    ) -> tuple[DeploymentTokenRecord, str]:
        """A token that may call this deployment only; its secret is returned once, its hash kept.
        A retry (the same `request_id`) gets the same token with a new secret, as PATs do."""
        self._owned(principal, deployment_id, "create deployment tokens")
        check_text(description, "description", MAX_DESCRIPTION_LENGTH)
        if request_id:
            validate_id(request_id, "request_id")
            made = self._store.get_deployment_token_by_request(deployment_id, request_id)
            if made is not None:
                if made.revoked_at is not None:
                    raise PermissionDenied(
                        f"request {request_id!r} made token {made.id}, which was revoked since", field="request_id"
                    )
                secret = _new_secret()
                self._store.replace_deployment_token_hash(made.id, hash_secret(secret))
                return replace(made, token_hash=hash_secret(secret)), secret
        active = self._store.list_deployment_tokens(deployment_id, False, PageQuery(limit=MAX_TOKENS_PER_DEPLOYMENT))
        if len(active.items) >= MAX_TOKENS_PER_DEPLOYMENT:
            raise ResourceExhausted(
                f"deployment {deployment_id!r} has {MAX_TOKENS_PER_DEPLOYMENT} active tokens: revoke some first",
                reason="TOO_MANY_TOKENS",
            )
        secret = _new_secret()
        token = DeploymentTokenRecord(
            deployment_id=deployment_id,
            id=new_id(),
            token_hash=hash_secret(secret),
            created_at=self._clock(),
            description=description,
            request_id=request_id or None,
        )
        try:
            self._store.insert_deployment_token(token)
        except LookupError:
            raise NotFound(f"deployment {deployment_id!r} was deleted", field="deployment_id") from None
        return token, secret

    def list_tokens(
        self, principal: Principal, deployment_id: str, include_revoked: bool, page: PageRequest
    ) -> tuple[builtins.list[DeploymentTokenRecord], str]:
        self._owned(principal, deployment_id, "list deployment tokens")
        scope = f"deployment-tokens:{deployment_id}:{include_revoked}"
        result = self._store.list_deployment_tokens(deployment_id, include_revoked, to_query(page, scope))
        return result.items, next_token(result, scope)

    def revoke_token(self, principal: Principal, deployment_id: str, token_id: str) -> DeploymentTokenRecord:
        self._owned(principal, deployment_id, "revoke deployment tokens")
        validate_id(token_id, "token_id")
        token = self._store.revoke_deployment_token(deployment_id, token_id, self._clock())
        if token is None:
            raise NotFound(f"token {token_id!r} of deployment {deployment_id!r} not found", field="token_id")
        return token

    # calls

    def authenticate(self, secret: str) -> Principal:
        """The caller of a deployment: a deployment token (a Principal that may call only its
        deployment), or a PAT or session token of a user (Users.authenticate)."""
        if not secret.startswith(DEPLOYMENT_TOKEN_PREFIX) or len(secret) > MAX_TOKEN_LENGTH:
            return self._users.authenticate(secret)
        hashed = hash_secret(secret)
        token = self._store.get_deployment_token_by_hash(hashed)
        if token is None:
            deleted = self._store.get_deleted_deployment_token(hashed)
            if deleted is not None:
                raise _deleted(deleted.deployment_id, deleted.with_app)
            raise Unauthenticated(
                "the deployment token is not valid: create one with Deployment.create_token", reason="BAD_TOKEN"
            )
        if token.revoked_at is not None:
            raise Unauthenticated(f"deployment token {token.id} was revoked: create a new one", reason="REVOKED_TOKEN")
        deployment = self._store.get_deployment(token.deployment_id)
        if deployment is None:  # pragma: no cover - deleting a deployment deletes its tokens
            raise _deleted(token.deployment_id, with_app=False)
        return Principal(user_id=deployment.user_id, is_admin=False, token_id=token.id, deployment_id=deployment.id)

    def callable(self, principal: Principal, deployment_id: str) -> DeploymentRecord:
        """The deployment, if this caller may call it now: NotFound, PermissionDenied (a token of
        another deployment, or the deployment is disabled)."""
        deployment = self.get(principal, deployment_id)
        if not deployment.enabled:
            raise PermissionDenied(
                f"deployment {deployment_id!r} is disabled: its owner can enable it again", reason="DEPLOYMENT_DISABLED"
            )
        return deployment

    def resolve_for_inference(self, principal: Principal, deployment_id: str) -> ModelRef:
        """What an Open Inference Protocol call naming this deployment reaches, with the
        deployment's feature specs: its model at its pinned version, or its workflow (whose rows
        OIP sends through `submit`), if this caller may call it now (as `callable`: NotFound,
        PermissionDenied)."""
        deployment = self.callable(principal, deployment_id)
        runnable = True
        if deployment.workflow_id:  # a deprecated pinned version is not ready (calls say why)
            owner = Principal(user_id=deployment.user_id, is_admin=False, token_id=principal.token_id)
            try:
                self._workflow_targets().runnable(
                    owner, deployment.user_id, deployment.app_id, deployment.workflow_id, deployment.version_id
                )
            except (FailedPrecondition, NotFound):
                runnable = False
        return ModelRef(
            deployment.user_id,
            deployment.app_id,
            deployment.model_id,
            deployment.version_id,
            input_specs=deployment.input_specs,
            output_specs=deployment.output_specs,
            deployment_id=deployment.id,
            workflow_id=deployment.workflow_id,
            runnable=runnable,
        )

    def submit_json(
        self,
        principal: Principal,
        deployment_id: str,
        rows: Sequence[Mapping[str, Any]],
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    ) -> PendingForward:
        """Rows of JSON values ({feature: value}, as the HTTP endpoint takes them), read by the
        deployment's specs, checked, and queued (see submit)."""
        deployment = self.callable(principal, deployment_id)
        checked = _checked_rows(rows, lambda row, i: json_row_features(deployment.input_specs, row, i))
        return self._queue(principal, deployment, checked, deadline_seconds)

    def submit(
        self,
        principal: Principal,
        deployment_id: str,
        rows: Sequence[Sequence[Feature]],
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    ) -> PendingForward:
        """Check rows of features against the deployment's specs (RowsInvalid names each bad row
        and feature; nothing runs then), and queue them for its model: the handle waits."""
        deployment = self.callable(principal, deployment_id)
        checked = _checked_rows(rows, lambda row, i: check_row(deployment.input_specs, row, i))
        return self._queue(principal, deployment, checked, deadline_seconds)

    def forward(
        self,
        principal: Principal,
        deployment_id: str,
        rows: Sequence[Sequence[Feature]],
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
    ) -> builtins.list[tuple[Feature, ...]]:
        """submit, and wait for the output rows."""
        return self.submit(principal, deployment_id, rows, deadline_seconds).result()

    def _queue(
        self,
        principal: Principal,
        deployment: DeploymentRecord,
        rows: Sequence[tuple[Feature, ...]],
        deadline_seconds: float,
    ) -> PendingForward:
        # the model runs as its owner: a deployment token's Principal only gets this far
        owner = Principal(user_id=deployment.user_id, is_admin=False, token_id=principal.token_id)
        if deployment.workflow_id:
            return self._queue_workflow(owner, deployment, rows, deadline_seconds)
        parts: builtins.list[PendingPredict | LocalPredict | WorkflowRun] = []
        try:
            for start in range(0, len(rows), MAX_BATCH):
                inputs = tuple(
                    row_input(f"row-{start + i}", row, deployment.input_specs)
                    for i, row in enumerate(rows[start : start + MAX_BATCH])
                )
                request = PredictRequest(
                    user_id=deployment.user_id,
                    app_id=deployment.app_id,
                    model_id=deployment.model_id,
                    version_id=deployment.version_id,
                    inputs=inputs,
                    deadline_seconds=deadline_seconds,
                )
                parts.append(self._models.submit(owner, request))
        except NotFound as exc:
            for part in parts:
                part.cancel("another part of the call failed")
            raise NotFound(
                f"deployment {deployment.id!r}: {exc.message} (its model was deleted: delete the deployment or "
                "re-create the model)",
                reason=exc.reason,
            ) from None
        except EngineError:
            for part in parts:
                part.cancel("another part of the call failed")
            raise
        return PendingForward(deployment, parts)

    def _queue_workflow(
        self,
        owner: Principal,
        deployment: DeploymentRecord,
        rows: Sequence[tuple[Feature, ...]],
        deadline_seconds: float,
    ) -> PendingForward:
        """A workflow's rows split the same way, into runs of the engine's workflow run, each on a
        thread of `WorkflowTargets` behind a handle with a predict's surface."""
        try:
            parts = self._workflow_targets().submit(
                owner,
                deployment.user_id,
                deployment.app_id,
                deployment.workflow_id,
                deployment.version_id,
                deployment.input_specs,
                deployment.output_specs,
                rows,
                deadline_seconds,
            )
        except NotFound as exc:
            raise NotFound(
                f"deployment {deployment.id!r}: {exc.message} (its workflow was deleted: delete the deployment or "
                "re-create the workflow)",
                reason=exc.reason,
            ) from None
        except FailedPrecondition as exc:
            raise FailedPrecondition(
                f"deployment {deployment.id!r}: {exc.message}, then deploy that version",
                reason=exc.reason,
                field=exc.field,
            ) from None
        return PendingForward(deployment, parts)


class PendingForward:
    """A queued deployment call: one predict per MAX_BATCH rows. `result()` blocks for all of
    them; an async adapter passes `add_done_callback` a callback, holding no thread meanwhile."""

    def __init__(
        self, deployment: DeploymentRecord, parts: Sequence[PendingPredict | LocalPredict | WorkflowRun]
    ) -> None:
        self.deployment = deployment
        self._parts = parts
        self._lock = threading.Lock()
        self._left = len(parts)
        self._callbacks: builtins.list[Callable[[], None]] = []
        for part in parts:
            part.add_done_callback(self._part_done)

    def _part_done(self) -> None:
        with self._lock:
            self._left -= 1
            callbacks = self._callbacks if self._left == 0 else []
        for callback in callbacks:
            callback()

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call `callback` (on some thread) once every part has finished; at once if they have."""
        with self._lock:
            if self._left:
                self._callbacks.append(callback)
                return
        callback()

    def cancel(self, reason: str = "the caller went away") -> None:
        for part in self._parts:
            part.cancel(reason)

    def result(self) -> builtins.list[tuple[Feature, ...]]:
        """The output rows in order; an error naming the first row the model (or workflow) failed on."""
        rows: builtins.list[tuple[Feature, ...]] = []
        for part in self._parts:
            result = part.result()
            for output in result.outputs:
                _raise_for(output, len(rows), self.deployment)
                rows.append(_output_row(output, self.deployment))
        return rows


def _output_row(output: PredictOutput, deployment: DeploymentRecord) -> tuple[Feature, ...]:
    """A model's output as a row: its features, or (a model answering with embeddings, concepts,
    text, regions or an image rather than features, as built-in and trained models do) the
    deployment's output features read out of them."""
    data = output.data
    if data.features or deployment.workflow_id:
        return data.features
    found = (output_feature(spec, "", data) for spec in deployment.output_specs)
    return tuple(feature for feature in found if feature is not None)


def _raise_for(output: PredictOutput, row: int, deployment: DeploymentRecord) -> None:
    """An output's failure as the error of the whole call, naming the row."""
    if output.code is OutputCode.OK:
        return
    target = f"workflow {deployment.workflow_id!r}" if deployment.workflow_id else f"model {deployment.model_id!r}"
    what = f"{target} failed on row {row}: {output.message or output.code.name}"
    if output.code is OutputCode.INVALID_ARGUMENT:
        refused = "the workflow refused it" if deployment.workflow_id else "the model refused it"
        raise RowsInvalid([RowError(row, "", f"{refused}: {output.message}")])
    if output.code is OutputCode.DEADLINE_EXCEEDED:
        raise DeadlineExceeded(what)
    if output.code is OutputCode.UNAVAILABLE:
        raise Unavailable(what)
    if output.code is OutputCode.RESOURCE_EXHAUSTED:
        raise ResourceExhausted(what)
    raise ModelFailed(what, reason="MODEL_FAILED", field=f"rows[{row}]")


class ModelFailed(Aborted):
    """The deployment's model (or a node of its workflow) raised on a row (the caller's row may be
    fine: its owner must look)."""


def _new_secret() -> str:
    return DEPLOYMENT_TOKEN_PREFIX + secrets.token_urlsafe(32)


def _checked_rows(rows: Sequence[Any], read: Callable[[Any, int], tuple[Feature, ...]]) -> list[tuple[Feature, ...]]:
    """Every row read and checked by `read(row, index)`; RowsInvalid naming every bad row and
    feature at once (nothing runs then)."""
    _check_row_count(len(rows))
    errors: list[RowError] = []
    checked = []
    for i, row in enumerate(rows):
        try:
            checked.append(read(row, i))
        except RowsInvalid as exc:
            errors.extend(exc.errors)
    if errors:
        raise RowsInvalid(errors)
    return checked


def _check_row_count(count: int) -> None:
    if not 1 <= count <= MAX_ROWS:
        raise InvalidArgument(f"a call takes 1-{MAX_ROWS} rows, got {count}: split larger lists", field="rows")


def _deleted(deployment_id: str, with_app: bool) -> NotFound:
    """A real token of a deleted deployment: NOT_FOUND (HTTP 404, as its owner's PAT gets), not
    UNAUTHENTICATED, so its client can tell "this deployment is gone" from "check the token" and
    stop retrying or refreshing credentials. Found by the secret's hash alone and naming only the
    token's own deployment, it tells its holder nothing of other ids (a guessed secret is "not valid")."""
    gone = f"deployment {deployment_id!r} was deleted" + (" with its app" if with_app else "")
    return NotFound(
        f"{gone}: this token called it and now calls nothing; ask its owner for a new deployment and token",
        reason="DEPLOYMENT_DELETED",
    )


def _refuse_deployment_token(principal: Principal, action: str) -> None:
    if principal.deployment_id:
        raise PermissionDenied(
            f"a deployment token cannot {action}: it only calls its deployment; use a PAT",
            reason="DEPLOYMENT_TOKEN",
        )


__all__ = [
    "DEPLOYMENT_TOKEN_PREFIX",
    "MAX_ROWS",
    "Deployments",
    "ModelFailed",
    "PendingForward",
    "RowError",
    "RowsInvalid",
]
