"""PostgresBlobIndex: the blob index and owner records in PostgreSQL, shared by server replicas.

Its tables (`blob_rows`, `blob_owners`, `blob_flags`) sit beside the metadata store's in the same
database, under their own migration counter (`blob_index_migrations`). psycopg 3 with a pool.

Replicas store and collect the same blobs at once, so the guarantee blob_index.py states
(a collection never deletes a blob a put is storing again) is kept with transaction-scoped
advisory locks, one per digest: `claim` takes them shared, `remove_unowned` exclusive, both
in digest order (no deadlocks). A collection holding the lock re-reads the owners after it
has it, so it sees every claim that committed before; a claim that comes after waits for
the collection to commit (bytes deleted), then finds no row and stores the bytes again.
Locks rather than row locks because a digest may have no row yet (an object a crashed
replica uploaded before indexing it) and must still be ordered against a put.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from pellucid.server.storage.blob_index import BlobIndex, BlobRow, BlobStoreUnavailable

CONNECT_TIMEOUT_SECONDS = 10.0
PROBE_TIMEOUT_SECONDS = 2.0  # a health probe waits this long for a connection
_MIGRATIONS = [
    # 1: rows, owners, flags
    """
    CREATE TABLE blob_rows (sha256 TEXT PRIMARY KEY, pack INTEGER NOT NULL, "offset" BIGINT NOT NULL,
        size BIGINT NOT NULL);
    CREATE TABLE blob_owners (sha256 TEXT NOT NULL, owner TEXT NOT NULL, renewed_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (sha256, owner));
    CREATE INDEX blob_owners_by_owner ON blob_owners (owner, sha256);
    CREATE TABLE blob_flags (name TEXT PRIMARY KEY);
    INSERT INTO blob_flags VALUES ('owners_backfilled'), ('modes_fixed');
    """,
]
# a digest's advisory lock key: its first 64 bits (collisions only make two digests share a lock)
_LOCK_KEYS = (
    "SELECT {function}(k) FROM (SELECT DISTINCT ('x' || substr(d, 1, 16))::bit(64)::bigint AS k"
    " FROM unnest(%s::text[]) AS d ORDER BY k) AS keys"
)


class PostgresBlobIndex(BlobIndex):
    def __init__(self, uri: str, pool_max_size: int = 8) -> None:
        self._pool = ConnectionPool(
            uri,
            min_size=1,
            max_size=pool_max_size,
            kwargs={"autocommit": True},
            open=False,
            name="pellucid-blob-index",
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except PoolTimeout:
            self._pool.close()
            raise ConnectionError(
                f"cannot connect to PostgreSQL for the blob index within {CONNECT_TIMEOUT_SECONDS:.0f} s:"
                " check that it runs, and the URI"
            ) from None
        try:
            self._migrate()
        except BaseException:
            self._pool.close()
            raise

    def _migrate(self) -> None:
        with self._transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('pellucid blob index migrations'))")
            conn.execute("CREATE TABLE IF NOT EXISTS blob_index_migrations (version INTEGER PRIMARY KEY)")
            row = conn.execute("SELECT max(version) FROM blob_index_migrations").fetchone()
            done = row[0] if row and row[0] is not None else 0
            for version, script in enumerate(_MIGRATIONS, start=1):
                if version > done:
                    conn.execute(script.encode())
                    conn.execute("INSERT INTO blob_index_migrations VALUES (%s)", (version,))

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self._reaching(), self._pool.connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection[Any]]:
        with self._reaching(), self._pool.connection() as conn:
            yield conn

    @staticmethod
    @contextmanager
    def _reaching() -> Iterator[None]:
        """A database that is down or unreachable: BlobStoreUnavailable (the call may be retried)."""
        try:
            yield
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise BlobStoreUnavailable(f"the blob index in PostgreSQL is unavailable: {exc}") from exc

    def stored(self, digests: list[str]) -> dict[str, int]:
        if not digests:
            return {}
        with self._read() as conn:
            rows = conn.execute("SELECT sha256, size FROM blob_rows WHERE sha256 = ANY(%s)", (digests,))
            return {r[0]: r[1] for r in rows}

    def location(self, sha256: str) -> BlobRow | None:
        with self._read() as conn:
            row = conn.execute('SELECT pack, "offset", size FROM blob_rows WHERE sha256 = %s', (sha256,)).fetchone()
        return BlobRow(sha256, row[0], row[1], row[2]) if row else None

    def locations(self, digests: list[str]) -> dict[str, BlobRow]:
        if not digests:
            return {}
        with self._read() as conn:
            rows = conn.execute(
                'SELECT sha256, pack, "offset", size FROM blob_rows WHERE sha256 = ANY(%s)', (digests,)
            ).fetchall()
        return {r[0]: BlobRow(r[0], r[1], r[2], r[3]) for r in rows}

    @staticmethod
    def _renew(conn: psycopg.Connection[Any], owner: str, digests: list[str], now: float) -> None:
        if digests:  # in key order: two transactions upserting the same records never deadlock
            conn.execute(
                "INSERT INTO blob_owners (sha256, owner, renewed_at) SELECT d, %s, %s FROM unnest(%s::text[]) AS d"
                " ORDER BY d ON CONFLICT (sha256, owner) DO UPDATE SET renewed_at = excluded.renewed_at",
                (owner, now, sorted(set(digests))),
            )

    def record(self, owner: str, rows: list[BlobRow], owned: list[str], now: float) -> None:
        with self._transaction() as conn:
            if rows:
                ordered = sorted({r.sha256: r for r in rows}.values(), key=lambda r: r.sha256)
                conn.execute(
                    'INSERT INTO blob_rows (sha256, pack, "offset", size)'
                    " SELECT * FROM unnest(%s::text[], %s::integer[], %s::bigint[], %s::bigint[])"
                    " ON CONFLICT DO NOTHING",
                    (
                        [r.sha256 for r in ordered],
                        [r.pack for r in ordered],
                        [r.offset for r in ordered],
                        [r.size for r in ordered],
                    ),
                )
            self._renew(conn, owner, owned, now)

    def claim(self, owner: str, digests: list[str], now: float) -> dict[str, int]:
        if not digests:
            return {}
        with self._transaction() as conn:
            conn.execute(_LOCK_KEYS.format(function="pg_advisory_xact_lock_shared").encode(), (digests,))
            self._renew(conn, owner, digests, now)
            rows = conn.execute("SELECT sha256, size FROM blob_rows WHERE sha256 = ANY(%s)", (digests,))
            return {r[0]: r[1] for r in rows}

    def acquire(self, owner: str, digests: list[str], now: float) -> dict[str, int | None]:
        if not digests:
            return {}
        with self._transaction() as conn:
            conn.execute(
                "UPDATE blob_owners SET renewed_at = %s WHERE owner = %s AND sha256 = ANY(%s)", (now, owner, digests)
            )
            rows = conn.execute(
                "SELECT o.sha256, b.size FROM blob_owners o LEFT JOIN blob_rows b ON b.sha256 = o.sha256"
                " WHERE o.owner = %s AND o.sha256 = ANY(%s)",
                (owner, digests),
            )
            return {r[0]: r[1] for r in rows}

    def add_owners(self, records: Iterable[tuple[str, str]], now: float) -> int:
        pairs = sorted({(sha256, owner) for owner, sha256 in records})
        if not pairs:
            return 0
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO blob_owners (sha256, owner, renewed_at)"
                " SELECT s, o, %s FROM unnest(%s::text[], %s::text[]) AS r(s, o) ON CONFLICT DO NOTHING",
                (now, [p[0] for p in pairs], [p[1] for p in pairs]),
            )
            return cursor.rowcount

    def flag(self, name: str) -> bool:
        with self._read() as conn:
            return conn.execute("SELECT 1 FROM blob_flags WHERE name = %s", (name,)).fetchone() is not None

    def set_flag(self, name: str) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT INTO blob_flags VALUES (%s) ON CONFLICT DO NOTHING", (name,))

    def stale_owners(self, after: tuple[str, str], cutoff: float, limit: int) -> list[tuple[str, str]]:
        with self._read() as conn:
            rows = conn.execute(
                'SELECT sha256, owner FROM blob_owners WHERE (sha256, owner) > (%s COLLATE "C", %s COLLATE "C")'
                ' AND renewed_at < %s ORDER BY sha256 COLLATE "C", owner COLLATE "C" LIMIT %s',
                (*after, cutoff, limit),
            )
            return [(r[0], r[1]) for r in rows]

    def release_owners(self, records: list[tuple[str, str]], cutoff: float) -> int:
        if not records:
            return 0
        with self._transaction() as conn:  # renewed meanwhile: kept (renewed_at < cutoff again)
            cursor = conn.execute(
                "DELETE FROM blob_owners o USING unnest(%s::text[], %s::text[]) AS r(s, w)"
                " WHERE o.sha256 = r.s AND o.owner = r.w AND o.renewed_at < %s",
                ([r[0] for r in records], [r[1] for r in records], cutoff),
            )
            return cursor.rowcount

    def unowned_rows(self) -> list[tuple[str, int]]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT sha256, size FROM blob_rows b"
                " WHERE NOT EXISTS (SELECT 1 FROM blob_owners o WHERE o.sha256 = b.sha256)"
            )
            return [(r[0], r[1]) for r in rows]

    def remove_unowned(
        self, digests: list[str], keep: Callable[[str], bool], delete_bytes: Callable[[list[str]], None]
    ) -> list[str]:
        if not digests:
            return []
        with self._transaction() as conn:
            conn.execute(_LOCK_KEYS.format(function="pg_advisory_xact_lock").encode(), (digests,))
            # a statement after the locks: it sees every claim that committed before them
            held = {
                r[0] for r in conn.execute("SELECT DISTINCT sha256 FROM blob_owners WHERE sha256 = ANY(%s)", (digests,))
            }
            removed = [d for d in dict.fromkeys(digests) if d not in held and not keep(d)]
            if removed:
                conn.execute("DELETE FROM blob_rows WHERE sha256 = ANY(%s)", (removed,))
                delete_bytes(removed)
        return removed

    # packs: a shared index serves object stores only, which have none

    def live_bytes(self, pack: int) -> int:
        with self._read() as conn:
            row = conn.execute("SELECT COALESCE(sum(size), 0) FROM blob_rows WHERE pack = %s", (pack,)).fetchone()
            return int(row[0]) if row else 0

    def pack_rows(self, pack: int) -> list[BlobRow]:
        with self._read() as conn:
            rows = conn.execute(
                'SELECT sha256, "offset", size FROM blob_rows WHERE pack = %s ORDER BY "offset"', (pack,)
            )
            return [BlobRow(r[0], pack, r[1], r[2]) for r in rows]

    def move(self, moved: list[tuple[str, int, int, int]]) -> None:
        with self._transaction() as conn, conn.cursor() as cursor:
            cursor.executemany(
                'UPDATE blob_rows SET pack = %s, "offset" = %s WHERE sha256 = %s AND pack = %s',
                [(to_pack, to_offset, sha256, from_pack) for sha256, from_pack, to_pack, to_offset in moved],
            )

    def remove_pack_if_unused(self, pack: int, remove: Callable[[], None]) -> bool:
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM blob_rows WHERE pack = %s LIMIT 1", (pack,)).fetchone():
                return False
            remove()
            return True

    def check(self) -> None:
        """One cheap query, after replacing idle connections that broke (see PoolConnections.probe)."""
        self._pool.check()
        with self._reaching(), self._pool.connection(timeout=PROBE_TIMEOUT_SECONDS) as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        self._pool.close()
