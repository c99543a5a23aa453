"""Hosted data (data://) through the Python client against a real server: directories, files, listings
that page, typed errors, the ACL matrix, blobs kept while a file names them, and bounded-memory streaming."""

from __future__ import annotations

import gc
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pellucid.acl import Acl, AclType, ReadAcl
from pellucid.api import v1
from pellucid.client import data_transfer
from pellucid.client.hosted_data import DataDirectory, DataFile, data_dir
from pellucid.client.user import User
from pellucid.errors import (
    AlreadyExists,
    ApiError,
    DataApiError,
    DataExists,
    DataInvalidArgument,
    DataNotFound,
    DataPermissionDenied,
    DirectoryNotEmpty,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    UserError,
)
from pellucid.server.engine import Engine, Principal, hosted_data
from pellucid.server.engine.errors import EngineError
from pellucid.server.engine.errors import InvalidArgument as EngineInvalidArgument
from pellucid.server.engine.errors import NotFound as EngineNotFound
from pellucid.server.engine.errors import ResourceExhausted as EngineResourceExhausted
from pellucid.server.engine.hosted_data import MAX_FILES_PER_UPLOAD, AlgorithmCaller, DataPath, UploadPiece
from pellucid.server.grpc import data as grpc_data
from pellucid.server.storage import open_metadata_store
from pellucid.server.storage.registry import open_blob_store
from tests.conftest import RunningServer


def test_directories_exist_create_and_refuse_to_delete_when_not_empty(alice: User) -> None:
    photos = alice.dir("data://.my/photos")
    assert not photos.exists()
    photos.create()
    assert photos.exists() and photos.get_permissions() == ReadAcl.my_algos  # the reference's default
    with pytest.raises(DataExists) as exists:
        photos.create()
    assert isinstance(exists.value, AlreadyExists) and isinstance(exists.value, ApiError)
    trip = photos.dir("trip")
    trip.create()
    assert alice.dir(".my/photos/trip").exists()  # the scheme may be left out
    with pytest.raises(DataNotFound, match="create it first, or pass parents"):
        photos.dir("a/b").create()
    photos.dir("a/b").create(parents=True)
    trip.file("x.txt").put("x")
    with pytest.raises(DirectoryNotEmpty, match="not empty: delete what is in it first, or delete with force"):
        photos.delete()
    assert photos.exists() and trip.file("x.txt").exists()
    assert photos.delete(force=True) == 5  # photos, trip, x.txt, a, a/b
    assert not photos.exists() and not trip.file("x.txt").exists()


def test_files_put_get_in_every_form_and_put_overwrites(alice: User, tmp_path: Path) -> None:
    alice.dir("data://.my/docs").create()
    text = alice.file("data://.my/docs/notes.txt")
    assert not text.exists()
    assert text.put("héllo").getString() == "héllo"
    assert text.size == len("héllo".encode()) and text.last_modified is not None
    before = text.last_modified
    text.put(b"\xff\x01binary")  # overwrites
    assert text.getBytes() == b"\xff\x01binary" and text.size == 8
    assert text.last_modified is not None and text.last_modified >= before
    with pytest.raises(UserError, match="is not utf-8 text"):
        text.getString()

    config = alice.file("data://.my/docs/config.json").putJson({"a": [1, 2.5, None, True], "b": "c"})
    assert config.getJson() == {"a": [1, 2.5, None, True], "b": "c"}
    with pytest.raises(UserError, match="not JSON-serialisable"):
        config.putJson({1, 2})

    local = tmp_path / "local.bin"
    local.write_bytes(os.urandom(3 * 1024 * 1024 + 5))  # a large file: its own stream, several chunks
    from_path = alice.file("data://.my/docs/sub/dir/from_path.bin").putFile(local)  # sub dirs are made
    assert from_path.getBytes() == local.read_bytes()
    with open(local, "rb") as handle:
        handle.seek(5)
        from_object = alice.file("data://.my/docs/from_object.bin").putFile(handle)  # from where it stands
    assert from_object.getBytes() == local.read_bytes()[5:]
    reader, writer = os.pipe()  # not seekable: spooled first
    os.write(writer, b"piped bytes")
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        assert alice.file("data://.my/docs/piped").putFile(pipe).getString() == "piped bytes"
    alice.file("data://.my/docs/empty").put(b"")
    assert alice.file("data://.my/docs/empty").getBytes() == b""

    with from_path.getFile() as downloaded:
        assert downloaded.read() == local.read_bytes()
        assert Path(downloaded.name).read_bytes() == local.read_bytes()  # a path other code can open meanwhile
    assert not Path(downloaded.name).exists()  # closed: deleted, as a NamedTemporaryFile is
    dropped = from_path.getFile()
    dropped_path = dropped.name
    del dropped
    gc.collect()
    assert not Path(dropped_path).exists()  # collected without close: deleted too
    path = from_path.getFile(as_path=True)
    assert Path(path).read_bytes() == local.read_bytes()
    os.unlink(path)

    assert sorted(d.name for d in alice.dir("data://.my/docs").dirs()) == ["sub"]
    assert sorted(f.name for f in alice.dir("data://.my/docs").files()) == [
        "config.json",
        "empty",
        "from_object.bin",
        "notes.txt",
        "piped",
    ]
    listed = {o.name: o for o in alice.dir("data://.my/docs").list()}
    assert isinstance(listed["sub"], DataDirectory) and isinstance(listed["config.json"], DataFile)
    assert listed["from_object.bin"].size == len(local.read_bytes()) - 5  # type: ignore[union-attr]

    text.delete()
    assert not text.exists()
    with pytest.raises(DataNotFound) as missing:
        text.getBytes()
    assert isinstance(missing.value, NotFound)
    with pytest.raises(DataNotFound):
        text.delete()


def test_bad_paths_are_refused_with_what_to_write(alice: User) -> None:
    alice.dir("data://.my/things").create()
    with pytest.raises(DataInvalidArgument, match="names no file"):
        alice.file("data://.my/things").put("x")
    with pytest.raises(DataInvalidArgument, match=r"'\.' or '\.\.'"):
        alice.file("data://.my/things/../secret").put("x")
    for spoof in ("invoice\u202efdp.exe", "a\u200bb", "\ufeffx", "line\u2028break"):
        with pytest.raises(DataInvalidArgument, match="invisible or text-direction character"):
            alice.file(f"data://.my/things/{spoof}").put("x")
    alice.file("data://.my/things/caf\u00e9 \U0001f600.txt").put("x")  # other unicode is fine
    with pytest.raises(DataInvalidArgument, match="works only inside an algorithm"):
        alice.file("data://.algo/temp/x").put("x")
    with pytest.raises(UserError, match="only data:// paths"):
        alice.file("s3://bucket/x")
    with pytest.raises(DataNotFound, match=r"collection data://.+/nothing does not exist: create it first"):
        alice.file("data://.my/nothing/x").put("x")
    alice.file("data://.my/things/f").put("x")
    with pytest.raises(DataApiError, match="is a file, not a directory"):
        alice.file("data://.my/things/f/g").put("x")
    alice.dir("data://.my/things/sub").create()
    with pytest.raises(DataApiError, match="is a directory: delete it as a directory"):
        alice.file("data://.my/things/sub").delete()
    assert not alice.file("data://.my/things/sub").exists() and alice.dir("data://.my/things/sub").exists()


def test_a_directory_of_thousands_of_files_lists_through_pages(alice: User) -> None:
    many = alice.dir("data://.my/many")
    many.create()
    count = 2_345  # more than two pages of 1,000
    items = [
        data_transfer.UploadItem(f"{many.path}/f{i:05}", 3, (lambda: io.BytesIO(b"abc")), "") for i in range(count)
    ]
    report = data_transfer.upload(many, items)
    assert report.failures == [] and report.files == count
    names = [f.name for f in many.files()]  # in the order they were stored (batches ran concurrently)
    assert len(names) == count and sorted(names) == [f"f{i:05}" for i in range(count)]


def test_acl_matrix_owner_other_user_public(alice: User, bob: User) -> None:
    for name, acl in (("priv", ReadAcl.private), ("algos", ReadAcl.my_algos), ("pub", ReadAcl.public)):
        alice.dir(f"data://.my/{name}").create(acl)
        alice.file(f"data://.my/{name}/f.txt").put(name)
    owner = alice.user_id
    for name in ("priv", "algos", "pub"):  # the owner reads and writes everything
        assert alice.file(f"data://{owner}/{name}/f.txt").getString() == name
        alice.file(f"data://{owner}/{name}/g.txt").put("g")

    # another user: public reads, nothing else; writes never
    assert bob.file(f"data://{owner}/pub/f.txt").getString() == "pub"
    assert bob.dir(f"data://{owner}/pub").get_permissions().read_acl is AclType.public
    assert [f.name for f in bob.dir(f"data://{owner}/pub").files()] == ["f.txt", "g.txt"]
    with pytest.raises(DataPermissionDenied) as denied:
        bob.file(f"data://{owner}/pub/f.txt").put("overwritten")
    assert isinstance(denied.value, PermissionDenied)
    with pytest.raises(DataPermissionDenied):
        bob.file(f"data://{owner}/pub/f.txt").delete()
    with pytest.raises(DataPermissionDenied):
        bob.dir(f"data://{owner}/pub").update_permissions(ReadAcl.private)
    with pytest.raises(DataPermissionDenied):
        bob.dir(f"data://{owner}/pub").delete(force=True)
    assert alice.file(f"data://{owner}/pub/f.txt").getString() == "pub"

    def hidden(call: object) -> str:
        with pytest.raises(DataNotFound) as error:
            call()  # type: ignore[operator]
        return error.value.message

    for name in ("priv", "algos"):  # answered exactly as if there were nothing there
        private = f"data://{owner}/{name}/f.txt"
        absent = f"data://{owner}/{name}/f.txt".replace(name, "never-made")
        assert hidden(lambda p=private: bob.file(p).getBytes()) == hidden(
            lambda p=absent: bob.file(p).getBytes()
        ).replace("never-made", name)
        assert not bob.file(private).exists() and not bob.dir(f"data://{owner}/{name}").exists()
        hidden(lambda p=private: bob.file(p).put("x"))
        hidden(lambda p=private: bob.file(p).delete())
        hidden(lambda n=name: list(bob.dir(f"data://{owner}/{n}").list()))
        hidden(lambda n=name: bob.dir(f"data://{owner}/{n}").get_permissions())
        hidden(lambda n=name: bob.dir(f"data://{owner}/{n}").update_permissions(ReadAcl.public))
    assert [d.name for d in bob.dir(f"data://{owner}").dirs()] == ["pub"]  # others' root lists public ones only
    assert [d.name for d in alice.dir("data://.my").dirs()] == ["priv", "algos", "pub"]

    alice.dir("data://.my/priv").update_permissions(ReadAcl.public)  # the owner opens it
    assert bob.file(f"data://{owner}/priv/f.txt").getString() == "priv"
    alice.dir("data://.my/pub").update_permissions(AclType.private)  # and closes another
    hidden(lambda: bob.file(f"data://{owner}/pub/f.txt").getBytes())
    with pytest.raises(DataInvalidArgument, match="permissions belong to collections"):
        alice.dir("data://.my/priv/sub").update_permissions(ReadAcl.public)
    assert Acl.from_name("public") == ReadAcl.public and ReadAcl.private.to_api_param() == {"read": []}
    assert ReadAcl.public.to_api_param() == {"read": ["user://*"]}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    opened = Engine(open_metadata_store(f"sqlite://{tmp_path / 'm.sqlite3'}"), open_blob_store(f"file://{tmp_path}"))
    yield opened
    opened.close()


def test_my_algos_admits_the_owners_algorithms_and_private_does_not(engine: Engine) -> None:
    """The hook the algorithm side sets: a call made by one of alice's algorithms for another user."""
    data = engine.hosted_data
    alice, bob = Principal("alice", False, "t1"), Principal("bob", False, "t2")
    for name, acl in (("priv", "private"), ("algos", "my_algos"), ("pub", "public")):
        data.create_dir(alice, f"data://.my/{name}", acl)
    calls_by: dict[str, AlgorithmCaller] = {}
    data.algorithm_of = lambda principal: calls_by.get(principal.token_id)

    def readable(principal: Principal, name: str) -> bool:
        try:
            data.get_dir(principal, f"data://alice/{name}")
        except EngineNotFound:
            return False
        return True

    assert [readable(bob, n) for n in ("priv", "algos", "pub")] == [False, False, True]
    calls_by["t2"] = AlgorithmCaller(owner="alice", algorithm="resize")  # bob's call runs alice's algorithm
    assert [readable(bob, n) for n in ("priv", "algos", "pub")] == [False, True, True]
    calls_by["t2"] = AlgorithmCaller(owner="carol", algorithm="resize")  # another owner's algorithm
    assert [readable(bob, n) for n in ("priv", "algos", "pub")] == [False, False, True]

    # data://.algo/... : the algorithm side maps it to the algorithm's own collection
    data.resolve_algo = lambda principal, names: DataPath("alice", ("algos", *names))
    data.create_dir(alice, "data://.algo/temp")
    assert data.get_dir(alice, "data://alice/algos/temp").path == "data://alice/algos/temp"


def test_a_download_looks_files_up_together_and_answers_each_in_order(engine: Engine) -> None:
    """Downloads resolve their files a directory at a time (`_files`): every path still gets
    exactly what `get_file` says of it, in the order asked, across groups and directories."""
    data = engine.hosted_data
    alice, bob = Principal("alice", False, "t1"), Principal("bob", False, "t2")
    data.create_dir(alice, "data://.my/pub", "public")
    data.create_dir(alice, "data://.my/priv", "private")
    data.create_dir(alice, "data://.my/pub/sub")
    files = {f"data://alice/pub/f{i}": f"pub {i}".encode() for i in range(hosted_data.DOWNLOAD_RESOLVE_FILES + 5)}
    files["data://alice/pub/sub/deep"] = b"deep"
    files["data://alice/priv/secret"] = b"secret"
    files["data://alice/pub/empty"] = b""
    data.upload(alice, iter([UploadPiece(path, len(body), body) for path, body in files.items()]))
    asked = [
        *files,
        "data://alice/pub/missing",
        "data://alice/pub/sub",  # a directory
        "data://alice/nope/f0",  # no such collection
        "data://alice/pub/f0/under-a-file",
        "data://alice/pub",  # names no file
        "not a data path",
    ]
    asked.insert(3, asked[0])  # twice in one download

    def answers(principal: Principal) -> list[bytes | str]:
        got: list[bytes | str] = []
        for item in data.download(principal, asked):
            if item.error is None:
                got.append(b"".join(item.chunks))
            else:
                got.append(f"{type(item.error).__name__}:{item.error.reason}")
                assert item.path in str(item.error) or "data://" not in item.path
        return got

    def expected(principal: Principal) -> list[bytes | str]:
        want: list[bytes | str] = []
        for path in asked:
            try:
                item = data.get_file(principal, path)
            except EngineError as exc:
                want.append(f"{type(exc).__name__}:{exc.reason}")
            else:
                want.append(files[item.path])
        return want

    mine = answers(alice)
    assert mine == expected(alice) and mine[3] == b"pub 0" and b"secret" in mine
    assert mine[-6:] == [
        "NotFound:DATA_NOT_FOUND",
        "NotFound:NOT_A_FILE",
        "NotFound:DATA_NOT_FOUND",
        "NotFound:DATA_NOT_FOUND",
        "InvalidArgument:BAD_PATH",
        "InvalidArgument:BAD_PATH",
    ]
    theirs = answers(bob)  # bob reads the public collection only; the private file is as if missing
    assert theirs == expected(bob) and b"secret" not in theirs and b"deep" in theirs
    assert theirs[asked.index("data://alice/priv/secret")] == "NotFound:DATA_NOT_FOUND"


def test_blobs_stay_while_a_file_names_them_and_are_shared_by_content(server: RunningServer, alice: User) -> None:
    engine = server.server.engine
    assert engine is not None
    alice.dir("data://.my/gc").create()
    content = os.urandom(2048)
    first = alice.file("data://.my/gc/a").put(content)
    alice.file("data://.my/gc/b").put(content)  # deduplicated: one blob
    sha256 = first.sha256
    assert sha256 == alice.file("data://.my/gc/b").sha256
    engine.collect_blob_garbage(grace_seconds=0)
    assert alice.file("data://.my/gc/a").getBytes() == content
    first.delete()
    engine.collect_blob_garbage(grace_seconds=0)
    assert alice.file("data://.my/gc/b").getBytes() == content  # still named by b
    alice.file("data://.my/gc/b").delete()
    engine.collect_blob_garbage(grace_seconds=0)
    assert engine.blobs.size(sha256) is None  # nobody names it any more


MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from pellucid.client.user import User
    user = User(base_url=sys.argv[1], pat=sys.argv[2])
    user.dir("data://.my/large").create()
    def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    user.file("data://.my/large/warmup").put(b"x" * 1024)
    user.file("data://.my/large/warmup").getBytes()
    base = peak()
    remote = user.file("data://.my/large/big.bin").putFile(sys.argv[3])
    up = peak()
    remote.getFileTo(sys.argv[4])
    print(json.dumps({"base": base, "up": up, "down": peak(), "size": remote.size}))
    """
)


def test_a_large_file_streams_both_ways_in_bounded_memory(server: RunningServer, alice: User, tmp_path: Path) -> None:
    size = 96 * 1024 * 1024
    source = tmp_path / "big.bin"
    with open(source, "wb") as out:
        for _ in range(size // (8 * 1024 * 1024)):
            out.write(os.urandom(8 * 1024 * 1024))
    pat = alice._connection.settings.pat  # type: ignore[attr-defined]
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, server.url, pat, str(source), str(tmp_path / "back.bin")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    assert measured["size"] == size
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    # the client held a few chunks at a time, not the file (a whole copy would add 96 MiB)
    assert measured["up"] - measured["base"] < 32 * 1024 * 1024, measured
    assert measured["down"] - measured["base"] < 32 * 1024 * 1024, measured


def test_data_dir_and_data_file_attach_to_any_client_object(alice: User) -> None:
    directory = data_dir(alice, "data://.my/attached")
    directory.create()
    assert directory.file("x").put("y").getString() == "y"
    assert alice.dir("data://.my/attached") == directory


def test_a_badly_framed_upload_is_invalid_argument_and_a_too_large_file_fails_alone(
    alice: User, tmp_path: Path
) -> None:
    alice.dir("data://.my/frames").create()
    path = "data://.my/frames/f"

    def send(*messages: v1.DataUploadChunk) -> v1.UploadDataFilesResponse:
        return alice._connection.send_stream(v1.DataServiceStub, "UploadDataFiles", iter(messages), timeout=30)

    with pytest.raises(InvalidArgument, match="each file's first message names its path"):
        send(v1.DataUploadChunk(data=b"x"))
    with pytest.raises(InvalidArgument, match="more than the announced 1 bytes"):
        send(v1.DataUploadChunk(path=path, size=1, data=b"xy"))
    with pytest.raises(InvalidArgument, match="1 of the announced 3 bytes arrived before the end of the stream"):
        send(v1.DataUploadChunk(path=path, size=3, data=b"x"))
    with pytest.raises(InvalidArgument, match="before the next file"):
        send(v1.DataUploadChunk(path=path, size=3, data=b"x"), v1.DataUploadChunk(path=path + "2", size=0))
    with pytest.raises(InvalidArgument, match="negative"):
        send(v1.DataUploadChunk(path=path, size=-1))
    assert not alice.file(path).exists()  # nothing half-stored

    engine = Engine(
        open_metadata_store(f"sqlite://{tmp_path / 'm.sqlite3'}"),
        open_blob_store(f"file://{tmp_path}"),
        max_blob_bytes=1,  # inputs' limit: not data://'s
        max_data_file_bytes=10,
    )
    try:
        owner = Principal("carol", False, "t")
        engine.hosted_data.create_dir(owner, "data://.my/c")
        pieces = [
            UploadPiece("data://.my/c/small", 3, b"abc"),
            UploadPiece("data://.my/c/huge", 11, b"x" * 11),
            UploadPiece("data://.my/c/after", 2, b"ok"),
        ]
        outcomes = engine.hosted_data.upload(owner, iter(pieces))
        assert [o.error is None for o in outcomes] == [True, False, True]
        assert "more than the server's limit of 10" in str(outcomes[1].error)
        assert "--max-data-file-bytes" in str(outcomes[1].error)
        assert engine.hosted_data.get_file(owner, "data://.my/c/after").size == 2

        # a file the blob store's disk cannot hold ends the upload before its bytes are read (reading
        # them would fail on the framing: far fewer than announced follow)
        engine.hosted_data.max_file_bytes = 0  # no limit but the disk
        announced = [
            UploadPiece("data://.my/c/before", 2, b"ok"),
            UploadPiece("data://.my/c/vast", 1 << 62, b"x" * 10),
            UploadPiece("", 0, b"x" * 10),
        ]
        with pytest.raises(EngineResourceExhausted, match=r"disk has [0-9]+ bytes free") as full:
            engine.hosted_data.upload(owner, iter(announced))
        assert full.value.reason == "NO_DISK_SPACE" and "(1 before it were)" in full.value.message
        assert engine.hosted_data.get_file(owner, "data://.my/c/before").size == 2
        with pytest.raises(EngineNotFound):
            engine.hosted_data.get_file(owner, "data://.my/c/vast")

        # past MAX_FILES_PER_UPLOAD (its answer lists every file): refused, saying what was stored
        many = (UploadPiece(f"data://.my/c/n{i}", 1, b"n") for i in range(MAX_FILES_PER_UPLOAD + 2))
        with pytest.raises(EngineInvalidArgument, match=f"at most {MAX_FILES_PER_UPLOAD} files: the first") as info:
            engine.hosted_data.upload(owner, many)
        assert f"n{MAX_FILES_PER_UPLOAD}'" in info.value.message
        assert engine.hosted_data.get_file(owner, f"data://.my/c/n{MAX_FILES_PER_UPLOAD - 1}").size == 1
        with pytest.raises(EngineNotFound):
            engine.hosted_data.get_file(owner, f"data://.my/c/n{MAX_FILES_PER_UPLOAD}")
    finally:
        engine.close()


def reads_and_writes_data(input: dict) -> str:
    """An algorithm: reads the file `input["read"]` and writes its upper case to `input["write"]`."""
    import pellucid

    client = pellucid.client()  # inside the runner: the runner's (its owner's) credentials
    text = client.file(input["read"]).getString()
    client.file(input["write"]).put(text.upper())
    return text


def test_an_algorithm_reads_and_writes_its_owners_data_for_another_caller(alice: User, bob: User, unique: str) -> None:
    """The round trip of the issue: files in a collection only alice reads, an algorithm of hers that
    reads them, called by bob; bob himself still cannot read them."""
    from pellucid.client.runner import function_runner
    from tests.test_algorithms import algo_client, start_runner

    alice.dir("data://.my/inbox").create(ReadAcl.my_algos)
    alice.file("data://.my/inbox/note.txt").put("for algorithms only")
    label = f"data-algo-{unique}"
    model = alice.create_app(f"data-{unique}").create_model("reader", runner_labels=[label])
    runner, thread = start_runner(alice, f"reader-{unique}", label, function_runner(reads_and_writes_data))
    try:
        model.publish_algorithm(name=f"reader-{unique}", version="1.0.0", public=True)
        owner = alice.user_id
        request = {"read": f"data://{owner}/inbox/note.txt", "write": f"data://{owner}/inbox/out.txt"}
        response = algo_client(bob).algo(f"{owner}/reader-{unique}").pipe(request)
        assert response.result == "for algorithms only"
        assert alice.file("data://.my/inbox/out.txt").getString() == "FOR ALGORITHMS ONLY"
        with pytest.raises(DataNotFound):
            bob.file(f"data://{owner}/inbox/note.txt").getString()
        assert algo_client(alice).file("data://.my/inbox/out.txt").exists()  # the algorithm client has them too
    finally:
        runner.stop(drain=False)
        thread.join(10)


def test_a_download_packs_whole_small_files_into_messages_only_when_asked(alice: User) -> None:
    """pack_small_files: whole small files share messages (DataFileChunk.more), in the order asked,
    a missing one among them and a large one streamed alone; without it, one file per message."""
    alice.dir("data://.my/packs").create()
    small = {f"data://.my/packs/s{i}": os.urandom(100 * 1024) for i in range(25)}
    large = os.urandom(grpc_data.PACK_BYTES + 5)
    report = data_transfer.upload(
        alice,
        [
            data_transfer.UploadItem(path, len(data), lambda data=data: io.BytesIO(data))
            for path, data in [*small.items(), ("data://.my/packs/large", large)]
        ],
    )
    assert not report.failures
    order = [*list(small)[:12], "data://.my/packs/missing", "data://.my/packs/large", *list(small)[12:]]

    def download(pack: bool) -> list[v1.DataFileChunk]:
        request = v1.DownloadDataFilesRequest(paths=order, pack_small_files=pack)
        return list(alice._connection.read_stream(v1.DataServiceStub, "DownloadDataFiles", request, timeout=30))

    unpacked = download(False)
    assert not any(m.more for m in unpacked)
    assert [m.path for m in unpacked if m.path] == order
    packed = download(True)
    assert len(packed) < len(unpacked) and max(m.ByteSize() for m in packed) < 2 * grpc_data.PACK_BYTES
    files = [f for m in packed for f in (m, *m.more)]
    assert [f.path for f in files if f.path] == order
    got = {f.path: f.data for f in files if f.path and f.status.code == v1.Status.OK}
    assert {p: got[p] for p in small} == small
    assert next(f for f in files if f.path.endswith("missing")).status.code == v1.Status.NOT_FOUND
    large_at = next(i for i, f in enumerate(files) if f.path.endswith("large"))
    assert not files[large_at].more and b"".join(f.data for f in files[large_at : large_at + 2]) == large


def test_chunks_framed_by_hand_are_the_messages_protobuf_encodes() -> None:
    """Uploads frame their chunks themselves and the server decodes them by hand; the server sends
    a download's encoded, and the client slices the data out of the encoded message (no copies):
    all must agree with protobuf at every varint length, whatever other fields a message holds."""
    header = v1.DataUploadChunk(path="data://.my/c/f", size=5_000_000).SerializeToString()
    for size in (1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152):
        data = os.urandom(size)
        encoded = data_transfer._data_message(data)
        assert encoded == v1.DataUploadChunk(data=data).SerializeToString() == grpc_data._data_chunk(data)
        assert v1.DataFileChunk.FromString(encoded).data == data
        rest, sliced, more = data_transfer._split_data(encoded)
        assert rest == b"" and bytes(sliced) == data and more == []
        first = data_transfer._data_message(data, header)
        assert v1.DataUploadChunk.FromString(first) == v1.DataUploadChunk(
            path="data://.my/c/f", size=5_000_000, data=data
        )
        piece = grpc_data.upload_piece(first)
        assert (piece.path, piece.size, bytes(piece.data)) == ("data://.my/c/f", 5_000_000, data)
    # a download's first message: its header fields, then the data; any order parses the same
    chunk = v1.DataFileChunk(path="data://a/b/c", status=v1.Status(code=5, message="é"), data=b"xy")
    for encoded in (
        chunk.SerializeToString(),
        v1.DataFileChunk(path="data://a/b/c").SerializeToString() + b"\x1a\x02xy",
    ):
        rest, sliced, more = data_transfer._split_data(encoded)
        assert bytes(sliced) == b"xy" and v1.DataFileChunk.FromString(rest).path == "data://a/b/c" and not more
    assert data_transfer._split_data(b"") == (b"", memoryview(b""), [])
    # whole files packed in `more` come out after the message's own, in order
    packed = v1.DataFileChunk(
        path="p0", data=b"0", more=[v1.DataFileChunk(path="p1", data=b"11"), v1.DataFileChunk(path="p2")]
    )
    files = [
        (v1.DataFileChunk.FromString(r).path, bytes(d))
        for r, d in data_transfer._files_of(iter([packed.SerializeToString()]))
    ]
    assert files == [("p0", b"0"), ("p1", b"11"), ("p2", b"")]
    with pytest.raises(Exception):  # noqa: B017 - truncated: protobuf's own error
        data_transfer._split_data(b"\x1a\x05ab")
    # the server's decoder: unknown fields skipped, negative sizes kept, malformed bytes refused
    unknown = b"\x28\x07" + b"\x35\x00\x00\x00\x00" + v1.DataUploadChunk(path="p", size=-1).SerializeToString()
    assert (grpc_data.upload_piece(unknown).path, grpc_data.upload_piece(unknown).size) == ("p", -1)
    for malformed in (b"\x0a\x05ab", b"\x0a\x02\xff\xfe", b"\x10", b"\x00\x01", b"\x0b"):
        with pytest.raises(ValueError):
            grpc_data.upload_piece(malformed)
