"""What a loader returns for one item, per task.

Media is given by a path (read lazily, when the item's batch is packed), by bytes, or
by URL. Boxes are [xmin, ymin, xmax, ymax] and polygons [[x, y], ...], all normalised
to [0, 1] of the image's width and height. `labels` become concept ids (and names);
`label_ids` override the ids when the names are not valid ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Common:
    id: str | None = None
    metadata: dict[str, Any] | None = None
    geo_info: tuple[float, float] | list[float] | None = None  # (longitude, latitude)


@dataclass
class _Image(_Common):
    image_path: str | None = None
    image_bytes: bytes | None = None
    image_url: str | None = None


@dataclass
class VisualClassificationFeatures(_Image):
    labels: list[str] = field(default_factory=list)
    label_ids: list[str] | None = None


@dataclass
class VisualDetectionFeatures(_Image):
    labels: list[str] = field(default_factory=list)  # one per box
    bboxes: list[list[float]] = field(default_factory=list)
    label_ids: list[str] | None = None


@dataclass
class VisualSegmentationFeatures(_Image):
    labels: list[str] = field(default_factory=list)  # one per polygon
    polygons: list[list[list[float]]] = field(default_factory=list)
    label_ids: list[str] | None = None


@dataclass
class VisualCaptioningFeatures(_Image):
    caption: str = ""


@dataclass
class TextFeatures(_Common):
    text: str = ""
    labels: list[str] = field(default_factory=list)
    label_ids: list[str] | None = None


@dataclass
class MultiModalFeatures(_Image):
    text: str = ""
    labels: list[str] = field(default_factory=list)
    label_ids: list[str] | None = None


FEATURES_BY_TASK: dict[str, tuple[type, ...]] = {
    "visual_classification": (VisualClassificationFeatures,),
    "visual_detection": (VisualDetectionFeatures,),
    "visual_segmentation": (VisualSegmentationFeatures,),
    "visual_captioning": (VisualCaptioningFeatures,),
    "text_classification": (TextFeatures,),
    "multimodal_dataset": (MultiModalFeatures, TextFeatures, VisualClassificationFeatures),
}
