"""Hosted data (`data://`): paths, read ACLs, directories and files whose bytes live in the blob store.

Paths are `data://<owner or .my>/<collection>[/<sub dirs>]/<file>`. A collection carries the
read ACL of everything in it:

- `private`: the owner only;
- `my_algos` (the default, as in the reference): the owner, and the owner's algorithms running on
  the owner's runners (`algorithm_of` tells the engine when a call comes from one);
- `public`: any authenticated user.

Only the owner writes. A path the caller may not read answers NOT_FOUND with the same message
as one that does not exist, so nobody learns another user's private names. File content is a
blob owned by the file's owner (deduplicated by sha256, as inputs' media): garbage collection
keeps a blob while a file names it (`referenced_data_blobs`).

A runner authenticates with its owner's token; while it serves an algorithm call its requests
name the call, and `algorithm_of` (set by engine/algorithm_data.py) checks that and says which
algorithm is calling: such a request reads as the algorithm, not as its owner (`my_algos` and
`public`, not `private`), and writes only where it reads. `data://.algo/...` (the calling
algorithm's own folder, data://<owner>/.algo/<algorithm>/...) is resolved by `resolve_algo`,
from the same module: outside a call such a path is INVALID_ARGUMENT saying it works only inside
an algorithm.
"""

from __future__ import annotations

import collections
import errno
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from pellucid.server.engine.access import Principal
from pellucid.server.engine.errors import (
    AlreadyExists,
    EngineError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from pellucid.server.engine.ids import validate_id
from pellucid.server.engine.paging import PageRequest, next_token, to_query
from pellucid.server.records import DataEntryRecord
from pellucid.server.storage import Conflict, MetadataStore
from pellucid.server.storage.blobs import BlobStore, BlobTooLarge

SCHEME = "data://"
PRIVATE, MY_ALGOS, PUBLIC = "private", "my_algos", "public"
ACLS = (PRIVATE, MY_ALGOS, PUBLIC)
DEFAULT_ACL = MY_ALGOS
MY, ALGO = ".my", ".algo"
MAX_NAME_LENGTH = 255
MAX_DEPTH = 32  # collection, sub directories and file
MAX_PATH_LENGTH = 2048
SMALL_FILE_BYTES = 1024 * 1024  # smaller files of an upload are stored together (one pack append, one transaction)
BATCH_BYTES = 8 * 1024 * 1024
BATCH_FILES = 256
MAX_FILES_PER_DOWNLOAD = 1000
MAX_FILES_PER_UPLOAD = 10_000  # the SDK sends at most 1000; the answer lists every file, and must fit one message
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
DOWNLOAD_RESOLVE_FILES = 250  # files of a download looked up together
DISK_RESERVE_BYTES = 1 << 30  # a large file is refused if storing it would leave less free on the blob store's disk
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\\\\]")  # categories Cc and Cs, and a backslash


@dataclass(frozen=True)
class AlgorithmCaller:
    """A call made by an algorithm: whose algorithm it is (its owner) and its name."""

    owner: str
    algorithm: str


@dataclass(frozen=True)
class DataPath:
    owner: str  # a user id
    names: tuple[str, ...]  # collection, sub directories, file (empty: the owner's collections)

    @property
    def uri(self) -> str:
        return SCHEME + "/".join((self.owner, *self.names))


@dataclass(frozen=True)
class DataItem:
    """What callers see of an entry: its canonical path and its collection's ACL."""

    path: str
    name: str
    is_dir: bool
    size: int = 0
    modified_at: float = 0.0
    sha256: str = ""
    acl: str = ""


@dataclass(frozen=True)
class UploadPiece:
    """One message of an upload stream: `path` (with `size`) starts a file; `data` continues it."""

    path: str
    size: int
    data: bytes | memoryview


@dataclass(frozen=True)
class UploadOutcome:
    path: str
    item: DataItem | None
    error: EngineError | None


@dataclass(frozen=True)
class DownloadItem:
    """One file of a download: its entry and its bytes, or why not."""

    path: str
    item: DataItem | None
    error: EngineError | None
    chunks: Iterator[bytes]


# bidirectional overrides, embeddings and isolates, direction marks, zero-width space, the BOM,
# and the line and paragraph separators (Unicode's categories Zl and Zp)
_INVISIBLE = frozenset(
    "\u061c\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff\u2028\u2029"
)


def _check_name(name: str, path: str) -> str:
    if not name or name in (".", ".."):
        raise InvalidArgument(
            f"{path!r} has an empty, '.' or '..' part: name each directory and file", field="path", reason="BAD_PATH"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(
            f"{name[:40]!r}... in {path[:80]!r} is longer than {MAX_NAME_LENGTH} characters", field="path"
        )
    if _UNPRINTABLE.search(name):
        raise InvalidArgument(
            f"{path[:80]!r} holds control characters or a backslash: use printable names",
            field="path",
            reason="BAD_PATH",
        )
    if any(c in _INVISIBLE for c in name):
        # in a public collection, "invoice\u202efdp.exe" would show as "invoiceexe.pdf" to its readers
        raise InvalidArgument(
            f"{path[:80]!r} holds an invisible or text-direction character: use names that read as they are",
            field="path",
            reason="BAD_PATH",
        )
    return name


def split_path(path: str) -> tuple[str, tuple[str, ...]]:
    """`data://owner/a/b` -> ("owner", ("a", "b")); refuses anything that is not a data:// path."""
    if not isinstance(path, str) or not path.startswith(SCHEME):
        raise InvalidArgument(
            f"{str(path)[:80]!r} is not a data:// path: write data://<owner or .my>/<collection>/<file>",
            field="path",
            reason="BAD_PATH",
        )
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidArgument(f"the path is longer than {MAX_PATH_LENGTH} characters", field="path")
    rest = path[len(SCHEME) :].rstrip("/")
    if not rest:
        return "", ()
    owner, *names = rest.split("/")
    if len(names) > MAX_DEPTH:
        raise InvalidArgument(f"{path[:80]!r} is deeper than {MAX_DEPTH} levels", field="path")
    return owner, tuple(_check_name(n, path) for n in names)


class HostedData:
    def __init__(
        self, store: MetadataStore, blobs: BlobStore, clock: Callable[[], float], max_file_bytes: int = 0
    ) -> None:
        """`max_file_bytes`: the largest file (the server setting max_data_file_bytes); 0 for no limit
        but the blob store's free disk space. Separate from inputs' max_blob_bytes: hosted data is
        for files of any size."""
        self._store = store
        self._blobs = blobs
        self._clock = clock
        self.max_file_bytes = max_file_bytes
        # hooks for the algorithm side: who the calling algorithm is, and where data://.algo points
        self.algorithm_of: Callable[[Principal], AlgorithmCaller | None] = lambda principal: None
        self.resolve_algo: Callable[[Principal, tuple[str, ...]], DataPath | None] = lambda principal, names: None

    # paths and permissions

    def parse(self, principal: Principal, path: str) -> DataPath:
        owner, names = split_path(path)
        self.algorithm_of(principal)  # a request naming an algorithm call that is not the caller's is refused
        if owner == ALGO:
            resolved = self.resolve_algo(principal, names)
            if resolved is None:
                raise InvalidArgument(
                    f"{path[:80]!r}: data://.algo/ names the calling algorithm's own folder and works only inside"
                    " an algorithm; from outside, name its owner: data://<owner>/.algo/<algorithm>/...",
                    field="path",
                    reason="NOT_IN_ALGORITHM",
                )
            return resolved
        if owner in ("", MY):
            owner = principal.user_id
        else:
            validate_id(owner, "path")
        return DataPath(owner, names)

    def _may_read(self, principal: Principal, owner: str, acl: str) -> bool:
        algorithm = self.algorithm_of(principal)
        if algorithm is not None:  # an algorithm, even on its owner's token: not its owner's private data
            return acl == PUBLIC or (acl == MY_ALGOS and algorithm.owner == owner)
        return owner == principal.user_id or acl == PUBLIC

    @staticmethod
    def _not_found(target: DataPath | str) -> NotFound:
        uri = target.uri if isinstance(target, DataPath) else target
        return NotFound(f"{uri} does not exist (or you may not read it)", field="path", reason="DATA_NOT_FOUND")

    def _readable(self, principal: Principal, target: DataPath) -> list[DataEntryRecord]:
        """The entries along the path, all of them there and readable by the caller; NOT_FOUND otherwise."""
        entries = self._store.data_lookup(target.owner, list(target.names))
        if len(entries) < len(target.names) or not self._may_read(principal, target.owner, entries[0].acl):
            raise self._not_found(target)
        return entries

    def _check_owner(self, principal: Principal, target: DataPath) -> None:
        """Only the owner writes: another user gets PERMISSION_DENIED where it may read, NOT_FOUND where not.
        The owner's algorithm writes where it may read (and makes new collections)."""
        own = target.owner == principal.user_id
        if own and self.algorithm_of(principal) is None:
            return
        if target.names:
            collection = self._store.data_lookup(target.owner, [target.names[0]])
            new_collection = own and not collection and len(target.names) == 1
            if not new_collection and (
                not collection or not self._may_read(principal, target.owner, collection[0].acl)
            ):
                raise self._not_found(target)
        if own:
            return
        raise PermissionDenied(
            f"only {target.owner!r} writes under data://{target.owner}/: your own data is data://.my/",
            reason="NOT_DATA_OWNER",
            field="path",
        )

    @staticmethod
    def _item(target: DataPath, entry: DataEntryRecord, acl: str) -> DataItem:
        return DataItem(
            path=target.uri,
            name=entry.name,
            is_dir=entry.is_dir,
            size=entry.size,
            modified_at=entry.modified_at,
            sha256=entry.sha256,
            acl=acl,
        )

    @staticmethod
    def _check_acl(acl: str) -> str:
        if acl not in ACLS:
            raise InvalidArgument(f"acl {acl!r} is not one of {', '.join(ACLS)}", field="acl", reason="BAD_ACL")
        return acl

    # directories

    def create_dir(self, principal: Principal, path: str, acl: str = "", parents: bool = False) -> DataItem:
        target = self.parse(principal, path)
        if not target.names:
            raise InvalidArgument(f"{path!r} names no directory: write data://.my/<collection>", field="path")
        self._check_owner(principal, target)
        if len(target.names) == 1:
            try:
                entry = self._store.data_insert_dir(
                    target.owner, None, target.names[0], self._check_acl(acl or DEFAULT_ACL), self._clock()
                )
            except Conflict:
                raise AlreadyExists(f"{target.uri} already exists", field="path", reason="DATA_EXISTS") from None
            return self._item(target, entry, entry.acl)
        if acl:
            raise InvalidArgument(
                f"permissions belong to collections: a sub directory reads as data://{target.owner}/{target.names[0]}"
                " does; set them there",
                field="acl",
            )
        entries = self._store.data_lookup(target.owner, list(target.names))
        if len(entries) == len(target.names):
            raise AlreadyExists(f"{target.uri} already exists", field="path", reason="DATA_EXISTS")
        if not entries:
            raise NotFound(
                f"collection data://{target.owner}/{target.names[0]} does not exist: create it first"
                f" (pellucid mkdir data://.my/{target.names[0]})",
                field="path",
                reason="DATA_NOT_FOUND",
            )
        if len(entries) < len(target.names) - 1 and not parents:
            missing = DataPath(target.owner, target.names[: len(entries) + 1])
            raise NotFound(f"{missing.uri} does not exist: create it first, or pass parents", field="path")
        parent = self._make_dirs(target, entries)
        return self._item(target, parent, entries[0].acl)

    def _make_dirs(self, target: DataPath, entries: list[DataEntryRecord]) -> DataEntryRecord:
        """Create the missing directories of `target` below the last of `entries` (all directories)."""
        found = list(entries)
        for depth in range(len(found), len(target.names)):
            if not found[-1].is_dir:
                raise FailedPrecondition(
                    f"{DataPath(target.owner, target.names[:depth]).uri} is a file, not a directory",
                    field="path",
                    reason="NOT_A_DIRECTORY",
                )
            try:
                found.append(
                    self._store.data_insert_dir(target.owner, found[-1].seq, target.names[depth], "", self._clock())
                )
            except Conflict:  # made meanwhile by another call, or the parent is gone
                again = self._store.data_lookup(target.owner, list(target.names[: depth + 1]))
                if len(again) < depth + 1:
                    raise self._not_found(target) from None
                found = again
        if not found[-1].is_dir:
            raise FailedPrecondition(f"{target.uri} is a file, not a directory", field="path", reason="NOT_A_DIRECTORY")
        return found[-1]

    def get_dir(self, principal: Principal, path: str) -> DataItem:
        target = self.parse(principal, path)
        if not target.names:
            return DataItem(path=target.uri, name=target.owner, is_dir=True)
        entries = self._readable(principal, target)
        if not entries[-1].is_dir:
            raise NotFound(f"{target.uri} is a file, not a directory", field="path", reason="NOT_A_DIRECTORY")
        return self._item(target, entries[-1], entries[0].acl)

    def list_dir(self, principal: Principal, path: str, page: PageRequest) -> tuple[DataItem, list[DataItem], str]:
        target = self.parse(principal, path)
        scope = f"data:{target.uri}"
        query = to_query(page, scope)
        if not target.names:
            listing = self._store.data_list(target.owner, None, query, public_only=target.owner != principal.user_id)
            directory = DataItem(path=target.uri, name=target.owner, is_dir=True)
            visible = [e for e in listing.items if self._may_read(principal, target.owner, e.acl)]
            items = [self._item(DataPath(target.owner, (e.name,)), e, e.acl) for e in visible]
            return directory, items, next_token(listing, scope)
        entries = self._readable(principal, target)
        if not entries[-1].is_dir:
            raise FailedPrecondition(
                f"{target.uri} is a file, not a directory: read it instead", field="path", reason="NOT_A_DIRECTORY"
            )
        acl = entries[0].acl
        listing = self._store.data_list(target.owner, entries[-1].seq, query)
        items = [self._item(DataPath(target.owner, (*target.names, e.name)), e, acl) for e in listing.items]
        return self._item(target, entries[-1], acl), items, next_token(listing, scope)

    def delete_dir(self, principal: Principal, path: str, force: bool = False) -> int:
        target = self.parse(principal, path)
        if not target.names:
            raise InvalidArgument(f"{path!r} names no directory: write data://.my/<collection>", field="path")
        self._check_owner(principal, target)
        entries = self._readable(principal, target)
        if not entries[-1].is_dir:
            raise FailedPrecondition(
                f"{target.uri} is a file, not a directory: delete it as a file", field="path", reason="NOT_A_DIRECTORY"
            )
        if not force and self._store.data_has_children(entries[-1].seq):
            raise FailedPrecondition(
                f"{target.uri} is not empty: delete what is in it first, or delete with force",
                field="path",
                reason="DIRECTORY_NOT_EMPTY",
            )
        return self._store.data_delete(target.owner, entries[-1].seq)

    def get_acl(self, principal: Principal, path: str) -> tuple[str, str]:
        target = self.parse(principal, path)
        if not target.names:
            raise InvalidArgument(f"{path!r} names no collection: write data://.my/<collection>", field="path")
        entries = self._readable(principal, target)
        return DataPath(target.owner, target.names[:1]).uri, entries[0].acl

    def set_acl(self, principal: Principal, path: str, acl: str) -> tuple[str, str]:
        target = self.parse(principal, path)
        if len(target.names) != 1:
            raise InvalidArgument(
                f"{path!r} is not a collection: permissions belong to collections (data://<owner>/<collection>)",
                field="path",
            )
        self._check_acl(acl)
        if self.algorithm_of(principal) is not None:
            raise PermissionDenied(
                f"an algorithm cannot change who reads {target.uri}: its owner does (outside the algorithm)",
                reason="NOT_DATA_OWNER",
                field="path",
            )
        self._check_owner(principal, target)
        entries = self._readable(principal, target)
        updated = self._store.data_set_acl(target.owner, entries[0].seq, acl, self._clock())
        if updated is None:
            raise self._not_found(target)
        return target.uri, updated.acl

    # files

    def get_file(self, principal: Principal, path: str) -> DataItem:
        target = self.parse(principal, path)
        if len(target.names) < 2:
            raise InvalidArgument(
                f"{path!r} names no file: write data://<owner>/<collection>/<file>", field="path", reason="BAD_PATH"
            )
        entries = self._readable(principal, target)
        if entries[-1].is_dir:
            raise NotFound(f"{target.uri} is a directory, not a file", field="path", reason="NOT_A_FILE")
        return self._item(target, entries[-1], entries[0].acl)

    def delete_file(self, principal: Principal, path: str) -> int:
        target = self.parse(principal, path)
        if len(target.names) < 2:
            raise InvalidArgument(f"{path!r} names no file: write data://.my/<collection>/<file>", field="path")
        self._check_owner(principal, target)
        entries = self._readable(principal, target)
        if entries[-1].is_dir:
            raise FailedPrecondition(
                f"{target.uri} is a directory: delete it as a directory", field="path", reason="NOT_A_FILE"
            )
        return self._store.data_delete(target.owner, entries[-1].seq)

    def download(self, principal: Principal, paths: list[str]) -> Iterator[DownloadItem]:
        """Each file in turn, its bytes read from the blob store as they are sent (bounded memory)."""
        if not paths:
            raise InvalidArgument("name at least one file to download", field="paths")
        if len(paths) > MAX_FILES_PER_DOWNLOAD:
            raise InvalidArgument(
                f"{len(paths)} files in one download: send at most {MAX_FILES_PER_DOWNLOAD}", field="paths"
            )
        for start in range(0, len(paths), DOWNLOAD_RESOLVE_FILES):  # in groups: the first bytes leave early
            part = paths[start : start + DOWNLOAD_RESOLVE_FILES]
            files = self._files(principal, part)
            # where each file's bytes are, looked up together too
            with_bytes = [f for f in files if isinstance(f, DataItem) and f.size]
            readers = iter(self._blobs.read_many([f.sha256 for f in with_bytes], DOWNLOAD_CHUNK_BYTES))
            for path, found in zip(part, files):
                if isinstance(found, EngineError):
                    yield DownloadItem(path, None, found, iter(()))
                elif found.size == 0:
                    yield DownloadItem(path, found, None, iter(()))
                else:
                    yield DownloadItem(path, found, None, next(readers))

    def _files(self, principal: Principal, paths: list[str]) -> list[DataItem | EngineError]:
        """What `get_file` answers for each path, with one lookup per directory (the files of a
        directory in one query) instead of one per file and level."""
        results: list[DataItem | EngineError] = []
        folders: dict[tuple[str, tuple[str, ...]], list[tuple[int, DataPath]]] = {}
        for path in paths:
            try:
                target = self.parse(principal, path)
                if len(target.names) < 2:
                    raise InvalidArgument(
                        f"{path!r} names no file: write data://<owner>/<collection>/<file>",
                        field="path",
                        reason="BAD_PATH",
                    )
            except EngineError as exc:
                results.append(exc)
                continue
            folders.setdefault((target.owner, target.names[:-1]), []).append((len(results), target))
            results.append(self._not_found(target))  # until found below
        for (owner, folder), files in folders.items():
            entries = self._store.data_lookup(owner, list(folder))
            if (
                len(entries) < len(folder)
                or not entries[-1].is_dir
                or not self._may_read(principal, owner, entries[0].acl)
            ):
                continue  # each stays NOT_FOUND, as for a path that does not exist
            children = self._store.data_children(entries[-1].seq, [t.names[-1] for _, t in files])
            for index, target in files:
                entry = children.get(target.names[-1])
                if entry is None:
                    continue
                if entry.is_dir:
                    results[index] = NotFound(
                        f"{target.uri} is a directory, not a file", field="path", reason="NOT_A_FILE"
                    )
                else:
                    results[index] = self._item(target, entry, entries[0].acl)
        return results

    def upload(self, principal: Principal, pieces: Iterable[UploadPiece]) -> list[UploadOutcome]:
        """Store the files of an upload stream (see data.proto for its framing); one outcome per file.

        Small files are gathered and stored together (one blob append, one transaction);
        a large one streams into the blob store as it arrives. A file refused (bad path,
        permission, too large) is skipped and reported; bad framing fails the whole call.
        """
        upload = _Upload(self, principal)
        with _Prefetched(iter(pieces)) as prefetched:
            stream = _Frames(prefetched)
            while (header := stream.next_header()) is not None:
                if len(upload.outcomes) == MAX_FILES_PER_UPLOAD:
                    upload.flush()
                    raise InvalidArgument(
                        f"an upload takes at most {MAX_FILES_PER_UPLOAD} files: the first {MAX_FILES_PER_UPLOAD} "
                        f"were stored, {header.path!r} and those after it were not; send them in another call",
                        field="path",
                        reason="TOO_MANY_FILES",
                    )
                if header.size >= SMALL_FILE_BYTES:
                    prefetched.read_ahead()
                upload.receive(header, stream)
            upload.flush()
        return upload.outcomes

    def target_for_write(
        self, principal: Principal, path: str, parents_cache: dict[tuple[str, ...], tuple[int, str]]
    ) -> tuple[DataPath, int, str]:
        """(target, parent directory seq, collection ACL) of a file to write; missing sub directories are made."""
        target = self.parse(principal, path)
        if len(target.names) < 2:
            raise InvalidArgument(
                f"{path!r} names no file: write data://.my/<collection>/<file>", field="path", reason="BAD_PATH"
            )
        self._check_owner(principal, target)
        folder = target.names[:-1]
        cached = parents_cache.get(folder)
        if cached is not None:
            return target, cached[0], cached[1]
        entries = self._store.data_lookup(target.owner, list(folder))
        if not entries:
            raise NotFound(
                f"collection data://{target.owner}/{folder[0]} does not exist: create it first"
                f" (pellucid mkdir data://.my/{folder[0]})",
                field="path",
                reason="DATA_NOT_FOUND",
            )
        parent = self._make_dirs(DataPath(target.owner, folder), entries)
        parents_cache[folder] = (parent.seq, entries[0].acl)
        return target, parent.seq, entries[0].acl

    def referenced_blobs(self, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        return self._store.referenced_data_blobs(pairs)


class _Frames:
    """Reads an upload stream: headers (path and size) and exactly `size` bytes after each."""

    def __init__(self, pieces: Iterator[UploadPiece]) -> None:
        self._pieces = pieces
        self._pending: UploadPiece | None = None

    def next_header(self) -> UploadPiece | None:
        piece = self._pending or next(self._pieces, None)
        self._pending = None
        if piece is None:
            return None
        if not piece.path:
            raise InvalidArgument(
                "an upload message without a path arrived where a file starts: each file's first message names"
                " its path and size",
                field="path",
                reason="BAD_UPLOAD_FRAMING",
            )
        if piece.size < 0:
            raise InvalidArgument(f"{piece.path}: size {piece.size} is negative", field="size")
        return piece

    def body(self, header: UploadPiece) -> Iterator[bytes | memoryview]:
        """The file's bytes: the header's data, then following messages' until `size` arrived."""
        left = header.size
        piece: UploadPiece | None = header
        while True:
            assert piece is not None
            if len(piece.data) > left:
                raise InvalidArgument(
                    f"{header.path}: more than the announced {header.size} bytes arrived",
                    field="size",
                    reason="BAD_UPLOAD_FRAMING",
                )
            if piece.data:
                left -= len(piece.data)
                yield piece.data
            if left == 0:
                return
            piece = next(self._pieces, None)
            if piece is None or piece.path:
                raise InvalidArgument(
                    f"{header.path}: {header.size - left} of the announced {header.size} bytes arrived before"
                    f" {'the next file' if piece else 'the end of the stream'}",
                    field="size",
                    reason="BAD_UPLOAD_FRAMING",
                )


class _Prefetched:
    """Reads an upload stream in a thread of its own, up to PREFETCH_BYTES ahead of the consumer,
    from the first large file on (`read_ahead`).

    A large file's messages arrive (gRPC) while the bytes before them are hashed, written and
    fsynced (all three release the GIL), so receiving and storing overlap on two cores instead
    of taking turns. Small files are read directly: they are stored in batches, and handing
    each message from thread to thread cost more CPU than the overlap gained (server CPU per
    1,000 files of 100 KB: 0.38 s with the thread, 0.34 s without). The stream's exceptions
    surface in the consumer.
    """

    PREFETCH_BYTES = 4 * 1024 * 1024  # per upload stream (a message may be up to 4 MiB)

    def __init__(self, source: Iterator[UploadPiece]) -> None:
        self._source = source
        self._cond = threading.Condition()
        self._pieces: collections.deque[UploadPiece] = collections.deque()
        self._bytes = 0
        self._done = False
        self._stop = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._fill, name="pellucid-data-prefetch", daemon=True)
        self._reading_ahead = False

    def read_ahead(self) -> None:
        """Start the thread (once): called by the consumer between two of its reads."""
        if not self._reading_ahead:
            self._reading_ahead = True
            self._thread.start()

    def _fill(self) -> None:
        try:
            for piece in self._source:
                with self._cond:
                    while self._bytes and self._bytes + len(piece.data) > self.PREFETCH_BYTES and not self._stop:
                        self._cond.wait()
                    if self._stop:
                        return
                    self._pieces.append(piece)
                    self._bytes += len(piece.data)
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            with self._cond:
                self._error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def __enter__(self) -> _Prefetched:
        self._pieces_iterator = self._iterate()
        return self

    def __iter__(self) -> Iterator[UploadPiece]:
        return self

    def __next__(self) -> UploadPiece:
        return next(self._pieces_iterator)

    def _iterate(self) -> Iterator[UploadPiece]:
        while not self._reading_ahead:  # only this thread reads the source until then
            piece = next(self._source, None)
            if piece is None:
                return
            yield piece
        while True:
            with self._cond:
                while not self._pieces and not self._done:
                    self._cond.wait()
                if self._pieces:
                    piece = self._pieces.popleft()
                    self._bytes -= len(piece.data)
                    self._cond.notify_all()
                elif self._error is not None:
                    raise self._error
                else:
                    return
            yield piece

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        # a producer waiting for the client's next message stops when it arrives or the call ends
        if self._reading_ahead:
            self._thread.join(timeout=1.0)


class _Upload:
    """One upload call's state: the small files waiting to be stored together, and the outcomes."""

    def __init__(self, data: HostedData, principal: Principal) -> None:
        self.data = data
        self.principal = principal
        self.outcomes: list[UploadOutcome] = []
        self._parents: dict[tuple[str, ...], tuple[int, str]] = {}
        self._small: list[
            tuple[int, DataPath, int, str, bytes | memoryview]
        ] = []  # outcome index, target, parent, acl, bytes
        self._small_bytes = 0

    def receive(self, header: UploadPiece, frames: _Frames) -> None:
        body = frames.body(header)
        if header.size >= SMALL_FILE_BYTES:
            self._check_disk_space(header)
        try:
            target, parent, acl = self._check(header)
        except EngineError as exc:
            for _ in body:  # skipped, so the next file's header is found
                pass
            self.outcomes.append(UploadOutcome(header.path, None, exc))
            return
        index = len(self.outcomes)
        self.outcomes.append(UploadOutcome(header.path, None, None))
        if header.size < SMALL_FILE_BYTES:
            parts = list(body)
            content = parts[0] if len(parts) == 1 else b"".join(parts)  # one message: its view, no copy
            self._small.append((index, target, parent, acl, content))
            self._small_bytes += len(content)
            if self._small_bytes >= BATCH_BYTES or len(self._small) >= BATCH_FILES:
                self.flush()
            return
        blobs = self.data._blobs
        try:
            sha256, size = blobs.put_stream(target.owner, body, self.data.max_file_bytes or None)
        except BlobTooLarge as exc:  # refused before: the announced size; kept for a store-side limit
            raise ResourceExhausted(f"{header.path} is larger than {exc.limit} bytes", field="size") from None
        except OSError as exc:
            self._raise_if_out_of_space(exc, header.path)
            raise
        self._store([(index, target, parent, acl, sha256, size)])

    def _check(self, header: UploadPiece) -> tuple[DataPath, int, str]:
        limit = self.data.max_file_bytes
        if limit and header.size > limit:
            raise ResourceExhausted(
                f"{header.path} is {header.size} bytes, more than the server's limit of {limit} for a data:// file"
                " (pellucid server --max-data-file-bytes)",
                field="size",
                reason="FILE_TOO_LARGE",
            )
        return self.data.target_for_write(self.principal, header.path, self._parents)

    def _check_disk_space(self, header: UploadPiece) -> None:
        """Refuse the rest of the upload, before reading any of this file, if it cannot fit on the
        blob store's disk (keeping DISK_RESERVE_BYTES free): sending gigabytes only to drop them
        helps nobody. A best effort (concurrent uploads are not counted); a write that still runs
        out of space is refused the same way."""
        free = self.data._blobs.free_bytes()
        if free is None or header.size + DISK_RESERVE_BYTES <= free:
            return
        self.flush()
        raise ResourceExhausted(
            f"{header.path} is {header.size} bytes and the server's disk has {max(free, 0)} bytes free"
            f" ({DISK_RESERVE_BYTES} of them kept in reserve): it and the files after it in this upload were not"
            f" stored ({self._stored_count()} before it were); free space on the server, then send them again",
            field="size",
            reason="NO_DISK_SPACE",
        )

    def _stored_count(self) -> int:
        return sum(1 for o in self.outcomes if o.item is not None)

    def _raise_if_out_of_space(self, exc: OSError, path: str) -> None:
        """A write that ran out of space ends the upload with RESOURCE_EXHAUSTED (other OS errors stay what they are)."""
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            return
        raise ResourceExhausted(
            f"the server's disk ran out of space while storing {path}: it and the files after it in this upload"
            f" were not stored ({self._stored_count()} before it were); free space on the server, then send them"
            " again",
            field="size",
            reason="NO_DISK_SPACE",
        ) from None

    def flush(self) -> None:
        if not self._small:
            return
        small, self._small, self._small_bytes = self._small, [], 0
        owner = small[0][1].owner  # one caller writes only its own files
        try:
            digests = self.data._blobs.put_many(owner, [content for *_, content in small])
        except OSError as exc:
            self._raise_if_out_of_space(exc, small[0][1].uri)
            raise
        self._store([(i, t, p, a, d, len(c)) for (i, t, p, a, c), d in zip(small, digests)])

    def _store(self, files: list[tuple[int, DataPath, int, str, str, int]]) -> None:
        owner = files[0][1].owner
        stored = self.data._store.data_put_files(
            owner, [(parent, t.names[-1], sha, size) for _, t, parent, _, sha, size in files], self.data._clock()
        )
        for (index, target, _, acl, _, _), entry in zip(files, stored):
            if entry is None:
                error: EngineError = FailedPrecondition(
                    f"{target.uri} is a directory (or its directory was deleted meanwhile): choose another name",
                    field="path",
                    reason="NOT_A_FILE",
                )
                self.outcomes[index] = UploadOutcome(self.outcomes[index].path, None, error)
                self._parents.clear()
            else:
                self.outcomes[index] = UploadOutcome(
                    self.outcomes[index].path, HostedData._item(target, entry, acl), None
                )


__all__ = [
    "ACLS",
    "AlgorithmCaller",
    "DataItem",
    "DataPath",
    "DownloadItem",
    "HostedData",
    "UploadOutcome",
    "UploadPiece",
]
