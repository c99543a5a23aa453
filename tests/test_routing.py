"""The router on its own: leases, cancellations, capacity and who gets an item next.

Time is a fake clock moved by the tests, and upkeep runs when they call `tick()`: nothing sleeps.
"""

from __future__ import annotations

import sqlite3
import threading

import pytest

from pellucid.server.engine import routing
from pellucid.server.engine.errors import Aborted, DeadlineExceeded, Unavailable
from pellucid.server.engine.routing import Router, StreamEnd, StreamInfo, Withdrawal, WorkOrder
from pellucid.server.storage.queue_memory import MemoryWorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def router(clock: FakeClock):  # type: ignore[no-untyped-def]
    r = Router(MemoryWorkQueue(clock), clock, heartbeat_seconds=0.5, tick_seconds=0)
    yield r
    r.close()


def drain(router: Router, stream: StreamInfo) -> list[object]:
    messages = []
    while (m := router.next_message(stream.id, 0)) is not None:
        messages.append(m)
        if isinstance(m, StreamEnd):
            break
    return messages


def orders(router: Router, stream: StreamInfo) -> list[WorkOrder]:
    return [m for m in drain(router, stream) if isinstance(m, WorkOrder)]


def submit(router: Router, wait: float = 5.0, timeout: float = 5.0) -> tuple[threading.Thread, list, object]:  # type: ignore[type-arg]
    out: list = []  # type: ignore[type-arg]
    ticket = router.submit("u", frozenset({"cpu"}), b"payload", timeout, wait, "model m")

    def run() -> None:
        try:
            out.append(ticket.wait())
        except Exception as exc:  # noqa: BLE001
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out, ticket


def dispatched(router: Router, stream: StreamInfo) -> WorkOrder:
    found = orders(router, stream)
    assert len(found) == 1, found
    return found[0]


def expire(router: Router, clock: FakeClock, thread: threading.Thread, seconds: float) -> None:
    clock.advance(seconds)
    router.tick()
    thread.join(5)
    assert not thread.is_alive()


def test_no_runner_is_unavailable_naming_the_model(router: Router, clock: FakeClock) -> None:
    thread, out, _ = submit(router, wait=0.2)
    expire(router, clock, thread, 0.2)
    assert isinstance(out[0], Unavailable) and "model m" in str(out[0]) and "cpu" in str(out[0])
    assert out[0].reason == "NO_RUNNER"


def test_a_busy_runner_means_deadline_exceeded_not_no_runner(router: Router, clock: FakeClock) -> None:
    busy = router.open_stream("u", "r", frozenset({"cpu"}), 1)
    first, _, _ = submit(router, wait=1.0)
    dispatched(router, busy)
    second, out, _ = submit(router, wait=0.2)
    expire(router, clock, second, 0.3)
    assert isinstance(out[0], DeadlineExceeded), out
    expire(router, clock, first, 1.0)


def test_labels_and_users_select_streams(router: Router, clock: FakeClock) -> None:
    other_user = router.open_stream("someone-else", "r0", frozenset({"cpu"}), 4)
    wrong_labels = router.open_stream("u", "r1", frozenset({"gpu"}), 4)
    thread, out, _ = submit(router, wait=0.2)
    expire(router, clock, thread, 0.2)
    assert isinstance(out[0], Unavailable)
    assert not orders(router, other_user) + orders(router, wrong_labels)


def test_an_expired_lease_moves_the_item_to_another_stream(router: Router, clock: FakeClock) -> None:
    slow = router.open_stream("u", "slow", frozenset({"cpu", "x"}), 1)
    thread, out, _ = submit(router, timeout=0.3)
    first = dispatched(router, slow)
    fast = router.open_stream("u", "fast", frozenset({"cpu"}), 1)
    assert not orders(router, fast)  # still leased to slow
    clock.advance(0.3)
    router.tick()
    second = dispatched(router, fast)
    assert second.item_id == first.item_id
    assert any(isinstance(m, Withdrawal) for m in drain(router, slow))
    router.complete(fast.id, second.item_id, b"answer")
    thread.join(5)
    assert out == [(b"answer", "fast")]
    router.complete(slow.id, first.item_id, b"late")  # dropped: the first answer won
    assert out == [(b"answer", "fast")]


def test_heartbeats_keep_a_lease_that_would_lapse(router: Router, clock: FakeClock) -> None:
    """Leases last 1.5 s (3 heartbeats of 0.5 s) unless extended; a runner heartbeating keeps its 5 s item."""
    runner = router.open_stream("u", "r", frozenset({"cpu"}), 1)
    other = router.open_stream("u", "other", frozenset({"cpu"}), 1)
    thread, out, _ = submit(router, timeout=5.0)
    holder, idle = (runner, other) if orders(router, runner) else (other, runner)
    for _ in range(6):
        clock.advance(0.5)
        router.heartbeat(holder.id, draining=False, working_on=frozenset())
        router.heartbeat(idle.id, draining=False)
        router.tick()
    assert not orders(router, idle)  # 3 s later, still held
    (item_id,) = _in_flight(router, holder)
    router.complete(holder.id, item_id, b"ok")
    thread.join(5)
    assert out == [(b"ok", holder.runner_id)]


def _in_flight(router: Router, stream: StreamInfo) -> list[str]:
    return list(router._streams[stream.id].in_flight)


def test_a_taken_back_item_keeps_its_slot_until_the_runner_lets_go(router: Router, clock: FakeClock) -> None:
    stream = router.open_stream("u", "r", frozenset({"cpu"}), 1)
    thread, out, _ = submit(router, wait=0.2)
    item = dispatched(router, stream)
    expire(router, clock, thread, 0.2)
    assert isinstance(out[0], DeadlineExceeded)
    assert any(isinstance(m, Withdrawal) and m.item_id == item.item_id for m in drain(router, stream))
    second, out2, _ = submit(router, wait=3.0)
    router.tick()
    assert not orders(router, stream)  # no slot free yet: the runner may still be computing the first
    router.heartbeat(stream.id, draining=False, working_on=frozenset())  # the runner dropped it
    fresh = dispatched(router, stream)
    router.complete(stream.id, fresh.item_id, b"ok")
    second.join(5)
    assert out2 == [(b"ok", "r")]


def test_a_late_answer_cancels_the_copy_elsewhere(router: Router, clock: FakeClock) -> None:
    a = router.open_stream("u", "a", frozenset({"cpu"}), 1)
    thread, out, _ = submit(router, timeout=0.3)
    item = dispatched(router, a)
    b = router.open_stream("u", "b", frozenset({"cpu"}), 1)
    clock.advance(0.3)
    router.tick()
    again = dispatched(router, b)
    router.complete(a.id, item.item_id, b"from a")  # a was slow, but answers first after all
    thread.join(5)
    assert out == [(b"from a", "a")]
    assert any(isinstance(m, Withdrawal) and m.item_id == again.item_id for m in drain(router, b))
    assert _in_flight(router, b) == [] and again.item_id in router._streams[b.id].zombies


def test_a_closed_stream_gives_its_items_away(router: Router) -> None:
    dying = router.open_stream("u", "dying", frozenset({"cpu"}), 1)
    thread, out, _ = submit(router)
    item = dispatched(router, dying)
    router.close_stream(dying.id)
    assert any(isinstance(m, StreamEnd) for m in drain(router, dying))
    heir = router.open_stream("u", "heir", frozenset({"cpu"}), 1)
    assert dispatched(router, heir).item_id == item.item_id
    router.complete(heir.id, item.item_id, b"done")
    thread.join(5)
    assert out == [(b"done", "heir")]


def test_a_silent_stream_is_dropped(router: Router, clock: FakeClock) -> None:
    silent = router.open_stream("u", "silent", frozenset({"cpu"}), 1)
    thread, out, _ = submit(router)
    dispatched(router, silent)
    clock.advance(1.4)
    router.tick()
    assert not any(isinstance(m, StreamEnd) for m in drain(router, silent))  # within 3 heartbeats
    clock.advance(0.2)  # 3 missed heartbeats of 0.5 s
    router.tick()
    assert any(isinstance(m, StreamEnd) for m in drain(router, silent))
    heir = router.open_stream("u", "heir", frozenset({"cpu"}), 1)
    router.complete(heir.id, dispatched(router, heir).item_id, b"x")
    thread.join(5)
    assert out == [(b"x", "heir")]


def test_abandoned_callers_cancel_at_once(router: Router) -> None:
    stream = router.open_stream("u", "r", frozenset({"cpu"}), 1)
    thread, out, ticket = submit(router, wait=30.0)
    dispatched(router, stream)
    ticket.cancel("the caller went away")  # type: ignore[attr-defined]
    thread.join(5)
    assert not thread.is_alive() and isinstance(out[0], DeadlineExceeded)
    assert any(isinstance(m, Withdrawal) and "went away" in m.reason for m in drain(router, stream))


def test_an_item_that_keeps_losing_its_runner_fails_after_its_attempts(clock: FakeClock) -> None:
    router = Router(MemoryWorkQueue(clock), clock, heartbeat_seconds=0.5, tick_seconds=0, max_attempts=2)
    try:
        thread, out, _ = submit(router, wait=30.0)
        for n in range(2):
            crashing = router.open_stream("u", f"crash{n}", frozenset({"cpu"}), 1)
            dispatched(router, crashing)
            router.close_stream(crashing.id)
        thread.join(5)
        assert isinstance(out[0], Aborted) and "2 attempts" in str(out[0])
        assert out[0].reason == "ATTEMPTS_EXHAUSTED"
    finally:
        router.close()


def test_load_is_spread_over_the_least_loaded_streams(router: Router) -> None:
    a = router.open_stream("u", "a", frozenset({"cpu"}), 2)
    b = router.open_stream("u", "b", frozenset({"cpu"}), 2)
    tickets = [router.submit("u", frozenset({"cpu"}), b"p", 5.0, 5.0, "model m") for _ in range(4)]
    assert len(orders(router, a)) == 2 and len(orders(router, b)) == 2
    for t in tickets:
        t.cancel()


def test_closing_the_router_answers_waiting_callers(clock: FakeClock) -> None:
    router = Router(MemoryWorkQueue(clock), clock, tick_seconds=0)
    thread, out, _ = submit(router, wait=30.0)
    router.close()
    thread.join(5)
    assert isinstance(out[0], Unavailable) and "stopping" in str(out[0])


def test_an_async_caller_is_called_back_without_a_waiting_thread(router: Router) -> None:
    stream = router.open_stream("u", "r", frozenset({"cpu"}), 1)
    ticket = router.submit("u", frozenset({"cpu"}), b"p", 5.0, 5.0, "model m")
    answered = threading.Event()
    ticket.add_done_callback(lambda outcome: answered.set())
    assert not answered.is_set()
    router.complete(stream.id, dispatched(router, stream).item_id, b"ok")
    assert answered.is_set()  # called from the completing thread, at once
    assert ticket.wait() == (b"ok", "r")  # returns at once: the item has finished


def test_replicas_share_a_queue_and_take_over_a_dead_replicas_items(clock: FakeClock) -> None:
    """Two routers over one queue, as two replicas over one PostgreSQL queue will be: a runner
    on replica A serves a caller on replica B, and when A dies (its heartbeats stop, nothing is
    released) a runner on B claims A's item once its lease lapses."""
    queue = MemoryWorkQueue(clock)
    replica_a = Router(queue, clock, heartbeat_seconds=0.5, tick_seconds=0)
    replica_b = Router(queue, clock, heartbeat_seconds=0.5, tick_seconds=0)
    try:
        on_a = replica_a.open_stream("u", "ra", frozenset({"cpu"}), 1)
        ticket = replica_b.submit("u", frozenset({"cpu"}), b"p", 5.0, 30.0, "model m")
        replica_a.complete(on_a.id, dispatched(replica_a, on_a).item_id, b"from a")
        assert ticket.wait() == (b"from a", "ra")

        second = replica_b.submit("u", frozenset({"cpu"}), b"p", 5.0, 30.0, "model m")
        held = dispatched(replica_a, on_a)  # then replica A is gone: no heartbeat, no tick, no release
        on_b = replica_b.open_stream("u", "rb", frozenset({"cpu"}), 1)
        assert not orders(replica_b, on_b)
        clock.advance(1.5)  # the lease: 3 heartbeats of 0.5 s
        replica_b.tick()
        taken = dispatched(replica_b, on_b)
        assert taken.item_id == held.item_id
        replica_b.complete(on_b.id, taken.item_id, b"from b")
        assert second.wait() == (b"from b", "rb")
    finally:
        replica_b.close()
        replica_a.close()


def test_a_shared_queue_is_swept_and_polled_only_every_poll_seconds(clock: FakeClock) -> None:
    """A queue shared by replicas tells of news by notification: ticks poll it only every
    `poll_seconds` (the fallback), so idle replicas do not load the database ten times a second."""
    queue = MemoryWorkQueue(clock)
    queue.poll_seconds = 2.0
    replica_a = Router(queue, clock, heartbeat_seconds=0.5, tick_seconds=0)
    replica_b = Router(queue, clock, heartbeat_seconds=0.5, tick_seconds=0)
    try:
        on_a = replica_a.open_stream("u", "ra", frozenset({"cpu"}), 1)
        replica_b.submit("u", frozenset({"cpu"}), b"p", 60.0, 60.0, "model m")
        held = dispatched(replica_a, on_a)  # replica A dies holding it
        on_b = replica_b.open_stream("u", "rb", frozenset({"cpu"}), 1)
        replica_b.tick()  # a poll: nothing claimable yet
        clock.advance(1.5)  # A's lease lapsed, but B polled 1.5 s ago
        replica_b.heartbeat(on_b.id, draining=False)
        replica_b.tick()
        assert not orders(replica_b, on_b)
        clock.advance(0.5)
        replica_b.heartbeat(on_b.id, draining=False)
        replica_b.tick()
        assert dispatched(replica_b, on_b).item_id == held.item_id
    finally:
        replica_b.close()
        replica_a.close()


def test_streams_the_check_names_are_closed_and_a_failing_check_closes_nothing(router: Router) -> None:
    """`watch_streams`' check (the runners' module reads the store) closes the streams it names;
    one that raises, as a store away does, is logged and leaves every stream open."""
    kept = router.open_stream("u", "r1", frozenset({"cpu"}), 1)
    gone = router.open_stream("u", "r2", frozenset({"cpu", "gpu"}), 1)
    failing = [True]

    def check(streams: list[StreamInfo]) -> dict[str, str]:
        if failing[0]:
            raise sqlite3.OperationalError("database is locked")
        return {s.id: "the runner's labels changed" for s in streams if "gpu" in s.labels}

    router.watch_streams(check)
    router.check_streams()
    assert not [m for m in drain(router, gone) if isinstance(m, StreamEnd)]
    failing[0] = False
    router.check_streams()
    assert any(isinstance(m, StreamEnd) and "labels changed" in m.reason for m in drain(router, gone))
    assert not [m for m in drain(router, kept) if isinstance(m, StreamEnd)]


def test_the_stream_check_runs_in_its_own_thread_and_its_failures_leave_upkeep_running() -> None:
    """A check that fails (or hangs on a slow store) does not stop `tick`'s upkeep thread."""
    router = Router(MemoryWorkQueue(), tick_seconds=0.01)
    checked = threading.Event()

    def check(streams: list[StreamInfo]) -> dict[str, str]:
        checked.set()
        raise sqlite3.ProgrammingError("Cannot operate on a closed database.")

    try:
        router.open_stream("u", "r1", frozenset({"cpu"}), 1)
        router.watch_streams(check)
        assert router._stream_watch is not None and router._monitor is not None
        assert checked.wait(routing.STREAM_CHECK_SECONDS + 5)
        assert router._monitor.is_alive() and router._stream_watch.is_alive()
    finally:
        router.close()
    assert not router._stream_watch.is_alive()
