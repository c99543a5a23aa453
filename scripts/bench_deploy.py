#!/usr/bin/env python3
"""Deployment benchmark: one-row calls through the HTTP endpoint against pellucid's own gRPC
predict, and predict_many against posting rows one by one.

Measured in one run, on this machine's loopback, with a `pellucid server --http-port 0` process
and one runner process serving a trivial model of named features (y = 2x):

1. pellucid's own predict (gRPC, `Model.predict` with one input of features), sequential calls;
2. the same model through its deployment: one-row POSTs of {"rows": [{"x": ...}]} over a kept-alive
   connection, sequential, from two clients: the standard library's http.client (the endpoint's
   own cost) and httpx (which spends ~0.6 ms more per request in the client); the overhead is
   (2) - (1) at p50;
3. 10,000 rows posted one by one (sequential, as a naive caller would), against
   `Deployment.predict_many` of the same rows (batches of 64, 4 at a time).

    python scripts/bench_deploy.py [--calls 2000] [--rows 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from http.client import HTTPConnection
from pathlib import Path

import httpx

from pellucid.api import v1
from pellucid.client.features import ndarray_from_numpy
from pellucid.client.runner import Runner, feature_values, features_from_values
from pellucid.client.user import User
from pellucid.deployment import Deployment

ROOT = Path(__file__).resolve().parent.parent


class Double(Runner):
    """The trivial model of named features: y = 2 * x."""

    def run_inputs(self, inputs: list[v1.Input], output_info: v1.OutputInfo) -> list[v1.Output]:
        outputs = []
        for item in inputs:
            x = feature_values(item.data.features)["x"]
            outputs.append(v1.Output(data=v1.Data(features=features_from_values({"y": 2 * x}))))
        return outputs


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def start_server(data_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "pellucid.cli", "server", "--data-dir", str(data_dir), "--port", "0"),
            *("--http-port", "0", "--json", "--log-level", "warning", "--max-predicts-per-user", "256"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    event = json.loads(line)
    if event.get("event") != "listening":
        raise SystemExit(f"the server did not start: {line}")
    return proc, event


def start_runner(address: str, pat: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "pellucid.cli", "runner", "start", f"{__file__}:Double"),
            *("--runner-id", "bench-deploy", "--labels", "bench-deploy", "--concurrency", "4"),
            *("--api", f"grpc://{address}", "--pat", pat, "--log-level", "warning"),
        ],
        env=env,
        text=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="sequential one-row calls per path")
    parser.add_argument("--rows", type=int, default=10_000, help="rows for predict_many against one by one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch) / "data"
        server, event = start_server(data_dir)
        runner = None
        try:
            pat = json.loads((data_dir / "credentials.json").read_text())["pat"]
            user = User(base_url=f"grpc://{event['address']}", pat=pat)
            app = user.create_app("bench")
            model = app.create_model(
                "double",
                runner_labels=["bench-deploy"],
                input_specs=[{"name": "x", "type": "numeric"}],
                output_specs=[{"name": "y", "type": "numeric"}],
            )
            deployment = app.create_deployment("bench-double", model_id="double")
            _, token = deployment.create_token("bench")
            user.create_runner("bench-deploy", labels=["bench-deploy"])
            runner = start_runner(event["address"], pat)
            deadline = time.monotonic() + 30
            while user.runner("bench-deploy").connections == 0:
                if time.monotonic() > deadline:
                    raise SystemExit("the runner did not connect")
                time.sleep(0.05)

            def grpc_call(i: int) -> None:
                row = v1.Input(data=v1.Data(features=[v1.Feature(name="x", array=ndarray_from_numpy(float(i)))]))
                answer = model.predict([row])
                assert feature_values(answer.outputs[0].data.features)["y"] == 2.0 * i

            http = httpx.Client(headers={"Authorization": f"Bearer {token}"})

            def http_call(i: int) -> None:
                response = http.post(deployment.url, json={"rows": [{"x": float(i)}]})
                assert response.status_code == 200 and response.json()["rows"][0]["y"] == 2.0 * i, response.text

            target = urllib.parse.urlsplit(deployment.url)
            plain = HTTPConnection(target.hostname, target.port)
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

            def plain_call(i: int) -> None:
                plain.request("POST", target.path, body=json.dumps({"rows": [{"x": float(i)}]}), headers=headers)
                answer = plain.getresponse()
                body = answer.read()
                assert answer.status == 200 and json.loads(body)["rows"][0]["y"] == 2.0 * i, body

            results = {}
            paths = {"grpc": grpc_call, "plain": plain_call, "http": http_call}
            for call in paths.values():
                for i in range(min(200, args.calls)):  # warm up: connections, caches, the runner's threads
                    call(i)
            for name, call in paths.items():
                samples = []
                started = time.perf_counter()
                for i in range(args.calls):
                    t0 = time.perf_counter()
                    call(i)
                    samples.append(time.perf_counter() - t0)
                results[name] = (*percentiles(samples), args.calls / (time.perf_counter() - started))

            rows = [{"x": float(i)} for i in range(args.rows)]
            started = time.perf_counter()
            for i, row in enumerate(rows):
                response = http.post(deployment.url, json={"rows": [row]})
                assert response.status_code == 200 and response.json()["rows"][0]["y"] == 2.0 * i
            one_by_one = time.perf_counter() - started
            with Deployment(url=deployment.url, token=token) as client:
                client.feature_specs_out  # noqa: B018 - fetched once, before the clock starts
                started = time.perf_counter()
                outputs = client.predict_many(rows, progress=False)
                many = time.perf_counter() - started
            assert [o["y"] for o in outputs] == [2.0 * i for i in range(args.rows)]
            http.close()
            plain.close()
            user.close()
        finally:
            if runner is not None:
                runner.terminate()
                runner.wait(20)
            server.terminate()
            server.wait(20)

    grpc_p50, grpc_p99, _ = results["grpc"]
    names = {
        "grpc": "pellucid gRPC predict (Model.predict)",
        "plain": "HTTP forward, http.client (stdlib)",
        "http": "HTTP forward, httpx",
    }
    print(f"\none-row calls, {args.calls} sequential each, trivial runner model (y = 2x), loopback\n")
    print(f"| {'path':<44} | {'p50 ms':>7} | {'p99 ms':>7} | {'rows/s':>8} |")
    print(f"|{'-' * 46}|{'-' * 9}|{'-' * 9}|{'-' * 10}|")
    for name, (p50, p99, rate) in results.items():
        print(f"| {names[name]:<44} | {p50:7.2f} | {p99:7.2f} | {rate:8.0f} |")
    print()
    for name in ("plain", "http"):
        p50, p99, _ = results[name]
        client = names[name].split(", ")[1]
        print(
            f"HTTP overhead over gRPC predict, {client}: {p50 - grpc_p50:+.2f} ms at p50, {p99 - grpc_p99:+.2f} ms at p99"
        )
    print()
    print(f"| {f'{args.rows} rows':<44} | {'seconds':>7} | {'rows/s':>8} |")
    print(f"|{'-' * 46}|{'-' * 9}|{'-' * 10}|")
    print(f"| {'posted one by one (sequential)':<44} | {one_by_one:7.2f} | {args.rows / one_by_one:8.0f} |")
    print(f"| {'predict_many (batches of 64, 4 at once)':<44} | {many:7.2f} | {args.rows / many:8.0f} |")
    print(f"\npredict_many is {one_by_one / many:.1f}x faster than posting one by one")


if __name__ == "__main__":
    main()
