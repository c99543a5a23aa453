"""A running pellucid server: owns a data dir, opens the stores, serves gRPC.

Used by `pellucid server` (standalone) and by clients with the `local` target
(embedded, in-process on a loopback port).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from pellucid.server.datadir import DataDir, LocalCredentials, ServerLock
from pellucid.server.engine import Engine
from pellucid.server.grpc.server import build_server
from pellucid.server.storage import open_metadata_store
from pellucid.server.storage.blobs import open_blob_store

log = logging.getLogger("pellucid.server")


class DataDirInUse(RuntimeError):
    """Another running server owns the data directory."""


@dataclass(frozen=True)
class ServerSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    # Empty: SQLite in the data dir.
    metadata_uri: str = ""
    # Empty: files (and a SQLite file for small blobs) in the data dir.
    blob_uri: str = ""
    admin_user_id: str = "admin"
    max_workers: int = 256
    # Fetch URL inputs from loopback and private networks too. Off for a shared server:
    # callers could make it read what only it can reach (see engine/fetch.py).
    allow_private_urls: bool = False
    # Largest blob a caller may store (UploadBlob, or an input's bytes): 1 GiB.
    max_blob_bytes: int = 1 << 30
    # Blob garbage collection: how often (seconds; 0 turns it off), and how long an uploaded
    # blob no input uses is kept (it may be waiting for the PostInputs that will use it).
    blob_gc_interval_seconds: float = 3600.0
    blob_gc_grace_seconds: float = 3600.0


class PellucidServer:
    def __init__(self, settings: ServerSettings, lock: ServerLock | None = None) -> None:
        self.settings = settings
        self.data_dir = DataDir(settings.data_dir)
        self._lock = lock
        self._server: grpc.Server | None = None
        self.engine: Engine | None = None
        self.port = 0
        self._stopped = threading.Event()
        self._stop_gc = threading.Event()
        self._gc_thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """Where a client on this machine connects."""
        host = self.settings.host
        if host in ("", "0.0.0.0", "::", "[::]"):
            host = "127.0.0.1"
        return f"{host}:{self.port}"

    def start(self) -> str:
        if self._lock is None:
            self._lock = self.data_dir.try_lock()
            if self._lock is None:
                running = self.data_dir.wait_for_address(timeout=5.0)
                raise DataDirInUse(
                    f"{self.data_dir.path} is already served by a pellucid server at {running or 'an address not yet published'}; "
                    "connect to it, or stop it first"
                )
        try:
            store = open_metadata_store(self.settings.metadata_uri or f"sqlite://{self.data_dir.metadata_path}")
            blobs = open_blob_store(self.settings.blob_uri or f"file://{self.data_dir.path}")
            self.engine = Engine(store, blobs, allow_private_urls=self.settings.allow_private_urls,
                                 max_blob_bytes=self.settings.max_blob_bytes,
                                 blob_grace_seconds=self.settings.blob_gc_grace_seconds)
            # this process owns the data dir (lock): unfinished claims are from a crashed server
            store.release_unfinished_requests()
            created = self.engine.users.bootstrap(self.settings.admin_user_id)
            if created is not None:
                user, secret = created
                self.data_dir.write_credentials(LocalCredentials(user_id=user.id, pat=secret))
                log.info("created the first user %r; its PAT is in %s", user.id, self.data_dir.credentials_path)
            self._server, self.port, _ = build_server(
                self.engine, self.settings.host, self.settings.port, self.settings.max_workers
            )
            self._server.start()
            self._lock.publish(self.address)
            if self.settings.blob_gc_interval_seconds > 0:
                self._gc_thread = threading.Thread(target=self._collect_garbage_periodically, args=(self.engine,),
                                                   name="pellucid-blob-gc", daemon=True)
                self._gc_thread.start()
        except BaseException:
            self._release()
            raise
        return self.address

    def stop(self, grace: float = 5.0) -> None:
        """Finish in-flight calls (up to `grace` seconds), then release the data dir."""
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        self._release()
        self._stopped.set()

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
                log.info("blob garbage collection: %d blobs (%d bytes) deleted, %d packs compacted",
                         report.blobs_deleted, report.bytes_deleted, report.packs_compacted)

    def _release(self) -> None:
        self._stop_gc.set()
        if self.engine is not None:
            self.engine.close()  # a garbage collection in progress stops at its next step
            self.engine = None
        if self._gc_thread is not None:
            self._gc_thread.join()
            self._gc_thread = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
