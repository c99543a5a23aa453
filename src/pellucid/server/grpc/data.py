"""DataService: hosted data (data://) directories and files; translation only (engine/hosted_data.py decides)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

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
                yield v1.DataFileChunk(data=chunk)

    def GetDataFile(self, request: v1.GetDataEntryRequest, context: grpc.ServicerContext) -> v1.DataEntry:
        return data_entry(self.engine.hosted_data.get_file(principal(), request.path))

    @replayable(v1.DeleteDataEntryResponse)
    def DeleteDataFile(
        self, request: v1.DeleteDataEntryRequest, context: grpc.ServicerContext
    ) -> v1.DeleteDataEntryResponse:
        return v1.DeleteDataEntryResponse(deleted=self.engine.hosted_data.delete_file(principal(), request.path))
