"""Stores chosen by URI: each scheme names one backend, imported only when asked for."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from pellucid.server.storage.base import MetadataStore
from pellucid.server.storage.blobs import BlobStore
from pellucid.server.storage.queue import WorkQueue
from pellucid.server.storage.vectors import VectorIndex

log = logging.getLogger(__name__)


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


ACCEPTED_QUEUE_URIS = (
    "memory: (in this process, the default), postgresql://user:password@host:port/database (shared by replicas)"
)


def check_work_queue_uri(uri: str) -> str:
    """The backend a queue URI names ("memory" or "postgresql"); ValueError naming the accepted URIs otherwise."""
    if uri in ("", "memory:", "memory://"):
        return "memory"
    if uri.split("://", 1)[0].lower() in ("postgresql", "postgres") and "://" in uri:
        return "postgresql"
    raise ValueError(f"unsupported work queue URI {uri!r}: the accepted queue URIs are {ACCEPTED_QUEUE_URIS}")


def open_work_queue(uri: str, clock: Callable[[], float] | None = None) -> WorkQueue:
    """The queue a URI names: `memory:` (or empty) is the in-process queue; `postgresql://...`
    the queue shared by replicas over one database (its tables beside the metadata store's)."""
    if check_work_queue_uri(uri) == "postgresql":
        from pellucid.server.storage.queue_postgres import PostgresWorkQueue

        return PostgresWorkQueue(uri, clock) if clock is not None else PostgresWorkQueue(uri)
    from pellucid.server.storage.queue_memory import MemoryWorkQueue

    return MemoryWorkQueue(clock) if clock is not None else MemoryWorkQueue()


def open_blob_store(uri: str, index_dir: Path | None = None, shared_index_uri: str = "") -> BlobStore:
    """The blob store a URI names.

    `file:///path/to/dir` (or a bare path): the embedded store, packs and files with their
    SQLite index in that directory. `s3://bucket/prefix?endpoint_url=...&region=...`: objects
    in a bucket (credentials from boto3's chain: AWS_* variables, profiles, roles), their
    index in PostgreSQL if `shared_index_uri` is a postgresql:// URI (the metadata
    database, shared by replicas), else in SQLite under `index_dir` (the server's data dir).
    """
    scheme = uri.split("://", 1)[0] if "://" in uri else "file"
    if scheme == "file":
        from pellucid.server.storage.blobs import LocalBlobStore

        return LocalBlobStore(Path(uri[len("file://") :] if "://" in uri else uri))
    if scheme == "s3":
        try:
            from pellucid.server.storage.blob_s3 import open_s3_blob_store
        except ImportError as exc:  # boto3 is an extra
            raise ValueError(f"{uri}: the S3 blob store needs boto3: pip install 'pellucid[s3]' ({exc})") from exc
        return open_s3_blob_store(uri, index_dir, shared_index_uri)
    raise ValueError(
        f"unsupported blob store {scheme!r} in {uri!r}: use one of "
        "file:///path/to/dir, s3://bucket/prefix?endpoint_url=...&region=..."
    )


VECTOR_EXAMPLES = "memory:, exact:///path/to/dir, faiss:///path/to/dir, postgresql://user@host:5432/database"


def check_vector_index_uri(uri: str) -> str:
    """The backend a vector index URI names ("" for the embedded default); ValueError naming the accepted URIs."""
    if uri == "":
        return ""
    if uri in ("memory:", "memory://"):
        return "memory"
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("exact", "faiss") and uri[len(scheme) + 3 :]:
        return scheme
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    raise ValueError(f"unsupported vector index URI {uri!r}: use one of {VECTOR_EXAMPLES} (or nothing: the default)")


def vector_index_uri(vectors_uri: str, metadata_uri: str) -> str:
    """The vector index a server opens: the one given, else pgvector in the metadata database
    when that is PostgreSQL (replicas must share their vectors as they share the metadata: a
    replica's own index would miss what another replica's workers embedded), else the data
    dir's default."""
    if vectors_uri:
        return vectors_uri
    if "://" in metadata_uri and metadata_uri.split("://", 1)[0].lower() in ("postgresql", "postgres"):
        return metadata_uri
    return ""


def open_vector_index(uri: str, data_dir: Path | None) -> VectorIndex:
    """The vector index a URI names: `memory:` (in this process only), `exact:///dir` (numpy
    brute force, persisted), `faiss:///dir` (ANN over the exact store, faiss-cpu from the
    `models` extra), `postgresql://...` (pgvector). Empty: the embedded default, faiss under
    `<data_dir>/vectors` when faiss imports, else exact there."""
    backend = check_vector_index_uri(uri)
    if backend == "memory":
        from pellucid.server.storage.vectors_exact import ExactVectorIndex

        return ExactVectorIndex()
    if backend == "postgresql":
        from pellucid.server.storage.vectors_pgvector import PgvectorIndex

        return PgvectorIndex(uri)
    if backend == "":
        if data_dir is None:
            raise ValueError("the default vector index lives in the data dir: give one, or a vector index URI")
        directory = data_dir / "vectors"
        try:
            from pellucid.server.storage.vectors_faiss import FaissVectorIndex, import_faiss

            import_faiss()
        except ImportError:
            log.info("vector index: exact (numpy brute force) in %s; install pellucid[models] for faiss ANN", directory)
            from pellucid.server.storage.vectors_exact import ExactVectorIndex

            return ExactVectorIndex(directory)
        log.info("vector index: faiss (ANN for large spaces, exact below) in %s", directory)
        return FaissVectorIndex(directory)
    directory = Path(uri[len(backend) + 3 :])
    if backend == "exact":
        from pellucid.server.storage.vectors_exact import ExactVectorIndex

        return ExactVectorIndex(directory)
    from pellucid.server.storage.vectors_faiss import FaissVectorIndex

    try:
        return FaissVectorIndex(directory)
    except ImportError as exc:
        raise ValueError(f"{uri}: {exc}") from exc
