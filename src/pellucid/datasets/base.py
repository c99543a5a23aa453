"""The dataloader protocol."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any

TASKS = (
    "visual_classification",
    "visual_detection",
    "visual_segmentation",
    "visual_captioning",
    "text_classification",
    "multimodal_dataset",
)


class DataLoader(abc.ABC):
    """Subclass this (or just provide the same three members) to upload any data source.

    Uploads call `__getitem__` lazily, from up to `concurrency` threads at once (each
    reads the batch it then sends, so reads that wait on storage overlap): it must be
    safe to call concurrently, as reading a file by path or a list element is.
    """

    @property
    @abc.abstractmethod
    def task(self) -> str:
        """One of TASKS."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> Any: ...

    def __iter__(self) -> Iterator[Any]:
        for index in range(len(self)):
            yield self[index]
