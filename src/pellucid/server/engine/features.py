"""Named features: the specs a model declares (and a deployment checks rows against).

A spec says what one feature of a row holds: a number, one of some categories, a text, an image
(of a size and channel count, 0 = any) or an array (of a dtype and shape, -1 = any size on that
axis). Checking happens here, before any model runs, so a bad row fails with its row and feature
named rather than somewhere inside a runner.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pellucid.server.engine.errors import InvalidArgument
from pellucid.server.engine.validation import MAX_NAME_LENGTH
from pellucid.server.records import FEATURE_TYPES, FeatureSpec

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


__all__ = ["MAX_FEATURES", "check_feature_specs"]
