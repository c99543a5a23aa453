"""The vector index: embeddings of inputs, searched by similarity (issue #10).

One index holds many *spaces*: a space is the vectors of one embedder in one app (for
example "alice/photos/text", see engine/spaces.py), all of one dimension. Keys are the inputs' store seqs
(`InputRecord.seq`, int64). Backends (one class each, one contract suite over all):
exact (numpy), ANN (faiss, candidates re-ranked exactly) and pgvector, chosen by URI in
`registry.open_vector_index`.

Scores: larger is closer for every metric. COSINE is the cosine similarity in [-1, 1];
DOT the inner product; EUCLIDEAN the negative L2 distance (the API turns it into
1 / (1 + distance), see engine/search.py).
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


MAX_VECTOR_VALUE = 1e15  # larger values overflow float32 norms (every cosine would read 0)


def vector_problem(vector: npt.NDArray[np.float32]) -> str:
    """Why a vector cannot be stored or searched with ("" if it can): NaN or infinite values,
    values beyond +-MAX_VECTOR_VALUE, or all zeros (no direction: every cosine is 0)."""
    import numpy as np

    if not np.isfinite(vector).all():
        return "it holds NaN or infinite values"
    largest = float(np.abs(vector).max()) if vector.size else 0.0
    if largest > MAX_VECTOR_VALUE:
        return f"it holds values beyond +-{MAX_VECTOR_VALUE:g}"
    if largest == 0.0:
        return "it is all zeros (no direction to compare)"
    return ""


class Metric(enum.Enum):
    COSINE = "cosine"
    EUCLIDEAN = "euclidean"
    DOT = "dot"


@dataclass(frozen=True)
class VectorHit:
    key: int
    score: float  # larger is closer (see the module docstring)


class DimensionMismatch(ValueError):
    """Vectors (or a query) whose dimension is not the space's."""


class VectorIndex(abc.ABC):
    """Vectors by space and key. Safe to use from many threads."""

    @abc.abstractmethod
    def upsert(self, space: str, keys: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        """Store (or replace) the vectors of these keys; the first vectors of a space fix its
        dimension (DimensionMismatch after that)."""

    @abc.abstractmethod
    def remove(self, space: str, keys: npt.NDArray[np.int64]) -> int:
        """Forget these keys' vectors (unknown keys are skipped); returns how many were held."""

    @abc.abstractmethod
    def get(self, space: str, keys: npt.NDArray[np.int64]) -> dict[int, npt.NDArray[np.float32]]:
        """The stored vectors of those keys the space holds ("more like this input")."""

    @abc.abstractmethod
    def search(
        self,
        space: str,
        query: npt.NDArray[np.float32],
        k: int,
        metric: Metric = Metric.COSINE,
        allowed: npt.NDArray[np.int64] | None = None,
        exact: bool = False,
    ) -> list[VectorHit]:
        """The k keys closest to `query`, best first. With `allowed` (sorted keys), only those
        are considered, inside the search (never a post-filter that returns fewer than k when
        k of them exist); `exact` asks for brute force (algorithm='brute_force')."""

    @abc.abstractmethod
    def count(self, space: str) -> int:
        """How many vectors the space holds (0 for an unknown space)."""

    @abc.abstractmethod
    def dimension(self, space: str) -> int | None:
        """The space's dimension, None before its first vectors."""

    @abc.abstractmethod
    def drop_space(self, space: str) -> None:
        """Forget a whole space (an app deleted, or its base workflow changed)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Persist what needs persisting and release resources."""
