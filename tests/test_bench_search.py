"""scripts/bench_search.py at a tiny N, so that the benchmark cannot rot: every row it can measure
here runs end to end, exact rows find the exact top-10, filtered searches return top_k hits from
the allowed inputs only. The embedded vector stores (the `bench` extra) are not installed in CI:
the bench reports them as not installed and goes on; they are skipped here even when installed, to
keep the test fast (their rows run in the real benchmark)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_search", ROOT / "scripts" / "bench_search.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_search"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_clustered_vectors_are_seeded_normalised_and_held_out() -> None:
    bench = bench_module()
    vectors, queries = bench.clustered_vectors(3000, 20, seed=7)
    again, _ = bench.clustered_vectors(3000, 20, seed=7)
    assert vectors.shape == (3000, 384) and vectors.dtype == np.float32 and queries.shape == (20, 384)
    assert np.array_equal(vectors, again)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # clustered: a query's 10th neighbour is far closer than a random vector (uniform data would not be)
    scores = queries @ vectors.T
    tenth = -np.sort(-scores, axis=1)[:, 9]
    assert np.median(tenth) > np.median(scores) + 0.3
    assert not (queries[:, None, :] == vectors[None, :, :]).all(axis=2).any()  # held out


@pytest.mark.parametrize("direct", [[], ["--direct"]], ids=["pellucid-indexes", "faiss-direct"])
def test_bench_runs_end_to_end_at_tiny_n(capsys: pytest.CaptureFixture[str], direct: list[str]) -> None:
    bench = bench_module()
    sizes = ["--n", "2000", "--queries", "40", "--slow-queries", "20"]
    settings = ["--nprobe", "2,8", "--default-nprobe", "8", "--ef", "16,64", "--default-ef", "64"]
    args = bench.parse(
        [*sizes, *settings, *direct, "--skip", "pgvector,pgvector-eager,qdrant,chromadb,lancedb,lancedb-index"]
    )
    result = bench.run(args)
    printed = capsys.readouterr().out
    rows = {row.name: row for row in result.rows}
    assert "machine:" in printed and "load average" in printed
    assert "p50 ms" in printed and "filt p50" in printed

    numpy_row = rows["numpy brute force (matmul + argpartition)"]
    if not direct:  # the rows go through pellucid's index classes
        assert "pellucid ExactVectorIndex (in memory)" in rows
        if bench.importable("faiss"):
            assert {"pellucid FaissVectorIndex hnsw (ef_search 64)", "pellucid FaissVectorIndex ivf (nprobe 8)"} <= set(
                rows
            )
    measured = [row for row in result.rows if not row.error]
    assert numpy_row in measured
    for row in measured:
        assert row.n == 2000 and row.p50 is not None and row.p50 > 0 and row.filtered_p50 is not None
        assert row.filtered_full, f"{row.name}: a filtered query returned fewer than top_k hits"
    for row in measured:
        if row.exact:
            assert row.recall == 1.0 and row.filtered_recall == 1.0, row.name
    for row in result.rows:
        if row.error:  # only what is not installed may be missing (faiss lives in the `models` extra)
            assert row.error.startswith("not installed"), row.error
    for curve in result.curves:
        assert [point[0] for point in curve.points] == sorted(point[0] for point in curve.points)
        assert len(curve.points) == 2
        assert curve.points[-1][3] >= 0.9, f"{curve.name}: recall@10 {curve.points[-1][3]} at the widest setting"


def test_unknown_skip_names_the_rows() -> None:
    bench = bench_module()
    with pytest.raises(SystemExit, match="the rows are numpy"):
        bench.run(bench.parse(["--n", "100", "--skip", "nosuch"]))
