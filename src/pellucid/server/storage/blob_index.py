"""BlobIndex: which blobs are stored (and where, for packed ones), who holds each, and GC bookkeeping.

The bytes live elsewhere (pack files and files for LocalBlobStore, objects for S3BlobStore);
this part is what several server replicas must share, so it sits behind its own interface.
`SqliteBlobIndex` is the embedded one (`blobs.sqlite3` next to the packs);
`PostgresBlobIndex` (blob_index_postgres.py) is shared by replicas. Every backend keeps the
one guarantee the stores build on: `remove_unowned` checks that a blob has no owner record
and deletes its bytes in one transaction that a concurrent `claim` of the same digest is
ordered against (SQLite: serial writes; PostgreSQL: advisory locks, see docs/scale-out.md),
so a blob someone is storing again is never deleted under them.

Rows: (sha256, pack, offset, size). Pack 0 means "an object of its own" (S3); a packed blob
names its pack file and offset. The local store's large blobs (files) have no row at all.
"""

from __future__ import annotations

import abc
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pellucid.server.storage.sqlite_connections import ThreadConnections, insert_rows

_BATCH = 900  # host parameters per IN (...) list, under SQLite's limit


class BlobStoreUnavailable(ConnectionError):
    """The object store or the shared index cannot be reached: retry later (UNAVAILABLE), not the caller's fault."""


@dataclass(frozen=True)
class BlobRow:
    sha256: str
    pack: int
    offset: int
    size: int


class BlobIndex(abc.ABC):
    """Index rows and owner records of one blob store. Times are seconds since the epoch, given by the caller."""

    @abc.abstractmethod
    def stored(self, digests: list[str]) -> dict[str, int]:
        """Those of `digests` that have a row, with their sizes."""

    @abc.abstractmethod
    def location(self, sha256: str) -> BlobRow | None: ...

    def locations(self, digests: list[str]) -> dict[str, BlobRow]:
        """The rows of those of `digests` that are packed (one query where the backend allows)."""
        found = {}
        for digest in digests:
            row = self.location(digest)
            if row is not None:
                found[digest] = row
        return found

    @abc.abstractmethod
    def record(self, owner: str, rows: list[BlobRow], owned: list[str], now: float) -> None:
        """Add `rows` (a digest already indexed keeps its row) and make `owner` an owner of every
        digest of `owned` (renewed if it was one), in one transaction."""

    @abc.abstractmethod
    def claim(self, owner: str, digests: list[str], now: float) -> dict[str, int]:
        """Make `owner` an owner of `digests` first, then answer which of them are stored (with sizes).

        The owner record commits before the caller decides to skip storing bytes it found
        stored, so a collection can no longer delete them (see `remove_unowned`). A claim whose
        bytes never arrive leaves an owner record without a row: it is released like any
        other after the grace period, and `acquire` never answers it."""

    @abc.abstractmethod
    def acquire(self, owner: str, digests: list[str], now: float) -> dict[str, int | None]:
        """Renew `owner`'s records of `digests` and return those it holds, with their row's size
        (None: no row, e.g. a local large blob, whose size is its file's)."""

    @abc.abstractmethod
    def add_owners(self, records: Iterable[tuple[str, str]], now: float) -> int:
        """Add (owner, sha256) records that are missing; returns how many were added."""

    @abc.abstractmethod
    def flag(self, name: str) -> bool: ...

    @abc.abstractmethod
    def set_flag(self, name: str) -> None: ...

    @abc.abstractmethod
    def stale_owners(self, after: tuple[str, str], cutoff: float, limit: int) -> list[tuple[str, str]]:
        """(sha256, owner) records not renewed since `cutoff`, in key order after `after`."""

    @abc.abstractmethod
    def release_owners(self, records: list[tuple[str, str]], cutoff: float) -> int:
        """Delete those (sha256, owner) records still not renewed since `cutoff`; returns how many."""

    @abc.abstractmethod
    def unowned_rows(self) -> list[tuple[str, int]]:
        """(sha256, size) of indexed blobs nobody holds: candidates for `remove_unowned`."""

    @abc.abstractmethod
    def remove_unowned(
        self, digests: list[str], keep: Callable[[str], bool], delete_bytes: Callable[[list[str]], None]
    ) -> list[str]:
        """Of `digests`, those with no owner record and not `keep`-ed: delete their rows and call
        `delete_bytes` with them, inside one transaction (its failure rolls the rows back).
        Works for digests without rows too (files, orphaned objects). Returns what was removed."""

    # packs (LocalBlobStore only)

    @abc.abstractmethod
    def live_bytes(self, pack: int) -> int:
        """The bytes of `pack` that rows name."""

    @abc.abstractmethod
    def pack_rows(self, pack: int) -> list[BlobRow]: ...

    @abc.abstractmethod
    def move(self, moved: list[tuple[str, int, int, int]]) -> None:
        """(sha256, from pack, to pack, to offset): point rows at their copies."""

    @abc.abstractmethod
    def remove_pack_if_unused(self, pack: int, remove: Callable[[], None]) -> bool:
        """Call `remove` (inside the transaction) if no row names `pack`; whether it did."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def check(self) -> None:
        """Raise BlobStoreUnavailable if the index cannot be reached now."""


class SqliteBlobIndex(BlobIndex):
    """The index in one SQLite file; its write transactions are serial, so `claim`/`record` and
    `remove_unowned` never interleave. One process only (the data dir's lock sees to that)."""

    def __init__(self, path: Path) -> None:
        new_file = not path.exists() or path.stat().st_size == 0
        self._connections = ThreadConnections(path)
        self._conn = self._connections.get
        with self._connections.write() as conn:
            created = not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'blobs'").fetchone()
            conn.execute(
                "CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL,"
                " size INTEGER NOT NULL) WITHOUT ROWID"
            )
            # keyed by sha256 first: "does anyone hold this blob" is a prefix lookup, no second index
            conn.execute(
                "CREATE TABLE IF NOT EXISTS owners (sha256 TEXT NOT NULL, owner TEXT NOT NULL, renewed_at REAL NOT NULL,"
                " PRIMARY KEY (sha256, owner)) WITHOUT ROWID"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS flags (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")
            if created and new_file:  # a new store has nothing stored before owners existed
                conn.execute("INSERT OR IGNORE INTO flags VALUES ('owners_backfilled', '1'), ('modes_fixed', '1')")

    def stored(self, digests: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        conn = self._conn()
        for start in range(0, len(digests), _BATCH):
            part = digests[start : start + _BATCH]
            found.update(
                (r[0], r[1])
                for r in conn.execute(
                    f"SELECT sha256, size FROM blobs WHERE sha256 IN ({','.join('?' * len(part))})", part
                )
            )
        return found

    def location(self, sha256: str) -> BlobRow | None:
        row = self._conn().execute("SELECT pack, offset, size FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
        return BlobRow(sha256, row[0], row[1], row[2]) if row else None

    def locations(self, digests: list[str]) -> dict[str, BlobRow]:
        found: dict[str, BlobRow] = {}
        conn = self._conn()
        for start in range(0, len(digests), _BATCH):
            part = digests[start : start + _BATCH]
            found.update(
                (r[0], BlobRow(r[0], r[1], r[2], r[3]))
                for r in conn.execute(
                    f"SELECT sha256, pack, offset, size FROM blobs WHERE sha256 IN ({','.join('?' * len(part))})", part
                )
            )
        return found

    def record(self, owner: str, rows: list[BlobRow], owned: list[str], now: float) -> None:
        with self._connections.write() as conn:
            insert_rows(
                conn,
                "INSERT INTO blobs (sha256, pack, offset, size)",
                [(r.sha256, r.pack, r.offset, r.size) for r in rows],
                "ON CONFLICT DO NOTHING",
            )
            self._renew(conn, owner, owned, now)

    @staticmethod
    def _renew(conn: sqlite3.Connection, owner: str, digests: list[str], now: float) -> None:
        insert_rows(
            conn,
            "INSERT INTO owners (sha256, owner, renewed_at)",
            [(d, owner, now) for d in digests],
            "ON CONFLICT DO UPDATE SET renewed_at = excluded.renewed_at",
        )

    def claim(self, owner: str, digests: list[str], now: float) -> dict[str, int]:
        with self._connections.write() as conn:
            self._renew(conn, owner, digests, now)
            return self.stored(digests)  # the writer: it sees this transaction

    def acquire(self, owner: str, digests: list[str], now: float) -> dict[str, int | None]:
        held: dict[str, int | None] = {}
        with self._connections.write() as conn:
            for start in range(0, len(digests), _BATCH):
                part = digests[start : start + _BATCH]
                marks = ",".join("?" * len(part))
                conn.execute(
                    f"UPDATE owners SET renewed_at = ? WHERE owner = ? AND sha256 IN ({marks})", (now, owner, *part)
                )
                held.update(
                    (r[0], r[1])
                    for r in conn.execute(
                        f"SELECT o.sha256, b.size FROM owners o LEFT JOIN blobs b ON b.sha256 = o.sha256"
                        f" WHERE o.owner = ? AND o.sha256 IN ({marks})",
                        (owner, *part),
                    )
                )
        return held

    def add_owners(self, records: Iterable[tuple[str, str]], now: float) -> int:
        rows = [(sha256, owner, now) for owner, sha256 in records]
        with self._connections.write() as conn:
            before = conn.total_changes
            insert_rows(conn, "INSERT INTO owners (sha256, owner, renewed_at)", rows, "ON CONFLICT DO NOTHING")
            return conn.total_changes - before

    def flag(self, name: str) -> bool:
        return self._conn().execute("SELECT 1 FROM flags WHERE name = ?", (name,)).fetchone() is not None

    def set_flag(self, name: str) -> None:
        with self._connections.write() as conn:
            conn.execute("INSERT OR IGNORE INTO flags VALUES (?, '1')", (name,))

    def stale_owners(self, after: tuple[str, str], cutoff: float, limit: int) -> list[tuple[str, str]]:
        return [
            (r[0], r[1])
            for r in self._conn().execute(
                "SELECT sha256, owner FROM owners WHERE (sha256, owner) > (?, ?) AND renewed_at < ?"
                " ORDER BY sha256, owner LIMIT ?",
                (*after, cutoff, limit),
            )
        ]

    def release_owners(self, records: list[tuple[str, str]], cutoff: float) -> int:
        with self._connections.write() as conn:  # renewed meanwhile: kept (renewed_at < cutoff again)
            before = conn.total_changes
            conn.executemany(
                "DELETE FROM owners WHERE sha256 = ? AND owner = ? AND renewed_at < ?",
                [(sha256, owner, cutoff) for sha256, owner in records],
            )
            return conn.total_changes - before

    def unowned_rows(self) -> list[tuple[str, int]]:
        return [
            (r[0], r[1])
            for r in self._conn().execute(
                "SELECT sha256, size FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM owners o WHERE o.sha256 = b.sha256)"
            )
        ]

    def remove_unowned(
        self, digests: list[str], keep: Callable[[str], bool], delete_bytes: Callable[[list[str]], None]
    ) -> list[str]:
        removed: list[str] = []
        with self._connections.write() as conn:
            for start in range(0, len(digests), _BATCH):
                part = digests[start : start + _BATCH]
                held = {
                    r[0]
                    for r in conn.execute(
                        f"SELECT DISTINCT sha256 FROM owners WHERE sha256 IN ({','.join('?' * len(part))})", part
                    )
                }
                removed.extend(d for d in part if d not in held and not keep(d))
            conn.executemany("DELETE FROM blobs WHERE sha256 = ?", [(d,) for d in removed])
            if removed:
                delete_bytes(removed)
        return removed

    def live_bytes(self, pack: int) -> int:
        row = self._conn().execute("SELECT COALESCE(SUM(size), 0) FROM blobs WHERE pack = ?", (pack,)).fetchone()
        return int(row[0])

    def pack_rows(self, pack: int) -> list[BlobRow]:
        return [
            BlobRow(r[0], pack, r[1], r[2])
            for r in self._conn().execute(
                "SELECT sha256, offset, size FROM blobs WHERE pack = ? ORDER BY offset", (pack,)
            )
        ]

    def move(self, moved: list[tuple[str, int, int, int]]) -> None:
        with self._connections.write() as conn:
            conn.executemany(
                "UPDATE blobs SET pack = ?, offset = ? WHERE sha256 = ? AND pack = ?",
                [(to_pack, to_offset, sha256, from_pack) for sha256, from_pack, to_pack, to_offset in moved],
            )

    def remove_pack_if_unused(self, pack: int, remove: Callable[[], None]) -> bool:
        with self._connections.write() as conn:
            if conn.execute("SELECT 1 FROM blobs WHERE pack = ? LIMIT 1", (pack,)).fetchone():
                return False
            remove()
            return True

    def check(self) -> None:
        try:
            self._conn().execute("SELECT 1 FROM flags LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise BlobStoreUnavailable(f"the blob index {self._connections.path} cannot be read: {exc}") from exc

    def close(self) -> None:
        self._connections.close()
