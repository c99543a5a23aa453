"""The exact VectorIndex (`exact:///path`, `memory:`): numpy brute force over one contiguous
float32 matrix per space.

Each space keeps its vectors in a preallocated matrix whose capacity doubles, a key -> row
dict, the keys by row, and the rows' L2 norms (cosine and euclidean need them, so they are
computed once at upsert, not per query). A delete moves the last row into the hole (no
gaps to skip). A search is one matrix-vector product and `np.argpartition`; `allowed`
picks the rows first (a gather), so a filter makes the search cheaper, never shorter.

Persistence (a directory): per space, a snapshot file (keys and matrix, written to a
temporary file, fsynced and renamed) and an append-only log of the upserts and removes
since, each record with its length and a CRC32, fsynced as it is written. Opening reads
the snapshot and replays the log (a progress bar when it is large); a torn or corrupt tail
record (a crash mid-write) ends the replay and is cut off. The log is compacted into a new
snapshot when it outgrows the snapshot (and 64 MiB), and on close.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from pellucid.server.storage.vectors import DimensionMismatch, Metric, VectorHit, VectorIndex

log = logging.getLogger(__name__)

INITIAL_CAPACITY = 1024
COMPACT_LOG_MIN_BYTES = 64 << 20  # the log is folded into the snapshot once past this and the snapshot's size
PROGRESS_MIN_BYTES = 256 << 20  # reading more than this at open shows a progress bar
_SNAPSHOT_MAGIC = b"PVSNAP01"
_SNAPSHOT_HEADER = struct.Struct("<8sQQQI")  # magic, generation, dimension, count, crc32 of the header fields
_RECORD_HEADER = struct.Struct("<II")  # payload length, crc32 of the payload
_OP_UPSERT, _OP_REMOVE = b"U", b"R"
_OP_HEADER = struct.Struct("<cII")  # op, count, dimension


def as_keys(keys: npt.ArrayLike) -> npt.NDArray[np.int64]:
    return np.ascontiguousarray(np.asarray(keys, dtype=np.int64).reshape(-1))


def as_vectors(vectors: npt.ArrayLike, count: int) -> npt.NDArray[np.float32]:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1 and count == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[0] != count:
        raise ValueError(f"expected {count} vectors (a {count} x dimension array), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("vectors must be finite (no NaN or infinity)")
    return np.ascontiguousarray(array)


def as_query(query: npt.ArrayLike, dimension: int | None, space: str) -> npt.NDArray[np.float32]:
    vector = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(-1))
    if dimension is not None and vector.shape[0] != dimension:
        raise DimensionMismatch(f"the query has {vector.shape[0]} dimensions; space {space!r} holds {dimension}")
    if not np.isfinite(vector).all():
        raise ValueError("the query vector must be finite (no NaN or infinity)")
    return vector


def top_k(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.intp]:
    """Positions of the k largest scores, best first."""
    if k <= 0 or scores.shape[0] == 0:
        return np.empty(0, dtype=np.intp)
    if k < scores.shape[0]:
        cut = scores.shape[0] - k
        picked = np.argpartition(scores, cut)[cut:]
    else:
        picked = np.arange(scores.shape[0])
    return picked[np.argsort(-scores[picked], kind="stable")]


def inverse(norms: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """1 / norm, and 0 for a zero vector (its cosine with anything is taken as 0)."""
    return np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)


def score_rows(
    matrix: npt.NDArray[np.float32],
    norms: npt.NDArray[np.float32],
    inverse_norms: npt.NDArray[np.float32],
    query: npt.NDArray[np.float32],
    metric: Metric,
) -> npt.NDArray[np.float32]:
    """Scores (larger is closer) of each row of `matrix`, with the rows' precomputed L2 norms
    and their inverses (cosine is then two in-place multiplications after the product)."""
    dots = matrix @ query
    if metric is Metric.DOT:
        return dots
    query_norm = np.float32(np.linalg.norm(query))
    if metric is Metric.COSINE:
        dots *= inverse_norms
        dots *= np.float32(1.0 / query_norm) if query_norm > 0 else np.float32(0.0)
        return dots
    squared = norms * norms - 2.0 * dots + query_norm * query_norm
    return -np.sqrt(np.maximum(squared, 0.0, out=squared), out=squared)


class Space:
    """One space's vectors in memory. Callers hold `lock` around every use."""

    def __init__(self, name: str, dimension: int) -> None:
        self.name = name
        self.dimension = dimension
        self.lock = threading.RLock()
        self.size = 0
        self.matrix = np.empty((0, dimension), dtype=np.float32)
        self.norms = np.empty(0, dtype=np.float32)
        self.inverse_norms = np.empty(0, dtype=np.float32)
        self.keys = np.empty(0, dtype=np.int64)
        self.rows: dict[int, int] = {}

    def _reserve(self, needed: int) -> None:
        capacity = self.matrix.shape[0]
        if needed <= capacity:
            return
        capacity = max(INITIAL_CAPACITY, capacity)
        while capacity < needed:
            capacity *= 2
        matrix = np.empty((capacity, self.dimension), dtype=np.float32)
        matrix[: self.size] = self.matrix[: self.size]
        norms = np.empty(capacity, dtype=np.float32)
        norms[: self.size] = self.norms[: self.size]
        inverse_norms = np.empty(capacity, dtype=np.float32)
        inverse_norms[: self.size] = self.inverse_norms[: self.size]
        keys = np.empty(capacity, dtype=np.int64)
        keys[: self.size] = self.keys[: self.size]
        self.matrix, self.norms, self.inverse_norms, self.keys = matrix, norms, inverse_norms, keys

    def upsert(self, keys: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.intp]:
        """Store the vectors (the last of a key repeated in the batch wins); returns their rows."""
        self._reserve(self.size + keys.shape[0])
        rows = np.empty(keys.shape[0], dtype=np.intp)
        for i, key in enumerate(keys.tolist()):
            row = self.rows.get(key)
            if row is None:
                row = self.rows[key] = self.size
                self.keys[row] = key
                self.size += 1
            rows[i] = row
        self.matrix[rows] = vectors  # numpy assigns in order: a repeated key keeps its last vector
        self.norms[rows] = np.linalg.norm(self.matrix[rows], axis=1)
        self.inverse_norms[rows] = inverse(self.norms[rows])
        return rows

    def remove(self, keys: npt.NDArray[np.int64]) -> int:
        removed = 0
        for key in keys.tolist():
            row = self.rows.pop(key, None)
            if row is None:
                continue
            removed += 1
            last = self.size - 1
            if row != last:  # the last row fills the hole
                moved = int(self.keys[last])
                self.matrix[row] = self.matrix[last]
                self.norms[row] = self.norms[last]
                self.inverse_norms[row] = self.inverse_norms[last]
                self.keys[row] = moved
                self.rows[moved] = row
            self.size = last
        return removed

    def rows_of(self, keys: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
        """The rows of those keys the space holds: a dict lookup per key for a few keys, else one
        vectorised pass over the space's keys against the sorted `keys` (about 30 times cheaper
        per element than a lookup)."""
        if keys.shape[0] * 32 > self.size and keys.shape[0] > 64:
            held = self.keys[: self.size]
            positions = np.searchsorted(keys, held)
            found = keys[np.minimum(positions, keys.shape[0] - 1)] == held
            return np.flatnonzero(found)
        rows = self.rows
        return np.fromiter((rows[k] for k in keys.tolist() if k in rows), dtype=np.intp)

    def search(
        self, query: npt.NDArray[np.float32], k: int, metric: Metric, rows: npt.NDArray[np.intp] | None
    ) -> list[VectorHit]:
        if rows is None:
            size = self.size
            scores = score_rows(self.matrix[:size], self.norms[:size], self.inverse_norms[:size], query, metric)
            best = top_k(scores, k)
            keys = self.keys[best]
            chosen = best
        else:
            if rows.shape[0] * 3 > self.size:  # most rows: the whole product beats gathering them first
                size = self.size
                every = score_rows(self.matrix[:size], self.norms[:size], self.inverse_norms[:size], query, metric)
                scores = every[rows]
            else:
                scores = score_rows(self.matrix[rows], self.norms[rows], self.inverse_norms[rows], query, metric)
            best = top_k(scores, k)
            chosen = rows[best]
            keys = self.keys[chosen]
        top = scores[best]
        if metric is Metric.EUCLIDEAN and chosen.shape[0]:  # the winners' distances computed directly
            top = -np.linalg.norm(self.matrix[chosen] - query, axis=1)
        return [VectorHit(int(key), float(score)) for key, score in zip(keys.tolist(), top.tolist(), strict=True)]

    def snapshot(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        return self.keys[: self.size], self.matrix[: self.size]


class _SpaceFiles:
    """A space's directory: `name`, `snapshot-<generation>.bin` and `log-<generation>.bin`."""

    def __init__(self, directory: Path, fsync: bool) -> None:
        self.directory = directory
        self.fsync = fsync
        self.generation = 0
        self.snapshot_bytes = 0
        self.log_bytes = 0
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / f"log-{self.generation}.bin"

    def snapshot_path(self, generation: int) -> Path:
        return self.directory / f"snapshot-{generation}.bin"

    def load(self, name: str) -> Space | None:
        """The space as its files hold it (None: no vectors yet), stale files deleted."""
        snapshots = sorted(
            (int(p.name[len("snapshot-") : -len(".bin")]), p) for p in self.directory.glob("snapshot-*.bin")
        )
        space: Space | None = None
        if snapshots:
            self.generation, path = snapshots[-1]
            space = self._read_snapshot(name, path)
            self.snapshot_bytes = path.stat().st_size
        for path in [*(p for _, p in snapshots[:-1]), *self.directory.glob("log-*.bin"), *self.directory.glob("*.tmp")]:
            if path != self.log_path:
                path.unlink(missing_ok=True)
        if self.log_path.exists():
            space = self._replay(name, space)
        return None if space is None or space.dimension == 0 else space

    def _read_snapshot(self, name: str, path: Path) -> Space:
        with path.open("rb") as file:
            header = file.read(_SNAPSHOT_HEADER.size)
            magic, generation, dimension, count, crc = _SNAPSHOT_HEADER.unpack(header)
            if magic != _SNAPSHOT_MAGIC or crc != zlib.crc32(header[:-4]) or generation != self.generation:
                raise ValueError(f"{path}: not a pellucid vector snapshot (or a damaged one)")
            space = Space(name, int(dimension))
            keys = np.fromfile(file, dtype=np.int64, count=count)
            space._reserve(count)
            done = 0
            chunk = 65536
            with tqdm(
                total=count, unit="vectors", desc=f"loading {name}", disable=count * dimension * 4 < PROGRESS_MIN_BYTES
            ) as progress:
                while done < count:
                    part = min(chunk, count - done)
                    space.matrix[done : done + part] = np.fromfile(
                        file, dtype=np.float32, count=part * dimension
                    ).reshape(part, dimension)
                    done += part
                    progress.update(part)
            if keys.shape[0] != count or done != count:
                raise ValueError(f"{path}: the snapshot is shorter than its header says")
            space.keys[:count] = keys
            space.size = int(count)
            space.norms[:count] = np.linalg.norm(space.matrix[:count], axis=1)
            space.inverse_norms[:count] = inverse(space.norms[:count])
            space.rows = {key: row for row, key in enumerate(keys.tolist())}
            return space

    def _replay(self, name: str, space: Space | None) -> Space | None:
        size = self.log_path.stat().st_size
        good = 0
        with (
            self.log_path.open("rb") as file,
            tqdm(
                total=size, unit="B", unit_scale=True, desc=f"replaying {name}", disable=size < PROGRESS_MIN_BYTES
            ) as bar,
        ):
            for payload, end in _records(file):
                op, count, dimension = _OP_HEADER.unpack_from(payload)
                keys = np.frombuffer(payload, dtype=np.int64, count=count, offset=_OP_HEADER.size)
                if op == _OP_UPSERT:
                    vectors = np.frombuffer(
                        payload, dtype=np.float32, count=count * dimension, offset=_OP_HEADER.size + 8 * count
                    ).reshape(count, dimension)
                    if space is None:
                        space = Space(name, dimension)
                    space.upsert(keys, vectors)
                elif space is not None:
                    space.remove(keys)
                bar.update(end - good)
                good = end
        if good < size:
            log.warning("%s: ignoring a torn or damaged record at byte %d (a crash while writing)", self.log_path, good)
            with self.log_path.open("r+b") as file:
                file.truncate(good)
        self.log_bytes = good
        return space

    def append(self, op: bytes, keys: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32] | None) -> None:
        dimension = 0 if vectors is None else vectors.shape[1]
        parts = [_OP_HEADER.pack(op, keys.shape[0], dimension), keys.tobytes()]
        if vectors is not None:
            parts.append(vectors.tobytes())
        payload = b"".join(parts)
        if self._log is None:
            private_directory(self.directory)
            self._log = _private_open(self.log_path, "ab")
        try:
            self._log.write(_RECORD_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
            self._log.flush()
            if self.fsync:
                os.fsync(self._log.fileno())
        except BaseException:
            # a write that failed part way (disk full) must not leave half a record: the replay
            # stops at the first bad record, and would drop every later, acknowledged one
            log_file, self._log = self._log, None
            try:
                log_file.close()
            except OSError:
                pass
            with self.log_path.open("r+b") as file:
                file.truncate(self.log_bytes)
            raise
        self.log_bytes += _RECORD_HEADER.size + len(payload)

    def should_compact(self) -> bool:
        return self.log_bytes > max(COMPACT_LOG_MIN_BYTES, self.snapshot_bytes)

    def compact(self, space: Space | None) -> None:
        """Write the space as a new snapshot and start an empty log (nothing to do when the log is empty)."""
        if self.log_bytes == 0:
            return
        self.close()
        generation = self.generation + 1
        final = self.snapshot_path(generation)
        temporary = final.with_suffix(".tmp")
        keys, matrix = space.snapshot() if space is not None else (np.empty(0, np.int64), np.empty((0, 0), np.float32))
        dimension = space.dimension if space is not None else 0
        fields = _SNAPSHOT_HEADER.pack(_SNAPSHOT_MAGIC, generation, dimension, keys.shape[0], 0)[:-4]
        with _private_open(temporary, "wb") as file:
            file.write(fields + struct.pack("<I", zlib.crc32(fields)))
            file.write(keys.tobytes())
            for start in range(0, matrix.shape[0], 65536):
                file.write(matrix[start : start + 65536].tobytes())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, final)
        _fsync_directory(self.directory)
        old_log, old_snapshot = self.log_path, self.snapshot_path(self.generation)
        self.generation, self.snapshot_bytes, self.log_bytes = generation, final.stat().st_size, 0
        old_log.unlink(missing_ok=True)
        old_snapshot.unlink(missing_ok=True)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _records(file: IO[bytes]) -> Iterator[tuple[bytes, int]]:
    """Each whole record's payload and the offset after it; stops at a torn or corrupt one."""
    offset = 0
    while True:
        header = file.read(_RECORD_HEADER.size)
        if len(header) < _RECORD_HEADER.size:
            return
        length, crc = _RECORD_HEADER.unpack(header)
        payload = file.read(length)
        if len(payload) < length or zlib.crc32(payload) != crc or length < _OP_HEADER.size:
            return
        offset += _RECORD_HEADER.size + length
        yield payload, offset


def private_directory(path: Path) -> None:
    """A directory only its owner can use (vectors are derived from users' inputs)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _private_open(path: Path, mode: str) -> IO[bytes]:
    """A file opened for writing ("ab", "wb", "r+b"), created readable by its owner only."""
    flags = {"ab": os.O_WRONLY | os.O_APPEND | os.O_CREAT, "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC}[mode]
    return os.fdopen(os.open(path, flags, 0o600), mode)


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def space_directory_name(space: str) -> str:
    return hashlib.sha256(space.encode("utf-8")).hexdigest()[:32]


class ExactVectorIndex(VectorIndex):
    """Brute force over every vector (or every allowed one). `directory` None: in memory only.

    `fsync` False skips the fsync per write (a power cut may then lose the last writes;
    a process crash does not)."""

    def __init__(self, directory: Path | None = None, fsync: bool = True) -> None:
        self.directory = directory
        self._fsync = fsync
        self._lock = threading.Lock()  # the dicts below; each space has its own lock
        self._spaces: dict[str, Space] = {}
        self._files: dict[str, _SpaceFiles] = {}
        self._dir_lock: IO[bytes] | None = None
        self._closed = False
        if directory is not None:
            self._open(directory)

    def _open(self, directory: Path) -> None:
        private_directory(directory)
        private_directory(directory / "spaces")
        for path in directory.rglob("*"):  # a copy made under a looser umask: tightened, like the data dir
            if not path.is_symlink():
                os.chmod(path, 0o700 if path.is_dir() else 0o600)
        self._dir_lock = _private_open(directory / "LOCK", "ab")
        try:
            fcntl.flock(self._dir_lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._dir_lock.close()
            raise RuntimeError(f"{directory}: the vector index is in use by another process") from None
        for path in sorted((directory / "spaces").iterdir()):
            if path.name.endswith(".dropped"):
                shutil.rmtree(path, ignore_errors=True)
                continue
            name_file = path / "name"
            if not name_file.exists():  # a space whose creation did not finish
                shutil.rmtree(path, ignore_errors=True)
                continue
            name = name_file.read_text(encoding="utf-8")
            files = _SpaceFiles(path, self._fsync)
            space = files.load(name)
            self._files[name] = files
            if space is not None:
                self._spaces[name] = space
        if self._spaces:
            log.info(
                "vector index %s: %d spaces, %d vectors",
                directory,
                len(self._spaces),
                sum(s.size for s in self._spaces.values()),
            )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the vector index is closed")

    def space(self, name: str) -> Space | None:
        """The space's in-memory vectors (hold its `lock` while reading them), None if unknown."""
        with self._lock:
            return self._spaces.get(name)

    def _space_for_write(self, name: str, dimension: int) -> tuple[Space, _SpaceFiles | None]:
        with self._lock:
            self._check_open()
            space = self._spaces.get(name)
            if space is None:
                space = self._spaces[name] = Space(name, dimension)
            files = self._files.get(name)
            if files is None and self.directory is not None:
                path = self.directory / "spaces" / space_directory_name(name)
                private_directory(path)
                with _private_open(path / "name", "wb") as file:
                    file.write(name.encode("utf-8"))
                files = self._files[name] = _SpaceFiles(path, self._fsync)
            return space, files

    def upsert(self, space: str, keys: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        self.upsert_rows(space, keys, vectors)

    def upsert_rows(
        self, space: str, keys: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.intp]:
        """upsert, returning the rows the vectors landed in (the ANN index adds them from there)."""
        keys = as_keys(keys)
        vectors = as_vectors(vectors, keys.shape[0])
        if keys.shape[0] == 0:
            return np.empty(0, dtype=np.intp)
        held, files = self._space_for_write(space, vectors.shape[1])
        with held.lock:
            if vectors.shape[1] != held.dimension:
                raise DimensionMismatch(
                    f"vectors of {vectors.shape[1]} dimensions; space {space!r} holds {held.dimension}"
                )
            if files is not None:
                files.append(_OP_UPSERT, keys, vectors)
            rows = held.upsert(keys, vectors)
            if files is not None and files.should_compact():
                files.compact(held)
            return rows

    def remove(self, space: str, keys: npt.NDArray[np.int64]) -> int:
        keys = as_keys(keys)
        held = self.space(space)
        if held is None or keys.shape[0] == 0:
            return 0
        with self._lock:
            files = self._files.get(space)
        with held.lock:
            present = np.fromiter((k for k in keys.tolist() if k in held.rows), dtype=np.int64)
            if present.shape[0] == 0:
                return 0
            if files is not None:
                files.append(_OP_REMOVE, present, None)
            removed = held.remove(present)
            if files is not None and files.should_compact():
                files.compact(held)
            return removed

    def get(self, space: str, keys: npt.NDArray[np.int64]) -> dict[int, npt.NDArray[np.float32]]:
        keys = as_keys(keys)
        held = self.space(space)
        if held is None:
            return {}
        with held.lock:
            return {k: held.matrix[held.rows[k]].copy() for k in keys.tolist() if k in held.rows}

    def search(
        self,
        space: str,
        query: npt.NDArray[np.float32],
        k: int,
        metric: Metric = Metric.COSINE,
        allowed: npt.NDArray[np.int64] | None = None,
        exact: bool = False,
    ) -> list[VectorHit]:
        held = self.space(space)
        vector = as_query(query, held.dimension if held is not None else None, space)
        if held is None or k <= 0:
            return []
        with held.lock:
            rows = None if allowed is None else held.rows_of(as_keys(allowed))
            return held.search(vector, k, metric, rows)

    def count(self, space: str) -> int:
        held = self.space(space)
        return 0 if held is None else held.size

    def dimension(self, space: str) -> int | None:
        held = self.space(space)
        return None if held is None else held.dimension

    def state(self, name: str) -> tuple[int, int] | None:
        """The space's snapshot generation and the bytes logged since (None: not persisted):
        what the faiss index tags its saved structures with."""
        with self._lock:
            files = self._files.get(name)
            return None if files is None else (files.generation, files.log_bytes)

    def spaces(self) -> list[str]:
        with self._lock:
            return sorted(self._spaces)

    def drop_space(self, space: str) -> None:
        with self._lock:
            self._check_open()
            held = self._spaces.pop(space, None)
            files = self._files.pop(space, None)
        with held.lock if held is not None else threading.Lock():
            if held is not None:
                held.size = 0
                held.rows.clear()
            if files is not None:
                files.close()
                dropped = files.directory.with_name(files.directory.name + ".dropped")
                os.replace(files.directory, dropped)  # one rename: a crash leaves it whole or gone
                shutil.rmtree(dropped, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            spaces, files = dict(self._spaces), dict(self._files)
        for name, space_files in files.items():
            space = spaces.get(name)
            if space is not None:
                with space.lock:
                    space_files.compact(space)
            space_files.close()
        if self._dir_lock is not None:
            self._dir_lock.close()
            self._dir_lock = None

    def describe(self) -> dict[str, Any]:
        return {"backend": "exact", "directory": str(self.directory) if self.directory else None}
