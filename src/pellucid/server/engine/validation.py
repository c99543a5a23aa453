"""Checks on free-text fields and metadata shared by every resource."""

from __future__ import annotations

import json
import math
from typing import Any

from pellucid.server.engine.errors import InvalidArgument

MAX_NAME_LENGTH = 256
MAX_DESCRIPTION_LENGTH = 4096
MAX_METADATA_BYTES = 64 * 1024
MAX_BATCH = 128
# Metadata and params nest at most this many objects/lists deep. protobuf refuses to decode a
# Struct nested about 33 objects deep; staying well below that leaves room for the envelopes
# (a predict's inputs travel to runners inside a WorkItem inside a ServerMessage).
MAX_METADATA_DEPTH = 24


def check_text(value: str, field: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidArgument(f"{field} is {len(value)} characters long: the limit is {limit}", field=field)
    if "\x00" in value:
        raise InvalidArgument(f"{field} contains a NUL character", field=field)
    return value


def check_metadata(metadata: dict[str, Any], field: str = "metadata") -> dict[str, Any]:
    """JSON-like values only: finite numbers, at most MAX_METADATA_DEPTH deep, at most MAX_METADATA_BYTES."""
    if not metadata:
        return {}
    _check_json_value(metadata, field, 1)
    size = len(json.dumps(metadata, separators=(",", ":")))
    if size > MAX_METADATA_BYTES:
        raise InvalidArgument(f"{field} is {size} bytes as JSON: the limit is {MAX_METADATA_BYTES}", field=field)
    return metadata


def _check_json_value(value: Any, path: str, depth: int) -> None:
    """Refuse what JSON cannot hold (NaN, Infinity, other types) and nesting past the limit, naming the spot."""
    if isinstance(value, dict | list):
        if depth > MAX_METADATA_DEPTH:
            raise InvalidArgument(
                f"{path} nests objects and lists more than {MAX_METADATA_DEPTH} levels deep: flatten it",
                reason="METADATA_TOO_DEEP",
                field=path,
            )
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidArgument(f"{path} has a key that is not a string: {key!r}", field=path)
                if "\x00" in key:  # PostgreSQL's JSONB (metadata filters) cannot hold U+0000
                    raise InvalidArgument(f"{path} has a key with a NUL character: {key!r}", field=path)
                _check_json_value(item, _key_path(path, key), depth + 1)
        else:
            for i, item in enumerate(value):
                _check_json_value(item, f"{path}[{i}]", depth + 1)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(
                f"{path} is {value}: numbers must be finite (JSON has no NaN or Infinity); send null or a string",
                reason="NON_FINITE_NUMBER",
                field=path,
            )
    elif isinstance(value, str) and "\x00" in value:
        raise InvalidArgument(f"{path} contains a NUL character: remove it", field=path)
    elif value is not None and not isinstance(value, str | int):
        raise InvalidArgument(
            f"{path} is a {type(value).__name__}: use a string, number, bool, null, list or object", field=path
        )


def _key_path(path: str, key: str) -> str:
    """`path.key` for plain keys, `path["odd key"]` (shortened) for the rest."""
    if key.isidentifier() and len(key) <= 64:
        return f"{path}.{key}"
    quoted = json.dumps(key)
    if len(quoted) > 66:
        quoted = quoted[:62] + '..."'
    return f"{path}[{quoted}]"


def check_batch(count: int, field: str) -> None:
    if count == 0:
        raise InvalidArgument(f"{field} is empty: send 1-{MAX_BATCH} items", field=field)
    if count > MAX_BATCH:
        raise InvalidArgument(
            f"{field} has {count} items: send at most {MAX_BATCH} per call (the SDK splits larger lists for you)",
            reason="BATCH_TOO_LARGE",
            field=field,
        )
