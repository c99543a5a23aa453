#!/usr/bin/env python3
"""Workflow benchmark: one predict through a 3-node workflow of trivial runner models, against
three sequential predicts of the same models from the client, measured in the same run.

A server process and a runner process (serving the three models) on this machine's loopback;
the workflow chains the models (a -> b -> c), so the server runs them one after the other, as
the client does in the baseline, but without two of the client's round trips.

    python scripts/bench_workflow.py [--calls 500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pellucid.api import v1
from pellucid.client.runner import Runner
from pellucid.client.user import User

MODELS = ("a", "b", "c")


class Trivial(Runner):
    """The cheapest model: one concept per input."""

    def run_inputs(self, inputs: list[v1.Input], output_info: v1.OutputInfo) -> list[v1.Output]:
        return [v1.Output(data=v1.Data(concepts=[v1.Concept(id="ok", value=1.0)])) for _ in inputs]


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pellucid.cli", *args], stdout=subprocess.PIPE, text=True)


def server_address(server: subprocess.Popen) -> str:
    while True:
        line = server.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise SystemExit("the server did not start")
        if line.startswith("listening on"):
            return line.split()[-1]


def measure(call: Callable[[], object], calls: int) -> list[float]:
    for _ in range(min(100, calls)):
        call()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def row(name: str, samples: list[float], baseline: float) -> str:
    ordered = sorted(samples)
    p50, p99 = ordered[len(ordered) // 2] * 1000, ordered[int(len(ordered) * 0.99)] * 1000
    mean = sum(samples) / len(samples) * 1000
    return f"| {name} | {p50:.2f} | {p99:.2f} | {mean:.2f} | {mean / baseline:.2f}x |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="calls per measurement")
    args = parser.parse_args()
    data_dir = tempfile.mkdtemp(prefix="pellucid-bench-workflow-")
    server = start(["server", "--data-dir", data_dir, "--port", "0", "--log-level", "warning"])
    runner = None
    try:
        address = server_address(server)
        pat = json.loads((Path(data_dir) / "credentials.json").read_text())["pat"]
        user = User(base_url=f"grpc://{address}", pat=pat)
        app = user.create_app("bench")
        models = [app.create_model(m, runner_labels=["trivial"]) for m in MODELS]
        user.create_runner("trivial", labels=["trivial"])
        runner_args = ["--runner-id", "trivial", "--concurrency", "4", "--api", f"grpc://{address}", "--pat", pat]
        runner = start(
            ["runner", "start", f"{Path(__file__).resolve()}:Trivial", *runner_args, "--log-level", "warning"]
        )
        deadline = time.monotonic() + 60
        while user.runner("trivial").connections < 1:
            if time.monotonic() > deadline:
                raise SystemExit("the runner did not connect")
            time.sleep(0.1)
        config = Path(data_dir) / "workflow.yaml"
        nodes = "\n".join(
            f"    - id: {m}\n      model: {{model_id: {m}}}" + (f"\n      node_inputs: [{{node_id: {p}}}]" if p else "")
            for m, p in zip(MODELS, ("", *MODELS[:-1]), strict=True)
        )
        config.write_text(f"workflow:\n  id: chain\n  nodes:\n{nodes}\n")
        workflow = app.create_workflow(str(config), display=False)
        request = v1.Input(data=v1.Data(text=v1.Text(raw="hello")))

        def sequential() -> None:
            for model in models:
                model.predict([request])

        def through_workflow() -> None:
            result = workflow.predict([request]).results[0]
            assert all(o.status.code == v1.Status.OK for o in result.outputs), result

        one = measure(lambda: models[0].predict([request]), args.calls)
        three = measure(sequential, args.calls)
        chained = measure(through_workflow, args.calls)
        baseline = sum(three) / len(three) * 1000
        print(f"{args.calls} calls each, trivial models on one runner process, loopback\n")
        print("| call | p50 ms | p99 ms | mean ms | vs 3 predicts |")
        print("| --- | --- | --- | --- | --- |")
        print(row("one predict (one model)", one, baseline))
        print(row("three sequential predicts (baseline)", three, baseline))
        print(row("one workflow predict (3 nodes, chained)", chained, baseline))
        return 0
    finally:
        for process in (runner, server):
            if process is not None:
                process.terminate()
                process.wait(30)


if __name__ == "__main__":
    sys.exit(main())
