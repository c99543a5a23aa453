"""Checks on free-text fields and metadata shared by every resource."""

from __future__ import annotations

import json
from typing import Any

from pellucid.server.engine.errors import InvalidArgument

MAX_NAME_LENGTH = 256
MAX_DESCRIPTION_LENGTH = 4096
MAX_METADATA_BYTES = 64 * 1024
MAX_BATCH = 128


def check_text(value: str, field: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidArgument(f"{field} is {len(value)} characters long: the limit is {limit}", field=field)
    if "\x00" in value:
        raise InvalidArgument(f"{field} contains a NUL character", field=field)
    return value


def check_metadata(metadata: dict[str, Any], field: str = "metadata") -> dict[str, Any]:
    if not metadata:
        return {}
    size = len(json.dumps(metadata, separators=(",", ":")))
    if size > MAX_METADATA_BYTES:
        raise InvalidArgument(f"{field} is {size} bytes as JSON: the limit is {MAX_METADATA_BYTES}", field=field)
    return metadata


def check_batch(count: int, field: str) -> None:
    if count == 0:
        raise InvalidArgument(f"{field} is empty: send 1-{MAX_BATCH} items", field=field)
    if count > MAX_BATCH:
        raise InvalidArgument(
            f"{field} has {count} items: send at most {MAX_BATCH} per call (the SDK splits larger lists for you)",
            reason="BATCH_TOO_LARGE",
            field=field,
        )
