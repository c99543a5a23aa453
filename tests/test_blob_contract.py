"""One contract for every blob store backend: `file` (packs and files, SQLite index) and `s3`.

The S3 backend runs against moto's S3 server in its own process on loopback (tests/s3_server.py),
started once for the session; every test gets a fresh bucket. Backend-specific checks (packs,
file modes, object layout, conditional puts) follow the shared ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pellucid.cli import build_parser
from pellucid.client.input import Inputs
from pellucid.client.user import User
from pellucid.server.runtime import PellucidServer, ServerSettings
from pellucid.server.storage import blob_s3
from pellucid.server.storage.blob_s3 import PART_BYTES, S3BlobStore, S3Location
from pellucid.server.storage.blobs import (
    LARGE_BLOB_BYTES,
    BlobStore,
    BlobStoreUnavailable,
    BlobTooLarge,
    DigestMismatch,
    InvalidDigest,
    LocalBlobStore,
    sha256_hex,
)
from pellucid.server.storage.registry import open_blob_store
from tests import pg
from tests.media_samples import png
from tests.s3_server import CREDENTIALS, MotoServer


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Callable[[], str]]:
    """A fresh database per call on the session's PostgreSQL (tests/pg.py), stopped at the end."""
    yield pg.new_database
    pg.stop()


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials reach boto3 the usual way: the AWS_* variables."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@dataclass
class Backend:
    """A store of one backend, and how to open it again or look at what it keeps."""

    name: str
    open: Callable[[], BlobStore]
    uri: str
    moto: MotoServer | None = None
    bucket: str = ""

    def objects(self, under: str) -> list[str]:
        """S3: the keys under `<prefix>/<under>`."""
        assert self.moto is not None
        listed = self.moto.client().list_objects_v2(Bucket=self.bucket, Prefix=f"data/{under}")
        return [item["Key"] for item in listed.get("Contents", [])]

    def unfinished_multipart_uploads(self) -> list[str]:
        assert self.moto is not None
        return [u["Key"] for u in self.moto.client().list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])]


@pytest.fixture(params=["file", "s3", "s3+postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """`s3`: objects in moto, index in SQLite (one server); `s3+postgresql`: index in PostgreSQL (replicas)."""
    if request.param == "file":
        uri = f"file://{tmp_path / 'blobs'}"
        return Backend("file", lambda: open_blob_store(uri), uri)
    request.getfixturevalue("aws_environment")
    moto: MotoServer = request.getfixturevalue("moto_server")
    bucket = moto.new_bucket()
    uri = moto.uri(bucket)
    shared = request.getfixturevalue("postgres")() if request.param == "s3+postgresql" else ""
    return Backend(
        "s3", lambda: open_blob_store(uri, index_dir=tmp_path / "index", shared_index_uri=shared), uri, moto, bucket
    )


@pytest.fixture
def store(backend: Backend) -> Iterator[BlobStore]:
    opened = backend.open()
    yield opened
    opened.close()


def _nothing_referenced(pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    return set()


def _all_referenced(pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    return set(pairs)


def _chunks(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# --- the contract --------------------------------------------------------------------------------


def test_blobs_come_back_byte_for_byte_whatever_their_size(store: BlobStore) -> None:
    small, empty = os.urandom(10_000), b""
    large = os.urandom(LARGE_BLOB_BYTES + 1)
    digests = store.put_many("alice", [small, empty, large, small])
    assert digests == [sha256_hex(small), sha256_hex(empty), sha256_hex(large), sha256_hex(small)]
    for blob, digest in zip([small, empty, large], digests):
        assert store.size(digest) == len(blob)
        assert store.get(digest) == blob
        assert b"".join(store.read_chunks(digest, chunk_bytes=4096)) == blob
    assert store.size(sha256_hex(b"never stored")) is None and store.get(sha256_hex(b"never stored")) is None
    store.check()  # reachable: no error


def test_a_stream_is_stored_whole_and_a_large_one_crosses_parts(store: BlobStore, backend: Backend) -> None:
    small = os.urandom(300_000)
    large = os.urandom(2 * PART_BYTES + 12_345)  # three parts on S3: a temporary upload, then a copy
    assert store.put_stream("alice", _chunks(small)) == (sha256_hex(small), len(small))
    assert store.put_stream("alice", _chunks(large), expected_sha256=sha256_hex(large)) == (
        sha256_hex(large),
        len(large),
    )
    assert store.get(sha256_hex(small)) == small and store.get(sha256_hex(large)) == large
    assert set(store.acquire("alice", [sha256_hex(small), sha256_hex(large)])) == {sha256_hex(small), sha256_hex(large)}
    if backend.name == "s3":  # no temporary object or unfinished upload is left behind
        assert backend.objects("uploads/") == [] and backend.unfinished_multipart_uploads() == []
    # the same stream again: stored once
    assert store.put_stream("bob", _chunks(large)) == (sha256_hex(large), len(large))
    if backend.name == "s3":
        assert len(backend.objects("blobs/")) == 2 and backend.objects("uploads/") == []


def test_a_damaged_or_oversized_stream_keeps_nothing(store: BlobStore, backend: Backend) -> None:
    data = os.urandom(PART_BYTES + 5_000)
    with pytest.raises(DigestMismatch):
        store.put_stream("alice", _chunks(data), expected_sha256=sha256_hex(b"something else"))
    assert store.size(sha256_hex(data)) is None and store.acquire("alice", [sha256_hex(data)]) == {}
    pulled = []

    def endless() -> Iterator[bytes]:
        for i in range(100):
            pulled.append(i)
            yield b"x" * (1 << 20)

    with pytest.raises(BlobTooLarge):
        store.put_stream("alice", endless(), max_bytes=PART_BYTES + 2 * (1 << 20) + 10)
    assert len(pulled) == 11  # refused as it passed the limit, the rest never read
    if backend.name == "s3":
        assert backend.objects("") == [] and backend.unfinished_multipart_uploads() == []


def test_every_method_refuses_anything_but_a_sha256(store: BlobStore, tmp_path: Path) -> None:
    digest = store.put_many("alice", [b"inside"])[0]
    bad_values = [str(tmp_path / "outside.bin"), "../outside.bin", digest.upper(), digest + "\n", digest[:-1], ""]
    calls: list[Callable[[str], Any]] = [
        lambda bad: store.size(bad),
        lambda bad: store.get(bad),
        lambda bad: store.read_chunks(bad),
        lambda bad: store.acquire("alice", [bad]),
        lambda bad: store.put_many("alice", [b"inside"], [bad]),
        lambda bad: store.put_stream("alice", iter([b"inside"]), expected_sha256=bad or "-"),
    ]
    for bad in bad_values:
        for call in calls:
            with pytest.raises(InvalidDigest):
                call(bad)
    assert store.get(digest) == b"inside"


def test_a_blob_is_held_only_by_those_who_stored_it(store: BlobStore, backend: Backend) -> None:
    shared, own = os.urandom(2_000), os.urandom(LARGE_BLOB_BYTES + 10)
    store.put_many("alice", [shared, own])
    assert store.acquire("alice", [sha256_hex(shared), sha256_hex(own)]) == {
        sha256_hex(shared): len(shared),
        sha256_hex(own): len(own),
    }
    assert store.acquire("bob", [sha256_hex(shared), sha256_hex(own)]) == {}  # as if never stored
    store.put_many("bob", [shared])
    assert store.acquire("bob", [sha256_hex(shared), sha256_hex(own)]) == {sha256_hex(shared): len(shared)}
    if backend.name == "s3":  # stored once, under its hash
        assert sorted(backend.objects("blobs/")) == sorted(f"data/blobs/{sha256_hex(b)}" for b in (shared, own))


def test_collection_deletes_what_nobody_holds_and_keeps_the_rest(store: BlobStore, backend: Backend) -> None:
    kept, doomed, fresh = os.urandom(1_000), os.urandom(LARGE_BLOB_BYTES + 1), os.urandom(3_000)
    store.put_many("alice", [kept, doomed])
    store.put_many("bob", [kept])

    def only_bobs(pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        return {p for p in pairs if p[0] == "bob"}

    report = store.collect_garbage(only_bobs, grace_seconds=0)
    assert report.owners_released == 2 and report.blobs_deleted == 1 and report.bytes_deleted == len(doomed)
    assert store.get(sha256_hex(kept)) == kept and store.size(sha256_hex(doomed)) is None
    assert store.acquire("alice", [sha256_hex(kept)]) == {} and sha256_hex(kept) in store.acquire(
        "bob", [sha256_hex(kept)]
    )
    if backend.name == "s3":
        assert backend.objects("blobs/") == [f"data/blobs/{sha256_hex(kept)}"]

    store.put_many("carol", [fresh])  # uploaded just now: the grace period keeps it
    assert store.collect_garbage(_nothing_referenced, grace_seconds=3600).blobs_deleted == 0
    assert store.get(sha256_hex(fresh)) == fresh
    store.acquire("carol", [sha256_hex(fresh)])  # acquiring renews it too
    store.collect_garbage(_all_referenced, grace_seconds=0)
    assert store.get(sha256_hex(fresh)) == fresh and store.get(sha256_hex(kept)) == kept


def test_a_blob_stored_again_while_it_is_being_collected_is_never_lost(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put finds the blob stored and skips its bytes; a collection (grace 0: the old owner's
    record goes at once) runs at the put's n-th clock reading, for every n the put makes."""
    real_time, store_module = time.time, type(store).__module__
    for window in range(10):
        small, large = os.urandom(1_000), os.urandom(LARGE_BLOB_BYTES)
        store.put_many("leaver", [small, large])
        readings, reports = [0], []

        def time_with_a_collection(
            window: int = window, readings: list[int] = readings, reports: list[Any] = reports
        ) -> float:
            if sys._getframe(1).f_globals.get("__name__") == store_module and readings[0] >= 0:
                readings[0] += 1
                if readings[0] == window + 1:
                    readings[0] = -1  # the collection's own readings do not count
                    reports.append(store.collect_garbage(_nothing_referenced, grace_seconds=0))
            return real_time()

        monkeypatch.setattr(time, "time", time_with_a_collection)
        store.put_many("stayer", [small, large])
        monkeypatch.undo()
        if not reports:  # the put made fewer readings: every window was tried
            assert window > 0
            break
        assert reports[0].owners_released >= 2  # the leaver's records went in that window
        assert store.get(sha256_hex(small)) == small and store.get(sha256_hex(large)) == large, window
        held = store.acquire("stayer", [sha256_hex(small), sha256_hex(large)])
        assert set(held) == {sha256_hex(small), sha256_hex(large)}, window
        store.collect_garbage(_all_referenced, grace_seconds=0)
        assert store.get(sha256_hex(small)) == small and store.get(sha256_hex(large)) == large, window
        store.collect_garbage(_nothing_referenced, grace_seconds=0)  # the next window starts from nothing


def test_concurrent_puts_of_the_same_blobs_store_each_once(store: BlobStore, backend: Backend) -> None:
    blobs = [os.urandom(5_000) for _ in range(20)]
    with ThreadPoolExecutor(4) as pool:  # result() raises whatever a put raised
        for done in [pool.submit(store.put_many, f"user-{i}", blobs) for i in range(4)]:
            assert done.result(30) == [sha256_hex(b) for b in blobs]
    for i in range(4):
        assert len(store.acquire(f"user-{i}", [sha256_hex(b) for b in blobs])) == 20
    assert [store.get(sha256_hex(b)) for b in blobs] == blobs
    if backend.name == "s3":
        assert len(backend.objects("blobs/")) == 20


def test_what_is_stored_survives_reopening(backend: Backend) -> None:
    first = backend.open()
    data = [os.urandom(700), os.urandom(LARGE_BLOB_BYTES + 3)]
    first.put_many("alice", data)
    first.close()
    again = backend.open()
    try:
        assert [again.get(sha256_hex(b)) for b in data] == data
        assert set(again.acquire("alice", [sha256_hex(b) for b in data])) == {sha256_hex(b) for b in data}
        assert again.backfill_owners(lambda: [("bob", sha256_hex(data[0]))]) == 0  # a new store has nothing to backfill
    finally:
        again.close()


# --- S3 on its own -------------------------------------------------------------------------------


@pytest.fixture
def s3(aws_environment: None, moto_server: MotoServer, tmp_path: Path) -> Iterator[tuple[S3BlobStore, MotoServer, str]]:
    bucket = moto_server.new_bucket()
    opened = open_blob_store(moto_server.uri(bucket), index_dir=tmp_path / "index")
    assert isinstance(opened, S3BlobStore)
    yield opened, moto_server, bucket
    opened.close()


def test_puts_are_conditional_and_never_replace_an_object(s3: tuple[S3BlobStore, MotoServer, str]) -> None:
    """An object already at a blob's key (another replica's write, or a crash's before its index
    row) is left as it is: the put is If-None-Match: *, and the 412 means "stored"."""
    store, moto, bucket = s3
    small, large = os.urandom(4_000), os.urandom(PART_BYTES + 100)
    client = moto.client()
    for blob in (small, large):  # a marker at the key: a write that replaced it would show
        client.put_object(Bucket=bucket, Key=f"data/blobs/{sha256_hex(blob)}", Body=b"already here")
    store.put_many("alice", [small, large])
    for blob in (small, large):
        assert client.get_object(Bucket=bucket, Key=f"data/blobs/{sha256_hex(blob)}")["Body"].read() == b"already here"
    assert set(store.acquire("alice", [sha256_hex(small), sha256_hex(large)])) == {sha256_hex(small), sha256_hex(large)}


def test_two_replicas_writing_the_same_blobs_at_once_both_succeed(
    s3: tuple[S3BlobStore, MotoServer, str], tmp_path: Path
) -> None:
    """Two stores over one bucket (each with its own index here): whichever write lands second gets 412."""
    first, moto, bucket = s3
    second = open_blob_store(moto.uri(bucket), index_dir=tmp_path / "index-2")
    try:
        blobs = [os.urandom(3_000) for _ in range(30)]
        results: dict[str, list[str]] = {}
        threads = [
            threading.Thread(target=lambda s=s, n=n: results.__setitem__(n, s.put_many(n, blobs)))
            for s, n in ((first, "a"), (second, "b"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert results["a"] == results["b"] == [sha256_hex(b) for b in blobs]
        assert [first.get(sha256_hex(b)) for b in blobs] == [second.get(sha256_hex(b)) for b in blobs] == blobs
        assert len(moto.client().list_objects_v2(Bucket=bucket, Prefix="data/blobs/")["Contents"]) == 30
    finally:
        second.close()


def test_collection_removes_crash_leftovers_once_they_are_old(
    s3: tuple[S3BlobStore, MotoServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, moto, bucket = s3
    client = moto.client()
    held = os.urandom(2_000)
    store.put_many("alice", [held])
    orphan = os.urandom(2_000)  # uploaded by a replica that crashed before its index row
    client.put_object(Bucket=bucket, Key=f"data/blobs/{sha256_hex(orphan)}", Body=orphan)
    client.put_object(Bucket=bucket, Key="data/uploads/crashed", Body=b"half a stream")
    client.create_multipart_upload(Bucket=bucket, Key="data/uploads/never-finished")
    # young leftovers may be uploads still under way: kept
    assert store.collect_garbage(_all_referenced, grace_seconds=0).blobs_deleted == 0
    assert len(client.list_objects_v2(Bucket=bucket, Prefix="data/")["Contents"]) == 3

    class Later:  # a day and a bit from now, for the store only
        @staticmethod
        def time() -> float:
            return time.time() + store.TEMP_MAX_AGE + 60

    monkeypatch.setattr(blob_s3, "time", Later)
    report = store.collect_garbage(_all_referenced, grace_seconds=0)
    monkeypatch.undo()
    assert report.blobs_deleted == 1 and report.bytes_deleted == len(orphan)
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket, Prefix="data/")["Contents"]]
    assert keys == [f"data/blobs/{sha256_hex(held)}"]
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert store.get(sha256_hex(held)) == held


def test_a_missing_bucket_or_a_bad_uri_is_a_clear_error(
    aws_environment: None, moto_server: MotoServer, tmp_path: Path
) -> None:
    with pytest.raises(ConnectionError, match="create the bucket"):
        open_blob_store(moto_server.uri("no-such-bucket-here"), index_dir=tmp_path)
    with pytest.raises(ValueError, match=r"file:///path/to/dir, s3://bucket"):
        open_blob_store("ftp://host/dir")
    with pytest.raises(ValueError, match="unknown parameter"):
        S3Location.parse("s3://bucket/prefix?endpoint=http://x")
    location = S3Location.parse("s3://bucket/a/b?endpoint_url=http://127.0.0.1:9&region=eu-west-1")
    assert (location.bucket, location.prefix, location.endpoint_url, location.region) == (
        "bucket",
        "a/b/",
        "http://127.0.0.1:9",
        "eu-west-1",
    )


# --- a server over S3 ----------------------------------------------------------------------------


def test_a_server_keeps_its_inputs_bytes_in_the_bucket(
    aws_environment: None, moto_server: MotoServer, tmp_path: Path
) -> None:
    bucket = moto_server.new_bucket()
    running = PellucidServer(
        ServerSettings(data_dir=tmp_path / "data", blob_uri=moto_server.uri(bucket), blob_gc_interval_seconds=0)
    )
    running.start()
    try:
        credentials = running.data_dir.read_credentials()
        assert credentials is not None
        inputs = User(base_url=f"grpc://{running.address}", pat=credentials.pat).create_app("s3").inputs()
        image = png(f"in the bucket {uuid.uuid4()}")
        video = b"\x00\x00\x00\x18ftypisom" + os.urandom(LARGE_BLOB_BYTES)
        result = inputs.upload_inputs(
            [
                Inputs.get_input_from_bytes("img", image_bytes=image),
                Inputs.get_input_from_bytes("vid", video_bytes=video),
            ],
            show_log=False,
        )
        assert result.ok
        assert inputs.download_inputs(["img", "vid"]) == [image, video]
        keys = {item["Key"] for item in moto_server.client().list_objects_v2(Bucket=bucket)["Contents"]}
        assert keys == {f"data/blobs/{sha256_hex(image)}", f"data/blobs/{sha256_hex(video)}"}
        assert not list((tmp_path / "data").glob("blobs/packs/*.pack"))  # nothing of it on local disk
        inputs.delete_inputs(["vid"])
        assert running.engine is not None
        running.engine.collect_blob_garbage(grace_seconds=0)
        keys = {item["Key"] for item in moto_server.client().list_objects_v2(Bucket=bucket)["Contents"]}
        assert keys == {f"data/blobs/{sha256_hex(image)}"}
    finally:
        running.stop(grace=0.5)


def test_the_server_command_takes_a_blob_store_uri(tmp_path: Path) -> None:
    args = build_parser().parse_args(["server", "--blobs", "s3://bucket/prefix?region=eu-west-1"])
    assert args.blobs == "s3://bucket/prefix?region=eu-west-1"
    from pellucid.server.settings import resolve

    assert resolve(vars(build_parser().parse_args(["server"])), environ={})["blobs"] == ""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pellucid.cli",
            "server",
            "--data-dir",
            str(tmp_path / "d"),
            "--port",
            "0",
            "--blobs",
            "gopher://x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 2, done.stderr
    assert "unsupported blob store 'gopher'" in done.stderr and "s3://bucket/prefix" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_local_store_is_the_file_backend(tmp_path: Path) -> None:
    for uri in (f"file://{tmp_path}", str(tmp_path)):
        opened = open_blob_store(uri)
        assert isinstance(opened, LocalBlobStore)
        opened.close()


def test_a_replica_storing_a_blob_another_replica_is_deleting_never_loses_it(
    aws_environment: None, moto_server: MotoServer, postgres: Callable[[], str], tmp_path: Path
) -> None:
    """Replicas A and B share the bucket and a PostgreSQL index. B's collection has found the blob
    unowned and is deleting its object when A stores the same blob: A must either be seen as an
    owner or wait for the deletion and store the bytes again, never skip them and lose them."""
    bucket, database = moto_server.new_bucket(), postgres()
    a, b = (
        open_blob_store(moto_server.uri(bucket), index_dir=tmp_path / name, shared_index_uri=database)
        for name in ("a", "b")
    )
    try:
        assert isinstance(b, S3BlobStore)
        blob = os.urandom(3_000)
        a.put_many("leaver", [blob])
        real_delete, threads = b._delete_blobs, []

        def a_stores_it_meanwhile(digests: list[str]) -> None:
            put = threading.Thread(target=a.put_many, args=("stayer", [blob]))
            threads.append(put)
            put.start()
            put.join(0.5)  # with the digest's lock held by B, A waits for B's commit
            real_delete(digests)

        b._delete_blobs = a_stores_it_meanwhile  # type: ignore[method-assign]
        report = b.collect_garbage(_nothing_referenced, grace_seconds=0)
        b._delete_blobs = real_delete  # type: ignore[method-assign]
        threads[0].join(10)
        assert not threads[0].is_alive()
        assert report.blobs_deleted == 1
        assert a.get(sha256_hex(blob)) == blob and b.get(sha256_hex(blob)) == blob
        assert sha256_hex(blob) in b.acquire("stayer", [sha256_hex(blob)])
    finally:
        a.close()
        b.close()


def test_an_object_store_that_stops_answering_is_unavailable_not_an_internal_error(
    aws_environment: None, tmp_path: Path
) -> None:
    """Not INTERNAL: BlobStoreUnavailable (a ConnectionError) says "retry later"; nothing half-stored."""
    from botocore.config import Config

    own = MotoServer(tmp_path)  # a server of its own, to stop and start again
    own.start()
    try:
        bucket = own.new_bucket()
        location = S3Location.parse(own.uri(bucket))
        client = boto3_client(own.endpoint_url, Config(retries={"max_attempts": 1}, connect_timeout=2))
        from pellucid.server.storage.blob_index import SqliteBlobIndex

        store = S3BlobStore(location, SqliteBlobIndex(tmp_path / "index.sqlite3"), client=client)
        kept = os.urandom(1_000)
        store.put_many("alice", [kept])
        store.check()  # answers: healthy
        own.stop()
        with pytest.raises(BlobStoreUnavailable):
            store.check()
        lost = os.urandom(1_000)
        with pytest.raises(BlobStoreUnavailable, match="does not answer"):
            store.put_many("alice", [lost])
        with pytest.raises(BlobStoreUnavailable):
            store.get(sha256_hex(kept))
        with pytest.raises(BlobStoreUnavailable):
            store.put_stream("alice", _chunks(os.urandom(PART_BYTES + 10)))
        assert store.size(sha256_hex(lost)) is None and store.acquire("alice", [sha256_hex(lost)]) == {}
        store.close()
    finally:
        own.stop()


def boto3_client(endpoint_url: str, config: Any) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def test_a_local_store_whose_directory_went_away_is_unavailable(tmp_path: Path) -> None:
    store = open_blob_store(f"file://{tmp_path / 'data'}")
    try:
        store.check()
        shutil.rmtree(tmp_path / "data" / "blobs")  # e.g. a volume unmounted under the server
        with pytest.raises(BlobStoreUnavailable, match="is gone"):
            store.check()
    finally:
        store.close()


def test_a_local_stream_whose_disk_write_fails_keeps_nothing_and_raises(tmp_path: Path) -> None:
    """put_stream writes in a thread of its own while it hashes: a failed write (here the file
    size limit, EFBIG, as a full disk would be) reaches the caller, and nothing is kept."""
    import errno
    import resource
    import signal

    store = LocalBlobStore(tmp_path)
    data = os.urandom(6 * (1 << 20))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (3 * (1 << 20), hard))
    try:
        with pytest.raises(OSError) as raised:
            store.put_stream("alice", _chunks(data))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    try:
        assert raised.value.errno == errno.EFBIG
        assert store.size(sha256_hex(data)) is None and store.acquire("alice", [sha256_hex(data)]) == {}
        assert list((tmp_path / "blobs").glob(".upload-*")) == []
        assert not [t for t in threading.enumerate() if t.name == "pellucid-blob-writer"]
        assert store.put_stream("alice", _chunks(data)) == (sha256_hex(data), len(data))  # and it works again
    finally:
        store.close()
