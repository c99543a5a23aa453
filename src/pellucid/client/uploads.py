"""The bulk upload pipeline behind upload_inputs, upload_dataset, upload_from_csv and upload_from_folder.

Items are taken lazily from their source in batches of at most 128 inputs, each read and
sent by one of `concurrency` threads (so reads that wait on storage overlap) in requests
of at most `max_batch_bytes`; at most `concurrency` batches are in flight (plus the one
being gathered), so memory stays flat however large the dataset (the result keeps each
derived id in 16 bytes). Each request carries a request id, so a retried one is applied
once; input ids are the caller's or derived by the server from the content, so re-running
an upload that was cut short stores what is missing and reports the rest as duplicates,
never storing an item twice.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, MutableSequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from tqdm.auto import tqdm

from pellucid.api import v1
from pellucid.client._transport import EncodedRequest
from pellucid.errors import ApiError, PellucidError, UserError, error_class

log = logging.getLogger("pellucid.client")

MAX_BATCH_INPUTS = 128
MAX_BATCH_BYTES = 8 * 1024 * 1024
LARGE_FILE_BYTES = 4 * 1024 * 1024  # sent ahead with UploadBlob, in chunks of this size
BLOB_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class UploadItem:
    """One item of a source: its position, a description for reports, and how to build it."""

    index: int
    source: str
    build: Callable[[], v1.Input]
    size: int = 0  # bytes, when known before building (an input already built): bounds read-ahead


class IdList(MutableSequence[str]):
    """A list of input ids that keeps the 32-hex-digit ids pellucid derives in 16 bytes each
    (other ids as they are), so a result listing millions of ids stays small."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._packed = bytearray()
        self._other: dict[int, str] = {}
        for input_id in ids:
            self.append(input_id)

    def __len__(self) -> int:
        return len(self._packed) // 16

    def _get(self, index: int) -> str:
        if index in self._other:
            return self._other[index]
        return self._packed[index * 16 : (index + 1) * 16].hex()

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self._get(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._get(index)

    def __setitem__(self, index: Any, value: Any) -> None:
        raise TypeError("upload results are read-only")

    def __delitem__(self, index: int | slice) -> None:
        raise TypeError("upload results are read-only")

    def insert(self, index: int, value: str) -> None:
        if index != len(self):
            raise TypeError("upload results only grow at the end")
        self.append(value)

    def append(self, value: str) -> None:
        if len(value) == 32 and value == value.lower():
            try:
                self._packed += bytes.fromhex(value)
                return
            except ValueError:
                pass
        self._other[len(self)] = value
        self._packed += bytes(16)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (list, IdList)) and list(self) == list(other)

    def __add__(self, other: Iterable[str]) -> list[str]:
        return [*self, *other]

    def __repr__(self) -> str:
        return repr(list(self))


@dataclass(frozen=True)
class FailedItem:
    index: int
    input_id: str
    source: str
    code: str
    reason: str


@dataclass
class UploadResult:
    """What a bulk upload did: every item is stored, a duplicate, or failed with a reason."""

    stored_ids: IdList = field(default_factory=IdList)
    duplicate_ids: IdList = field(default_factory=IdList)
    failed: list[FailedItem] = field(default_factory=list)
    job_id: str = ""
    bytes_sent: int = 0
    seconds: float = 0.0
    failures_path: str = ""
    upload_status: dict[str, Any] | None = None

    @property
    def ids(self) -> list[str]:
        """Ids of every input that is now in place (stored now or before)."""
        return [*self.stored_ids, *self.duplicate_ids]

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        rate = len(self.ids) / self.seconds if self.seconds else 0.0
        return (
            f"{len(self.stored_ids)} stored, {len(self.duplicate_ids)} already there, {len(self.failed)} failed "
            f"in {self.seconds:.1f}s ({rate:,.0f} inputs/s)"
        )

    def write_failures(self, path: str | Path) -> Path:
        """One JSON object per failed item; pass the file as `retry_from=` to upload just these again."""
        path = Path(path)
        with path.open("w") as out:
            for f in self.failed:
                out.write(json.dumps(f.__dict__) + "\n")
        self.failures_path = str(path)
        return path


def read_failures(path: str | os.PathLike[str]) -> set[int]:
    """The source indices listed in a failures file written by UploadResult.write_failures."""
    indices = set()
    try:
        with Path(path).open() as f:
            for line in f:
                if line.strip():
                    indices.add(int(json.loads(line)["index"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read the failures file {path}: {exc}") from None
    return indices


class Uploader:
    """Runs one bulk upload over a connection; create one per upload."""

    def __init__(
        self,
        call: Callable[..., Any],
        stream_blob: Callable[[Iterator[v1.BlobChunk]], v1.BlobRef],
        user_id: str,
        app_id: str,
        *,
        batch_size: int = MAX_BATCH_INPUTS,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        concurrency: int = 4,
        job_id: str = "",
        progress: bool = True,
        description: str = "Uploading inputs",
        batch_timeout: float = 120.0,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"batch_size must be a positive integer (at most {MAX_BATCH_INPUTS}), got {batch_size!r}")
        if batch_size > MAX_BATCH_INPUTS:
            log.warning("batch_size %d is over the limit: using %d", batch_size, MAX_BATCH_INPUTS)
            batch_size = MAX_BATCH_INPUTS
        if concurrency < 1:
            raise UserError(f"concurrency must be at least 1, got {concurrency}")
        self._call, self._stream_blob = call, stream_blob
        self._user_id, self._app_id = user_id, app_id
        self._batch_size, self._max_bytes, self._concurrency = batch_size, max_batch_bytes, concurrency
        self._job_id = job_id or uuid.uuid4().hex
        self._progress, self._description, self._batch_timeout = progress, description, batch_timeout
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.result = UploadResult(job_id=self._job_id)

    def run(self, items: Iterable[UploadItem], total: int | None = None, only: set[int] | None = None) -> UploadResult:
        """Upload every item (or those whose index is in `only`), `batch_size` at a time.

        This thread only takes items from the source; the thread that sends a batch also
        reads and builds its items (the loader's `__getitem__`, file reads), so up to
        `concurrency` batches are read at once: reads that wait on storage overlap.
        """
        started = time.perf_counter()
        bar = tqdm(
            total=len(only) if only is not None else total,
            desc=self._description,
            unit="input",
            disable=not self._progress,
            smoothing=0.1,
        )
        slots = threading.BoundedSemaphore(self._concurrency)
        pending: set[Future] = set()
        batch: list[UploadItem] = []
        batch_bytes = 0
        pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="pellucid-upload")

        def flush() -> None:
            nonlocal batch, batch_bytes
            if not batch:
                return
            slots.acquire()  # back-pressure: never more than `concurrency` batches in flight
            future = pool.submit(self._build_and_send, batch, bar)

            def done(finished: Future) -> None:
                slots.release()
                pending.discard(finished)

            future.add_done_callback(done)
            pending.add(future)
            batch, batch_bytes = [], 0

        try:
            source = iter(items)
            while True:
                try:
                    item = next(source)
                except StopIteration:
                    break
                except Exception as exc:  # noqa: BLE001 - the source broke: stop reading, report, keep what was sent
                    with self._lock:
                        self.result.failed.append(
                            FailedItem(
                                -1, "", "source", "ABORTED", f"reading the source failed: {type(exc).__name__}: {exc}"
                            )
                        )
                    break
                if only is not None and item.index not in only:
                    continue
                if batch and batch_bytes + item.size > self._max_bytes:
                    flush()  # inputs built already: hold no more than a request's worth per batch
                batch.append(item)
                batch_bytes += item.size
                if len(batch) >= self._batch_size:
                    flush()
            flush()
            for future in list(pending):
                future.result()
        except BaseException:  # Ctrl-C: batches being read stop at their next item, unsent
            self._stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
            raise
        pool.shutdown()
        bar.close()
        self.result.seconds = time.perf_counter() - started
        return self.result

    def _build_and_send(self, items: list[UploadItem], bar: tqdm) -> None:
        """Build a batch's inputs and send them: in more than one request when their bytes
        would pass `max_batch_bytes`, so at most that much is held per batch."""
        batch: list[tuple[UploadItem, str, bytes]] = []  # item, input id, serialized input
        batch_bytes, done = 0, 0
        try:
            for done, item in enumerate(items):  # noqa: B007 - `done` is read if this fails
                if self._stop.is_set():
                    return
                built = self._build(item, bar)
                if built is None:
                    continue
                input_id, encoded = built
                if batch and batch_bytes + len(encoded) > self._max_bytes:
                    self._send(batch, batch_bytes, bar)
                    batch, batch_bytes = [], 0
                batch.append((item, input_id, encoded))
                batch_bytes += len(encoded)
            done = len(items)
            if batch:
                self._send(batch, batch_bytes, bar)
        except Exception as exc:  # noqa: BLE001 - a bug here must not lose the batch's items from the result
            for item in [i for i, _, _ in batch] + items[done:]:
                self._fail(item, "", "UNKNOWN", f"{type(exc).__name__}: {exc}")
            bar.update(len(batch) + len(items) - done)

    def _fail(self, item: UploadItem, input_id: str, code: str, reason: str) -> None:
        with self._lock:
            self.result.failed.append(FailedItem(item.index, input_id, item.source, code, reason))

    def _build(self, item: UploadItem, bar: tqdm) -> tuple[str, bytes] | None:
        """Read, build and serialize one item: (its id, its bytes); a source that fails fails that item alone."""
        try:
            message = item.build()
            self._send_large_media(message)
            return message.id, message.SerializeToString()  # once: requests are framed from these bytes
        except Exception as exc:  # noqa: BLE001 - whatever the item's source raised, that item fails alone
            code = exc.code.name if isinstance(exc, ApiError) else "INVALID_ARGUMENT"
            self._fail(item, "", code, str(exc) if isinstance(exc, PellucidError) else f"{type(exc).__name__}: {exc}")
            bar.update(1)
            return None

    def _send_large_media(self, message: v1.Input) -> None:
        """Media too large for a batch goes first, in chunks, and the input then names it by hash."""
        if message.ByteSize() < LARGE_FILE_BYTES:
            return  # the common case, checked without copying the media out of the message
        for kind in ("image", "video", "audio"):
            media = getattr(message.data, kind)
            if len(media.base64) >= LARGE_FILE_BYTES:
                data = media.base64
                chunks = (
                    v1.BlobChunk(
                        data=data[i : i + BLOB_CHUNK_BYTES],
                        **({"user_id": self._user_id, "app_id": self._app_id} if i == 0 else {}),
                    )
                    for i in range(0, len(data), BLOB_CHUNK_BYTES)
                )
                ref = self._stream_blob(chunks)
                media.ClearField("base64")
                media.blob_sha256 = ref.sha256
                with self._lock:
                    self.result.bytes_sent += len(data)

    def _send(self, batch: list[tuple[UploadItem, str, bytes]], batch_bytes: int, bar: tqdm) -> None:
        header = v1.PostInputsRequest(user_id=self._user_id, app_id=self._app_id, inputs_add_job_id=self._job_id)
        request = EncodedRequest.frame(v1.PostInputsResponse, header, "inputs", [e for _, _, e in batch])
        try:
            response = self._call(v1.InputServiceStub, "PostInputs", request, timeout=self._batch_timeout)
        except ApiError as exc:  # the whole batch failed (server unreachable...): every item is retryable
            for item, input_id, _ in batch:
                self._fail(item, input_id, exc.code.name, exc.message)
        except Exception as exc:  # noqa: BLE001 - reported per item, never lost with the result
            for item, input_id, _ in batch:
                self._fail(item, input_id, "UNKNOWN", f"{type(exc).__name__}: {exc}")
        else:
            with self._lock:
                for (item, input_id, _), result in zip(batch, response.results):
                    if result.status.code == v1.Status.OK:
                        (self.result.duplicate_ids if result.duplicate else self.result.stored_ids).append(
                            result.input_id
                        )
                    else:
                        code = error_class(result.status.code).code.name
                        self.result.failed.append(
                            FailedItem(
                                item.index, result.input_id or input_id, item.source, code, result.status.message
                            )
                        )
                self.result.bytes_sent += batch_bytes
        bar.update(len(batch))
        bar.set_postfix_str(f"{self.result.bytes_sent / 1e6:,.1f} MB", refresh=False)
