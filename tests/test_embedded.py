"""The `local` target: an in-process server, shared by every process using the same data dir."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest

from pellucid.client import _embedded
from pellucid.client.user import User

SCRIPT = textwrap.dedent(
    """
    import sys
    from pellucid.client import _embedded
    from pellucid.client.user import User
    user = User()
    user.create_app(sys.argv[1])
    print("apps", " ".join(sorted(a.id for a in user.list_apps())))
    print("started_own_server", bool(_embedded._servers))
    sys.stdout.flush()
    sys.stdin.readline()  # keep serving until told to stop
    """
)


def start(app_id: str, home: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, app_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PELLUCID_HOME": str(home)},
    )


def finish(proc: subprocess.Popen) -> None:
    proc.stdin.close()  # type: ignore[union-attr]
    assert proc.wait(timeout=30) == 0, proc.stderr.read()  # type: ignore[union-attr]


def report(proc: subprocess.Popen) -> tuple[list[str], bool]:
    apps = proc.stdout.readline().split()[1:]  # type: ignore[union-attr]
    started = proc.stdout.readline().split()[-1] == "True"  # type: ignore[union-attr]
    return apps, started


def test_processes_on_one_data_dir_share_a_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = start("from-first", home)
    assert report(first) == (["from-first"], True)
    second = start("from-second", home)
    assert report(second) == (["from-first", "from-second"], False)  # connected to the first one's server
    finish(second)
    finish(first)
    third = start("from-third", home)  # nobody serves the dir now: it starts its own, over the same data
    assert report(third) == (["from-first", "from-second", "from-third"], True)
    finish(third)


def test_default_target_is_embedded_with_no_configuration(tmp_path: Path) -> None:
    user = User()  # PELLUCID_HOME points into tmp (see conftest)
    try:
        assert user.base_url == f"local://{Path(os.environ['PELLUCID_HOME']).resolve()}"
        assert user.get_user_info().is_admin
        assert user.user_id == "admin"
        user.create_app("embedded")
        assert [a.id for a in User().list_apps()] == ["embedded"]
    finally:
        _embedded.forget(os.environ["PELLUCID_HOME"])


def test_a_client_takes_over_when_the_owner_exits(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    monkeypatch.setenv("PELLUCID_HOME", str(home))
    owner = start("from-owner", home)
    assert report(owner) == (["from-owner"], True)
    user = User()  # this process connects to the owner's server
    assert [a.id for a in user.list_apps()] == ["from-owner"]
    assert not _embedded._servers
    finish(owner)  # the owner exits; our next call finds nobody and starts a server here
    try:
        user.create_app("after-takeover")
        assert [a.id for a in user.list_apps()] == ["from-owner", "after-takeover"]
        assert _embedded._servers
    finally:
        _embedded.forget(str(home))


class StandaloneServer:
    """`pellucid server` on a data dir, in a subprocess."""

    def __init__(self, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pellucid.cli", "server", "--data-dir", str(data_dir), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = []
        for line in self.proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("listening on "):
                self.address = line.split()[-1]
                return
        raise AssertionError("pellucid server did not start:\n" + "".join(lines))

    def stop(self) -> None:
        self.proc.terminate()
        assert self.proc.wait(timeout=15) == 0
        self.proc.stdout.close()  # type: ignore[union-attr]


def test_a_client_never_takes_the_data_dir_of_a_standalone_server(tmp_path: Path) -> None:
    from pellucid.client._transport import RetryPolicy
    from pellucid.errors import Unavailable
    from pellucid.server.datadir import DataDir

    data_dir = tmp_path / "data"
    server = StandaloneServer(data_dir)
    user = User(base_url=f"local://{data_dir}", retry=RetryPolicy(max_attempts=2))
    try:
        user.create_app("before-restart")  # through the standalone server, as its first user
        owner = DataDir(data_dir).owner()
        assert owner is not None and (owner.kind, owner.pid, owner.address) == (
            "standalone",
            server.proc.pid,
            server.address,
        )
        assert f"server --data-dir {data_dir}" in owner.command
        server.stop()
        down = f"{data_dir} belongs to the standalone pellucid server at {server.address} .* which is not running"
        with pytest.raises(Unavailable, match=down):  # it waits for the server, as a grpc:// client would ...
            list(user.list_apps())
        with pytest.raises(Unavailable, match=down):  # ... and so does a client that comes while the server is down
            list(User(base_url=f"local://{data_dir}", retry=RetryPolicy(max_attempts=2)).list_apps())
        assert not _embedded._servers and not DataDir(data_dir).is_owned()  # nobody took the dir
        server = StandaloneServer(data_dir)  # the restarted server finds its dir free
        assert [app.id for app in user.list_apps()] == ["before-restart"]  # and the client found it
        assert not _embedded._servers
    finally:
        _embedded.forget(str(data_dir))
        if server.proc.poll() is None:
            server.stop()


def test_a_data_dir_in_use_is_named_with_the_process_holding_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    owner = start("from-owner", home)
    assert report(owner) == (["from-owner"], True)
    refused = subprocess.run(
        [sys.executable, "-m", "pellucid.cli", "server", "--data-dir", str(home), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    finish(owner)
    assert refused.returncode == 1
    assert "is in use by the embedded pellucid server at 127.0.0.1:" in refused.stderr
    assert f"(pid {owner.pid}: " in refused.stderr


EXITS = """
import sys
from pellucid.client.user import User
user = User()
user.create_app("exits")
print("ready", flush=True)
sys.stdin.readline()  # the test holds a long call on this process's server, then lets it end
"""


def test_a_script_exits_while_another_process_holds_a_long_call_on_its_embedded_server(tmp_path: Path) -> None:
    """Its stop runs at exit and ends the call (a runner's connection, a health watch): it used to
    wait for the call, because the handler threads were joined before the stop could run."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    proc = subprocess.Popen(
        [sys.executable, "-c", EXITS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PELLUCID_HOME": str(tmp_path / "home")},
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        from pellucid.server.datadir import DataDir

        address = DataDir(tmp_path / "home").wait_for_address(timeout=10)
        assert address
        channel = grpc.insecure_channel(address)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=120)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING  # the call is running
        proc.stdin.write("done\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0  # a guard against the old hang (until the watch's deadline)
        with pytest.raises(grpc.RpcError):  # the server ended it, after saying it stops serving
            for reply in watch:
                assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        channel.close()
    finally:
        proc.kill()
        proc.wait()
