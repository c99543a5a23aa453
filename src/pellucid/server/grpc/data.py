"""DataService: hosted data (data://) directories and files; translation only (engine/hosted_data.py decides)."""

from __future__ import annotations

from collections.abc import Iterator

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
        self, request_iterator: Iterator[v1.DataUploadChunk], context: grpc.ServicerContext
    ) -> v1.UploadDataFilesResponse:
        pieces = (UploadPiece(m.path, m.size, m.data) for m in request_iterator)
        outcomes = self.engine.hosted_data.upload(principal(), pieces)
        return v1.UploadDataFilesResponse(
            results=[
                v1.DataUploadResult(
                    status=item_status(o.error), path=o.path, entry=data_entry(o.item) if o.item else None
                )
                for o in outcomes
            ]
        )

    def DownloadDataFiles(
        self, request: v1.DownloadDataFilesRequest, context: grpc.ServicerContext
    ) -> Iterator[v1.DataFileChunk]:
        for download in self.engine.hosted_data.download(principal(), list(request.paths)):
            if download.item is None:
                yield v1.DataFileChunk(path=download.path, status=item_status(download.error))
                continue
            chunks = iter(download.chunks)
            first = next(chunks, b"")  # with the header: a small file is one message
            yield v1.DataFileChunk(
                path=download.path, entry=data_entry(download.item), status=item_status(None), data=first
            )
            for chunk in chunks:
                yield _data_chunk(chunk)  # type: ignore[misc]  # encoded already: see add_data_service

    def GetDataFile(self, request: v1.GetDataEntryRequest, context: grpc.ServicerContext) -> v1.DataEntry:
        return data_entry(self.engine.hosted_data.get_file(principal(), request.path))

    @replayable(v1.DeleteDataEntryResponse)
    def DeleteDataFile(
        self, request: v1.DeleteDataEntryRequest, context: grpc.ServicerContext
    ) -> v1.DeleteDataEntryResponse:
        return v1.DeleteDataEntryResponse(deleted=self.engine.hosted_data.delete_file(principal(), request.path))


_DATA_TAG = bytes([(3 << 3) | 2])  # DataFileChunk.data: field 3, length-delimited


def _data_chunk(data: bytes) -> bytes:
    """The encoded DataFileChunk holding only `data`: one copy of the bytes, where building the
    message and serializing it cost two."""
    length, varint = len(data), bytearray()
    while length >= 0x80:
        varint.append((length & 0x7F) | 0x80)
        length >>= 7
    varint.append(length)
    return _DATA_TAG + bytes(varint) + data


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
    encoded (its data chunks: the bulk of a download's bytes)."""
    taken = _Handlers()
    v1.add_DataServiceServicer_to_server(servicer, taken)  # type: ignore[arg-type]  # takes what it registers
    taken.handlers["DownloadDataFiles"] = grpc.unary_stream_rpc_method_handler(
        servicer.DownloadDataFiles,
        request_deserializer=v1.DownloadDataFilesRequest.FromString,
        response_serializer=_message_or_encoded,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(taken.service, taken.handlers),))
    server.add_registered_method_handlers(taken.service, taken.handlers)
