"""gRPC health follows the stores: NOT_SERVING while PostgreSQL or S3 does not answer, SERVING once
they do again, with no restart; the real servers are cut and brought back (tests/pg.py, tests/s3_server.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pellucid.api import v1
from pellucid.server.health import HealthMonitor, StoreProbe
from pellucid.server.runtime import PellucidServer, ServerSettings
from tests import pg
from tests.s3_server import CREDENTIALS, MotoServer

PROBE_SECONDS = 0.05  # the monitor's interval here: fast tests, and no test waits for a fixed time
BOUNDED = 30.0  # the most a state change may take before the test fails
SERVICES = ("", "pellucid.api.v1.AppService", "pellucid.api.v1.InputService")


def health_status(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


def assert_health(server: PellucidServer, status: int) -> None:
    for service in SERVICES:
        assert health_status(server.address, service) == status, service


def list_apps(server: PellucidServer, pat: str) -> list[str]:
    with grpc.insecure_channel(server.address) as channel:
        reply = v1.AppServiceStub(channel).ListApps(
            v1.ListAppsRequest(), timeout=15, metadata=[("authorization", f"Bearer {pat}")]
        )
    return [app.id for app in reply.apps]


def start_server(data_dir: Path, **settings: object) -> tuple[PellucidServer, str]:
    server = PellucidServer(
        ServerSettings(data_dir=data_dir, port=0, health_check_seconds=PROBE_SECONDS, **settings)  # type: ignore[arg-type]
    )
    server.start()
    credentials = server.data_dir.read_credentials()
    assert credentials is not None
    return server, credentials.pat


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def postgres_database(_postgres_session: None) -> Iterator[str]:
    uri = pg.new_database()
    yield uri
    set_connections_allowed(uri, True)  # a failed test leaves no database locked


def set_connections_allowed(uri: str, allowed: bool) -> None:
    """PostgreSQL unreachable for one database, as a server restart or a cut network makes it:
    new connections are refused and the open ones are ended (and back with allowed=True)."""
    database = urlsplit(uri).path.lstrip("/")
    with psycopg.connect(pg.postgres_server().get_uri(), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}'.encode())
        if not allowed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )


def test_health_is_not_serving_while_postgresql_is_unreachable_and_serving_again_after(
    tmp_path: Path, postgres_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    server, pat = start_server(tmp_path / "data", metadata_uri=postgres_database)
    try:
        assert server.health is not None
        assert_health(server, health_pb2.HealthCheckResponse.SERVING)
        assert list_apps(server, pat) == []
        set_connections_allowed(postgres_database, False)
        assert server.health.wait_until(serving=False, timeout=BOUNDED)
        assert_health(server, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert "metadata" in server.health.failing
        assert any("metadata store is unavailable" in r.getMessage() for r in caplog.records)
        with pytest.raises(grpc.RpcError) as refused:  # calls meanwhile: retry later, not an internal error
            list_apps(server, pat)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        set_connections_allowed(postgres_database, True)
        assert server.health.wait_until(serving=True, timeout=BOUNDED)
        assert_health(server, health_pb2.HealthCheckResponse.SERVING)
        assert list_apps(server, pat) == []  # the same process answers again: no restart
    finally:
        server.stop(grace=0.5)


def test_health_follows_a_pgvector_index_and_its_calls_say_unavailable(tmp_path: Path, postgres_database: str) -> None:
    """Metadata in SQLite, vectors in PostgreSQL: the vector index alone going away is NOT_SERVING."""
    import numpy as np

    from pellucid.server.storage.base import StoreUnavailable

    server, _ = start_server(tmp_path / "data", vectors_uri=postgres_database)
    try:
        assert server.health is not None and server.engine is not None
        vectors = server.engine.vectors
        vectors.upsert("a/b/text", np.arange(2, dtype=np.int64), np.ones((2, 3), dtype=np.float32))
        assert_health(server, health_pb2.HealthCheckResponse.SERVING)
        set_connections_allowed(postgres_database, False)
        assert server.health.wait_until(serving=False, timeout=BOUNDED)
        assert "vector index" in server.health.failing
        with pytest.raises(StoreUnavailable):
            vectors.count("a/b/text")
        set_connections_allowed(postgres_database, True)
        assert server.health.wait_until(serving=True, timeout=BOUNDED)
        assert vectors.count("a/b/text") == 2
    finally:
        server.stop(grace=0.5)


def test_health_is_not_serving_while_s3_is_unreachable_and_serving_again_after(
    tmp_path: Path, aws_environment: None
) -> None:
    moto = MotoServer(tmp_path)
    moto.start()
    server = None
    try:
        bucket = moto.new_bucket()
        server, pat = start_server(tmp_path / "data", blob_uri=moto.uri(bucket))
        assert server.health is not None
        assert_health(server, health_pb2.HealthCheckResponse.SERVING)
        port = moto.port
        moto.stop()
        assert server.health.wait_until(serving=False, timeout=BOUNDED)
        assert_health(server, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert list(server.health.failing) == ["blob"]
        assert list_apps(server, pat) == []  # metadata calls are still answered by this replica
        moto.start(port=port)  # the same endpoint again (moto keeps buckets in memory: make it anew)
        moto.client().create_bucket(Bucket=bucket)
        assert server.health.wait_until(serving=True, timeout=BOUNDED)
        assert_health(server, health_pb2.HealthCheckResponse.SERVING)
        from pellucid.client.user import User

        admin = User(base_url=f"grpc://{server.address}", pat=pat)
        inputs = admin.create_app("after-s3-returned").inputs()
        data = b"bytes stored once S3 answers again"
        inputs.upload_text(input_id="after", raw_text=data.decode())
        assert inputs.download_inputs(["after"]) == [data]
    finally:
        if server is not None:
            server.stop(grace=0.5)
        moto.stop()


def test_a_probe_that_hangs_counts_as_failing_and_is_not_started_twice() -> None:
    """A network that drops packets makes a probe hang rather than fail: it must not hold SERVING."""
    import threading

    from grpc_health.v1 import health

    release = threading.Event()
    started = []

    def hanging() -> None:
        started.append(1)
        release.wait(BOUNDED)

    servicer = health.HealthServicer()
    monitor = HealthMonitor(servicer, [""], [StoreProbe("metadata", hanging)], interval=60, probe_timeout=0.05)
    assert "within" in monitor.check_now()["metadata"]
    assert "not returned" in monitor.check_now()["metadata"]
    assert len(started) == 1 and not monitor.serving
    release.set()
    assert monitor.wait_until(serving=False, timeout=BOUNDED)
    monitor.stop()


def test_probes_run_on_one_thread_per_store_so_sqlite_opens_no_connection_per_probe() -> None:
    """SQLite keeps a connection per thread: a thread per probe would leak one every few seconds."""
    import threading

    from grpc_health.v1 import health

    threads = []
    monitor = HealthMonitor(
        health.HealthServicer(),
        [""],
        [StoreProbe("metadata", lambda: threads.append(threading.get_ident()))],
        interval=60,
    )
    for _ in range(3):
        assert monitor.check_now() == {}
    assert len(set(threads)) == 1 and len(threads) == 3
    monitor.stop()
