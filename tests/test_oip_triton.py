"""The stock tritonclient (grpc and http, from PyPI) against a pellucid server: liveness, model
metadata, and infer with FP32, INT64 and BYTES tensors through a runner-served model, compared
with the runner's own computation. tritonclient pins protobuf < 7, so it runs in its own venv
(tests/triton_venv.py) as a subprocess, with pellucid imported in the same process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests import triton_venv
from tests.conftest import RunningServer
from tests.runner_models import tensor_math
from tests.test_oip import MathModel, math_model, sample  # noqa: F401 - math_model is a fixture
from tests.test_oip_http import http_url  # noqa: F401 - a fixture


@pytest.fixture(scope="module")
def triton_python() -> Iterator[Path]:
    yield triton_venv.python()


@pytest.mark.timeout(300)
def test_tritonclient_grpc_and_http(
    triton_python: Path,
    server: RunningServer,
    http_url: str,  # noqa: F811
    math_model: MathModel,  # noqa: F811
    tmp_path: Path,
) -> None:
    inputs = sample()
    np.savez(tmp_path / "inputs.npz", **inputs)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the venv's own pellucid install
    result = subprocess.run(
        [
            str(triton_python),
            str(triton_venv.ROOT / "tests" / "triton_client.py"),
            server.server.address,
            http_url.removeprefix("http://"),
            math_model.pat,
            math_model.name,
            str(tmp_path / "inputs.npz"),
            str(tmp_path / "outputs.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    got = dict(np.load(tmp_path / "outputs.npz", allow_pickle=True))
    declared = ["x:FP32:[-1, 3]", "n:INT64:[-1]", "s:BYTES:[-1]"]
    assert got["grpc_meta_inputs"].tolist() == declared and got["http_meta_inputs"].tolist() == declared
    expected = tensor_math(inputs)
    for prefix in ("grpc", "http_binary", "http_json"):
        for name, array in expected.items():
            received = got[f"{prefix}_{name}"]
            assert received.shape == array.shape, (prefix, name)
            values = received.ravel().tolist()
            if prefix == "http_json" and name == "shout":  # BYTES in JSON travel as strings
                values = [v.encode() for v in values]
            assert values == array.ravel().tolist(), (prefix, name)
    assert got["grpc_y"].dtype == np.float32 and got["grpc_total"].dtype == np.int64
