"""The WorkQueue contract: every backend passes these (memory, and PostgreSQL from tests/pg.py).

A backend joins by adding a parameter to `BACKENDS` and a branch in `make_queue` that builds it
over the given clock (a PostgreSQL backend reads its clock from the test too, or the tests that
move time are skipped for it with a reason).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pellucid.server.runtime import PellucidServer, ServerSettings
from pellucid.server.storage.queue import (
    EventKind,
    ItemState,
    NewItem,
    Outcome,
    QueueEvent,
    UnknownItem,
    Worker,
    WorkQueue,
)
from pellucid.server.storage.registry import check_work_queue_uri, open_work_queue
from tests import pg
from tests.test_server_process import PELLUCID

BACKENDS = ["memory", "postgresql"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 5_000.0

    def __call__(self) -> float:
        return self.now


def make_queue(backend: str, clock: Callable[[], float]) -> WorkQueue:
    if backend == "memory":
        return open_work_queue("memory:", clock)
    if backend == "postgresql":
        return open_work_queue(pg.new_database(), clock)
    raise AssertionError(backend)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
def queue(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[WorkQueue]:
    q = make_queue(request.param, clock)
    yield q
    q.close()


def item(clock: FakeClock, owner: str = "u", selector: tuple[str, ...] = ("cpu",), **kwargs) -> NewItem:  # type: ignore[no-untyped-def]
    values = {"payload": b"p", "deadline": clock.now + 60, "run_seconds": 10.0, **kwargs}
    return NewItem(owner, frozenset(selector), **values)


def worker(queue: WorkQueue, worker_id: str, labels: tuple[str, ...] = ("cpu",), owner: str = "u") -> str:
    queue.register_worker(Worker(worker_id, owner, f"runner-{worker_id}", frozenset(labels), 4))
    return worker_id


def test_claims_match_owner_and_labels_oldest_first(queue: WorkQueue, clock: FakeClock) -> None:
    first = queue.enqueue(item(clock, payload=b"1"))
    gpu = queue.enqueue(item(clock, selector=("cpu", "gpu")))
    second = queue.enqueue(item(clock, payload=b"2"))
    queue.enqueue(item(clock, owner="someone-else"))
    cpu = worker(queue, "w")
    leases = queue.claim(cpu, 5, 30.0)
    assert [lease.item_id for lease in leases] == [first, second]
    assert [lease.payload for lease in leases] == [b"1", b"2"] and leases[0].attempt == 1
    assert queue.claim(cpu, 5, 30.0) == []  # nothing left it may take
    assert [lease.item_id for lease in queue.claim(worker(queue, "big", ("cpu", "gpu", "x")), 5, 30.0)] == [gpu]


def test_claim_respects_the_limit_and_unknown_workers_get_nothing(queue: WorkQueue, clock: FakeClock) -> None:
    for _ in range(3):
        queue.enqueue(item(clock))
    assert queue.claim("nobody", 5, 30.0) == []
    assert len(queue.claim(worker(queue, "w"), 2, 30.0)) == 2


def test_the_first_result_wins(queue: WorkQueue, clock: FakeClock) -> None:
    item_id = queue.enqueue(item(clock))
    a, b = worker(queue, "a"), worker(queue, "b")
    queue.claim(a, 1, 30.0)
    assert queue.complete(item_id, b, b"from b")  # even from a worker that does not hold it
    assert not queue.complete(item_id, a, b"from a")
    outcome = queue.wait(item_id, 0)
    assert outcome == Outcome(item_id, ItemState.SUCCEEDED, b"from b", "b", "runner-b", 1, "")


def test_a_lease_lapses_unless_extended_and_never_past_the_attempt(queue: WorkQueue, clock: FakeClock) -> None:
    item_id = queue.enqueue(item(clock, run_seconds=10.0))
    a, b = worker(queue, "a"), worker(queue, "b")
    (lease,) = queue.claim(a, 1, 3.0)
    assert lease.lease_until == clock.now + 3.0 and lease.attempt_ends == clock.now + 10.0
    clock.now += 2.0
    assert queue.extend(a, [item_id], 3.0) == {item_id}
    clock.now += 2.5  # 4.5 s after the claim: lapsed without the extension
    assert queue.claim(b, 1, 3.0) == []
    for _ in range(3):
        clock.now += 2.0
        queue.extend(a, [item_id], 3.0)
    clock.now = lease.attempt_ends  # the attempt's end: extensions stop here
    assert queue.extend(a, [item_id], 3.0) == frozenset()
    (again,) = queue.claim(b, 1, 3.0)
    assert again.item_id == item_id and again.attempt == 2


def test_the_sweep_makes_lapsed_leases_claimable_and_tells(queue: WorkQueue, clock: FakeClock) -> None:
    item_id = queue.enqueue(item(clock, run_seconds=10.0))
    a, b = worker(queue, "a"), worker(queue, "b")
    queue.claim(a, 1, 3.0)
    events: list[QueueEvent] = []
    queue.subscribe(events.append)
    clock.now += 3.0
    assert queue.expire() == []  # nothing finished: the item is claimable again
    assert [(e.kind, e.item_id) for e in events] == [(EventKind.ENQUEUED, item_id)]
    assert queue.extend(a, [item_id], 3.0) == frozenset()
    (again,) = queue.claim(b, 1, 3.0)
    assert again.item_id == item_id and again.attempt == 2


def test_release_makes_items_claimable_at_once(queue: WorkQueue, clock: FakeClock) -> None:
    item_id = queue.enqueue(item(clock))
    a, b = worker(queue, "a"), worker(queue, "b")
    queue.claim(a, 1, 30.0)
    queue.release(b, [item_id])  # not b's: ignored
    assert queue.claim(b, 1, 30.0) == []
    queue.release(a, [item_id])
    assert [lease.item_id for lease in queue.claim(b, 1, 30.0)] == [item_id]
    assert queue.extend(a, [item_id], 30.0) == frozenset()


def test_a_worker_that_leaves_releases_what_it_held(queue: WorkQueue, clock: FakeClock) -> None:
    item_id = queue.enqueue(item(clock))
    a, b = worker(queue, "a"), worker(queue, "b")
    queue.claim(a, 1, 30.0)
    assert [w.id for w in queue.workers("u")] == ["a", "b"] and queue.workers("v") == []
    assert queue.unregister_worker(a) == [item_id]
    assert [w.id for w in queue.workers("u")] == ["b"]
    assert [lease.item_id for lease in queue.claim(b, 1, 30.0)] == [item_id]


def test_attempts_are_capped(queue: WorkQueue, clock: FakeClock) -> None:
    item_id = queue.enqueue(item(clock, max_attempts=2))
    a = worker(queue, "a")
    for _ in range(2):
        assert queue.claim(a, 1, 30.0)
        queue.release(a, [item_id])
    outcome = queue.wait(item_id, 0)
    assert outcome is not None and outcome.state is ItemState.FAILED and outcome.attempts == 2
    assert "2 attempts" in outcome.message
    assert queue.claim(a, 1, 30.0) == []


def test_a_lapsed_lease_counts_as_an_attempt(queue: WorkQueue, clock: FakeClock) -> None:
    item_id = queue.enqueue(item(clock, max_attempts=1, run_seconds=1.0))
    a = worker(queue, "a")
    queue.claim(a, 1, 30.0)
    clock.now += 1.0
    assert [o.item_id for o in queue.expire()] == [item_id]
    outcome = queue.wait(item_id, 0)
    assert outcome is not None and outcome.state is ItemState.FAILED


def test_cancel_finishes_once(queue: WorkQueue, clock: FakeClock) -> None:
    item_id = queue.enqueue(item(clock))
    a = worker(queue, "a")
    queue.claim(a, 1, 30.0)
    assert queue.cancel(item_id, "the caller went away")
    assert not queue.cancel(item_id, "again")
    assert not queue.complete(item_id, a, b"too late")
    outcome = queue.wait(item_id, 0)
    assert outcome is not None and outcome.state is ItemState.CANCELLED and outcome.message == "the caller went away"
    assert queue.extend(a, [item_id], 30.0) == frozenset()


def test_items_past_their_deadline_expire(queue: WorkQueue, clock: FakeClock) -> None:
    soon = queue.enqueue(item(clock, deadline=clock.now + 1))
    later = queue.enqueue(item(clock, deadline=clock.now + 100))
    assert queue.wait(soon, 0) is None
    clock.now += 1
    assert [o.item_id for o in queue.expire()] == [soon]
    outcome = queue.wait(soon, 0)
    assert outcome is not None and outcome.state is ItemState.EXPIRED and outcome.attempts == 0
    assert [lease.item_id for lease in queue.claim(worker(queue, "a"), 5, 30.0)] == [later]


def test_wait_wakes_on_completion_from_another_thread(queue: WorkQueue, clock: FakeClock) -> None:
    item_id = queue.enqueue(item(clock))
    a = worker(queue, "a")
    queue.claim(a, 1, 30.0)
    threading.Timer(0.02, queue.complete, args=(item_id, a, b"done")).start()
    outcome = queue.wait(item_id, 5.0)
    assert outcome is not None and outcome.result == b"done"


def test_finished_callbacks_and_forget(queue: WorkQueue, clock: FakeClock) -> None:
    item_id = queue.enqueue(item(clock))
    seen: list[Outcome] = []
    queue.on_finished(item_id, seen.append)
    assert seen == []
    queue.complete(item_id, worker(queue, "a"), b"x")
    assert [o.result for o in seen] == [b"x"]
    queue.on_finished(item_id, seen.append)  # already finished: called at once
    assert len(seen) == 2
    queue.forget(item_id)
    with pytest.raises(UnknownItem):
        queue.wait(item_id, 0)
    assert not queue.complete(item_id, "a", b"y")


def test_events_tell_of_new_and_finished_items(queue: WorkQueue, clock: FakeClock) -> None:
    events: list[QueueEvent] = []
    unsubscribe = queue.subscribe(events.append)
    item_id = queue.enqueue(item(clock))
    a = worker(queue, "a")
    queue.claim(a, 1, 30.0)
    queue.release(a, [item_id])  # claimable again: told as well
    queue.complete(item_id, a, b"x")
    assert [(e.kind, e.item_id, e.owner) for e in events] == [
        (EventKind.ENQUEUED, item_id, "u"),
        (EventKind.ENQUEUED, item_id, "u"),
        (EventKind.FINISHED, item_id, "u"),
    ]
    assert events[-1].worker_id == "a"
    unsubscribe()
    queue.enqueue(item(clock))
    assert len(events) == 3


def test_close_cancels_what_is_unfinished(queue: WorkQueue, clock: FakeClock) -> None:
    item_id = queue.enqueue(item(clock))
    queue.close("stopping")
    outcome = queue.wait(item_id, 0)
    assert outcome is not None and outcome.state is ItemState.CANCELLED and outcome.message == "stopping"


def test_queue_uris() -> None:
    assert check_work_queue_uri("") == check_work_queue_uri("memory:") == "memory"
    assert check_work_queue_uri("postgresql://db/pellucid") == check_work_queue_uri("postgres://h/d") == "postgresql"
    with pytest.raises(ValueError, match=r"accepted queue URIs are memory:.*postgresql://"):
        check_work_queue_uri("redis://db/pellucid")


def test_the_server_refuses_an_unknown_queue_uri_before_touching_anything(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    refused = subprocess.run(
        [*PELLUCID, "server", "--data-dir", str(data_dir), "--port", "0", "--queue", "redis://db/pellucid"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "--queue" in refused.stderr and "accepted queue URIs are memory:" in refused.stderr
    assert not data_dir.exists()
    with pytest.raises(ValueError, match="memory:"):
        PellucidServer(ServerSettings(data_dir=data_dir, queue_uri="redis://x")).start()
    assert not data_dir.exists()


def test_the_server_runs_on_the_memory_queue_uri(tmp_path: Path) -> None:
    server = PellucidServer(ServerSettings(data_dir=tmp_path / "data", queue_uri="memory:"))
    server.start()
    try:
        assert server.engine is not None and isinstance(server.engine.queue, WorkQueue)
    finally:
        server.stop(grace=0.5)


def test_replicas_share_one_postgresql_queue(clock: FakeClock) -> None:
    """Two queues over one database (two replicas): an item enqueued on A is announced to B, claimed
    and answered there, and A's waiter wakes on B's notification; A closing cancels only its own items."""
    uri = pg.new_database()
    a, b = open_work_queue(uri, clock), open_work_queue(uri, clock)
    try:
        heard: list[QueueEvent] = []
        announced = threading.Event()
        b.subscribe(lambda e: (heard.append(e), announced.set()))
        item_id = a.enqueue(item(clock))
        assert announced.wait(5.0) and heard[0].kind is EventKind.ENQUEUED and heard[0].item_id == item_id
        worker(b, "w")
        assert [w.id for w in a.workers("u")] == ["w"]  # B's runner stream, seen from A
        assert [lease.item_id for lease in b.claim("w", 1, 30.0)] == [item_id]
        seen: list[Outcome] = []
        a.on_finished(item_id, seen.append)
        threading.Timer(0.02, b.complete, args=(item_id, "w", b"answer")).start()
        outcome = a.wait(item_id, 5.0)
        assert outcome == Outcome(item_id, ItemState.SUCCEEDED, b"answer", "w", "runner-w", 1, "")
        assert [o.result for o in seen] == [b"answer"]
        big = a.enqueue(item(clock))  # too big for a notification: A reads it from the row
        assert [lease.item_id for lease in b.claim("w", 1, 30.0)] == [big]
        threading.Timer(0.02, b.complete, args=(big, "w", b"x" * 10_000)).start()
        outcome = a.wait(big, 5.0)
        assert outcome is not None and outcome.result == b"x" * 10_000 and outcome.attempts == 1
        b_item = b.enqueue(item(clock))
        a_item = a.enqueue(item(clock))
        a.close("a stops")
        assert b.wait(a_item, 0) is not None and b.wait(b_item, 0) is None  # B's caller still waits
        assert [lease.item_id for lease in b.claim("w", 5, 30.0)] == [b_item]
    finally:
        a.close()
        b.close()


def test_the_postgresql_queue_survives_its_connections_being_cut(clock: FakeClock) -> None:
    """PostgreSQL restarting (here: every session of the database ended): a call that hits a cut
    connection is StoreUnavailable (UNAVAILABLE to callers, retried), never a raw driver error,
    and the listener reconnects, so notifications flow again."""
    import psycopg

    from pellucid.server.storage.base import StoreUnavailable

    uri = pg.new_database()
    a, b = open_work_queue(uri, clock), open_work_queue(uri, clock)
    try:
        heard = threading.Event()
        b.subscribe(lambda e: heard.set())
        with psycopg.connect(pg.postgres_server().get_uri(), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (uri.split("/")[3].split("?")[0],),
            )
        item_id = ""
        for _ in range(10):  # each cut pooled connection fails one call, then is replaced
            try:
                item_id = a.enqueue(item(clock))
                break
            except StoreUnavailable:
                continue
        assert item_id
        deadline = time.monotonic() + 5.0
        while not heard.wait(0.05) and time.monotonic() < deadline:
            try:
                a.enqueue(item(clock))  # the listener may still be reconnecting: tell again
            except StoreUnavailable:
                pass
        assert heard.is_set()
    finally:
        a.close()
        b.close()


def test_what_a_dead_replica_left_in_postgresql_is_swept(clock: FakeClock) -> None:
    """A replica killed leaves worker rows it no longer renews (not counted, then deleted) and
    finished items its callers will never forget (deleted well after their deadline)."""
    import psycopg

    from pellucid.server.storage.queue_postgres import ABANDONED_SECONDS

    uri = pg.new_database()
    open_work_queue(uri, clock).close()  # the tables
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("INSERT INTO queue_workers VALUES ('dead', 'u', 'r', '{cpu}', 1, 'gone', %s)", (clock.now - 1,))
        conn.execute(
            "INSERT INTO queue_items (id, owner, selector, payload, deadline, run_seconds, max_attempts, state,"
            " enqueued_by) VALUES ('old', 'u', '{}', '', %s, 1, 1, 'succeeded', 'gone'),"
            " ('recent', 'u', '{}', '', %s, 1, 1, 'succeeded', 'gone')",
            (clock.now - ABANDONED_SECONDS - 1, clock.now - 1),
        )
    queue = open_work_queue(uri, clock)
    try:
        assert queue.workers("u") == []
        deadline = time.monotonic() + 5.0
        with psycopg.connect(uri, autocommit=True) as conn:
            while time.monotonic() < deadline:
                items = [r[0] for r in conn.execute("SELECT id FROM queue_items ORDER BY id")]
                workers = conn.execute("SELECT count(*) FROM queue_workers").fetchone()
                if items == ["recent"] and workers == (0,):
                    break
                time.sleep(0.05)
        assert items == ["recent"] and workers == (0,)
    finally:
        queue.close()
