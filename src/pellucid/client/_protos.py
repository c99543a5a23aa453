"""Builders of Input and Annotation messages shared by Inputs, Dataset and the loaders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message

from pellucid.api import v1
from pellucid.errors import UserError


def utf8(data: bytes | bytearray | memoryview) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"text must be UTF-8: {exc}") from None


def concepts(
    labels: Sequence[str] | None, label_ids: Sequence[str] | None = None, value: float = 1.0
) -> list[v1.Concept]:
    """Concepts for labels; the id is the label unless `label_ids` gives one per label."""
    labels = list(labels or [])
    if isinstance(labels, str):
        raise UserError("labels must be a list of strings, not one string")
    if label_ids is not None and len(label_ids) != len(labels):
        raise UserError(f"label_ids has {len(label_ids)} ids for {len(labels)} labels")
    ids = list(label_ids) if label_ids is not None else labels
    return [v1.Concept(id=str(i), name=str(n), value=value) for i, n in zip(ids, labels)]


def geo(geo_info: Sequence[float] | None) -> v1.Geo | None:
    if geo_info is None:
        return None
    if len(geo_info) != 2:
        raise UserError(f"geo_info must be [longitude, latitude], got {geo_info!r}")
    return v1.Geo(geo_point=v1.GeoPoint(longitude=float(geo_info[0]), latitude=float(geo_info[1])))


def make_input(
    input_id: str = "",
    *,
    image: v1.Image | bytes | None = None,
    video: v1.Video | bytes | None = None,
    audio: v1.Audio | bytes | None = None,
    text: v1.Text | None = None,
    dataset_id: str | None = None,
    labels: Sequence[str] | None = None,
    label_ids: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    geo_info: Sequence[float] | None = None,
    regions: list[v1.Region] | None = None,
) -> v1.Input:
    """One Input. Media may be given as a message or, cheaper for bulk uploads, as raw bytes."""
    if metadata is not None and not isinstance(metadata, dict):
        raise UserError(f"metadata must be a dict, got {type(metadata).__name__}")
    message = v1.Input(id=input_id or "", dataset_ids=[dataset_id] if dataset_id else [])
    data = message.data  # filled in place: building a Data and then an Input would copy the media twice
    for field, given in (("image", image), ("video", video), ("audio", audio)):
        if isinstance(given, (bytes, bytearray)):
            getattr(data, field).base64 = bytes(given)
        elif given is not None:
            getattr(data, field).CopyFrom(given)
    if text is not None:
        data.text.CopyFrom(text)
    if labels:
        data.concepts.extend(concepts(labels, label_ids))
    place = geo(geo_info)
    if place is not None:
        data.geo.CopyFrom(place)
    if regions:
        data.regions.extend(regions)
    if metadata:
        data.metadata.update(metadata)
    return message


def bbox_region(label: str, bbox: Sequence[float], label_id: str | None = None, region_id: str = "") -> v1.Region:
    """A box given as [xmin, ymin, xmax, ymax], normalised to [0, 1]."""
    if len(bbox) != 4:
        raise UserError(f"bbox must be [xmin, ymin, xmax, ymax], got {bbox!r}")
    xmin, ymin, xmax, ymax = (float(v) for v in bbox)
    box = v1.BoundingBox(top_row=ymin, left_col=xmin, bottom_row=ymax, right_col=xmax)
    return v1.Region(
        id=region_id,
        region_info=v1.RegionInfo(bounding_box=box),
        data=v1.Data(concepts=concepts([label], [label_id] if label_id else None)),
    )


def polygon_region(
    label: str, points: Sequence[Sequence[float]], label_id: str | None = None, region_id: str = ""
) -> v1.Region:
    """A polygon given as [[x, y], ...], normalised to [0, 1]."""
    try:
        polygon = v1.Polygon(points=[v1.Point(row=float(y), col=float(x)) for x, y in points])
    except (TypeError, ValueError):
        raise UserError(f"a polygon is a list of [x, y] points, got {points!r}") from None
    return v1.Region(
        id=region_id,
        region_info=v1.RegionInfo(polygon=polygon),
        data=v1.Data(concepts=concepts([label], [label_id] if label_id else None)),
    )


def encode_with_repeated(header: Message, field: str, items: Sequence[bytes]) -> bytes:
    """The wire format of `header` with `items` (each a serialized message) appended to its
    repeated message `field`: what `header.field.extend(...)` then serializing would give,
    without copying every item into the header first (protobuf parses concatenated
    fields as one message, and a repeated field's elements as a run of its tag)."""
    number = header.DESCRIPTOR.fields_by_name[field].number
    tag = _varint((number << 3) | 2)  # wire type 2: length-delimited
    parts = [header.SerializeToString()]
    for item in items:
        parts += (tag, _varint(len(item)), item)
    return b"".join(parts)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def concept_batches(
    call: Any,
    method: str,
    request_type: type,
    user_id: str,
    app_id: str,
    concept_ids: Sequence[str],
    names: Sequence[str],
) -> list[v1.Concept]:
    """Send (id, name) pairs 128 at a time to CreateConcepts or PatchConcepts; the concepts
    that succeeded, or PartialFailure naming those that did not (the others are applied)."""
    from pellucid.errors import ItemFailure, PartialFailure, error_class

    done: list[v1.Concept] = []
    failed: list[ItemFailure] = []
    for start in range(0, len(concept_ids), 128):
        chunk = [v1.Concept(id=i, name=n) for i, n in zip(concept_ids[start : start + 128], names[start : start + 128])]
        response = call(v1.ConceptServiceStub, method, request_type(user_id=user_id, app_id=app_id, concepts=chunk))
        for offset, (concept, status) in enumerate(zip(response.concepts, response.statuses)):
            if status.code == v1.Status.OK:
                done.append(concept)
            else:
                failed.append(
                    ItemFailure(start + offset, concept.id, error_class(status.code)(status.message, method=method))
                )
    if failed:
        raise PartialFailure("concepts", done, failed)
    return done
