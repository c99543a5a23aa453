"""App: one namespace of a user, holding concepts (and, later, datasets, inputs and models)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

from google.protobuf import field_mask_pb2
from tqdm.auto import tqdm

from pellucid.api import v1
from pellucid.client import _protos
from pellucid.client.base import BaseClient
from pellucid.client.dataset import Dataset
from pellucid.client.deployments import ManagedDeployment, SpecsGiven, feature_specs_request
from pellucid.client.features import feature_spec_protos
from pellucid.client.input import Inputs
from pellucid.client.lister import Lister
from pellucid.client.model import Model, version_proto
from pellucid.client.model_training import list_trainable_model_types
from pellucid.client.module import VERSION_FIELDS, Module
from pellucid.client.search import Search
from pellucid.client.urls import split_url
from pellucid.client.workflow import Workflow, load_config, node_tree, workflow_proto
from pellucid.errors import AlreadyExists, DeadlineExceeded, UserError

log = logging.getLogger("pellucid.client")

_APP_FIELDS = {"name", "description", "base_workflow", "metadata"}
METADATA_ACTIONS = {
    "merge": v1.METADATA_ACTION_MERGE,
    "overwrite": v1.METADATA_ACTION_OVERWRITE,
    "remove": v1.METADATA_ACTION_REMOVE,
}


def app_proto(user_id: str, app_id: str, **fields: Any) -> v1.App:
    unknown = set(fields) - _APP_FIELDS
    if unknown:
        raise UserError(f"unknown app fields {sorted(unknown)}: use {sorted(_APP_FIELDS)}")
    metadata = fields.pop("metadata", None)
    if metadata is not None and not isinstance(metadata, dict):
        raise UserError(f"metadata must be a dict, got {type(metadata).__name__}")
    app = v1.App(user_id=user_id, id=app_id, **fields)
    if metadata:
        app.metadata.update(metadata)
    return app


def patch_app_request(user_id: str, app_id: str, action: str, **kwargs: Any) -> v1.PatchAppRequest:
    """The PatchApp request of User.patch_app and App.patch (kwargs: the fields to change)."""
    if action not in METADATA_ACTIONS:
        raise UserError(f"action {action!r}: use one of {sorted(METADATA_ACTIONS)}")
    unknown = set(kwargs) - _APP_FIELDS
    if unknown or not kwargs:
        raise UserError(f"patch_app takes some of {sorted(_APP_FIELDS)}; got {sorted(kwargs) or 'nothing'}")
    return v1.PatchAppRequest(
        app=app_proto(user_id, app_id, **kwargs),
        update_mask=field_mask_pb2.FieldMask(paths=sorted(kwargs)),
        metadata_action=METADATA_ACTIONS[action],
    )


class App(Lister, BaseClient):
    """An app, addressed by `url` (`<base>/<user_id>/<app_id>`) or by `app_id` (+ `user_id`).

    Constructing one makes no call; `load_info()` fetches the app and `app_info` holds it.
    """

    def __init__(
        self,
        url: str = "",
        app_id: str = "",
        user_id: str = "",
        base_url: str = "",
        pat: str = "",
        token: str = "",
        root_certificates_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        if url and app_id:
            raise UserError("give either url or app_id, not both")
        if url:
            parsed = split_url(url)
            if user_id and user_id != parsed.user_id:
                raise UserError(f"user_id {user_id!r} disagrees with the url's {parsed.user_id!r}")
            user_id, app_id = parsed.user_id, parsed.app_id
            base_url = base_url or parsed.base
        if not app_id:
            raise UserError("App needs an app_id or a url like <base>/<user_id>/<app_id>")
        self.app_info: v1.App | None = kwargs.pop("_app_info", None)
        BaseClient.__init__(self, user_id, base_url, pat, token, root_certificates_path, **kwargs)
        Lister.__init__(self)
        self.id = app_id

    @classmethod
    def _from_proto(cls, proto: v1.App, **kwargs: Any) -> App:
        return cls(app_id=proto.id, user_id=proto.user_id, _app_info=proto, **kwargs)

    def __repr__(self) -> str:
        return f"App(user_id={self._user_id!r}, app_id={self.id!r})"

    def load_info(self) -> v1.App:
        """Fetch the app from the server (raises NotFound if it does not exist)."""
        self.app_info = self._call(v1.AppServiceStub, "GetApp", v1.GetAppRequest(user_id=self._user_id, app_id=self.id))
        self._user_id = self._user_id or self.app_info.user_id
        return self.app_info

    def patch(self, action: str = "merge", **kwargs: Any) -> App:
        """Change the app's name, description, base_workflow or metadata (as User.patch_app).

        Naming base_workflow re-embeds the app's inputs for it (also with the value it has:
        that retries inputs that failed); follow it with wait_until_indexed() to see the progress.
        """
        request = patch_app_request(self._user_id, self.id, action, **kwargs)
        self.app_info = self._call(v1.AppServiceStub, "PatchApp", request)
        return self

    # indexing: the server embeds inputs for the app's base workflow behind ingestion

    def index_status(self) -> v1.AppIndexStatus:
        """How many of the app's inputs are embedded (`ready`), wait (`pending`, `in_progress`)
        or `failed` (up to 10 of those in `failed_inputs`, each with its reason in status.message)."""
        return self._call(
            v1.AppServiceStub,
            "GetAppIndexStatus",
            v1.GetAppIndexStatusRequest(user_id=self._user_id, app_id=self.id),
        )

    def wait_until_indexed(
        self, timeout: float = 600, show_progress: bool = True, poll_seconds: float = 0.5
    ) -> v1.AppIndexStatus:
        """Wait until no input of the app waits to be embedded, so a search sees everything
        uploaded before the call; returns the final status. Inputs that failed do not make it
        wait: they are counted in `failed` (and logged, with reasons, as a warning).

        Raises DeadlineExceeded naming how many inputs still wait after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        status = self.index_status()
        bar = None
        total = done = 0  # inputs the bar counts, and those of them embedded (or failed) so far
        try:
            while status.pending + status.in_progress:
                waiting = status.pending + status.in_progress
                total = max(total, done + waiting)  # more may arrive meanwhile (an upload still running)
                if show_progress and bar is None:
                    bar = tqdm(total=total, desc=f"Indexing {self.id}", unit="input")
                if bar is not None:
                    bar.total = total
                    bar.update(total - waiting - done)
                done = total - waiting
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineExceeded(
                        f"app {self.id!r}: {waiting} inputs still wait to be embedded after {timeout:g} s "
                        f"({status.pending} pending, {status.in_progress} in progress, {status.ready} ready, "
                        f"{status.failed} failed): wait longer, or check that the server runs index workers"
                    )
                time.sleep(min(poll_seconds, remaining))
                status = self.index_status()
            if bar is not None:
                bar.update(total - done)
        finally:
            if bar is not None:
                bar.close()
        if status.failed:
            reasons = "; ".join(f"{i.id}: {i.status.message}" for i in status.failed_inputs)
            log.warning("app %r: %d inputs could not be embedded (%s)", self.id, status.failed, reasons)
        return status

    # datasets and inputs

    def inputs(self) -> Inputs:
        """The app's inputs and annotations."""
        return Inputs(user_id=self._user_id, app_id=self.id, **self._child_kwargs())

    def create_dataset(self, dataset_id: str, *, exist_ok: bool = False, **kwargs: Any) -> Dataset:
        """Create a dataset (kwargs: description, metadata); with `exist_ok`, an existing one is
        returned as it is instead of raising AlreadyExists."""
        unknown = set(kwargs) - {"description", "metadata"}
        if unknown:
            raise UserError(f"create_dataset takes description and metadata; not {sorted(unknown)}")
        dataset = v1.Dataset(id=dataset_id, description=kwargs.get("description", ""))
        if kwargs.get("metadata"):
            dataset.metadata.update(kwargs["metadata"])
        try:
            created = self._call(
                v1.DatasetServiceStub,
                "CreateDataset",
                v1.CreateDatasetRequest(user_id=self._user_id, app_id=self.id, dataset=dataset),
            )
        except AlreadyExists:
            if not exist_ok:
                raise
            return self.dataset(dataset_id)
        return Dataset._from_proto(created, **self._child_kwargs())

    def dataset(self, dataset_id: str, **kwargs: Any) -> Dataset:
        """The dataset `dataset_id`, checked to exist (raises NotFound otherwise)."""
        dataset = Dataset(
            dataset_id=dataset_id, app_id=self.id, user_id=self._user_id, **self._child_kwargs(), **kwargs
        )
        dataset.load_info()
        return dataset

    def list_datasets(self, page_no: int | None = None, per_page: int | None = None) -> Iterator[Dataset]:
        endpoint = functools.partial(self._call, v1.DatasetServiceStub, "ListDatasets")
        request = {"user_id": self._user_id, "app_id": self.id}
        for proto in self.list_pages_generator(endpoint, v1.ListDatasetsRequest, request, page_no, per_page):
            yield Dataset._from_proto(proto, **self._child_kwargs())

    def delete_dataset(self, dataset_id: str, delete_inputs: bool = False) -> None:
        """Delete a dataset (its inputs stay in the app unless `delete_inputs`, and then only
        those in no other dataset)."""
        self._call(
            v1.DatasetServiceStub,
            "DeleteDataset",
            v1.DeleteDatasetRequest(
                user_id=self._user_id, app_id=self.id, dataset_id=dataset_id, delete_inputs=delete_inputs
            ),
        )

    def search(self, **kwargs: Any) -> Search:
        """A Search over this app's inputs (kwargs: top_k, metric, algorithm, wait; see Search)."""
        own = {} if {"base_url", "pat", "token", "root_certificates_path"} & set(kwargs) else self._child_kwargs()
        return Search(**{"user_id": self._user_id, **own, **kwargs, "app_id": self.id})

    # models

    def create_model(
        self, model_id: str, runner_labels: list[str] | None = None, *, exist_ok: bool = False, **kwargs: Any
    ) -> Model:
        """Create a model with a first version served by runners carrying `runner_labels`.

        With `exist_ok`, an existing model is returned as it is (at its latest version)
        instead of raising AlreadyExists.

        kwargs: name, description, model_type_id, input_fields (e.g. ["image"]), output_fields,
        input_specs and output_specs (the named features it reads and writes, which deployments
        check rows against: v1.FeatureSpec or dicts such as {"name": "Size", "type": "numeric"}),
        and the version's fields: params (default inference params), concepts, output_config,
        item_timeout_seconds, version_id, version_description.
        """
        model_fields = {
            k: kwargs.pop(k)
            for k in (
                "name",
                "description",
                "model_type_id",
                "input_fields",
                "output_fields",
                "input_specs",
                "output_specs",
            )
            if k in kwargs
        }
        version_kwargs = {"runner_labels": runner_labels or []}
        if "version_id" in kwargs:
            version_kwargs["id"] = kwargs.pop("version_id")
        if "version_description" in kwargs:
            version_kwargs["description"] = kwargs.pop("version_description")
        version_kwargs.update(kwargs)
        model = v1.Model(
            id=model_id,
            name=model_fields.get("name", ""),
            description=model_fields.get("description", ""),
            model_type_id=model_fields.get("model_type_id", ""),
            input_fields=list(model_fields.get("input_fields", [])),
            output_fields=list(model_fields.get("output_fields", [])),
            input_specs=feature_spec_protos(model_fields.get("input_specs", [])),
            output_specs=feature_spec_protos(model_fields.get("output_specs", [])),
        )
        try:
            created = self._call(
                v1.ModelServiceStub,
                "CreateModel",
                v1.CreateModelRequest(
                    user_id=self._user_id, app_id=self.id, model=model, version=version_proto(**version_kwargs)
                ),
            )
        except AlreadyExists:
            if not exist_ok:
                raise
            return self.model(model_id)
        return Model._from_proto(created, **self._child_kwargs())

    def model(self, model_id: str, model_version: dict[str, str] | None = None, **kwargs: Any) -> Model:
        """The model `model_id` (at `model_version={"id": ...}`, else the latest), checked to exist."""
        model = Model(
            model_id=model_id,
            app_id=self.id,
            user_id=self._user_id,
            model_version=model_version,
            **self._child_kwargs(),
            **kwargs,
        )
        model.load_info()
        return model

    def list_models(
        self,
        filter_by: dict[str, Any] | None = None,
        only_in_app: bool = True,
        page_no: int | None = None,
        per_page: int | None = None,
    ) -> Iterator[Model]:
        """The app's models; `filter_by={"query": text}` keeps ids or names containing text."""
        filter_by = dict(filter_by or {})
        unknown = set(filter_by) - {"query", "name", "id"}
        if unknown:
            raise UserError(f"list_models cannot filter by {sorted(unknown)}: use query, name or id")
        if not only_in_app:
            raise UserError("only_in_app=False (models of other apps) is not supported: list each app's models")
        text = filter_by.get("query") or filter_by.get("name") or filter_by.get("id") or ""
        endpoint = functools.partial(self._call, v1.ModelServiceStub, "ListModels")
        request = {"user_id": self._user_id, "app_id": self.id, "query": text}
        for proto in self.list_pages_generator(endpoint, v1.ListModelsRequest, request, page_no, per_page):
            yield Model._from_proto(proto, **self._child_kwargs())

    def list_trainable_model_types(self) -> list[dict[str, Any]]:
        """The model types the server trains (id, description, reads, makes, params, templates):
        create one with create_model(model_id, model_type_id=...), then Model.train()."""
        return list_trainable_model_types(self)

    def delete_model(self, model_id: str) -> None:
        self._call(
            v1.ModelServiceStub,
            "DeleteModel",
            v1.DeleteModelRequest(user_id=self._user_id, app_id=self.id, model_id=model_id),
        )

    # deployments: a model or a workflow behind a URL and tokens of its own (pellucid.deployment calls it over HTTP)

    def create_deployment(
        self,
        deployment_id: str,
        model_id: str = "",
        version_id: str | None = None,
        feature_specs: Mapping[str, SpecsGiven] | SpecsGiven | None = None,
        *,
        workflow_id: str = "",
        description: str = "",
        enabled: bool = True,
        exist_ok: bool = False,
    ) -> ManagedDeployment:
        """Deploy a model of this app (at `version_id`, else its latest at each call), or with
        `workflow_id` (and no model_id) a workflow of this app (at `version_id`, else its latest,
        pinned now). With `exist_ok`, an existing deployment of that id (the caller's) is returned
        as it is.

        `feature_specs` overrides the model's declared features (or those the workflow's root and
        leaf nodes imply; a workflow's outputs are named `<node_id>` or `<node_id>.<feature>`):
        {"input": [...], "output": [...]} (each a list of dicts such as {"name": "Size", "type":
        "numeric"} or v1.FeatureSpec), or a list of input specs. Deployment ids are shared by all
        users of the server."""
        request = v1.CreateDeploymentRequest(
            user_id=self._user_id,
            app_id=self.id,
            deployment_id=deployment_id,
            model_id=model_id,
            workflow_id=workflow_id,
            version_id=version_id or "",
            description=description,
            disabled=not enabled,
        )
        for field, specs in feature_specs_request(feature_specs).items():
            getattr(request, field).CopyFrom(specs)
        try:
            info = self._call(v1.DeploymentServiceStub, "CreateDeployment", request)
        except AlreadyExists:
            if not exist_ok:
                raise
            return self.deployment(deployment_id)
        return ManagedDeployment(deployment_id, info, **self._child_kwargs())

    def deployment(self, deployment_id: str) -> ManagedDeployment:
        """The deployment `deployment_id` (raises NotFound unless it is the caller's)."""
        deployment = ManagedDeployment(deployment_id, **self._child_kwargs())
        deployment.load_info()
        return deployment

    def list_deployments(self, page_no: int | None = None, per_page: int | None = None) -> Iterator[ManagedDeployment]:
        endpoint = functools.partial(self._call, v1.DeploymentServiceStub, "ListDeployments")
        request = {"user_id": self._user_id, "app_id": self.id}
        for proto in self.list_pages_generator(endpoint, v1.ListDeploymentsRequest, request, page_no, per_page):
            yield ManagedDeployment(proto.id, proto, **self._child_kwargs())

    def delete_deployment(self, deployment_id: str) -> None:
        """Delete the deployment and its tokens."""
        ManagedDeployment(deployment_id, **self._child_kwargs()).delete()

    def enable_deployment(self, deployment_id: str) -> None:
        ManagedDeployment(deployment_id, **self._child_kwargs()).enable()

    def disable_deployment(self, deployment_id: str) -> None:
        ManagedDeployment(deployment_id, **self._child_kwargs()).disable()

    # modules: packages of code an app offers or installs (the server stores, never runs, them)

    def create_module(self, module_id: str, description: str = "", *, exist_ok: bool = False, **kwargs: Any) -> Module:
        """Create a module (kwargs: metadata, and a first version's git_url with git_ref and/or
        git_commit, or entry_point "package.module:attr", version_id, version_description). If
        that version is refused, the module is deleted again: nothing half-made is left. With
        `exist_ok`, an existing module is returned as it is (at its latest version)."""
        metadata = kwargs.pop("metadata", None)
        unknown = set(kwargs) - set(VERSION_FIELDS)
        if unknown:
            raise UserError(f"create_module takes metadata and {sorted(VERSION_FIELDS)}; not {sorted(unknown)}")
        if metadata is not None and not isinstance(metadata, dict):
            raise UserError(f"metadata must be a dict, got {type(metadata).__name__}")
        module = v1.Module(id=module_id, description=description)
        if metadata:
            module.metadata.update(metadata)
        try:
            created = self._call(
                v1.ModuleServiceStub,
                "CreateModule",
                v1.CreateModuleRequest(user_id=self._user_id, app_id=self.id, module=module),
            )
        except AlreadyExists:
            if not exist_ok:
                raise
            return self.module(module_id)
        result = Module._from_proto(created, **self._child_kwargs())
        if not kwargs:
            return result
        try:
            return result.create_version(**kwargs)
        except BaseException:
            self.delete_module(module_id)
            raise

    def module(self, module_id: str, module_version_id: str | None = None, **kwargs: Any) -> Module:
        """The module `module_id` (at `module_version_id`, else the latest), checked to exist."""
        module = Module(
            module_id=module_id,
            app_id=self.id,
            user_id=self._user_id,
            module_version={"id": module_version_id or ""},
            **self._child_kwargs(),
            **kwargs,
        )
        module.load_info()
        return module

    def list_modules(
        self,
        filter_by: dict[str, Any] | None = None,
        only_in_app: bool = True,
        page_no: int | None = None,
        per_page: int | None = None,
    ) -> Iterator[Module]:
        """The app's modules; `filter_by={"query": text}` (or "id") keeps ids containing text."""
        filter_by = dict(filter_by or {})
        unknown = set(filter_by) - {"query", "id"}
        if unknown:
            raise UserError(f"list_modules cannot filter by {sorted(unknown)}: use query or id")
        if not only_in_app:
            raise UserError("only_in_app=False (modules of other apps) is not supported: list each app's modules")
        endpoint = functools.partial(self._call, v1.ModuleServiceStub, "ListModules")
        text = filter_by.get("query") or filter_by.get("id") or ""
        request = {"user_id": self._user_id, "app_id": self.id, "query": text}
        for proto in self.list_pages_generator(endpoint, v1.ListModulesRequest, request, page_no, per_page):
            yield Module._from_proto(proto, **self._child_kwargs())

    def delete_module(self, module_id: str) -> None:
        """Delete a module with its versions and every app's installation of them."""
        self._call(
            v1.ModuleServiceStub,
            "DeleteModule",
            v1.DeleteModuleRequest(user_id=self._user_id, app_id=self.id, module_id=module_id),
        )

    def list_installed_module_versions(
        self, filter_by: dict[str, Any] | None = None, page_no: int | None = None, per_page: int | None = None
    ) -> Iterator[Module]:
        """The module versions this app installed, as Modules pinned to them (the module's own app;
        `installed_module_version_info` says when and under which id); `filter_by={"module_id": m}`."""
        filter_by = dict(filter_by or {})
        unknown = set(filter_by) - {"module_id"}
        if unknown:
            raise UserError(f"list_installed_module_versions cannot filter by {sorted(unknown)}: use module_id")
        endpoint = functools.partial(self._call, v1.ModuleServiceStub, "ListInstalledModuleVersions")
        request = {"user_id": self._user_id, "app_id": self.id, "module_id": filter_by.get("module_id", "")}
        listing = self.list_pages_generator(endpoint, v1.ListInstalledModuleVersionsRequest, request, page_no, per_page)
        for installed in listing:
            version = installed.module_version
            yield Module(
                module_id=version.module_id,
                app_id=version.app_id,
                user_id=version.user_id,
                module_version={"id": version.id},
                _installed_info=installed,
                **self._child_kwargs(),
            )

    # concepts

    def create_concepts(self, concept_ids: list[str], labels: list[str] | None = None) -> list[v1.Concept]:
        """Create concepts (names from `labels`, else the ids); splits lists longer than 128.

        Raises PartialFailure listing the items that failed; the others are created.
        """
        if isinstance(concept_ids, str):
            raise UserError("concept_ids must be a list of ids, not one string")
        if labels is not None and len(labels) != len(concept_ids):
            raise UserError(f"labels has {len(labels)} names for {len(concept_ids)} concept ids")
        names = labels or [""] * len(concept_ids)
        return _protos.concept_batches(
            self._call, "CreateConcepts", v1.CreateConceptsRequest, self._user_id, self.id, concept_ids, names
        )

    def list_concepts(self, page_no: int | None = None, per_page: int | None = None) -> Iterator[v1.Concept]:
        """Yield the app's concepts in creation order."""
        endpoint = functools.partial(self._call, v1.ConceptServiceStub, "ListConcepts")
        request = {"user_id": self._user_id, "app_id": self.id}
        yield from self.list_pages_generator(endpoint, v1.ListConceptsRequest, request, page_no, per_page)

    def get_concept(self, concept_id: str) -> v1.Concept:
        return self._call(
            v1.ConceptServiceStub,
            "GetConcept",
            v1.GetConceptRequest(user_id=self._user_id, app_id=self.id, concept_id=concept_id),
        )

    # workflows

    def create_workflow(self, config_filepath: str, generate_new_id: bool = False, display: bool = True) -> Workflow:
        """Create a workflow from a YAML config (the reference format: `workflow: {id, nodes: [{id,
        model: {model_id, model_version_id?, user_id?, app_id?, model_type_id?, output_info:
        {params}}, node_inputs: [{node_id}]}]}`). Models it names that do not exist are created
        when their model_type_id is a type the server runs itself; anything wrong (an unknown
        node input, a cycle, a missing model, a node fed what it cannot read) is refused before
        anything is stored, naming the node. `display` prints the node tree."""
        workflow = workflow_proto(load_config(config_filepath), generate_new_id)
        response = self._call(
            v1.WorkflowServiceStub,
            "PostWorkflows",
            v1.PostWorkflowsRequest(user_id=self._user_id, app_id=self.id, workflows=[workflow]),
        )
        created = response.workflows[0]
        if display:
            print(node_tree(created))
        return Workflow._from_proto(created, **self._child_kwargs())

    def workflow(self, workflow_id: str, **kwargs: Any) -> Workflow:
        """The workflow `workflow_id` (kwargs: workflow_version={"id": ...}, output_config), checked to exist."""
        workflow = Workflow(
            workflow_id=workflow_id, app_id=self.id, user_id=self._user_id, **self._child_kwargs(), **kwargs
        )
        workflow.load_info()
        return workflow

    def list_workflows(
        self,
        filter_by: dict[str, Any] | None = None,
        only_in_app: bool = True,
        page_no: int | None = None,
        per_page: int | None = None,
    ) -> Iterator[Workflow]:
        """The app's workflows; `filter_by={"query": text}` (or "id") keeps ids containing text."""
        filter_by = dict(filter_by or {})
        unknown = set(filter_by) - {"query", "id"}
        if unknown:
            raise UserError(f"list_workflows cannot filter by {sorted(unknown)}: use query or id")
        if not only_in_app:
            raise UserError("only_in_app=False (workflows of other apps) is not supported: list each app's workflows")
        text = filter_by.get("query") or filter_by.get("id") or ""
        endpoint = functools.partial(self._call, v1.WorkflowServiceStub, "ListWorkflows")
        request = {"user_id": self._user_id, "app_id": self.id, "query": text}
        for proto in self.list_pages_generator(endpoint, v1.ListWorkflowsRequest, request, page_no, per_page):
            yield Workflow._from_proto(proto, **self._child_kwargs())

    def delete_workflow(self, workflow_id: str) -> None:
        self._call(
            v1.WorkflowServiceStub,
            "DeleteWorkflow",
            v1.DeleteWorkflowRequest(user_id=self._user_id, app_id=self.id, workflow_id=workflow_id),
        )
