"""`pellucid run`, `pellucid auth` and `pellucid help` as a user drives them: subprocesses against a
standalone server, the algorithm served by `pellucid runner start tests/algo_functions.py:apply`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pellucid.client.config import config_path
from pellucid.client.user import User
from tests.test_runners import connected, wait_for
from tests.test_server_process import PELLUCID, ServerProcess, admin_pat

ROOT = Path(__file__).resolve().parent.parent
APPLY = str(ROOT / "tests" / "algo_functions.py") + ":apply"


@dataclass
class Setup:
    server: ServerProcess
    url: str
    owner: str
    pat: str

    def login(self) -> list[str]:
        return ["--api", self.url, "--pat", self.pat]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    server = ServerProcess(tmp_path_factory.mktemp("cli-algo") / "data")
    url = f"grpc://{server.address}"
    admin = User(base_url=url, pat=admin_pat(server.data_dir))
    created = admin.create_user("carol")
    carol = User(base_url=url, pat=created.pat.secret)
    carol.create_app("tools").create_model("hello", runner_labels=["hello"]).publish_algorithm(version="0.1.0")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    runner = subprocess.Popen(
        [*PELLUCID, "runner", "start", APPLY, "--labels", "hello", "--api", url, "--pat", created.pat.secret],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_for(lambda: connected(carol, "algo_functions"))
        yield Setup(server, url, "carol", created.pat.secret)
    finally:
        runner.terminate()
        runner.wait(15)
        server.stop()


def pellucid(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*PELLUCID, *args], input=stdin, capture_output=True, timeout=60)


def test_run_sends_each_kind_of_input_and_prints_the_result_raw(setup: Setup, tmp_path: Path) -> None:
    hello = f"{setup.owner}/hello"
    text = pellucid("run", hello, "-d", "HAL 9000", *setup.login())
    assert text.returncode == 0, text.stderr
    assert text.stdout == b"Hello HAL 9000\n" and b"Completed in" in text.stderr
    detected = pellucid("run", f"{hello}/0.1.0", "-d", '{"docs": [1, 2]}', "-s", *setup.login())
    assert json.loads(detected.stdout) == {"echo": {"docs": [1, 2]}, "kind": "dict"}
    assert detected.stderr == b""  # -s: no "Completed in"
    assert json.loads(pellucid("run", hello, "-j", "[1, 2]", *setup.login()).stdout)["kind"] == "list"
    assert pellucid("run", hello, "-t", "[1, 2]", *setup.login()).stdout == b"Hello [1, 2]\n"
    assert pellucid("run", hello, "-b", "abc", *setup.login()).stdout == b"cba"
    (tmp_path / "in.json").write_text('{"n": 3}')
    (tmp_path / "in.txt").write_text("from a file")
    (tmp_path / "in.bin").write_bytes(b"\x00\xff\x10")
    assert json.loads(pellucid("run", hello, "-J", str(tmp_path / "in.json"), *setup.login()).stdout)["kind"] == "dict"
    assert pellucid("run", hello, "-T", str(tmp_path / "in.txt"), *setup.login()).stdout == b"Hello from a file\n"
    assert pellucid("run", hello, "-B", str(tmp_path / "in.bin"), *setup.login()).stdout == b"\x10\xff\x00"
    assert pellucid("run", hello, "-D", str(tmp_path / "in.bin"), *setup.login()).stdout == b"\x10\xff\x00"
    assert pellucid("run", hello, "-D", "-", *setup.login(), stdin=b"piped").stdout == b"Hello piped\n"
    out = tmp_path / "result.bin"
    written = pellucid("run", hello, "-B", str(tmp_path / "in.bin"), "-o", str(out), *setup.login())
    assert written.returncode == 0 and written.stdout == b"" and out.read_bytes() == b"\x10\xff\x00"
    full = json.loads(pellucid("run", hello, "-d", "x", "--response", *setup.login()).stdout)
    assert full["result"] == "Hello x" and full["metadata"]["content_type"] == "text"
    assert full["metadata"]["version"] == "0.1.0" and full["metadata"]["duration"] > 0
    as_json = json.loads(pellucid("--json", "run", hello, "-b", "ab", *setup.login()).stdout)
    assert as_json["result"] == "YmE=" and as_json["metadata"]["content_type"] == "binary"  # base64 of b"ba"


def test_run_debug_prints_the_algorithms_stdout_and_errors_have_their_exit_codes(setup: Setup) -> None:
    hello = f"{setup.owner}/hello"
    debug = pellucid("run", hello, "-d", "print", "--debug", *setup.login())
    assert debug.stdout == b"done\n"
    assert b"printed by the algorithm\nsecond line\n" in debug.stderr
    plain = pellucid("run", hello, "-d", "print", *setup.login())
    assert b"printed by the algorithm" not in plain.stderr
    failed = pellucid("run", hello, "-d", "boom", *setup.login())
    assert failed.returncode == 1 and failed.stdout == b""
    assert b"ValueError: cannot handle boom" in failed.stderr and b"in explode" in failed.stderr
    failed_json = pellucid("--json", "run", hello, "-d", "boom", *setup.login())
    error = json.loads(failed_json.stderr)["error"]
    assert error["type"] == "AlgoException" and failed_json.returncode == 1
    assert pellucid("run", f"{setup.owner}/nothing", "-d", "x", *setup.login()).returncode == 4
    assert pellucid("run", f"{setup.owner}/hello/9.9.9", "-d", "x", *setup.login()).returncode == 4
    assert pellucid("run", hello, "-j", "{not json", *setup.login()).returncode == 2
    assert pellucid("run", hello, *setup.login()).returncode == 2  # no input
    assert pellucid("run", hello, "-d", "x", "-t", "y", *setup.login()).returncode == 2  # two inputs
    assert pellucid("run", hello, "-T", "/no/such/file", *setup.login()).returncode == 2
    assert pellucid("run", hello, "-d", "x", "--api", setup.url, "--pat", "pel_pat_wrong").returncode == 3


def test_auth_writes_a_checked_profile_that_every_command_then_uses(setup: Setup) -> None:
    path = config_path()  # under this test's own XDG_CONFIG_HOME (conftest)
    assert not path.exists()
    added = pellucid("auth", "--profile", "second", *setup.login())
    assert added.returncode == 0, added.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"whoami --profile second" in added.stdout
    whoami = pellucid("whoami", "--profile", "second", "--json")
    assert json.loads(whoami.stdout)["id"] == setup.owner
    ran = pellucid("run", f"{setup.owner}/hello", "-d", "profile", "--profile", "second")
    assert ran.stdout == b"Hello profile\n"
    # interactive: address, token and CA certificate answered on stdin; the default profile
    asked = pellucid("auth", stdin=f"{setup.url}\n{setup.pat}\n\n".encode())
    assert asked.returncode == 0, asked.stderr
    assert b"API address" in asked.stderr and b"API token" in asked.stderr
    assert json.loads(pellucid("whoami", "--json").stdout)["id"] == setup.owner
    before = path.read_bytes()
    refused = pellucid("auth", "--profile", "bad", "--api", setup.url, "--pat", "pel_pat_wrong")
    assert refused.returncode == 3 and path.read_bytes() == before  # checked first: nothing written
    closed = pellucid("auth", "--profile", "bad", "--api", "grpc://127.0.0.1:9", "--pat", "p", "--timeout", "2")
    assert closed.returncode == 5 and path.read_bytes() == before
    listed = json.loads(pellucid("auth", "list", "--json").stdout)
    assert [(p["profile"], p["api"], p["token"], p["current"]) for p in listed] == [
        ("second", setup.url, True, False),
        ("default", setup.url, True, True),
    ]
    assert setup.pat.encode() not in pellucid("auth", "list").stdout  # tokens are never printed
    assert pellucid("auth", "remove", "second").returncode == 0
    assert [p["profile"] for p in json.loads(pellucid("auth", "list", "--json").stdout)] == ["default"]
    assert pellucid("auth", "remove", "second").returncode == 4
    assert pellucid("whoami", "--profile", "second").returncode == 2  # the profile is gone
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_help_documents_commands_and_exit_codes() -> None:
    top = pellucid("help")
    assert top.returncode == 0 and b"exit codes:" in top.stdout and b"run" in top.stdout
    for code in (b"0  ok", b"1  other", b"2  usage", b"3  not auth", b"4  not found", b"5  server unreachable"):
        assert code in top.stdout
    assert b"some files failed" in top.stdout and b"ServerUnreachable" in top.stdout  # cp's two kinds of 5
    run = pellucid("help", "run")
    assert run.returncode == 0 and b"--data" in run.stdout and b"exit codes:" in run.stdout
    assert pellucid("help", "auth").returncode == 0
    assert pellucid("help", "runner", "start").returncode == 0
    assert pellucid("help", "nothing").returncode == 2


def test_the_config_file_is_written_back_as_it_was_read() -> None:
    from pellucid.cli.auth import dump_config
    from pellucid.client.config import tomllib

    data = {
        "current_profile": "team",
        "profiles": {
            "default": {"api": "grpc://127.0.0.1:7317", "pat": 'pel_pat_"x\\y'},
            "team b": {"api": "https://pellucid.example.com", "verbose": True, "retries": 3, "labels": ["a", "b"]},
            "ünï": {"user_id": "carol\tx"},
            "empty": {},
        },
        "other": {"nested": {"deep": 1.5}},
    }
    assert tomllib.loads(dump_config(data)) == data


def readme_round_trip() -> list[str]:
    """The shell lines of README's hosted-data round trip (the block after "runs these lines")."""
    text = (ROOT / "README.md").read_text()
    block = text.split("`tests/test_cli_algo.py` runs these lines:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_the_readme_round_trip_runs_as_written(setup: Setup, tmp_path: Path) -> None:
    """auth, cp a folder up, run an algorithm that reads it from data:// and writes to data://, cat."""
    import shlex

    from pellucid.client.runner import function_runner
    from tests.test_algorithms import start_runner

    sys.path.insert(0, str(ROOT / "examples" / "algorithms"))
    try:
        import wordcount
    finally:
        sys.path.remove(str(ROOT / "examples" / "algorithms"))
    carol = User(base_url=setup.url, pat=setup.pat)
    model = carol.create_app("counting").create_model("wordcount", runner_labels=["wordcount"])
    model.publish_algorithm(version="1.0.0")
    runner, thread = start_runner(carol, "wordcount", "wordcount", function_runner(wordcount.apply))
    (tmp_path / "reviews").mkdir()
    (tmp_path / "reviews" / "good.txt").write_text("a fine and useful\n")
    (tmp_path / "reviews" / "bad.txt").write_text("not at all\n")
    try:
        wait_for(lambda: connected(carol, "wordcount"))
        outputs = []
        for line in readme_round_trip():
            args = shlex.split(
                line.replace('"$PAT"', setup.pat).replace("grpc://pellucid.example:7317", setup.url), comments=True
            )
            assert args[0] == "pellucid"
            done = subprocess.run([*PELLUCID, *args[1:]], cwd=tmp_path, capture_output=True, timeout=60)
            assert done.returncode == 0, (line, done.stderr)
            outputs.append(done.stdout)
        assert json.loads(outputs[3]) == {"files": 2, "words": 7, "written": "data://.algo/counts.json"}
        assert json.loads(outputs[4]) == {"bad.txt": 3, "good.txt": 4}
    finally:
        runner.stop(drain=False)
        thread.join(10)
