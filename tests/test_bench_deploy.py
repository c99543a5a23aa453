"""scripts/bench_deploy.py at a tiny N, so that the benchmark cannot rot: both one-row paths and
both ways of sending many rows are measured, each answer checked (y = 2x) inside the script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmark_runs_end_to_end_at_a_small_n() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_deploy.py"), "--calls", "20", "--rows", "150"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for row in (
        "pellucid gRPC predict",
        "HTTP forward, http.client",
        "HTTP forward, httpx",
        "posted one by one",
        "predict_many",
    ):
        assert f"| {row}" in out, out
    assert "HTTP overhead over gRPC predict" in out and "faster than posting one by one" in out
