"""Translations shared by every servicer: Struct <-> dict, times, page requests."""

from __future__ import annotations

from typing import Any

from google.protobuf.struct_pb2 import Struct, Value
from google.protobuf.timestamp_pb2 import Timestamp

from pellucid.server.engine.paging import PageRequest


def to_dict(struct: Struct) -> dict[str, Any]:
    """A Struct as plain Python values, whatever it holds: the engine judges NaN, Infinity and depth.

    (json_format.MessageToDict raises on NaN and Infinity, which would fail a whole batch
    for one bad item, with no word on which field.)
    """
    return {key: _plain(value) for key, value in struct.fields.items()}


def _plain(value: Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return to_dict(value.struct_value)
    if kind == "list_value":
        return [_plain(item) for item in value.list_value.values]
    if kind is None or kind == "null_value":
        return None
    return getattr(value, kind)


def to_struct(data: dict[str, Any]) -> Struct:
    struct = Struct()
    struct.update(data)
    return struct


def to_timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def page_request(request: Any) -> PageRequest:
    """Every List request carries page_size, page_token and page under those names."""
    return PageRequest(page_size=request.page_size, page_token=request.page_token, page=request.page)
