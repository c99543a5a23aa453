"""Moving bytes to and from hosted data (data://): chunked streams, batches of small files, threads.

Uploads frame files on `UploadDataFilesPacked` streams (data.proto; `UploadDataFiles` on a
server without it): small files (under 1 MiB) are spread over `concurrency` streams (at most
1,000 files or 64 MiB each), whole ones sharing messages of up to 1 MiB (when the server takes
packs: asked once per connection), so a thousand files cost a handful of calls and about a
hundred messages; a large one has its own stream, read from disk one 1 MiB
chunk at a time. Downloads ask for the small files the same way on `DownloadDataFiles`
streams and write each to a temporary file beside its destination, renamed when complete. Memory stays bounded by the chunks in
flight (gRPC's flow control holds the rest back), whatever the files' sizes.

Every file is attempted; failures are returned, one per file, never raised midway.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from tqdm.auto import tqdm

from pellucid.api import v1
from pellucid.errors import ApiError, PellucidError, UserError, data_error, error_class

CHUNK_BYTES = 1024 * 1024
SMALL_FILE_BYTES = 1024 * 1024
BATCH_FILES = 1000  # the server's limit per download
BATCH_BYTES = 64 * 1024 * 1024
PROGRESS_BYTES = 16 * 1024 * 1024  # a bar for transfers at least this large (on a terminal)
DEFAULT_CONCURRENCY = 8


def stream_timeout(base: float, size: int) -> float:
    """A deadline for moving `size` bytes: at least 10 minutes, plus a second per MiB."""
    return max(base, 600.0) + size / (1024 * 1024)


@dataclass(frozen=True)
class UploadItem:
    """A file to upload: where it goes, how large it is, and how to open it (binary, for reading)."""

    dest: str
    size: int
    open: Callable[[], AbstractContextManager[IO[bytes]]]
    source: str = ""


@dataclass(frozen=True)
class DownloadItem:
    """A file to download to `dest` (a local path); `size` (if known) only groups the batches."""

    source: str
    dest: Path
    size: int = 0


@dataclass(frozen=True)
class TransferFailure:
    source: str
    dest: str
    error: PellucidError


@dataclass
class TransferReport:
    """What a transfer did: the entries stored (uploads), the files written, and each failure."""

    entries: list[v1.DataEntry] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    failures: list[TransferFailure] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def ok(self, n_bytes: int, entry: v1.DataEntry | None = None) -> None:
        with self._lock:
            self.files += 1
            self.bytes += n_bytes
            if entry is not None:
                self.entries.append(entry)

    def failed(self, source: str, dest: str, error: PellucidError) -> None:
        with self._lock:
            self.failures.append(TransferFailure(source, dest, error))


def _progress_bar(total: int, files: int, progress: bool | None, what: str) -> Any:
    show = progress if progress is not None else total >= PROGRESS_BYTES
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"{what} {files} file{'s' if files != 1 else ''}",
        disable=None if show else True,  # None: shown on a terminal only
        leave=False,
    )


def _batches(items: list[Any], concurrency: int) -> list[list[Any]]:
    """Each large file alone; the small ones spread over `concurrency` streams (at most BATCH_FILES
    and BATCH_BYTES each). Few long streams beat many short ones: a new stream starts with a small
    flow-control window, which grows only as the stream goes on."""
    large = [[item] for item in items if item.size >= SMALL_FILE_BYTES]
    small = [item for item in items if item.size < SMALL_FILE_BYTES]
    per_stream = max(1, min(BATCH_FILES, -(-len(small) // max(concurrency, 1))))
    batches: list[list[Any]] = []
    batch: list[Any] = []
    batch_bytes = 0
    for item in small:
        if batch and (len(batch) >= per_stream or batch_bytes + item.size > BATCH_BYTES):
            batches.append(batch)
            batch, batch_bytes = [], 0
        batch.append(item)
        batch_bytes += item.size
    if batch:
        batches.append(batch)
    return large + batches


def _status_error(status: v1.Status, method: str) -> ApiError:
    return data_error(error_class(status.code)(status.message, method=method))


def _as_error(exc: BaseException) -> PellucidError:
    if isinstance(exc, ApiError):
        return data_error(exc)
    if isinstance(exc, PellucidError):
        return exc
    return UserError(f"{type(exc).__name__}: {exc}")


def _run(batches: list[list[Any]], work: Callable[[list[Any]], None], concurrency: int) -> None:
    if concurrency < 1:
        raise UserError(f"concurrency {concurrency} is not valid: use 1 or more")
    if len(batches) <= 1 or concurrency == 1:
        for batch in batches:
            work(batch)
        return
    with ThreadPoolExecutor(min(concurrency, len(batches)), thread_name_prefix="pellucid-data") as pool:
        for future in [pool.submit(work, batch) for batch in batches]:
            future.result()


def upload(
    host: Any, items: list[UploadItem], concurrency: int = DEFAULT_CONCURRENCY, progress: bool | None = None
) -> TransferReport:
    """Upload every item (a put overwrites); `host` is any client object (its connection and timeout)."""
    report = TransferReport()
    bar = _progress_bar(sum(i.size for i in items), len(items), progress, "uploading")

    def send(batch: list[UploadItem]) -> None:
        failure: list[BaseException] = []

        def messages(packed: bool) -> Iterator[bytes]:
            pack: list[bytes] = []  # encoded whole small files waiting to share one message
            pack_bytes = 0
            try:
                for item in batch:
                    with item.open() as f:
                        first = f.read(min(CHUNK_BYTES, item.size))
                        header = v1.DataUploadChunk(path=item.dest, size=item.size).SerializeToString()
                        if packed and len(first) == item.size <= PACK_BYTES:  # whole: it may share a message
                            encoded = _data_message(first, header)
                            if pack and pack_bytes + len(encoded) > PACK_BYTES:
                                yield b"".join(pack)
                                pack, pack_bytes = [], 0
                            if pack:  # a file after the first goes in `more`
                                pack.append(_field_prefix(_MORE_UPLOAD_TAG, len(encoded)))
                            pack.append(encoded)
                            pack_bytes += len(encoded)
                            bar.update(len(first))
                            continue
                        if pack:
                            yield b"".join(pack)
                            pack, pack_bytes = [], 0
                        yield _data_message(first, header)
                        bar.update(len(first))
                        left = item.size - len(first)
                        while left > 0:
                            data = f.read(min(CHUNK_BYTES, left))
                            if not data:
                                raise UserError(f"{item.source or item.dest} became shorter while it was being sent")
                            left -= len(data)
                            yield _data_message(data)
                            bar.update(len(data))
                if pack:
                    yield b"".join(pack)
            except BaseException as exc:
                failure.append(exc)
                raise

        timeout = stream_timeout(host.timeout, sum(i.size for i in batch))
        try:
            packed = sum(1 for i in batch if i.size <= PACK_BYTES) > 1 and _takes_packed_uploads(host)
            response = host._connection.send_stream_encoded(
                v1.DataServiceStub,
                "UploadDataFilesPacked" if packed else "UploadDataFiles",
                messages(packed),
                v1.UploadDataFilesResponse,
                timeout=timeout,
            )
        except Exception as exc:  # noqa: BLE001 - every file of the batch is reported
            error = _as_error(failure[0] if failure else exc)
            for item in batch:
                report.failed(item.source or item.dest, item.dest, error)
            return
        for item, result in zip(batch, response.results):
            if result.status.code == v1.Status.OK:
                report.ok(item.size, result.entry)
            else:
                report.failed(item.source or item.dest, item.dest, _status_error(result.status, "UploadDataFiles"))

    try:
        _run(_batches(items, concurrency), send, concurrency)
    finally:
        bar.close()
    return report


def download(
    host: Any, items: list[DownloadItem], concurrency: int = DEFAULT_CONCURRENCY, progress: bool | None = None
) -> TransferReport:
    """Download every item to its local path (written whole or not at all)."""
    report = TransferReport()
    bar = _progress_bar(sum(i.size for i in items), len(items), progress, "downloading")

    made_dirs: set[str] = set()

    def receive(batch: list[DownloadItem]) -> None:
        done: set[int] = set()
        request = v1.DownloadDataFilesRequest(paths=[i.source for i in batch], pack_small_files=True)
        timeout = stream_timeout(host.timeout, sum(i.size for i in batch))
        index, sink, left, size = -1, None, 0, 0
        try:
            for rest, data in _files_of(
                host._connection.read_stream_encoded(v1.DataServiceStub, "DownloadDataFiles", request, timeout=timeout)
            ):
                if rest:
                    message = v1.DataFileChunk.FromString(rest)
                    if message.path:  # the next file starts
                        index += 1
                        item = batch[index]
                        if message.status.code != v1.Status.OK:
                            refused = _status_error(message.status, "DownloadDataFiles")
                            report.failed(item.source, str(item.dest), refused)
                            done.add(index)
                            continue
                        size = left = message.entry.size
                        try:
                            sink = _Sink(item.dest, made_dirs)
                        except UserError as exc:  # this file only: its bytes are read and dropped
                            report.failed(item.source, str(item.dest), exc)
                            done.add(index)
                if data:
                    left -= len(data)
                    bar.update(len(data))
                    if sink is not None:
                        sink.write(data)
                if sink is not None and left <= 0:
                    sink.commit()
                    sink = None
                    report.ok(size)
                    done.add(index)
        except Exception as exc:  # noqa: BLE001 - every unfinished file of the batch is reported
            error = _as_error(exc)
            for i, item in enumerate(batch):
                if i not in done:
                    report.failed(item.source, str(item.dest), error)
        finally:
            if sink is not None:
                sink.abandon()

    try:
        _run(_batches(items, concurrency), receive, concurrency)
    finally:
        bar.close()
    return report


_DATA_TAG = (3 << 3) | 2  # DataFileChunk.data: field 3, length-delimited
_MORE_FIELD = 5  # DataFileChunk.more: whole files packed after the message's own
_MORE_UPLOAD_TAG = (4 << 3) | 2  # DataUploadChunk.more: whole files packed after the message's own
PACK_BYTES = 1024 * 1024  # whole small files packed into one upload message up to this (a message may be 4 MiB)
# per connection: whether its server takes UploadDataFilesPacked (asked once, `_takes_packed_uploads`)
_PACKED_UPLOADS: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
_PACKED_UPLOADS_LOCK = threading.Lock()


def _takes_packed_uploads(host: Any) -> bool:
    """Whether the server takes UploadDataFilesPacked: asked once per connection with an empty
    stream (an older server answers UNIMPLEMENTED). Asked before any file is sent, not learnt
    from a failed upload: a file object given to `putFile` cannot be read a second time."""
    connection = host._connection
    with _PACKED_UPLOADS_LOCK:
        known = _PACKED_UPLOADS.get(connection)
        if known is None:
            try:
                connection.send_stream_encoded(
                    v1.DataServiceStub,
                    "UploadDataFilesPacked",
                    iter(()),
                    v1.UploadDataFilesResponse,
                    timeout=host.timeout,
                )
                known = True
            except ApiError as exc:
                if exc.code != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                known = False
            _PACKED_UPLOADS[connection] = known
        return known


def _data_message(data: bytes, header: bytes = b"") -> bytes:
    """An encoded message holding `data` as field 3 (DataUploadChunk and DataFileChunk alike),
    after the encoded fields `header`: one copy of the bytes (building a message and serializing
    it cost two)."""
    if not data:
        return header
    return b"".join((header, _field_prefix(_DATA_TAG, len(data)), data))


def _field_prefix(tag: int, length: int) -> bytes:
    """The tag and length that start a length-delimited field of `length` bytes."""
    varint = bytearray([tag])
    while length >= 0x80:
        varint.append((length & 0x7F) | 0x80)
        length >>= 7
    varint.append(length)
    return bytes(varint)


def _files_of(messages: Iterator[bytes]) -> Iterator[tuple[bytes, memoryview]]:
    """Each message's (other fields, data), then those of the whole files packed in its `more`."""
    for encoded in messages:
        pending: list[bytes | memoryview] = [encoded]
        while pending:
            rest, data, more = _split_data(pending.pop())
            yield rest, data
            pending += reversed(more)


def _split_data(encoded: bytes | memoryview) -> tuple[bytes, memoryview, list[memoryview]]:
    """An encoded DataFileChunk split into its other fields (still encoded, for protobuf to parse:
    they are small), its data, and the encoded messages in its `more`, all views into `encoded`:
    protobuf would copy the data in when parsing and out again when it is read. A message this
    cannot split is parsed whole."""
    view = memoryview(encoded)
    data, rest, more, position, end = view[0:0], [], [], 0, len(view)
    while position < end:
        start = position
        key, position = _varint(view, position)
        if key & 7 != 2 or position < 0:  # every field of DataFileChunk is length-delimited
            break
        length, position = _varint(view, position)
        if position < 0 or position + length > end:
            break
        position += length
        if key >> 3 == 3:
            data = view[position - length : position]
        elif key >> 3 == _MORE_FIELD:
            more.append(view[position - length : position])
        else:
            rest.append(view[start:position])
    else:
        return b"".join(rest), data, more
    message = v1.DataFileChunk.FromString(bytes(view))  # not as expected: protobuf says why (or copes)
    data_copy, nested = message.data, [memoryview(m.SerializeToString()) for m in message.more]
    message.ClearField("data")
    message.ClearField("more")
    return message.SerializeToString(), memoryview(data_copy), nested


def _varint(encoded: bytes | memoryview, position: int) -> tuple[int, int]:
    """(value, position after it); position -1 if the varint is cut short or too long."""
    value, shift, end = 0, 0, len(encoded)
    while position < end and shift < 64:
        byte = encoded[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    return 0, -1


class _Sink:
    """A file being downloaded: `.<name>.pellucid-part` beside `dest`, renamed over it once complete.

    Plain descriptors and string paths: for many small files, pathlib and buffered file objects
    were the client's largest cost (py-spy)."""

    def __init__(self, dest: Path, made_dirs: set[str]) -> None:
        self.dest = os.fspath(dest)
        parent, name = os.path.split(self.dest)
        self.tmp = os.path.join(parent, f".{name[:200]}.pellucid-part")
        try:
            if parent not in made_dirs:
                os.makedirs(parent or ".", exist_ok=True)
                made_dirs.add(parent)
            # mode 0666 less the umask, as a plain open() makes it
            self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            raise UserError(f"cannot write {dest}: {exc.strerror or exc}") from None
        self.written = 0

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.written += len(data)

    def commit(self) -> None:
        os.close(self.fd)
        os.replace(self.tmp, self.dest)

    def abandon(self) -> None:
        os.close(self.fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)
