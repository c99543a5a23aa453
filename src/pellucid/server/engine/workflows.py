"""Workflows: graphs of models the server runs (engine/workflow_runs.py), and their immutable
versions, each pinning the model version of every node.

Everything a workflow names is checked before anything is stored, and each error names the
node at fault: node ids, node_inputs, cycles, the models (a missing one is created only when its
model_type_id is a type the server runs itself, with the version id the node names if any, so an
exported workflow can be created in another app; a trainable type is never created here, and its
versions are pinned only if training made them), params, and whether each node can read what the
nodes feeding it make. Deleting a pinned model version (or its model) records why on the
versions that pin it (deleting its app, on those of other apps); they are then deprecated and refuse to run (`Workflows.runnable`).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pellucid.server.engine.access import Principal
from pellucid.server.engine.apps import Apps
from pellucid.server.engine.errors import AlreadyExists, EngineError, FailedPrecondition, InvalidArgument, NotFound
from pellucid.server.engine.ids import new_id, validate_id
from pellucid.server.engine.local_models import DATA_KINDS, LocalModelType, check_params
from pellucid.server.engine.models import Models, VersionSpec
from pellucid.server.engine.paging import PageRequest, next_token, to_query
from pellucid.server.engine.predict import INPUT_FIELDS
from pellucid.server.engine.spaces import WORKFLOW_EMBEDDER_PREFIX, space_name
from pellucid.server.engine.validation import MAX_DESCRIPTION_LENGTH, check_metadata, check_text
from pellucid.server.records import (
    AppRecord,
    ModelRecord,
    ModelVersionRecord,
    TrainingState,
    WorkflowNodeRecord,
    WorkflowRecord,
    WorkflowVersionRecord,
)
from pellucid.server.storage import Conflict, MetadataStore

MAX_NODES = 64
MAX_WORKFLOWS_PER_CALL = 32


@dataclass(frozen=True)
class NodeSpec:
    """A node as a caller describes it; empty model user/app: the workflow's app."""

    id: str
    model_id: str
    model_user_id: str = ""
    model_app_id: str = ""
    model_version_id: str = ""  # empty: the model's latest version, pinned at creation
    model_type_id: str = ""  # creates the model if it does not exist and the server runs this type
    params: dict[str, Any] = field(default_factory=dict)
    node_inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkflowSpec:
    id: str = ""  # empty: generated
    description: str = ""
    metadata: dict[str, Any] | None = None
    nodes: tuple[NodeSpec, ...] = ()
    version_id: str = ""
    version_description: str = ""
    version_metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class _ModelToCreate:
    user_id: str
    app_id: str
    model_id: str
    model_type: LocalModelType
    version_id: str
    params: dict[str, Any]


def _node_error(exc: EngineError, node_id: str, field_name: str) -> InvalidArgument | NotFound:
    """The same error, saying which node it is about."""
    cls = NotFound if isinstance(exc, NotFound) else InvalidArgument
    return cls(f"node {node_id!r}: {exc.message}", reason=exc.reason, field=exc.field or field_name)


def _node_params(model_type: LocalModelType, params: dict[str, Any], node_id: str, where: str) -> dict[str, Any]:
    """The node's params checked against its type's declaration (errors name the node)."""
    try:
        return check_params(model_type.params, params, "param")
    except InvalidArgument as exc:
        raise InvalidArgument(
            f"node {node_id!r}: {exc.message}",
            reason=exc.reason,
            field=f"{where}.model_version.output_info.params{exc.field.removeprefix('param')}",
        ) from None


def declared_kinds(model: ModelRecord, local: LocalModelType | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What a node's model reads and makes, as local_models.DATA_KINDS (empty: not declared)."""
    if local is not None:
        return tuple(local.reads), tuple(local.makes)
    return tuple(model.input_fields), tuple(k for k in model.output_fields if k in DATA_KINDS)


def can_feed(makes: Sequence[str], reads: Sequence[str]) -> bool:
    """Whether a node that makes `makes` can feed one that reads `reads` (undeclared: yes).
    Cropped regions (regions and images, as image-crop makes) feed an image reader once per region;
    regions without images (a detector's) do not: it would see the whole input, not the boxes."""
    if not makes or not reads:
        return True
    return bool(set(makes) & set(reads))


def per_region(makes: Sequence[str], reads: Sequence[str]) -> bool:
    """Whether a node fed what `makes` describes runs once per cropped region (see can_feed)."""
    return {"regions", "image"} <= set(makes) and "regions" not in reads and (not reads or "image" in reads)


def topological_order(nodes: Sequence[WorkflowNodeRecord] | Sequence[NodeSpec]) -> list[str]:
    """Node ids, each after the nodes feeding it (ties in the order given); ValueError names a cycle."""
    inputs = {n.id: list(dict.fromkeys(n.node_inputs)) for n in nodes}
    order: list[str] = []
    done: set[str] = set()
    remaining = [n.id for n in nodes]
    while remaining:
        ready = [n for n in remaining if all(p in done for p in inputs[n])]
        if not ready:
            raise ValueError(_cycle(inputs, remaining))
        for node_id in ready:
            order.append(node_id)
            done.add(node_id)
        remaining = [n for n in remaining if n not in done]
    return order


def _cycle(inputs: dict[str, list[str]], remaining: list[str]) -> str:
    """A cycle among `remaining` (each of which waits on another), as "a -> b -> a"."""
    left = set(remaining)
    path: list[str] = []
    node = remaining[0]
    while node not in path:
        path.append(node)
        node = next(p for p in inputs[node] if p in left)
    cycle = [*path[path.index(node) :], node]
    return " -> ".join(reversed(cycle))


class Workflows:
    def __init__(
        self, store: MetadataStore, apps: Apps, models: Models, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._apps = apps
        self._models = models
        self._clock = clock

    # creating

    def create(
        self, principal: Principal, user_id: str, app_id: str, specs: Sequence[WorkflowSpec]
    ) -> builtins.list[tuple[WorkflowRecord, WorkflowVersionRecord]]:
        """Check every workflow (and every node of each), then create the models they need, then
        the workflows: a request that fails stores nothing."""
        app = self._apps.get(principal, user_id, app_id)
        if not 1 <= len(specs) <= MAX_WORKFLOWS_PER_CALL:
            raise InvalidArgument(f"send 1-{MAX_WORKFLOWS_PER_CALL} workflows per call", field="workflows")
        planned = []
        seen: dict[str, int] = {}
        creating: dict[str, _ModelToCreate] = {}  # models to create, shared by the request's nodes
        for i, spec in enumerate(specs):
            where = f"workflows[{i}]"
            workflow_id = spec.id or new_id()
            validate_id(workflow_id, f"{where}.id")
            if workflow_id in seen:
                raise InvalidArgument(
                    f"workflow {workflow_id!r} is given twice ({where} and workflows[{seen[workflow_id]}])",
                    field=f"{where}.id",
                )
            seen[workflow_id] = i
            if self._store.get_workflow(app.user_id, app.id, workflow_id) is not None:
                raise AlreadyExists(
                    f"workflow {workflow_id!r} already exists in app {app.id!r}: pick another id, or add a "
                    "version to it",
                    reason="WORKFLOW_EXISTS",
                    field=f"{where}.id",
                )
            check_text(spec.description, f"{where}.description", MAX_DESCRIPTION_LENGTH)
            metadata = check_metadata(spec.metadata or {}, f"{where}.metadata")
            version, to_create = self._plan_version(principal, app, workflow_id, spec, where, creating)
            now = self._clock()
            workflow = WorkflowRecord(app.user_id, app.id, workflow_id, now, now, spec.description, metadata)
            planned.append((workflow, version, to_create))
        created = []
        made: set[str] = set()  # models the request's workflows share are created once
        for workflow, version, to_create in planned:
            self._create_models(principal, [c for c in to_create if c.model_id not in made])
            made.update(c.model_id for c in to_create)
            try:
                self._store.insert_workflow(workflow, version)
            except Conflict:
                raise AlreadyExists(
                    f"workflow {workflow.id!r} already exists in app {app.id!r}", reason="WORKFLOW_EXISTS"
                ) from None
            created.append((workflow, version))
            self._reembed(app, workflow.id)
        return created

    def create_version(
        self, principal: Principal, user_id: str, app_id: str, workflow_id: str, spec: WorkflowSpec
    ) -> WorkflowVersionRecord:
        """A new immutable version of an existing workflow (the nodes checked as on create)."""
        workflow, _ = self.get(principal, user_id, app_id, workflow_id)
        app = self._apps.get(principal, workflow.user_id, workflow.app_id)
        version, to_create = self._plan_version(principal, app, workflow.id, spec, "version", {})
        self._create_models(principal, to_create)
        try:
            self._store.insert_workflow_version(version)
        except Conflict:
            raise AlreadyExists(
                f"version {version.id!r} of workflow {workflow_id!r} already exists", field="version.id"
            ) from None
        self._reembed(app, workflow.id)
        return version

    def _reembed(self, app: AppRecord, workflow_id: str) -> None:
        """The app's base workflow is this workflow (and no model of that id): its inputs are
        embedded again by the new version."""
        if app.base_workflow == workflow_id and self._store.get_model(app.user_id, app.id, workflow_id) is None:
            self._apps.reindex(app)

    def _plan_version(
        self,
        principal: Principal,
        app: AppRecord,
        workflow_id: str,
        spec: WorkflowSpec,
        where: str,
        creating: dict[str, _ModelToCreate],
    ) -> tuple[WorkflowVersionRecord, builtins.list[_ModelToCreate]]:
        version_id = spec.version_id or new_id()
        validate_id(version_id, f"{where}.version.id")
        check_text(spec.version_description, f"{where}.version.description", MAX_DESCRIPTION_LENGTH)
        version_metadata = check_metadata(spec.version_metadata or {}, f"{where}.version.metadata")
        nodes = spec.nodes
        if not 1 <= len(nodes) <= MAX_NODES:
            raise InvalidArgument(
                f"a workflow has 1-{MAX_NODES} nodes, {where} has {len(nodes)}", field=f"{where}.nodes"
            )
        positions: dict[str, int] = {}
        for i, node in enumerate(nodes):
            try:
                validate_id(node.id, f"{where}.nodes[{i}].id")
            except InvalidArgument as exc:
                raise InvalidArgument(
                    f"nodes[{i}] (node {node.id!r}): {exc.message}", reason=exc.reason, field=exc.field
                ) from None
            if node.id in positions:
                raise InvalidArgument(
                    f"node {node.id!r} is defined twice (nodes[{positions[node.id]}] and nodes[{i}]): "
                    "give each node its own id",
                    reason="DUPLICATE_NODE",
                    field=f"{where}.nodes[{i}].id",
                )
            positions[node.id] = i
        for i, node in enumerate(nodes):
            named: dict[str, int] = {}
            for j, parent in enumerate(node.node_inputs):
                if parent in named:  # a node is fed once; repeats would only bloat the stored version
                    raise InvalidArgument(
                        f"node {node.id!r}: node_inputs[{j}] names {parent!r} again (node_inputs[{named[parent]}]): "
                        "name each input node once",
                        reason="DUPLICATE_NODE_INPUT",
                        field=f"{where}.nodes[{i}].node_inputs[{j}].node_id",
                    )
                named[parent] = j
                if parent not in positions:
                    raise InvalidArgument(
                        f"node {node.id!r}: node_inputs[{j}] names {parent!r}, which is not a node of this "
                        f"workflow (its nodes: {', '.join(positions)})",
                        reason="UNKNOWN_NODE_INPUT",
                        field=f"{where}.nodes[{i}].node_inputs[{j}].node_id",
                    )
        try:
            topological_order(nodes)
        except ValueError as exc:
            cycle = str(exc)
            raise InvalidArgument(
                f"node {cycle.split(' -> ')[0]!r} is part of a cycle ({cycle}): a workflow is a graph without "
                "cycles, remove one of these node_inputs",
                reason="WORKFLOW_CYCLE",
                field=f"{where}.nodes",
            ) from None
        records: list[WorkflowNodeRecord] = []
        kinds: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {}
        to_create: list[_ModelToCreate] = []
        for i, node in enumerate(nodes):
            record, reads, makes, creation = self._resolve_node(
                principal, app, node, f"{where}.nodes[{i}].model", creating
            )
            records.append(record)
            kinds[node.id] = (reads, makes, record.model_id)
            if creation is not None and creation not in to_create:
                to_create.append(creation)
        by_id = {n.id: n for n in nodes}
        for node_id in topological_order(nodes):
            node, i = by_id[node_id], positions[node_id]
            reads, own_makes, model_id = kinds[node.id]
            for j, parent in enumerate(dict.fromkeys(node.node_inputs)):
                _, makes, parent_model = kinds[parent]
                if per_region(makes, reads):
                    # it runs once per cropped region, so what it makes comes back as regions
                    kinds[node.id] = (reads, (*own_makes, "regions"), model_id)
                if not can_feed(makes, reads):
                    crop = (
                        " (put an image-crop node between them to run it once per region)"
                        if "regions" in makes and "image" in reads
                        else ""
                    )
                    raise InvalidArgument(
                        f"node {node.id!r} (model {model_id!r}) reads {', '.join(reads)}, but its input node "
                        f"{parent!r} (model {parent_model!r}) makes {', '.join(makes)}: feed it from a node "
                        f"that makes {' or '.join(reads)}{crop}, or take the workflow's input (no node_inputs)",
                        reason="NODE_INPUT_KIND",
                        field=f"{where}.nodes[{i}].node_inputs[{j}]",
                    )
        version = WorkflowVersionRecord(
            user_id=app.user_id,
            app_id=app.id,
            workflow_id=workflow_id,
            id=version_id,
            created_at=self._clock(),
            nodes=tuple(records),
            description=spec.version_description,
            metadata=version_metadata,
        )
        return version, to_create

    def _resolve_node(
        self, principal: Principal, app: AppRecord, node: NodeSpec, where: str, creating: dict[str, _ModelToCreate]
    ) -> tuple[WorkflowNodeRecord, tuple[str, ...], tuple[str, ...], _ModelToCreate | None]:
        """The node's record (its model version pinned), what it reads and makes, and the model
        to create for it (if it does not exist and can be)."""
        model_user = node.model_user_id or app.user_id
        model_app = node.model_app_id or app.id
        try:
            validate_id(node.model_id, f"{where}.id")
            if node.model_version_id:
                validate_id(node.model_version_id, f"{where}.model_version.id")
            params = check_metadata(node.params, f"{where}.model_version.output_info.params")
        except InvalidArgument as exc:
            raise _node_error(exc, node.id, where) from None
        local = self._models.local.get(node.model_type_id) if node.model_type_id else None
        try:
            model, version = self._models.get(principal, model_user, model_app, node.model_id, node.model_version_id)
        except NotFound as exc:
            if exc.reason != "MODEL_NOT_FOUND":  # the app, or the version asked for
                raise _node_error(exc, node.id, where) from None
            if local is None or (model_user, model_app) != (app.user_id, app.id):
                known = ", ".join(t.type_id for t in self._models.local.types()) or "none on this server"
                raise NotFound(
                    f"node {node.id!r}: model {node.model_id!r} not found in app {model_app!r}, and it cannot be "
                    f"created: create it first, or give a model_type_id the server runs itself ({known}) to "
                    "create it in this app",
                    reason="MODEL_NOT_FOUND",
                    field=f"{where}.id",
                ) from None
            if local.trainable:
                raise FailedPrecondition(
                    f"node {node.id!r}: model {node.model_id!r} does not exist, and a {local.type_id} gets its "
                    f"versions from training: create it (App.create_model with model_type_id={local.type_id!r}), "
                    "train it, then name it here",
                    reason="MODEL_NOT_TRAINED",
                    field=f"{where}.id",
                ) from None
            checked = _node_params(local, params, node.id, where)
            # an exported workflow names its versions: created elsewhere, the model gets the same ones
            creation = creating.get(node.model_id) or _ModelToCreate(
                model_user, model_app, node.model_id, local, node.model_version_id or new_id(), checked
            )
            if (creation.model_type.type_id, creation.params) != (local.type_id, checked) or (
                node.model_version_id not in ("", creation.version_id)
            ):
                raise InvalidArgument(
                    f"node {node.id!r}: model {node.model_id!r} is to be created twice, with different types, "
                    "params or versions: give each its own model id",
                    reason="CONFLICTING_MODELS",
                    field=f"{where}.id",
                ) from None
            creating[node.model_id] = creation
            version_id = creation.version_id
            record = WorkflowNodeRecord(
                node.id, model_user, model_app, node.model_id, version_id, local.type_id, checked, node.node_inputs
            )
            return record, tuple(local.reads), tuple(local.makes), creation
        if version is None:
            raise FailedPrecondition(
                f"node {node.id!r}: model {node.model_id!r} has no version to pin: create one first",
                field=f"{where}.model_version.id",
            )
        if node.model_type_id and node.model_type_id != model.model_type_id:
            raise InvalidArgument(
                f"node {node.id!r}: model {model.id!r} exists with model_type_id {model.model_type_id!r}, not "
                f"{node.model_type_id!r}: fix the model_type_id or use another model id",
                reason="MODEL_TYPE_MISMATCH",
                field=f"{where}.model_type_id",
            )
        model_local = self._models.local.get(model.model_type_id)
        if model_local is not None and model_local.trainable:
            if params:  # they would be ignored: a trained version predicts with what it was trained with
                raise InvalidArgument(
                    f"node {node.id!r}: model {model.id!r} is trained by the server, and its params "
                    f"({', '.join(sorted(params))}) are training params: set them with Model.update_params before "
                    "Model.train, and give the node none",
                    reason="TRAINED_MODEL_PARAMS",
                    field=f"{where}.model_version.output_info.params",
                )
            self._check_trainable(model_local, model, version, node.id, f"{where}.model_version.id")
        elif model_local is not None:
            params = _node_params(model_local, params, node.id, where)
        reads, makes = declared_kinds(model, model_local)
        record = WorkflowNodeRecord(
            node.id, model.user_id, model.app_id, model.id, version.id, model.model_type_id, params, node.node_inputs
        )
        return record, reads, makes, None

    def _check_trainable(
        self, model_type: LocalModelType, model: ModelRecord, version: ModelVersionRecord, node_id: str, field: str
    ) -> None:
        """A trainable model's version is pinned only if training made it and did not fail: one that
        is training will predict once trained, the others never can."""
        job = self._store.get_training_job(model.user_id, model.app_id, model.id, version.id)
        if job is None or job.state in (TrainingState.FAILED, TrainingState.NO_DATA):
            raise FailedPrecondition(
                f"node {node_id!r}: {model_type.check_version(model, version)}. Pin a version that training made "
                "(model_version_id), or train the model and then create the workflow",
                reason="MODEL_NOT_TRAINED",
                field=field,
            )

    def _create_models(self, principal: Principal, creations: Sequence[_ModelToCreate]) -> None:
        done: set[str] = set()
        for c in creations:
            if c.model_id in done:
                continue
            done.add(c.model_id)
            self._models.create(
                principal,
                c.user_id,
                c.app_id,
                c.model_id,
                model_type_id=c.model_type.type_id,
                description=c.model_type.description,
                input_fields=tuple(k for k in c.model_type.reads if k in INPUT_FIELDS),
                output_fields=tuple(c.model_type.makes),
                version=VersionSpec(id=c.version_id, params=c.params),
            )

    # reading

    def get(
        self, principal: Principal, user_id: str, app_id: str, workflow_id: str, version_id: str = ""
    ) -> tuple[WorkflowRecord, WorkflowVersionRecord]:
        app = self._apps.get(principal, user_id, app_id)
        validate_id(workflow_id, "workflow_id")
        workflow = self._store.get_workflow(app.user_id, app.id, workflow_id)
        if workflow is None:
            raise NotFound(
                f"workflow {workflow_id!r} not found in app {app.id!r}",
                reason="WORKFLOW_NOT_FOUND",
                field="workflow_id",
            )
        if version_id:
            validate_id(version_id, "version_id")
        version = self._store.get_workflow_version(app.user_id, app.id, workflow_id, version_id)
        if version is None:
            raise NotFound(f"version {version_id!r} of workflow {workflow_id!r} not found", field="version_id")
        return workflow, version

    def runnable(
        self, principal: Principal, user_id: str, app_id: str, workflow_id: str, version_id: str = ""
    ) -> WorkflowVersionRecord:
        """The version to run; FAILED_PRECONDITION if it is deprecated, saying which node lost its model."""
        _, version = self.get(principal, user_id, app_id, workflow_id, version_id)
        if version.deleted_pins:
            why = "; ".join(f"node {node!r}: {reason}" for node, reason in version.deleted_pins)
            raise FailedPrecondition(
                f"version {version.id!r} of workflow {workflow_id!r} is deprecated ({why}): create a new version "
                "of the workflow that pins an existing model version",
                reason="WORKFLOW_VERSION_DEPRECATED",
                field="version_id",
            )
        return version

    def list(
        self, principal: Principal, user_id: str, app_id: str, page: PageRequest, text: str = ""
    ) -> tuple[builtins.list[tuple[WorkflowRecord, WorkflowVersionRecord | None]], str]:
        app = self._apps.get(principal, user_id, app_id)
        check_text(text, "query", 256)
        scope = f"workflows:{app.user_id}:{app.id}:{text}"
        result = self._store.list_workflows(app.user_id, app.id, text, to_query(page, scope))
        items = [(w, self._store.get_workflow_version(app.user_id, app.id, w.id)) for w in result.items]
        return items, next_token(result, scope)

    def list_versions(
        self, principal: Principal, user_id: str, app_id: str, workflow_id: str, page: PageRequest
    ) -> tuple[builtins.list[WorkflowVersionRecord], str]:
        workflow, _ = self.get(principal, user_id, app_id, workflow_id)
        scope = f"workflow-versions:{workflow.user_id}:{workflow.app_id}:{workflow.id}"
        try:
            result = self._store.list_workflow_versions(
                workflow.user_id, workflow.app_id, workflow.id, to_query(page, scope)
            )
        except LookupError:
            raise NotFound(f"workflow {workflow_id!r} not found", field="workflow_id") from None
        return result.items, next_token(result, scope)

    def delete(self, principal: Principal, user_id: str, app_id: str, workflow_id: str) -> None:
        workflow, _ = self.get(principal, user_id, app_id, workflow_id)
        if not self._store.delete_workflow(workflow.user_id, workflow.app_id, workflow.id):
            raise NotFound(f"workflow {workflow_id!r} not found", field="workflow_id")
        if self._apps.vectors is not None:  # the embeddings it made, if it was the app's base workflow
            self._apps.vectors.drop_space(
                space_name(workflow.user_id, workflow.app_id, WORKFLOW_EMBEDDER_PREFIX + workflow.id)
            )

    # deprecation

    def model_deleted(self, model: ModelRecord, version_id: str) -> None:
        """Deprecate the workflow versions pinning this model version (every version: "")."""
        if version_id:
            reason = f"version {version_id!r} of model {model.id!r} (app {model.app_id!r}) was deleted"
        else:
            reason = f"model {model.id!r} (app {model.app_id!r}) was deleted"
        self._store.deprecate_workflow_pins(model.user_id, model.app_id, model.id, version_id, reason)

    def app_deleted(self, app: AppRecord) -> None:
        """Deprecate the workflow versions (of other apps, or other users) pinning any model of the app."""
        self._store.deprecate_workflow_pins(app.user_id, app.id, "", "", f"its model's app {app.id!r} was deleted")


__all__ = ["NodeSpec", "WorkflowSpec", "Workflows", "can_feed", "declared_kinds", "per_region", "topological_order"]
