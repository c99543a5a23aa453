"""A predict in pellucid's own terms: what a caller asks, what the runner gets, what comes back.

Any protocol adapter (gRPC now; HTTP and the Open Inference Protocol next) builds a
`PredictRequest`, calls `Models.predict` (or `Models.submit`, to wait without a thread) and
renders the `PredictResult`. The bytes a runner receives are made by a `WorkCodec` the
runner-facing adapter implements and hands to the engine: the engine never sees a proto.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pellucid.server.records import ConceptValue, ModelVersionRecord, OutputConfig

INPUT_FIELDS = ("image", "video", "audio", "text")


class OutputCode(enum.IntEnum):
    """The status of one output (the numbers of google.rpc.Code, which pellucid's Status uses)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14


@dataclass(frozen=True)
class Media:
    """One content field of an input: its bytes (text: UTF-8) or a URL the runner fetches."""

    kind: str  # one of INPUT_FIELDS
    data: bytes = b""
    url: str = ""
    mime: str = ""


@dataclass(frozen=True)
class OutputRegion:
    """A region a model found or kept: its box (top, left, bottom, right as fractions of the
    image), its concepts, and what a node made of it (image-crop: the cropped image)."""

    id: str = ""
    bbox: tuple[float, float, float, float] | None = None
    concepts: tuple[ConceptValue, ...] = ()
    image: Media | None = None
    text: str = ""
    embeddings: tuple[tuple[float, ...], ...] = ()
    extra: bytes = b""  # the rest of the region (its polygon ...) in the adapter's encoding


@dataclass(frozen=True)
class PredictInput:
    id: str = ""
    media: tuple[Media, ...] = ()
    metadata: dict[str, Any] | None = None
    # what else the caller sent with it (annotations, geo ...), in its adapter's encoding: the
    # engine passes it to the runner untouched (an adapter without such fields leaves it empty)
    extra: bytes = b""
    # vectors given as the input (a workflow node fed by an embedder; a `vector` query)
    embeddings: tuple[tuple[float, ...], ...] = ()
    # concepts and regions given as the input (a workflow node fed by a classifier or detector)
    concepts: tuple[ConceptValue, ...] = ()
    regions: tuple[OutputRegion, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        """The content fields it fills, in INPUT_FIELDS order."""
        kinds = {m.kind for m in self.media}
        return tuple(k for k in INPUT_FIELDS if k in kinds)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Everything it carries, as local_models.DATA_KINDS: content fields, then embeddings,
        concepts, regions."""
        derived = [
            kind
            for kind, present in (
                ("embeddings", self.embeddings),
                ("concepts", self.concepts),
                ("regions", self.regions),
            )
            if present
        ]
        return self.fields + tuple(derived)


@dataclass(frozen=True)
class PredictRequest:
    user_id: str
    app_id: str
    model_id: str
    version_id: str = ""  # empty: the latest version
    inputs: tuple[PredictInput, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)  # merged over the version's
    output_config: OutputConfig | None = None  # None: the version's; set fields override it
    method: str = ""  # empty: "predict"
    deadline_seconds: float = 60.0  # how long the engine may wait for the runner's answer


@dataclass(frozen=True)
class RunnerWork:
    """What one runner gets for a predict: a codec turns it into bytes on the runner's wire."""

    version: ModelVersionRecord
    method: str
    inputs: tuple[PredictInput, ...]
    params: dict[str, Any]
    output_config: OutputConfig


@dataclass(frozen=True)
class OutputData:
    concepts: tuple[ConceptValue, ...] = ()
    text: str = ""
    metadata: dict[str, Any] | None = None
    # what else the runner returned (regions ...), in the codec's encoding: the engine passes
    # it through untouched
    extra: bytes = b""
    # vectors an embedding model returned (an app whose base workflow is the model stores them)
    embeddings: tuple[tuple[float, ...], ...] = ()
    # regions a detector found (or a node kept or cropped)
    regions: tuple[OutputRegion, ...] = ()
    # images, video or audio an output passes on (random-sample: the input it kept)
    media: tuple[Media, ...] = ()


@dataclass(frozen=True)
class PredictOutput:
    input_id: str
    code: OutputCode = OutputCode.OK
    message: str = ""
    data: OutputData = OutputData()


@dataclass(frozen=True)
class PredictResult:
    model_id: str
    version_id: str
    runner_id: str
    outputs: tuple[PredictOutput, ...]


class WorkCodec(Protocol):
    """The runner wire format, implemented by the runner-facing adapter (grpc/translate/runners.py)."""

    def encode_work(self, work: RunnerWork) -> bytes:
        """The payload a runner receives for `work`."""
        ...

    def decode_outputs(self, result: bytes) -> list[PredictOutput]:
        """The outputs in a runner's answer."""
        ...


def apply_output_config(outputs: Sequence[PredictOutput], config: OutputConfig) -> tuple[PredictOutput, ...]:
    """Keep concepts >= min_value (and in select_concepts, if any), highest first, at most max_concepts."""
    selected = set(config.select_concepts)
    shaped = []
    for output in outputs:
        concepts = output.data.concepts
        if concepts:
            kept = [c for c in concepts if c.value >= config.min_value and (not selected or c.id in selected)]
            kept.sort(key=lambda c: -c.value)
            if config.max_concepts:
                kept = kept[: config.max_concepts]
            output = dataclasses.replace(output, data=dataclasses.replace(output.data, concepts=tuple(kept)))
        shaped.append(output)
    return tuple(shaped)


__all__ = [
    "INPUT_FIELDS",
    "Media",
    "OutputCode",
    "OutputData",
    "OutputRegion",
    "PredictInput",
    "PredictOutput",
    "PredictRequest",
    "PredictResult",
    "RunnerWork",
    "WorkCodec",
    "apply_output_config",
]
