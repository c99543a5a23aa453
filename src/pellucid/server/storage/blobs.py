"""BlobStore: content-addressed bytes (sha256), each stored once, held per owner.

Bytes are deduplicated across owners, but who may use a blob is not: every blob has
owner records (owner, sha256), and an input may name a blob by hash only if its owner
holds one. A blob whose owner records are all gone is garbage (`collect_garbage`).

Small blobs are packed into append-only files indexed in SQLite (see LocalBlobStore);
blobs of 1 MiB and more are files under `blobs/ab/cd/<sha256>`, written to a temporary
name and renamed, so a crash never leaves a partial blob under its final name.

Every method that takes a digest refuses anything but 64 lowercase hex characters
(InvalidDigest), so no caller can make the store name a path outside it.
"""

from __future__ import annotations

import abc
import collections
import ctypes
import hashlib
import os
import queue
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pellucid.server.storage.blob_index import BlobIndex, BlobRow, BlobStoreUnavailable, SqliteBlobIndex

__all__ = ["BlobStoreUnavailable"]  # re-exported: callers catch it with the other blob errors

LARGE_BLOB_BYTES = 1024 * 1024
CHUNK_BYTES = 1024 * 1024


_IOV_MAX = 1024  # buffers per writev on Linux
_GIL_HELD_PIECE_BYTES = 2047  # the largest update hashlib makes without releasing the GIL
_HOLD_GIL_UP_TO = 64 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FILE_MODE = 0o600
_DIR_MODE = 0o700


class InvalidDigest(ValueError):
    """Not a sha256 hex digest: refused before it is used as a key or a path."""


class BlobTooLarge(ValueError):
    """A blob passed the size limit while it was arriving; nothing of it was kept."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the blob is larger than {limit} bytes")
        self.limit = limit


class DigestMismatch(ValueError):
    """The bytes that arrived do not hash to what the sender said; nothing was kept."""

    def __init__(self, actual: str, expected: str) -> None:
        super().__init__(f"the blob's sha256 is {actual}, not {expected}")
        self.actual = actual
        self.expected = expected


_KNOWN_NOT_PACKED = object()  # read_many found no pack row: a blob file of its own (or none)


def is_sha256(value: str) -> bool:
    """64 lowercase hex characters (fullmatch: no trailing newline slips through)."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def check_digest(value: str) -> str:
    if not is_sha256(value):
        raise InvalidDigest(f"{value[:80]!r} is not a sha256 digest (64 lowercase hex characters)")
    return value


def sha256_hex(data: bytes | memoryview) -> str:
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
        hasher.update(view[start : start + _GIL_HELD_PIECE_BYTES])
    return hasher.hexdigest()


@dataclass(frozen=True)
class CollectionReport:
    """What one `collect_garbage` run did."""

    owners_released: int = 0  # owner records of blobs their owner no longer uses
    blobs_deleted: int = 0  # blobs no owner holds any more
    bytes_deleted: int = 0
    packs_compacted: int = 0  # mostly-dead pack files rewritten and removed
    pack_bytes_before: int = 0
    pack_bytes_after: int = 0


# (owner, sha256) pairs in; those still in use (by an input, say) out
ReferenceCheck = Callable[[list[tuple[str, str]]], set[tuple[str, str]]]


class BlobStore(abc.ABC):
    """Bytes by sha256, with owner records. Owners are opaque strings to the store (user ids)."""

    @abc.abstractmethod
    def put_many(self, owner: str, blobs: Sequence[bytes | memoryview], digests: list[str] | None = None) -> list[str]:
        """Store every blob (deduplicated by content) for `owner` and return their sha256 hex
        digests (`digests`, when the caller has them already, saves hashing twice)."""

    @abc.abstractmethod
    def put_stream(
        self, owner: str, chunks: Iterable[bytes | memoryview], max_bytes: int | None = None, expected_sha256: str = ""
    ) -> tuple[str, int]:
        """Store a blob arriving in pieces for `owner`; returns (sha256, size).

        BlobTooLarge as soon as more than `max_bytes` arrived (the rest is not read);
        DigestMismatch if `expected_sha256` is given and differs. Either way nothing is kept.
        """

    @abc.abstractmethod
    def acquire(self, owner: str, digests: list[str]) -> dict[str, int]:
        """Those of `digests` that `owner` holds, with their sizes; each one's grace period
        starts again, because the caller is about to reference it (see collect_garbage).
        A blob held only by others is absent from the answer, exactly like one never stored."""

    @abc.abstractmethod
    def size(self, sha256: str) -> int | None:
        """The blob's size, or None if it is not stored (whoever holds it: callers check owners first)."""

    @abc.abstractmethod
    def read_chunks(self, sha256: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]: ...

    def read_many(self, digests: list[str], chunk_bytes: int = CHUNK_BYTES) -> list[Iterator[bytes]]:
        """`read_chunks` of each digest, in order; a store may look them up together (each
        iterator reads only when it is iterated)."""
        return [self.read_chunks(d, chunk_bytes) for d in digests]

    @abc.abstractmethod
    def backfill_owners(self, references: Callable[[], Iterable[tuple[str, str]]]) -> int:
        """Once per store: give owners to blobs stored before owners existed, from the
        (owner, sha256) pairs `references()` yields (it is called only if needed). Returns
        how many owner records were added."""

    @abc.abstractmethod
    def collect_garbage(self, is_referenced: ReferenceCheck, grace_seconds: float) -> CollectionReport:
        """Release owner records not renewed for `grace_seconds` that `is_referenced` no
        longer vouches for, delete blobs no owner holds, and reclaim their space."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def free_bytes(self) -> int | None:
        """Bytes free where new blobs go, if the store can tell cheaply (None: it cannot, or no such limit)."""
        return None

    @abc.abstractmethod
    def check(self) -> None:
        """Raise BlobStoreUnavailable if the store cannot be reached now (for health checks: one quick probe)."""

    def get(self, sha256: str) -> bytes | None:
        if self.size(sha256) is None:
            return None
        return b"".join(self.read_chunks(sha256))


class LocalBlobStore(BlobStore):
    """Small blobs appended to pack files (`blobs/packs/NNNNNN.pack`), indexed in SQLite;
    large ones one file each. Owner records live in the same SQLite file.

    Measured here for 10 KB blobs in batches of 128: one SQLite BLOB row each costs ~77 us
    (overflow pages written to the WAL, then again at checkpoint), a pack append with its
    index row ~35-45 us (most of it the kernel's first touch of new page-cache pages on
    this VM), a file each ~600 us (file creation on this disk). A batch is appended and
    fdatasync'ed before its index rows commit, so the index never names bytes that are not
    on disk; a crash mid-append leaves only unindexed bytes at the end of a pack, never read.

    Every file it creates is 0600 and every directory 0700 (existing ones are set so on
    open): blobs are users' data.
    """

    PACK_LIMIT = 1 << 30  # start a new pack file after 1 GiB
    COMPACT_DEAD_FRACTION = 0.5  # rewrite a pack once at least half of it is dead
    TEMP_FILE_MAX_AGE = 24 * 3600.0  # an upload's temporary file untouched this long is a crash's leftover

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.files = self.root / "blobs"
        self.packs = self.files / "packs"
        _private_dirs(self.packs)
        index = self.root / "blobs.sqlite3"
        private_files(index, index.with_name(index.name + "-wal"), index.with_name(index.name + "-shm"))
        self.index: BlobIndex = SqliteBlobIndex(index)
        self._lock = threading.Lock()
        self._append_lock = threading.Lock()
        self._drained = threading.Condition(self._append_lock)  # an append to a pack finished
        self._gc_lock = threading.Lock()
        self._closing = threading.Event()  # a collection in progress stops at its next step
        self._readers: dict[int, int] = {}
        self._in_flight: collections.Counter[str] = collections.Counter()  # digests being stored (under _append_lock)
        self._appending: collections.Counter[int] = collections.Counter()  # per pack: appends not yet indexed
        fix_modes = not self.index.flag("modes_fixed")
        if fix_modes:
            self._fix_modes()
        existing = sorted(int(p.stem) for p in self.packs.glob("*.pack"))
        self._pack = existing[-1] if existing else 1
        self._writer = self._open_pack(self._pack)  # held open for the store's life

    def check(self) -> None:
        if not self.packs.is_dir():  # a data dir on a volume that went away
            raise BlobStoreUnavailable(f"the blob store's directory {self.packs} is gone")
        self.index.check()

    def free_bytes(self) -> int | None:
        try:
            stat = os.statvfs(self.files)
        except OSError:
            return None
        return stat.f_bavail * stat.f_frsize

    def _fix_modes(self) -> None:
        """Once per store: files and directories made before they were created private."""
        for directory, _subdirs, names in os.walk(self.files):
            os.chmod(directory, _DIR_MODE)
            for name in names:
                os.chmod(os.path.join(directory, name), _FILE_MODE)
        self.index.set_flag("modes_fixed")

    def _pack_path(self, number: int) -> Path:
        return self.packs / f"{number:06d}.pack"

    def _open_pack(self, number: int) -> int:
        path = self._pack_path(number)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, _FILE_MODE)
        os.fchmod(fd, _FILE_MODE)  # an existing pack too, and whatever the umask
        return fd

    def _path(self, sha256: str) -> Path:
        check_digest(sha256)
        return self.files / sha256[:2] / sha256[2:4] / sha256

    @contextmanager
    def _storing(self, digests: list[str]) -> Iterator[None]:
        """Mark `digests` as being stored: garbage collection leaves them alone until their owner records commit."""
        with self._append_lock:
            if self._writer < 0:
                raise RuntimeError(f"the blob store in {self.root} is closed")
            self._in_flight.update(digests)
        try:
            yield
        finally:
            with self._append_lock:
                self._in_flight.subtract(digests)
                for digest in digests:
                    if self._in_flight[digest] <= 0:
                        del self._in_flight[digest]

    def put_many(self, owner: str, blobs: Sequence[bytes | memoryview], digests: list[str] | None = None) -> list[str]:
        digests = [check_digest(d) for d in digests] if digests is not None else [sha256_hex(b) for b in blobs]
        with self._storing(digests):
            small: dict[str, bytes | memoryview] = {}
            for digest, blob in zip(digests, blobs):
                if len(blob) >= LARGE_BLOB_BYTES:
                    self._write_file(digest, [blob])
                else:
                    small[digest] = blob
            self._append_and_index(owner, small, list(dict.fromkeys(digests)))
        return digests

    def _append_and_index(self, owner: str, small: dict[str, bytes | memoryview], owned: list[str]) -> None:
        """Append the new ones of `small` to the current pack, then index them and record `owner`
        for every digest of `owned`, in one transaction."""
        rows: list[BlobRow] = []
        writer, pack = -1, 0
        if small:
            with self._append_lock:
                if self._writer < 0:
                    raise RuntimeError(f"the blob store in {self.root} is closed")
                known = self.index.stored(list(small))
                new = {d: b for d, b in small.items() if d not in known}
                if new:
                    offset = self._roll_over_if_full()
                    for digest, blob in new.items():
                        rows.append(BlobRow(digest, self._pack, offset, len(blob)))
                        offset += len(blob)
                    _write_all(self._writer, list(new.values()))
                    writer, pack = os.dup(self._writer), self._pack  # still this pack's file after a rollover
                    self._appending[pack] += 1
        try:
            if writer >= 0:  # sync outside the lock: other batches append meanwhile, and one sync covers them all
                os.fdatasync(writer)
            self.index.record(owner, rows, owned, time.time())
        finally:
            if writer >= 0:
                os.close(writer)
                with self._append_lock:
                    self._appending[pack] -= 1
                    self._drained.notify_all()

    def _roll_over_if_full(self) -> int:
        """The current pack's end (under _append_lock), after starting a new pack if it is full."""
        offset = os.fstat(self._writer).st_size  # after a failed append too: its bytes are never indexed
        if offset > self.PACK_LIMIT:
            self._roll_over()
            offset = 0
        return offset

    def _roll_over(self) -> None:
        fresh = self._open_pack(self._pack + 1)  # first: if this fails, the old writer is intact
        try:
            os.fdatasync(self._writer)  # batches still syncing hold their own descriptors
        except BaseException:
            os.close(fresh)
            raise
        os.close(self._writer)
        self._pack, self._writer = self._pack + 1, fresh

    def put_stream(
        self, owner: str, chunks: Iterable[bytes | memoryview], max_bytes: int | None = None, expected_sha256: str = ""
    ) -> tuple[str, int]:
        if expected_sha256:
            check_digest(expected_sha256)
        hasher, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=self.files, prefix=".upload-")  # 0600
        try:
            with _BackgroundWriter(fd) as out:
                for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise BlobTooLarge(max_bytes)  # before writing it: the rest of the stream is never read
                    out.write(chunk)  # written by the writer's thread while this one hashes
                    hasher.update(chunk)
                out.sync()
            digest = hasher.hexdigest()
            if expected_sha256 and expected_sha256 != digest:
                raise DigestMismatch(digest, expected_sha256)
            if size < LARGE_BLOB_BYTES:
                self.put_many(owner, [Path(tmp).read_bytes()], [digest])
            else:
                with self._storing([digest]):
                    final = self._path(digest)
                    _private_dirs(final.parent)
                    os.replace(tmp, final)
                    _sync_directory(final.parent)
                    self._append_and_index(owner, {}, [digest])
            return digest, size
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _write_file(self, digest: str, parts: list[bytes | memoryview]) -> None:
        final = self._path(digest)
        if final.exists():
            return
        _private_dirs(final.parent)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")  # 0600
        try:
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    out.write(part)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        finally:
            Path(tmp).unlink(missing_ok=True)
        _sync_directory(final.parent)

    def acquire(self, owner: str, digests: list[str]) -> dict[str, int]:
        digests = list(dict.fromkeys(check_digest(d) for d in digests))
        held: dict[str, int] = {}
        for sha256, size in self.index.acquire(owner, digests, time.time()).items():
            if size is None:  # a large blob: a file of its own
                path = self._path(sha256)
                size = path.stat().st_size if path.exists() else None
            if size is not None:
                held[sha256] = size
        return held

    def _location(self, sha256: str) -> tuple[int, int, int] | None:
        row = self.index.location(sha256)
        return (row.pack, row.offset, row.size) if row else None

    def size(self, sha256: str) -> int | None:
        location = self._location(check_digest(sha256))
        if location:
            return location[2]
        path = self._path(sha256)
        return path.stat().st_size if path.exists() else None

    def _reader(self, pack: int) -> int:
        """A descriptor of `pack` the caller closes: compaction may close the shared one meanwhile."""
        with self._lock:
            fd = self._readers.get(pack)
            if fd is None:
                fd = self._readers[pack] = os.open(self._pack_path(pack), os.O_RDONLY)
            return os.dup(fd)

    def read_chunks(self, sha256: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        return self._read_chunks(check_digest(sha256), chunk_bytes)  # checked now, not at the first next()

    def read_many(self, digests: list[str], chunk_bytes: int = CHUNK_BYTES) -> list[Iterator[bytes]]:
        """One index query for all of them (a download of many small files made one per file)."""
        packed = self.index.locations(list(dict.fromkeys(check_digest(d) for d in digests)))
        return [self._read_chunks(d, chunk_bytes, _KNOWN_NOT_PACKED if d not in packed else packed[d]) for d in digests]

    def _read_chunks(self, sha256: str, chunk_bytes: int, known: BlobRow | object | None = None) -> Iterator[bytes]:
        """`known`: the blob's row looked up beforehand (or _KNOWN_NOT_PACKED); a pack that
        compaction removed meanwhile sends it to the index again."""
        for attempt in range(2):
            if attempt == 0 and known is not None:
                location = (known.pack, known.offset, known.size) if isinstance(known, BlobRow) else None
            else:
                location = self._location(sha256)
            if not location:
                break
            pack, offset, size = location
            try:
                fd = self._reader(pack)
            except FileNotFoundError:  # compaction moved the blob and removed its pack: look it up again
                if attempt:
                    raise
                continue
            try:
                data = os.pread(fd, size, offset)
            finally:
                os.close(fd)
            for start in range(0, max(size, 1), chunk_bytes):
                yield data[start : start + chunk_bytes]
            return
        with open(self._path(sha256), "rb") as f:
            while chunk := f.read(chunk_bytes):
                yield chunk

    def backfill_owners(self, references: Callable[[], Iterable[tuple[str, str]]]) -> int:
        if self.index.flag("owners_backfilled"):
            return 0
        # inputs made before digests were checked may name anything: only real blobs get owners
        pairs = {(owner, sha256) for owner, sha256 in references() if is_sha256(sha256)}
        packed = self.index.stored(sorted({sha256 for _, sha256 in pairs}))
        records = [(owner, sha256) for owner, sha256 in pairs if sha256 in packed or self._path(sha256).exists()]
        added = self.index.add_owners(records, time.time())
        self.index.set_flag("owners_backfilled")
        return added

    # garbage collection

    def collect_garbage(self, is_referenced: ReferenceCheck, grace_seconds: float) -> CollectionReport:
        """Release stale owner records, delete blobs nobody holds, compact packs, remove leftovers.

        Why uploads in flight are safe:
        - Owner records are written in the same transaction as the index rows of the bytes
          (or after a large blob's file is in place), and while a blob is being stored its
          digest is marked in flight: a blob is deleted only if it has no owner record and
          is not in flight, decided under the append lock, so a concurrent upload either
          finishes first (and is seen as held) or starts after (and stores the bytes again).
        - An owner record is released only if it was not renewed for `grace_seconds` and no
          input references it. Uploading renews it, and so does naming a blob in PostInputs
          (`acquire`, before the inputs are stored), so the gap between UploadBlob and the
          PostInputs that uses it, and between that check and the inputs' commit, is covered
          as long as each takes less than the grace period (1 hour by default). A reference
          count taken at upload time would not help: an uploaded blob is unreferenced until
          its PostInputs arrives, whenever that is, so a grace period is needed anyway.
        Grace 0 is for tests and for a server with no uploads running.
        """
        with self._gc_lock:
            if self._closing.is_set():
                return CollectionReport()
            released = self._release_owners(is_referenced, time.time() - grace_seconds)
            deleted, freed = self._delete_unheld_packed()
            large_deleted, large_freed = self._delete_unheld_files(max(grace_seconds, self.TEMP_FILE_MAX_AGE))
            before = self._pack_bytes()
            compacted = self._compact()
            return CollectionReport(
                owners_released=released,
                blobs_deleted=deleted + large_deleted,
                bytes_deleted=freed + large_freed,
                packs_compacted=compacted,
                pack_bytes_before=before,
                pack_bytes_after=self._pack_bytes(),
            )

    def _release_owners(self, is_referenced: ReferenceCheck, cutoff: float) -> int:
        return release_stale_owners(self.index, is_referenced, cutoff, self._closing)

    def _delete_unheld_packed(self) -> tuple[int, int]:
        candidates = self.index.unowned_rows()
        deleted = freed = 0
        for start in range(0, len(candidates), 500):
            if self._closing.is_set():
                break
            part = dict(candidates[start : start + 500])
            with self._append_lock:  # the bytes stay in the pack until it is compacted
                removed = self.index.remove_unowned(list(part), self._in_flight.__contains__, lambda _digests: None)
            deleted, freed = deleted + len(removed), freed + sum(part[d] for d in removed)
        return deleted, freed

    def _delete_unheld_files(self, temp_max_age: float) -> tuple[int, int]:
        """Large blobs nobody holds, and temporary files that crashed uploads left behind."""
        deleted = freed = 0
        now = time.time()
        for directory, subdirs, names in os.walk(self.files):
            here = Path(directory)
            if self._closing.is_set():
                break
            if here == self.packs:
                subdirs.clear()
                continue
            for name in names:
                if name.startswith((".upload-", ".tmp-")):
                    path = here / name
                    try:
                        if now - path.stat().st_mtime > temp_max_age:
                            path.unlink()
                    except FileNotFoundError:
                        pass
            digests = [n for n in names if is_sha256(n) and here == self.files / n[:2] / n[2:4]]
            for start in range(0, len(digests), 500):
                sizes: dict[str, int] = {}

                def unlink(unowned: list[str], here: Path = here, sizes: dict[str, int] = sizes) -> None:
                    for digest in unowned:
                        path = here / digest
                        try:
                            sizes[digest] = path.stat().st_size
                            path.unlink()
                        except FileNotFoundError:
                            continue

                with self._append_lock:  # unlinked inside the index's transaction: see collect_garbage
                    self.index.remove_unowned(digests[start : start + 500], self._in_flight.__contains__, unlink)
                deleted, freed = deleted + len(sizes), freed + sum(sizes.values())
        return deleted, freed

    def _pack_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.packs.glob("*.pack"))

    def _compact(self) -> int:
        """Rewrite the live blobs of every mostly-dead pack into the current pack, then remove it.

        Crash-safe: the copies are appended and synced before the index points at them, and
        the old pack is removed only after that commit, so the index never names bytes that
        are not on disk. A crash in between leaves unindexed bytes (reclaimed by a later
        compaction) or a pack no row names (removed by the next run).
        """
        compacted = 0
        for path in sorted(self.packs.glob("*.pack")):
            number, total = int(path.stem), path.stat().st_size
            # read now, not before the loop: the current pack has grown by the live blobs moved into it
            dead = total - self.index.live_bytes(number)
            if self._closing.is_set():
                break
            if total and dead >= total * self.COMPACT_DEAD_FRACTION:
                self._compact_pack(number)
                compacted += 1
        return compacted

    def _compact_pack(self, number: int) -> None:
        with self._append_lock:
            if self._writer < 0:
                raise RuntimeError(f"the blob store in {self.root} is closed")
            if number == self._pack:  # no append may land in a pack being compacted
                self._roll_over()
            while self._appending[number]:  # appends made before the rollover: wait for their index rows
                self._drained.wait()
        rows = [(r.sha256, r.offset, r.size) for r in self.index.pack_rows(number)]
        source = os.open(self._pack_path(number), os.O_RDONLY)
        try:
            start = 0
            while start < len(rows):
                if self._closing.is_set():  # what moved is indexed in its new place; the rest stays put
                    return
                batch: list[tuple[str, int, int]] = []
                batch_bytes = 0
                while start < len(rows) and (not batch or batch_bytes < 64 * CHUNK_BYTES):
                    batch.append(rows[start])
                    batch_bytes += rows[start][2]
                    start += 1
                self._move(number, source, batch)
        finally:
            os.close(source)

        def remove() -> None:
            with self._lock:
                fd = self._readers.pop(number, None)
                if fd is not None:
                    os.close(fd)  # readers hold their own duplicates
                self._pack_path(number).unlink(missing_ok=True)

        if not self.index.remove_pack_if_unused(number, remove):
            return  # cannot happen (no append goes there any more); keep the pack rather than lose bytes
        _sync_directory(self.packs)

    def _move(self, number: int, source: int, rows: list[tuple[str, int, int]]) -> None:
        data = [os.pread(source, size, offset) for _, offset, size in rows]
        with self._append_lock:
            if self._writer < 0:
                raise RuntimeError(f"the blob store in {self.root} is closed")
            offset = self._roll_over_if_full()
            moved = []
            for (sha256, _, size), _blob in zip(rows, data):
                moved.append((sha256, number, self._pack, offset))
                offset += size
            _write_all(self._writer, data)
            writer, pack = os.dup(self._writer), self._pack
            self._appending[pack] += 1
        try:
            os.fdatasync(writer)
            self.index.move(moved)
        finally:
            os.close(writer)
            with self._append_lock:
                self._appending[pack] -= 1
                self._drained.notify_all()

    def close(self) -> None:
        self._closing.set()
        with self._gc_lock:  # a collection stops at its next step (a batch, a pack): wait for that
            self.index.close()
            with self._lock:
                for fd in self._readers.values():
                    os.close(fd)
                self._readers.clear()
            with self._append_lock:  # not under an append; and a descriptor number is closed once only
                if self._writer >= 0:
                    os.close(self._writer)
                    self._writer = -1


def release_stale_owners(
    index: BlobIndex, is_referenced: ReferenceCheck, cutoff: float, closing: threading.Event
) -> int:
    """Release owner records not renewed since `cutoff` that `is_referenced` does not vouch for, in batches."""
    released, after = 0, ("", "")
    while not closing.is_set():
        batch = index.stale_owners(after, cutoff, 500)
        if not batch:
            return released
        after = batch[-1]
        in_use = is_referenced([(owner, sha256) for sha256, owner in batch])
        stale = [(sha256, owner) for sha256, owner in batch if (owner, sha256) not in in_use]
        if stale:
            released += index.release_owners(stale, cutoff)
    return released


class _BackgroundWriter:
    """Writes a stream's chunks to `fd` (closed on exit) in a thread of its own, so that hashing
    (in the caller's thread) and writing overlap; both release the GIL. At most QUEUED_CHUNKS wait
    (bounded memory). Every WRITEBACK_BYTES it asks the kernel to start writing the dirty pages
    out, so the final fsync flushes only the tail instead of the whole file."""

    QUEUED_CHUNKS = 4
    WRITEBACK_BYTES = 32 * 1024 * 1024

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(self.QUEUED_CHUNKS)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pellucid-blob-writer", daemon=True)

    def __enter__(self) -> _BackgroundWriter:
        self._thread.start()
        return self

    def _run(self) -> None:
        offset, flushed = 0, 0
        try:
            while (chunk := self._queue.get()) is not None:
                _write_all(self._fd, [chunk])
                offset += len(chunk)
                if offset - flushed >= self.WRITEBACK_BYTES:
                    _start_writeback(self._fd, flushed, offset - flushed)
                    flushed = offset
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            self._error = exc
            while self._queue.get() is not None:  # drained until the end: a waiting write never blocks for good
                pass

    def write(self, chunk: bytes | memoryview) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def sync(self) -> None:
        """Wait for every chunk to be written, then fsync."""
        self._finish()
        os.fsync(self._fd)

    def _finish(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def __exit__(self, *exc: object) -> None:
        try:
            if self._thread.is_alive():
                self._queue.put(None)
                self._thread.join()
        finally:
            os.close(self._fd)


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):  # not Linux
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a range's dirty pages to disk without waiting (Linux); a no-op elsewhere.

    Not a durability step (the final fsync is): it spreads the disk's work over the upload."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _write_all(fd: int, parts: list[bytes] | list[bytes | memoryview]) -> None:
    """Append `parts` with writev: joining a batch first cost a 1+ MB copy and fresh pages per batch."""
    views = [memoryview(p) for p in parts if p]
    first = 0
    while first < len(views):
        written = os.writev(fd, views[first : first + _IOV_MAX])
        while first < len(views) and written >= len(views[first]):  # a short write resumes mid-part
            written -= len(views[first])
            first += 1
        if written:
            views[first] = views[first][written:]


def _private_dirs(path: Path) -> None:
    """`path` and its missing parents, 0700 (mkdir's mode is masked by the umask, so set it after)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=_DIR_MODE)
        except FileExistsError:  # another thread made it meanwhile
            pass
        os.chmod(directory, _DIR_MODE)


def private_files(*paths: Path) -> None:
    """Create the first of `paths` empty if missing; set every one that exists to 0600.

    SQLite creates its database 0644 and gives its -wal and -shm files the database's mode:
    creating the file first is what makes all three private.
    """
    os.close(os.open(paths[0], os.O_RDWR | os.O_CREAT, _FILE_MODE))
    for path in paths:
        if path.exists():
            os.chmod(path, _FILE_MODE)


def _sync_directory(path: Path) -> None:
    """Make a rename into `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


BLOB_STORE_SCHEMES = ("file", "s3")
