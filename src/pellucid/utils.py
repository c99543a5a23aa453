"""Small helpers of the reference API."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from pellucid.errors import UserError

T = TypeVar("T")


class Chunker(Generic[T]):
    """Splits a sequence into lists of at most `size` items (the last may be shorter)."""

    def __init__(self, seq: Sequence[T], size: int) -> None:
        if not isinstance(size, int) or size < 1:
            raise UserError(f"chunk size must be a positive integer, got {size!r}")
        self.seq = seq
        self.size = size

    def chunk(self) -> list[list[T]]:
        return list(self)

    def __iter__(self) -> Iterator[list[T]]:
        for start in range(0, len(self.seq), self.size):
            yield list(self.seq[start : start + self.size])
