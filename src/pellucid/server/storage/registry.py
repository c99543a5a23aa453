"""Stores chosen by URI: each scheme names one backend, imported only when asked for."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pellucid.server.storage.base import MetadataStore
from pellucid.server.storage.queue import WorkQueue


def _sqlite(uri: str) -> MetadataStore:
    from pellucid.server.storage.sqlite import SqliteMetadataStore

    return SqliteMetadataStore(Path(uri[len("sqlite://") :] if uri.startswith("sqlite://") else uri))


def _postgresql(uri: str) -> MetadataStore:
    from pellucid.server.storage.postgres import PostgresMetadataStore

    return PostgresMetadataStore(uri)


METADATA_SCHEMES: dict[str, Callable[[str], MetadataStore]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
    "postgres": _postgresql,
}

METADATA_EXAMPLES = "sqlite:///path/to/file.sqlite3, postgresql://user@host:5432/database"


def open_metadata_store(uri: str) -> MetadataStore:
    """Open the metadata store a URI names: `sqlite:///path/to/file.sqlite3` (or a bare path),
    `postgresql://user:password@host:port/database` (libpq's URI, query parameters included)."""
    if "://" not in uri:
        return _sqlite(uri)
    scheme = uri.split("://", 1)[0].lower()
    opener = METADATA_SCHEMES.get(scheme)
    if opener is None:
        raise ValueError(f"unsupported metadata store {scheme!r}: use one of {METADATA_EXAMPLES}")
    return opener(uri)


ACCEPTED_QUEUE_URIS = "memory: (in this process, the default)"


def check_work_queue_uri(uri: str) -> str:
    """The backend a queue URI names ("memory"); ValueError naming the accepted URIs otherwise."""
    if uri in ("", "memory:", "memory://"):
        return "memory"
    raise ValueError(f"unsupported work queue URI {uri!r}: the accepted queue URIs are {ACCEPTED_QUEUE_URIS}")


def open_work_queue(uri: str, clock: Callable[[], float] | None = None) -> WorkQueue:
    """The queue a URI names: `memory:` (or empty) is the in-process queue; others are refused."""
    check_work_queue_uri(uri)
    from pellucid.server.storage.queue_memory import MemoryWorkQueue

    return MemoryWorkQueue(clock) if clock is not None else MemoryWorkQueue()
