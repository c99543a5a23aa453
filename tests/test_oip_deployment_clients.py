"""The README's Deployments section as written, against one deployment: its runner, its create
block, the curl call, the sidekick-style client, and the stock tritonclient (gRPC, and HTTP as the
snippet's comment says) with the deployment token, each answer compared with the runner's own
computation (its `run_input` on the same row). Only addresses and the token are substituted.
tritonclient pins protobuf < 7, so its snippet runs in tests/triton_venv.py's venv."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pellucid.api import v1
from pellucid.client.runner import feature_values, features_from_values
from pellucid.client.user import User
from pellucid.server.runtime import PellucidServer, ServerSettings
from tests import triton_venv
from tests.test_readme import README, start
from tests.test_runners import connected, wait_for

README_GRPC = "127.0.0.1:7317"  # the addresses the README's snippets use
README_HTTP = "127.0.0.1:8080"
ROW = {"Type": "animal", "Sound": "Miaow", "Size": 0.26}  # the row every snippet sends


def section_blocks() -> list[tuple[str, str]]:
    """(language, code) of the fenced blocks of the README's "## Deployments" section, in order."""
    text = README.read_text()
    section = text.split("\n## Deployments\n", 1)[1].split("\n## ", 1)[0]
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", section, re.S | re.M)]


def block(lang: str, containing: str) -> str:
    (found,) = [code for language, code in section_blocks() if language == lang and containing in code]
    return found


def the_runners_own(pets: type) -> dict[str, Any]:
    """What the README's runner computes for ROW, called directly (a categorical input reaches it
    as {label: 1.0})."""
    features = features_from_values({**ROW, "Type": {ROW["Type"]: 1.0}})
    output = pets.run_input(object.__new__(pets), v1.Input(data=v1.Data(features=features)), None)
    return feature_values(output.data.features)


def same_numbers(got: dict[str, Any], expected: dict[str, Any]) -> None:
    """Categorical probabilities travel as float32 (a Concept's value), numbers as float64."""
    assert list(got["Species"]) == list(expected["Species"]) == ["cat", "dog"]
    assert np.array_equal(np.float32(list(got["Species"].values())), np.float32(list(expected["Species"].values()))), (
        got
    )
    assert got["Weight"] == expected["Weight"]


@pytest.mark.timeout(300)
def test_curl_sidekick_and_tritonclient_call_the_same_deployment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    triton_python = triton_venv.python()
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "readme"}
    model_code = block("python", "# pets_model.py")
    (tmp_path / "pets_model.py").write_text(model_code)
    exec(compile(model_code, "pets_model.py", "exec"), namespace)
    expected = the_runners_own(namespace["Pets"])

    server = PellucidServer(ServerSettings(data_dir=tmp_path / "server", port=0, http_port=0))
    server.start()
    runner = None
    try:
        credentials = server.data_dir.read_credentials()
        assert credentials is not None
        monkeypatch.setenv("PELLUCID_API", f"grpc://{server.address}")  # what User() and the CLI read
        monkeypatch.setenv("PELLUCID_PAT", credentials.pat)
        http_address = f"127.0.0.1:{server.http_port}"
        (runner_line,) = [line for line in block("sh", "runner start").splitlines() if line.startswith("pellucid")]
        runner = start(runner_line, tmp_path)
        exec(compile(block("python", "create_deployment("), "README create", "exec"), namespace)
        wait_for(lambda: connected(User(), "pets"))
        token = namespace["token"]
        assert token.startswith("pel_dep_")

        # curl
        curl = block("sh", "curl ")
        assert shutil.which("curl"), "the README's call needs curl"
        done = subprocess.run(
            ["bash", "-c", curl.replace(f"http://{README_HTTP}", f"http://{http_address}")],
            env={**os.environ, "TOKEN": token},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        (claimed,) = [line[2:] for line in curl.splitlines() if line.startswith("# {")]
        assert answer == json.loads(claimed)  # the README shows what it answers
        same_numbers(answer["rows"][0], expected)

        # the sidekick-style client (the block makes a token of its own)
        exec(
            compile(block("python", "from pellucid.deployment import Deployment"), "README sidekick", "exec"), namespace
        )
        same_numbers(namespace["client"].predict(**ROW), expected)
        assert namespace["weights"] == [20 * row["Size"] for row in namespace["rows"]]

        # tritonclient, over gRPC as written and over HTTP as its comment says, with the first token
        snippet = block("py", "tritonclient.grpc as triton")
        (claimed_line,) = [line for line in snippet.splitlines() if line.startswith("print(")]
        claimed = claimed_line.split("# ", 1)[1]
        dump = "\nnp.savez({path!r}, Species=result.as_numpy('Species'), Weight=result.as_numpy('Weight'))\n"
        variants = {
            "grpc": snippet.replace(README_GRPC, server.address),
            "http": snippet.replace("tritonclient.grpc", "tritonclient.http").replace(README_GRPC, http_address),
        }
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the venv's own install
        for protocol, code in variants.items():
            out = tmp_path / f"{protocol}.npz"
            script = tmp_path / f"triton_{protocol}.py"
            script.write_text(f"token = {token!r}\n" + code + dump.format(path=str(out)))
            done = subprocess.run(
                [str(triton_python), str(script)], capture_output=True, text=True, timeout=120, env=env
            )
            assert done.returncode == 0, (protocol, done.stdout, done.stderr)
            assert done.stdout.strip() == claimed, protocol
            got = dict(np.load(out))
            assert got["Species"].dtype == np.float32 and got["Weight"].dtype == np.float64
            assert got["Species"].shape == (2,) and got["Weight"].shape == (1,)
            same_numbers({"Species": dict(zip(["cat", "dog"], got["Species"])), "Weight": got["Weight"][0]}, expected)
    finally:
        if runner is not None:
            runner.terminate()
            runner.wait(20)
        server.stop(grace=0.5)
