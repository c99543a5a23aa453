"""The files of a data directory that let clients find the server that owns it.

- `server.lock`: held (flock) by the one server that owns the directory, for its lifetime;
  the kernel releases it if that process dies, so a crash never leaves a stale owner.
- `server.json`: the owner's address, written once it listens.
- `credentials.json` (0600): the first user's id and PAT, for clients on this machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalCredentials:
    user_id: str
    pat: str


class ServerLock:
    """Exclusive ownership of a data directory, released by `release()` or by process exit."""

    def __init__(self, data_dir: DataDir, fd: int) -> None:
        self._data_dir = data_dir
        self._fd: int | None = fd

    def publish(self, address: str) -> None:
        _write_atomic(self._data_dir.address_path, json.dumps({"address": address, "pid": os.getpid()}), 0o644)

    def release(self) -> None:
        if self._fd is None:
            return
        self._data_dir.address_path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


class DataDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().resolve()
        self.lock_path = self.path / "server.lock"
        self.address_path = self.path / "server.json"
        self.credentials_path = self.path / "credentials.json"
        self.metadata_path = self.path / "metadata.sqlite3"

    def try_lock(self) -> ServerLock | None:
        """Take ownership if no running server has it; the stale address file is removed at once."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        self.address_path.unlink(missing_ok=True)
        return ServerLock(self, fd)

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

    def running_address(self) -> str | None:
        """The address of the server that owns this directory, if one is running and listening."""
        try:
            address = json.loads(self.address_path.read_text())["address"]
        except (OSError, ValueError, KeyError):
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

    def write_credentials(self, credentials: LocalCredentials) -> None:
        _write_atomic(self.credentials_path, json.dumps({"user_id": credentials.user_id, "pat": credentials.pat}), 0o600)

    def read_credentials(self) -> LocalCredentials | None:
        try:
            data = json.loads(self.credentials_path.read_text())
            return LocalCredentials(user_id=data["user_id"], pat=data["pat"])
        except (OSError, ValueError, KeyError):
            return None


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
