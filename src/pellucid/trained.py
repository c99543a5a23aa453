"""Models the server trains, as plain numpy arrays (issue #11): what a training job fits, what a
trained version's predicts apply, and what an export's `weights.npz` holds.

Kept apart from the server (numpy only) so that an exported `model.tar` can be used without
one: `load_weights(tar.extractfile("weights.npz").read())` gives the same object the server
predicts with, and `probabilities` / `assign` give the same numbers.

- `SoftmaxClassifier`: multinomial logistic regression (no hidden layer) or a small MLP (ReLU
  hidden layers), over standardised embeddings, fitted by full-batch Adam on the cross-entropy
  with an L2 penalty.
- `KMeans`: centres fitted by k-means++ seeding and Lloyd's iterations.

Fits work in row blocks of at most CHECK_WORK multiply-adds and call `check` (if given) before
each, so a caller can stop one (by raising from it) within a bounded time however large the
data, the hidden layer or k are: a training job checks its time limit there.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

WEIGHTS_FORMAT = 1  # bumped when the arrays in weights.npz change meaning

Floats = npt.NDArray[np.float32]
Check = Callable[[], None] | None  # called between blocks of work; raises to stop the fit
# multiply-adds per block of a fit (and of a predict over many rows): tens of milliseconds on one
# core (more while other processes share it), and rows enough for numpy's cost per call to vanish
CHECK_WORK = 1 << 28
ELEMENT_WORK = 32  # an elementwise numpy operation on one value costs about as much as this many multiply-adds


@dataclass
class SoftmaxClassifier:
    """P(concept | embedding): standardise, ReLU hidden layers, softmax over the concepts."""

    concept_ids: list[str]
    concept_names: list[str]
    mean: Floats
    scale: Floats
    weights: list[Floats]  # one (in, out) matrix per layer, the last one to the concepts
    biases: list[Floats]
    config: dict[str, Any] = field(default_factory=dict)

    kind = "softmax-classifier"

    @property
    def dimension(self) -> int:
        return int(self.mean.shape[0])

    def _forward(self, x: Floats, standardised: bool = False) -> tuple[list[Floats], Floats]:
        h: Floats = np.asarray(x, dtype=np.float32)
        if not standardised:
            h = ((h - self.mean) / self.scale).astype(np.float32)
        activations = [h]
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = np.maximum(_dot(h, w) + b, np.float32(0.0))
            activations.append(h)
        logits: Floats = (_dot(h, self.weights[-1]) + self.biases[-1]).astype(np.float32, copy=False)
        return activations, _softmax(logits)

    def probabilities(self, x: Floats, check: Check = None) -> Floats:
        """(n, concepts) probabilities of each row of `x` (n, dimension); rows sum to 1."""
        x = np.asarray(x, dtype=np.float32)
        out = np.empty((len(x), len(self.concept_ids)), dtype=np.float32)
        per_row = _layer_work(self.weights) + ELEMENT_WORK * (
            len(self.mean) + sum(int(w.shape[1]) for w in self.weights)
        )
        for rows in _row_blocks(len(x), per_row, check):
            out[rows] = self._forward(x[rows])[1]
        return out

    def to_bytes(self) -> bytes:
        arrays: dict[str, Any] = {
            "mean": self.mean,
            "scale": self.scale,
            "concept_ids": np.array(self.concept_ids, dtype=str),
            "concept_names": np.array(self.concept_names, dtype=str),
        }
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f"w{i}"], arrays[f"b{i}"] = w, b
        return _save(self.kind, {**self.config, "layers": len(self.weights)}, arrays)

    @classmethod
    def from_arrays(cls, config: dict[str, Any], arrays: Any) -> SoftmaxClassifier:
        layers = int(config["layers"])
        return cls(
            concept_ids=[str(c) for c in arrays["concept_ids"]],
            concept_names=[str(c) for c in arrays["concept_names"]],
            mean=arrays["mean"],
            scale=arrays["scale"],
            weights=[arrays[f"w{i}"] for i in range(layers)],
            biases=[arrays[f"b{i}"] for i in range(layers)],
            config=config,
        )


@dataclass
class KMeans:
    """Cluster centres; an embedding belongs to the nearest (Euclidean)."""

    centres: Floats  # (clusters, dimension)
    config: dict[str, Any] = field(default_factory=dict)

    kind = "kmeans"

    @property
    def dimension(self) -> int:
        return int(self.centres.shape[1])

    def assign(self, x: Floats, check: Check = None) -> tuple[npt.NDArray[np.int64], Floats]:
        """Each row's cluster and its distance to that cluster's centre."""
        x = np.asarray(x, dtype=np.float32)
        labels, squared = _nearest(x, _row_norms(x, check), self.centres, check)
        return labels, np.sqrt(squared)

    def to_bytes(self) -> bytes:
        return _save(self.kind, self.config, {"centres": self.centres})

    @classmethod
    def from_arrays(cls, config: dict[str, Any], arrays: Any) -> KMeans:
        return cls(centres=arrays["centres"], config=config)


def load_weights(data: bytes) -> SoftmaxClassifier | KMeans:
    """The model a `weights.npz` (a training job's artifact, an export's file) holds."""
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        header = json.loads(str(arrays["header"]))
        if header.get("format") != WEIGHTS_FORMAT:
            raise ValueError(f"weights format {header.get('format')!r}: this pellucid reads {WEIGHTS_FORMAT}")
        loaded = {name: arrays[name] for name in arrays.files}
    kinds: dict[str, Any] = {SoftmaxClassifier.kind: SoftmaxClassifier, KMeans.kind: KMeans}
    if header.get("kind") not in kinds:
        raise ValueError(f"unknown model kind {header.get('kind')!r} in the weights")
    return kinds[header["kind"]].from_arrays(header["config"], loaded)


# fitting


def fit_softmax(
    x: Floats,
    targets: Floats,
    concept_ids: list[str],
    concept_names: list[str],
    *,
    hidden_units: int = 0,
    epochs: int = 200,
    learning_rate: float = 0.05,
    l2: float = 1e-4,
    seed: int = 0,
    tolerance: float = 1e-6,
    on_epoch: Callable[[int, float], None] | None = None,
    check: Check = None,
) -> tuple[SoftmaxClassifier, int]:
    """Fit on `x` (n, d) and `targets` (n, concepts; each row a distribution over the concepts).
    Returns the model and the epochs run (fewer than `epochs` once the loss stops moving by
    more than `tolerance`). `on_epoch(epoch, loss)` is called every epoch (progress, stop);
    `check()` before every block of work (see the module's docstring)."""
    x = np.asarray(x, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.float32)
    n, d = x.shape
    mean, scale = _column_stats(x, check)
    scale = np.where(scale > 1e-6, scale, 1.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    sizes = [d, *([hidden_units] if hidden_units else []), targets.shape[1]]
    weights = [
        (rng.standard_normal((a, b)) * np.sqrt(2.0 / a) * (0.1 if i == len(sizes) - 2 else 1.0)).astype(np.float32)
        for i, (a, b) in enumerate(itertools.pairwise(sizes))
    ]
    biases = [np.zeros(b, dtype=np.float32) for b in sizes[1:]]
    model = SoftmaxClassifier(concept_ids, concept_names, mean, scale, weights, biases)
    standardised = np.empty_like(x)
    for rows in _row_blocks(n, ELEMENT_WORK * d, check):
        standardised[rows] = (x[rows] - mean) / scale
    params = [*weights, *biases]
    # the forward pass's products and the backward pass's two per layer, and elementwise work on each output
    per_row = 3 * _layer_work(weights) + 4 * ELEMENT_WORK * sum(int(w.shape[1]) for w in weights)
    first_moment = [np.zeros_like(p) for p in params]
    second_moment = [np.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    previous = np.inf
    ran = 0
    for epoch in range(1, epochs + 1):
        # the full batch's gradient, summed over row blocks (each block's share is divided by n)
        grads_w: list[Floats] = [l2 * w for w in weights]
        grads_b: list[Floats] = [np.zeros_like(b) for b in biases]
        cross_entropy = 0.0
        for rows in _row_blocks(n, per_row, check):
            activations, probabilities = model._forward(standardised[rows], standardised=True)
            cross_entropy -= float((targets[rows] * np.log(probabilities + 1e-12)).sum())
            delta = (probabilities - targets[rows]) / n
            for layer in range(len(weights) - 1, -1, -1):
                grads_w[layer] += _dot_t(activations[layer], delta)
                grads_b[layer] += delta.sum(axis=0)
                if layer:
                    delta = _dot(delta, weights[layer].T) * (activations[layer] > 0)
        loss = cross_entropy / n + 0.5 * l2 * sum(float((w * w).sum()) for w in weights)
        for i, (p, g) in enumerate(zip(params, [*grads_w, *grads_b])):
            first_moment[i] = beta1 * first_moment[i] + (1 - beta1) * g
            second_moment[i] = beta2 * second_moment[i] + (1 - beta2) * g * g
            m_hat = first_moment[i] / (1 - beta1**epoch)
            v_hat = second_moment[i] / (1 - beta2**epoch)
            p -= (learning_rate * m_hat / (np.sqrt(v_hat) + eps)).astype(np.float32)
        ran = epoch
        if on_epoch is not None:
            on_epoch(epoch, loss)
        if abs(previous - loss) < tolerance:
            break
        previous = loss
    model.config = {"hidden_units": hidden_units, "epochs_run": ran}
    return model, ran


def fit_kmeans(
    x: Floats,
    clusters: int,
    *,
    max_iterations: int = 100,
    seed: int = 0,
    on_iteration: Callable[[int, float], None] | None = None,
    check: Check = None,
) -> tuple[KMeans, npt.NDArray[np.int64], Floats, int]:
    """k-means++ seeding, then Lloyd's iterations until no input changes cluster (or
    `max_iterations`). Returns the model, each row's cluster and distance, and the iterations.
    `check()` is called before every block of work (see the module's docstring)."""
    x = np.asarray(x, dtype=np.float32)
    n, d = x.shape
    norms = _row_norms(x, check)
    rng = np.random.default_rng(seed)
    centres = np.empty((clusters, d), dtype=np.float32)
    centres[0] = x[rng.integers(n)]
    _, closest = _nearest(x, norms, centres[:1], check)
    for k in range(1, clusters):
        total = float(closest.sum())
        pick = int(rng.choice(n, p=closest / total)) if total > 0 else int(rng.integers(n))
        centres[k] = x[pick]
        _, to_new = _nearest(x, norms, centres[k : k + 1], check)
        closest = np.minimum(closest, to_new)
    labels = np.full(n, -1, dtype=np.int64)
    iterations = 0
    for iteration in range(1, max_iterations + 1):
        new_labels, squared = _nearest(x, norms, centres, check)
        inertia = float(squared.sum())
        iterations = iteration
        if on_iteration is not None:
            on_iteration(iteration, inertia)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for k in range(clusters):  # each step O(n): a comparison per row, then its members' mean
            if check is not None:
                check()
            members = x[labels == k]
            if len(members):
                centres[k] = members.mean(axis=0)
            else:  # an empty cluster restarts at the input farthest from its centre
                centres[k] = x[int(squared.argmax())]
    model = KMeans(centres, {"clusters": clusters, "iterations": iterations})
    final_labels, distances = model.assign(x, check)
    return model, final_labels, distances, iterations


def _row_blocks(n: int, per_row: int, check: Check) -> Iterator[slice]:
    """Slices of n rows, each about CHECK_WORK multiply-adds at `per_row` a row; `check()` before each."""
    rows = max(1, CHECK_WORK // max(per_row, 1))
    for start in range(0, n, rows):
        if check is not None:
            check()
        yield slice(start, min(start + rows, n))


def _layer_work(weights: list[Floats]) -> int:
    """Multiply-adds of one row's forward pass."""
    return sum(int(w.shape[0]) * int(w.shape[1]) for w in weights)


def _column_stats(x: Floats, check: Check) -> tuple[Floats, Floats]:
    """Each column's mean and standard deviation (two passes, summed in float64)."""
    n, d = x.shape
    total = np.zeros(d, dtype=np.float64)
    for rows in _row_blocks(n, ELEMENT_WORK * d, check):
        total += x[rows].sum(axis=0, dtype=np.float64)
    mean = total / max(n, 1)
    squares = np.zeros(d, dtype=np.float64)
    for rows in _row_blocks(n, ELEMENT_WORK * d, check):
        centred = x[rows] - mean
        squares += (centred * centred).sum(axis=0)
    return mean.astype(np.float32), np.sqrt(squares / max(n, 1)).astype(np.float32)


def _row_norms(x: Floats, check: Check) -> Floats:
    norms = np.empty(len(x), dtype=np.float32)
    for rows in _row_blocks(len(x), ELEMENT_WORK * x.shape[1], check):
        norms[rows] = (x[rows] * x[rows]).sum(axis=1)
    return norms


def _nearest(x: Floats, norms: Floats, centres: Floats, check: Check) -> tuple[npt.NDArray[np.int64], Floats]:
    """Each row's nearest centre and squared distance to it (at least 0: rounding can make the
    distance of a row to itself slightly negative), a block of rows at a time."""
    labels = np.empty(len(x), dtype=np.int64)
    squared = np.empty(len(x), dtype=np.float32)
    centre_norms = (centres * centres).sum(axis=1)
    for rows in _row_blocks(len(x), (x.shape[1] + 4 * ELEMENT_WORK) * len(centres), check):
        block = (norms[rows, None] - 2.0 * (x[rows] @ centres.T) + centre_norms[None, :]).astype(np.float32)
        labels[rows] = block.argmin(axis=1)
        squared[rows] = np.maximum(block[np.arange(len(block)), labels[rows]], 0.0)
    return labels, squared


# OpenBLAS runs a matrix product on one thread when m*n*k is at most 4 * 65536 and on all of
# them above. The classifier's products are tall and thin (rows x dimension x concepts): in
# row blocks under that size they stay on one thread, which on a busy server (the trainer
# shares the CPU with calls and the indexer) is several times faster than waiting for every
# core at each product. Wide products (an MLP's hidden layer) are left to BLAS as they are.
SINGLE_THREAD_WORK = 4 * 65536
MIN_BLOCK_ROWS = 32


def _block_rows(inner: int, width: int) -> int:
    return SINGLE_THREAD_WORK // max(inner * width, 1)


def _dot(a: Floats, b: Floats) -> Floats:
    """a @ b, in row blocks of a when that keeps each product on one thread."""
    rows = _block_rows(a.shape[1], b.shape[1])
    if rows < MIN_BLOCK_ROWS or rows >= a.shape[0]:
        return a @ b
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    for start in range(0, a.shape[0], rows):
        np.matmul(a[start : start + rows], b, out=out[start : start + rows])
    return out


def _dot_t(a: Floats, b: Floats) -> Floats:
    """a.T @ b (a gradient: summed over rows), in row blocks when that keeps each on one thread."""
    rows = _block_rows(a.shape[1], b.shape[1])
    if rows < MIN_BLOCK_ROWS or rows >= a.shape[0]:
        return a.T @ b
    total = np.zeros((a.shape[1], b.shape[1]), dtype=np.result_type(a, b))
    for start in range(0, a.shape[0], rows):
        total += a[start : start + rows].T @ b[start : start + rows]
    return total


def _softmax(logits: Floats) -> Floats:
    # clipped at e^-60: smaller probabilities would make subnormal floats downstream (the gradient
    # is divided by n), and arithmetic on subnormals is tens of times slower on x86
    shifted = np.maximum(logits - logits.max(axis=1, keepdims=True), -60.0)
    e = np.exp(shifted)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _save(kind: str, config: dict[str, Any], arrays: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    header = json.dumps({"format": WEIGHTS_FORMAT, "kind": kind, "config": config})
    np.savez(buffer, header=np.array(header), **arrays)
    return buffer.getvalue()


__all__ = ["WEIGHTS_FORMAT", "KMeans", "SoftmaxClassifier", "fit_kmeans", "fit_softmax", "load_weights"]
