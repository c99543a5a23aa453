"""Dataset loaders for bulk ingestion: the protocol, the feature types, and the built-in loaders.

A loader is any object with

- `task`: one of TASKS ("visual_classification", "visual_detection", "visual_segmentation",
  "visual_captioning", "text_classification", "multimodal_dataset");
- `__len__()`: the number of items (used for the progress bar);
- `__getitem__(i)`: the i-th item as one of the feature classes below;
- optionally `source(i)`: how failure reports name the item (a path, a row).

`Dataset.upload_dataset(loader)` asks for items one at a time, as batches are packed, so
a loader can describe millions of files without holding them in memory; an item whose
`__getitem__` raises fails alone, with the reason in the upload result.
"""

from pellucid.datasets.base import TASKS, DataLoader
from pellucid.datasets.features import (
    MultiModalFeatures,
    TextFeatures,
    VisualCaptioningFeatures,
    VisualClassificationFeatures,
    VisualDetectionFeatures,
    VisualSegmentationFeatures,
)
from pellucid.datasets.loaders import ArchiveLoader, CsvLoader, FolderLoader

__all__ = [
    "TASKS",
    "ArchiveLoader",
    "CsvLoader",
    "DataLoader",
    "FolderLoader",
    "MultiModalFeatures",
    "TextFeatures",
    "VisualCaptioningFeatures",
    "VisualClassificationFeatures",
    "VisualDetectionFeatures",
    "VisualSegmentationFeatures",
]
