"""End-to-end suites again, against a server whose metadata is in PostgreSQL (tests/pg.py).

The tests are those of the imported modules: in this module they get this module's
`server` and `admin`, so each runs once over SQLite (in its own module) and once here.
`PELLUCID_TEST_METADATA=postgresql make test` runs every suite over PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pellucid.client.user import User
from tests.conftest import RunningServer, running_server
from tests.test_apps import *  # noqa: F403
from tests.test_datasets import *  # noqa: F403
from tests.test_inputs import *  # noqa: F403


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, _postgres_session: None) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp("pg-server-data")
    for running in running_server(data_dir, "postgresql"):
        assert running.server.settings.metadata_uri.startswith("postgresql://")
        assert not running.server.data_dir.metadata_path.exists()  # no SQLite store was opened
        yield running


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> User:
    return server.client(server.admin_pat)


def test_connections_the_database_cut_answer_unavailable_and_the_sdk_retries_through(
    server: RunningServer, admin: User
) -> None:
    """PostgreSQL restarting (here: ending every session of the server) is UNAVAILABLE, which the
    SDK retries, not INTERNAL; the pool replaces the cut connections."""
    import grpc
    import psycopg

    from pellucid.api import v1
    from tests import pg

    admin.create_app("before-the-cut")
    database = server.server.settings.metadata_uri.split("/")[3].split("?")[0]
    with psycopg.connect(pg.postgres_server().get_uri(), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
    with grpc.insecure_channel(server.server.address) as channel, pytest.raises(grpc.RpcError) as info:
        v1.AppServiceStub(channel).ListApps(
            v1.ListAppsRequest(), timeout=10, metadata=[("authorization", f"Bearer {server.admin_pat}")]
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "before-the-cut" in [a.id for a in admin.list_apps()]
