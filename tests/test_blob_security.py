"""The blob store's security: hashes that are paths, other users' blobs, size limits, file modes.

Reproductions first go through the real gRPC API (a client posting raw messages); the
store-level tests check that the store refuses the same things on its own.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pellucid import errors
from pellucid.api import v1
from pellucid.cli import build_parser
from pellucid.client.input import Inputs
from pellucid.client.user import User
from pellucid.server.runtime import PellucidServer, ServerSettings
from pellucid.server.storage.blobs import (
    LARGE_BLOB_BYTES,
    BlobTooLarge,
    InvalidDigest,
    LocalBlobStore,
    sha256_hex,
)
from tests.media_samples import png


def _post_by_hash(inputs: Inputs, input_id: str, sha256: str, kind: str = "image") -> tuple[str, str]:
    """PostInputs with one input naming a blob by hash: ("OK", "") or (code, reason)."""
    message = v1.Input(id=input_id)
    getattr(message.data, kind).blob_sha256 = sha256
    result = inputs.upload_inputs([message], show_log=False)
    if result.failed:
        return result.failed[0].code, result.failed[0].reason
    return "OK", ""


def _upload_blob(inputs: Inputs, data: bytes, sha256: str = "") -> v1.BlobRef:
    chunks = [data[i : i + 64 * 1024] for i in range(0, max(len(data), 1), 64 * 1024)]
    messages = (
        v1.BlobChunk(
            data=c, **({"user_id": inputs.user_id, "app_id": inputs.app_id, "sha256": sha256} if i == 0 else {})
        )
        for i, c in enumerate(chunks)
    )
    return inputs._stream_blob(messages)


# --- hashes that are paths ---------------------------------------------------------------------


def test_a_path_given_as_blob_sha256_is_refused_and_its_file_never_read(
    alice: User, unique: str, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(png("outside the blob store"))
    text_file = tmp_path / "notes.txt"
    text_file.write_bytes(b"TOP SECRET plans")
    inputs = alice.create_app(f"paths-{unique}").inputs()
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    depth = "../" * (len(secret.parts) + 4)
    bad_values = [
        str(secret),  # an absolute path
        depth + str(secret).lstrip("/"),  # a relative path climbing out of the store
        str(text_file),  # a file that is not an image: its first bytes used to be echoed
        "/etc/passwd",
        digest.upper(),  # not lowercase
        digest[:63],  # too short
        digest + "\n",  # a trailing newline must not slip past a pattern
        digest[:62] + "/.",
    ]
    for i, bad in enumerate(bad_values):
        code, reason = _post_by_hash(inputs, f"bad-{i}", bad)
        assert code == "INVALID_ARGUMENT", (bad, code, reason)
        assert "blob_sha256" in reason and "64 lowercase hex" in reason, reason
        assert "54 4f 50" not in reason and "first bytes" not in reason, reason
        with pytest.raises(errors.NotFound):  # nothing was stored, so there is nothing to download
            inputs.download_inputs([f"bad-{i}"])


def test_upload_blob_refuses_an_expected_sha256_that_is_not_a_hash(alice: User, unique: str) -> None:
    inputs = alice.create_app(f"expect-{unique}").inputs()
    for bad in ("../../etc/passwd", "x" * 64, hashlib.sha256(b"a").hexdigest().upper()):
        with pytest.raises(errors.InvalidArgument, match="64 lowercase hex"):
            _upload_blob(inputs, png("x"), sha256=bad)
    good = png("expected")
    assert _upload_blob(inputs, good, sha256=sha256_hex(good)).sha256 == sha256_hex(good)
    with pytest.raises(errors.InvalidArgument, match="damaged"):
        _upload_blob(inputs, good, sha256=sha256_hex(b"other"))


def test_the_store_refuses_anything_but_a_sha256_in_every_method(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"not yours")
    data = b"inside"
    digest = store.put_many("alice", [data])[0]
    bad_values = [
        str(outside),
        "../outside.bin",
        "../" * 10 + str(outside).lstrip("/"),
        digest.upper(),
        digest + "\n",
        digest[:-1],
        "",
    ]
    calls = [
        lambda bad: store.size(bad),
        lambda bad: store.get(bad),
        lambda bad: store.read_chunks(bad),
        lambda bad: store.acquire("alice", [bad]),
        lambda bad: store.put_many("alice", [data], [bad]),
        lambda bad: store.put_stream("alice", iter([data]), expected_sha256=bad or "-"),
    ]
    for bad in bad_values:
        for call in calls:
            with pytest.raises(InvalidDigest):
                call(bad)
    assert store.get(digest) == data
    store.close()


# --- blobs belong to their owner ---------------------------------------------------------------


def test_a_blob_can_be_named_only_by_a_user_who_uploaded_it_and_others_cannot_tell_it_exists(
    alice: User, bob: User, unique: str
) -> None:
    alice_inputs = alice.create_app(f"own-{unique}").inputs()
    bob_inputs = bob.create_app(f"own-{unique}").inputs()
    private = png(f"alice's photo {unique}")
    alice_inputs.upload_from_bytes("photo", image_bytes=private)  # inline bytes make alice an owner
    streamed = _upload_blob(alice_inputs, b"TOP SECRET " + os.urandom(64))  # so does UploadBlob
    private_sha = sha256_hex(private)
    assert alice_inputs.get_input("photo").data.image.blob_sha256 == private_sha
    never_stored = sha256_hex(f"nobody has this {unique}".encode())

    code, reason = _post_by_hash(bob_inputs, "stolen", private_sha)
    code_text, reason_text = _post_by_hash(bob_inputs, "stolen-text", streamed.sha256)
    code_absent, reason_absent = _post_by_hash(bob_inputs, "absent", never_stored)
    assert code == code_text == code_absent == "NOT_FOUND"
    # word for word the same answer as for a blob nobody stored: no existence oracle
    assert (
        reason.replace(private_sha, "H")
        == reason_text.replace(streamed.sha256, "H")
        == reason_absent.replace(never_stored, "H")
    )
    assert "first bytes" not in reason_text and "54 4f 50" not in reason_text
    with pytest.raises(errors.NotFound):
        bob_inputs.download_inputs(["stolen"])

    # alice can reuse her blob by hash, in any of her apps
    other = alice.create_app(f"own2-{unique}").inputs()
    assert _post_by_hash(other, "again", private_sha) == ("OK", "")
    assert other.download_inputs(["again"]) == [private]
    # bob may use the same bytes once he has sent them himself (stored once, owned by both)
    bob_inputs.upload_from_bytes("his", image_bytes=private)
    assert _post_by_hash(bob_inputs, "by-hash", private_sha) == ("OK", "")
    assert bob_inputs.download_inputs(["by-hash"]) == [private]


def test_ownership_is_checked_for_the_whole_batch_at_once(alice: User, bob: User, unique: str) -> None:
    """Mixed batches: each item gets its own answer; bob's good items land beside the refused ones."""
    alice_inputs = alice.create_app(f"batch-{unique}").inputs()
    bob_inputs = bob.create_app(f"batch-{unique}").inputs()
    theirs = png(f"alice {unique}")
    mine = png(f"bob {unique}")
    alice_inputs.upload_from_bytes("a", image_bytes=theirs)
    bob_sha = _upload_blob(bob_inputs, mine).sha256
    batch = []
    for i, sha in enumerate([bob_sha, sha256_hex(theirs), bob_sha, "../x"]):
        message = v1.Input(id=f"item-{i}")
        message.data.image.blob_sha256 = sha
        batch.append(message)
    result = bob_inputs.upload_inputs(batch, show_log=False)
    assert sorted(result.stored_ids) == ["item-0", "item-2"]
    assert {f.index: f.code for f in result.failed} == {1: "NOT_FOUND", 3: "INVALID_ARGUMENT"}


# --- the size limit ----------------------------------------------------------------------------


@pytest.fixture
def small_limit_server(tmp_path: Path) -> Iterator[tuple[PellucidServer, User]]:
    running = PellucidServer(
        ServerSettings(data_dir=tmp_path / "data", max_blob_bytes=LARGE_BLOB_BYTES + 1000, blob_gc_interval_seconds=0)
    )
    running.start()
    credentials = running.data_dir.read_credentials()
    assert credentials is not None
    yield running, User(base_url=f"grpc://{running.address}", pat=credentials.pat)
    running.stop(grace=0.5)


def test_an_upload_past_the_size_limit_is_refused_as_it_passes_and_nothing_is_kept(
    small_limit_server: tuple[PellucidServer, User],
) -> None:
    running, admin = small_limit_server
    inputs = admin.create_app("limits").inputs()
    blobs_dir = running.data_dir.path / "blobs"
    pulled = []

    def endless() -> Iterator[v1.BlobChunk]:  # 64 MiB if nothing stops it
        for i in range(256):
            pulled.append(i)
            yield v1.BlobChunk(
                data=os.urandom(256 * 1024), **({"user_id": inputs.user_id, "app_id": inputs.app_id} if i == 0 else {})
            )

    with pytest.raises(errors.RateLimited) as refused:
        inputs._stream_blob(endless())
    message = refused.value.message
    assert str(LARGE_BLOB_BYTES + 1000) in message and "max_blob_bytes" in message and "--max-blob-bytes" in message
    assert len(pulled) < 128, len(pulled)  # refused while arriving, not after reading the whole stream
    leftovers = [p for p in blobs_dir.rglob("*") if p.is_file() and p.suffix != ".pack"]
    assert leftovers == []
    assert sum(p.stat().st_size for p in blobs_dir.rglob("*.pack")) == 0
    # right at the limit is fine; inline bytes past it are refused per item
    at_limit = b"\x00\x00\x00\x18ftypisom" + os.urandom(LARGE_BLOB_BYTES + 1000 - 12)
    assert _upload_blob(inputs, at_limit).size == LARGE_BLOB_BYTES + 1000
    result = inputs.upload_inputs([Inputs.get_input_from_bytes("big", video_bytes=at_limit + b"!")], show_log=False)
    assert result.failed[0].code == "RESOURCE_EXHAUSTED" and "max_blob_bytes" in result.failed[0].reason
    # hosted data files have their own limit (max_data_file_bytes, none by default): inputs' does not bound them
    admin.dir("data://.my/big").create()
    stored = admin.file("data://.my/big/file").put(at_limit + b"!" * 1000)
    assert stored.size == len(at_limit) + 1000 and stored.getBytes() == at_limit + b"!" * 1000


def test_the_store_stops_reading_a_stream_at_the_limit(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    pulled = []

    def chunks() -> Iterator[bytes]:
        for i in range(100):
            pulled.append(i)
            yield b"x" * 1000

    with pytest.raises(BlobTooLarge):
        store.put_stream("alice", chunks(), max_bytes=10_500)
    assert len(pulled) == 11
    assert [p.name for p in (tmp_path / "blobs").iterdir()] == ["packs"]
    store.close()


def test_the_server_command_takes_max_blob_bytes() -> None:
    args = build_parser().parse_args(["server", "--max-blob-bytes", "1234"])
    assert args.max_blob_bytes == 1234
    from pellucid.server.settings import resolve

    assert resolve(vars(build_parser().parse_args(["server"])), environ={})["max_blob_bytes"] == 1 << 30
    assert build_parser().parse_args(["server", "--max-data-file-bytes", "99"]).max_data_file_bytes == 99
    assert resolve(vars(build_parser().parse_args(["server"])), environ={})["max_data_file_bytes"] == 0


# --- file modes --------------------------------------------------------------------------------


def _modes(root: Path) -> dict[str, int]:
    found = {}
    for path in [root / "blobs", *root.glob("blobs.sqlite3*"), *(root / "blobs").rglob("*")]:
        found[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return found


def _assert_private(root: Path) -> None:
    for name, mode in _modes(root).items():
        wanted = 0o700 if (root / name).is_dir() else 0o600
        assert mode == wanted, f"{name} is {oct(mode)}, not {oct(wanted)}"


def test_every_file_the_store_makes_is_0600_and_every_directory_0700(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        store = LocalBlobStore(tmp_path)
        store.put_many("alice", [b"small", os.urandom(LARGE_BLOB_BYTES + 1)])
        store.put_stream("alice", iter([os.urandom(LARGE_BLOB_BYTES), b"more"]))
        store.put_stream("alice", iter([b"tiny"]))
        names = set(_modes(tmp_path))
        assert {"blobs.sqlite3", "blobs.sqlite3-wal", "blobs/packs/000001.pack"} <= names
        assert sum(n.count("/") == 3 for n in names) == 2  # the two large blobs
        _assert_private(tmp_path)
        store.close()
    finally:
        os.umask(old_umask)


def test_a_store_made_before_modes_and_owners_is_fixed_on_open(tmp_path: Path) -> None:
    """A data dir from an older pellucid: 0644/0755 files, and blobs without owner records."""
    data = tmp_path / "data"
    running = PellucidServer(ServerSettings(data_dir=data, blob_gc_interval_seconds=0))
    running.start()
    credentials = running.data_dir.read_credentials()
    assert credentials is not None
    admin = User(base_url=f"grpc://{running.address}", pat=credentials.pat)
    created = admin.create_user("carol")
    carol = User(base_url=f"grpc://{running.address}", pat=created.pat.secret, user_id="carol")
    image, video = png("carol's"), b"\x00\x00\x00\x18ftypisom" + os.urandom(LARGE_BLOB_BYTES)
    carol_inputs = carol.create_app("old").inputs()
    carol_inputs.upload_from_bytes("image", image_bytes=image)
    carol_inputs.upload_from_bytes("video", video_bytes=video)
    running.stop(grace=0.5)
    with sqlite3.connect(data / "blobs.sqlite3") as conn:  # what an older pellucid left
        conn.execute("DROP TABLE owners")
        conn.execute("DROP TABLE flags")
    for path in [data / "blobs", *(data / "blobs").rglob("*"), *data.glob("blobs.sqlite3*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)

    running = PellucidServer(ServerSettings(data_dir=data, blob_gc_interval_seconds=0))
    running.start()
    try:
        _assert_private(data)
        admin = User(base_url=f"grpc://{running.address}", pat=credentials.pat)
        carol = User(base_url=f"grpc://{running.address}", pat=created.pat.secret, user_id="carol")
        carol_inputs = carol.create_app("new").inputs()
        # carol owns what her inputs held; the admin does not
        assert _post_by_hash(carol_inputs, "again", sha256_hex(image)) == ("OK", "")
        assert _post_by_hash(carol_inputs, "video-again", sha256_hex(video), "video") == ("OK", "")
        assert _post_by_hash(admin.create_app("x").inputs(), "taken", sha256_hex(image))[0] == "NOT_FOUND"
        assert running.engine is not None
        running.engine.collect_blob_garbage(grace_seconds=0)  # owned blobs survive a collection
        assert carol_inputs.download_inputs(["again", "video-again"]) == [image, video]
    finally:
        running.stop(grace=0.5)
