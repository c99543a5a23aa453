"""The `pellucid` command as scripts use it: run as a subprocess against a real server process,
checking exit codes (0 ok, 1 other, 2 usage, 3 denied, 4 not found, 5 unreachable), --json
output, --version, the global --profile, runner labels and Ctrl-C on a runner."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import pellucid.errors as errors
from pellucid import __version__
from pellucid.api import v1
from pellucid.cli.output import exit_code
from pellucid.client.user import User
from tests.test_runners import connected, predict_in_background, wait_for
from tests.test_server_process import PELLUCID, ServerProcess, admin_pat

ROOT = Path(__file__).resolve().parent.parent
SLEEPY = str(ROOT / "tests" / "runner_models.py") + ":Sleepy"


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("cli") / "data")
    yield process
    process.stop()


def pellucid(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PELLUCID, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def as_admin(server: ServerProcess) -> list[str]:
    return ["--api", f"grpc://{server.address}", "--pat", admin_pat(server.data_dir)]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_version_and_usage_errors() -> None:
    version = pellucid("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"pellucid {__version__}"
    assert pellucid("whoami", "--no-such-flag").returncode == 2
    assert pellucid("no-such-command").returncode == 2
    assert pellucid("whoami", "--timeout", "0").returncode == 2
    bad_target = pellucid("whoami", "--api", "ftp://x/y", "--pat", "p", "--json")
    assert bad_target.returncode == 2
    assert "not a pellucid target" in json.loads(bad_target.stderr)["error"]["message"]


def test_server_readiness_as_json(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*PELLUCID, "server", "--data-dir", str(tmp_path / "data"), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        ready = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert ready["event"] == "listening" and ready["data_dir"] == str((tmp_path / "data").resolve())
        whoami = pellucid(
            "whoami", "--json", "--api", f"grpc://{ready['address']}", "--pat", admin_pat(tmp_path / "data")
        )
        assert json.loads(whoami.stdout)["id"] == "admin"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_json_output_and_options_before_or_after_the_command(standalone: ServerProcess) -> None:
    whoami = pellucid(*as_admin(standalone), "--json", "whoami")
    assert whoami.returncode == 0, whoami.stderr
    assert json.loads(whoami.stdout) == {"id": "admin", "is_admin": True, "api": f"grpc://{standalone.address}"}
    created = pellucid("users", "create", "carol", "--json", *as_admin(standalone))
    assert created.returncode == 0, created.stderr
    carol = json.loads(created.stdout)
    assert carol["id"] == "carol" and not carol["is_admin"] and carol["pat"].startswith("pel_")
    listed = pellucid("users", "list", "--json", *as_admin(standalone))
    assert {"id": "carol", "is_admin": False} in json.loads(listed.stdout)
    text = pellucid("whoami", "--api", f"grpc://{standalone.address}", "--pat", carol["pat"])
    assert (text.returncode, text.stdout) == (0, "carol\n")
    runners = pellucid("runner", "list", "--json", "--api", f"grpc://{standalone.address}", "--pat", carol["pat"])
    assert (runners.returncode, json.loads(runners.stdout)) == (0, [])


def test_exit_codes(standalone: ServerProcess, tmp_path: Path) -> None:
    api = ["--api", f"grpc://{standalone.address}"]
    created = json.loads(pellucid("users", "create", "dan", "--json", *as_admin(standalone)).stdout)
    twice = pellucid("users", "create", "dan", "--json", *as_admin(standalone))
    assert twice.returncode == 1  # ALREADY_EXISTS: an "other" failure
    assert json.loads(twice.stderr)["error"]["code"] == "ALREADY_EXISTS"
    denied = pellucid("users", "create", "eve", *api, "--pat", created["pat"])
    assert denied.returncode == 3 and "only admins" in denied.stderr
    assert pellucid("whoami", *api, "--pat", "pel_pat_not-a-real-token").returncode == 3
    assert pellucid("whoami", *api).returncode == 3  # no token anywhere
    missing = pellucid("runner", "start", SLEEPY, "--runner-id", "never-registered", *as_admin(standalone), "--json")
    assert missing.returncode == 4, missing.stderr
    error = json.loads(missing.stderr.splitlines()[-1])["error"]
    assert error["code"] == "NOT_FOUND" and "pass --labels a,b to register it" in error["message"]
    assert pellucid("runner", "start", "no/such/file.py:X", *as_admin(standalone)).returncode == 2
    unreachable = pellucid("whoami", "--api", f"grpc://127.0.0.1:{closed_port()}", "--pat", "p", "--timeout", "1")
    assert unreachable.returncode == 5, unreachable.stderr


def test_exit_codes_come_from_one_table() -> None:
    assert exit_code(errors.NotFound("x")) == 4
    assert exit_code(errors.PermissionDenied("x")) == exit_code(errors.Unauthenticated("x")) == 3
    assert exit_code(errors.MissingCredentials("x")) == 3 and exit_code(errors.UserError("x")) == 2
    assert exit_code(errors.Unavailable("x")) == exit_code(errors.DeadlineExceeded("x")) == 5
    assert exit_code(errors.InvalidArgument("x")) == exit_code(errors.PellucidError("x")) == 1


def test_global_profile(standalone: ServerProcess, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    pat = admin_pat(standalone.data_dir)
    config.write_text(f'[profiles.team]\napi = "grpc://{standalone.address}"\npat = "{pat}"\n')
    config.chmod(0o600)
    env = {"PELLUCID_CONFIG": str(config)}
    before = pellucid("--profile", "team", "whoami", "--json", env=env)
    after = pellucid("whoami", "--profile", "team", "--json", env=env)
    assert before.returncode == after.returncode == 0, before.stderr
    assert json.loads(before.stdout)["id"] == json.loads(after.stdout)["id"] == "admin"
    unknown = pellucid("--profile", "nope", "whoami", env=env)
    assert unknown.returncode == 2 and "profile 'nope'" in unknown.stderr


def start_runner(
    server: ServerProcess, runner_id: str, tmp_path: Path, sleep: float, *extra: str
) -> tuple[subprocess.Popen[str], Path, Path]:
    """The runner process, the file it touches when an item starts, and its stderr (a file)."""
    started, log = tmp_path / f"{runner_id}.started", tmp_path / f"{runner_id}.log"
    env = {**os.environ, "SLEEP": str(sleep), "STARTED": str(started), "PYTHONPATH": os.pathsep.join(sys.path)}
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [
                *PELLUCID,
                "runner",
                "start",
                SLEEPY,
                "--runner-id",
                runner_id,
                "--concurrency",
                "1",
                *as_admin(server),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    return proc, started, log


def test_runner_start_updates_the_labels_of_an_existing_runner_and_drains_on_ctrl_c(
    standalone: ServerProcess, tmp_path: Path
) -> None:
    user = User(base_url=f"grpc://{standalone.address}", pat=admin_pat(standalone.data_dir))
    model = user.create_app("labels").create_model("m", runner_labels=["fresh"])
    user.create_runner("relabelled", labels=["stale"])
    runner, started, log = start_runner(standalone, "relabelled", tmp_path, 1.0, "--labels", "fresh,cpu", "--json")
    try:
        events = [json.loads(runner.stdout.readline()) for _ in range(2)]  # type: ignore[union-attr]
        assert events[0]["event"] == "labels_updated" and events[0]["before"] == ["stale"]
        assert events[0]["runner"]["labels"] == ["fresh", "cpu"] and events[1]["event"] == "starting"
        assert list(user.runner("relabelled").labels) == ["fresh", "cpu"]
        wait_for(lambda: connected(user, "relabelled"))
        thread, answers = predict_in_background(model, timeout=30)
        wait_for(started.exists)
        runner.send_signal(signal.SIGINT)  # Ctrl-C: finish the item in hand, then exit
        thread.join(30)
        assert runner.wait(20) == 0
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert isinstance(answers[0], v1.PostModelOutputsResponse) and answers[0].runner_id == "relabelled"
    assert "draining, finishing 1 item(s) in hand" in log.read_text()
    listed = json.loads(pellucid("runner", "list", "--json", *as_admin(standalone)).stdout)
    assert {"id": "relabelled", "labels": ["fresh", "cpu"], "connections": 0}.items() <= next(
        r for r in listed if r["id"] == "relabelled"
    ).items()


def test_a_second_ctrl_c_stops_a_runner_at_once(standalone: ServerProcess, tmp_path: Path) -> None:
    user = User(base_url=f"grpc://{standalone.address}", pat=admin_pat(standalone.data_dir))
    model = user.create_app("ctrl-c").create_model("m", runner_labels=["slow"])
    runner, started, log = start_runner(standalone, "stubborn", tmp_path, 600, "--labels", "slow")
    thread, _answers = predict_in_background(model, timeout=5)
    try:
        wait_for(started.exists)
        runner.send_signal(signal.SIGINT)
        wait_for(lambda: "draining" in log.read_text())  # the first Ctrl-C was handled
        runner.send_signal(signal.SIGINT)
        assert runner.wait(10) == 130  # at once, not after the 600 s item
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        thread.join(10)
    assert "stopping at once" in log.read_text()
    wait_for(lambda: not connected(user, "stubborn"))


def test_server_metadata_uri_chooses_the_store_and_an_unknown_scheme_names_the_accepted_ones(tmp_path: Path) -> None:
    metadata = tmp_path / "elsewhere" / "meta.sqlite3"
    proc = subprocess.Popen(
        [*PELLUCID, "server", "--data-dir", str(tmp_path / "data"), "--metadata", f"sqlite://{metadata}", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        ready = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert ready["event"] == "listening"
        assert metadata.exists() and not (tmp_path / "data" / "metadata.sqlite3").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    refused = pellucid("server", "--data-dir", str(tmp_path / "data2"), "--metadata", "mysql://db/x")
    assert refused.returncode == 2
    assert "'mysql'" in refused.stderr and "sqlite:///" in refused.stderr and "postgresql://" in refused.stderr
