"""Turns dataset loader items into Input messages (with their labels, boxes and polygons).

This is client code: `pellucid.datasets` only describes data (the loader protocol and the
feature types) and imports nothing from the client, which reads it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pellucid.api import v1
from pellucid.client import _protos
from pellucid.client.uploads import UploadItem
from pellucid.datasets.features import (
    FEATURES_BY_TASK,
    MultiModalFeatures,
    TextFeatures,
    VisualCaptioningFeatures,
    VisualClassificationFeatures,
    VisualDetectionFeatures,
    VisualSegmentationFeatures,
)
from pellucid.datasets.loaders import CsvLoader, CsvRow
from pellucid.errors import UserError

# every feature type a loader may return, whatever its task
ALL_FEATURES = (
    VisualClassificationFeatures,
    VisualDetectionFeatures,
    VisualSegmentationFeatures,
    VisualCaptioningFeatures,
    TextFeatures,
    MultiModalFeatures,
)

Shape = TypeVar("Shape")


def _image(
    features: VisualClassificationFeatures
    | VisualDetectionFeatures
    | VisualSegmentationFeatures
    | VisualCaptioningFeatures
    | MultiModalFeatures,
) -> v1.Image | bytes | None:
    given = [x for x in (features.image_path, features.image_bytes, features.image_url) if x]
    if len(given) > 1:
        raise UserError("give one of image_path, image_bytes or image_url")
    if features.image_path:
        return Path(features.image_path).read_bytes()
    if features.image_bytes:
        return bytes(features.image_bytes)
    if features.image_url:
        return v1.Image(url=features.image_url)
    return None


def features_to_input(features: object, task: str, dataset_id: str) -> v1.Input:
    """The Input for one loader item; raises UserError (or OSError) for that item alone."""
    allowed = FEATURES_BY_TASK.get(task)
    if allowed is None:
        raise UserError(f"loader task {task!r} is not one of {', '.join(FEATURES_BY_TASK)}")
    if not isinstance(features, allowed) or not isinstance(features, ALL_FEATURES):
        raise UserError(
            f"a {task} loader returned {type(features).__name__}; expected {' or '.join(a.__name__ for a in allowed)}"
        )
    input_id, metadata, geo_info = features.id or "", features.metadata, features.geo_info
    if isinstance(features, TextFeatures):
        if not features.text:
            raise UserError("TextFeatures.text is empty")
        return _protos.make_input(
            input_id,
            text=v1.Text(raw=features.text),
            labels=features.labels,
            label_ids=features.label_ids,
            dataset_id=dataset_id,
            metadata=metadata,
            geo_info=geo_info,
        )
    image = _image(features)
    if isinstance(features, MultiModalFeatures):
        if image is None and not features.text:
            raise UserError("MultiModalFeatures needs text, an image or both")
        return _protos.make_input(
            input_id,
            image=image,
            text=v1.Text(raw=features.text) if features.text else None,
            labels=features.labels,
            label_ids=features.label_ids,
            dataset_id=dataset_id,
            metadata=metadata,
            geo_info=geo_info,
        )
    if image is None:
        raise UserError(f"{type(features).__name__} needs image_path, image_bytes or image_url")
    if isinstance(features, VisualCaptioningFeatures):
        caption = v1.Text(raw=features.caption) if features.caption else None
        return _protos.make_input(
            input_id, image=image, text=caption, dataset_id=dataset_id, metadata=metadata, geo_info=geo_info
        )
    if isinstance(features, VisualDetectionFeatures):
        regions = _regions(features.labels, features.label_ids, features.bboxes, _protos.bbox_region, "bboxes")
        return _protos.make_input(
            input_id, image=image, regions=regions, dataset_id=dataset_id, metadata=metadata, geo_info=geo_info
        )
    if isinstance(features, VisualSegmentationFeatures):
        regions = _regions(features.labels, features.label_ids, features.polygons, _protos.polygon_region, "polygons")
        return _protos.make_input(
            input_id, image=image, regions=regions, dataset_id=dataset_id, metadata=metadata, geo_info=geo_info
        )
    return _protos.make_input(
        input_id,
        image=image,
        labels=features.labels,
        label_ids=features.label_ids,
        dataset_id=dataset_id,
        metadata=metadata,
        geo_info=geo_info,
    )


def _regions(
    labels: list[str],
    label_ids: list[str] | None,
    shapes: Sequence[Shape],
    make: Callable[[str, Shape, str | None], v1.Region],
    name: str,
) -> list[v1.Region]:
    if len(labels) != len(shapes):
        raise UserError(f"{len(labels)} labels for {len(shapes)} {name}: give one label per shape")
    if label_ids is not None and len(label_ids) != len(labels):
        raise UserError(f"label_ids has {len(label_ids)} ids for {len(labels)} labels")
    ids: Sequence[str | None] = label_ids or [None] * len(labels)
    return [make(label, shape, label_id) for label, shape, label_id in zip(labels, shapes, ids)]


def _csv_row_input(row: CsvRow, task: str, dataset_id: str) -> v1.Input:
    return features_to_input(row.features(), task, dataset_id)


def _loader_input(loader: Any, index: int, task: str, dataset_id: str) -> v1.Input:
    return features_to_input(loader[index], task, dataset_id)


def _item_name(index: int) -> str:
    return f"item {index}"


def loader_items(loader: Any, dataset_id: str) -> Iterator[UploadItem]:
    """Upload items for a loader, in index order, each built only when its batch is packed.

    `loader` is anything with the members of pellucid.datasets.DataLoader, a subclass or not.
    """
    task = getattr(loader, "task", None)
    if task is None:
        raise UserError(f"{type(loader).__name__} has no `task`: a loader needs task, __len__ and __getitem__")
    name: Callable[[int], str] = getattr(loader, "source", _item_name)
    if isinstance(loader, CsvLoader):  # one pass over the file instead of a seek per row
        for row in loader:
            yield UploadItem(row.index, name(row.index), functools.partial(_csv_row_input, row, task, dataset_id))
        return
    for index in range(len(loader)):
        yield UploadItem(index, name(index), functools.partial(_loader_input, loader, index, task, dataset_id))
