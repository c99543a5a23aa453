"""Packed small-file uploads (UploadDataFilesPacked): several whole files a message, each file
still stored or refused alone, and the client's fallback to UploadDataFiles on a server without it."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from pellucid.api import v1
from pellucid.client import data_transfer
from pellucid.client.user import User
from pellucid.errors import DataApiError, DataNotFound, FailedPrecondition
from pellucid.server.grpc import data as grpc_data
from tests.conftest import RunningServer


def _items(files: dict[str, bytes]) -> list[data_transfer.UploadItem]:
    return [
        data_transfer.UploadItem(path, len(data), lambda data=data: io.BytesIO(data)) for path, data in files.items()
    ]


class _Observed:
    """The real connection, recording each upload call's method and message count."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self.calls: list[tuple[str, int]] = []

    def send_stream_encoded(self, stub: type, method: str, requests: Iterator[bytes], *args: Any, **kw: Any) -> Any:
        sent = [0]

        def counted() -> Iterator[bytes]:
            for message in requests:
                sent[0] += 1
                yield message

        try:
            return self._connection.send_stream_encoded(stub, method, counted(), *args, **kw)
        finally:
            self.calls.append((method, sent[0]))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def test_a_packed_upload_stores_every_file_and_fails_a_bad_one_alone(alice: User, bob: User) -> None:
    alice.dir("data://.my/packed").create()
    alice.dir("data://.my/packed/taken").create()  # a file of this name conflicts with the directory
    bob.dir("data://.my/theirs").create()
    files = {f"data://.my/packed/f{i:02}": os.urandom(100 * 1024) for i in range(30)}
    names = list(files)
    bad = {names[10]: "data://.my/packed/taken", names[20]: f"data://{bob.user_id}/theirs/x"}
    files = {bad.get(path, path): data for path, data in files.items()}
    observed = _Observed(alice._connection)
    alice._connection = observed
    report = data_transfer.upload(alice, _items(files), concurrency=1)
    # asked once whether the server takes packs (an empty stream), then one stream of ten files a
    # message (1 MiB): a tenth of the messages an unpacked upload sends
    assert observed.calls == [("UploadDataFilesPacked", 0), ("UploadDataFilesPacked", 3)]
    failed = {f.dest: f.error for f in report.failures}
    assert set(failed) == set(bad.values())
    assert isinstance(failed["data://.my/packed/taken"], FailedPrecondition)
    assert "is a directory" in str(failed["data://.my/packed/taken"])
    assert isinstance(failed[f"data://{bob.user_id}/theirs/x"], DataApiError)
    assert report.files == 28 and len(report.entries) == 28
    for path, data in files.items():
        if path not in failed:
            assert alice.file(path).getBytes() == data
    assert alice.dir("data://.my/packed/taken").exists()
    with pytest.raises(DataNotFound):
        bob.file("data://.my/theirs/x").getBytes()


def test_the_server_takes_files_packed_in_more_in_order_with_their_own_outcomes(alice: User) -> None:
    alice.dir("data://.my/more").create()
    message = v1.DataUploadChunk(
        path="data://.my/more/a",
        size=1,
        data=b"a",
        more=[
            v1.DataUploadChunk(path="data://.my/nowhere/b", size=2, data=b"bb"),  # no such collection
            v1.DataUploadChunk(path="data://.my/more/c", size=3, data=b"ccc"),
        ],
    )
    tail = [v1.DataUploadChunk(path="data://.my/more/d", size=4, data=b"dd"), v1.DataUploadChunk(data=b"dd")]
    response = alice._connection.send_stream_encoded(
        v1.DataServiceStub,
        "UploadDataFilesPacked",
        iter([message.SerializeToString(), *(m.SerializeToString() for m in tail)]),
        v1.UploadDataFilesResponse,
        timeout=30,
    )
    assert [r.path for r in response.results] == [
        f"data://.my/{p}" for p in ("more/a", "nowhere/b", "more/c", "more/d")
    ]
    assert [r.status.code for r in response.results] == [v1.Status.OK, v1.Status.NOT_FOUND, v1.Status.OK, v1.Status.OK]
    assert [alice.file(f"data://.my/more/{n}").getBytes() for n in "acd"] == [b"a", b"ccc", b"dddd"]


def test_the_packed_decoder_agrees_with_protobuf_and_refuses_nested_packs() -> None:
    inner = [v1.DataUploadChunk(path=f"p{i}", size=i, data=os.urandom(i)) for i in (0, 1, 300, 20_000)]
    outer = v1.DataUploadChunk(path="p", size=2, data=b"xy", more=inner)
    pieces = grpc_data.upload_pieces(outer.SerializeToString())
    assert [(p.path, p.size, bytes(p.data)) for p in pieces] == [(m.path, m.size, m.data) for m in (outer, *inner)]
    # the unpacked method ignores `more` as it ignores any unknown field (what an older server does)
    assert grpc_data.upload_piece(outer.SerializeToString()).path == "p"
    nested = v1.DataUploadChunk(path="p", more=[v1.DataUploadChunk(path="q", more=[v1.DataUploadChunk(path="r")])])
    with pytest.raises(ValueError, match="holds packed files itself"):
        grpc_data.upload_pieces(nested.SerializeToString())
    # the client's packing is what protobuf encodes
    client_side = b"".join(
        [
            data_transfer._data_message(b"xy", v1.DataUploadChunk(path="p", size=2).SerializeToString()),
            *(
                data_transfer._field_prefix(data_transfer._MORE_UPLOAD_TAG, m.ByteSize()) + m.SerializeToString()
                for m in inner
            ),
        ]
    )
    assert v1.DataUploadChunk.FromString(client_side) == outer


class _OlderServer(grpc.GenericRpcHandler):
    """A server from before UploadDataFilesPacked: every other call goes, as bytes, to the real one."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.methods: list[str] = []

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        self.methods.append(method)
        if method.endswith("/UploadDataFilesPacked"):
            return None  # gRPC answers UNIMPLEMENTED, as for any method a server does not know
        upstream = self.channel.stream_stream(method)

        def forward(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            metadata = [
                (k, v) for k, v in context.invocation_metadata() if k != "user-agent" and not k.startswith("grpc-")
            ]
            try:
                yield from upstream(requests, metadata=metadata, timeout=context.time_remaining())
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details())

        return grpc.stream_stream_rpc_method_handler(forward)


def test_uploads_fall_back_to_unpacked_messages_when_the_server_lacks_packed_ones(
    server: RunningServer, admin: User
) -> None:
    created = admin.create_user(f"older-{uuid.uuid4().hex[:8]}")
    alice = server.client(created.pat.secret, user_id=created.user.id)
    alice.dir("data://.my/older").create()
    older = _OlderServer(server.server.address)
    proxy = grpc.server(futures.ThreadPoolExecutor(4))
    proxy.add_generic_rpc_handlers((older,))
    port = proxy.add_insecure_port("127.0.0.1:0")
    proxy.start()
    try:
        client = User(base_url=f"grpc://127.0.0.1:{port}", pat=created.pat.secret, user_id=created.user.id)
        observed = _Observed(client._connection)
        client._connection = observed
        files = {f"data://.my/older/f{i}": os.urandom(50 * 1024) for i in range(12)}
        for _attempt in range(2):
            report = data_transfer.upload(client, _items(files), concurrency=1)
            assert not report.failures and report.files == 12
        assert all(alice.file(path).getBytes() == data for path, data in files.items())
        # asked once, before any file was sent (a file object cannot be read twice); every upload
        # on this connection then goes unpacked, a file a message
        assert observed.calls == [("UploadDataFilesPacked", 0), ("UploadDataFiles", 12), ("UploadDataFiles", 12)]
        assert sum(m.endswith("/UploadDataFilesPacked") for m in older.methods) == 1
        # a file object is read once, from where it stands
        stream = io.BytesIO(b"skip:" + files["data://.my/older/f0"])
        stream.read(5)
        assert client.file("data://.my/older/obj").putFile(stream).getBytes() == files["data://.my/older/f0"]
    finally:
        proxy.stop(None)
        older.channel.close()
