"""pellucid.trained: the numpy models the server trains, as an export's weights.npz holds them."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from pellucid import trained
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


class Stop(Exception):
    """What the tests' `check` raises: a training job's time limit raises from the same place."""


def test_a_fit_checks_between_bounded_blocks_so_one_long_epoch_can_be_stopped() -> None:
    """One epoch of a wide MLP over 2,000 rows is many blocks of work: `check` is called before
    each (at least one per CHECK_WORK multiply-adds), so raising from it stops the fit inside its
    first epoch, where `on_epoch` (the only report before) has not been called yet."""
    rng = np.random.default_rng(3)
    n, d, hidden = 2000, 64, 4096
    x = rng.standard_normal((n, d)).astype(np.float32)
    targets = np.eye(2, dtype=np.float32)[rng.integers(2, size=n)]
    checks: list[int] = []
    epochs: list[int] = []
    fit_softmax(
        x,
        targets,
        ["a", "b"],
        ["A", "B"],
        hidden_units=hidden,
        epochs=2,
        tolerance=-1,
        on_epoch=lambda epoch, loss: epochs.append(epoch),
        check=lambda: checks.append(len(epochs)),
    )
    products = 3 * n * (d * hidden + hidden * 2)  # one epoch's forward and backward multiply-adds
    assert checks.count(1) >= products / trained.CHECK_WORK >= 5  # the checks of the second epoch
    epochs.clear()

    def stop_at_the_fifth() -> None:
        checks.append(0)
        if len(checks) == 5:
            raise Stop

    checks.clear()
    with pytest.raises(Stop):
        fit_softmax(
            x,
            targets,
            ["a", "b"],
            ["A", "B"],
            hidden_units=hidden,
            epochs=100000,
            on_epoch=lambda epoch, loss: epochs.append(epoch),
            check=stop_at_the_fifth,
        )
    assert epochs == []


def test_kmeans_checks_within_its_seeding_and_seeds_unit_vectors() -> None:
    """k-means++ seeding is k passes over the data before the first iteration reports: it calls
    `check` in each. Unit-length 384-d vectors (what the built-in text embedder makes) no longer
    fail the seeding: a row's rounded squared distance to itself could be negative, and
    rng.choice refused the negative "probability"."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for seed in range(5):
        model, labels, distances, _ = fit_kmeans(x, 8, max_iterations=5, seed=seed)
        assert set(labels.tolist()) <= set(range(8)) and (distances >= 0).all()
        assert np.array_equal(model.assign(x)[0], labels)
    iterations: list[int] = []
    checks: list[int] = []

    def stop_in_the_seeding() -> None:
        checks.append(0)
        if len(checks) == 20:
            raise Stop

    with pytest.raises(Stop):
        fit_kmeans(x, 64, seed=0, on_iteration=lambda i, inertia: iterations.append(i), check=stop_in_the_seeding)
    assert iterations == []


def test_probabilities_and_assignments_are_the_same_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    x, targets = _xor(600)
    mlp, _ = fit_softmax(x, targets, ["a", "b"], ["A", "B"], hidden_units=32, epochs=20)
    kmeans, _, _, _ = fit_kmeans(x, 4, seed=0)
    whole = mlp.probabilities(x), kmeans.assign(x)
    monkeypatch.setattr(trained, "CHECK_WORK", 1)  # one row a block
    checks: list[int] = []
    assert np.allclose(mlp.probabilities(x, check=lambda: checks.append(1)), whole[0], atol=1e-6)
    labels, distances = kmeans.assign(x, check=lambda: checks.append(1))
    assert np.array_equal(labels, whole[1][0]) and np.allclose(distances, whole[1][1], atol=1e-5)
    assert len(checks) >= 2 * len(x)
