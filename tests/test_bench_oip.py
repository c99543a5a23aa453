"""scripts/bench_oip.py at a few calls, so that the benchmark cannot rot: both paths run end to
end (the tritonclient caller checks its answer) and the table is printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_bench_oip_runs_both_paths() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_oip.py"), "--calls", "20"],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OIP ModelInfer (tritonclient.grpc)" in result.stdout and "pellucid predict" in result.stdout
