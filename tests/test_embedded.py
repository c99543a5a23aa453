"""The `local` target: an in-process server, shared by every process using the same data dir."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

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
    return subprocess.Popen([sys.executable, "-c", SCRIPT, app_id], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PELLUCID_HOME": str(home)})


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
