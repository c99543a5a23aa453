#!/usr/bin/env python3
"""Open Inference Protocol benchmark: one-row infers through the stock tritonclient (gRPC) against
pellucid's own predict, on the same trivial runner model, measured in one run.

The server, the runner (tests/runner_models.py:TensorMath: y = 2x + 1 on a float32 [1, 3]) and
each caller are separate processes on this machine's loopback. tritonclient runs in its own venv
(tests/triton_venv.py, made on first use: tritonclient pins protobuf < 7). Sequential calls,
p50 and p99; the difference is what the OIP adapter costs over pellucid's predict path.

    python scripts/bench_oip.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pellucid.api import v1  # noqa: E402
from pellucid.client.runner import features_from_values  # noqa: E402
from pellucid.client.user import User  # noqa: E402
from tests import triton_venv  # noqa: E402

TRITON_CALLER = """
import json, sys, time
import numpy as np
import tritonclient.grpc as grpcclient
address, pat, model, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = grpcclient.InferenceServerClient(url=address)
headers = {"authorization": f"Bearer {pat}"}
x = grpcclient.InferInput("x", [1, 3], "FP32")
x.set_data_from_numpy(np.ones((1, 3), dtype=np.float32))
def call():
    return client.infer(model, [x], headers=headers).as_numpy("y")
assert call().tolist() == [[3.0, 3.0, 3.0]]
for _ in range(min(200, calls)):
    call()
samples = []
for _ in range(calls):
    started = time.perf_counter()
    call()
    samples.append(time.perf_counter() - started)
print(json.dumps(samples))
"""


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] * 1000, ordered[int(len(ordered) * 0.99)] * 1000


def start(args: list[str], **kwargs: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pellucid.cli", *args], **kwargs)  # type: ignore[call-overload]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls per path")
    args = parser.parse_args()
    triton_python = triton_venv.python()
    data_dir = tempfile.mkdtemp(prefix="pellucid-bench-oip-")
    server = start(
        ["server", "--data-dir", data_dir, "--port", "0", "--log-level", "warning"], stdout=subprocess.PIPE, text=True
    )
    runner = None
    try:
        address = ""
        while not address:
            line = server.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise SystemExit("the server did not start")
            if line.startswith("listening on"):
                address = line.split()[-1]
        pat = json.loads((Path(data_dir) / "credentials.json").read_text())["pat"]
        user = User(base_url=f"grpc://{address}", pat=pat)
        app = user.create_app("bench")
        model = app.create_model(
            "math",
            runner_labels=["math"],
            input_specs=[{"name": "x", "type": "array", "dtype": "float32", "shape": [-1, 3]}],
            output_specs=[{"name": "y", "type": "array", "dtype": "float32", "shape": [-1, 3]}],
        )
        user.create_runner("math0", labels=["math"])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        runner = start(
            [
                "runner",
                "start",
                f"{ROOT / 'tests' / 'runner_models.py'}:TensorMath",
                "--runner-id",
                "math0",
                "--concurrency",
                "4",
                "--api",
                f"grpc://{address}",
                "--pat",
                pat,
                "--log-level",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 60
        while user.runner("math0").connections < 1:
            if time.monotonic() > deadline:
                raise SystemExit("the runner did not connect")
            time.sleep(0.1)

        request = v1.Input(data=v1.Data(features=features_from_values({"x": np.ones((1, 3), dtype=np.float32)})))
        for _ in range(min(200, args.calls)):
            model.predict([request])
        own = []
        for _ in range(args.calls):
            started = time.perf_counter()
            model.predict([request])
            own.append(time.perf_counter() - started)

        caller = subprocess.run(
            [str(triton_python), "-c", TRITON_CALLER, address, pat, "bench/math", str(args.calls)],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
        if caller.returncode != 0:
            raise SystemExit("the tritonclient caller failed:\n" + caller.stderr)
        triton = json.loads(caller.stdout)
    finally:
        for process in (runner, server):
            if process is not None:
                process.terminate()
                process.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)

    (p50, p99), (t50, t99) = percentiles(own), percentiles(triton)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, grpcio {grpc.__version__}")
    print(f"{args.calls} sequential one-row calls per path, one runner process (TensorMath, float32 [1, 3])\n")
    print(f"{'path':52} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>8}")
    print(f"{'pellucid predict (ModelService, pellucid SDK)':52} {p50:8.2f} {p99:8.2f} {1000 / p50:8,.0f}")
    print(f"{'OIP ModelInfer (tritonclient.grpc)':52} {t50:8.2f} {t99:8.2f} {1000 / t50:8,.0f}")
    print(f"{'OIP over pellucid predict':52} {t50 - p50:8.2f} {t99 - p99:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
