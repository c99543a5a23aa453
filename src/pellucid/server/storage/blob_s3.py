"""S3BlobStore: blobs as objects in an S3-compatible bucket, one object per blob, keyed by sha256.

Layout under the URI's prefix (see docs/scale-out.md, "Blobs on S3"):
- `blobs/<sha256>`: a blob's bytes. The key is the content's hash, so two replicas that
  store the same blob write the same bytes to the same key; each write is conditional
  (`If-None-Match: *`): the second one gets 412 and knows the blob is there.
- `uploads/<uuid>`: a streamed upload (UploadBlob) in progress. Its key cannot be the
  hash until the last byte has arrived, so it is sent to a temporary key in 8 MiB parts
  while it is hashed (a replica holds two parts in memory at most and needs no local disk), then
  copied inside S3 to its final key (a multipart copy, conditional too; no byte passes
  through the replica) and removed. When the blob is already stored, the copy is skipped.

Which blobs are stored, their sizes and who holds them live in a BlobIndex (blob_index.py),
not in the bucket: a listing per lookup would be slow and eventually consistent listings
were the norm for S3-compatible stores. The index is written after the bytes, and owner
records before a blob found stored is skipped (`BlobIndex.claim`), which is what keeps
garbage collection from deleting a blob someone is storing again.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from pellucid.server.storage.blob_index import BlobIndex, BlobRow, BlobStoreUnavailable, SqliteBlobIndex
from pellucid.server.storage.blobs import (
    CHUNK_BYTES,
    BlobStore,
    BlobTooLarge,
    CollectionReport,
    DigestMismatch,
    ReferenceCheck,
    check_digest,
    is_sha256,
    private_files,
    release_stale_owners,
    sha256_hex,
)

PART_BYTES = 8 * 1024 * 1024  # multipart part size (S3's minimum is 5 MiB, except the last part)
COPY_PART_BYTES = 1024 * 1024 * 1024  # a part of a server-side copy (S3's maximum is 5 GiB)
_DELETE_BATCH = 1000  # keys per DeleteObjects, S3's limit
_PUT_THREADS = 16  # objects of one batch stored at once


@dataclass(frozen=True)
class S3Location:
    """Where an S3BlobStore keeps its objects, parsed from `s3://bucket/prefix?endpoint_url=...&region=...`."""

    bucket: str
    prefix: str  # "" or ending in "/"
    endpoint_url: str | None
    region: str | None

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        parts = urlsplit(uri)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"{uri!r} is not an S3 location: use s3://bucket/prefix?endpoint_url=...&region=...")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        unknown = set(query) - {"endpoint_url", "region"}
        if unknown:
            raise ValueError(f"{uri!r}: unknown parameter(s) {', '.join(sorted(unknown))}: use endpoint_url, region")
        prefix = parts.path.strip("/")
        return cls(
            bucket=parts.netloc,
            prefix=f"{prefix}/" if prefix else "",
            endpoint_url=query.get("endpoint_url") or None,
            region=query.get("region") or None,
        )

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def s3_client(location: S3Location, probe: bool = False) -> Any:
    """A boto3 S3 client; credentials come from boto3's usual chain (AWS_* variables, profiles, roles).

    `probe`: one attempt and short timeouts, for health checks."""
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    config = Config(
        max_pool_connections=2 * _PUT_THREADS,
        retries={"mode": "standard", "max_attempts": 1 if probe else 5},
        connect_timeout=2 if probe else 10,
        read_timeout=2 if probe else 60,
        # a custom endpoint (MinIO, moto, Ceph) rarely has a DNS name per bucket
        s3={"addressing_style": "path" if location.endpoint_url else "auto"},
    )
    return boto3.client("s3", endpoint_url=location.endpoint_url, region_name=location.region, config=config)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) or str(
        response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _unavailable_as_error(method: _Method) -> _Method:
    """An S3 endpoint that does not answer, or answers 5xx after boto3's retries: BlobStoreUnavailable."""

    @functools.wraps(method)
    def call(self: S3BlobStore, *args: Any, **kwargs: Any) -> Any:
        with self._reaching():
            return method(self, *args, **kwargs)

    return cast(_Method, call)


class InFlight:
    """Digests this process is storing right now: its own collections leave them alone.

    Across replicas the owner record that `BlobIndex.claim` commits first does that job; these
    marks cover the one case it cannot, a collection in this process with grace 0 releasing
    that very record before the bytes are indexed (grace 0 is for tests and idle servers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    @contextmanager
    def marked(self, digests: list[str]) -> Iterator[None]:
        with self._lock:
            self._counts.update(digests)
        try:
            yield
        finally:
            with self._lock:
                self._counts.subtract(digests)
                for digest in digests:
                    if self._counts[digest] <= 0:
                        del self._counts[digest]

    def __contains__(self, digest: object) -> bool:
        with self._lock:
            return digest in self._counts


class S3BlobStore(BlobStore):
    """Every blob an object of its own; index and owner records in `index`."""

    TEMP_MAX_AGE = 24 * 3600.0  # a temporary upload untouched this long is a crash's leftover

    def __init__(self, location: S3Location, index: BlobIndex, client: Any = None) -> None:
        from botocore.exceptions import (  # type: ignore[import-untyped]
            BotoCoreError,
            ClientError,
            HTTPClientError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        self.location = location
        self.index = index
        self._client = client if client is not None else s3_client(location)
        self._errors: tuple[type[Exception], ...] = (ClientError, BotoCoreError)
        self._client_error = ClientError
        self._unreachable: tuple[type[Exception], ...] = (BotoConnectionError, HTTPClientError)
        self._in_flight = InFlight()
        self._gc_lock = threading.Lock()
        self._closing = threading.Event()
        self._pool = ThreadPoolExecutor(_PUT_THREADS, thread_name_prefix="pellucid-s3-put")
        self._probe = client if client is not None else s3_client(location, probe=True)
        try:
            self._client.head_bucket(Bucket=location.bucket)
        except self._errors as exc:
            self._pool.shutdown()
            index.close()
            raise BlobStoreUnavailable(
                f"cannot use the bucket {location.bucket!r} at {location.endpoint_url or 'AWS S3'}: {exc}; "
                "create the bucket and check the AWS_* credentials first"
            ) from exc

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        try:
            yield
        except self._unreachable as exc:
            raise BlobStoreUnavailable(f"the object store of {self.location} does not answer: {exc}") from exc
        except self._client_error as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if isinstance(status, int) and status >= 500:
                raise BlobStoreUnavailable(f"the object store of {self.location} fails: {exc}") from exc
            raise

    def check(self) -> None:
        """One HEAD of the bucket, without boto3's retries, within a few seconds; and the index."""
        with self._reaching():
            self._probe.head_bucket(Bucket=self.location.bucket)
        self.index.check()

    def _key(self, sha256: str) -> str:
        return f"{self.location.prefix}blobs/{sha256}"

    # storing

    @_unavailable_as_error
    def put_many(self, owner: str, blobs: Sequence[bytes | memoryview], digests: list[str] | None = None) -> list[str]:
        whole = [bytes(b) if isinstance(b, memoryview) else b for b in blobs]  # the S3 client takes bytes
        digests = [check_digest(d) for d in digests] if digests is not None else [sha256_hex(b) for b in whole]
        unique = dict(zip(digests, whole))
        with self._in_flight.marked(list(unique)):
            stored = self.index.claim(owner, list(unique), time.time())  # owner records first: see blob_index
            missing = {d: b for d, b in unique.items() if d not in stored}
            if len(missing) == 1:
                self._put_object(*next(iter(missing.items())))
            elif missing:
                list(self._pool.map(lambda item: self._put_object(*item), missing.items()))
            rows = [BlobRow(d, 0, 0, len(b)) for d, b in missing.items()]
            self.index.record(owner, rows, list(unique), time.time())
        return digests

    def _put_object(self, sha256: str, data: bytes) -> None:
        """Store `data` at its key unless an object is there already (same key, same bytes)."""
        key = self._key(sha256)
        if len(data) > PART_BYTES:
            upload = self._client.create_multipart_upload(Bucket=self.location.bucket, Key=key)["UploadId"]
            try:
                parts = []
                view = memoryview(data)
                for number, start in enumerate(range(0, len(view), PART_BYTES), start=1):
                    etag = self._client.upload_part(
                        Bucket=self.location.bucket,
                        Key=key,
                        UploadId=upload,
                        PartNumber=number,
                        Body=bytes(view[start : start + PART_BYTES]),
                    )["ETag"]
                    parts.append({"ETag": etag, "PartNumber": number})
                self._complete(key, upload, parts)
            except BaseException:
                self._abort(key, upload)
                raise
            return
        try:
            self._client.put_object(Bucket=self.location.bucket, Key=key, Body=data, IfNoneMatch="*")
        except self._client_error as exc:
            if not self._already_there(exc, key):
                raise

    def _complete(self, key: str, upload: str, parts: list[dict[str, Any]]) -> None:
        try:
            self._client.complete_multipart_upload(
                Bucket=self.location.bucket,
                Key=key,
                UploadId=upload,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except self._client_error as exc:
            if not self._already_there(exc, key):
                raise
            self._abort(key, upload)

    def _already_there(self, exc: Exception, key: str) -> bool:
        """A conditional write refused because the key exists (412), or raced another one (409) that left it."""
        code = _error_code(exc)
        if code in ("PreconditionFailed", "412"):
            return True
        if code in ("ConditionalRequestConflict", "409"):
            try:
                self._client.head_object(Bucket=self.location.bucket, Key=key)
                return True
            except self._client_error:
                return False
        return False

    def _abort(self, key: str, upload: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.location.bucket, Key=key, UploadId=upload)
        except self._errors:
            pass  # garbage collection aborts what is left (and so does a bucket lifecycle rule)

    @_unavailable_as_error
    def put_stream(
        self, owner: str, chunks: Iterable[bytes | memoryview], max_bytes: int | None = None, expected_sha256: str = ""
    ) -> tuple[str, int]:
        if expected_sha256:
            check_digest(expected_sha256)
        hasher, size = hashlib.sha256(), 0
        buffer = bytearray()
        temp_key, upload = f"{self.location.prefix}uploads/{uuid.uuid4().hex}", ""
        parts: list[dict[str, Any]] = []
        sending: Future[dict[str, Any]] | None = None  # one part goes up while the next one arrives

        def send(data: bytes) -> None:
            nonlocal sending
            if sending is not None:
                parts.append(sending.result())
            sending = self._pool.submit(self._upload_part, temp_key, upload, len(parts) + 1, data)

        try:
            for chunk in chunks:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise BlobTooLarge(max_bytes)  # before storing it: the rest of the stream is never read
                hasher.update(chunk)
                buffer += chunk
                while len(buffer) >= PART_BYTES + 1:  # the last part may be short; it is sent at the end
                    if not upload:
                        upload = self._client.create_multipart_upload(Bucket=self.location.bucket, Key=temp_key)[
                            "UploadId"
                        ]
                    send(bytes(buffer[:PART_BYTES]))
                    del buffer[:PART_BYTES]
            digest = hasher.hexdigest()
            if expected_sha256 and expected_sha256 != digest:
                raise DigestMismatch(digest, expected_sha256)
            if not upload:  # it fit in one part: its key is known now, store it like any other
                self.put_many(owner, [bytes(buffer)], [digest])
                return digest, size
            send(bytes(buffer))
            assert sending is not None
            parts.append(sending.result())
            sending = None
            self._client.complete_multipart_upload(
                Bucket=self.location.bucket, Key=temp_key, UploadId=upload, MultipartUpload={"Parts": parts}
            )
            upload = ""
            with self._in_flight.marked([digest]):
                if digest not in self.index.claim(owner, [digest], time.time()):
                    self._copy(temp_key, self._key(digest), size)
                self.index.record(owner, [BlobRow(digest, 0, 0, size)], [digest], time.time())
            return digest, size
        finally:
            if sending is not None:  # a part still going up: let it finish, so the abort removes it too
                with contextlib.suppress(*self._errors):
                    sending.result()
            if upload:
                self._abort(temp_key, upload)
            elif parts:
                self._delete_keys([temp_key])

    def _upload_part(self, key: str, upload: str, number: int, data: bytes) -> dict[str, Any]:
        etag = self._client.upload_part(
            Bucket=self.location.bucket, Key=key, UploadId=upload, PartNumber=number, Body=data
        )["ETag"]
        return {"ETag": etag, "PartNumber": number}

    def _copy(self, source: str, key: str, size: int) -> None:
        """Copy `source` to `key` inside S3, conditionally: a multipart copy, because its completion
        honours If-None-Match where CopyObject's does not on every S3-compatible server."""
        upload = self._client.create_multipart_upload(Bucket=self.location.bucket, Key=key)["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, size, COPY_PART_BYTES), start=1):
                end = min(start + COPY_PART_BYTES, size) - 1
                etag = self._client.upload_part_copy(
                    Bucket=self.location.bucket,
                    Key=key,
                    UploadId=upload,
                    PartNumber=number,
                    CopySource={"Bucket": self.location.bucket, "Key": source},
                    CopySourceRange=f"bytes={start}-{end}",
                )["CopyPartResult"]["ETag"]
                parts.append({"ETag": etag, "PartNumber": number})
            self._complete(key, upload, parts)
        except BaseException:
            self._abort(key, upload)
            raise

    # reading

    @_unavailable_as_error
    def acquire(self, owner: str, digests: list[str]) -> dict[str, int]:
        digests = list(dict.fromkeys(check_digest(d) for d in digests))
        held = self.index.acquire(owner, digests, time.time())
        return {sha256: size for sha256, size in held.items() if size is not None}  # no row: its bytes never arrived

    @_unavailable_as_error
    def size(self, sha256: str) -> int | None:
        row = self.index.location(check_digest(sha256))
        return row.size if row else None

    def read_chunks(self, sha256: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        return self._read_chunks(check_digest(sha256), chunk_bytes)  # checked now, not at the first next()

    def _read_chunks(self, sha256: str, chunk_bytes: int) -> Iterator[bytes]:
        with self._reaching():
            yield from self._read_object(sha256, chunk_bytes)

    def _read_object(self, sha256: str, chunk_bytes: int) -> Iterator[bytes]:
        try:
            body = self._client.get_object(Bucket=self.location.bucket, Key=self._key(sha256))["Body"]
        except self._client_error as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"no object for blob {sha256} in {self.location}") from exc
            raise
        with body:
            sent = False
            for chunk in body.iter_chunks(chunk_bytes):
                sent = True
                yield chunk
            if not sent:
                yield b""

    @_unavailable_as_error
    def backfill_owners(self, references: Callable[[], Iterable[tuple[str, str]]]) -> int:
        if self.index.flag("owners_backfilled"):
            return 0
        pairs = {(owner, sha256) for owner, sha256 in references() if is_sha256(sha256)}
        stored = self.index.stored(sorted({sha256 for _, sha256 in pairs}))
        added = self.index.add_owners([(o, s) for o, s in pairs if s in stored], time.time())
        self.index.set_flag("owners_backfilled")
        return added

    # garbage collection

    @_unavailable_as_error
    def collect_garbage(self, is_referenced: ReferenceCheck, grace_seconds: float) -> CollectionReport:
        """Release stale owner records, delete the objects of blobs nobody holds, then leftovers.

        An object is deleted inside the index transaction that found it unowned, so a
        concurrent put either recorded its owner first (and the blob stays) or claims it after
        (finds no row, and stores the bytes again). Leftovers: objects no row names (a crash
        between the upload and its index row), temporary uploads and unfinished multipart
        uploads, once older than max(grace, TEMP_MAX_AGE).
        """
        with self._gc_lock:
            if self._closing.is_set():
                return CollectionReport()
            released = release_stale_owners(self.index, is_referenced, time.time() - grace_seconds, self._closing)
            deleted = freed = 0
            candidates = self.index.unowned_rows()
            for start in range(0, len(candidates), _DELETE_BATCH):
                if self._closing.is_set():
                    break
                part = dict(candidates[start : start + _DELETE_BATCH])
                removed = self.index.remove_unowned(list(part), self._in_flight.__contains__, self._delete_blobs)
                deleted, freed = deleted + len(removed), freed + sum(part[d] for d in removed)
            orphans, orphan_bytes = self._delete_leftovers(time.time() - max(grace_seconds, self.TEMP_MAX_AGE))
            return CollectionReport(
                owners_released=released, blobs_deleted=deleted + orphans, bytes_deleted=freed + orphan_bytes
            )

    def _delete_blobs(self, digests: list[str]) -> None:
        self._delete_keys([self._key(d) for d in digests])

    def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            answer = self._client.delete_objects(
                Bucket=self.location.bucket,
                Delete={"Objects": [{"Key": k} for k in keys[start : start + _DELETE_BATCH]], "Quiet": True},
            )
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise OSError(f"S3 refused to delete {first.get('Key')}: {first.get('Code')} {first.get('Message')}")

    def _objects(self, prefix: str) -> Iterator[tuple[str, int, float]]:
        """(key, size, last modified) of every object under `prefix`."""
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"], item["Size"], item["LastModified"].timestamp()

    def _delete_leftovers(self, cutoff: float) -> tuple[int, int]:
        deleted = freed = 0
        blobs_prefix = f"{self.location.prefix}blobs/"
        old: dict[str, int] = {}
        for key, size, modified in self._objects(blobs_prefix):
            if self._closing.is_set():
                return deleted, freed
            digest = key[len(blobs_prefix) :]
            if modified < cutoff and is_sha256(digest):
                old[digest] = size
        for start in range(0, len(old), _DELETE_BATCH):
            part = list(old)[start : start + _DELETE_BATCH]
            indexed = self.index.stored(part)
            unindexed = [d for d in part if d not in indexed]
            removed = self.index.remove_unowned(unindexed, self._in_flight.__contains__, self._delete_blobs)
            deleted, freed = deleted + len(removed), freed + sum(old[d] for d in removed)
        uploads_prefix = f"{self.location.prefix}uploads/"
        stale = [key for key, _size, modified in self._objects(uploads_prefix) if modified < cutoff]
        self._delete_keys(stale)
        pages = self._client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.location.bucket, Prefix=self.location.prefix
        )
        for page in pages:
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() < cutoff:
                    self._abort(upload["Key"], upload["UploadId"])
        return deleted, freed

    def close(self) -> None:
        self._closing.set()
        with self._gc_lock:
            self._pool.shutdown(wait=True)
            self.index.close()


def open_s3_blob_store(uri: str, index_dir: Path | None, shared_index_uri: str = "") -> S3BlobStore:
    """The S3 store of `uri`. Its index: in PostgreSQL at `shared_index_uri` (the metadata
    database: what replicas share), else in SQLite under `index_dir` (one server only)."""
    location = S3Location.parse(uri)
    index: BlobIndex
    if shared_index_uri.startswith(("postgresql://", "postgres://")):
        from pellucid.server.storage.blob_index_postgres import PostgresBlobIndex

        index = PostgresBlobIndex(libpq_uri(shared_index_uri))
    elif index_dir is not None:
        index_dir.mkdir(parents=True, exist_ok=True)
        # one index per endpoint, bucket and prefix: pointing the data dir at another bucket never mixes them
        path = (
            index_dir
            / f"blobs-s3-{hashlib.sha256(f'{location.endpoint_url} {location}'.encode()).hexdigest()[:12]}.sqlite3"
        )
        private_files(path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
        index = SqliteBlobIndex(path)
    else:
        raise ValueError(f"{uri}: the S3 blob store needs a place for its index (a data dir or a postgresql:// URI)")
    return S3BlobStore(location, index)


def libpq_uri(uri: str) -> str:
    """`uri` without the query parameters pellucid reads itself (pool sizes), which libpq would refuse."""
    parts = urlsplit(uri)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not k.startswith("pool_")]
    return urlunsplit(parts._replace(query=urlencode(query)))
