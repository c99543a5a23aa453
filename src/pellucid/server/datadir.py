"""The files of a data directory that let clients find the server that owns it.

- `server.lock`: held (flock) by the one server that owns the directory, for its lifetime;
  the kernel releases it if that process dies, so a crash never leaves a stale owner. It
  holds a record of its owner (kind, pid, command, address), kept after the owner stops:
  a directory last owned by a standalone `pellucid server` stays that server's, and
  embedded clients wait for it to come back instead of serving the directory themselves.
- `server.json`: the owner's address, written once it listens.
- `credentials.json`: the first user's id and PAT, for clients on this machine.

Everything in the directory is private to its user (files 0600, directories 0700): it
holds tokens and every tenant's data. The process umask is left alone (an embedded server
runs inside the user's own process), so files are created with explicit modes and the
whole directory is tightened when a server takes it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shlex
import stat
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

log = logging.getLogger("pellucid.server")

STANDALONE = "standalone"  # a `pellucid server` process
EMBEDDED = "embedded"  # a client process serving the `local` target in-process
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


@dataclass(frozen=True)
class LocalCredentials:
    user_id: str
    pat: str


@dataclass(frozen=True)
class Owner:
    """Which process owns (or last owned) a data directory."""

    kind: str
    pid: int
    command: str
    address: str = ""
    tls: bool = False

    def describe(self) -> str:
        """E.g. 'the standalone pellucid server at 127.0.0.1:7317 (pid 42: pellucid server ...)'."""
        where = f" at {self.address}" if self.address else ""
        return f"the {self.kind} pellucid server{where} (pid {self.pid}: {self.command})"


SECRET_OPTIONS = ("--pat", "--token", "--session-token")


def this_process(kind: str) -> Owner:
    return Owner(
        kind=kind, pid=os.getpid(), command=command_line(sys.argv) if sys.argv and sys.argv[0] else sys.executable
    )


def command_line(argv: list[str]) -> str:
    """`argv` as a shell line, with token values hidden: it is shown in errors other processes print."""
    shown, hide_next = [], False
    for arg in argv:
        option, equals, _ = arg.partition("=")
        if hide_next:
            arg = "***"
        elif equals and option in SECRET_OPTIONS:
            arg = f"{option}=***"
        hide_next = arg in SECRET_OPTIONS
        shown.append(arg)
    return shlex.join(shown)


class ServerLock:
    """Exclusive ownership of a data directory, released by `release()` or by process exit."""

    def __init__(self, data_dir: DataDir, fd: int, owner: Owner) -> None:
        self._data_dir = data_dir
        self._fd: int | None = fd
        self.owner = owner
        self._record()

    def publish(self, address: str, tls: bool = False) -> None:
        """Tell clients where the owner listens (in the lock record and in server.json)."""
        self.owner = replace(self.owner, address=address, tls=tls)
        self._record()
        _write_atomic(self._data_dir.address_path, json.dumps(asdict(self.owner)), PRIVATE_FILE_MODE)

    def release(self) -> None:
        """Give up the directory; the lock record stays, naming its last owner."""
        if self._fd is None:
            return
        self._data_dir.address_path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def _record(self) -> None:
        assert self._fd is not None
        data = json.dumps(asdict(self.owner)).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)


class DataDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().resolve()
        self.lock_path = self.path / "server.lock"
        self.address_path = self.path / "server.json"
        self.credentials_path = self.path / "credentials.json"
        self.metadata_path = self.path / "metadata.sqlite3"

    def try_lock(self, kind: str = EMBEDDED) -> ServerLock | None:
        """Take ownership if no running server has it, and make the directory private to this user.

        The stale address file is removed at once."""
        self.path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        self.address_path.unlink(missing_ok=True)
        make_private(self.path)
        return ServerLock(self, fd, this_process(kind))

    def is_owned(self) -> bool:
        if not self.lock_path.exists():
            return False
        fd = os.open(self.lock_path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a shared lock we may have taken
        return False

    def owner(self) -> Owner | None:
        """The process that owns this directory, or last owned it; None if unknown."""
        try:
            return Owner(**json.loads(self.lock_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None  # no record, an old empty lock file, or one being rewritten

    def running_address(self) -> str | None:
        """The address of the server that owns this directory, if one is running and listening."""
        try:
            address = json.loads(self.address_path.read_text())["address"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return address if self.is_owned() else None

    def wait_for_address(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            address = self.running_address()
            if address or not self.is_owned():
                return address
            time.sleep(0.02)
        return None

    def create_private_file(self, path: Path) -> None:
        """Create `path` 0600 if it does not exist, so that what opens it next (SQLite) keeps that
        mode, and gives it to the files it makes beside it (-wal, -shm)."""
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))

    def write_credentials(self, credentials: LocalCredentials) -> None:
        _write_atomic(
            self.credentials_path,
            json.dumps({"user_id": credentials.user_id, "pat": credentials.pat}),
            PRIVATE_FILE_MODE,
        )

    def read_credentials(self) -> LocalCredentials | None:
        try:
            data = json.loads(self.credentials_path.read_text())
            return LocalCredentials(user_id=data["user_id"], pat=data["pat"])
        except (OSError, ValueError, KeyError):
            return None


# What pellucid keeps in a data dir. Only these are tightened, so a data dir pointed at a
# folder that holds other things too leaves those things as they were.
OWN_ENTRIES = ("server.", "credentials.json", "metadata.sqlite3", "blobs")


def make_private(root: Path) -> None:
    """Take group and others' permissions off `root` and everything pellucid keeps in it
    (symlinks are not followed)."""
    _tighten(root)
    for entry in os.scandir(root):
        if not entry.name.startswith(OWN_ENTRIES):
            continue
        _tighten(Path(entry.path))
        if entry.is_dir(follow_symlinks=False):
            for folder, dirs, files in os.walk(entry.path):
                for name in [*dirs, *files]:
                    _tighten(Path(folder) / name)


def _tighten(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode) or not stat.S_IMODE(mode) & 0o077:
            return
        os.chmod(path, stat.S_IMODE(mode) & ~0o077)
    except FileNotFoundError:
        pass  # removed meanwhile (a temporary file)
    except OSError as exc:  # e.g. a file another user owns
        log.warning(
            "cannot make %s private to this user (%s): other users may read it; fix its owner or mode", path, exc
        )


def _write_atomic(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
