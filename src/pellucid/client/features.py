"""Named features and n-dimensional arrays in protos, to and from numpy arrays and PIL images.

A runner serving a deployed model reads `item.data.features` and answers with features:
`feature_values(item.data.features)` gives {name: value} (numbers as floats, arrays as numpy
arrays, images as PIL images when Pillow is installed, else bytes; texts as str; categories as
{label: value}), and `features_from_values({...})` turns such a dict back into protos.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from pellucid import tensors
from pellucid.api import v1
from pellucid.errors import UserError

_SPEC_KEYS = ("name", "type", "categories", "width", "height", "channels", "dtype", "shape", "required")


def feature_spec_protos(specs: Iterable[v1.FeatureSpec | Mapping[str, Any]]) -> list[v1.FeatureSpec]:
    """FeatureSpec protos of protos or dicts ({"name": "Size", "type": "numeric"}; a dict's
    `required` defaults to True)."""
    protos = []
    for spec in specs:
        if isinstance(spec, v1.FeatureSpec):
            protos.append(spec)
            continue
        unknown = set(spec) - set(_SPEC_KEYS)
        if unknown:
            raise UserError(
                f"feature spec {dict(spec)!r}: unknown keys {sorted(unknown)} (use {', '.join(_SPEC_KEYS)})"
            )
        protos.append(v1.FeatureSpec(**{"required": True, **spec}))
    return protos


def ndarray_from_numpy(array: Any) -> v1.NDArray:
    """An NDArray proto of a numpy array (or anything np.asarray takes; strings become "bytes")."""
    dtype, shape, data = tensors.from_numpy(array)
    return v1.NDArray(dtype=dtype, shape=list(shape), data=data)


def ndarray_to_numpy(array: v1.NDArray) -> Any:
    """The numpy array of an NDArray proto; ValueError when its data does not fill its shape."""
    return tensors.to_numpy(array.dtype, tuple(array.shape), array.data)


def _is_pil_image(value: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is optional
        return False
    return isinstance(value, Image.Image)


def image_bytes(image: Any, fmt: str = "PNG") -> bytes:
    """The encoded bytes of a PIL image (PNG unless `fmt` says otherwise)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def feature_from_value(name: str, value: Any) -> v1.Feature:
    """A Feature proto of a Python value: str (text), a number or numpy array (array), a PIL
    image (image, as PNG), a dict {label: value} (categories), bytes (an encoded image)."""
    feature = v1.Feature(name=name)
    if isinstance(value, str):
        feature.text.raw = value
    elif isinstance(value, (bytes, bytearray, memoryview)):
        feature.image.base64 = bytes(value)
    elif isinstance(value, Mapping):
        feature.concepts.extend(v1.Concept(id=str(k), name=str(k), value=float(v)) for k, v in value.items())
    elif _is_pil_image(value):
        feature.image.base64 = image_bytes(value)
        feature.image.mime = "image/png"
    elif isinstance(value, (bool, int, float, np.generic, np.ndarray, list, tuple)):
        feature.array.CopyFrom(ndarray_from_numpy(value))
    else:
        raise UserError(
            f"feature {name!r}: cannot send a {type(value).__name__} (use str, a number, an array, an image)"
        )
    return feature


def features_from_values(values: Mapping[str, Any]) -> list[v1.Feature]:
    return [feature_from_value(name, value) for name, value in values.items()]


def feature_value(feature: v1.Feature) -> Any:
    """The Python value of a Feature proto: a 0-d array as a Python number, other arrays as numpy
    arrays, an image as a PIL image (bytes without Pillow), a text as str, categories as a dict."""
    if feature.HasField("array"):
        array = ndarray_to_numpy(feature.array)
        return array.item() if array.ndim == 0 else array
    if feature.HasField("image"):
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - Pillow is optional
            return feature.image.base64
        image = Image.open(io.BytesIO(feature.image.base64))
        image.load()
        return image
    if feature.HasField("text"):
        return feature.text.raw
    return {c.id: c.value for c in feature.concepts}


def feature_values(features: Iterable[v1.Feature]) -> dict[str, Any]:
    """{name: value} of Feature protos (see feature_value)."""
    return {f.name: feature_value(f) for f in features}


__all__ = [
    "feature_from_value",
    "feature_spec_protos",
    "feature_value",
    "feature_values",
    "features_from_values",
    "image_bytes",
    "ndarray_from_numpy",
    "ndarray_to_numpy",
]
