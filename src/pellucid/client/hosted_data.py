"""Hosted data (data://) in the style of the Algorithmia client: DataDirectory and DataFile.

    from pellucid.acl import ReadAcl
    photos = user.dir("data://.my/photos")          # or data_dir(user, "data://.my/photos")
    if not photos.exists():
        photos.create(ReadAcl.private)
    photos.file("a.jpg").putFile("a.jpg")            # a path or a binary file object
    user.file("data://.my/photos/a.jpg").getBytes()

Paths are `data://<owner or .my>/<collection>[/<dirs>]/<file>` (`.my/photos` without the
scheme works too). Errors are `pellucid.errors.DataApiError` subclasses (DataNotFound,
DataExists, DataPermissionDenied, DirectoryNotEmpty), each also the ApiError of its status.
Bytes move in 1 MiB chunks both ways (client/data_transfer.py), with a bar on long transfers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from pellucid.acl import Acl, AclType
from pellucid.api import v1
from pellucid.client import data_transfer
from pellucid.client.base import BaseClient
from pellucid.errors import ApiError, DataNotFound, UserError, data_error

SCHEME = "data://"
LIST_PAGE_SIZE = 1000
_ACL_TO_PROTO = {
    AclType.private: v1.DATA_ACL_PRIVATE,
    AclType.my_algos: v1.DATA_ACL_MY_ALGOS,
    AclType.public: v1.DATA_ACL_PUBLIC,
}
_ACL_NAMES = {v1.DATA_ACL_PRIVATE: "private", v1.DATA_ACL_MY_ALGOS: "my_algos", v1.DATA_ACL_PUBLIC: "public"}


def normalize_path(path: str) -> str:
    """`data://a/b`, `a/b` and `/a/b` -> `data://a/b`; other schemes are refused."""
    if not isinstance(path, str):
        raise UserError(f"a data path is a string such as 'data://.my/collection/file', not {type(path).__name__}")
    if not path.startswith(SCHEME):
        if "://" in path:
            raise UserError(f"{path!r}: only data:// paths are hosted here (data://<owner or .my>/<collection>/...)")
        path = SCHEME + path.lstrip("/")
    return path.rstrip("/") if len(path) > len(SCHEME) else path


@contextmanager
def _data_errors() -> Iterator[None]:
    try:
        yield
    except ApiError as exc:
        raise data_error(exc) from exc


def _timestamp(entry: v1.DataEntry) -> datetime | None:
    if not entry.HasField("last_modified"):
        return None
    return entry.last_modified.ToDatetime(tzinfo=timezone.utc)


class DataObject(BaseClient):
    """A data:// path on a connection (shared with the client object it came from)."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = normalize_path(path)

    @property
    def name(self) -> str:
        return self.path[len(SCHEME) :].rsplit("/", 1)[-1]

    def _stub_call(self, method: str, request: Any) -> Any:
        with _data_errors():
            return self._call(v1.DataServiceStub, method, request)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.path == self.path

    def __hash__(self) -> int:
        return hash((type(self), self.path))


class DataFile(DataObject):
    """A file in hosted data. `size` and `last_modified` are read from the server when first asked."""

    def __init__(self, path: str, entry: v1.DataEntry | None = None, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._entry = entry

    # what the server knows of it

    def _stat(self) -> v1.DataEntry:
        if self._entry is None:
            self._entry = self._stub_call("GetDataFile", v1.GetDataEntryRequest(path=self.path))
        return self._entry

    @property
    def size(self) -> int:
        return int(self._stat().size)

    @property
    def last_modified(self) -> datetime | None:
        return _timestamp(self._stat())

    @property
    def sha256(self) -> str:
        return str(self._stat().sha256)

    def exists(self) -> bool:
        try:
            self._entry = None
            self._stat()
        except DataNotFound:
            return False
        return True

    def delete(self) -> None:
        self._stub_call("DeleteDataFile", v1.DeleteDataEntryRequest(path=self.path))
        self._entry = None

    # writing (each put overwrites)

    def put(self, data: str | bytes | bytearray | memoryview) -> DataFile:
        """Store text (as UTF-8) or bytes."""
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise UserError(f"put takes str or bytes, not {type(data).__name__}: use putJson for other values")
        raw = bytes(data)
        return self._upload(len(raw), lambda: nullcontext(io.BytesIO(raw)), "")

    def putJson(self, obj: Any) -> DataFile:
        """Store `obj` as JSON (UTF-8)."""
        try:
            text = json.dumps(obj)
        except (TypeError, ValueError) as exc:
            raise UserError(f"putJson: the value is not JSON-serialisable: {exc}") from None
        return self.put(text)

    def putFile(self, file: str | os.PathLike[str] | IO[bytes], progress: bool | None = None) -> DataFile:
        """Store a local file, given as a path or a binary file object (read from where it stands)."""
        if isinstance(file, (str, os.PathLike)):
            local = Path(file)
            if not local.is_file():
                raise UserError(f"{local} is not a file")
            return self._upload(local.stat().st_size, lambda: open(local, "rb"), str(local), progress)
        if not hasattr(file, "read"):
            raise UserError(f"putFile takes a path or a binary file object, not {type(file).__name__}")
        size = _remaining_size(file)
        if size is not None:
            return self._upload(size, lambda: nullcontext(file), getattr(file, "name", ""), progress)
        with tempfile.TemporaryFile() as spool:  # a pipe or socket: its size is needed first (bounded memory)
            shutil.copyfileobj(file, spool, data_transfer.CHUNK_BYTES)
            size = spool.tell()
            spool.seek(0)
            return self._upload(size, lambda: nullcontext(spool), getattr(file, "name", ""), progress)

    def _upload(self, size: int, opener: Any, source: str, progress: bool | None = None) -> DataFile:
        item = data_transfer.UploadItem(self.path, size, opener, source)
        report = data_transfer.upload(self, [item], concurrency=1, progress=progress)
        if report.failures:
            raise report.failures[0].error
        self._entry = report.entries[0] if report.entries else None
        return self

    # reading

    def _chunks(self) -> Iterator[bytes]:
        """The file's bytes as they arrive (1 MiB chunks); DataNotFound before the first if it is not there."""
        request = v1.DownloadDataFilesRequest(paths=[self.path])
        stream = self._connection.read_stream(
            v1.DataServiceStub, "DownloadDataFiles", request, timeout=data_transfer.stream_timeout(self.timeout, 0)
        )
        try:
            with _data_errors():
                header = next(stream, None)
                if header is None:
                    raise DataNotFound(f"{self.path}: the server sent nothing", method="DownloadDataFiles")
                if header.status.code != v1.Status.OK:
                    raise data_transfer._status_error(header.status, "DownloadDataFiles")
                self._entry = header.entry
                first = header.data  # each access copies: once only
                if first:
                    yield first
                for message in stream:
                    yield message.data
        finally:
            stream.close()  # cancels the call now when we stop early (a missing file, a failed write)

    def getBytes(self) -> bytes:
        return b"".join(self._chunks())

    def getString(self, encoding: str = "utf-8") -> str:
        data = self.getBytes()
        try:
            return data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise UserError(f"{self.path} is not {encoding} text ({exc}): use getBytes") from None

    def getJson(self) -> Any:
        text = self.getString()
        try:
            return json.loads(text)
        except ValueError as exc:
            raise UserError(f"{self.path} is not JSON ({exc}): use getString or getBytes") from None

    def getFile(self, as_path: bool = False, progress: bool | None = None) -> Any:
        """Download into a temporary file: an open binary file at its start, deleted from disk when
        closed (its `.name` is a path other code can read until then), or with `as_path` its path,
        kept until the caller deletes it."""
        fd, name = tempfile.mkstemp(prefix="pellucid-", suffix=f"-{self.name[:60]}")
        os.close(fd)
        report = data_transfer.download(self, [data_transfer.DownloadItem(self.path, Path(name), 0)], 1, progress)
        if report.failures:
            Path(name).unlink(missing_ok=True)
            raise report.failures[0].error
        return name if as_path else TemporaryDownload(name)

    def getFileTo(self, dest: str | os.PathLike[str], progress: bool | None = None) -> Path:
        """Download to `dest` (written whole or not at all)."""
        report = data_transfer.download(self, [data_transfer.DownloadItem(self.path, Path(dest), 0)], 1, progress)
        if report.failures:
            raise report.failures[0].error
        return Path(dest)


class TemporaryDownload(io.BufferedReader):
    """A downloaded temporary file, open for reading; closing it (or its collection) deletes it,
    as `tempfile.NamedTemporaryFile` does, so files read and dropped do not pile up in the temp dir."""

    def __init__(self, path: str) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self._path = path

    def close(self) -> None:
        try:
            super().close()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)


def _remaining_size(file: IO[bytes]) -> int | None:
    """Bytes from the file object's position to its end, or None when it cannot seek."""
    try:
        if not file.seekable():
            return None
        here = file.tell()
        end = file.seek(0, os.SEEK_END)
        file.seek(here)
        return end - here
    except (OSError, AttributeError, ValueError):
        return None


class DataDirectory(DataObject):
    """A directory (a collection at the top) in hosted data."""

    def exists(self) -> bool:
        try:
            self._stub_call("GetDataDirectory", v1.GetDataEntryRequest(path=self.path))
        except DataNotFound:
            return False
        return True

    def create(self, acl: Acl | None = None, parents: bool = False) -> DataDirectory:
        """Create it (a collection with `acl`, ReadAcl.my_algos if None); DataExists if it is there."""
        request = v1.CreateDataDirectoryRequest(path=self.path, parents=parents)
        if acl is not None:
            request.acl = _acl_proto(acl)
        self._stub_call("CreateDataDirectory", request)
        return self

    def delete(self, force: bool = False) -> int:
        """Delete it; a non-empty one only with `force` (DirectoryNotEmpty otherwise). Returns entries deleted."""
        response = self._stub_call("DeleteDataDirectory", v1.DeleteDataEntryRequest(path=self.path, force=force))
        return int(response.deleted)

    def entries(self) -> Iterator[v1.DataEntry]:
        """Every entry, a page (1,000) at a time."""
        token = ""
        while True:
            page = self._stub_call(
                "ListDataDirectory",
                v1.ListDataDirectoryRequest(path=self.path, page_size=LIST_PAGE_SIZE, page_token=token),
            )
            yield from page.entries
            token = page.next_page_token
            if not token:
                return

    def list(self) -> Iterator[DataFile | DataDirectory]:
        for entry in self.entries():
            yield self._child(entry)

    def files(self) -> Iterator[DataFile]:
        for entry in self.entries():
            if not entry.is_dir:
                yield DataFile(entry.path, entry, **self._child_kwargs())

    def dirs(self) -> Iterator[DataDirectory]:
        for entry in self.entries():
            if entry.is_dir:
                yield DataDirectory(entry.path, **self._child_kwargs())

    def _child(self, entry: v1.DataEntry) -> DataFile | DataDirectory:
        if entry.is_dir:
            return DataDirectory(entry.path, **self._child_kwargs())
        return DataFile(entry.path, entry, **self._child_kwargs())

    def file(self, name: str) -> DataFile:
        return DataFile(_join(self.path, name), **self._child_kwargs())

    def dir(self, name: str) -> DataDirectory:
        return DataDirectory(_join(self.path, name), **self._child_kwargs())

    def get_permissions(self) -> Acl:
        response = self._stub_call("GetDataPermissions", v1.GetDataEntryRequest(path=self.path))
        return Acl.from_name(_ACL_NAMES.get(response.acl, str(response.acl)))

    def update_permissions(self, acl: Acl | AclType) -> Acl:
        request = v1.UpdateDataPermissionsRequest(path=self.path, acl=_acl_proto(acl))
        response = self._stub_call("UpdateDataPermissions", request)
        return Acl.from_name(_ACL_NAMES.get(response.acl, str(response.acl)))


def _acl_proto(acl: Acl | AclType) -> v1.DataAcl.ValueType:
    kind = acl.read_acl if isinstance(acl, Acl) else acl
    if not isinstance(kind, AclType):
        raise UserError(f"{acl!r} is not an ACL: use ReadAcl.public, ReadAcl.my_algos or ReadAcl.private")
    return _ACL_TO_PROTO[kind]


def _join(path: str, name: str) -> str:
    if not name or name.startswith("/"):
        raise UserError(f"{name!r} is not a name inside {path}")
    return f"{path}/{name.rstrip('/')}"


def data_dir(host: BaseClient, path: str) -> DataDirectory:
    """A DataDirectory on `host`'s connection (any client object: User, the algorithm client...)."""
    return DataDirectory(path, **host._child_kwargs())


def data_file(host: BaseClient, path: str) -> DataFile:
    """A DataFile on `host`'s connection."""
    return DataFile(path, **host._child_kwargs())


__all__ = ["DataDirectory", "DataFile", "data_dir", "data_file", "normalize_path"]
