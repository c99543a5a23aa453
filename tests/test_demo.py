"""`make demo` is one of the two commands a new user runs: it must keep working, twice in a row."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_runs_end_to_end_twice_on_a_fresh_data_dir(tmp_path: Path) -> None:
    env = {**os.environ, "PELLUCID_HOME": str(tmp_path / "home")}
    for run in (1, 2):
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "demo.py")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, f"run {run}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        assert "demo finished in" in result.stdout
        assert "a-review      negative" in result.stdout  # the runner answered the batch, text included
        assert "algorithm admin/colour/1.0.0: negative" in result.stdout  # and as an algorithm
        assert "algorithm on data://.my/demo-inbox/review.txt (40 bytes): positive" in result.stdout  # data://
        # trained by the server, evaluated on reviews it never saw, then run in a workflow
        assert ": trained, held-out accuracy" in result.stdout
        assert re.search(r"top-1 accuracy 0\.[6-9]\d against 0\.50", result.stdout), result.stdout[-3000:]
        assert "classify  0 negative 1.00" in result.stdout or "classify  0 negative 0.9" in result.stdout
        assert "confident 0 positive" in result.stdout
