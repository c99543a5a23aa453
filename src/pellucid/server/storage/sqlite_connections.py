"""SQLite plumbing shared by the SQLite stores: connections, write transactions, bulk inserts."""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BUSY_TIMEOUT_SECONDS = 30.0


class ThreadConnections:
    """A connection per reading thread and one for writing (WAL, synchronous=NORMAL), closed together.

    Every write transaction goes through the one writer connection, taken in turn under a
    lock: its page cache stays warm (a commit from another connection would invalidate it,
    and the next batch re-read its pages from the WAL), and SQLite's busy handler, which
    polls by sleeping 1, 2, 5, 10... ms, is only ever needed against other processes.
    Readers keep their own connections, so reads never wait for a write.

    `unit_of_work()` makes several writes of one thread (a request's mutation and its
    request-log entry) one transaction. That holds under synchronous=NORMAL too: a power
    cut may lose the last commits, but each unit whole, never half of one.
    """

    def __init__(
        self, path: Path, foreign_keys: bool = False, functions: dict[str, tuple[int, Callable[..., Any]]] | None = None
    ) -> None:
        self.path = path
        self._foreign_keys = foreign_keys
        self._functions = dict(functions or {})  # SQL functions every connection has: name -> (arity, function)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._foreign_keys_off = False  # the writer's, for the transaction of write_without_foreign_keys()
        self._closed = False

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA foreign_keys={'ON' if self._foreign_keys else 'OFF'}")
        for name, (arity, function) in self._functions.items():
            conn.create_function(name, arity, function, deterministic=True)
        with self._lock:
            if self._closed:  # checked with the append, so close() cannot miss this connection
                conn.close()
                raise RuntimeError(f"{self.path} is closed")
            self._all.append(conn)
        return conn

    def get(self) -> sqlite3.Connection:
        """This thread's connection; inside `write()`, the writer, so reads see the transaction."""
        conn = getattr(self._local, "writing", None) or getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open()
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; BEGIN IMMEDIATE takes SQLite's write lock up front (no upgrade deadlocks).

        Whatever fails (the body, or COMMIT itself: a deferred constraint, a full disk),
        the transaction is rolled back, so the shared writer is never left inside one.
        Inside `unit_of_work()` the write joins the unit's transaction instead, as a savepoint.
        """
        unit: _Unit | None = getattr(self._local, "unit", None)
        if unit is not None:
            if unit.conn is None:
                unit.conn = self._begin()  # the unit's first write: lock and transaction last until it ends
            with self._savepoint(unit) as conn:
                yield conn
            return
        if getattr(self._local, "writing", None) is not None:
            raise RuntimeError(f"{self.path}: a write transaction is already open in this thread")
        with self._transaction(foreign_keys=True) as conn:
            yield conn

    @contextmanager
    def write_without_foreign_keys(self) -> Iterator[sqlite3.Connection]:
        """A write transaction with foreign keys off, for SQLite's table rebuild (a DROP TABLE
        under them would cascade into every child row). PRAGMA foreign_keys is a no-op inside a
        transaction, so it is turned off before BEGIN and on again before the writer is handed
        on. The caller checks its work with `foreign_key_violations` before the block ends.
        """
        if getattr(self._local, "unit", None) is not None or getattr(self._local, "writing", None) is not None:
            raise RuntimeError(f"{self.path}: a write transaction is already open in this thread")
        with self._transaction(foreign_keys=False) as conn:
            yield conn

    @contextmanager
    def _transaction(self, foreign_keys: bool) -> Iterator[sqlite3.Connection]:
        """Begin on the writer, commit when the block ends, roll back if it (or COMMIT) fails."""
        conn = self._begin(foreign_keys=foreign_keys)
        try:
            yield conn
        except BaseException:
            self._end(conn, commit=False)
            raise
        self._end(conn, commit=True)

    @contextmanager
    def unit_of_work(self) -> Iterator[None]:
        """Every `write()` of this thread until the block ends commits as one transaction, or none does.

        The first write begins the transaction (so the writer lock is not held before: work
        done ahead of the first write, such as hashing and storing blobs, blocks nobody) and
        the block's end commits it, or rolls it back if the block raises. Each write inside
        runs in a savepoint: one that fails rolls back its own statements only, so a store
        method stays atomic when its caller catches the error (Conflict) and carries on.
        Reads through `get()` after the first write see the unit's uncommitted rows.

        While the unit holds the writer, other threads' writes wait: keep slow work out of
        it, and never wait inside it for another thread that writes through these connections.
        """
        if getattr(self._local, "unit", None) is not None or getattr(self._local, "writing", None) is not None:
            raise RuntimeError(f"{self.path}: a write transaction is already open in this thread")
        unit = self._local.unit = _Unit()
        try:
            yield
        except BaseException:
            if unit.conn is not None:
                self._end(unit.conn, commit=False)
            raise
        else:
            if unit.conn is not None:
                if unit.broken:
                    self._end(unit.conn, commit=False)
                    raise sqlite3.OperationalError(f"{self.path}: a write of this unit of work lost its transaction")
                self._end(unit.conn, commit=True)
        finally:
            self._local.unit = None

    def _begin(self, foreign_keys: bool = True) -> sqlite3.Connection:
        """Take the writer (in turn, under the lock) and begin a transaction on it (with foreign
        keys off if asked and they are on: `_end` turns them on again)."""
        if not self._write_lock.acquire(timeout=BUSY_TIMEOUT_SECONDS):
            raise sqlite3.OperationalError(
                f"{self.path}: database is locked (no write for {BUSY_TIMEOUT_SECONDS:.0f} s)"
            )
        try:
            if self._writer is None:
                self._writer = self._open()
                self._writer.execute("PRAGMA temp_store=MEMORY")  # statement journals of multi-row inserts
            conn = self._local.writing = self._writer
            if self._foreign_keys and not foreign_keys:
                self._foreign_keys_off = True
                conn.execute("PRAGMA foreign_keys=OFF")
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._restore_foreign_keys()
            self._local.writing = None
            self._write_lock.release()
            raise
        return conn

    def _restore_foreign_keys(self) -> None:
        """Foreign keys on again on the writer, under the write lock (the next transaction must
        not run without them); a writer that cannot take the PRAGMA (still inside a transaction,
        where it would be silently ignored) is closed, and the next write opens a fresh one."""
        if not self._foreign_keys_off:
            return
        self._foreign_keys_off = False
        conn = self._writer
        if conn is None:
            return
        try:
            if not conn.in_transaction:
                conn.execute("PRAGMA foreign_keys=ON")
                if conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1:
                    return
        except sqlite3.Error:
            pass
        with self._lock:
            self._all.remove(conn)
        self._writer = None
        conn.close()

    def _end(self, conn: sqlite3.Connection, commit: bool) -> None:
        """Commit (or roll back) the writer's transaction and hand the writer on."""
        try:
            if commit:
                try:
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:  # SQLite may have rolled back already
                        conn.execute("ROLLBACK")
                    raise
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
        finally:
            try:
                self._restore_foreign_keys()
            finally:
                self._local.writing = None
                self._write_lock.release()

    @contextmanager
    def _savepoint(self, unit: _Unit) -> Iterator[sqlite3.Connection]:
        conn = unit.conn
        assert conn is not None
        if unit.broken or not conn.in_transaction:
            # SQLite rolled the whole transaction back (a full disk, an I/O error): a
            # SAVEPOINT now would begin a new one and commit what follows on its own
            unit.broken = True
            raise sqlite3.OperationalError(f"{self.path}: an earlier write of this unit of work lost its transaction")
        name = f"write_{unit.depth}"
        unit.depth += 1
        try:
            conn.execute(f"SAVEPOINT {name}")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute(f"ROLLBACK TO {name}")
                    conn.execute(f"RELEASE {name}")
                else:
                    unit.broken = True
                raise
            conn.execute(f"RELEASE {name}")
        finally:
            unit.depth -= 1

    def close(self) -> None:
        """Close every connection; a write transaction in progress ends first (closing the writer
        under it crashes SQLite). Callers stop their readers before closing."""
        taken = self._write_lock.acquire(timeout=BUSY_TIMEOUT_SECONDS)
        try:
            self._close_all()
        finally:
            if taken:
                self._write_lock.release()

    def _close_all(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._writer = None
        self._local = threading.local()


class _Unit:
    """A thread's open `unit_of_work()`: its transaction once the first write began it."""

    __slots__ = ("broken", "conn", "depth")

    def __init__(self) -> None:
        self.conn: sqlite3.Connection | None = None
        self.depth = 0  # savepoints open inside it
        self.broken = False  # SQLite rolled its transaction back under a write: it must not commit


def foreign_key_violations(conn: sqlite3.Connection) -> str:
    """What `PRAGMA foreign_key_check` finds in the whole database, said briefly ("" if nothing)."""
    violations = conn.execute("PRAGMA foreign_key_check").fetchall()
    shown = ", ".join(
        f"{table}{'' if rowid is None else f' row {rowid}'} -> {parent}" for table, rowid, parent, _ in violations[:5]
    )
    return f"{len(violations)} foreign key violations ({shown})" if violations else ""


def insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[Any]], tail: str = "") -> None:
    """`head VALUES (...), (...), ... tail` with as many rows per statement as SQLite binds.

    `executemany` steps once per row and releases the GIL around every step: with the
    client, gRPC and other batches all waiting for the GIL, each release is a thread
    hand-off, and a 128-row batch paid hundreds of them. One statement per chunk pays one.
    """
    if not rows:
        return
    width = len(rows[0])
    per_statement = max(1, _variable_limit(conn) // width)
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        conn.execute(_values_sql(head, tail, width, len(chunk)), [value for row in chunk for value in row])


def _variable_limit(conn: sqlite3.Connection) -> int:
    getlimit = getattr(conn, "getlimit", None)  # Python 3.11+ (so is the constant)
    return getlimit(getattr(sqlite3, "SQLITE_LIMIT_VARIABLE_NUMBER")) if getlimit else 999  # noqa: B009


@functools.lru_cache(maxsize=256)
def _values_sql(head: str, tail: str, width: int, count: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return f"{head} VALUES {', '.join([row] * count)} {tail}"


def like_pattern(text: str) -> str:
    """A LIKE pattern (with ESCAPE '\\') matching `text` anywhere, case folded by the caller's lower()."""
    return "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def insert_rows_returning(
    conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[Any]], tail: str, returning: str
) -> list[sqlite3.Row]:
    """`insert_rows`, and the rows its `RETURNING returning` gives (those inserted)."""
    if not rows:
        return []
    width = len(rows[0])
    per_statement = max(1, _variable_limit(conn) // width)
    found: list[sqlite3.Row] = []
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        sql = _values_sql(head, tail, width, len(chunk)) + f" RETURNING {returning}"
        found += conn.execute(sql, [value for row in chunk for value in row]).fetchall()
    return found
