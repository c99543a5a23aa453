"""Blob garbage collection: unreferenced blobs go, referenced and fresh ones stay, packs shrink.

Each test has a server of its own (collecting with grace 0 must not touch other tests'
blobs, and what is on disk must be this test's alone), its periodic collection off: each
test runs it on demand through the engine.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pellucid import errors
from pellucid.api import v1
from pellucid.client.input import Inputs
from pellucid.client.user import User
from pellucid.server.engine import Engine
from pellucid.server.runtime import PellucidServer, ServerSettings
from pellucid.server.storage import blobs
from pellucid.server.storage.blobs import LARGE_BLOB_BYTES, LocalBlobStore, sha256_hex
from tests.media_samples import png


class GcServer:
    def __init__(self, root: Path) -> None:
        self.data = root
        self.running = PellucidServer(ServerSettings(data_dir=root, blob_gc_interval_seconds=0))
        self.running.start()
        credentials = self.running.data_dir.read_credentials()
        assert credentials is not None
        self.admin = User(base_url=f"grpc://{self.running.address}", pat=credentials.pat)

    @property
    def engine(self) -> Engine:
        assert self.running.engine is not None
        return self.running.engine

    def user(self) -> User:
        created = self.admin.create_user(f"u-{uuid.uuid4().hex[:8]}")
        return User(base_url=f"grpc://{self.running.address}", pat=created.pat.secret, user_id=created.user.id)

    def pack_bytes(self) -> bytes:
        return b"".join(p.read_bytes() for p in sorted((self.data / "blobs" / "packs").glob("*.pack")))

    def large_files(self) -> set[str]:
        return {p.name for p in (self.data / "blobs").glob("??/??/*")}


@pytest.fixture
def gc_server(tmp_path: Path) -> Iterator[GcServer]:
    server = GcServer(tmp_path / "data")
    yield server
    server.running.stop(grace=0.5)


def _by_hash(inputs: Inputs, input_id: str, sha256: str, kind: str = "image") -> str:
    message = v1.Input(id=input_id)
    getattr(message.data, kind).blob_sha256 = sha256
    result = inputs.upload_inputs([message], show_log=False)
    return result.failed[0].code if result.failed else "OK"


def _upload_blob(inputs: Inputs, data: bytes) -> str:
    chunks = [data[i : i + 256 * 1024] for i in range(0, len(data), 256 * 1024)]
    messages = (
        v1.BlobChunk(data=c, **({"user_id": inputs.user_id, "app_id": inputs.app_id} if i == 0 else {}))
        for i, c in enumerate(chunks)
    )
    return inputs._stream_blob(messages).sha256


def test_deleted_inputs_lose_their_bytes_and_the_pack_shrinks(gc_server: GcServer) -> None:
    inputs = gc_server.user().create_app("photos").inputs()
    images = {f"img-{i}": png(f"gc {uuid.uuid4()} {i}", side=24) for i in range(40)}
    video = b"\x00\x00\x00\x18ftypisom" + os.urandom(LARGE_BLOB_BYTES)  # a large blob: a file of its own
    result = inputs.upload_inputs(
        [Inputs.get_input_from_bytes(i, image_bytes=b) for i, b in images.items()]
        + [Inputs.get_input_from_bytes("video", video_bytes=video)],
        show_log=False,
    )
    assert result.ok
    gc_server.engine.collect_blob_garbage(grace_seconds=0)  # nothing of this is garbage yet
    packed = gc_server.pack_bytes()
    assert all(b in packed for b in images.values()) and sha256_hex(video) in gc_server.large_files()

    doomed = [f"img-{i}" for i in range(30)] + ["video"]
    inputs.delete_inputs(doomed)
    report = gc_server.engine.collect_blob_garbage(grace_seconds=0)

    assert report.blobs_deleted >= 31 and report.packs_compacted >= 1
    assert report.pack_bytes_after < report.pack_bytes_before
    packed_after = gc_server.pack_bytes()
    assert len(packed_after) < len(packed)
    assert not any(images[i] in packed_after for i in doomed if i != "video")
    assert sha256_hex(video) not in gc_server.large_files()
    survivors = [f"img-{i}" for i in range(30, 40)]
    assert inputs.download_inputs(survivors) == [images[i] for i in survivors]
    # the deleted blobs cannot be named any more; the survivors can
    assert _by_hash(inputs, "reuse-dead", sha256_hex(images["img-0"])) == "NOT_FOUND"
    assert _by_hash(inputs, "reuse-live", sha256_hex(images["img-31"])) == "OK"


def test_a_blob_uploaded_just_now_survives_until_its_grace_period_ends(gc_server: GcServer) -> None:
    inputs = gc_server.user().create_app("pending").inputs()
    image = png(f"pending {uuid.uuid4()}")
    sha = _upload_blob(inputs, image)  # uploaded, its PostInputs not sent yet
    gc_server.engine.collect_blob_garbage()  # the server's grace period (1 hour)
    assert image in gc_server.pack_bytes()
    assert _by_hash(inputs, "late", sha) == "OK"  # the PostInputs arrives: the blob is still there
    assert inputs.download_inputs(["late"]) == [image]

    unused = png(f"never used {uuid.uuid4()}")
    unused_sha = _upload_blob(inputs, unused)
    gc_server.engine.collect_blob_garbage(grace_seconds=0)  # once the grace period is over, it goes
    assert gc_server.engine.blobs.size(unused_sha) is None  # its pack, still mostly alive, is not rewritten
    assert _by_hash(inputs, "too-late", unused_sha) == "NOT_FOUND"
    assert inputs.download_inputs(["late"]) == [image]


def test_a_blob_another_app_or_user_still_holds_survives(gc_server: GcServer) -> None:
    alice, bob = gc_server.user(), gc_server.user()
    shared = png(f"shared {uuid.uuid4()}")
    first, second = alice.create_app("first"), alice.create_app("second")
    first.inputs().upload_from_bytes("a1", image_bytes=shared)
    second.inputs().upload_from_bytes("a2", image_bytes=shared)
    bob_inputs = bob.create_app("his").inputs()
    bob_inputs.upload_from_bytes("b1", image_bytes=shared)

    alice.delete_app("first")
    gc_server.engine.collect_blob_garbage(grace_seconds=0)
    assert second.inputs().download_inputs(["a2"]) == [shared]

    second.inputs().delete_inputs(["a2"])
    gc_server.engine.collect_blob_garbage(grace_seconds=0)
    assert bob_inputs.download_inputs(["b1"]) == [shared]  # bob's input still holds the bytes
    assert shared in gc_server.pack_bytes()
    # alice no longer holds it, although its bytes are still stored for bob
    assert _by_hash(alice.create_app("third").inputs(), "again", sha256_hex(shared)) == "NOT_FOUND"

    bob_inputs.delete_inputs(["b1"])
    gc_server.engine.collect_blob_garbage(grace_seconds=0)
    assert shared not in gc_server.pack_bytes()


def test_deleting_a_dataset_with_its_inputs_frees_their_blobs(gc_server: GcServer) -> None:
    app = gc_server.user().create_app("sets")
    app.create_dataset("train")
    image = png(f"in a dataset {uuid.uuid4()}")
    app.inputs().upload_from_bytes("x", image_bytes=image, dataset_id="train")
    app.delete_dataset("train", delete_inputs=True)
    gc_server.engine.collect_blob_garbage(grace_seconds=0)
    assert image not in gc_server.pack_bytes()
    with pytest.raises(errors.NotFound):
        app.inputs().download_inputs(["x"])


# --- the store on its own ------------------------------------------------------------------------


def _nothing_referenced(pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    return set()


def _all_referenced(pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    return set(pairs)


def _index_is_sound(store: LocalBlobStore) -> None:
    """Every index row names bytes on disk that hash to its digest."""
    for (sha,) in store.index._conn().execute("SELECT sha256 FROM blobs"):  # type: ignore[attr-defined]
        assert hashlib.sha256(store.get(sha) or b"").hexdigest() == sha


def test_compaction_keeps_the_index_sound_and_removes_packs_nothing_names(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.PACK_LIMIT = 40_000  # type: ignore[misc] - several packs
    keep = [os.urandom(3_000) for _ in range(30)]
    drop = [os.urandom(3_000) for _ in range(30)]
    for start in range(0, 30, 5):
        store.put_many("keeper", keep[start : start + 5])
        store.put_many("dropper", drop[start : start + 5])
    (tmp_path / "blobs" / "packs" / "000000.pack").write_bytes(b"left by a crash")  # no row names it

    def only_keeper(pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        return {p for p in pairs if p[0] == "keeper"}

    report = store.collect_garbage(only_keeper, grace_seconds=0)
    assert report.blobs_deleted == 30 and report.packs_compacted >= 2
    assert not (tmp_path / "blobs" / "packs" / "000000.pack").exists()
    assert report.pack_bytes_after <= 30 * 3_000 + 40_000
    _index_is_sound(store)
    assert [store.get(sha256_hex(b)) for b in keep] == keep
    assert all(store.get(sha256_hex(b)) is None for b in drop)
    store.close()
    reopened = LocalBlobStore(tmp_path)  # and after a restart, appends go on where they should
    reopened.put_many("keeper", [b"after restart"])
    assert [reopened.get(sha256_hex(b)) for b in [*keep, b"after restart"]] == [*keep, b"after restart"]
    _index_is_sound(reopened)
    reopened.close()


def test_a_crash_between_the_moved_index_and_removing_the_old_pack_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path)
    keep = [os.urandom(2_000) for _ in range(5)]
    store.put_many("keeper", keep)
    store.put_many("dropper", [os.urandom(50_000)])

    def crash(self: Path, missing_ok: bool = False) -> None:
        raise OSError("simulated crash before the old pack is removed")

    monkeypatch.setattr(Path, "unlink", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.collect_garbage(lambda pairs: {p for p in pairs if p[0] == "keeper"}, grace_seconds=0)
    monkeypatch.undo()
    store.close()
    reopened = LocalBlobStore(tmp_path)
    _index_is_sound(reopened)
    assert [reopened.get(sha256_hex(b)) for b in keep] == keep
    reopened.collect_garbage(_all_referenced, grace_seconds=0)  # the orphaned old pack goes now
    assert not (tmp_path / "blobs" / "packs" / "000001.pack").exists()
    assert [reopened.get(sha256_hex(b)) for b in keep] == keep
    reopened.close()


def test_a_blob_stored_again_while_it_is_being_collected_is_never_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the in-flight marks close: a put finds a blob already stored and skips its bytes,
    then a collection runs before the put records its owner: the collection must keep the blob."""
    store = LocalBlobStore(tmp_path)
    small, large = os.urandom(1_000), os.urandom(LARGE_BLOB_BYTES)
    store.put_many("leaver", [small, large])  # held by someone about to stop using them
    real_time, started, collections = blobs.time.time, [], []
    putter = threading.get_ident()

    def time_with_a_collection_first() -> float:
        # the put's first clock reading comes after its "already stored?" check, before its owner
        # records (this thread's: time.time is the process's, and other threads read it too)
        if not started and threading.get_ident() == putter:
            started.append(True)
            collections.append(store.collect_garbage(_nothing_referenced, grace_seconds=0))
        return real_time()

    monkeypatch.setattr(blobs.time, "time", time_with_a_collection_first)
    store.put_many("stayer", [small, large])
    monkeypatch.undo()
    assert collections and collections[0].owners_released == 2  # it did run in that window
    assert store.get(sha256_hex(small)) == small and store.get(sha256_hex(large)) == large
    assert set(store.acquire("stayer", [sha256_hex(small), sha256_hex(large)])) == {
        sha256_hex(small),
        sha256_hex(large),
    }
    store.collect_garbage(_all_referenced, grace_seconds=0)
    assert store.get(sha256_hex(small)) == small and store.get(sha256_hex(large)) == large
    _index_is_sound(store)
    store.close()


def test_closing_the_store_stops_a_collection_in_progress_and_loses_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    kept = [os.urandom(500) for _ in range(10)]
    store.put_many("owner", kept)
    closer = threading.Thread(target=store.close)

    def close_meanwhile(pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        closer.start()  # close() waits for the collection, which must notice and stop
        assert store._closing.wait(10)
        return set()

    report = store.collect_garbage(close_meanwhile, grace_seconds=0)
    closer.join(10)
    assert not closer.is_alive() and report.blobs_deleted == 0
    reopened = LocalBlobStore(tmp_path)
    assert [reopened.get(sha256_hex(b)) for b in kept] == kept
    reopened.close()


def test_the_server_collects_in_the_background_when_asked_to(tmp_path: Path) -> None:
    running = PellucidServer(ServerSettings(data_dir=tmp_path, blob_gc_interval_seconds=0.05, blob_gc_grace_seconds=0))
    running.start()
    try:
        credentials = running.data_dir.read_credentials()
        assert credentials is not None
        inputs = User(base_url=f"grpc://{running.address}", pat=credentials.pat).create_app("bg").inputs()
        image = png(f"background {uuid.uuid4()}")
        inputs.upload_from_bytes("x", image_bytes=image)
        inputs.delete_inputs(["x"])
        packs = tmp_path / "blobs" / "packs"
        for _ in range(200):  # poll, up to 10 s, for the thread's next run to remove the bytes
            if image not in b"".join(p.read_bytes() for p in packs.glob("*.pack")):
                break
            threading.Event().wait(0.05)
        else:
            raise AssertionError("the background collection did not remove the deleted input's bytes")
        assert running._gc_thread is not None and running._gc_thread.is_alive()
    finally:
        running.stop(grace=0.5)
    assert running._gc_thread is None


def test_compaction_does_not_rewrite_the_pack_it_just_moved_live_blobs_into(tmp_path: Path) -> None:
    """The current pack grows by the blobs moved into it: they are live, not dead bytes to compact."""
    store = LocalBlobStore(tmp_path)
    store.PACK_LIMIT = 40_000  # type: ignore[misc] - pack 1 fills up, pack 2 is current
    store.put_many("dropper", [os.urandom(3_000) for _ in range(12)])
    keep = [os.urandom(3_000) for _ in range(5)]
    store.put_many("keeper", keep)
    current = [os.urandom(3_000) for _ in range(2)]
    store.put_many("keeper", current)  # the first append to pack 2
    assert sorted(p.name for p in (tmp_path / "blobs" / "packs").glob("*.pack")) == ["000001.pack", "000002.pack"]
    report = store.collect_garbage(lambda pairs: {p for p in pairs if p[0] == "keeper"}, grace_seconds=0)
    assert report.packs_compacted == 1  # pack 1 only; pack 2 holds nothing dead
    assert sorted(p.name for p in (tmp_path / "blobs" / "packs").glob("*.pack")) == ["000002.pack"]
    assert [store.get(sha256_hex(b)) for b in [*keep, *current]] == [*keep, *current]
    _index_is_sound(store)
    store.close()
