"""The embedded server behind the `local` target.

If a pellucid server already owns the data dir (its lock is held), connect to the
address it published; otherwise start one in this process on a loopback port the OS
picks, and stop it at exit. Two processes on one data dir thus share one server.

A data dir whose last owner was a standalone `pellucid server` is never served here:
while that server is down, clients keep its last address and retry as with grpc://, so
the restarted server finds its dir free and clients reconnect to it.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pellucid.errors import ApiClientError, Unavailable

if TYPE_CHECKING:  # imported when a server is started: a client of a remote server never loads it
    from pellucid.server.runtime import PellucidServer

_servers: dict[Path, PellucidServer] = {}
_lock = threading.Lock()
START_TIMEOUT = 30.0


def local_address(data_dir: str) -> str:
    """host:port of the server for `data_dir`, starting one in-process if nobody serves it."""
    from pellucid.server.datadir import EMBEDDED, STANDALONE, DataDir
    from pellucid.server.runtime import PellucidServer, ServerSettings

    folder = DataDir(data_dir)
    with _lock:
        mine = _servers.get(folder.path)
        if mine is not None:
            return mine.address
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            owner = folder.owner()
            if owner is not None and owner.kind == STANDALONE:
                address = folder.running_address()
                if address:
                    return address
                if not folder.is_owned():
                    if owner.address:
                        return owner.address  # down: calls fail UNAVAILABLE and retry, until it is back
                    raise Unavailable(standalone_is_down(folder.path))
                folder.wait_for_address(timeout=1.0)  # starting: its address comes next
                continue
            ownership = folder.try_lock(kind=EMBEDDED)
            if ownership is not None:
                # in-process, as the user: nothing to protect from them, so localhost URLs work
                settings = ServerSettings(data_dir=folder.path, allow_private_urls=True, http_port=_http_port())
                server = PellucidServer(settings, lock=ownership)
                server.start()
                _servers[folder.path] = server
                atexit.register(_stop, folder.path)
                return server.address
            address = folder.wait_for_address(timeout=1.0)
            if address:
                return address
    raise ApiClientError(
        f"timed out after {START_TIMEOUT:.0f}s waiting for the pellucid server that owns {folder.path} to publish its address"
    )


def _http_port() -> int | None:
    """The embedded server's HTTP port: PELLUCID_SERVER_HTTP_PORT (0: the OS picks), else none."""
    from pellucid.server.settings import BY_KEY

    setting = BY_KEY["http_port"]
    text = os.environ.get(setting.env, "")
    if not text:
        return None
    try:
        port: int = setting.parse_text(text)
    except ValueError as exc:
        raise ApiClientError(f"{setting.env}: {exc}") from None
    return port


def standalone_is_down(data_dir: str | Path) -> str:
    """Why nobody serves `data_dir` and what to do, if its owner is a standalone server that is not running; else ""."""
    from pellucid.server.datadir import STANDALONE, DataDir

    folder = DataDir(data_dir)
    owner = folder.owner()
    if owner is None or owner.kind != STANDALONE or folder.is_owned():
        return ""
    return (
        f"{folder.path} belongs to {owner.describe()}, which is not running: start it again "
        f"(`pellucid server --data-dir {folder.path}`), or delete {folder.lock_path} to let scripts serve "
        "the dir in-process"
    )


def forget(data_dir: str) -> None:
    """Stop and drop this process's embedded server for `data_dir` (tests, and re-resolution)."""
    from pellucid.server.datadir import DataDir

    _stop(DataDir(data_dir).path)


def _stop(path: Path) -> None:
    with _lock:
        server = _servers.pop(path, None)
    if server is not None:
        server.stop(grace=1.0)
