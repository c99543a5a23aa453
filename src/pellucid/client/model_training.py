"""Model training from the SDK (issue #11): params, templates, training jobs, exports.

A model of a trainable type (`App.list_trainable_model_types()`, e.g. `embedding-classifier`,
`clusterer`) is trained by the server from a dataset of its app:

    model = app.create_model("sentiment", model_type_id="embedding-classifier")
    model.get_params(save_to="params.yaml")       # every param with its default
    model.update_params(dataset_id="reviews", concepts=["positive", "negative"])
    version_id = model.train()                    # returns at once; the server trains
    model.wait_for_training(version_id)           # or poll model.training_status(version_id)
    model.predict_by_bytes(b"Great kettle", "text")   # served by the server: no runner

The params are checked by the server against the type's declaration at every step
(`update_params` refuses an unknown key, naming the known ones, and a value out of range).
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct

from pellucid.api import v1
from pellucid.errors import DeadlineExceeded, UserError

STATES = {
    v1.TrainingStatus.QUEUED: "queued",
    v1.TrainingStatus.TRAINING: "training",
    v1.TrainingStatus.TRAINED: "trained",
    v1.TrainingStatus.FAILED: "failed",
    v1.TrainingStatus.NO_DATA: "no_data",
}
FINAL_STATES = ("trained", "failed", "no_data")


def param_info_dict(info: v1.TrainingParamInfo) -> dict[str, Any]:
    """A param's declaration as a dict: name, kind, default, help, minimum, maximum, choices, required."""
    return {
        "name": info.name,
        "kind": info.kind,
        "default": _typed(info.kind, MessageToDict(info.default) if info.HasField("default") else None),
        "help": info.help,
        "minimum": info.minimum if info.HasField("minimum") else None,
        "maximum": info.maximum if info.HasField("maximum") else None,
        "choices": list(info.choices),
        "required": info.required,
    }


def model_type_dict(model_type: v1.TrainableModelType) -> dict[str, Any]:
    return {
        "id": model_type.id,
        "description": model_type.description,
        "reads": list(model_type.reads),
        "makes": list(model_type.makes),
        "params": [param_info_dict(p) for p in model_type.params],
        "templates": [t.name for t in model_type.templates],
    }


def _typed(kind: str, value: Any) -> Any:
    """A Struct number as the declared kind (Struct holds every number as a float)."""
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _struct(values: dict[str, Any]) -> Struct:
    struct = Struct()
    struct.update(values)
    return struct


class ModelTraining:
    """The training methods of `Model` (a mixin: it needs Model's `_call`, `_ids`, `load_info`)."""

    id: str
    version_id: str
    model_info: v1.Model | None
    _connection: Any
    timeout: float

    training_params: dict[str, Any]
    _param_info: dict[str, dict[str, Any]]
    _training_template: str

    if TYPE_CHECKING:  # provided by Model, BaseClient and Lister

        def _call(self, stub: type, method: str, request: Any, timeout: float | None = None) -> Any: ...

        def _ids(self, **extra: Any) -> dict[str, Any]: ...

        def list_pages_generator(
            self,
            endpoint: Any,
            proto_message: Any,
            request_data: dict[str, Any],
            page_no: int | None = None,
            per_page: int | None = None,
        ) -> Iterator[Any]: ...

    # params

    def _training_params(self, template: str, given: dict[str, Any] | None = None) -> v1.TrainingParams:
        request = v1.GetTrainingParamsRequest(**self._ids(), template=template)
        if given:
            request.params.CopyFrom(_struct(given))
        answer: v1.TrainingParams = self._call(v1.TrainingServiceStub, "GetTrainingParams", request)
        self._param_info = {p.name: param_info_dict(p) for p in answer.param_info}
        return answer

    def _as_dict(self, params: Struct) -> dict[str, Any]:
        values = MessageToDict(params)
        return {k: _typed(self._param_info.get(k, {}).get("kind", ""), v) for k, v in values.items()}

    def list_training_templates(self) -> list[str]:
        """The names of the training templates of the model's type (named param values over its defaults)."""
        type_id = self._training_params("").model_type_id
        endpoint = functools.partial(self._call, v1.TrainingServiceStub, "ListTrainableModelTypes")
        types = self.list_pages_generator(endpoint, v1.ListTrainableModelTypesRequest, {})
        return next((list(t.name for t in mt.templates) for mt in types if mt.id == type_id), [])

    def get_params(self, template: str = "", save_to: str = "params.yaml") -> dict[str, Any]:
        """Every param of the model's type with its default (or the template's value); writes them
        to `save_to` as YAML, each under a comment with its help and range (empty: no file).
        These become the params `train()` uses until `update_params` changes them."""
        answer = self._training_params(template)
        self.training_params = self._as_dict(answer.params)
        self._training_template = template
        if save_to:
            self._write_yaml(save_to, self.training_params)
        return dict(self.training_params)

    def _write_yaml(self, path: str, params: dict[str, Any]) -> None:
        lines = [f"# training params of model {self.id!r} ({len(params)} params; edit, then Model.train(yaml_file))\n"]
        for name, value in params.items():
            info = self._param_info.get(name, {})
            bounds = ""
            if info.get("minimum") is not None or info.get("maximum") is not None:
                bounds = f", {info.get('minimum')} to {info.get('maximum')}"
            if info.get("choices"):
                bounds = f", one of {', '.join(info['choices'])}"
            required = ", required" if info.get("required") else ""
            lines.append(f"# {info.get('help', '')} ({info.get('kind', '')}{bounds}{required})\n")
            lines.append(yaml.safe_dump({name: value}, default_flow_style=False, sort_keys=False))
        try:
            Path(path).write_text("".join(lines), encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {path!r}: {exc.strerror}") from None

    def update_params(self, **kwargs: Any) -> dict[str, Any]:
        """Set params for the next `train()`; the server checks each key and value against the
        type's declaration (InvalidArgument naming the known keys, or the allowed values).
        Returns every param as it now stands."""
        if not hasattr(self, "training_params"):
            self.get_params(save_to="")
        merged = {**self.training_params, **kwargs}
        answer = self._training_params(getattr(self, "_training_template", ""), merged)
        self.training_params = self._as_dict(answer.params)
        return dict(self.training_params)

    def get_param_info(self, param: str) -> dict[str, Any]:
        """The declaration of one param: kind, default, help, minimum, maximum, choices, required."""
        if not getattr(self, "_param_info", None):
            self._training_params("")
        if param not in self._param_info:
            raise UserError(f"unknown param {param!r}: the known ones are {', '.join(sorted(self._param_info))}")
        return dict(self._param_info[param])

    # jobs

    def train(self, yaml_file: str = "", *, version_id: str = "", description: str = "") -> str:
        """Start training a new version from the params (those of `yaml_file` if given, else
        those of get_params/update_params, else the defaults) and return its id at once: the
        server trains it in a job that outlives this process (see training_status). This Model
        then points at the new version (predict answers once it is trained)."""
        template = ""
        if yaml_file:
            try:
                loaded = yaml.safe_load(Path(yaml_file).read_text(encoding="utf-8"))
            except OSError as exc:
                raise UserError(f"cannot read {yaml_file!r}: {exc.strerror}") from None
            except yaml.YAMLError as exc:
                raise UserError(f"{yaml_file!r} is not valid YAML: {exc}") from None
            if not isinstance(loaded, dict):
                raise UserError(f"{yaml_file!r} must hold a mapping of param names to values (get_params writes one)")
            params = loaded
        else:
            params = dict(getattr(self, "training_params", {}))
            template = getattr(self, "_training_template", "")
        request = v1.TrainRequest(**self._ids(), template=template, version_id=version_id, description=description)
        request.params.CopyFrom(_struct(params))
        status = self._call(v1.TrainingServiceStub, "Train", request)
        self.version_id = str(status.version_id)
        return self.version_id

    def training_status(self, version_id: str = "", training_logs: bool = False) -> dict[str, Any]:
        """The state of a version's training: state (queued, training, trained, failed, no_data),
        reason, progress (0..1), attempts, metrics, params. With `training_logs` the job's log
        is written to training_logs_<model>_<version>.txt (its path under "logs_file")."""
        status = self._call(
            v1.TrainingServiceStub,
            "GetTrainingStatus",
            v1.GetTrainingStatusRequest(
                **self._ids(version_id=version_id or self.version_id), include_logs=training_logs
            ),
        )
        result: dict[str, Any] = {
            "version_id": status.version_id,
            "model_type_id": status.model_type_id,
            "state": STATES.get(status.state, "unknown"),
            "reason": status.reason,
            "progress": round(status.progress, 4),
            "attempts": status.attempts,
            "metrics": MessageToDict(status.metrics),
            "params": self._as_dict(status.params)
            if getattr(self, "_param_info", None)
            else MessageToDict(status.params),
        }
        if training_logs:
            path = Path(f"training_logs_{self.id}_{status.version_id}.txt")
            path.write_text(status.logs, encoding="utf-8")
            result["logs_file"] = str(path)
        return result

    def wait_for_training(self, version_id: str, timeout: float = 600.0, poll_seconds: float = 0.25) -> dict[str, Any]:
        """training_status once it is trained, failed or no_data; DeadlineExceeded after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.training_status(version_id)
            if status["state"] in FINAL_STATES:
                return status
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(
                    f"version {version_id!r} of model {self.id!r} is still {status['state']} "
                    f"({status['progress']:.0%}) after {timeout:g} s"
                )
            time.sleep(poll_seconds)

    def list_cluster_assignments(
        self,
        version_id: str = "",
        input_ids: list[str] | None = None,
        page_no: int | None = None,
        per_page: int | None = None,
    ) -> Iterator[v1.ClusterAssignment]:
        """A trained clusterer's training inputs with their cluster (input_id, cluster, concept_id, distance)."""
        endpoint = functools.partial(self._call, v1.TrainingServiceStub, "ListClusterAssignments")
        request = {**self._ids(version_id=version_id or self.version_id), "input_ids": list(input_ids or [])}
        yield from self.list_pages_generator(endpoint, v1.ListClusterAssignmentsRequest, request, page_no, per_page)

    def export(self, export_dir: str = ".", version_id: str = "") -> str:
        """Write the trained version as `<export_dir>/model.tar` (config.yaml with everything to
        re-create it, weights.npz that pellucid.trained.load_weights reads, training.log) and
        return its path. A model served by runners cannot be: its code lives with the runner
        (FailedPrecondition says so)."""
        target = Path(export_dir)
        target.mkdir(parents=True, exist_ok=True)
        request = v1.GetModelExportRequest(**self._ids(version_id=version_id or self.version_id))
        handle, scratch = tempfile.mkstemp(prefix=".model.tar.", dir=target)
        try:
            with os.fdopen(handle, "wb") as out:
                for chunk in self._connection.read_stream(
                    v1.TrainingServiceStub, "GetModelExport", request, timeout=max(self.timeout, 300.0)
                ):
                    out.write(chunk.data)
            path = target / "model.tar"
            os.replace(scratch, path)
        except BaseException:
            Path(scratch).unlink(missing_ok=True)
            raise
        return str(path)


def list_trainable_model_types(client: Any) -> list[dict[str, Any]]:
    """App.list_trainable_model_types: each type with its params (declarations) and template names."""
    endpoint = functools.partial(client._call, v1.TrainingServiceStub, "ListTrainableModelTypes")
    return [model_type_dict(t) for t in client.list_pages_generator(endpoint, v1.ListTrainableModelTypesRequest, {})]
