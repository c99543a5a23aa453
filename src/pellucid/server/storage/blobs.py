"""BlobStore: content-addressed bytes (sha256), each stored once.

Small blobs are packed into append-only files indexed in SQLite (see LocalBlobStore);
blobs of 1 MiB and more are files under `blobs/ab/cd/<sha256>`, written to a temporary
name and renamed, so a crash never leaves a partial blob under its final name.
"""

from __future__ import annotations

import abc
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from pellucid.server.storage.sqlite_connections import ThreadConnections, insert_rows

LARGE_BLOB_BYTES = 1024 * 1024
CHUNK_BYTES = 1024 * 1024


_IOV_MAX = 1024  # buffers per writev on Linux
_GIL_HELD_PIECE_BYTES = 2047  # the largest update hashlib makes without releasing the GIL
_HOLD_GIL_UP_TO = 64 * 1024


def sha256_hex(data: bytes) -> str:
    """sha256 of `data`; a small blob is hashed in pieces too small for hashlib to release the GIL.

    Releasing it for each 10 KB blob handed the GIL to another thread 128 times a
    batch; under a bulk upload the handler then waited to get it back, and this line
    was 17% of PostInputs' time (py-spy). The pieces cost ~1 us more per 10 KB. A large
    blob is hashed in one call, which lets other threads run meanwhile.
    """
    if len(data) > _HOLD_GIL_UP_TO:
        return hashlib.sha256(data).hexdigest()
    hasher, view = hashlib.sha256(), memoryview(data)
    for start in range(0, len(view), _GIL_HELD_PIECE_BYTES):
        hasher.update(view[start:start + _GIL_HELD_PIECE_BYTES])
    return hasher.hexdigest()


class BlobStore(abc.ABC):
    @abc.abstractmethod
    def put_many(self, blobs: list[bytes], digests: list[str] | None = None) -> list[str]:
        """Store every blob (deduplicated by content) and return their sha256 hex digests
        (`digests`, when the caller has them already, saves hashing twice)."""

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
    """Small blobs appended to pack files (`blobs/packs/NNNNNN.pack`), indexed in SQLite;
    large ones one file each.

    Measured here for 10 KB blobs in batches of 128: one SQLite BLOB row each costs ~77 us
    (overflow pages written to the WAL, then again at checkpoint), a pack append with its
    index row ~35-45 us (most of it the kernel's first touch of new page-cache pages on
    this VM), a file each ~600 us (file creation on this disk). A batch is appended and
    fdatasync'ed before its index rows commit, so the index never names bytes that are not
    on disk; a crash mid-append leaves only unindexed bytes at the end of a pack, never read.
    """

    PACK_LIMIT = 1 << 30  # start a new pack file after 1 GiB

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.files = self.root / "blobs"
        self.packs = self.files / "packs"
        self.packs.mkdir(parents=True, exist_ok=True)
        self._connections = ThreadConnections(self.root / "blobs.sqlite3")
        self._conn = self._connections.get
        self._lock = threading.Lock()
        self._append_lock = threading.Lock()
        self._readers: dict[int, int] = {}
        self._conn().execute(
            "CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL,"
            " size INTEGER NOT NULL) WITHOUT ROWID"
        )
        existing = sorted(int(p.stem) for p in self.packs.glob("*.pack"))
        self._pack = existing[-1] if existing else 1
        self._writer = self._open_pack(self._pack)  # held open for the store's life

    def _pack_path(self, number: int) -> Path:
        return self.packs / f"{number:06d}.pack"

    def _open_pack(self, number: int) -> int:
        return os.open(self._pack_path(number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _path(self, sha256: str) -> Path:
        return self.files / sha256[:2] / sha256[2:4] / sha256

    def _known(self, digests: list[str]) -> set[str]:
        known: set[str] = set()
        conn = self._conn()
        for start in range(0, len(digests), 900):
            part = digests[start:start + 900]
            known.update(r[0] for r in conn.execute(
                f"SELECT sha256 FROM blobs WHERE sha256 IN ({','.join('?' * len(part))})", part))
        return known

    def put_many(self, blobs: list[bytes], digests: list[str] | None = None) -> list[str]:
        digests = digests or [sha256_hex(b) for b in blobs]
        small: dict[str, bytes] = {}
        for digest, blob in zip(digests, blobs):
            if len(blob) >= LARGE_BLOB_BYTES:
                self._write_file(digest, [blob])
            else:
                small[digest] = blob
        if not small:
            return digests
        with self._append_lock:
            if self._writer < 0:
                raise RuntimeError(f"the blob store in {self.root} is closed")
            known = self._known(list(small))
            new = {d: b for d, b in small.items() if d not in known}
            if not new:
                return digests
            offset = os.fstat(self._writer).st_size  # after a failed append too: its bytes are never indexed
            if offset > self.PACK_LIMIT:
                fresh = self._open_pack(self._pack + 1)  # first: if this fails, the old writer is intact
                try:
                    os.fdatasync(self._writer)  # batches still syncing hold their own descriptors (below)
                except BaseException:
                    os.close(fresh)
                    raise
                os.close(self._writer)
                self._pack, self._writer, offset = self._pack + 1, fresh, 0
            rows = []
            for digest, blob in new.items():
                rows.append((digest, self._pack, offset, len(blob)))
                offset += len(blob)
            _write_all(self._writer, list(new.values()))
            writer = os.dup(self._writer)  # still this pack's file, even if a rollover closes the writer
        # sync outside the lock: other batches append meanwhile, and one sync covers them all
        try:
            os.fdatasync(writer)
        finally:
            os.close(writer)
        with self._connections.write() as conn:
            insert_rows(conn, "INSERT INTO blobs (sha256, pack, offset, size)", rows, "ON CONFLICT DO NOTHING")
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
                self.put_many([Path(tmp).read_bytes()], [digest])
            else:
                final = self._path(digest)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
                _sync_directory(final.parent)
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
        _sync_directory(final.parent)

    def _location(self, sha256: str) -> tuple[int, int, int] | None:
        row = self._conn().execute("SELECT pack, offset, size FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def size(self, sha256: str) -> int | None:
        location = self._location(sha256)
        if location:
            return location[2]
        path = self._path(sha256)
        return path.stat().st_size if path.exists() else None

    def _reader(self, pack: int) -> int:
        with self._lock:
            fd = self._readers.get(pack)
            if fd is None:
                fd = self._readers[pack] = os.open(self._pack_path(pack), os.O_RDONLY)
            return fd

    def read_chunks(self, sha256: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        location = self._location(sha256)
        if location:
            pack, offset, size = location
            data = os.pread(self._reader(pack), size, offset)
            for start in range(0, max(size, 1), chunk_bytes):
                yield data[start:start + chunk_bytes]
            return
        with open(self._path(sha256), "rb") as f:
            while chunk := f.read(chunk_bytes):
                yield chunk

    def close(self) -> None:
        self._connections.close()
        with self._lock:
            for fd in self._readers.values():
                os.close(fd)
            self._readers.clear()
        with self._append_lock:  # not under an append; and a descriptor number is closed once only
            if self._writer >= 0:
                os.close(self._writer)
                self._writer = -1


def _write_all(fd: int, parts: list[bytes]) -> None:
    """Append `parts` with writev: joining a batch first cost a 1+ MB copy and fresh pages per batch."""
    views = [memoryview(p) for p in parts if p]
    first = 0
    while first < len(views):
        written = os.writev(fd, views[first:first + _IOV_MAX])
        while first < len(views) and written >= len(views[first]):  # a short write resumes mid-part
            written -= len(views[first])
            first += 1
        if written:
            views[first] = views[first][written:]


def _sync_directory(path: Path) -> None:
    """Make a rename into `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_blob_store(uri: str) -> BlobStore:
    """`file:///path/to/dir` (or a bare path): the embedded store."""
    if uri.startswith("file://"):
        return LocalBlobStore(Path(uri[len("file://"):]))
    if "://" not in uri:
        return LocalBlobStore(Path(uri))
    raise ValueError(f"unsupported blob store {uri.split('://')[0]!r}: use file:///path/to/dir")
