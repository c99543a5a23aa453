"""Translations shared by every servicer: Struct <-> dict, times, page requests."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from pellucid.server.engine.paging import PageRequest


def to_dict(struct: Struct) -> dict[str, Any]:
    return json_format.MessageToDict(struct) if struct.fields else {}


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
