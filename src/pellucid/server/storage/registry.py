"""Stores chosen by URI: each scheme names one backend, imported only when asked for."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pellucid.server.storage.base import MetadataStore


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
