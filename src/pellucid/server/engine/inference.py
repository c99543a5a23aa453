"""The Open Inference Protocol (KServe v2, spoken by Triton, KServe, MLServer, Seldon) in engine terms.

Both adapters, the gRPC `inference.GRPCInferenceService` (grpc/oip.py) and the REST routes
(http/oip.py), only translate; what a name means, how tensors map to a model's features and
which tensors are refused is decided here. A name reaches a model (`<app>/<model>`), whose
infers end in `Models.submit`, or a deployment (of a model or a workflow, by its id), whose
infers end in `Deployments.submit` (the engine path the HTTP forward takes): `InferTarget` says
which, with the feature specs its tensors map to.

One infer is one predict input, or one row of a deployment: each request tensor becomes
a named feature (checked against the target's input specs first; a model without declared
`input_specs` takes tensors by their names), and the output's features become the response
tensors. A workflow deployment's metadata are its feature specs (outputs named `<node_id>` or
`<node_id>.<feature>`), its version the workflow version it pins.

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
from typing import Any, Protocol

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
from pellucid.server.engine.features import RowsInvalid, check_feature
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
from pellucid.server.records import ConceptValue, FeatureSpec

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
    """Which model (or workflow deployment) an OIP name means, in whose namespace."""

    user_id: str
    app_id: str
    model_id: str
    version_id: str = ""  # a workflow deployment's: the workflow version it pins
    name: str = ""  # the name answers give: `<app>/<model>`, or the deployment id
    # the feature specs tensors map to, when not the model's own (a deployment's)
    input_specs: tuple[FeatureSpec, ...] | None = None
    output_specs: tuple[FeatureSpec, ...] | None = None
    deployment_id: str = ""  # set when the name is a deployment's
    workflow_id: str = ""  # set when that deployment serves a workflow (model_id is then empty)
    runnable: bool = True  # False: the workflow version it pins is deprecated (ModelReady says no)


@dataclass(frozen=True)
class InferTarget:
    """What a name reaches, as an infer sees it: the specs tensors map to, how errors call it,
    and the versions it reports (none: a model without a version to run yet)."""

    ref: ModelRef
    label: str  # "model 'm'" or "deployment 'd'"
    input_specs: tuple[FeatureSpec, ...]
    output_specs: tuple[FeatureSpec, ...]
    versions: tuple[str, ...]


class DeploymentTargets(Protocol):
    """What OIP needs of deployments (engine/deployments.py:Deployments)."""

    def resolve_for_inference(self, principal: Principal, deployment_id: str) -> ModelRef:
        """A name without "/" (a deployment id): what it reaches, if this caller may call it (a
        deployment token reaches its own deployment only)."""
        ...

    def submit(
        self, principal: Principal, deployment_id: str, rows: Sequence[Sequence[Feature]], deadline_seconds: float
    ) -> Any:
        """Rows queued for the deployment's target: a handle whose `result()` is the output rows."""
        ...


class OpenInference:
    """OIP semantics over the engine's models and deployments; stateless, so each adapter may
    hold its own."""

    def __init__(
        self, models: Models, deployments: DeploymentTargets | None = None, dashed_names: bool = False
    ) -> None:
        self._models = models
        self._deployments = deployments
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
        if self._deployments is None:
            raise NotFound(not_found, reason="MODEL_NOT_FOUND", field="model_name")
        try:
            ref = self._deployments.resolve_for_inference(principal, name)
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

    def target(self, principal: Principal, name: str, version: str = "") -> InferTarget:
        """What `name` reaches (see resolve) with the specs its tensors map to."""
        ref = self.resolve(principal, name, version)
        if ref.workflow_id:
            specs = ref.input_specs or (), ref.output_specs or ()
            versions = (ref.version_id,) if ref.runnable else ()
            return InferTarget(ref, f"deployment {ref.deployment_id!r}", *specs, versions)
        model, found = self._models.get(principal, ref.user_id, ref.app_id, ref.model_id, ref.version_id)
        inputs = model.input_specs if ref.input_specs is None else ref.input_specs
        outputs = model.output_specs if ref.output_specs is None else ref.output_specs
        versions = (found.id,) if found is not None else ()
        return InferTarget(ref, f"model {model.id!r}", inputs, outputs, versions)

    def model_metadata(self, principal: Principal, name: str, version: str = "") -> ModelMetadata:
        target = self.target(principal, name, version)
        return ModelMetadata(
            name=target.ref.name,
            versions=target.versions,
            platform=PLATFORM,
            inputs=tuple(_spec_metadata(s, output=False) for s in target.input_specs),
            outputs=tuple(_spec_metadata(s, output=True) for s in target.output_specs),
        )

    def model_ready(self, principal: Principal, name: str, version: str = "") -> bool:
        """Whether the target exists with a version to run (its runners may still come and go)."""
        try:
            return bool(self.target(principal, name, version).versions)
        except NotFound:
            return False

    def submit(
        self,
        principal: Principal,
        name: str,
        version: str,
        inputs: Sequence[NamedTensor],
        requested_outputs: Sequence[str] = (),
        deadline_seconds: float = 60.0,
    ) -> PendingInfer:
        """Check the tensors against the target's inputs and queue its predict (a model named
        <app>/<model>) or its row (a deployment, of a model or a workflow)."""
        target = self.target(principal, name, version)
        ref = target.ref
        features = input_features(target, inputs)
        output_names = {s.name for s in target.output_specs}
        for wanted in requested_outputs:
            if output_names and wanted not in output_names:
                raise InvalidArgument(
                    f"{target.label} has no output {wanted!r}: its outputs are {', '.join(sorted(output_names))}",
                    field="outputs",
                )
        if ref.deployment_id:  # the deployment's own path, as its HTTP forward: rows in, rows out
            assert self._deployments is not None  # it resolved the name
            try:
                forward = self._deployments.submit(principal, ref.deployment_id, [features], deadline_seconds)
            except RowsInvalid as exc:  # the one row's faults, named by tensor (the row index means nothing here)
                first = exc.errors[0].feature
                raise InvalidArgument(
                    "; ".join(f"tensor {e.feature!r}: {e.message}" if e.feature else e.message for e in exc.errors),
                    field=f"inputs.{first}" if first else "inputs",
                ) from None
            return PendingInfer(target, forward, tuple(requested_outputs), _forwarded_row)
        request = PredictRequest(
            user_id=ref.user_id,
            app_id=ref.app_id,
            model_id=ref.model_id,
            version_id=ref.version_id,
            inputs=(PredictInput(features=features),),
            deadline_seconds=deadline_seconds,
        )
        pending = self._models.submit(principal, request)
        return PendingInfer(target, pending, tuple(requested_outputs), _predicted_output)


class _Pending(Protocol):
    """A queued predict (Models.submit) or deployment call (Deployments.submit)."""

    def cancel(self, reason: str = ...) -> None: ...

    def add_done_callback(self, callback: Callable[[], None]) -> None: ...

    def result(self) -> Any: ...


# (version, output features) of a finished handle, or the error of its failure
Outcome = Callable[[Any, InferTarget], tuple[str, Sequence[Feature]]]


class PendingInfer:
    """A queued infer: `result()` waits for the target and gives the response tensors."""

    def __init__(self, target: InferTarget, pending: _Pending, requested: tuple[str, ...], outcome: Outcome) -> None:
        self._target = target
        self._pending = pending
        self._requested = requested
        self._outcome = outcome

    def cancel(self, reason: str = "the caller went away") -> None:
        self._pending.cancel(reason)

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        self._pending.add_done_callback(callback)

    def result(self) -> InferResult:
        name = self._target.ref.name
        version, features = self._outcome(self._pending.result(), self._target)
        tensors = output_tensors(self._target, features)
        if self._requested:
            by_name = {t.name: t for t in tensors}
            missing = [n for n in self._requested if n not in by_name]
            if missing:
                raise InvalidArgument(
                    f"{self._target.label} returned no output {', '.join(map(repr, missing))} "
                    f"(it returned {', '.join(by_name) or 'none'})",
                    field="outputs",
                )
            tensors = tuple(by_name[n] for n in self._requested)
        return InferResult(name, version, tensors)


def _predicted_output(predicted: Any, target: InferTarget) -> tuple[str, Sequence[Feature]]:
    """A model's one output (its failure as an error naming the model)."""
    (output,) = predicted.outputs
    _raise_failed(target.ref.name, output)
    return predicted.version_id, output.data.features


def _forwarded_row(rows: Any, target: InferTarget) -> tuple[str, Sequence[Feature]]:
    """A deployment's one output row (PendingForward.result raised a failure as the HTTP forward
    answers it), at the version the deployment pins (else its model's latest when resolved)."""
    (row,) = rows
    return target.ref.version_id or (target.versions[0] if target.versions else ""), row


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


def input_features(target: InferTarget, inputs: Sequence[NamedTensor]) -> tuple[Feature, ...]:
    """The features of a predict input (or deployment row) made of the request's tensors, checked
    against the target's input specs (without specs: each tensor as an array feature of its name)."""
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
    if not target.input_specs:
        return tuple(Feature(name=t.name, tensor=t.tensor) for t in inputs)
    specs = {s.name: s for s in target.input_specs}
    for named in inputs:
        if named.name not in specs:
            raise InvalidArgument(
                f"{target.label} has no input {named.name!r}: its inputs are {', '.join(specs)}",
                field=f"inputs.{named.name}",
            )
    missing = [s.name for s in target.input_specs if s.required and s.name not in seen]
    if missing:
        raise InvalidArgument(
            f"{target.label} needs input {', '.join(map(repr, missing))}", field=f"inputs.{missing[0]}"
        )
    features = tuple(_input_feature(specs[t.name], t) for t in inputs)
    if target.ref.deployment_id:  # Deployments.submit checks the row, as for its HTTP forward
        return features
    # a model's: checked the same way (finite numbers; images decoded and brought to the declared
    # size and channels), so one contract holds whichever way a request comes
    return tuple(check_feature(specs[f.name], f, f"inputs.{f.name}", "tensor") for f in features)


def _input_feature(spec: FeatureSpec, named: NamedTensor) -> Feature:
    tensor, name = named.tensor, named.name
    given = f"{named.datatype or tensor.dtype} {list(tensor.shape)}"
    if spec.type == "array":
        if spec.dtype and tensor.dtype != spec.dtype:
            raise InvalidArgument(
                f"tensor {name!r} is {given}: this input takes {tensor_datatype(spec.dtype) or spec.dtype}",
                field=f"inputs.{name}.datatype",
            )
        if spec.shape and (
            len(spec.shape) != len(tensor.shape) or any(w not in (-1, g) for w, g in zip(spec.shape, tensor.shape))
        ):
            raise InvalidArgument(
                f"tensor {name!r} has shape {list(tensor.shape)}: this input takes shape {list(spec.shape)} (-1 = any)",
                field=f"inputs.{name}.shape",
            )
        return Feature(name=name, tensor=tensor)
    if spec.type == "numeric":
        if tensor.dtype == BYTES_DTYPE or tensor.size != 1:
            raise InvalidArgument(
                f"tensor {name!r} is {given}: this input takes one number (a numeric datatype, shape [1])",
                field=f"inputs.{name}",
            )
        return Feature(name=name, tensor=Tensor(tensor.dtype, (), tensor.data))
    if tensor.dtype != BYTES_DTYPE or tensor.size != 1:
        raise InvalidArgument(
            f"tensor {name!r} is {given}: this input takes one {spec.type} (BYTES, shape [1])", field=f"inputs.{name}"
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


def output_tensors(target: InferTarget, features: Sequence[Feature]) -> tuple[NamedTensor, ...]:
    """The response tensors of an output's features (see the module docstring)."""
    specs = {s.name: s for s in target.output_specs}
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
                f"{target.label} returned {feature.name!r} as {tensor.dtype}, which the Open Inference "
                "Protocol has no datatype for"
            )
        tensors.append(NamedTensor(feature.name, tensor))
    return tuple(tensors)


__all__ = [
    "DATATYPES",
    "DTYPES",
    "PLATFORM",
    "DeploymentTargets",
    "InferResult",
    "InferTarget",
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
