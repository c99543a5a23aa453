"""n-dimensional arrays as raw bytes: the one encoding the server, runners, the Open Inference
Protocol and the deployment client share.

An array travels as a numpy dtype name ("float32", "int64", "bool", ...; "bytes" for byte
strings), a shape and its elements row-major little-endian; a "bytes" element is a uint32
little-endian length followed by that many bytes (the Open Inference Protocol's raw contents).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

BYTES_DTYPE = "bytes"


def shape_size(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def pack_bytes(items: Sequence[bytes | str]) -> bytes:
    """Byte strings as the raw contents of a "bytes" array (str as UTF-8)."""
    parts = []
    for item in items:
        raw = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def unpack_bytes(data: bytes) -> list[bytes]:
    """The elements of a "bytes" array's raw contents; ValueError when a length runs past the end."""
    items = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise ValueError(f"bytes data ends inside a length prefix at byte {offset}")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise ValueError(f"bytes element at byte {offset - 4} claims {length} bytes past the end")
        items.append(data[offset : offset + length])
        offset += length
    return items


def from_numpy(array: Any) -> tuple[str, tuple[int, ...], bytes]:
    """(dtype, shape, data) of a numpy array (or anything np.asarray takes); str, bytes and
    object elements make a "bytes" array (str as UTF-8)."""
    array = np.asarray(array)
    if array.dtype.kind in ("U", "S", "O"):
        return BYTES_DTYPE, tuple(array.shape), pack_bytes(array.ravel().tolist())
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return array.dtype.name, tuple(array.shape), little.tobytes()


def to_numpy(dtype: str, shape: Sequence[int], data: bytes) -> Any:
    """The numpy array of (dtype, shape, data) ("bytes": an object array of bytes); ValueError,
    saying what is wrong, when the dtype is unknown or the data does not fill the shape."""
    if any(d < 0 for d in shape):
        raise ValueError(f"shape {list(shape)} has a negative size")
    size = shape_size(shape)
    if dtype == BYTES_DTYPE:
        items = unpack_bytes(data)
        if len(items) != size:
            raise ValueError(f"shape {list(shape)} needs {size} elements, the data holds {len(items)}")
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array.reshape(tuple(shape))
    try:
        little = np.dtype(dtype).newbyteorder("<")
    except TypeError:
        raise ValueError(f"unknown dtype {dtype!r}: use a numpy dtype name such as float32") from None
    if little.kind not in "biufc":
        raise ValueError(f"dtype {dtype!r} is not numeric or bool: use {BYTES_DTYPE!r} for strings")
    if len(data) != size * little.itemsize:
        raise ValueError(
            f"shape {list(shape)} of {dtype} needs {size * little.itemsize} bytes, the data holds {len(data)}"
        )
    return np.frombuffer(data, dtype=little).reshape(tuple(shape)).astype(little.newbyteorder("="))


__all__ = ["BYTES_DTYPE", "from_numpy", "pack_bytes", "shape_size", "to_numpy", "unpack_bytes"]
