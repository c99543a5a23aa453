"""Model: versions, predictions and evaluations. Predictions run on runners (see pellucid.client.runner),
or on the server for built-in and trained models; training is in pellucid.client.model_training,
evaluation in pellucid.client.evaluation."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.struct_pb2 import Struct

from pellucid.api import v1
from pellucid.client import _protos
from pellucid.client.base import BaseClient
from pellucid.client.evaluation import EvaluationMixin
from pellucid.client.lister import Lister
from pellucid.client.model_training import ModelTraining
from pellucid.client.urls import split_url
from pellucid.errors import UserError, error_class

MAX_PREDICT_INPUTS = 128
INPUT_TYPES = ("image", "text", "video", "audio")
_VERSION_FIELDS = {
    "id",
    "description",
    "runner_labels",
    "params",
    "concepts",
    "output_config",
    "item_timeout_seconds",
    "metadata",
}


def output_config_proto(config: dict[str, Any] | None) -> v1.OutputConfig | None:
    """{"min_value": 0.5, "max_concepts": 3, "select_concepts": ["cat", Concept(id="dog")]} as a message."""
    if not config:
        return None
    unknown = set(config) - {"min_value", "max_concepts", "select_concepts"}
    if unknown:
        raise UserError(f"output_config keys {sorted(unknown)}: use min_value, max_concepts, select_concepts")
    selected = []
    for c in config.get("select_concepts") or []:
        if isinstance(c, v1.Concept):
            selected.append(c)
        elif isinstance(c, dict):
            selected.append(v1.Concept(id=c.get("id") or c.get("name", ""), name=c.get("name", "")))
        else:
            selected.append(v1.Concept(id=str(c)))
    return v1.OutputConfig(
        min_value=float(config.get("min_value", 0.0)),
        max_concepts=int(config.get("max_concepts", 0)),
        select_concepts=selected,
    )


def version_proto(**kwargs: Any) -> v1.ModelVersion:
    unknown = set(kwargs) - _VERSION_FIELDS
    if unknown:
        raise UserError(f"unknown model version fields {sorted(unknown)}: use {sorted(_VERSION_FIELDS)}")
    labels = kwargs.get("runner_labels") or []
    if isinstance(labels, str):
        raise UserError("runner_labels must be a list of labels, not one string")
    info = v1.OutputInfo(
        concepts=[
            c if isinstance(c, v1.Concept) else v1.Concept(id=str(c), name=str(c)) for c in kwargs.get("concepts") or []
        ]
    )
    if kwargs.get("params"):
        info.params.update(kwargs["params"])
    config = output_config_proto(kwargs.get("output_config"))
    if config is not None:
        info.output_config.CopyFrom(config)
    version = v1.ModelVersion(
        id=kwargs.get("id", ""),
        description=kwargs.get("description", ""),
        output_info=info,
        runner_labels=list(labels),
        item_timeout_seconds=int(kwargs.get("item_timeout_seconds", 0)),
    )
    if kwargs.get("metadata"):
        version.metadata.update(kwargs["metadata"])
    return version


class Model(EvaluationMixin, Lister, BaseClient, ModelTraining):
    """A model, by `url` (`<base>/<user>/<app>/models/<id>[/versions/<vid>]`) or by `model_id`
    with `app_id` (and `user_id`). `model_version={"id": "..."}` pins a version; the default is
    the latest. Constructing one makes no call."""

    def __init__(
        self,
        url: str = "",
        model_id: str = "",
        model_version: dict[str, str] | None = None,
        base_url: str = "",
        pat: str = "",
        token: str = "",
        root_certificates_path: str | None = None,
        *,
        app_id: str = "",
        user_id: str = "",
        **kwargs: Any,
    ) -> None:
        version_id = (model_version or {}).get("id", "")
        if url and model_id:
            raise UserError("give either url or model_id, not both")
        if url:
            parsed = split_url(url, "models")
            user_id, app_id, model_id = parsed.user_id, parsed.app_id, parsed.resource_id
            version_id = version_id or parsed.version_id
            base_url = base_url or parsed.base
        if not model_id or not app_id:
            raise UserError(
                "Model needs model_id and app_id, or a url like <base>/<user_id>/<app_id>/models/<model_id>"
            )
        self.model_info: v1.Model | None = kwargs.pop("_model_info", None)
        BaseClient.__init__(self, user_id, base_url, pat, token, root_certificates_path, **kwargs)
        Lister.__init__(self)
        self.id, self.app_id, self.version_id = model_id, app_id, version_id

    @classmethod
    def _from_proto(cls, proto: v1.Model, **kwargs: Any) -> Model:
        version = {"id": proto.model_version.id} if proto.HasField("model_version") else None
        return cls(
            model_id=proto.id,
            app_id=proto.app_id,
            user_id=proto.user_id,
            model_version=version,
            _model_info=proto,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"Model(user_id={self._user_id!r}, app_id={self.app_id!r}, model_id={self.id!r}, version={self.version_id!r})"

    def _ids(self, **extra: Any) -> dict[str, Any]:
        return {"user_id": self._user_id, "app_id": self.app_id, "model_id": self.id, **extra}

    def load_info(self) -> v1.Model:
        """Fetch the model and its version (raises NotFound if either is missing)."""
        self.model_info = self._call(
            v1.ModelServiceStub, "GetModel", v1.GetModelRequest(**self._ids(version_id=self.version_id))
        )
        return self.model_info

    # versions

    def create_version(self, **kwargs: Any) -> Model:
        """A new version (kwargs: id, description, runner_labels, params, concepts, output_config,
        item_timeout_seconds, metadata); returns a Model pinned to it."""
        version = self._call(
            v1.ModelServiceStub,
            "CreateModelVersion",
            v1.CreateModelVersionRequest(**self._ids(), version=version_proto(**kwargs)),
        )
        return Model(
            model_id=self.id,
            app_id=self.app_id,
            user_id=self._user_id,
            model_version={"id": version.id},
            **self._child_kwargs(),
        )

    def list_versions(self, page_no: int | None = None, per_page: int | None = None) -> Iterator[Model]:
        """One Model per version, oldest first."""
        endpoint = functools.partial(self._call, v1.ModelServiceStub, "ListModelVersions")
        for version in self.list_pages_generator(endpoint, v1.ListModelVersionsRequest, self._ids(), page_no, per_page):
            yield Model(
                model_id=self.id,
                app_id=self.app_id,
                user_id=self._user_id,
                model_version={"id": version.id},
                **self._child_kwargs(),
            )

    def delete_version(self, version_id: str) -> None:
        self._call(
            v1.ModelServiceStub, "DeleteModelVersion", v1.DeleteModelVersionRequest(**self._ids(version_id=version_id))
        )

    # algorithms

    def publish_algorithm(
        self, name: str | None = None, version: str | None = None, public: bool = False
    ) -> v1.Algorithm:
        """Publish this model as the algorithm `<owner>/<name>` (name: default the model id), callable
        with `pellucid.client().algo(...)`: by anyone if `public`, else only by you. `version`, a
        semantic version such as "1.0.2", names this Model's version (its pinned one, else the latest)
        for good. Publishing again changes the visibility and adds versions."""
        request = v1.PublishAlgorithmRequest(
            **self._ids(),
            version_id=self.version_id,
            name=name or "",
            version=version or "",
            public=bool(public),
        )
        return self._call(v1.AlgorithmServiceStub, "PublishAlgorithm", request)

    # predictions

    def predict(
        self,
        inputs: Sequence[v1.Input],
        inference_params: dict[str, Any] | None = None,
        output_config: dict[str, Any] | None = None,
        *,
        method: str = "",
    ) -> v1.PostModelOutputsResponse:
        """Predict on up to 128 inputs; each output has its own status (one bad input does not fail the others)."""
        if isinstance(inputs, v1.Input):
            inputs = [inputs]
        if not inputs:
            raise UserError("predict needs at least one input")
        if len(inputs) > MAX_PREDICT_INPUTS:
            raise UserError(f"predict takes at most {MAX_PREDICT_INPUTS} inputs, got {len(inputs)}: split the list")
        request = v1.PostModelOutputsRequest(
            **self._ids(version_id=self.version_id), inputs=list(inputs), method=method
        )
        if inference_params:
            if not isinstance(inference_params, dict):
                raise UserError("inference_params must be a dict")
            request.inference_params.CopyFrom(_struct(inference_params))
        config = output_config_proto(output_config)
        if config is not None:
            request.output_config.CopyFrom(config)
        return self._call(v1.ModelServiceStub, "PostModelOutputs", request)

    def _predict_one(
        self, message: v1.Input, inference_params: dict[str, Any] | None, output_config: dict[str, Any] | None
    ) -> v1.PostModelOutputsResponse:
        response = self.predict([message], inference_params, output_config)
        status = (
            response.outputs[0].status if response.outputs else v1.Status(code=v1.Status.UNKNOWN, message="no output")
        )
        if status.code != v1.Status.OK:
            raise error_class(status.code)(
                f"the model failed on this input: {status.message}", method="PostModelOutputs"
            )
        return response

    def _input_type(self, input_type: str | None) -> str:
        if input_type is None:
            fields = list((self.model_info or self.load_info()).input_fields)
            if len(fields) != 1:
                raise UserError(f"model {self.id!r} takes {fields or 'unspecified'} inputs: pass input_type")
            input_type = fields[0]
        if input_type not in INPUT_TYPES:
            raise UserError(f"input_type {input_type!r}: use one of {', '.join(INPUT_TYPES)}")
        return input_type

    def predict_by_bytes(
        self,
        input_bytes: bytes,
        input_type: str | None = None,
        inference_params: dict[str, Any] | None = None,
        output_config: dict[str, Any] | None = None,
    ) -> v1.PostModelOutputsResponse:
        """Predict on bytes of an image, text (UTF-8), video or audio; raises if the model failed on it."""
        kind = self._input_type(input_type)
        if kind == "text":
            message = _protos.make_input(text=v1.Text(raw=_protos.utf8(input_bytes)))
        elif kind == "image":
            message = _protos.make_input(image=bytes(input_bytes))
        elif kind == "video":
            message = _protos.make_input(video=bytes(input_bytes))
        else:
            message = _protos.make_input(audio=bytes(input_bytes))
        return self._predict_one(message, inference_params, output_config)

    def predict_by_url(
        self,
        url: str,
        input_type: str | None = None,
        inference_params: dict[str, Any] | None = None,
        output_config: dict[str, Any] | None = None,
    ) -> v1.PostModelOutputsResponse:
        """Predict on a URL; the runner receives the URL (and fetches it if it needs the bytes)."""
        kind = self._input_type(input_type)
        message = _protos.make_input(**{kind: getattr(v1, kind.title())(url=url)})
        return self._predict_one(message, inference_params, output_config)

    def predict_by_filepath(
        self,
        filepath: str,
        input_type: str | None = None,
        inference_params: dict[str, Any] | None = None,
        output_config: dict[str, Any] | None = None,
    ) -> v1.PostModelOutputsResponse:
        try:
            data = Path(filepath).read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read {filepath!r}: {exc.strerror}") from None
        return self.predict_by_bytes(data, input_type, inference_params, output_config)


def _struct(values: dict[str, Any]) -> Struct:
    struct = Struct()
    struct.update(values)
    return struct
