"""Named features: the specs a model declares (and a deployment checks rows against).

A spec says what one feature of a row holds: a number, one of some categories, a text, an image
(of a size and channel count, 0 = any) or an array (of a dtype and shape, -1 = any size on that
axis). Checking happens here, before any model runs, so a bad row fails with its row and feature
named rather than somewhere inside a runner.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pellucid.server.engine.errors import FailedPrecondition, InvalidArgument
from pellucid.server.engine.predict import Feature, Media, Tensor
from pellucid.server.engine.validation import MAX_NAME_LENGTH
from pellucid.server.records import FEATURE_TYPES, ConceptValue, FeatureSpec

MAX_FEATURES = 256
MAX_CATEGORIES = 10_000
MAX_ARRAY_RANK = 32


def check_feature_specs(specs: Sequence[FeatureSpec], field: str) -> tuple[FeatureSpec, ...]:
    """The specs, checked: unique non-empty names, a known type, what that type needs."""
    if len(specs) > MAX_FEATURES:
        raise InvalidArgument(f"{field} has {len(specs)} features: at most {MAX_FEATURES}", field=field)
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        where = f"{field}[{i}]"
        if not spec.name or len(spec.name) > MAX_NAME_LENGTH or not spec.name.isprintable():
            raise InvalidArgument(
                f"{where}.name {spec.name!r} must be 1-{MAX_NAME_LENGTH} printable characters", field=f"{where}.name"
            )
        if spec.name in seen:
            raise InvalidArgument(f"{where}.name {spec.name!r} is given twice", field=f"{where}.name")
        seen.add(spec.name)
        if spec.type not in FEATURE_TYPES:
            raise InvalidArgument(
                f"{where}.type {spec.type!r} of feature {spec.name!r}: use one of {', '.join(FEATURE_TYPES)}",
                field=f"{where}.type",
            )
        if spec.type == "categorical":
            if not spec.categories:
                raise InvalidArgument(
                    f"categorical feature {spec.name!r} needs its categories", field=f"{where}.categories"
                )
            if len(spec.categories) > MAX_CATEGORIES or len(set(spec.categories)) != len(spec.categories):
                raise InvalidArgument(
                    f"feature {spec.name!r}: categories must be distinct, at most {MAX_CATEGORIES}",
                    field=f"{where}.categories",
                )
        elif spec.categories:
            raise InvalidArgument(
                f"feature {spec.name!r} is {spec.type}: only categorical features take categories",
                field=f"{where}.categories",
            )
        if spec.type == "image":
            if min(spec.width, spec.height) < 0 or spec.channels not in (0, 1, 3, 4):
                raise InvalidArgument(
                    f"image feature {spec.name!r}: width and height >= 0 (0 = any), channels 0 (any), 1, 3 or 4",
                    field=where,
                )
        elif spec.width or spec.height or spec.channels:
            raise InvalidArgument(
                f"feature {spec.name!r} is {spec.type}: only image features take width, height, channels",
                field=where,
            )
        if spec.type == "array":
            if spec.dtype:
                try:
                    np.dtype(spec.dtype)
                except TypeError:
                    raise InvalidArgument(
                        f"array feature {spec.name!r}: unknown dtype {spec.dtype!r} (use a numpy name: float32, int64 ...)",
                        field=f"{where}.dtype",
                    ) from None
            if len(spec.shape) > MAX_ARRAY_RANK or any(d < -1 for d in spec.shape):
                raise InvalidArgument(
                    f"array feature {spec.name!r}: shape {list(spec.shape)} needs sizes >= 0 (-1 = any), "
                    f"at most {MAX_ARRAY_RANK} axes",
                    field=f"{where}.shape",
                )
        elif spec.dtype or spec.shape:
            raise InvalidArgument(
                f"feature {spec.name!r} is {spec.type}: only array features take dtype and shape", field=where
            )
    return tuple(specs)


MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # larger images are refused before they are decoded
PILLOW_HINT = "image features need Pillow on the server: pip install pillow"


@dataclass(frozen=True)
class RowError:
    """What is wrong with one feature of one row."""

    row: int
    feature: str
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}" + (f", feature {self.feature!r}" if self.feature else "")
        return f"{where}: {self.message}"


class RowsInvalid(InvalidArgument):
    """Rows that do not match a deployment's feature specs: each error names its row and feature."""

    MAX_LISTED = 5

    def __init__(self, errors: Sequence[RowError]) -> None:
        shown = "; ".join(str(e) for e in errors[: self.MAX_LISTED])
        more = f" (and {len(errors) - self.MAX_LISTED} more)" if len(errors) > self.MAX_LISTED else ""
        first = errors[0]
        field = f"rows[{first.row}]" + (f".{first.feature}" if first.feature else "")
        super().__init__(shown + more, reason="INVALID_ROW", field=field)
        self.errors = tuple(errors)


class _Bad(Exception):
    """One feature's fault, raised while a row is read and turned into a RowError."""


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _spec_words(spec: FeatureSpec) -> str:
    if spec.type == "numeric":
        return "a number"
    if spec.type == "categorical":
        return f"one of the categories {list(spec.categories)[:10]}"
    if spec.type == "text":
        return "a string"
    if spec.type == "image":
        return "an image as a data URI (data:image/png;base64,...)"
    return 'an array as {"shape": [...], "data": [...]} (data flat, row-major)'


def decode_data_uri(text: str) -> tuple[bytes, str]:
    """The bytes and MIME type of a `data:<mime>;base64,<data>` URI (plain base64 also taken)."""
    mime = ""
    payload = text
    if text.startswith("data:"):
        header, sep, payload = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise _Bad("an image must be a base64 data URI: data:image/png;base64,<data>")
        mime = header[len("data:") : -len(";base64")]
    try:
        return base64.b64decode(payload, validate=True), mime
    except (binascii.Error, ValueError):
        raise _Bad("the image is not valid base64") from None


def _json_feature(spec: FeatureSpec, value: Any) -> Feature:
    """One JSON value as the feature `spec` declares (the HTTP endpoint's rows)."""
    kind = spec.type
    if kind == "numeric":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad(f"expected {_spec_words(spec)}, got {_type_name(value)}")
        return Feature(spec.name, tensor=Tensor.from_numpy(np.float64(value)))
    if kind in ("categorical", "text"):
        if not isinstance(value, str):
            raise _Bad(f"expected {_spec_words(spec)}, got {_type_name(value)}")
        if kind == "text":
            return Feature(spec.name, text=value)
        return Feature(spec.name, concepts=(ConceptValue(value, value, 1.0),))
    if kind == "image":
        if not isinstance(value, str):
            raise _Bad(f"expected {_spec_words(spec)}, got {_type_name(value)}")
        data, mime = decode_data_uri(value)
        return Feature(spec.name, media=Media("image", data, "", mime))
    if not isinstance(value, Mapping) or "data" not in value or "shape" not in value:
        raise _Bad(f"expected {_spec_words(spec)}, got {_type_name(value)}")
    shape, data = value["shape"], value["data"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise _Bad(f"shape must be a list of integers, got {shape!r}"[:200])
    if not isinstance(data, list):
        raise _Bad(f"data must be a flat list of numbers, got {_type_name(data)}")
    if any(d < 0 for d in shape):
        raise _Bad(f"shape {shape} has a negative size")
    if len(data) != math.prod(shape):
        raise _Bad(f"data holds {len(data)} values but shape {shape} needs {math.prod(shape)}")
    try:
        array = np.asarray(data, dtype=np.dtype(spec.dtype) if spec.dtype else None)
    except (ValueError, TypeError, OverflowError):
        raise _Bad(f"data must be a flat list of {spec.dtype or 'numbers'}") from None
    if array.ndim != 1 and len(data):
        raise _Bad("data must be a flat list of numbers (row-major), not nested lists")
    if array.dtype.kind not in "biuf":
        raise _Bad(f"data must be a flat list of {spec.dtype or 'numbers'}")
    if not spec.dtype and array.dtype.kind == "f":
        array = array.astype(np.float64)
    return Feature(spec.name, tensor=Tensor.from_numpy(array.reshape(shape)))


def json_row_features(specs: Sequence[FeatureSpec], row: Mapping[str, Any], index: int) -> tuple[Feature, ...]:
    """A JSON row ({feature: value}) as features, read by the specs and then checked as
    `check_row` does; RowsInvalid naming the row and the feature at fault."""
    if not isinstance(row, Mapping):
        raise RowsInvalid([RowError(index, "", f"a row must be an object {{feature: value}}, got {_type_name(row)}")])
    errors = _unknown(specs, row.keys(), index)
    features = []
    for spec in specs:
        if spec.name not in row or row[spec.name] is None:
            if spec.required:
                errors.append(RowError(index, spec.name, f"missing: the deployment needs {_spec_words(spec)}"))
            continue
        try:
            features.append(_checked(spec, _json_feature(spec, row[spec.name])))
        except _Bad as exc:
            errors.append(RowError(index, spec.name, str(exc)))
    if errors:
        raise RowsInvalid(errors)
    return tuple(features)


def check_row(specs: Sequence[FeatureSpec], features: Sequence[Feature], index: int) -> tuple[Feature, ...]:
    """The row's features checked against the specs (images decoded and brought to the declared
    size and channels); RowsInvalid naming the row and feature at fault."""
    given = {f.name: f for f in features}
    errors = _unknown(specs, given.keys(), index)
    if len(given) != len(features):
        errors.append(RowError(index, "", "a feature is given twice"))
    checked = []
    for spec in specs:
        feature = given.get(spec.name)
        if feature is None:
            if spec.required:
                errors.append(RowError(index, spec.name, f"missing: the deployment needs {_spec_words(spec)}"))
            continue
        try:
            checked.append(_checked(spec, feature))
        except _Bad as exc:
            errors.append(RowError(index, spec.name, str(exc)))
    if errors:
        raise RowsInvalid(errors)
    return tuple(checked)


def check_feature(spec: FeatureSpec, feature: Feature, field: str, noun: str = "feature") -> Feature:
    """One feature as its spec wants it (an image decoded and brought to the declared size and
    channels), for callers outside rows (OIP tensors): InvalidArgument on `field` otherwise."""
    try:
        return _checked(spec, feature)
    except _Bad as exc:
        raise InvalidArgument(f"{noun} {spec.name!r}: {exc}", field=field) from None


def _unknown(specs: Sequence[FeatureSpec], names: Any, index: int) -> list[RowError]:
    known = {s.name for s in specs}
    return [
        RowError(index, name, f"unknown feature: this deployment takes {', '.join(sorted(known)) or 'none'}")
        for name in names
        if name not in known
    ]


def _checked(spec: FeatureSpec, feature: Feature) -> Feature:
    """The feature as `spec` wants it, or _Bad saying what is wrong."""
    kind = spec.type
    if kind == "numeric":
        value = _scalar(feature)
        if not math.isfinite(value):
            raise _Bad(f"expected a finite number, got {value}")
        return Feature(spec.name, tensor=Tensor.from_numpy(np.float64(value)))
    if kind == "text":
        if feature.text is None:
            raise _Bad("expected a text")
        return Feature(spec.name, text=feature.text)
    if kind == "categorical":
        if len(feature.concepts) != 1:
            raise _Bad(f"expected {_spec_words(spec)}")
        label = feature.concepts[0].id
        if label not in spec.categories:
            raise _Bad(f"{label!r} is not a category of this feature: use one of {list(spec.categories)[:20]}")
        return Feature(spec.name, concepts=(ConceptValue(label, label, 1.0),))
    if kind == "image":
        if feature.media is None or feature.media.kind != "image" or not feature.media.data:
            raise _Bad(f"expected {_spec_words(spec)}")
        return Feature(spec.name, media=_checked_image(spec, feature.media))
    if feature.tensor is None:
        raise _Bad(f"expected {_spec_words(spec)}")
    tensor = feature.tensor
    try:
        array = tensor.to_numpy()
    except ValueError as exc:
        raise _Bad(str(exc)) from None
    if spec.shape and (
        len(spec.shape) != array.ndim or any(want not in (-1, got) for want, got in zip(spec.shape, array.shape))
    ):
        raise _Bad(f"shape {list(array.shape)} does not match the declared {list(spec.shape)} (-1: any size)")
    if spec.dtype and tensor.dtype != np.dtype(spec.dtype).name:
        if array.dtype == object or not np.can_cast(array.dtype, np.dtype(spec.dtype), casting="same_kind"):
            raise _Bad(f"dtype {tensor.dtype} cannot be read as the declared {spec.dtype}")
        tensor = Tensor.from_numpy(array.astype(np.dtype(spec.dtype)))
    return Feature(spec.name, tensor=tensor)


def _scalar(feature: Feature) -> float:
    if feature.tensor is None:
        raise _Bad("expected a number")
    try:
        array = feature.tensor.to_numpy()
    except ValueError as exc:
        raise _Bad(str(exc)) from None
    if array.size != 1 or array.dtype.kind not in "biuf":
        raise _Bad(f"expected one number, got {array.size} values of {feature.tensor.dtype}")
    return float(array.reshape(()))


_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def _checked_image(spec: FeatureSpec, media: Media) -> Media:
    """The image decoded (so a broken one fails here), then resized to the declared width and
    height and converted to the declared channels if it differs (re-encoded as PNG then)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        raise FailedPrecondition(PILLOW_HINT) from None
    try:
        with Image.open(io.BytesIO(media.data)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise _Bad(f"the image has {image.width}x{image.height} pixels: at most {MAX_IMAGE_PIXELS}")
            image.load()
            size = (spec.width or image.width, spec.height or image.height)
            mode = _MODES.get(spec.channels, image.mode)
            if image.size == size and image.mode == mode:
                return Media("image", media.data, "", media.mime or Image.MIME.get(image.format or "", ""))
            converted = image.convert(mode) if image.mode != mode else image
            if converted.size != size:
                converted = converted.resize(size)
            buffer = io.BytesIO()
            converted.save(buffer, format="PNG")
    except _Bad:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        raise _Bad("the image does not decode: send a PNG, JPEG, GIF, BMP or WebP file") from None
    return Media("image", buffer.getvalue(), "", "image/png")


__all__ = [
    "MAX_FEATURES",
    "RowError",
    "RowsInvalid",
    "check_feature",
    "check_feature_specs",
    "check_row",
    "decode_data_uri",
    "json_row_features",
]
