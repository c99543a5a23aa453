"""The PostgreSQL WorkQueue (`postgresql://...`): one queue shared by every server replica.

pgmq's semantics, written out for pellucid's items (owner, selector labels, attempts, first
result wins) rather than installed as pgmq: pgmq's `read` has no selector, no per-attempt end
and no first-result-wins answer, and a round trip per call is what the latency target needs
(docs/scale-out.md, "Work queue").

- `queue_items` holds every item until its caller forgets it. `claim` is one
  `UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n)`: replicas claiming at once
  never block on or take the same row. An item is claimable while it is pending, or leased
  with its visibility deadline (`lease_until`) passed and attempts left; `extend` (heartbeats)
  moves `lease_until` forward, never past `attempt_ends` (the attempt's hard end).
- `complete`, `cancel` and `expire` are conditional UPDATEs on unfinished rows (the first
  result wins), each with a `pg_notify` in the same statement: replicas LISTEN on one channel,
  so a caller waiting on replica B wakes when a runner on replica A answers, and streams on
  every replica hear of new items. A poll every `poll_seconds` is the fallback for a lost
  notification (a listener connection that dropped and came back).
- `queue_workers` lists every replica's runner streams (runner connection counts, "is anyone
  serving these labels"), each row kept alive by its replica; a replica that dies stops
  renewing them and they drop out of `workers` after `WORKER_TTL_SECONDS`, while the items
  it had leased become claimable when their leases lapse.

Times are on the queue's clock (injectable, like the memory queue's), passed into the SQL,
never PostgreSQL's `now()`. The queue's sessions commit asynchronously (`_configure`).
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from pellucid.server.storage.base import StoreUnavailable
from pellucid.server.storage.postgres_connections import CONNECT_TIMEOUT_SECONDS, redacted, split_pool_parameters
from pellucid.server.storage.queue import (
    EventKind,
    ItemState,
    Lease,
    NewItem,
    Outcome,
    QueueEvent,
    UnknownItem,
    Worker,
    WorkQueue,
)

log = logging.getLogger(__name__)

CHANNEL = "pellucid_queue"
WORKER_TTL_SECONDS = 10.0  # a worker row not renewed this long belongs to a replica that died
ABANDONED_SECONDS = 300.0  # a finished row this long past its deadline lost its caller (its replica died)
POLL_SECONDS = 0.5  # the fallback behind LISTEN/NOTIFY
_SEPARATOR = "\x1f"
_UNFINISHED = ("pending", "leased")

_MIGRATIONS = [
    # 1: items and workers
    """
    CREATE SEQUENCE queue_line;
    CREATE TABLE queue_items (
        id TEXT PRIMARY KEY,
        line BIGINT NOT NULL DEFAULT nextval('queue_line'),
        owner TEXT NOT NULL,
        selector TEXT[] NOT NULL,
        payload BYTEA NOT NULL,
        deadline DOUBLE PRECISION NOT NULL,
        run_seconds DOUBLE PRECISION NOT NULL,
        max_attempts INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        worker_id TEXT NOT NULL DEFAULT '',
        runner_id TEXT NOT NULL DEFAULT '',
        lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        attempt_ends DOUBLE PRECISION NOT NULL DEFAULT 0,
        result BYTEA NOT NULL DEFAULT '',
        message TEXT NOT NULL DEFAULT '',
        enqueued_by TEXT NOT NULL
    );
    CREATE INDEX queue_items_claimable ON queue_items (owner, line) WHERE state IN ('pending', 'leased');
    CREATE INDEX queue_items_leases ON queue_items (lease_until) WHERE state = 'leased';
    CREATE INDEX queue_items_deadlines ON queue_items (deadline);
    CREATE INDEX queue_items_by_worker ON queue_items (worker_id) WHERE state = 'leased';
    CREATE TABLE queue_workers (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        runner_id TEXT NOT NULL,
        labels TEXT[] NOT NULL,
        capacity INTEGER NOT NULL,
        instance TEXT NOT NULL,
        alive_until DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX queue_workers_by_owner ON queue_workers (owner);
    """,
]

_OUTCOME_COLUMNS = "id, state, result, worker_id, runner_id, attempts, message, owner, enqueued_by"
# What a notification carries, fields joined by chr(31): kind (E: claimable, F: finished), item id,
# owner, the sending replica, then for F the outcome (state, worker, runner, attempts, the result
# in base64 when it fits in a notification, else "-") and, last, the message (may hold anything).
RESULT_IN_NOTIFICATION_BYTES = 4000  # notifications hold at most 8000 bytes
_FINISHED_PAYLOAD = (
    "concat_ws(chr(31), 'F', id, owner, %(instance)s::text, state, worker_id, runner_id, attempts::text,"
    " CASE WHEN octet_length(result) <= " + str(RESULT_IN_NOTIFICATION_BYTES) + " THEN encode(result, 'base64')"
    " ELSE '-' END, left(message, 200))"
)
_ENQUEUED_PAYLOAD = "concat_ws(chr(31), 'E', id, owner, %(instance)s::text)"
# a finishing UPDATE's rows, each told to the other replicas (the listener skips its own)
_NOTIFY_FINISHED = (
    "WITH done AS ({update} RETURNING " + _OUTCOME_COLUMNS + ")"
    " SELECT done.*, pg_notify('" + CHANNEL + "', " + _FINISHED_PAYLOAD + ") FROM done"
)
_NOTIFY_ENQUEUED = (
    "WITH back AS ({update} RETURNING id, owner)"
    " SELECT back.id, back.owner, pg_notify('" + CHANNEL + "', " + _ENQUEUED_PAYLOAD + ") FROM back"
)
_FAILED_MESSAGE = "'not answered in ' || attempts || ' attempts (each runner that took it stopped or ran out of time)'"
# an item its holder let go of (or whose lease lapsed): claimable again at the front, or failed
_LET_GO = (
    "state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'pending' END,"
    " message = CASE WHEN attempts >= max_attempts THEN " + _FAILED_MESSAGE + " ELSE '' END,"
    " lease_until = 0, line = -nextval('queue_line')"
)

_LAPSED = "state = 'leased' AND lease_until <= %(now)s"
_EXPIRE = (
    "WITH failed AS (UPDATE queue_items SET state = 'failed', message = " + _FAILED_MESSAGE + ", lease_until = 0"
    " WHERE " + _LAPSED + " AND attempts >= max_attempts RETURNING " + _OUTCOME_COLUMNS + "),"
    " expired AS (UPDATE queue_items SET state = 'expired', message = 'its deadline passed'"
    " WHERE state IN ('pending', 'leased') AND deadline <= %(now)s"
    " AND NOT (" + _LAPSED + " AND attempts >= max_attempts) RETURNING " + _OUTCOME_COLUMNS + "),"
    " back AS (UPDATE queue_items SET state = 'pending', lease_until = 0, line = -nextval('queue_line')"
    " WHERE " + _LAPSED + " AND attempts < max_attempts AND deadline > %(now)s RETURNING id, owner),"
    " finished AS (SELECT * FROM failed UNION ALL SELECT * FROM expired)"
    " SELECT 'F', finished.*, pg_notify('" + CHANNEL + "', " + _FINISHED_PAYLOAD + ") FROM finished"
    " UNION ALL SELECT 'E', id, 'pending', ''::bytea, '', '', 0, '', owner, '',"
    " pg_notify('" + CHANNEL + "', " + _ENQUEUED_PAYLOAD + ") FROM back"
)


@dataclass(eq=False)
class _Watch:
    """An item a caller of this replica waits for: its outcome once known, and who to tell."""

    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None
    callbacks: list[Callable[[Outcome], None]] = field(default_factory=list)


def _configure(conn: psycopg.Connection[Any]) -> None:
    """The queue's sessions commit without waiting for the WAL flush: a predict makes three
    commits, and an item's rows live seconds. What a PostgreSQL crash can lose (its last
    fraction of a second) the queue recovers from: a lost answer is a lease that lapses and
    runs again, a lost item a caller that retries (docs/scale-out.md, "Work queue")."""
    conn.execute("SET synchronous_commit = off")


def _outcome(row: tuple[Any, ...]) -> Outcome:
    return Outcome(row[0], ItemState(row[1]), bytes(row[2]), row[3], row[4], row[5], row[6])


class PostgresWorkQueue(WorkQueue):
    def __init__(self, uri: str, clock: Callable[[], float] = time.time, poll_seconds: float = POLL_SECONDS) -> None:
        conninfo, min_size, max_size = split_pool_parameters(uri)
        self._conninfo = conninfo
        self.description = redacted(conninfo)
        self._clock = clock
        self._poll_seconds = self.poll_seconds = poll_seconds
        self.instance = os.urandom(8).hex()  # this replica's queue: its notifications and items
        self._pool = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True},
            open=False,
            name="pellucid-queue",
            timeout=CONNECT_TIMEOUT_SECONDS * 3,
            configure=_configure,
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except PoolTimeout:
            self._pool.close()
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL for the work queue at {self.description} within"
                f" {CONNECT_TIMEOUT_SECONDS:.0f} s: check that it runs, and the URI"
            ) from None
        try:
            self._migrate()
        except BaseException:
            self._pool.close()
            raise
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        self._forgotten: set[str] = set()  # rows to delete in the next batch
        self._workers: dict[str, Worker] = {}  # the workers registered through this replica
        self._listeners: list[Callable[[QueueEvent], None]] = []
        self._closed = False
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._listener = threading.Thread(target=self._listen, name="pellucid-queue-listener", daemon=True)
        self._listener.start()
        self._listening.wait(CONNECT_TIMEOUT_SECONDS)

    def _migrate(self) -> None:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('pellucid work queue migrations'))")
            conn.execute("CREATE TABLE IF NOT EXISTS queue_migrations (version INTEGER PRIMARY KEY)")
            row = conn.execute("SELECT max(version) FROM queue_migrations").fetchone()
            done = row[0] if row and row[0] is not None else 0
            for version, script in enumerate(_MIGRATIONS, start=1):
                if version > done:
                    conn.execute(script.encode())
                    conn.execute("INSERT INTO queue_migrations VALUES (%s)", (version,))

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; the database down or unreachable is StoreUnavailable (retryable)."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(f"the work queue in PostgreSQL at {self.description} is unavailable: {exc}") from exc

    def _rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        with self._conn() as conn:
            return conn.execute(sql.encode(), {"instance": self.instance, **params}).fetchall()

    # callers

    def enqueue(self, item: NewItem) -> str:
        item_id = os.urandom(16).hex()
        watch = _Watch()
        with self._lock:
            closed = self._closed
            self._watches[item_id] = watch
        if closed:
            self._resolve([Outcome(item_id, ItemState.CANCELLED, message="the queue is closed")])
            return item_id
        try:
            self._insert(item_id, item)
        except BaseException:
            with self._lock:
                self._watches.pop(item_id, None)
            raise
        self._emit([QueueEvent(EventKind.ENQUEUED, item_id, item.owner)])
        return item_id

    def _insert(self, item_id: str, item: NewItem) -> None:
        self._rows(
            "WITH i AS (INSERT INTO queue_items (id, owner, selector, payload, deadline, run_seconds, max_attempts,"
            " enqueued_by) VALUES (%(id)s, %(owner)s, %(selector)s, %(payload)s, %(deadline)s, %(run)s,"
            " %(max)s, %(instance)s) RETURNING id)"
            " SELECT pg_notify('" + CHANNEL + "', concat_ws(chr(31), 'E', id, %(owner)s::text, %(instance)s::text))"
            " FROM i",
            {
                "id": item_id,
                "owner": item.owner,
                "selector": sorted(item.selector),
                "payload": item.payload,
                "deadline": item.deadline,
                "run": item.run_seconds,
                "max": item.max_attempts,
            },
        )

    def cancel(self, item_id: str, reason: str) -> bool:
        with self._lock:  # finished as far as this replica knows (every predict's end): no round trip
            watch = self._watches.get(item_id)
            if item_id in self._forgotten or (watch is not None and watch.outcome is not None):
                return False
        rows = self._finish(
            "UPDATE queue_items SET state = 'cancelled', message = %(reason)s"
            " WHERE id = %(id)s AND state IN ('pending', 'leased')",
            {"id": item_id, "reason": reason},
        )
        return bool(rows)

    def wait(self, item_id: str, timeout: float) -> Outcome | None:
        watch = self._watch(item_id)
        ends = time.monotonic() + max(timeout, 0.0)
        while True:
            if watch.done.wait(min(max(ends - time.monotonic(), 0.0), self._poll_seconds)):
                return watch.outcome
            outcome = self._read_outcome(item_id)  # the fallback for a notification lost
            if outcome is not None:
                self._resolve([outcome])
                return outcome
            if time.monotonic() >= ends:
                return None

    def on_finished(self, item_id: str, callback: Callable[[Outcome], None]) -> None:
        watch = self._watch(item_id)
        with self._lock:
            if watch.outcome is None:
                watch.callbacks.append(callback)
                pending = True
            else:
                pending = False
        if not pending:
            assert watch.outcome is not None
            callback(watch.outcome)
            return
        outcome = self._read_outcome(item_id)  # finished before the callback was in place?
        if outcome is not None:
            self._resolve([outcome])

    def forget(self, item_id: str) -> None:
        """The row goes in the listener's next batch (off the caller's path); this replica
        treats it as gone at once."""
        with self._lock:
            watch = self._watches.get(item_id)
            if watch is not None and watch.outcome is not None:
                del self._watches[item_id]
                self._forgotten.add(item_id)
        if watch is None and not self._closed:  # not watched here: at once (an unfinished row stays)
            self._execute(
                "DELETE FROM queue_items WHERE id = %(id)s AND state NOT IN ('pending', 'leased')", {"id": item_id}
            )

    # workers

    def register_worker(self, worker: Worker) -> None:
        with self._lock:
            self._workers[worker.id] = worker
        self._execute(
            "INSERT INTO queue_workers (id, owner, runner_id, labels, capacity, instance, alive_until)"
            " VALUES (%(id)s, %(owner)s, %(runner)s, %(labels)s, %(capacity)s, %(instance)s, %(alive)s)"
            " ON CONFLICT (id) DO UPDATE SET alive_until = excluded.alive_until",
            {
                "id": worker.id,
                "owner": worker.owner,
                "runner": worker.runner_id,
                "labels": sorted(worker.labels),
                "capacity": worker.capacity,
                "alive": self._clock() + WORKER_TTL_SECONDS,
            },
        )

    def unregister_worker(self, worker_id: str) -> list[str]:
        with self._lock:
            self._workers.pop(worker_id, None)
        self._execute("DELETE FROM queue_workers WHERE id = %(id)s", {"id": worker_id})
        return sorted(self._let_go("worker_id = %(worker)s", {"worker": worker_id}))

    def workers(self, owner: str) -> list[Worker]:
        rows = self._rows(
            "SELECT id, owner, runner_id, labels, capacity FROM queue_workers"
            " WHERE owner = %(owner)s AND alive_until > %(now)s ORDER BY id",
            {"owner": owner, "now": self._clock()},
        )
        return [Worker(r[0], r[1], r[2], frozenset(r[3]), r[4]) for r in rows]

    def claim(self, worker_id: str, limit: int, visibility_seconds: float) -> list[Lease]:
        worker = self._workers.get(worker_id) or self._stored_worker(worker_id)
        if worker is None or limit <= 0:
            return []
        now = self._clock()
        rows = self._rows(
            "UPDATE queue_items q SET state = 'leased', worker_id = %(worker)s, runner_id = %(runner)s,"
            " attempts = q.attempts + 1, attempt_ends = %(now)s + q.run_seconds,"
            " lease_until = LEAST(%(now)s + %(visibility)s, %(now)s + q.run_seconds)"
            " FROM (SELECT id FROM queue_items WHERE owner = %(owner)s AND selector <@ %(labels)s"
            " AND state IN ('pending', 'leased') AND deadline > %(now)s"
            " AND (state = 'pending' OR (lease_until <= %(now)s AND attempts < max_attempts))"
            " ORDER BY line LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS picked"
            " WHERE q.id = picked.id"
            " RETURNING q.id, q.payload, q.lease_until, q.attempt_ends, q.attempts, q.line",
            {
                "worker": worker.id,
                "runner": worker.runner_id,
                "owner": worker.owner,
                "labels": sorted(worker.labels),
                "now": now,
                "visibility": visibility_seconds,
                "limit": limit,
            },
        )
        rows.sort(key=lambda r: r[5])
        return [Lease(r[0], bytes(r[1]), r[2], r[3], r[4], now) for r in rows]

    def extend(self, worker_id: str, item_ids: Iterable[str], visibility_seconds: float) -> frozenset[str]:
        ids = list(item_ids)
        if not ids:
            return frozenset()
        rows = self._rows(
            "UPDATE queue_items SET lease_until = GREATEST(lease_until, LEAST(%(now)s + %(visibility)s, attempt_ends))"
            " WHERE id = ANY(%(ids)s) AND worker_id = %(worker)s AND state = 'leased' AND lease_until > %(now)s"
            " RETURNING id",
            {"ids": ids, "worker": worker_id, "now": self._clock(), "visibility": visibility_seconds},
        )
        return frozenset(r[0] for r in rows)

    def release(self, worker_id: str, item_ids: Iterable[str]) -> None:
        ids = list(item_ids)
        if ids:
            self._let_go("worker_id = %(worker)s AND id = ANY(%(ids)s)", {"worker": worker_id, "ids": ids})

    def complete(self, item_id: str, worker_id: str, result: bytes) -> bool:
        worker = self._workers.get(worker_id)
        rows = self._finish(
            "UPDATE queue_items SET state = 'succeeded', result = %(result)s, worker_id = %(worker)s,"
            " runner_id = COALESCE(%(runner)s, (SELECT runner_id FROM queue_workers WHERE id = %(worker)s),"
            " runner_id), message = '' WHERE id = %(id)s AND state IN ('pending', 'leased')",
            {
                "id": item_id,
                "worker": worker_id,
                "result": result,
                "runner": worker.runner_id if worker is not None else None,
            },
        )
        return bool(rows)

    # upkeep and notifications

    def expire(self) -> list[Outcome]:
        """One statement (a round trip per sweep, whichever replica runs it): lapsed leases
        with no attempts left fail, items past their deadline expire, other lapsed leases go
        back to the front of the line; each row is told to every replica."""
        rows = self._rows(_EXPIRE, {"now": self._clock()})
        finished = [r[1:] for r in rows if r[0] == "F"]
        outcomes = [_outcome(r) for r in finished]
        self._emit(
            [
                QueueEvent(EventKind.FINISHED, o.item_id, r[7], "", o.message)
                for o, r in zip(outcomes, finished, strict=True)
            ]
            + [QueueEvent(EventKind.ENQUEUED, r[1], r[8]) for r in rows if r[0] == "E"]
        )
        self._resolve(outcomes)
        return outcomes

    def subscribe(self, listener: Callable[[QueueEvent], None]) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def close(self, reason: str = "the server is stopping") -> None:
        """Cancel the items this replica's callers wait for and drop its workers (their leases
        go back at once); another replica's items and workers are not touched."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self._workers)
            self._workers.clear()
        try:
            self._finish(
                "UPDATE queue_items SET state = 'cancelled', message = %(reason)s"
                " WHERE enqueued_by = %(instance)s AND state IN ('pending', 'leased')",
                {"reason": reason},
            )
            self._delete_forgotten()
            if workers:
                self._execute("DELETE FROM queue_workers WHERE id = ANY(%(ids)s)", {"ids": workers})
                self._let_go("worker_id = ANY(%(ids)s) AND state = 'leased'", {"ids": workers})
        except StoreUnavailable as exc:  # its items expire and its leases lapse without it
            log.warning("closing the work queue: %s", exc)
        finally:
            self._stop.set()
            try:
                self._execute("SELECT pg_notify('" + CHANNEL + "', %(instance)s)", {})  # wakes the listener
            except (psycopg.Error, StoreUnavailable):
                pass  # it wakes by itself within poll_seconds
            self._listener.join(CONNECT_TIMEOUT_SECONDS)
            self._pool.close()

    # internals

    def _execute(self, sql: str, params: dict[str, Any]) -> None:
        with self._conn() as conn:
            conn.execute(sql.encode(), {"instance": self.instance, **params})

    def _stored_worker(self, worker_id: str) -> Worker | None:
        rows = self._rows(
            "SELECT id, owner, runner_id, labels, capacity FROM queue_workers WHERE id = %(id)s", {"id": worker_id}
        )
        return Worker(rows[0][0], rows[0][1], rows[0][2], frozenset(rows[0][3]), rows[0][4]) if rows else None

    def _finish(self, update: str, params: dict[str, Any]) -> list[Outcome]:
        """Run a finishing UPDATE; tell listeners and waiters of the rows it finished."""
        rows = self._rows(_NOTIFY_FINISHED.format(update=update), params)
        outcomes = [_outcome(r) for r in rows]
        events = [
            QueueEvent(
                EventKind.FINISHED, o.item_id, r[7], o.worker_id if o.state is ItemState.SUCCEEDED else "", o.message
            )
            for o, r in zip(outcomes, rows, strict=True)
        ]
        self._emit(events)
        self._resolve(outcomes)
        return outcomes

    def _let_go(self, where: str, params: dict[str, Any]) -> list[str]:
        """Leased items back to the front of the line (or failed, out of attempts); their ids."""
        rows = self._rows(
            _NOTIFY_FINISHED.format(
                update="UPDATE queue_items SET "
                + _LET_GO
                + " WHERE state = 'leased' AND attempts >= max_attempts AND "
                + where
            ),
            params,
        )
        failed = [_outcome(r) for r in rows]
        back = self._rows(
            _NOTIFY_ENQUEUED.format(
                update="UPDATE queue_items SET " + _LET_GO + " WHERE state = 'leased' AND " + where
            ),
            params,
        )
        self._emit(
            [QueueEvent(EventKind.FINISHED, o.item_id, r[7], "", o.message) for o, r in zip(failed, rows, strict=True)]
            + [QueueEvent(EventKind.ENQUEUED, r[0], r[1]) for r in back]
        )
        self._resolve(failed)
        return [o.item_id for o in failed] + [r[0] for r in back]

    def _read_outcome(self, item_id: str) -> Outcome | None:
        rows = self._rows(f"SELECT {_OUTCOME_COLUMNS} FROM queue_items WHERE id = %(id)s", {"id": item_id})
        if not rows:
            with self._lock:
                watch = self._watches.get(item_id)
            if watch is not None and watch.outcome is not None:
                return watch.outcome
            raise UnknownItem(item_id)
        return _outcome(rows[0]) if rows[0][1] not in _UNFINISHED else None

    def _watch(self, item_id: str) -> _Watch:
        with self._lock:
            if item_id in self._forgotten:
                raise UnknownItem(item_id)
            watch = self._watches.get(item_id)
        if watch is not None:
            return watch
        outcome = self._read_outcome(item_id)  # UnknownItem if there is no such item
        with self._lock:
            watch = self._watches.setdefault(item_id, _Watch())
            if outcome is not None and watch.outcome is None:
                watch.outcome = outcome
                watch.done.set()
        return watch

    def _resolve(self, outcomes: list[Outcome]) -> None:
        """Finished items: wake their waiters and call their callbacks (once each)."""
        calls: list[tuple[Callable[[Outcome], None], Outcome]] = []
        with self._lock:
            for outcome in outcomes:
                watch = self._watches.get(outcome.item_id)
                if watch is None or watch.outcome is not None:
                    continue
                watch.outcome = outcome
                watch.done.set()
                calls.extend((callback, outcome) for callback in watch.callbacks)
                watch.callbacks = []
        for callback, outcome in calls:
            callback(outcome)

    def _emit(self, events: list[QueueEvent]) -> None:
        if not events:
            return
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            for event in events:
                listener(event)

    # the listener thread: other replicas' notifications, and the fallback poll

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}".encode())
                    self._listening.set()
                    self._catch_up()
                    renewed = 0.0
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=self._poll_seconds):
                            self._heard(notify.payload)
                            if self._stop.is_set():
                                break
                        if time.monotonic() - renewed >= WORKER_TTL_SECONDS / 6:
                            renewed = time.monotonic()
                            self._renew_workers()
                        self._catch_up()
            except Exception as exc:  # the listener must outlive any one failure
                if self._stop.is_set():
                    return
                if isinstance(exc, (psycopg.Error, PoolTimeout, OSError)):
                    log.warning("work queue listener: %s; reconnecting", exc)
                else:
                    log.exception("work queue listener failed; reconnecting")
                self._stop.wait(self._poll_seconds)
            finally:
                self._listening.set()

    def _heard(self, payload: str) -> None:
        parts = payload.split(_SEPARATOR, 9)
        if len(parts) < 4 or parts[3] == self.instance:
            return  # this replica's own (told at once), or the wake-up at close
        kind, item_id, owner = parts[:3]
        if kind == "E":
            self._emit([QueueEvent(EventKind.ENQUEUED, item_id, owner)])
            return
        if kind != "F" or len(parts) != 10:
            return
        state, worker_id, runner_id, attempts, result, message = parts[4:]
        with self._lock:
            watched = item_id in self._watches and self._watches[item_id].outcome is None
        if watched:  # the waiter first: it is what the caller waits for
            if result != "-" and len(message) < 200:  # all of it is in the notification
                outcome: Outcome | None = Outcome(
                    item_id, ItemState(state), base64.b64decode(result), worker_id, runner_id, int(attempts), message
                )
            else:
                try:
                    outcome = self._read_outcome(item_id)
                except UnknownItem:
                    outcome = None
            if outcome is not None:
                self._resolve([outcome])
        answered_by = worker_id if state == ItemState.SUCCEEDED.value else ""
        self._emit([QueueEvent(EventKind.FINISHED, item_id, owner, answered_by, message)])

    def _delete_forgotten(self) -> None:
        with self._lock:
            ids, self._forgotten = list(self._forgotten), set()
        if ids:
            self._execute(
                "DELETE FROM queue_items WHERE id = ANY(%(ids)s) AND state NOT IN ('pending', 'leased')", {"ids": ids}
            )

    def _catch_up(self) -> None:
        """The fallback poll: watched items that finished without this replica hearing of it."""
        self._delete_forgotten()
        with self._lock:
            ids = [item_id for item_id, w in self._watches.items() if w.outcome is None]
        if not ids or self._stop.is_set():
            return
        rows = self._rows(
            f"SELECT {_OUTCOME_COLUMNS} FROM queue_items WHERE id = ANY(%(ids)s)"
            " AND state NOT IN ('pending', 'leased')",
            {"ids": ids},
        )
        self._resolve([_outcome(r) for r in rows])

    def _renew_workers(self) -> None:
        with self._lock:
            ids = list(self._workers)
        if self._stop.is_set():
            return
        now = self._clock()
        if ids:
            self._execute(
                "UPDATE queue_workers SET alive_until = %(alive)s WHERE id = ANY(%(ids)s)",
                {"ids": ids, "alive": now + WORKER_TTL_SECONDS},
            )
        # what replicas that died left: their workers (their items' leases lapse on their own),
        # and the finished items their callers will never forget
        self._execute("DELETE FROM queue_workers WHERE alive_until <= %(now)s", {"now": now})
        self._execute(
            "DELETE FROM queue_items WHERE id IN (SELECT id FROM queue_items WHERE deadline < %(before)s"
            " AND state NOT IN ('pending', 'leased') LIMIT 1000)",
            {"before": now - ABANDONED_SECONDS},
        )
