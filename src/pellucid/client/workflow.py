"""Workflow: models chained into a graph the server runs; versions, predictions, YAML export.

The YAML format is the reference platform's, and `export` writes what `App.create_workflow`
reads back into an equal workflow (node ids, models, pinned versions, params, inputs):

    workflow:
      id: detect-and-classify
      nodes:
        - id: detect
          model: {model_id: detector}
        - id: crop
          model: {model_id: crop, model_type_id: image-crop, output_info: {params: {margin: 0.1}}}
          node_inputs: [{node_id: detect}]
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

from pellucid.api import v1
from pellucid.client import _protos
from pellucid.client.base import BaseClient
from pellucid.client.lister import Lister
from pellucid.client.model import INPUT_TYPES, output_config_proto
from pellucid.client.urls import split_url
from pellucid.errors import UserError

MAX_WORKFLOW_INPUTS = 128  # the server's per-call limit: predict splits longer lists
MAX_REQUEST_BYTES = 32 * 1024 * 1024  # and requests larger than this (the server takes 64 MiB)
_NODE_KEYS = {"id", "model", "node_inputs"}
_MODEL_KEYS = {"model_id", "model_version_id", "user_id", "app_id", "model_type_id", "output_info"}


def _plain(value: Any) -> Any:
    """A Struct value as it reads best in YAML: whole numbers as ints (Struct holds doubles)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def load_config(path: str | Path) -> dict[str, Any]:
    """The `workflow:` mapping of a YAML file, with a clear error for anything malformed."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read workflow config {str(path)!r}: {exc.strerror}") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"workflow config {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("workflow"), dict):
        raise UserError(f"workflow config {str(path)!r} must hold a mapping `workflow: {{id, nodes}}`")
    return dict(config["workflow"])


def workflow_proto(config: dict[str, Any], generate_new_id: bool = False) -> v1.Workflow:
    """The Workflow message a `workflow:` mapping describes (checked for shape; the server
    checks the graph, the models and the params, naming the node at fault)."""
    unknown = set(config) - {"id", "nodes", "description"}
    if unknown:
        raise UserError(f"workflow config: unknown keys {sorted(unknown)}: use id, nodes (and description)")
    nodes = config.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise UserError("workflow config: `nodes` must be a non-empty list of {id, model, node_inputs}")
    workflow = v1.Workflow(
        id="" if generate_new_id else str(config.get("id") or ""), description=str(config.get("description") or "")
    )
    if not workflow.id and not generate_new_id:
        raise UserError("workflow config: give the workflow an `id`, or pass generate_new_id=True")
    for i, node in enumerate(nodes):
        workflow.nodes.append(_node_proto(node, i))
    return workflow


def _node_proto(node: Any, i: int) -> v1.WorkflowNode:
    where = f"workflow config: nodes[{i}]"
    if not isinstance(node, dict):
        raise UserError(f"{where} must be a mapping {{id, model, node_inputs}}")
    where += f" (node {node.get('id')!r})"
    unknown = set(node) - _NODE_KEYS
    if unknown:
        raise UserError(f"{where}: unknown keys {sorted(unknown)}: use {sorted(_NODE_KEYS)}")
    if not node.get("id"):
        raise UserError(f"{where}: give the node an `id`")
    model = node.get("model")
    if not isinstance(model, dict) or not model.get("model_id"):
        raise UserError(f"{where}: `model` must be a mapping with at least model_id")
    unknown = set(model) - _MODEL_KEYS
    if unknown:
        raise UserError(f"{where}: unknown model keys {sorted(unknown)}: use {sorted(_MODEL_KEYS)}")
    message = v1.Model(
        id=str(model["model_id"]),
        user_id=str(model.get("user_id") or ""),
        app_id=str(model.get("app_id") or ""),
        model_type_id=str(model.get("model_type_id") or ""),
        model_version=v1.ModelVersion(id=str(model.get("model_version_id") or "")),
    )
    info = model.get("output_info") or {}
    if not isinstance(info, dict) or set(info) - {"params"}:
        raise UserError(f"{where}: model.output_info takes only `params`")
    params = info.get("params") or {}
    if not isinstance(params, dict):
        raise UserError(f"{where}: model.output_info.params must be a mapping")
    message.model_version.output_info.params.update(params)
    inputs = node.get("node_inputs") or []
    if not isinstance(inputs, list):
        raise UserError(f"{where}: node_inputs must be a list of {{node_id: ...}}")
    parents = []
    for entry in inputs:
        if not isinstance(entry, dict) or set(entry) != {"node_id"}:
            raise UserError(f"{where}: each node_inputs entry is a mapping {{node_id: <id of another node>}}")
        parents.append(v1.NodeInput(node_id=str(entry["node_id"])))
    return v1.WorkflowNode(id=str(node["id"]), model=message, node_inputs=parents)


def config_of(workflow: v1.Workflow) -> dict[str, Any]:
    """The YAML mapping of a workflow's version: what `create_workflow` reads back."""
    nodes = []
    for node in workflow.version.nodes or workflow.nodes:
        model = node.model
        described: dict[str, Any] = {"model_id": model.id, "model_version_id": model.model_version.id}
        if model.user_id and model.user_id != workflow.user_id:
            described["user_id"] = model.user_id
        if model.app_id and (model.app_id != workflow.app_id or "user_id" in described):
            described["app_id"] = model.app_id
        if model.model_type_id:
            described["model_type_id"] = model.model_type_id
        params = _plain(json_format.MessageToDict(model.model_version.output_info.params))
        if params:
            described["output_info"] = {"params": params}
        entry: dict[str, Any] = {"id": node.id, "model": described}
        if node.node_inputs:
            entry["node_inputs"] = [{"node_id": p.node_id} for p in node.node_inputs]
        nodes.append(entry)
    config: dict[str, Any] = {"id": workflow.id}
    if workflow.description:
        config["description"] = workflow.description
    config["nodes"] = nodes
    return {"workflow": config}


def node_tree(workflow: v1.Workflow) -> str:
    """The nodes as an indented tree (each under the nodes feeding it), for display."""
    nodes = list(workflow.version.nodes or workflow.nodes)
    children: dict[str, list[v1.WorkflowNode]] = {}
    for node in nodes:
        for parent in node.node_inputs:
            children.setdefault(parent.node_id, []).append(node)
    lines = [f"workflow {workflow.id} (version {workflow.version.id})"]

    def add(node: v1.WorkflowNode, depth: int) -> None:
        lines.append(f"{'  ' * depth}- {node.id}: model {node.model.id} (version {node.model.model_version.id})")
        for child in children.get(node.id, []):
            add(child, depth + 1)

    for node in nodes:
        if not node.node_inputs:
            add(node, 1)
    return "\n".join(lines)


class Workflow(Lister, BaseClient):
    """A workflow, by `url` (`<base>/<user>/<app>/workflows/<id>[/versions/<vid>]`) or by
    `workflow_id` with `app_id` (and `user_id`). `workflow_version={"id": ...}` pins a version
    (default: the latest); `output_config` (min_value, max_concepts, select_concepts) applies to
    every node's concepts. Constructing one makes no call."""

    def __init__(
        self,
        url: str = "",
        workflow_id: str = "",
        workflow_version: dict[str, str] | None = None,
        output_config: dict[str, Any] | None = None,
        base_url: str = "",
        pat: str = "",
        token: str = "",
        root_certificates_path: str | None = None,
        *,
        app_id: str = "",
        user_id: str = "",
        **kwargs: Any,
    ) -> None:
        version_id = (workflow_version or {}).get("id", "")
        if url and workflow_id:
            raise UserError("give either url or workflow_id, not both")
        if url:
            parsed = split_url(url, "workflows")
            user_id, app_id, workflow_id = parsed.user_id, parsed.app_id, parsed.resource_id
            version_id = version_id or parsed.version_id
            base_url = base_url or parsed.base
        if not workflow_id or not app_id:
            raise UserError(
                "Workflow needs workflow_id and app_id, or a url like <base>/<user_id>/<app_id>/workflows/<workflow_id>"
            )
        self.workflow_info: v1.Workflow | None = kwargs.pop("_workflow_info", None)
        BaseClient.__init__(self, user_id, base_url, pat, token, root_certificates_path, **kwargs)
        Lister.__init__(self)
        self.id, self.app_id, self.version_id = workflow_id, app_id, version_id
        self.output_config = {"min_value": 0} if output_config is None else dict(output_config)
        output_config_proto(self.output_config)  # refuses unknown keys now, not at the first predict

    @classmethod
    def _from_proto(cls, proto: v1.Workflow, **kwargs: Any) -> Workflow:
        return cls(
            workflow_id=proto.id,
            app_id=proto.app_id,
            user_id=proto.user_id,
            workflow_version={"id": proto.version.id} if kwargs.pop("_pin", False) else None,
            _workflow_info=proto,
            **kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"Workflow(user_id={self._user_id!r}, app_id={self.app_id!r}, workflow_id={self.id!r}, "
            f"version={self.version_id!r})"
        )

    def _ids(self, **extra: Any) -> dict[str, Any]:
        return {"user_id": self._user_id, "app_id": self.app_id, "workflow_id": self.id, **extra}

    def load_info(self) -> v1.Workflow:
        """Fetch the workflow at its version (raises NotFound if either is missing)."""
        self.workflow_info = self._call(
            v1.WorkflowServiceStub, "GetWorkflow", v1.GetWorkflowRequest(**self._ids(version_id=self.version_id))
        )
        return self.workflow_info

    def list_versions(self, page_no: int | None = None, per_page: int | None = None) -> Iterator[Workflow]:
        """One Workflow per version, oldest first, each pinned to its version."""
        endpoint = functools.partial(self._call, v1.WorkflowServiceStub, "ListWorkflowVersions")
        for version in self.list_pages_generator(
            endpoint, v1.ListWorkflowVersionsRequest, self._ids(), page_no, per_page
        ):
            info = v1.Workflow(id=self.id, app_id=self.app_id, user_id=version.user_id, version=version)
            info.nodes.extend(version.nodes)
            yield Workflow(
                workflow_id=self.id,
                app_id=self.app_id,
                user_id=self._user_id,
                workflow_version={"id": version.id},
                output_config=self.output_config,
                _workflow_info=info,
                **self._child_kwargs(),
            )

    # predictions

    def predict(self, inputs: Sequence[v1.Input]) -> v1.PostWorkflowResultsResponse:
        """Run the workflow on the inputs: `results[i].outputs[j]` is node j's output for input i,
        each with its own status (`status.code`, `status.description`, `status.details`).
        Lists over the server's per-call limit are sent in several calls, results in order."""
        if isinstance(inputs, v1.Input):
            inputs = [inputs]
        inputs = list(inputs)
        if not inputs:
            raise UserError("predict needs at least one input")
        config = output_config_proto(self.output_config)
        merged: v1.PostWorkflowResultsResponse | None = None
        for batch in _batches(inputs):
            request = v1.PostWorkflowResultsRequest(**self._ids(version_id=self.version_id), inputs=batch)
            if config is not None:
                request.output_config.CopyFrom(config)
            response = self._call(v1.WorkflowServiceStub, "PostWorkflowResults", request)
            if merged is None:
                merged = response
            else:
                merged.results.extend(response.results)
        assert merged is not None
        return merged

    def predict_by_bytes(self, input_bytes: bytes, input_type: str = "image") -> v1.PostWorkflowResultsResponse:
        """Run the workflow on bytes of an image, text (UTF-8), video or audio."""
        kind = _input_type(input_type)
        if kind == "text":
            message = _protos.make_input(text=v1.Text(raw=_protos.utf8(input_bytes)))
        elif kind == "image":
            message = _protos.make_input(image=bytes(input_bytes))
        elif kind == "video":
            message = _protos.make_input(video=bytes(input_bytes))
        else:
            message = _protos.make_input(audio=bytes(input_bytes))
        return self.predict([message])

    def predict_by_filepath(self, filepath: str, input_type: str = "image") -> v1.PostWorkflowResultsResponse:
        try:
            data = Path(filepath).read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read {filepath!r}: {exc.strerror}") from None
        return self.predict_by_bytes(data, input_type)

    def predict_by_url(self, url: str, input_type: str = "image") -> v1.PostWorkflowResultsResponse:
        """Run the workflow on a URL (the models' runners fetch it if they need the bytes)."""
        kind = _input_type(input_type)
        return self.predict([_protos.make_input(**{kind: getattr(v1, kind.title())(url=url)})])

    # export

    def export(self, out_path: str) -> None:
        """Write the workflow's version as YAML that App.create_workflow turns back into an equal
        workflow: node ids, models, pinned model versions, params and node inputs."""
        info = self.load_info()
        text = yaml.safe_dump(config_of(info), sort_keys=False, allow_unicode=True)
        try:
            Path(out_path).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {out_path!r}: {exc.strerror}") from None


def _input_type(input_type: str) -> str:
    if input_type not in INPUT_TYPES:
        raise UserError(f"input_type {input_type!r}: use one of {', '.join(INPUT_TYPES)}")
    return input_type


def _batches(inputs: list[v1.Input]) -> Iterator[list[v1.Input]]:
    """The inputs in calls of at most MAX_WORKFLOW_INPUTS inputs and about MAX_REQUEST_BYTES."""
    batch: list[v1.Input] = []
    size = 0
    for message in inputs:
        length = message.ByteSize()
        if batch and (len(batch) == MAX_WORKFLOW_INPUTS or size + length > MAX_REQUEST_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(message)
        size += length
    if batch:
        yield batch
