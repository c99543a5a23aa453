"""DataService: hosted data (data://) directories and files; translation only (engine/hosted_data.py decides)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf.message import Message

from pellucid.api import v1
from pellucid.server.engine import Engine
from pellucid.server.engine.hosted_data import UploadPiece
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.convert import page_request
from pellucid.server.grpc.errors import item_status
from pellucid.server.grpc.idempotency import replayable
from pellucid.server.grpc.translate.data import acl_name, acl_value, data_entry


class DataServicer(v1.DataServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @replayable(v1.DataEntry)
    def CreateDataDirectory(
        self, request: v1.CreateDataDirectoryRequest, context: grpc.ServicerContext
    ) -> v1.DataEntry:
        item = self.engine.hosted_data.create_dir(principal(), request.path, acl_name(request.acl), request.parents)
        return data_entry(item)

    def GetDataDirectory(self, request: v1.GetDataEntryRequest, context: grpc.ServicerContext) -> v1.DataEntry:
        return data_entry(self.engine.hosted_data.get_dir(principal(), request.path))

    @replayable(v1.DeleteDataEntryResponse)
    def DeleteDataDirectory(
        self, request: v1.DeleteDataEntryRequest, context: grpc.ServicerContext
    ) -> v1.DeleteDataEntryResponse:
        deleted = self.engine.hosted_data.delete_dir(principal(), request.path, request.force)
        return v1.DeleteDataEntryResponse(deleted=deleted)

    def ListDataDirectory(
        self, request: v1.ListDataDirectoryRequest, context: grpc.ServicerContext
    ) -> v1.ListDataDirectoryResponse:
        directory, items, token = self.engine.hosted_data.list_dir(principal(), request.path, page_request(request))
        return v1.ListDataDirectoryResponse(
            directory=data_entry(directory), entries=[data_entry(i) for i in items], next_page_token=token
        )

    def GetDataPermissions(self, request: v1.GetDataEntryRequest, context: grpc.ServicerContext) -> v1.DataPermissions:
        path, acl = self.engine.hosted_data.get_acl(principal(), request.path)
        return v1.DataPermissions(path=path, acl=acl_value(acl))

    @replayable(v1.DataPermissions)
    def UpdateDataPermissions(
        self, request: v1.UpdateDataPermissionsRequest, context: grpc.ServicerContext
    ) -> v1.DataPermissions:
        path, acl = self.engine.hosted_data.set_acl(principal(), request.path, acl_name(request.acl))
        return v1.DataPermissions(path=path, acl=acl_value(acl))

    def UploadDataFiles(
        self, request_iterator: Iterator[Any], context: grpc.ServicerContext
    ) -> v1.UploadDataFilesResponse:
        """`request_iterator` yields UploadPieces, decoded by `upload_piece` (see add_data_service)."""
        outcomes = self.engine.hosted_data.upload(principal(), request_iterator)
        return v1.UploadDataFilesResponse(
            results=[
                v1.DataUploadResult(
                    status=item_status(o.error), path=o.path, entry=data_entry(o.item) if o.item else None
                )
                for o in outcomes
            ]
        )

    def UploadDataFilesPacked(
        self, request_iterator: Iterator[Any], context: grpc.ServicerContext
    ) -> v1.UploadDataFilesResponse:
        """`request_iterator` yields lists of UploadPieces (`upload_pieces`): the same stream of
        files as UploadDataFiles, several whole small files a message."""
        return self.UploadDataFiles(itertools.chain.from_iterable(request_iterator), context)

    def DownloadDataFiles(
        self, request: v1.DownloadDataFilesRequest, context: grpc.ServicerContext
    ) -> Iterator[v1.DataFileChunk]:
        """Messages encoded here (see add_data_service): a file's header with its first chunk, then
        its other chunks; with pack_small_files, whole small files share a message (`more`) up to
        PACK_BYTES, which saves gRPC's per-message cost (about 40 us each side) per file."""
        pack: list[bytes] = []  # the parts of encoded whole files waiting to be sent together
        pack_bytes = 0
        for download in self.engine.hosted_data.download(principal(), list(request.paths)):
            chunks: Iterator[bytes] = iter(())
            first = b""
            if download.item is None:
                parts = [v1.DataFileChunk(path=download.path, status=item_status(download.error)).SerializeToString()]
            else:
                chunks = iter(download.chunks)
                first = next(chunks, b"")  # with the header: a small file is one message
                header = v1.DataFileChunk(
                    path=download.path, entry=data_entry(download.item), status=item_status(None)
                ).SerializeToString()
                # the data field after the encoded header (any field order parses): the bytes are copied once, when joined
                parts = [header, _field_prefix(_DATA_TAG, len(first)), first]
            size = sum(len(p) for p in parts)
            if request.pack_small_files and (download.item is None or download.item.size <= len(first)):
                if pack and pack_bytes + size > PACK_BYTES:
                    yield b"".join(pack)  # type: ignore[misc]  # encoded already: see add_data_service
                    pack, pack_bytes = [], 0
                if pack:  # a file after the first goes in `more`
                    parts.insert(0, _field_prefix(_MORE_TAG, size))
                pack += parts
                pack_bytes += size
                continue
            if pack:
                yield b"".join(pack)  # type: ignore[misc]
                pack, pack_bytes = [], 0
            yield b"".join(parts)  # type: ignore[misc]
            for chunk in chunks:
                yield _data_chunk(chunk)  # type: ignore[misc]
        if pack:
            yield b"".join(pack)  # type: ignore[misc]

    def GetDataFile(self, request: v1.GetDataEntryRequest, context: grpc.ServicerContext) -> v1.DataEntry:
        return data_entry(self.engine.hosted_data.get_file(principal(), request.path))

    @replayable(v1.DeleteDataEntryResponse)
    def DeleteDataFile(
        self, request: v1.DeleteDataEntryRequest, context: grpc.ServicerContext
    ) -> v1.DeleteDataEntryResponse:
        return v1.DeleteDataEntryResponse(deleted=self.engine.hosted_data.delete_file(principal(), request.path))


_DATA_TAG = bytes([(3 << 3) | 2])  # DataFileChunk.data: field 3, length-delimited
_MORE_TAG = bytes([(5 << 3) | 2])  # DataFileChunk.more: field 5, length-delimited
PACK_BYTES = 1024 * 1024  # whole small files packed into one message up to this (a message may be 4 MiB)


def _field_prefix(tag: bytes, length: int) -> bytes:
    """The tag and length that start a length-delimited field of `length` bytes."""
    varint = bytearray(tag)
    while length >= 0x80:
        varint.append((length & 0x7F) | 0x80)
        length >>= 7
    varint.append(length)
    return bytes(varint)


def _data_chunk(data: bytes) -> bytes:
    """The encoded DataFileChunk holding only `data`: one copy of the bytes, where building the
    message and serializing it cost two."""
    return _field_prefix(_DATA_TAG, len(data)) + data


def upload_piece(encoded: bytes) -> UploadPiece:
    """A DataUploadChunk decoded by hand, its data a view into the received bytes: protobuf's
    parse copies them in and reading the field copies them out again, two copies of every byte
    of an upload. Unknown fields are skipped as protobuf skips them (`more` too: UploadDataFiles
    does not take packs); a malformed message raises ValueError (the interceptor answers
    INVALID_ARGUMENT)."""
    return _decode_upload(memoryview(encoded), None)


def upload_pieces(encoded: bytes) -> list[UploadPiece]:
    """An UploadDataFilesPacked message: its own piece, then the whole files packed in its
    `more`, in order (each decoded as `upload_piece`; a packed file may not hold packs itself)."""
    more: list[memoryview] = []
    pieces = [_decode_upload(memoryview(encoded), more)]
    for nested in more:
        inner: list[memoryview] = []
        pieces.append(_decode_upload(nested, inner))
        if inner:
            raise ValueError("a file packed in `more` holds packed files itself: pack them all in the outer message")
    return pieces


def _decode_upload(view: memoryview, more: list[memoryview] | None) -> UploadPiece:
    """One DataUploadChunk; its `more` (field 4) appended to `more` when packs are taken."""
    path, size, data = "", 0, view[0:0]
    position, end = 0, len(view)
    while position < end:
        key, position = _varint(view, position)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0")
        if wire == 2:
            length, position = _varint(view, position)
            if position + length > end:
                raise ValueError("a length-delimited field runs past the end of the message")
            if field == 1:
                path = str(view[position : position + length], "utf-8")
            elif field == 3:
                data = view[position : position + length]
            elif field == _MORE_UPLOAD_FIELD and more is not None:
                more.append(view[position : position + length])
            position += length
        elif wire == 0:
            value, position = _varint(view, position)
            if field == 2:
                size = value - (1 << 64) if value >= 1 << 63 else value  # int64: two's complement
        elif wire in (1, 5):
            position += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire} is not used by DataUploadChunk")
    if position > end:
        raise ValueError("the message ends inside a field")
    return UploadPiece(path, size, data)


_MORE_UPLOAD_FIELD = 4  # DataUploadChunk.more


def _varint(encoded: bytes | memoryview, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while position < len(encoded) and shift < 64:
        byte = encoded[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & ((1 << 64) - 1), position
        shift += 7
    raise ValueError("a varint runs past the end of the message or is longer than 10 bytes")


def _message_or_encoded(response: Message | bytes) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()


class _Handlers:
    """Takes the method handlers the generated registration hands a server."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.service, self.handlers = service, dict(handlers)


def add_data_service(servicer: DataServicer, server: grpc.Server) -> None:
    """The generated registration, except that DownloadDataFiles may answer messages already
    encoded (its data chunks: the bulk of a download's bytes) and the uploads decode their
    requests by hand (`upload_piece`, `upload_pieces`)."""
    taken = _Handlers()
    v1.add_DataServiceServicer_to_server(servicer, taken)  # type: ignore[arg-type]  # takes what it registers
    taken.handlers["UploadDataFiles"] = grpc.stream_unary_rpc_method_handler(
        servicer.UploadDataFiles,
        request_deserializer=upload_piece,
        response_serializer=v1.UploadDataFilesResponse.SerializeToString,
    )
    taken.handlers["UploadDataFilesPacked"] = grpc.stream_unary_rpc_method_handler(
        servicer.UploadDataFilesPacked,
        request_deserializer=upload_pieces,
        response_serializer=v1.UploadDataFilesResponse.SerializeToString,
    )
    taken.handlers["DownloadDataFiles"] = grpc.unary_stream_rpc_method_handler(
        servicer.DownloadDataFiles,
        request_deserializer=v1.DownloadDataFilesRequest.FromString,
        response_serializer=_message_or_encoded,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(taken.service, taken.handlers),))
    server.add_registered_method_handlers(taken.service, taken.handlers)
