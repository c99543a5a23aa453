"""A running pellucid server: owns a data dir, opens the stores, serves gRPC.

Used by `pellucid server` (standalone) and by clients with the `local` target
(embedded, in-process on a loopback port).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health

from pellucid.server import faults
from pellucid.server.datadir import STANDALONE, DataDir, LocalCredentials, ServerLock
from pellucid.server.engine import Engine
from pellucid.server.grpc.limits import CallLimits
from pellucid.server.grpc.pool import HandlerPool
from pellucid.server.grpc.server import SERVICES, build_server
from pellucid.server.grpc.translate.runners import ProtoWorkCodec
from pellucid.server.health import HealthMonitor, StoreProbe
from pellucid.server.settings import ServerSettings
from pellucid.server.storage import MetadataStore, open_metadata_store

if TYPE_CHECKING:
    from pellucid.server.http import HttpServer
from pellucid.server.storage.registry import (
    check_vector_index_uri,
    check_work_queue_uri,
    open_blob_store,
    open_vector_index,
    open_work_queue,
    vector_index_uri,
)

__all__ = ["DataDirInUse", "PellucidServer", "PortInUse", "ServerSettings", "TlsSettingsError"]

log = logging.getLogger("pellucid.server")


class DataDirInUse(RuntimeError):
    """Another running server owns the data directory."""


class PortInUse(OSError):
    """Another process listens on the port the server was told to use."""


class TlsSettingsError(ValueError):
    """The TLS certificate, key or client CA cannot be used; the message says which file and why."""


class PellucidServer:
    def __init__(self, settings: ServerSettings, lock: ServerLock | None = None) -> None:
        self.settings = settings
        self.data_dir = DataDir(settings.data_dir)
        self._lock = lock
        self._server: grpc.Server | None = None
        self.engine: Engine | None = None
        self.port = 0
        # the HTTP port (settings.http_port), when it listens
        self.http: HttpServer | None = None
        self.http_port = 0
        self._stopped = threading.Event()
        self._stop_gc = threading.Event()
        self._gc_thread: threading.Thread | None = None
        self._handlers: HandlerPool | None = None
        # this process among the replicas sharing the metadata store (its request claims carry it)
        self.replica_id = uuid.uuid4().hex
        self._heartbeat_thread: threading.Thread | None = None
        self.health: HealthMonitor | None = None
        self._health_servicer: health.HealthServicer | None = None

    @property
    def address(self) -> str:
        """Where a client on this machine connects."""
        host = self.settings.host
        if host in ("", "0.0.0.0", "::", "[::]"):
            host = "127.0.0.1"
        return f"{host}:{self.port}"

    @property
    def call_limits(self) -> CallLimits:
        s = self.settings
        return CallLimits(
            max_workers=s.max_workers,
            max_streams_per_user=s.max_streams_per_user,
            max_predicts_per_user=s.max_predicts_per_user,
            max_input_batches_per_user=s.max_input_batches_per_user,
            max_searches_per_user=s.max_searches_per_user,
            max_runner_connections_per_user=s.max_runner_connections_per_user,
        )

    def start(self) -> str:
        """Check the settings and the port, take the data dir, open the stores and listen.

        Nothing is created in the data dir unless the TLS files are usable and the port is free."""
        credentials = server_credentials(self.settings)
        check_work_queue_uri(self.settings.queue_uri)  # ValueError naming the accepted URIs
        check_vector_index_uri(self.settings.vectors_uri)
        if self.settings.port:
            check_port_free(self.settings.host, self.settings.port)
        if self._lock is None:
            self._lock = self.data_dir.try_lock(kind=STANDALONE)
            if self._lock is None:
                self.data_dir.wait_for_address(timeout=5.0)
                # a client checking who owns the dir holds the lock (shared) for an instant: look again
                self._lock = self.data_dir.try_lock(kind=STANDALONE)
            if self._lock is None:
                owner = self.data_dir.owner()
                holder = owner.describe() if owner else "another pellucid server"
                raise DataDirInUse(f"{self.data_dir.path} is in use by {holder}; connect to it, or stop it first")
        try:
            faults.configure(os.environ.get("PELLUCID_FAULT", ""))  # test-only crash points (server/faults.py)
            if not self.settings.metadata_uri:
                self.data_dir.create_private_file(self.data_dir.metadata_path)
            queue = open_work_queue(self.settings.queue_uri)
            store = open_metadata_store(self.settings.metadata_uri or f"sqlite://{self.data_dir.metadata_path}")
            try:
                blobs = open_blob_store(
                    self.settings.blob_uri or f"file://{self.data_dir.path}",
                    self.data_dir.path,
                    shared_index_uri=self.settings.metadata_uri,  # PostgreSQL: S3 blobs' index goes there too
                )
            except BaseException:
                store.close()
                raise
            try:
                vectors = open_vector_index(
                    vector_index_uri(self.settings.vectors_uri, self.settings.metadata_uri), self.data_dir.path
                )
            except BaseException:
                blobs.close()
                store.close()
                raise
            self.engine = Engine(
                store,
                blobs,
                allow_private_urls=self.settings.allow_private_urls,
                max_blob_bytes=self.settings.max_blob_bytes,
                blob_grace_seconds=self.settings.blob_gc_grace_seconds,
                queue=queue,
                work_codec=ProtoWorkCodec(),
                replica_id=self.replica_id,
                vectors=vectors,
                max_data_file_bytes=self.settings.max_data_file_bytes,
            )
            self.engine.training.max_seconds = self.settings.training_max_seconds
            self.engine.algorithms.call_retention_seconds = self.settings.algorithm_call_retention_seconds
            self._join_replicas(store)
            created = self.engine.users.bootstrap(self.settings.admin_user_id)
            if created is not None:
                user, secret = created
                self.data_dir.write_credentials(LocalCredentials(user_id=user.id, pat=secret))
                log.info("created the first user %r; its PAT is in %s", user.id, self.data_dir.credentials_path)
            built = build_server(
                self.engine,
                self.settings.host,
                self.settings.port,
                self.settings.max_workers,
                self.call_limits,
                credentials,
            )
            self._server, self.port, self._handlers = built.server, built.port, built.executor
            self._health_servicer = built.health
            self._server.start()
            if self.settings.http_port is not None:
                self._start_http(self.engine)
            if self.settings.health_check_seconds > 0:
                self.health = HealthMonitor(
                    built.health,
                    ["", *(f"pellucid.api.v1.{name}" for *_, name in SERVICES)],
                    store_probes(self.engine),
                    interval=self.settings.health_check_seconds,
                )
                self.health.start()
            self._lock.publish(self.address, tls=self.settings.tls)
            warning = plaintext_exposure_warning(self.settings)
            if warning:
                log.warning("%s", warning)
            # with the metadata in the data dir no other process embeds: claims left are a dead one's
            self.engine.indexer.start(self.settings.index_workers, exclusive=not self.settings.metadata_uri)
            self.engine.training.start(self.settings.training_workers, exclusive=not self.settings.metadata_uri)
            self.engine.evaluations.start(self.settings.evaluation_workers, exclusive=not self.settings.metadata_uri)
            if self.settings.blob_gc_interval_seconds > 0:
                self._gc_thread = threading.Thread(
                    target=self._collect_garbage_periodically, args=(self.engine,), name="pellucid-blob-gc", daemon=True
                )
                self._gc_thread.start()
        except BaseException:
            self._release()
            raise
        return self.address

    def _start_http(self, engine: Engine) -> None:
        """The HTTP port (server/http), on its own thread and event loop, ending with the server."""
        from pellucid.server.http import HttpServer, build_http_app
        from pellucid.server.http.app import HttpLimits

        limits = HttpLimits(self.settings.max_http_body_bytes, self.settings.max_predicts_per_user)
        from pellucid.server.http.oip import oip_routes

        # other HTTP protocols add their routes and OpenAPI paths here: the Open Inference Protocol's /v2
        routes: list[Any] = list(oip_routes(engine, self.settings.max_predicts_per_user))
        openapi_paths: dict[str, Any] = {}
        self.http = HttpServer(
            build_http_app(engine, routes, limits, openapi_paths),
            self.settings.host,
            self.settings.http_port or 0,
            self.settings.tls_cert,
            self.settings.tls_key,
            self.settings.tls_client_ca,
        )
        self.http_port = self.http.start()
        scheme = "https" if self.settings.tls else "http"
        engine.deployments.http_base_url = f"{scheme}://{self.address.rsplit(':', 1)[0]}:{self.http_port}"
        log.info("serving HTTP on %s", engine.deployments.http_base_url)

    def _join_replicas(self, store: MetadataStore) -> None:
        """Announce this replica and release the request claims of gone ones, never of live ones.

        With the metadata in the data dir (the default), this process holds the data dir's
        lock: no other replica can be running, so every other replica's claims are left by a
        crash and released now. A store shared by replicas (--metadata URI) releases only
        those of replicas whose heartbeat is older than replica_gone_seconds."""
        now = time.time()
        store.renew_replica(self.replica_id, now)
        exclusive = not self.settings.metadata_uri
        alive_since = float("inf") if exclusive else now - self.settings.replica_gone_seconds
        released = store.release_gone_replicas(alive_since, self.replica_id)
        if released:
            log.info("released %d request claims left by server processes that are gone", released)
        self._heartbeat_thread = threading.Thread(
            target=self._heartbeat, args=(store,), name="pellucid-replica-heartbeat", daemon=True
        )
        self._heartbeat_thread.start()

    def _heartbeat(self, store: MetadataStore) -> None:
        """Renew this replica's heartbeat until the server stops, and release the claims of
        replicas gone silent meanwhile (killed, not stopped), so retries of their requests need
        not wait for a restart. A failure (the database away) is retried at the next beat."""
        while not self._stop_gc.wait(self.settings.replica_heartbeat_seconds):
            try:
                now = time.time()
                store.renew_replica(self.replica_id, now)
                released = store.release_gone_replicas(now - self.settings.replica_gone_seconds, self.replica_id)
                if released:
                    log.info("released %d request claims of server processes gone silent", released)
            except Exception:
                log.exception("replica heartbeat failed")

    def stop(self, grace: float = 5.0) -> None:
        """Finish in-flight calls (up to `grace` seconds), then release the data dir."""
        if self.health is not None:
            self.health.stop()
            self.health = None
        self._stop_http(grace)
        if self._server is not None:
            if self._health_servicer is not None:
                self._health_servicer.enter_graceful_shutdown()  # NOT_SERVING: load balancers stop sending calls
            self._server.stop(grace).wait()
            self._server = None
        self._drain_handlers(grace)
        self._release()
        self._stopped.set()

    def _drain_handlers(self, grace: float) -> None:
        """Wait for handlers still running after grpc's stop (it cancels calls, it does not join
        their threads): closing the stores under a handler that is still writing crashed SQLite."""
        if self._handlers is None:
            return
        handlers, self._handlers = self._handlers, None
        if self.engine is not None:
            self.engine.indexer.request_stop()  # before the router closes under a model embedder's predict
            self.engine.training.request_stop()
            self.engine.evaluations.request_stop()  # likewise for an evaluation's predict
            self.engine.router.close()  # wakes predicts waiting for a runner
        drained = threading.Thread(target=handlers.shutdown, kwargs={"wait": True}, name="pellucid-drain", daemon=True)
        drained.start()
        drained.join(grace + 5.0)
        if drained.is_alive():
            log.warning("calls were still running %.0f s after shutdown began; closing the stores anyway", grace + 5.0)

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def _collect_garbage_periodically(self, engine: Engine) -> None:
        """Blob garbage collection every blob_gc_interval_seconds, until the server stops."""
        while not self._stop_gc.wait(self.settings.blob_gc_interval_seconds):
            try:
                report = engine.collect_blob_garbage()
            except Exception:  # logged; the next run tries again, and serving goes on
                log.exception("blob garbage collection failed")
                continue
            if report.blobs_deleted or report.packs_compacted:
                log.info(
                    "blob garbage collection: %d blobs (%d bytes) deleted, %d packs compacted",
                    report.blobs_deleted,
                    report.bytes_deleted,
                    report.packs_compacted,
                )

    def _stop_http(self, grace: float) -> None:
        if self.http is not None:
            self.http.stop(grace)
            self.http = None

    def _release(self) -> None:
        self._stop_http(0.5)  # a start that failed half way
        self._stop_gc.set()
        if self.health is not None:  # a start that failed half way
            self.health.stop()
            self.health = None
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join()
            self._heartbeat_thread = None
            if self.engine is not None:
                try:  # handlers are drained: claims still open are from calls that were cut off
                    self.engine.store.retire_replica(self.replica_id)
                except Exception:
                    log.exception("could not retire replica %s", self.replica_id)
        if self.engine is not None:
            self.engine.close()  # a garbage collection in progress stops at its next step
            self.engine = None
        if self._gc_thread is not None:
            self._gc_thread.join()
            self._gc_thread = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def store_probes(engine: Engine) -> list[StoreProbe]:
    """A quick probe of each store the engine uses: a cheap query for the metadata store (and a
    queue that has one), a bucket HEAD and index query for the blobs."""
    probes = [StoreProbe("metadata", engine.store.check), StoreProbe("blob", engine.blobs.check)]
    queue_check = getattr(engine.queue, "check", None)  # a queue in another process (PostgreSQL) has one
    if callable(queue_check):
        probes.append(StoreProbe("work queue", queue_check))
    vectors_check = getattr(engine.vectors, "check", None)  # an index in another process (pgvector) has one
    if callable(vectors_check):
        probes.append(StoreProbe("vector index", vectors_check))
    return probes


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' PEM files (None: plaintext), checked before anything starts."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise TlsSettingsError(
                "a client CA needs TLS: give the server's certificate and key too (--tls-cert, --tls-key)"
            )
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise TlsSettingsError("TLS needs both a certificate and its private key (--tls-cert FILE --tls-key FILE)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSettingsError(
            f"cannot use the TLS certificate {settings.tls_cert} with the key {settings.tls_key}: {exc} "
            "(both must be PEM files, the key unencrypted and matching the certificate)"
        ) from None
    client_ca = None
    if settings.tls_client_ca is not None:
        try:
            context.load_verify_locations(settings.tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSettingsError(
                f"cannot use the client CA {settings.tls_client_ca}: {exc} (a PEM file is needed)"
            ) from None
        client_ca = Path(settings.tls_client_ca).read_bytes()
    pair = (Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)


def is_loopback(host: str) -> bool:
    """True if only this machine can reach `host` (a hostname other than localhost counts as reachable)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plaintext_exposure_warning(settings: ServerSettings) -> str | None:
    """The warning a server listening beyond this machine without TLS logs at start."""
    if settings.tls or is_loopback(settings.host):
        return None
    return (
        f"listening on {settings.host} without TLS: tokens and data cross the network in clear text, readable and "
        "changeable by anyone on the path. Pass --tls-cert FILE --tls-key FILE (ServerSettings.tls_cert/tls_key), "
        "or listen on 127.0.0.1 behind a TLS proxy"
    )


def check_port_free(host: str, port: int) -> None:
    """Raise PortInUse if another process listens on host:port (probed with a socket bound and closed at once)."""
    try:
        addresses = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(
                socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
            )  # as gRPC does: a closed port's TIME_WAIT is no owner
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUse(
                        f"port {port} on {host} is in use by another process; stop it, or pass --port N "
                        "(--port 0 picks a free one)"
                    ) from None
                if exc.errno != errno.EADDRNOTAVAIL:  # e.g. no IPv6 on this machine: gRPC skips it too
                    raise
