"""PostgreSQL plumbing of the metadata store: a connection pool, transactions, units of work."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from pellucid.server.storage.base import StoreUnavailable

DEFAULT_POOL_MIN = 2
DEFAULT_POOL_MAX = 20
CONNECT_TIMEOUT_SECONDS = 10.0
PROBE_TIMEOUT_SECONDS = 2.0  # a health probe waits this long for a connection

# query parameters of a postgresql:// URI that pellucid reads (libpq would refuse them): the pool's,
# and pgvector's (vectors_pgvector.py), which the metadata URI may carry when it is also the index's
POOL_PARAMETERS = ("pool_min_size", "pool_max_size")
VECTOR_PARAMETERS = ("hnsw_threshold", "ef_search", "filter_exact_max", "rerank_factor")


def split_pool_parameters(uri: str) -> tuple[str, int, int]:
    """The URI for libpq without pellucid's pool parameters, and the pool's min and max sizes.

    The other query parameters are passed on byte for byte (re-encoding them would turn an
    `options=-c%20x%3Dy` into something libpq reads differently)."""
    parts = urlsplit(uri)
    sizes = {"pool_min_size": DEFAULT_POOL_MIN, "pool_max_size": DEFAULT_POOL_MAX}
    rest = []
    for piece in parts.query.split("&") if parts.query else []:
        key, _, value = piece.partition("=")
        if key in POOL_PARAMETERS:
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"{key}={value!r} in the metadata URI: give a whole number of connections, at least 1")
            sizes[key] = int(value)
        elif key not in VECTOR_PARAMETERS:  # read by vector_parameters
            rest.append(piece)
    if sizes["pool_min_size"] > sizes["pool_max_size"]:
        raise ValueError("pool_min_size is larger than pool_max_size in the metadata URI")
    return urlunsplit(parts._replace(query="&".join(rest))), sizes["pool_min_size"], sizes["pool_max_size"]


def vector_parameters(uri: str) -> dict[str, int]:
    """pgvector's settings given in the URI (`...?hnsw_threshold=20000&ef_search=100`), each a
    whole number (0 or more); ValueError naming a bad one."""
    query = urlsplit(uri).query
    found = {}
    for piece in query.split("&") if query else []:
        key, _, value = piece.partition("=")
        if key in VECTOR_PARAMETERS:
            if not value.isdigit():
                raise ValueError(f"{key}={value!r} in the vector index URI: give a whole number, 0 or more")
            found[key] = int(value)
    return found


def redacted(uri: str) -> str:
    """The URI without its password, for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PoolConnections:
    """Pooled connections (autocommit, dict rows): a read borrows one for its statements, a
    write borrows one for one transaction.

    `unit_of_work()` gives the writes of one thread one connection and one transaction,
    begun at the unit's first write (nothing is held before it); each write inside runs in
    a savepoint, so one that fails rolls back its own statements only; the thread's reads
    after the first write go through that connection and see the unit's rows. The same
    semantics as the SQLite store (sqlite_connections.ThreadConnections), minus its single
    writer: PostgreSQL runs the units of many threads and replicas at once.
    """

    def __init__(self, uri: str) -> None:
        conninfo, min_size, max_size = split_pool_parameters(uri)
        self.description = redacted(conninfo)
        self._pool = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, "row_factory": dict_row},
            open=False,
            name="pellucid-metadata",
            timeout=CONNECT_TIMEOUT_SECONDS * 3,
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except PoolTimeout:
            self._pool.close()
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {self.description} within {CONNECT_TIMEOUT_SECONDS:.0f} s:"
                " check that it runs, and the host, port, user, password and database in the URI"
            ) from None
        self._local = threading.local()
        # set by a failed probe, cleared by one that passes: while the database is known to be
        # away, a call waits PROBE_TIMEOUT_SECONDS for a connection, not the pool's 30 s
        self._known_down = False

    @property
    def _wait(self) -> float | None:
        return PROBE_TIMEOUT_SECONDS if self._known_down else None

    @contextmanager
    def read(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for reads: the thread's open transaction if it has one, else a pooled one."""
        unit: _Unit | None = getattr(self._local, "unit", None)
        conn = (unit.conn if unit is not None else None) or getattr(self._local, "writing", None)
        if conn is not None:
            yield conn
            return
        with self._pool.connection(timeout=self._wait) as pooled:
            yield pooled

    @contextmanager
    def write(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction (inside a unit of work: one savepoint of the unit's transaction)."""
        unit: _Unit | None = getattr(self._local, "unit", None)
        if unit is not None:
            if unit.conn is None:
                unit.begin(self._pool, self._wait)
            assert unit.conn is not None
            with unit.conn.transaction():  # nested: a savepoint
                yield unit.conn
            return
        if getattr(self._local, "writing", None) is not None:
            raise RuntimeError(f"{self.description}: a write transaction is already open in this thread")
        with self._pool.connection(timeout=self._wait) as conn:
            self._local.writing = conn
            try:
                with conn.transaction():
                    yield conn
            finally:
                self._local.writing = None

    @contextmanager
    def unit_of_work(self) -> Iterator[None]:
        if getattr(self._local, "unit", None) is not None or getattr(self._local, "writing", None) is not None:
            raise RuntimeError(f"{self.description}: a write transaction is already open in this thread")
        unit = self._local.unit = _Unit()
        try:
            yield
        except BaseException as exc:
            unit.end(self._pool, exc)
            raise
        else:
            unit.end(self._pool, None)
        finally:
            self._local.unit = None

    def probe(self) -> None:
        """One cheap query on a pooled connection, after replacing the idle connections that broke
        (a database restarted or cut them): once it answers again, calls do not meet dead ones."""
        try:
            self._pool.check()
            with self._pool.connection(timeout=PROBE_TIMEOUT_SECONDS) as conn:
                conn.execute("SELECT 1")
        except BaseException:
            self._known_down = True
            raise
        self._known_down = False

    def close(self) -> None:
        self._pool.close()


class _Unit:
    """A thread's open unit of work: its connection and transaction once the first write began them."""

    __slots__ = ("conn", "transaction")

    def __init__(self) -> None:
        self.conn: psycopg.Connection[Any] | None = None
        self.transaction: AbstractContextManager[psycopg.Transaction] | None = None

    def begin(self, pool: ConnectionPool, timeout: float | None) -> None:
        conn = pool.getconn(timeout)
        try:
            transaction = conn.transaction()
            transaction.__enter__()
        except BaseException:
            pool.putconn(conn)
            raise
        self.conn, self.transaction = conn, transaction

    def end(self, pool: ConnectionPool, error: BaseException | None) -> None:
        """Commit (no error) or roll back, then give the connection back (the pool discards a broken one)."""
        if self.conn is None or self.transaction is None:
            return
        try:
            if error is None:
                self.transaction.__exit__(None, None, None)
            else:
                self.transaction.__exit__(type(error), error, error.__traceback__)
        finally:
            pool.putconn(self.conn)
            self.conn = self.transaction = None
