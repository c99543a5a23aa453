"""scripts/bench_training.py at a tiny N, so that the benchmark cannot rot: the job trains over
stored vectors (none embedded), and the table has both rows. Also the row-block products the
classifier uses (trained._dot, _dot_t) equal plain ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from pellucid import trained

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmark_runs_end_to_end_at_a_small_n() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_training.py"), "--n", "400", "--concepts", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("400 stored 384-d embeddings, 3 concepts")
    job = next(line for line in lines if line.startswith("pellucid training job"))
    baseline = next(line for line in lines if line.startswith("baseline: ridge regression"))
    assert 0.5 < float(job.split()[-1]) <= 1.0 and 0.5 < float(baseline.split()[-1]) <= 1.0
    assert "target: the job under 10 s" in result.stdout


def test_row_block_products_equal_plain_ones() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1000, 384)).astype(np.float32)
    b = rng.standard_normal((384, 5)).astype(np.float32)
    d = rng.standard_normal((1000, 5)).astype(np.float32)
    assert trained._block_rows(384, 5) < 1000  # blocked here
    assert np.allclose(trained._dot(a, b), a @ b, atol=1e-4)
    assert np.allclose(trained._dot_t(a, d), a.T @ d, atol=1e-3)
