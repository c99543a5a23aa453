"""Models the server runs itself, with no runner process: built-in operators (thresholders,
image-crop, random-sample), the built-in embedders, and versions trained by the server.

A model whose `model_type_id` names a registered `LocalModelType` is predicted in-process by
`Models.submit` (on the `LocalModels` thread pool); any other model is routed to runners.
Types are registered by the modules that own them (workflow operators, training); the
registry is per engine, so each type can hold the stores it needs.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout  # not the builtin TimeoutError before 3.11
from dataclasses import dataclass
from typing import Any

from pellucid.server.engine.errors import DeadlineExceeded, InvalidArgument
from pellucid.server.engine.predict import PredictInput, PredictOutput, PredictResult
from pellucid.server.records import ModelRecord, ModelVersionRecord

# What a model reads and makes, as a workflow validates its edges: content fields of an input
# (INPUT_FIELDS), "embeddings" (vectors), "concepts", "regions" (boxes with their concepts and,
# after image-crop, their cropped images).
DATA_KINDS = ("image", "video", "audio", "text", "embeddings", "concepts", "regions")

PARAM_KINDS = ("int", "float", "str", "bool", "list[str]", "choice", "dict[str,float]")


@dataclass(frozen=True)
class ParamInfo:
    """One parameter a model type declares: `get_param_info` shows it, `update_params` checks against it."""

    name: str
    kind: str  # one of PARAM_KINDS
    default: Any
    help: str
    minimum: float | None = None  # int / float: inclusive bounds
    maximum: float | None = None
    choices: tuple[str, ...] = ()  # kind "choice": the allowed values
    required: bool = False  # no usable default: training refuses to start without it

    def check(self, value: Any, field: str) -> Any:
        """The value, normalised to the declared kind, or InvalidArgument saying what is allowed."""
        kind = self.kind
        if kind == "bool":
            if not isinstance(value, bool):
                raise InvalidArgument(f"{field} must be true or false, got {value!r}", field=field)
            return value
        if kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidArgument(f"{field} must be a number ({kind}), got {value!r}", field=field)
            if not math.isfinite(value):  # int(NaN) would raise, and NaN passes every range check
                raise InvalidArgument(f"{field} must be a finite number, got {value!r}", field=field)
            if kind == "int":
                if float(value) != int(value):
                    raise InvalidArgument(f"{field} must be a whole number, got {value!r}", field=field)
                value = int(value)
            else:
                value = float(value)
            if (self.minimum is not None and value < self.minimum) or (
                self.maximum is not None and value > self.maximum
            ):
                raise InvalidArgument(
                    f"{field} = {value} is out of range: use {self.minimum} to {self.maximum}", field=field
                )
            return value
        if kind == "str":
            if not isinstance(value, str):
                raise InvalidArgument(f"{field} must be a string, got {value!r}", field=field)
            return value
        if kind == "choice":
            if value not in self.choices:
                raise InvalidArgument(f"{field} = {value!r}: use one of {', '.join(self.choices)}", field=field)
            return value
        if kind == "list[str]":
            if isinstance(value, str) or not isinstance(value, list | tuple):
                raise InvalidArgument(f"{field} must be a list of strings, got {value!r}", field=field)
            if not all(isinstance(v, str) for v in value):
                raise InvalidArgument(f"{field} must be a list of strings, got {value!r}", field=field)
            return list(value)
        if kind == "dict[str,float]":  # e.g. per-concept thresholds: the bounds apply to each value
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise InvalidArgument(f"{field} must be a map of names to numbers, got {value!r}", field=field)
            scalar = dataclasses.replace(self, kind="float")
            return {k: scalar.check(v, f"{field}.{k}") for k, v in value.items()}
        raise AssertionError(f"unknown param kind {kind!r}")


def check_params(declared: Sequence[ParamInfo], given: dict[str, Any], field: str = "params") -> dict[str, Any]:
    """`given` checked key by key against `declared` (unknown keys: the error lists the known ones)."""
    by_name = {p.name: p for p in declared}
    checked: dict[str, Any] = {}
    for key, value in given.items():
        info = by_name.get(key)
        if info is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise InvalidArgument(f"unknown param {key!r}: the known ones are {known}", field=f"{field}.{key}")
        checked[key] = info.check(value, f"{field}.{key}")
    return checked


class LocalModelType(abc.ABC):
    """A kind of model the server runs in-process. Subclasses set the class attributes and predict."""

    type_id: str = ""  # the model_type_id that selects it, e.g. "concept-thresholder"
    description: str = ""
    reads: tuple[str, ...] = ()  # DATA_KINDS it takes from its input (any one of them)
    makes: tuple[str, ...] = ()  # DATA_KINDS it puts in its outputs
    trainable: bool = False  # listed by App.list_trainable_model_types; versions come from train()
    params: tuple[ParamInfo, ...] = ()  # inference params (trainable types: training params too)

    @abc.abstractmethod
    def predict(
        self,
        model: ModelRecord,
        version: ModelVersionRecord,
        inputs: Sequence[PredictInput],
        params: dict[str, Any],
    ) -> list[PredictOutput]:
        """One output per input, in order; a bad input gets its own failed output, not an exception.
        `params` are the version's params merged with the request's inference params."""

    def check_version_params(self, params: dict[str, Any], field: str) -> dict[str, Any]:
        """A version's params, checked when the version is created (InvalidArgument naming the
        param). The default takes any: a type that declares all its params overrides it."""
        return params

    def check_version(self, model: ModelRecord, version: ModelVersionRecord) -> str:
        """Why this version cannot predict now ("" when it can): e.g. training not finished."""
        return ""


class LocalModels:
    """The registered local model types of one engine and the threads that run their predicts."""

    def __init__(self, workers: int = 4) -> None:
        self._types: dict[str, LocalModelType] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="local-model")

    def register(self, model_type: LocalModelType) -> None:
        with self._lock:
            if model_type.type_id in self._types:
                raise ValueError(f"local model type {model_type.type_id!r} is registered twice")
            self._types[model_type.type_id] = model_type

    def get(self, type_id: str) -> LocalModelType | None:
        return self._types.get(type_id)

    def types(self) -> list[LocalModelType]:
        return sorted(self._types.values(), key=lambda t: t.type_id)

    def submit(
        self,
        model_type: LocalModelType,
        model: ModelRecord,
        version: ModelVersionRecord,
        inputs: Sequence[PredictInput],
        params: dict[str, Any],
        deadline_seconds: float,
    ) -> LocalPredict:
        future = self._pool.submit(model_type.predict, model, version, inputs, params)
        return LocalPredict(future, version, deadline_seconds)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class LocalPredict:
    """A predict running in-process; the same surface as a routed `PendingPredict`."""

    def __init__(self, future: Future[list[PredictOutput]], version: ModelVersionRecord, deadline: float) -> None:
        self._future = future
        self._version = version
        self._deadline = deadline
        self._shape: Callable[[list[PredictOutput]], tuple[PredictOutput, ...]] = tuple

    def shape_with(self, shape: Callable[[list[PredictOutput]], tuple[PredictOutput, ...]]) -> None:
        """How raw outputs become the result's (output_config applied by Models)."""
        self._shape = shape

    def cancel(self, reason: str = "the caller went away") -> None:
        self._future.cancel()

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        self._future.add_done_callback(lambda _future: callback())

    def result(self) -> PredictResult:
        try:
            outputs = self._future.result(timeout=max(self._deadline, 0.0))
        except FutureTimeout:
            self._future.cancel()
            raise DeadlineExceeded(
                f"model {self._version.model_id!r} did not finish within {self._deadline:.1f} s"
            ) from None
        return PredictResult(self._version.model_id, self._version.id, "", self._shape(outputs))


__all__ = [
    "DATA_KINDS",
    "PARAM_KINDS",
    "LocalModelType",
    "LocalModels",
    "LocalPredict",
    "ParamInfo",
    "check_params",
]
