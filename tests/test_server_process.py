"""`pellucid server` as a separate process: readiness line, health, reflection, CLI, signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pellucid.api import v1
from pellucid.client.user import User

PELLUCID = [sys.executable, "-m", "pellucid.cli"]


class ServerProcess:
    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [*PELLUCID, "server", "--data-dir", str(data_dir), "--port", "0", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.address = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            self.lines.append(line)
            if line.startswith("listening on "):
                self.address = line.split()[-1]
                return
        raise AssertionError("server did not report readiness:\n" + "".join(self.lines))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=15)
        self.lines += self.proc.stdout.readlines()  # type: ignore[union-attr]
        return code


@pytest.fixture
def running(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data")
    yield process
    process.stop()


def admin_pat(data_dir: Path) -> str:
    return json.loads((data_dir / "credentials.json").read_text())["pat"]


def test_serves_health_reflection_and_the_api(running: ServerProcess) -> None:
    host, port = running.address.split(":")
    assert host == "127.0.0.1" and int(port) > 0
    credentials = running.data_dir / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert json.loads((running.data_dir / "server.json").read_text())["address"] == running.address
    with grpc.insecure_channel(running.address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="pellucid.api.v1.AppService"), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
            timeout=5,
            metadata=[("authorization", f"Bearer {admin_pat(running.data_dir)}")],
        )
        names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {
        "pellucid.api.v1.AppService",
        "pellucid.api.v1.UserService",
        "pellucid.api.v1.ConceptService",
        "grpc.health.v1.Health",
    } <= names
    user = User(base_url=f"grpc://{running.address}", pat=admin_pat(running.data_dir))
    assert user.create_app("from-test").id == "from-test"


def test_users_create_prints_the_pat_last(running: ServerProcess) -> None:
    env = {**os.environ, "PELLUCID_HOME": str(running.data_dir)}  # credentials resolved as for the SDK
    result = subprocess.run([*PELLUCID, "users", "create", "dave"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    pat = result.stdout.strip().splitlines()[-1]
    dave = User(base_url=f"grpc://{running.address}", pat=pat)
    assert dave.get_user_info().id == "dave"
    again = subprocess.run([*PELLUCID, "users", "create", "dave"], capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 1 and "already exists" in again.stderr
    refused = subprocess.run(
        [*PELLUCID, "users", "create", "eve", "--api", f"grpc://{running.address}", "--pat", pat],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert refused.returncode == 3 and "only admins" in refused.stderr  # denied


def test_a_second_server_on_the_same_data_dir_is_refused(running: ServerProcess) -> None:
    result = subprocess.run(
        [*PELLUCID, "server", "--data-dir", str(running.data_dir)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert running.address in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown_on_signals(tmp_path: Path, sig: int) -> None:
    process = ServerProcess(tmp_path / "data")
    user = User(base_url=f"grpc://{process.address}", pat=admin_pat(process.data_dir))
    user.create_app("kept")
    assert process.stop(sig) == 0
    assert "shutting down" in "".join(process.lines)
    assert not (process.data_dir / "server.json").exists()
    restarted = ServerProcess(process.data_dir)  # the lock was released; the data persisted
    try:
        user = User(base_url=f"grpc://{restarted.address}", pat=admin_pat(process.data_dir))
        assert [a.id for a in user.list_apps()] == ["kept"]
    finally:
        assert restarted.stop() == 0


def test_health_and_reflection_answer_without_a_token(running: ServerProcess) -> None:
    with grpc.insecure_channel(running.address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(
            reflection.ServerReflectionInfo(
                iter(
                    [
                        reflection_pb2.ServerReflectionRequest(list_services=""),
                        reflection_pb2.ServerReflectionRequest(file_containing_symbol="pellucid.api.v1.AppService"),
                    ]
                ),
                timeout=5,
            )
        )
        names = {s.name for s in replies[0].list_services_response.service}
        assert "pellucid.api.v1.AppService" in names
        assert replies[1].file_descriptor_response.file_descriptor_proto  # grpcurl describes calls from these
        with pytest.raises(grpc.RpcError) as refused:  # the API itself still needs a token
            v1.AppServiceStub(channel).ListApps(v1.ListAppsRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_default_port_is_fixed() -> None:
    # imported here: tests/test_recovery.py imports this module in a subprocess that may run another pellucid
    from pellucid.cli import build_parser
    from pellucid.cli.server import DEFAULT_PORT
    from pellucid.server.settings import resolve

    assert resolve(vars(build_parser().parse_args(["server"])), environ={})["port"] == DEFAULT_PORT == 7317


def test_a_port_in_use_is_one_line_and_its_own_exit_code_before_anything_is_made(tmp_path: Path) -> None:
    from pellucid.cli.server import EXIT_PORT_IN_USE

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data_dir = tmp_path / "data"
        result = subprocess.run(
            [*PELLUCID, "server", "--data-dir", str(data_dir), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == EXIT_PORT_IN_USE
    assert len(result.stderr.splitlines()) == 1 and f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert result.stdout == ""
    assert not data_dir.exists()  # no data dir, no first user
