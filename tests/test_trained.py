"""pellucid.trained: the numpy models the server trains, as an export's weights.npz holds them."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from pellucid.trained import KMeans, SoftmaxClassifier, fit_kmeans, fit_softmax, load_weights


def _xor(n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)
    return x, np.eye(2, dtype=np.float32)[y]


def test_a_hidden_layer_learns_what_logistic_regression_cannot() -> None:
    x, targets = _xor()
    truth = targets.argmax(axis=1)
    linear, _ = fit_softmax(x, targets, ["a", "b"], ["A", "B"], epochs=300, tolerance=0)
    mlp, _ = fit_softmax(x, targets, ["a", "b"], ["A", "B"], hidden_units=32, epochs=300, learning_rate=0.02)
    assert (linear.probabilities(x).argmax(axis=1) == truth).mean() < 0.75  # XOR is not linear
    assert (mlp.probabilities(x).argmax(axis=1) == truth).mean() > 0.95
    again = load_weights(mlp.to_bytes())
    assert isinstance(again, SoftmaxClassifier) and again.concept_names == ["A", "B"]
    assert np.array_equal(again.probabilities(x), mlp.probabilities(x))
    assert np.allclose(mlp.probabilities(x).sum(axis=1), 1.0, atol=1e-5)


def test_kmeans_finds_separated_clusters_and_round_trips() -> None:
    rng = np.random.default_rng(2)
    centres = np.array([[0, 0], [10, 0], [0, 10]], dtype=np.float32)
    truth = rng.integers(3, size=300)
    x = (centres[truth] + rng.standard_normal((300, 2))).astype(np.float32)
    model, labels, distances, iterations = fit_kmeans(x, 3, seed=0)
    assert iterations < 100
    mapping = {int(t): int(label) for t, label in zip(truth, labels)}
    assert len(set(mapping.values())) == 3 and all(mapping[int(t)] == int(label) for t, label in zip(truth, labels))
    assert float(distances.max()) < 5.0
    again = load_weights(model.to_bytes())
    assert isinstance(again, KMeans) and np.array_equal(again.assign(x)[0], labels)


def test_weights_of_another_format_or_kind_are_refused() -> None:
    def npz(header: dict) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, header=np.array(json.dumps(header)))
        return buffer.getvalue()

    with pytest.raises(ValueError, match="weights format 99"):
        load_weights(npz({"format": 99, "kind": "kmeans", "config": {}}))
    with pytest.raises(ValueError, match="unknown model kind 'forest'"):
        load_weights(npz({"format": 1, "kind": "forest", "config": {}}))
