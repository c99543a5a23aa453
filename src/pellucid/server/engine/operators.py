"""Built-in operator models: thresholders, image-crop, random-sample and the built-in embedders.

They run in the server (`LocalModelType`s, registered on every engine by `register_operators`):
a workflow can put one between two runner-served models, or an app can use one alone, with no
runner process. Each declares its params; a version's params are checked when it is created
(`check_version_params`), a request's inference params at predict.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import operator
import random
from collections.abc import Callable, Sequence
from typing import Any

from pellucid.server.embedders import MODELS_EXTRA_HINT, Embedder, EmbedderUnavailable, builtin_embedder
from pellucid.server.engine.errors import EngineError, InvalidArgument, ResourceExhausted
from pellucid.server.engine.fetch import UrlFetcher
from pellucid.server.engine.local_models import LocalModels, LocalModelType, ParamInfo, check_params
from pellucid.server.engine.predict import (
    Media,
    OutputCode,
    OutputData,
    OutputRegion,
    PredictInput,
    PredictOutput,
)
from pellucid.server.records import ConceptValue, ModelRecord, ModelVersionRecord

# how a thresholder compares a concept's value with its threshold (the reference platform's names)
THRESHOLD_TYPES: dict[str, Callable[[float, float], bool]] = {
    "GREATER_THAN": operator.gt,
    "GREATER_THAN_OR_EQUAL": operator.ge,
    "LESS_THAN": operator.lt,
    "LESS_THAN_OR_EQUAL": operator.le,
    "EQUAL": operator.eq,
}
CROP_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
MAX_CROP_PIXELS = 50_000_000  # ~150 MB decoded as RGB
# One input's crops, all held in memory at once: a detector (a user's runner) may return any number
# of boxes, and 10,000 boxes of a whole photo would be 10,000 copies of it.
MAX_CROP_REGIONS = 1000
# One call's crops: every input's are held until the call answers, and a workflow passes up to
# MAX_BATCH inputs in one call, so the per-input limits alone would allow 128 times as much.
MAX_CALL_CROP_PIXELS = 100_000_000
MAX_CALL_CROP_REGIONS = 5000
PILLOW_HINT = "image-crop needs Pillow: install the models extra on the server (pip install 'pellucid[models]')"


class Operator(LocalModelType):
    """A built-in type whose params are all declared: unknown keys and bad values are refused."""

    def check_version_params(self, params: dict[str, Any], field: str) -> dict[str, Any]:
        """A version's params, checked when it is created (before anything is stored)."""
        return check_params(self.params, params, field)

    def settings(self, version: ModelVersionRecord, params: dict[str, Any]) -> dict[str, Any]:
        """Every declared param: the defaults, overridden by the (checked) version and request params."""
        return {**{p.name: p.default for p in self.params}, **check_params(self.params, params, "inference_params")}


def _failed(given: PredictInput, code: OutputCode, message: str) -> PredictOutput:
    return PredictOutput(given.id, code, message)


# thresholders


class _Thresholds:
    """Which concepts pass: value OP threshold, the threshold per concept from the
    `concept_thresholds` param, else the version's concepts' values, else `threshold`."""

    def __init__(self, version: ModelVersionRecord, settings: dict[str, Any]) -> None:
        self._compare = THRESHOLD_TYPES[settings["concept_threshold_type"]]
        self._default = float(settings["threshold"])
        self._per_concept = {c.id: c.value for c in version.concepts}
        self._per_concept.update(settings["concept_thresholds"])

    def keep(self, concepts: Sequence[ConceptValue]) -> tuple[ConceptValue, ...]:
        return tuple(c for c in concepts if self._compare(c.value, self._per_concept.get(c.id, self._default)))


_THRESHOLD_PARAMS = (
    ParamInfo(
        "concept_threshold_type",
        "choice",
        "GREATER_THAN",
        "how a concept's value is compared with its threshold: the concept is kept when value OP threshold",
        choices=tuple(THRESHOLD_TYPES),
    ),
    ParamInfo(
        "threshold", "float", 0.5, "the threshold of concepts without one of their own", minimum=0.0, maximum=1.0
    ),
    ParamInfo(
        "concept_thresholds",
        "dict[str,float]",
        {},
        "per-concept thresholds, {concept_id: threshold}; the version's concepts' values count too "
        "(this param wins where both name a concept)",
        minimum=0.0,
        maximum=1.0,
    ),
)


class ConceptThresholder(Operator):
    """Also each region's concepts: after a node that ran once per cropped region, the concepts are
    the regions' (every region is kept, with its box; region-thresholder drops those left empty)."""

    type_id = "concept-thresholder"
    description = (
        "keeps the concepts of its input, and of each of its regions, whose values pass a threshold "
        "(per concept, with an operator)"
    )
    reads = ("concepts", "regions")
    makes = ("concepts", "regions")
    params = _THRESHOLD_PARAMS

    def predict(
        self, model: ModelRecord, version: ModelVersionRecord, inputs: Sequence[PredictInput], params: dict[str, Any]
    ) -> list[PredictOutput]:
        thresholds = _Thresholds(version, self.settings(version, params))
        return [
            PredictOutput(
                given.id,
                data=OutputData(
                    concepts=thresholds.keep(given.concepts),
                    regions=tuple(dataclasses.replace(r, concepts=thresholds.keep(r.concepts)) for r in given.regions),
                ),
            )
            for given in inputs
        ]


class RegionThresholder(Operator):
    type_id = "region-thresholder"
    description = "keeps each region's concepts whose values pass a threshold, and the regions with a concept left"
    reads = ("regions",)
    makes = ("regions",)
    params = _THRESHOLD_PARAMS

    def predict(
        self, model: ModelRecord, version: ModelVersionRecord, inputs: Sequence[PredictInput], params: dict[str, Any]
    ) -> list[PredictOutput]:
        thresholds = _Thresholds(version, self.settings(version, params))
        outputs = []
        for given in inputs:
            kept = []
            for region in given.regions:
                concepts = thresholds.keep(region.concepts)
                if concepts:
                    kept.append(dataclasses.replace(region, concepts=concepts))
            outputs.append(PredictOutput(given.id, data=OutputData(regions=tuple(kept))))
        return outputs


# image-crop


def _image_bytes(given: PredictInput, fetcher: UrlFetcher, field: str) -> bytes:
    """The input's image: its bytes, or fetched from its URL (private addresses as the server allows)."""
    for media in given.media:
        if media.kind == "image":
            if media.data:
                return media.data
            if media.url:
                return fetcher.fetch(media.url, f"{field}.image.url")
    raise InvalidArgument(f"{field} has no image to crop: send the image with its regions", field=field)


def _check_box(region: OutputRegion, field: str) -> tuple[float, float, float, float]:
    if region.bbox is None:
        raise InvalidArgument(f"{field} has no bounding box: image-crop needs one per region", field=field)
    top, left, bottom, right = region.bbox
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in region.bbox) or top >= bottom or left >= right:
        raise InvalidArgument(
            f"{field} bounding box (top {top:g}, left {left:g}, bottom {bottom:g}, right {right:g}) is not a box: "
            "use fractions of the image in [0, 1] with top < bottom and left < right",
            field=field,
        )
    return top, left, bottom, right


_PIXEL_SLACK = 1e-3


def crop_box(
    bbox: tuple[float, float, float, float], width: int, height: int, margin: float
) -> tuple[int, int, int, int]:
    """The pixel box (left, upper, right, lower) of a fractional bbox, grown by `margin` of its
    size on each side, clamped to the image, at least one pixel."""
    top, left, bottom, right = bbox
    grow_y, grow_x = (bottom - top) * margin, (right - left) * margin
    # every pixel the box touches; boxes arrive as float32, so a hair over an edge is on it
    x0 = max(0, math.floor((left - grow_x) * width + _PIXEL_SLACK))
    y0 = max(0, math.floor((top - grow_y) * height + _PIXEL_SLACK))
    x1 = min(width, max(x0 + 1, math.ceil((right + grow_x) * width - _PIXEL_SLACK)))
    y1 = min(height, max(y0 + 1, math.ceil((bottom + grow_y) * height - _PIXEL_SLACK)))
    return x0, y0, x1, y1


@dataclasses.dataclass
class _CallBudget:
    """What the inputs before this one have cropped in the call."""

    pixels: int = 0
    regions: int = 0

    def spend(self, field: str, regions: int, pixels: int) -> None:
        """Count one input's crops; ResourceExhausted (that input fails) when the call would pass its limits."""
        if self.regions + regions > MAX_CALL_CROP_REGIONS or self.pixels + pixels > MAX_CALL_CROP_PIXELS:
            raise ResourceExhausted(
                f"{field}: its {regions} crops ({pixels / 1e6:.1f} million pixels) would take this call past "
                f"image-crop's limit of {MAX_CALL_CROP_REGIONS} crops and {MAX_CALL_CROP_PIXELS // 1_000_000} "
                f"million pixels per call (the inputs before it made {self.regions} crops, "
                f"{self.pixels / 1e6:.1f} million pixels): send fewer inputs per call, or put a region-thresholder "
                "before it",
                field=f"{field}.regions",
            )
        self.regions += regions
        self.pixels += pixels


class ImageCrop(Operator):
    type_id = "image-crop"
    description = "one cropped image per region of its input (boxes as fractions of the image)"
    reads = ("regions",)
    makes = ("regions", "image")
    params = (
        ParamInfo(
            "margin",
            "float",
            0.0,
            "grow each box by this fraction of its height and width on every side (clamped to the image)",
            minimum=0.0,
            maximum=1.0,
        ),
        ParamInfo("jpeg_quality", "int", 90, "the quality of JPEG crops", minimum=1, maximum=95),
    )

    def __init__(self, fetcher: UrlFetcher) -> None:
        self._fetcher = fetcher

    def predict(
        self, model: ModelRecord, version: ModelVersionRecord, inputs: Sequence[PredictInput], params: dict[str, Any]
    ) -> list[PredictOutput]:
        settings = self.settings(version, params)
        try:
            from PIL import Image
        except ImportError:
            return [_failed(i, OutputCode.FAILED_PRECONDITION, PILLOW_HINT) for i in inputs]
        outputs = []
        budget = _CallBudget()
        for n, given in enumerate(inputs):
            try:
                outputs.append(self._crop(Image, given, f"inputs[{n}]", settings, budget))
            except ResourceExhausted as exc:
                outputs.append(_failed(given, OutputCode.RESOURCE_EXHAUSTED, str(exc)))
            except EngineError as exc:
                outputs.append(_failed(given, OutputCode.INVALID_ARGUMENT, str(exc)))
        return outputs

    def _crop(
        self, image_module: Any, given: PredictInput, field: str, settings: dict[str, Any], budget: _CallBudget
    ) -> PredictOutput:
        if len(given.regions) > MAX_CROP_REGIONS:
            raise InvalidArgument(
                f"{field} has {len(given.regions)} regions: image-crop crops at most {MAX_CROP_REGIONS} per input "
                "(put a region-thresholder before it to keep the likely ones)",
                field=f"{field}.regions",
            )
        boxes = [_check_box(r, f"{field}.regions[{k}]") for k, r in enumerate(given.regions)]
        if not boxes:
            return PredictOutput(given.id)  # nothing found upstream: nothing to crop
        data = _image_bytes(given, self._fetcher, field)
        try:
            # only the formats the server accepts as images: Pillow's others (EPS runs Ghostscript) are refused
            image = image_module.open(io.BytesIO(data), formats=CROP_FORMATS)
            if image.width * image.height > MAX_CROP_PIXELS:
                raise InvalidArgument(
                    f"{field} image is {image.width} x {image.height}: image-crop takes at most "
                    f"{MAX_CROP_PIXELS // 1_000_000} million pixels",
                    field=f"{field}.image",
                )
            image.load()
        except (OSError, ValueError, image_module.DecompressionBombError) as exc:
            raise InvalidArgument(
                f"{field} image cannot be decoded as {', '.join(CROP_FORMATS)}: {exc}", field=f"{field}.image"
            ) from None
        pixel_boxes = [crop_box(box, image.width, image.height, settings["margin"]) for box in boxes]
        cropped = sum((right - left) * (lower - upper) for left, upper, right, lower in pixel_boxes)
        if cropped > MAX_CROP_PIXELS:
            raise InvalidArgument(
                f"{field}: the crops of its {len(boxes)} regions hold {cropped / 1e6:.0f} million pixels: image-crop "
                f"makes at most {MAX_CROP_PIXELS // 1_000_000} million per input (put a region-thresholder before "
                "it, or send a smaller image)",
                field=f"{field}.regions",
            )
        budget.spend(field, len(pixel_boxes), cropped)
        keep_png = image.format != "JPEG"  # PNG stays PNG; other formats become PNG (lossless)
        regions = []
        for region, pixel_box in zip(given.regions, pixel_boxes, strict=True):
            crop = image.crop(pixel_box)
            encoded = io.BytesIO()
            if keep_png:
                crop.save(encoded, "PNG")
            else:
                crop.save(encoded, "JPEG", quality=settings["jpeg_quality"])
            mime = "image/png" if keep_png else "image/jpeg"
            regions.append(dataclasses.replace(region, image=Media("image", encoded.getvalue(), "", mime)))
        return PredictOutput(given.id, data=OutputData(regions=tuple(regions)))


# random-sample


class RandomSample(Operator):
    type_id = "random-sample"
    description = "passes each input through with probability keep_fraction; the others produce no data"
    reads = ("image", "video", "audio", "text", "embeddings", "concepts", "regions")
    makes = ("image", "video", "audio", "text", "embeddings", "concepts", "regions")
    params = (
        ParamInfo("keep_fraction", "float", 0.5, "the probability of keeping an input", minimum=0.0, maximum=1.0),
        ParamInfo(
            "seed",
            "int",
            -1,
            "with a seed >= 0, whether an input is kept depends only on the seed and the input's id "
            "(or content): the same call keeps the same inputs; -1 draws anew each time",
            minimum=-1,
            maximum=2**63 - 1,
        ),
    )

    def predict(
        self, model: ModelRecord, version: ModelVersionRecord, inputs: Sequence[PredictInput], params: dict[str, Any]
    ) -> list[PredictOutput]:
        settings = self.settings(version, params)
        fraction, seed = settings["keep_fraction"], settings["seed"]
        fresh = random.Random()
        outputs = []
        for given in inputs:
            draw = fresh.random() if seed < 0 else _seeded_draw(seed, given)
            if draw < fraction:
                data = OutputData(
                    concepts=given.concepts,
                    text=next((m.data.decode("utf-8", "replace") for m in given.media if m.kind == "text"), ""),
                    metadata=given.metadata,
                    embeddings=given.embeddings,
                    regions=given.regions,
                    media=tuple(m for m in given.media if m.kind != "text"),
                )
                outputs.append(PredictOutput(given.id, data=data))
            else:
                outputs.append(PredictOutput(given.id))
        return outputs


def _seeded_draw(seed: int, given: PredictInput) -> float:
    """A number in [0, 1) fixed by the seed and the input (its id, else its content)."""
    digest = hashlib.sha256(f"{seed}\0{given.id}\0".encode())
    if not given.id:
        for media in given.media:
            digest.update(media.kind.encode() + b"\0" + media.data + media.url.encode())
    return int.from_bytes(digest.digest()[:8], "big") / 2**64


# built-in embedders


class BuiltinEmbedderModel(Operator):
    """The search issue's built-in embedder as a model: one vector per input."""

    params = ()

    def __init__(
        self, modality: str, fetcher: UrlFetcher, loader: Callable[[str], Embedder] = builtin_embedder
    ) -> None:
        self.modality = modality
        self.type_id = f"{modality}-embedder"
        self.description = f"the built-in {modality} embedder (offline, in the server): one vector per input"
        self.reads = (modality,)
        self.makes = ("embeddings",)
        self._fetcher = fetcher
        self._loader = loader

    def predict(
        self, model: ModelRecord, version: ModelVersionRecord, inputs: Sequence[PredictInput], params: dict[str, Any]
    ) -> list[PredictOutput]:
        self.settings(version, params)
        try:
            embedder = self._loader(self.modality)
        except EmbedderUnavailable as exc:
            why = f"the built-in {self.modality} embedder is not installed on this server ({exc})"
            if "pellucid[models]" not in why:
                why += f": {MODELS_EXTRA_HINT}"
            return [_failed(i, OutputCode.FAILED_PRECONDITION, why) for i in inputs]
        items: list[bytes] = []
        failures: dict[int, str] = {}
        for n, given in enumerate(inputs):
            try:
                items.append(self._content(given, f"inputs[{n}]"))
            except EngineError as exc:
                items.append(b"")
                failures[n] = str(exc)
        wanted = [n for n in range(len(inputs)) if n not in failures]
        batch = embedder.embed([items[n] for n in wanted]) if wanted else None
        outputs = []
        for n, given in enumerate(inputs):
            if n in failures:
                outputs.append(_failed(given, OutputCode.INVALID_ARGUMENT, failures[n]))
                continue
            assert batch is not None
            row = wanted.index(n)
            if row in batch.errors:
                outputs.append(_failed(given, OutputCode.INVALID_ARGUMENT, f"inputs[{n}]: {batch.errors[row]}"))
            else:
                vector = tuple(float(v) for v in batch.vectors[row])
                outputs.append(PredictOutput(given.id, data=OutputData(embeddings=(vector,))))
        return outputs

    def _content(self, given: PredictInput, field: str) -> bytes:
        for media in given.media:
            if media.kind == self.modality:
                if media.data:
                    return media.data
                if media.url:
                    return self._fetcher.fetch(media.url, f"{field}.{self.modality}.url")
        raise InvalidArgument(
            f"{field} has no {self.modality}: the {self.type_id} reads {self.modality} only", field=field
        )


def register_operators(local: LocalModels, fetcher: UrlFetcher) -> None:
    """Register every built-in operator on one engine's local model types."""
    for model_type in (
        ConceptThresholder(),
        RegionThresholder(),
        ImageCrop(fetcher),
        RandomSample(),
        BuiltinEmbedderModel("text", fetcher),
        BuiltinEmbedderModel("image", fetcher),
    ):
        local.register(model_type)


__all__ = [
    "THRESHOLD_TYPES",
    "BuiltinEmbedderModel",
    "ConceptThresholder",
    "ImageCrop",
    "Operator",
    "RandomSample",
    "RegionThresholder",
    "crop_box",
    "register_operators",
]
