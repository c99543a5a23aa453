"""Models and their versions, and predictions (routed to runners, or run in-process for the
model types registered in `LocalModels`)."""

from __future__ import annotations

import builtins
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pellucid.server.engine.access import Principal
from pellucid.server.engine.apps import Apps
from pellucid.server.engine.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from pellucid.server.engine.ids import new_id, validate_id
from pellucid.server.engine.local_models import LocalModels, LocalPredict
from pellucid.server.engine.paging import PageRequest, next_token, to_query
from pellucid.server.engine.predict import (
    INPUT_FIELDS,
    PredictInput,
    PredictRequest,
    PredictResult,
    RunnerWork,
    WorkCodec,
    apply_output_config,
)
from pellucid.server.engine.routing import Router, Ticket
from pellucid.server.engine.spaces import MODEL_EMBEDDER_PREFIX, space_name
from pellucid.server.engine.validation import (
    MAX_BATCH,
    MAX_DESCRIPTION_LENGTH,
    MAX_NAME_LENGTH,
    check_metadata,
    check_text,
)
from pellucid.server.records import (
    ConceptValue,
    ModelRecord,
    ModelVersionRecord,
    OutputConfig,
)
from pellucid.server.storage import Conflict, MetadataStore

MAX_ITEM_TIMEOUT = 3600


@dataclass(frozen=True)
class VersionSpec:
    id: str = ""
    description: str = ""
    params: dict[str, Any] | None = None
    concepts: tuple[ConceptValue, ...] = ()
    output_config: OutputConfig = OutputConfig()  # noqa: RUF009 - frozen, so one shared default is safe
    runner_labels: tuple[str, ...] = ()
    item_timeout_seconds: int = 0
    metadata: dict[str, Any] | None = None


class Models:
    def __init__(
        self,
        store: MetadataStore,
        apps: Apps,
        router: Router,
        clock: Callable[[], float] = time.time,
        codec: WorkCodec | None = None,
        local: LocalModels | None = None,
    ) -> None:
        self._store = store
        self._apps = apps
        self._router = router
        self._clock = clock
        self._codec = codec
        # model types the server runs itself (operators, trained versions); others go to runners
        self.local = local if local is not None else LocalModels()
        # told (model, version id; "" for the whole model) after a delete: workflows deprecate their pins
        self.on_delete: Callable[[ModelRecord, str], None] | None = None

    def _version(self, user_id: str, app_id: str, model_id: str, spec: VersionSpec) -> ModelVersionRecord:
        version_id = spec.id or new_id()
        validate_id(version_id, "version.id")
        check_text(spec.description, "version.description", MAX_DESCRIPTION_LENGTH)
        for i, label in enumerate(spec.runner_labels):
            validate_id(label, f"version.runner_labels[{i}]")
        for i, concept in enumerate(spec.concepts):
            validate_id(concept.id, f"version.output_info.concepts[{i}].id")
        timeout = spec.item_timeout_seconds or 60
        if not 1 <= timeout <= MAX_ITEM_TIMEOUT:
            raise InvalidArgument(
                f"item_timeout_seconds must be 1-{MAX_ITEM_TIMEOUT}", field="version.item_timeout_seconds"
            )
        _check_output_config(spec.output_config, "version.output_info.output_config")
        return ModelVersionRecord(
            user_id=user_id,
            app_id=app_id,
            model_id=model_id,
            id=version_id,
            created_at=self._clock(),
            description=spec.description,
            params=check_metadata(spec.params or {}, "version.output_info.params"),
            concepts=spec.concepts,
            output_config=spec.output_config,
            runner_labels=tuple(dict.fromkeys(spec.runner_labels)),
            item_timeout_seconds=timeout,
            metadata=check_metadata(spec.metadata or {}, "version.metadata"),
        )

    def _checked_params(self, model_type_id: str, version: ModelVersionRecord) -> ModelVersionRecord:
        """A version of a local model type with its params checked against the type's declaration."""
        local_type = self.local.get(model_type_id)
        if local_type is None:
            return version
        params = local_type.check_version_params(version.params, "version.output_info.params")
        return dataclasses.replace(version, params=params)

    def create(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        model_id: str,
        *,
        name: str = "",
        description: str = "",
        model_type_id: str = "",
        input_fields: tuple[str, ...] = (),
        output_fields: tuple[str, ...] = (),
        version: VersionSpec = VersionSpec(),
    ) -> tuple[ModelRecord, ModelVersionRecord]:
        app = self._apps.get(principal, user_id, app_id)
        validate_id(model_id, "model_id")
        check_text(name, "name", MAX_NAME_LENGTH)
        check_text(description, "description", MAX_DESCRIPTION_LENGTH)
        check_text(model_type_id, "model_type_id", MAX_NAME_LENGTH)
        unknown = [f for f in input_fields if f not in INPUT_FIELDS]
        if unknown:
            raise InvalidArgument(
                f"input_fields {unknown}: use some of {', '.join(INPUT_FIELDS)}", field="input_fields"
            )
        now = self._clock()
        model = ModelRecord(
            user_id=app.user_id,
            app_id=app.id,
            id=model_id,
            created_at=now,
            modified_at=now,
            name=name or model_id,
            description=description,
            model_type_id=model_type_id,
            input_fields=tuple(input_fields),
            output_fields=tuple(output_fields),
        )
        first = self._checked_params(model_type_id, self._version(app.user_id, app.id, model_id, version))
        try:
            self._store.insert_model(model, first)
        except Conflict:
            raise AlreadyExists(f"model {model_id!r} already exists in app {app.id!r}", field="model_id") from None
        if app.base_workflow == model.id:  # a model of that id was the app's embedder, and was deleted
            self._apps.reindex(app)  # its inputs wait for the new model's vectors (not READY without any)
        return model, first

    def get(
        self, principal: Principal, user_id: str, app_id: str, model_id: str, version_id: str = ""
    ) -> tuple[ModelRecord, ModelVersionRecord | None]:
        app = self._apps.get(principal, user_id, app_id)
        validate_id(model_id, "model_id")
        model = self._store.get_model(app.user_id, app.id, model_id)
        if model is None:
            raise NotFound(
                f"model {model_id!r} not found in app {app.id!r}", reason="MODEL_NOT_FOUND", field="model_id"
            )
        if version_id:
            validate_id(version_id, "version_id")
        version = self._store.get_model_version(app.user_id, app.id, model_id, version_id)
        if version_id and version is None:
            raise NotFound(f"version {version_id!r} of model {model_id!r} not found", field="version_id")
        return model, version

    def list(
        self, principal: Principal, user_id: str, app_id: str, page: PageRequest, text: str = ""
    ) -> tuple[builtins.list[tuple[ModelRecord, ModelVersionRecord | None]], str]:
        app = self._apps.get(principal, user_id, app_id)
        check_text(text, "query", MAX_NAME_LENGTH)
        scope = f"models:{app.user_id}:{app.id}:{text}"
        result = self._store.list_models(app.user_id, app.id, text, to_query(page, scope))
        models = [(m, self._store.get_model_version(app.user_id, app.id, m.id)) for m in result.items]
        return models, next_token(result, scope)

    def delete(self, principal: Principal, user_id: str, app_id: str, model_id: str) -> None:
        model, _ = self.get(principal, user_id, app_id, model_id)
        if not self._store.delete_model(model.user_id, model.app_id, model.id):
            raise NotFound(f"model {model_id!r} not found", field="model_id")
        if self.on_delete is not None:
            self.on_delete(model, "")
        if self._apps.vectors is not None:  # the embeddings it made, if it was the app's base workflow
            self._apps.vectors.drop_space(space_name(model.user_id, model.app_id, MODEL_EMBEDDER_PREFIX + model.id))

    def create_version(
        self, principal: Principal, user_id: str, app_id: str, model_id: str, spec: VersionSpec
    ) -> ModelVersionRecord:
        model, _ = self.get(principal, user_id, app_id, model_id)
        version = self._checked_params(model.model_type_id, self._version(model.user_id, model.app_id, model.id, spec))
        try:
            self._store.insert_model_version(version)
        except Conflict:
            raise AlreadyExists(
                f"version {version.id!r} of model {model_id!r} already exists", field="version.id"
            ) from None
        return version

    def list_versions(
        self, principal: Principal, user_id: str, app_id: str, model_id: str, page: PageRequest
    ) -> tuple[builtins.list[ModelVersionRecord], str]:
        model, _ = self.get(principal, user_id, app_id, model_id)
        scope = f"model-versions:{model.user_id}:{model.app_id}:{model.id}"
        result = self._store.list_model_versions(model.user_id, model.app_id, model.id, to_query(page, scope))
        return result.items, next_token(result, scope)

    def delete_version(self, principal: Principal, user_id: str, app_id: str, model_id: str, version_id: str) -> None:
        model, _ = self.get(principal, user_id, app_id, model_id, version_id)
        self._store.delete_model_version(model.user_id, model.app_id, model.id, version_id)
        if self.on_delete is not None:
            self.on_delete(model, version_id)

    # predictions

    def predict(self, principal: Principal, request: PredictRequest) -> PredictResult:
        """Run a predict on a runner and wait for its outputs (one per input, each with its status)."""
        return self.submit(principal, request).result()

    def submit(self, principal: Principal, request: PredictRequest) -> PendingPredict | LocalPredict:
        """Check a predict and queue it for a runner (or run it here, for a local model type);
        the returned handle waits for (or cancels) it."""
        model, work = self._prepare(principal, request)
        version = work.version
        local_type = self.local.get(model.model_type_id)
        if local_type is not None:
            why_not = local_type.check_version(model, version)
            if why_not:
                raise FailedPrecondition(why_not, field="version_id")
            pending = self.local.submit(local_type, model, version, work.inputs, work.params, request.deadline_seconds)
            config = work.output_config
            pending.shape_with(lambda outputs: apply_output_config(outputs, config))
            return pending
        if self._codec is None:
            raise FailedPrecondition("this server has no runner wire format: predictions are off")
        described = f"model {version.model_id!r} (version {version.id}) of app {version.app_id!r}"
        ticket = self._router.submit(
            version.user_id,
            frozenset(version.runner_labels),
            self._codec.encode_work(work),
            float(version.item_timeout_seconds),
            max(request.deadline_seconds, 0.0),
            described,
        )
        return PendingPredict(ticket, work, self._codec)

    def _prepare(self, principal: Principal, request: PredictRequest) -> tuple[ModelRecord, RunnerWork]:
        inputs = request.inputs
        if not 1 <= len(inputs) <= MAX_BATCH:
            raise InvalidArgument(
                f"a predict takes 1-{MAX_BATCH} inputs, got {len(inputs)}: split larger lists", field="inputs"
            )
        if request.method:
            validate_id(request.method, "method")
        model, version = self.get(principal, request.user_id, request.app_id, request.model_id, request.version_id)
        if version is None:
            raise NotFound(
                f"model {request.model_id!r} has no version: create one with runner_labels", field="version_id"
            )
        for i, given in enumerate(inputs):
            _check_predict_input(model, given, f"inputs[{i}]")
        check_metadata(request.params, "inference_params")
        config = version.output_config
        if request.output_config is not None:
            given_config = request.output_config
            _check_output_config(given_config, "output_config")
            config = OutputConfig(
                min_value=given_config.min_value or config.min_value,
                max_concepts=given_config.max_concepts or config.max_concepts,
                select_concepts=given_config.select_concepts or config.select_concepts,
            )
        return model, RunnerWork(
            version, request.method or "predict", tuple(inputs), {**version.params, **request.params}, config
        )


class PendingPredict:
    """A queued predict. `result()` blocks until its runner answers; an async adapter passes a
    callback to `add_done_callback` and calls `result()` from it, holding no thread meanwhile."""

    def __init__(self, ticket: Ticket, work: RunnerWork, codec: WorkCodec) -> None:
        self._ticket = ticket
        self._work = work
        self._codec = codec

    def cancel(self, reason: str = "the caller went away") -> None:
        self._ticket.cancel(reason)

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        self._ticket.add_done_callback(lambda _outcome: callback())

    def result(self) -> PredictResult:
        answer, runner_id = self._ticket.wait()
        outputs = apply_output_config(self._codec.decode_outputs(answer), self._work.output_config)
        version = self._work.version
        return PredictResult(version.model_id, version.id, runner_id, outputs)


def _check_predict_input(model: ModelRecord, given: PredictInput, field: str) -> None:
    """Refuse, before any runner sees it, an input the model says it cannot read (no input_fields: any)."""
    check_metadata(given.metadata or {}, f"{field}.data.metadata")
    if not model.input_fields:
        return
    accepted = ", ".join(model.input_fields)
    if not given.fields:
        raise InvalidArgument(
            f"{field} has no content: model {model.id!r} reads {accepted} (its input_fields)",
            reason="INPUT_FIELD_NOT_ACCEPTED",
            field=f"{field}.data",
        )
    for kind in given.fields:
        if kind not in model.input_fields:
            raise InvalidArgument(
                f"{field} holds {kind}, but model {model.id!r} reads only {accepted} (its input_fields): "
                f"send {accepted}, or use a model that takes {kind}",
                reason="INPUT_FIELD_NOT_ACCEPTED",
                field=f"{field}.data.{kind}",
            )


def _check_output_config(config: OutputConfig, field: str) -> None:
    if not 0.0 <= config.min_value <= 1.0:
        raise InvalidArgument(f"{field}.min_value {config.min_value} must be in [0, 1]", field=field)
    if config.max_concepts < 0:
        raise InvalidArgument(f"{field}.max_concepts must be 0 (all) or more", field=field)
    for i, concept_id in enumerate(config.select_concepts):
        validate_id(concept_id, f"{field}.select_concepts[{i}]")


__all__ = ["INPUT_FIELDS", "Models", "PendingPredict", "PredictInput", "VersionSpec"]
