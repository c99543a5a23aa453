"""Shared fixtures: a real pellucid server on a loopback port the OS picks, and users on it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pellucid.client.user import User
from pellucid.server.runtime import PellucidServer, ServerSettings


@dataclass
class RunningServer:
    server: PellucidServer
    data_dir: Path
    admin_pat: str

    @property
    def url(self) -> str:
        return f"grpc://{self.server.address}"

    def client(self, pat: str, **kwargs: object) -> User:
        return User(base_url=self.url, pat=pat, **kwargs)


# A test process that grows past this (MiB of RSS) has a runaway allocation: before the kernel's
# OOM killer ends it without a word (as it once did to a worker here, at 23 GB), every thread's
# stack is written to stderr and to a file named in the message, and the process stops.
MAX_RSS_MIB = int(os.environ.get("PELLUCID_TEST_MAX_RSS_MIB", "8192"))
_current_test = [""]


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _watch_memory() -> None:
    import faulthandler
    import sys
    import tempfile
    import time

    while True:
        time.sleep(0.25)
        rss = _rss_mib()
        if rss <= MAX_RSS_MIB:
            continue
        report = Path(tempfile.gettempdir()) / f"pellucid-test-rss-{os.getpid()}.txt"
        message = (
            f"\nRSS {rss:.0f} MiB > {MAX_RSS_MIB} MiB during {_current_test[0]}: every thread's stack in {report}\n"
        )
        with open(report, "w") as out:
            out.write(message)
            faulthandler.dump_traceback(file=out, all_threads=True)
        sys.stderr.write(message)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        os._exit(70)


def pytest_configure(config: pytest.Config) -> None:
    if MAX_RSS_MIB > 0 and os.path.exists("/proc/self/statm"):
        import threading

        threading.Thread(target=_watch_memory, name="rss-watch", daemon=True).start()


@pytest.fixture(autouse=True)
def _name_the_running_test(request: pytest.FixtureRequest) -> Iterator[None]:
    _current_test[0] = request.node.nodeid
    yield


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's ~/.pellucid, config file or PELLUCID_* variables."""
    home = tmp_path_factory.mktemp("home")
    for name in (
        "PELLUCID_API",
        "PELLUCID_PAT",
        "PELLUCID_SESSION_TOKEN",
        "PELLUCID_USER_ID",
        "PELLUCID_ROOT_CERTIFICATES_PATH",
        "PELLUCID_PROFILE",
        "PELLUCID_CONFIG",
        "PELLUCID_FAULT",
        "PELLUCID_CLIENT_CERT",
        "PELLUCID_CLIENT_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("PELLUCID_SERVER_"):  # `pellucid server` settings (server/settings.py)
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("PELLUCID_HOME", str(home / ".pellucid"))


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, _postgres_session: None) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp("server-data")
    # the URL tests fetch from a loopback web server; tests/test_fetch.py covers the refusing default
    yield from running_server(data_dir, os.environ.get("PELLUCID_TEST_METADATA", "sqlite"))


def running_server(data_dir: Path, metadata: str) -> Iterator[RunningServer]:
    """A server on `data_dir` with its metadata in SQLite (in the data dir) or in PostgreSQL
    (tests/pg.py): `PELLUCID_TEST_METADATA=postgresql make test` runs every suite over PostgreSQL."""
    metadata_uri = ""
    if metadata == "postgresql":
        from tests import pg

        metadata_uri = pg.new_database()
    elif metadata != "sqlite":
        raise ValueError(f"PELLUCID_TEST_METADATA={metadata!r}: use sqlite or postgresql")
    running = PellucidServer(
        ServerSettings(data_dir=data_dir, port=0, allow_private_urls=True, metadata_uri=metadata_uri)
    )
    running.start()
    credentials = running.data_dir.read_credentials()
    assert credentials is not None
    yield RunningServer(running, data_dir, credentials.pat)
    running.stop(grace=0.5)


@pytest.fixture(scope="session")
def admin(server: RunningServer) -> User:
    return server.client(server.admin_pat)


def _new_user(server: RunningServer, admin: User, prefix: str) -> User:
    created = admin.create_user(f"{prefix}-{uuid.uuid4().hex[:8]}")
    return server.client(created.pat.secret, user_id=created.user.id)


@pytest.fixture
def alice(server: RunningServer, admin: User) -> User:
    return _new_user(server, admin, "alice")


@pytest.fixture
def bob(server: RunningServer, admin: User) -> User:
    return _new_user(server, admin, "bob")


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def _postgres_session() -> Iterator[None]:
    """Stops the tests' PostgreSQL (tests/pg.py) when the session ends, if a test started it."""
    yield
    from tests import pg

    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def metadata_uri(request: pytest.FixtureRequest, tmp_path: Path, _postgres_session: None) -> str:
    """The URI of an empty metadata store, once per backend: the store contract holds for each."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'metadata.sqlite3'}"
    from tests import pg

    return pg.new_database()
