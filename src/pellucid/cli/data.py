"""`pellucid ls|mkdir|rmdir|rm|cp|cat`: hosted data (data://) from the shell.

    pellucid ls [-l] [data://.my/photos]
    pellucid mkdir data://.my/photos [--acl private|my_algos|public] [-p]
    pellucid rmdir [-f] data://.my/photos
    pellucid rm data://.my/photos/a.jpg ...
    pellucid cp [-r] [-c 8] SRC... DEST       (local <-> data://, data:// -> data://)
    pellucid cat data://.my/photos/notes.txt ...

`cp` tries every file, lists each failure on stderr at the end and then exits 5
(SOME_FAILED), with --json a summary on stdout. A cp that reaches no server at all (nothing
copied, every transfer unanswered) exits 5 too, the code of an unreachable server, but says so
as one error instead: `pellucid: server unreachable, nothing was copied: ...` (with --json an
error object of type ServerUnreachable on stderr and nothing on stdout). A remote path is one that starts with data:// (the other commands take
`.my/photos` too).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import timezone
from pathlib import Path
from typing import IO, Any

from pellucid.acl import Acl, AclType
from pellucid.api import v1
from pellucid.cli.output import OK, UNREACHABLE, emit, exit_code
from pellucid.cli.session import client_options, user
from pellucid.client import data_transfer
from pellucid.client.hosted_data import SCHEME, DataDirectory, data_dir, data_file, normalize_path
from pellucid.client.user import User
from pellucid.errors import ApiClientError, DataNotFound, DeadlineExceeded, PellucidError, Unavailable, UserError

SOME_FAILED = 5  # cp: some files failed (each is listed on stderr)


class ServerUnreachable(ApiClientError):
    """cp reached no server at all: one error (exit code 5), not a list of files that failed."""


_ACL_NAMES = {v1.DATA_ACL_PRIVATE: "private", v1.DATA_ACL_MY_ALGOS: "my_algos", v1.DATA_ACL_PUBLIC: "public"}


def entry_dict(entry: v1.DataEntry) -> dict[str, Any]:
    modified = (
        entry.last_modified.ToDatetime(tzinfo=timezone.utc).isoformat() if entry.HasField("last_modified") else None
    )
    return {
        "path": entry.path,
        "name": entry.name,
        "is_dir": entry.is_dir,
        "size": entry.size,
        "last_modified": modified,
        "acl": _ACL_NAMES.get(entry.acl, ""),
    }


def _long_line(entry: v1.DataEntry) -> str:
    when = (
        entry.last_modified.ToDatetime(tzinfo=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        if entry.HasField("last_modified")
        else "-" * 19
    )
    size = "-" if entry.is_dir else str(entry.size)
    return f"{when}  {size:>12}  {entry.name}{'/' if entry.is_dir else ''}"


def cmd_ls(args: argparse.Namespace) -> int:
    client = user(args)
    directory = data_dir(client, args.path)
    try:
        entries = list(directory.entries())
    except PellucidError as exc:
        if getattr(exc, "details", {}).get("reason") != "NOT_A_DIRECTORY":
            raise
        entries = [data_file(client, args.path)._stat()]  # ls of a file shows that file
    if args.json:
        emit(True, [entry_dict(e) for e in entries], "")
    elif args.long:
        emit(False, None, "\n".join(_long_line(e) for e in entries))
    else:
        emit(False, None, "\n".join(e.name + ("/" if e.is_dir else "") for e in entries))
    return OK


def cmd_mkdir(args: argparse.Namespace) -> int:
    directory = data_dir(user(args), args.path)
    directory.create(Acl(AclType[args.acl]) if args.acl else None, parents=args.parents)
    emit(args.json, {"path": directory.path, "created": True}, "")
    return OK


def cmd_rmdir(args: argparse.Namespace) -> int:
    directory = data_dir(user(args), args.path)
    deleted = directory.delete(force=args.force)
    emit(args.json, {"path": directory.path, "deleted": deleted}, "")
    return OK


def cmd_rm(args: argparse.Namespace) -> int:
    client = user(args)
    for path in args.paths:
        data_file(client, path).delete()
    emit(args.json, {"deleted": [normalize_path(p) for p in args.paths]}, "")
    return OK


def cmd_cat(args: argparse.Namespace) -> int:
    client = user(args)
    out = sys.stdout.buffer
    for path in args.paths:
        for chunk in data_file(client, path)._chunks():
            out.write(chunk)
    out.flush()
    return OK


# cp


def is_remote(path: str) -> bool:
    return path.startswith(SCHEME)


def _remote_kind(client: User, path: str) -> str:
    """'dir', 'file' or '' (absent, or not readable)."""
    if data_dir(client, path).exists():
        return "dir"
    return "file" if data_file(client, path).exists() else ""


def _walk_remote(directory: DataDirectory, into: Path) -> Iterator[tuple[str, Path, int]]:
    for entry in directory.entries():
        if entry.is_dir:
            yield from _walk_remote(data_dir(directory, entry.path), into / entry.name)
        else:
            yield entry.path, into / entry.name, entry.size


def _opener(path: Path) -> Any:
    def open_file() -> AbstractContextManager[IO[bytes]]:
        return open(path, "rb")

    return open_file


class _Plan:
    """What a cp will move, and the failures found while working it out (a source that is not there)."""

    def __init__(self) -> None:
        self.uploads: list[data_transfer.UploadItem] = []
        self.downloads: list[data_transfer.DownloadItem] = []
        self.copies: list[tuple[str, str, int]] = []  # remote to remote: (source, dest, size)
        self.failures: list[data_transfer.TransferFailure] = []

    def fail(self, source: str, dest: str, message: str, error: PellucidError | None = None) -> None:
        self.failures.append(data_transfer.TransferFailure(source, dest, error or UserError(message)))


def _plan(client: User, sources: list[str], dest: str, recursive: bool) -> _Plan:
    plan = _Plan()
    remote_dest = is_remote(dest)
    if remote_dest:
        trailing_slash, dest = dest.endswith("/"), normalize_path(dest)
        dest_is_dir = trailing_slash or len(sources) > 1 or _remote_kind(client, dest) == "dir"
    else:
        dest_is_dir = dest.endswith(os.sep) or len(sources) > 1 or Path(dest).is_dir()
    for source in sources:
        if not is_remote(source) and not remote_dest:
            plan.fail(source, dest, f"{source} -> {dest}: both are local, use cp (one side must be data://)")
            continue
        if is_remote(source):
            _plan_remote_source(client, plan, normalize_path(source), dest, remote_dest, dest_is_dir, recursive)
        else:
            _plan_local_source(plan, Path(source), dest, dest_is_dir, recursive)
    return plan


def _target(dest: str, name: str, dest_is_dir: bool, remote: bool) -> str:
    if not dest_is_dir:
        return dest
    return f"{dest.rstrip('/')}/{name}" if remote else str(Path(dest) / name)


def _plan_local_source(plan: _Plan, source: Path, dest: str, dest_is_dir: bool, recursive: bool) -> None:
    if source.is_file():
        target = _target(dest, source.name, dest_is_dir, True)
        plan.uploads.append(data_transfer.UploadItem(target, source.stat().st_size, _opener(source), str(source)))
    elif source.is_dir():
        if not recursive:
            plan.fail(str(source), dest, f"{source} is a directory: pass -r to copy it and what is in it")
            return
        root = _target(dest, source.name, dest_is_dir, True)
        for folder, _, names in os.walk(source):
            for name in sorted(names):
                local = Path(folder) / name
                relative = local.relative_to(source).as_posix()
                try:
                    size = local.stat().st_size
                except OSError as exc:
                    plan.fail(str(local), f"{root}/{relative}", f"{local}: {exc.strerror}")
                    continue
                plan.uploads.append(data_transfer.UploadItem(f"{root}/{relative}", size, _opener(local), str(local)))
    else:
        plan.fail(str(source), _target(dest, source.name, dest_is_dir, True), f"{source} does not exist")


def _plan_remote_source(
    client: User, plan: _Plan, source: str, dest: str, remote_dest: bool, dest_is_dir: bool, recursive: bool
) -> None:
    name = source[len(SCHEME) :].rsplit("/", 1)[-1]
    kind = _remote_kind(client, source)
    if kind == "":
        plan.fail(source, dest, "", DataNotFound(f"{source} does not exist (or you may not read it)"))
        return
    if kind == "file":
        target = _target(dest, name, dest_is_dir, remote_dest)
        if remote_dest:
            plan.copies.append((source, target, data_file(client, source).size))
        else:
            plan.downloads.append(data_transfer.DownloadItem(source, Path(target), data_file(client, source).size))
        return
    if not recursive:
        plan.fail(source, dest, f"{source} is a directory: pass -r to copy it and what is in it")
        return
    root = _target(dest, name, dest_is_dir, remote_dest)
    for path, local, size in _walk_remote(data_dir(client, source), Path("")):
        if remote_dest:
            plan.copies.append((path, f"{root}/{local.as_posix()}", size))
        else:
            plan.downloads.append(data_transfer.DownloadItem(path, Path(root) / local, size))


def cmd_cp(args: argparse.Namespace) -> int:
    client = user(args)
    try:
        plan = _plan(client, args.sources, args.dest, args.recursive)
    except (Unavailable, DeadlineExceeded, ApiClientError) as exc:
        raise ServerUnreachable(f"server unreachable, nothing was copied: {exc}") from exc
    report = data_transfer.TransferReport()
    if plan.uploads:
        _merge(report, data_transfer.upload(client, plan.uploads, args.concurrency))
    if plan.downloads:
        _merge(report, data_transfer.download(client, plan.downloads, args.concurrency))
    if plan.copies:
        _copy_remote(client, plan.copies, args.concurrency, report)
    failures = plan.failures + report.failures
    if report.failures and not report.files and all(exit_code(f.error) == UNREACHABLE for f in report.failures):
        raise ServerUnreachable(
            f"server unreachable, nothing was copied ({len(failures)} file(s) not copied): {report.failures[0].error}"
        )
    summary = {
        "copied": report.files,
        "bytes": report.bytes,
        "failed": [
            {"source": f.source, "dest": f.dest, "error": str(f.error), "exit_code": exit_code(f.error)}
            for f in failures
        ],
    }
    emit(args.json, summary, "" if failures else f"copied {report.files} file(s), {report.bytes} bytes")
    if failures:
        if not args.json:
            for failure in failures:
                print(f"pellucid: failed {failure.source} -> {failure.dest}: {failure.error}", file=sys.stderr)
            print(
                f"pellucid: {len(failures)} of {len(failures) + report.files} file(s) failed ({report.files} copied)",
                file=sys.stderr,
                flush=True,
            )
        return SOME_FAILED
    return OK


def _merge(into: data_transfer.TransferReport, part: data_transfer.TransferReport) -> None:
    into.files += part.files
    into.bytes += part.bytes
    into.failures += part.failures


def _copy_remote(
    client: User, copies: list[tuple[str, str, int]], concurrency: int, report: data_transfer.TransferReport
) -> None:
    """data:// to data://: through a temporary directory here, in groups (bounded disk use)."""
    group: list[tuple[str, str, int]] = []
    group_bytes = 0
    for copy in [*copies, None]:
        if copy is not None:
            group.append(copy)
            group_bytes += copy[2]
        if group and (copy is None or group_bytes >= 256 * 1024 * 1024 or len(group) >= 1000):
            with tempfile.TemporaryDirectory(prefix="pellucid-cp-") as scratch:
                locals_ = [Path(scratch) / str(i) for i in range(len(group))]
                down = data_transfer.download(
                    client,
                    [data_transfer.DownloadItem(src, local, size) for (src, _, size), local in zip(group, locals_)],
                    concurrency,
                )
                report.failures += down.failures
                failed = {f.source for f in down.failures}
                uploads = [
                    data_transfer.UploadItem(dest, local.stat().st_size, _opener(local), src)
                    for (src, dest, _), local in zip(group, locals_)
                    if src not in failed
                ]
                _merge(report, data_transfer.upload(client, uploads, concurrency))
            group, group_bytes = [], 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def add_commands(commands: Any) -> None:
    ls = commands.add_parser("ls", help="list a data:// directory (default: your collections)")
    ls.add_argument("path", nargs="?", default="data://.my", help="data://<owner or .my>[/<collection>/...]")
    ls.add_argument("-l", "--long", action="store_true", help="show modification time, size and name")
    client_options(ls)
    ls.set_defaults(run=cmd_ls)

    mkdir = commands.add_parser("mkdir", help="create a data:// collection or directory")
    mkdir.add_argument("path")
    mkdir.add_argument(
        "--acl", choices=[t.name for t in AclType], help="who may read a new collection (default my_algos)"
    )
    mkdir.add_argument("-p", "--parents", action="store_true", help="create missing parent directories too")
    client_options(mkdir)
    mkdir.set_defaults(run=cmd_mkdir)

    rmdir = commands.add_parser("rmdir", help="delete a data:// directory")
    rmdir.add_argument("path")
    rmdir.add_argument("-f", "--force", action="store_true", help="delete it even if it is not empty")
    client_options(rmdir)
    rmdir.set_defaults(run=cmd_rmdir)

    rm = commands.add_parser("rm", help="delete data:// files")
    rm.add_argument("paths", nargs="+", metavar="path")
    client_options(rm)
    rm.set_defaults(run=cmd_rm)

    cp = commands.add_parser(
        "cp",
        help="copy files between local paths and data:// (either way, or data:// to data://)",
        description="Copy files; every file is tried, failures are listed at the end and the exit code is 5.",
    )
    cp.add_argument("sources", nargs="+", metavar="SRC")
    cp.add_argument("dest", metavar="DEST")
    cp.add_argument("-r", "--recursive", action="store_true", help="copy directories and what is in them")
    cp.add_argument(
        "-c",
        "--concurrency",
        type=_positive_int,
        default=data_transfer.DEFAULT_CONCURRENCY,
        help=f"transfers at once (default {data_transfer.DEFAULT_CONCURRENCY})",
    )
    client_options(cp)
    cp.set_defaults(run=cmd_cp)

    cat = commands.add_parser("cat", help="print data:// files to stdout")
    cat.add_argument("paths", nargs="+", metavar="path")
    client_options(cat)
    cat.set_defaults(run=cmd_cat)


__all__ = ["SOME_FAILED", "add_commands"]
