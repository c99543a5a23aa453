"""The Open Inference Protocol (KServe v2, spoken by Triton, KServe, MLServer, Seldon) in engine terms.

Both adapters, the gRPC `inference.GRPCInferenceService` (grpc/oip.py) and the REST routes
(http/oip.py), only translate; what a name means, how tensors map to a model's features and
which tensors are refused is decided here, and every infer ends in `Models.submit`.

One infer is one predict input: each request tensor becomes a named feature of that input (a
model with declared `input_specs` gets them checked against its specs first; a model without
takes tensors by their names), and the output's features become the response tensors.

How a feature travels as a tensor:
- array: the tensor itself (the spec's dtype and shape; -1 = any size on that axis);
- numeric: one element of any numeric datatype, shape [1] (FP64 in the metadata);
- text, categorical (one of the spec's categories) and image (its encoded bytes): one BYTES element;
- categorical outputs: FP32 probabilities, one per category in the spec's order (as the runner
  returned them when the model declares none).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from pellucid import __version__
from pellucid.server.engine.access import Principal
from pellucid.server.engine.errors import (
    DeadlineExceeded,
    EngineError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from pellucid.server.engine.features import RowsInvalid, check_row
from pellucid.server.engine.models import Models
from pellucid.server.engine.predict import (
    BYTES_DTYPE,
    Feature,
    Media,
    OutputCode,
    PredictInput,
    PredictOutput,
    PredictRequest,
    Tensor,
    pack_bytes,
    unpack_bytes,
)
from pellucid.server.records import ConceptValue, FeatureSpec, ModelRecord, ModelVersionRecord

SERVER_NAME = "pellucid"
PLATFORM = "pellucid"
# OIP datatypes and the numpy dtype names pellucid's tensors carry
DATATYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": BYTES_DTYPE,
}
DTYPES = {dtype: datatype for datatype, dtype in DATATYPES.items()}
MAX_TENSORS = 256


def tensor_dtype(datatype: str, tensor_name: str) -> str:
    """The numpy dtype name of an OIP datatype; INVALID_ARGUMENT naming the tensor when unknown."""
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidArgument(
            f"tensor {tensor_name!r}: datatype {datatype!r} is not supported (use one of {', '.join(DATATYPES)})",
            field=f"inputs.{tensor_name}.datatype",
        )
    return dtype


def tensor_datatype(dtype: str) -> str:
    """The OIP datatype of a numpy dtype name ("" when it has none, e.g. complex)."""
    return DTYPES.get(dtype, "")


@dataclass(frozen=True)
class NamedTensor:
    name: str
    tensor: Tensor

    @property
    def datatype(self) -> str:
        return tensor_datatype(self.tensor.dtype)


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str  # "" when the model declares an array without a dtype (any)
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


@dataclass(frozen=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True)
class InferResult:
    model_name: str
    model_version: str
    outputs: tuple[NamedTensor, ...]


@dataclass(frozen=True)
class ModelRef:
    """Which model an OIP name means, in whose namespace."""

    user_id: str
    app_id: str
    model_id: str
    version_id: str = ""
    name: str = ""  # the name answers give: `<app>/<model>`, or the deployment id
    # the feature specs tensors map to, when not the model's own (a deployment's)
    input_specs: tuple[FeatureSpec, ...] | None = None
    output_specs: tuple[FeatureSpec, ...] | None = None


# How a name without "/" (a deployment id) resolves: Deployments.resolve_for_inference, which
# also decides who may call it (a deployment token reaches its own deployment only).
DeploymentResolver = Callable[[Principal, str], ModelRef]


class OpenInference:
    """OIP semantics over the engine's models; stateless, so each adapter may hold its own."""

    def __init__(
        self, models: Models, resolve_deployment: DeploymentResolver | None = None, dashed_names: bool = False
    ) -> None:
        self._models = models
        self.resolve_deployment = resolve_deployment
        # REST also takes `<app>--<model>` (a slash is awkward in a URL): a name without "/" is
        # then a deployment id if one has it, else split at its first "--"
        self.dashed_names = dashed_names

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(SERVER_NAME, __version__, ())

    def resolve(self, principal: Principal, name: str, version: str = "") -> ModelRef:
        """`<app>/<model>` in the caller's namespace, or a deployment id: its model at its version.
        A deployment token names its own deployment, nothing else."""
        app_id, slash, model_id = name.partition("/")
        if not slash:
            try:
                return replace(self._deployment(principal, name, version), name=name)
            except (NotFound, InvalidArgument):
                if not (self.dashed_names and "--" in name):
                    raise
            app_id, _, model_id = name.partition("--")
            name = f"{app_id}/{model_id}"
        if principal.deployment_id:
            raise PermissionDenied(
                f"this deployment token is for deployment {principal.deployment_id!r}, not model {name!r}: name "
                f"the model {principal.deployment_id!r} (or use a PAT of the model's owner)",
                reason="WRONG_DEPLOYMENT_TOKEN",
                field="model_name",
            )
        if not app_id or not model_id or "/" in model_id:
            raise InvalidArgument(f"model name {name!r} must be <app>/<model>", field="model_name")
        return ModelRef(principal.user_id, app_id, model_id, version, name)

    def _deployment(self, principal: Principal, name: str, version: str) -> ModelRef:
        not_found = (
            f"model {name!r} not found: name models as <app>/<model> (over REST also <app>--<model>), or by "
            "the id of one of your deployments"
        )
        if self.resolve_deployment is None:
            raise NotFound(not_found, reason="MODEL_NOT_FOUND", field="model_name")
        try:
            ref = self.resolve_deployment(principal, name)
        except NotFound:
            raise NotFound(not_found, reason="MODEL_NOT_FOUND", field="model_name") from None
        except InvalidArgument:  # not an id at all
            raise InvalidArgument(
                f"model name {name!r} is neither <app>/<model> nor a deployment id", field="model_name"
            ) from None
        if version and version != ref.version_id:
            serves = f"version {ref.version_id!r}" if ref.version_id else "its model's latest version"
            raise InvalidArgument(
                f"deployment {name!r} serves {serves}, not version {version!r}: leave the model version empty",
                field="model_version",
            )
        return ref

    def _model(
        self, principal: Principal, name: str, version: str
    ) -> tuple[ModelRef, ModelRecord, ModelVersionRecord | None]:
        ref = self.resolve(principal, name, version)
        model, found = self._models.get(principal, ref.user_id, ref.app_id, ref.model_id, ref.version_id)
        return ref, _with_specs(model, ref), found

    def model_metadata(self, principal: Principal, name: str, version: str = "") -> ModelMetadata:
        ref, model, latest = self._model(principal, name, version)
        versions = (latest.id,) if latest is not None else ()
        return ModelMetadata(
            name=ref.name,
            versions=versions,
            platform=PLATFORM,
            inputs=tuple(_spec_metadata(s, output=False) for s in model.input_specs),
            outputs=tuple(_spec_metadata(s, output=True) for s in model.output_specs),
        )

    def model_ready(self, principal: Principal, name: str, version: str = "") -> bool:
        """Whether the model exists with a version to run (its runners may still come and go)."""
        try:
            _, _, found = self._model(principal, name, version)
        except NotFound:
            return False
        return found is not None

    def submit(
        self,
        principal: Principal,
        name: str,
        version: str,
        inputs: Sequence[NamedTensor],
        requested_outputs: Sequence[str] = (),
        deadline_seconds: float = 60.0,
    ) -> PendingInfer:
        """Check the tensors against the model's inputs and queue the predict."""
        ref, model, _ = self._model(principal, name, version)
        name = ref.name
        features = input_features(model, inputs)
        if ref.input_specs is not None:  # a deployment's contract: checked as its HTTP forward checks rows
            try:
                features = check_row(ref.input_specs, features, 0)
            except RowsInvalid as exc:
                raise InvalidArgument(
                    "; ".join(f"tensor {e.feature!r}: {e.message}" if e.feature else e.message for e in exc.errors),
                    field=f"inputs.{exc.errors[0].feature}" if exc.errors[0].feature else "inputs",
                ) from None
        output_names = {s.name for s in model.output_specs}
        for wanted in requested_outputs:
            if output_names and wanted not in output_names:
                raise InvalidArgument(
                    f"model {name!r} has no output {wanted!r}: its outputs are {', '.join(sorted(output_names))}",
                    field="outputs",
                )
        request = PredictRequest(
            user_id=ref.user_id,
            app_id=ref.app_id,
            model_id=ref.model_id,
            version_id=ref.version_id,
            inputs=(PredictInput(features=features),),
            deadline_seconds=deadline_seconds,
        )
        pending = self._models.submit(principal, request)
        return PendingInfer(name, model, pending, tuple(requested_outputs))


def _with_specs(model: ModelRecord, ref: ModelRef) -> ModelRecord:
    """The model as the name sees it: a deployment's feature specs stand in for the model's."""
    if ref.input_specs is None and ref.output_specs is None:
        return model
    return replace(
        model,
        input_specs=model.input_specs if ref.input_specs is None else ref.input_specs,
        output_specs=model.output_specs if ref.output_specs is None else ref.output_specs,
    )


class PendingInfer:
    """A queued infer: `result()` waits for the model and gives the response tensors."""

    def __init__(self, name: str, model: ModelRecord, pending: object, requested: tuple[str, ...]) -> None:
        self._name = name
        self._model = model
        self._pending = pending
        self._requested = requested

    def cancel(self, reason: str = "the caller went away") -> None:
        self._pending.cancel(reason)  # type: ignore[attr-defined]

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        self._pending.add_done_callback(callback)  # type: ignore[attr-defined]

    def result(self) -> InferResult:
        predicted = self._pending.result()  # type: ignore[attr-defined]
        (output,) = predicted.outputs
        _raise_failed(self._name, output)
        tensors = output_tensors(self._model, output.data.features)
        if self._requested:
            by_name = {t.name: t for t in tensors}
            missing = [n for n in self._requested if n not in by_name]
            if missing:
                raise InvalidArgument(
                    f"model {self._name!r} returned no output {', '.join(map(repr, missing))} "
                    f"(it returned {', '.join(by_name) or 'none'})",
                    field="outputs",
                )
            tensors = tuple(by_name[n] for n in self._requested)
        return InferResult(self._name, predicted.version_id, tensors)


_OUTPUT_ERRORS: dict[OutputCode, type[EngineError]] = {
    OutputCode.INVALID_ARGUMENT: InvalidArgument,
    OutputCode.NOT_FOUND: NotFound,
    OutputCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    OutputCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    OutputCode.UNAVAILABLE: Unavailable,
}


def _raise_failed(name: str, output: PredictOutput) -> None:
    if output.code == OutputCode.OK:
        return
    error = _OUTPUT_ERRORS.get(output.code, FailedPrecondition)
    raise error(f"model {name!r} failed on this input: {output.message or output.code.name}")


def _spec_metadata(spec: FeatureSpec, output: bool) -> TensorMetadata:
    if spec.type == "array":
        return TensorMetadata(spec.name, tensor_datatype(spec.dtype) if spec.dtype else "", tuple(spec.shape))
    if spec.type == "numeric":
        return TensorMetadata(spec.name, "FP64", (1,))
    if spec.type == "categorical" and output:
        return TensorMetadata(spec.name, "FP32", (len(spec.categories),))
    return TensorMetadata(spec.name, "BYTES", (1,))


def _decoded(named: NamedTensor) -> np.ndarray:
    try:
        return named.tensor.to_numpy()
    except ValueError as exc:
        raise InvalidArgument(f"tensor {named.name!r}: {exc}", field=f"inputs.{named.name}") from None


def input_features(model: ModelRecord, inputs: Sequence[NamedTensor]) -> tuple[Feature, ...]:
    """The features of a predict input made of the request's tensors, checked against the
    model's input specs (without specs: each tensor as an array feature of its name)."""
    if not inputs:
        raise InvalidArgument("an infer needs at least one input tensor", field="inputs")
    if len(inputs) > MAX_TENSORS:
        raise InvalidArgument(f"an infer takes at most {MAX_TENSORS} input tensors", field="inputs")
    seen: set[str] = set()
    for named in inputs:
        if named.name in seen:
            raise InvalidArgument(f"input tensor {named.name!r} is given twice", field=f"inputs.{named.name}")
        seen.add(named.name)
        _decoded(named)  # its data must fill its shape
    if not model.input_specs:
        return tuple(Feature(name=t.name, tensor=t.tensor) for t in inputs)
    specs = {s.name: s for s in model.input_specs}
    for named in inputs:
        if named.name not in specs:
            raise InvalidArgument(
                f"model {model.id!r} has no input {named.name!r}: its inputs are {', '.join(specs)}",
                field=f"inputs.{named.name}",
            )
    missing = [s.name for s in model.input_specs if s.required and s.name not in seen]
    if missing:
        raise InvalidArgument(
            f"model {model.id!r} needs input {', '.join(map(repr, missing))}", field=f"inputs.{missing[0]}"
        )
    return tuple(_input_feature(specs[t.name], t) for t in inputs)


def _input_feature(spec: FeatureSpec, named: NamedTensor) -> Feature:
    tensor, name = named.tensor, named.name
    given = f"{named.datatype or tensor.dtype} {list(tensor.shape)}"
    if spec.type == "array":
        if spec.dtype and tensor.dtype != spec.dtype:
            raise InvalidArgument(
                f"tensor {name!r} is {given}: the model takes {tensor_datatype(spec.dtype) or spec.dtype}",
                field=f"inputs.{name}.datatype",
            )
        if spec.shape and (
            len(spec.shape) != len(tensor.shape) or any(w not in (-1, g) for w, g in zip(spec.shape, tensor.shape))
        ):
            raise InvalidArgument(
                f"tensor {name!r} has shape {list(tensor.shape)}: the model takes shape {list(spec.shape)} (-1 = any)",
                field=f"inputs.{name}.shape",
            )
        return Feature(name=name, tensor=tensor)
    if spec.type == "numeric":
        if tensor.dtype == BYTES_DTYPE or tensor.size != 1:
            raise InvalidArgument(
                f"tensor {name!r} is {given}: the model takes one number (a numeric datatype, shape [1])",
                field=f"inputs.{name}",
            )
        return Feature(name=name, tensor=Tensor(tensor.dtype, (), tensor.data))
    if tensor.dtype != BYTES_DTYPE or tensor.size != 1:
        raise InvalidArgument(
            f"tensor {name!r} is {given}: the model takes one {spec.type} (BYTES, shape [1])", field=f"inputs.{name}"
        )
    (raw,) = unpack_bytes(tensor.data)
    if spec.type == "text":
        try:
            return Feature(name=name, text=raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidArgument(f"tensor {name!r}: the text is not UTF-8", field=f"inputs.{name}") from None
    if spec.type == "categorical":
        label = raw.decode("utf-8", "replace")
        if label not in spec.categories:
            raise InvalidArgument(
                f"tensor {name!r}: {label!r} is not one of the categories {', '.join(spec.categories)}",
                field=f"inputs.{name}",
            )
        return Feature(name=name, concepts=(ConceptValue(id=label, name=label, value=1.0),))
    return Feature(name=name, media=Media(kind="image", data=raw))


def output_tensors(model: ModelRecord, features: Sequence[Feature]) -> tuple[NamedTensor, ...]:
    """The response tensors of an output's features (see the module docstring)."""
    specs = {s.name: s for s in model.output_specs}
    tensors = []
    for feature in features:
        spec = specs.get(feature.name)
        if feature.tensor is not None:
            tensor = feature.tensor
            if not tensor.shape:  # a number: OIP tensors have at least one axis
                tensor = Tensor(tensor.dtype, (1,), tensor.data)
        elif feature.text is not None:
            tensor = Tensor(BYTES_DTYPE, (1,), pack_bytes([feature.text]))
        elif feature.media is not None:
            tensor = Tensor(BYTES_DTYPE, (1,), pack_bytes([feature.media.data]))
        else:
            values = {c.id: c.value for c in feature.concepts}
            order = spec.categories if spec is not None and spec.categories else tuple(values)
            tensor = Tensor.from_numpy(np.array([values.get(label, 0.0) for label in order], dtype=np.float32))
        if not tensor_datatype(tensor.dtype):
            raise FailedPrecondition(
                f"model {model.id!r} returned {feature.name!r} as {tensor.dtype}, which the Open Inference "
                "Protocol has no datatype for"
            )
        tensors.append(NamedTensor(feature.name, tensor))
    return tuple(tensors)


__all__ = [
    "DATATYPES",
    "DTYPES",
    "PLATFORM",
    "DeploymentResolver",
    "InferResult",
    "ModelMetadata",
    "ModelRef",
    "NamedTensor",
    "OpenInference",
    "PendingInfer",
    "ServerMetadata",
    "TensorMetadata",
    "input_features",
    "output_tensors",
    "tensor_datatype",
    "tensor_dtype",
]
