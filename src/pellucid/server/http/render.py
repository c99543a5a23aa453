"""Output features as JSON values: numbers as numbers, categories as {label: probability},
images as data URIs, texts as strings, arrays as {"shape": [...], "data": [...]} (flat)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from pellucid.server.engine.predict import Feature
from pellucid.server.records import FeatureSpec
from pellucid.tensors import BYTES_DTYPE


def feature_json(feature: Feature) -> Any:
    if feature.tensor is not None:
        tensor = feature.tensor
        if tensor.dtype == BYTES_DTYPE:
            items = [_text_or_base64(b) for b in tensor.to_numpy().ravel().tolist()]
            return items[0] if not tensor.shape else {"shape": list(tensor.shape), "data": items}
        array = tensor.to_numpy()
        data = array.ravel().tolist()
        if array.dtype.kind == "f" and not np.isfinite(array).all():  # JSON has no NaN or infinity: null
            data = [x if isinstance(x, float) and np.isfinite(x) else None for x in data]
        if array.ndim == 0:
            return data[0]
        return {"shape": list(array.shape), "data": data}
    if feature.media is not None:
        mime = feature.media.mime or "image/png"
        return f"data:{mime};base64,{base64.b64encode(feature.media.data).decode('ascii')}"
    if feature.text is not None:
        return feature.text
    return {c.id: _float32(c.value) for c in feature.concepts}


def _float32(value: float) -> float:
    """A probability carried as float32 (as concepts are), written as its shortest decimal: 0.9, not 0.8999999761581421."""
    return float(str(np.float32(value)))


def _text_or_base64(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii")


def row_json(features: Sequence[Feature]) -> dict[str, Any]:
    return {f.name: feature_json(f) for f in features}


def spec_json(spec: FeatureSpec) -> dict[str, Any]:
    """A spec as the deployment's description shows it (only what its type uses)."""
    described: dict[str, Any] = {"name": spec.name, "type": spec.type, "required": spec.required}
    if spec.type == "categorical":
        described["categories"] = list(spec.categories)
    if spec.type == "image":
        described.update(width=spec.width, height=spec.height, channels=spec.channels)
    if spec.type == "array":
        described.update(dtype=spec.dtype, shape=list(spec.shape))
    return described
