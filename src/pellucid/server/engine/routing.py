"""Routing prediction items to the runner streams connected to this replica, over a WorkQueue.

The queue (server/storage/queue.py) holds every item's state: who leased it, until when, how
many attempts, its answer. What lives here is only what belongs to this replica: the streams
its runners hold open, with their outboxes, capacities and the items each one is running.

A stream with free slots claims the oldest item its labels cover (the least loaded stream
first, so load spreads); it is told of new items by the queue's notifications, and a periodic
`tick` also polls. Heartbeats extend the stream's leases; an item not answered within its
timeout, or whose stream goes silent or closes, is claimed again by another stream; the first
result wins, and the caller gets exactly one answer. A caller that gives up cancels its item,
and the stream running it is told to drop it. Items taken back from a stream (cancelled,
answered elsewhere, or out of time) keep their slots until its runner stops listing them in
heartbeats, so it is not sent more than it can run.

Time comes from an injectable clock; with `tick_seconds=0` nothing runs in the background
and tests call `tick()` after moving their fake clock.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pellucid.server.engine.errors import Aborted, DeadlineExceeded, Unavailable
from pellucid.server.engine.ids import new_id
from pellucid.server.storage.queue import (
    DEFAULT_MAX_ATTEMPTS,
    EventKind,
    ItemState,
    Lease,
    NewItem,
    Outcome,
    QueueEvent,
    Worker,
    WorkQueue,
)

log = logging.getLogger(__name__)
# how often a replica asks whether its streams' runners still exist with the labels they connected
# with (a runner deleted or relabelled through another replica; its own changes close them at once)
STREAM_CHECK_SECONDS = 2.0


@dataclass(frozen=True)
class WorkOrder:
    """Run this item: `payload` is what the runner gets, to answer before `lease_deadline`."""

    item_id: str
    lease_deadline: float  # seconds since the epoch
    payload: bytes


@dataclass(frozen=True)
class Withdrawal:
    """Stop running this item (cancelled, answered elsewhere, or out of time): its answer is not wanted."""

    item_id: str
    reason: str


@dataclass(frozen=True)
class StreamEnd:
    """The stream is over: close it."""

    reason: str


StreamMessage = WorkOrder | Withdrawal | StreamEnd


@dataclass(frozen=True)
class StreamInfo:
    """A runner stream, as the adapter that holds it sees it."""

    id: str
    user_id: str
    runner_id: str
    labels: frozenset[str]
    capacity: int


@dataclass(eq=False)
class _Stream:
    info: StreamInfo
    last_seen: float
    outbox: collections.deque[StreamMessage] = field(default_factory=collections.deque)
    wakeup: threading.Condition = field(default_factory=threading.Condition)
    in_flight: dict[str, Lease] = field(default_factory=dict)
    zombies: set[str] = field(default_factory=set)
    draining: bool = False
    closed: bool = False
    dispatched: int = 0

    @property
    def load(self) -> int:
        return len(self.in_flight) + len(self.zombies)

    def send(self, message: StreamMessage) -> None:
        with self.wakeup:
            self.outbox.append(message)
            self.wakeup.notify()


class Ticket:
    """One item a caller waits for. `wait` blocks the calling thread; an async adapter instead
    passes a callback to `add_done_callback` and resolves its future from it (no thread held)."""

    def __init__(self, router: Router, item_id: str, owner: str, selector: frozenset[str], deadline: float, what: str):
        self._router = router
        self.item_id = item_id
        self.owner = owner
        self.selector = selector
        self.deadline = deadline  # on the router's clock
        self.description = what

    def cancel(self, reason: str = "the caller went away") -> None:
        self._router.queue.cancel(self.item_id, reason)

    def add_done_callback(self, callback: Callable[[Outcome], None]) -> None:
        self._router.queue.on_finished(self.item_id, callback)

    def wait(self) -> tuple[bytes, str]:
        """(the runner's answer, its runner id), or the error the caller gets."""
        queue, clock = self._router.queue, self._router.clock
        while True:
            outcome = queue.wait(self.item_id, self.deadline - clock())
            if outcome is not None:
                break
            if clock() >= self.deadline:
                queue.expire()
        queue.forget(self.item_id)
        return self.answer(outcome)

    def answer(self, outcome: Outcome) -> tuple[bytes, str]:
        """The result of a finished item, or the error it means."""
        if outcome.state is ItemState.SUCCEEDED:
            return outcome.result, outcome.runner_id
        if outcome.state is ItemState.CANCELLED:
            if self._router.closed:
                raise Unavailable("the server is stopping")
            raise DeadlineExceeded(f"{self.description}: {outcome.message}")
        if outcome.state is ItemState.FAILED:
            raise Aborted(f"{self.description}: {outcome.message}", reason="ATTEMPTS_EXHAUSTED")
        if outcome.attempts or self._router.served(self.owner, self.selector):
            raise DeadlineExceeded(
                f"{self.description} did not answer before the deadline "
                f"(tried {max(outcome.attempts, 1)} time(s)); pass a longer timeout or add runners"
            )
        labels = ", ".join(sorted(self.selector)) or "(any)"
        raise Unavailable(
            f"no runner serves {self.description}: start a runner whose labels include {labels} "
            f"(pellucid runner start ...)",
            reason="NO_RUNNER",
        )


class _Critical:
    """Router._critical: a plain class, as cheap as a context manager gets (one per call)."""

    __slots__ = ("_router",)

    def __init__(self, router: Router) -> None:
        self._router = router

    def __enter__(self) -> None:
        router = self._router
        router._lock.acquire()
        router._depth += 1

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        router = self._router
        try:
            if router._depth == 1 and kind is None:
                events = router._events
                while events:
                    router._handle_locked(events.popleft())
        finally:
            router._depth -= 1
            router._lock.release()


class Router:
    def __init__(
        self,
        queue: WorkQueue,
        clock: Callable[[], float] = time.time,
        heartbeat_seconds: float = 2.0,
        missed_heartbeats: int = 3,
        tick_seconds: float = 0.1,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.heartbeat_seconds = heartbeat_seconds
        self.max_attempts = max_attempts
        # a stream silent this long is dropped; its leases last as long (another replica's
        # streams take over the items of a replica that died within that time)
        self._session_timeout = heartbeat_seconds * missed_heartbeats
        self._lock = threading.RLock()
        self._streams: dict[str, _Stream] = {}
        self._events: collections.deque[QueueEvent] = collections.deque()
        self._depth = 0  # how deep this thread is in critical sections (under self._lock)
        self._critical_section = _Critical(self)
        # per owner, how many items may be claimable: ENQUEUED events add one, claims take one,
        # streams that find nothing set it to 0; ticks and new streams set it to "unknown" (inf)
        self._claimable: dict[str, float] = {}
        self._order = itertools.count(1)
        self._last_poll = float("-inf")  # when tick last swept and polled the queue
        # set by the runners' module (watch_streams): the ids of the given streams to close, with why
        self._stream_check: Callable[[list[StreamInfo]], dict[str, str]] | None = None
        self._stream_watch: threading.Thread | None = None
        self.closed = False
        self._unsubscribe = queue.subscribe(self._on_event)
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        if tick_seconds > 0:
            self._monitor = threading.Thread(
                target=self._watch, args=(tick_seconds,), name="pellucid-router", daemon=True
            )
            self._monitor.start()

    # runner side

    def open_stream(self, user_id: str, runner_id: str, labels: frozenset[str], capacity: int) -> StreamInfo:
        info = StreamInfo(new_id(), user_id, runner_id, labels, capacity)
        with self._critical():
            self._streams[info.id] = _Stream(info, last_seen=self.clock())
            self.queue.register_worker(Worker(info.id, user_id, runner_id, labels, capacity))
            self._claimable[user_id] = float("inf")  # items may be waiting for these labels
            self._offer_locked(user_id)
        return info

    def next_message(self, stream_id: str, timeout: float) -> StreamMessage | None:
        """The next message for the runner, or None after `timeout` seconds."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return StreamEnd("the stream is closed")
        with stream.wakeup:
            if not stream.outbox and not stream.wakeup.wait_for(lambda: bool(stream.outbox), timeout):
                return None
            return stream.outbox.popleft()

    def close_stream(self, stream_id: str, reason: str = "disconnected") -> None:
        """The stream is gone (or must go): its unfinished items go to other streams."""
        with self._critical():
            stream = self._streams.get(stream_id)
            if stream is not None:
                self._close_locked(stream, reason)

    def forget_stream(self, stream_id: str) -> None:
        """The adapter holding the stream has ended it."""
        with self._critical():
            stream = self._streams.pop(stream_id, None)
            if stream is not None:
                self._close_locked(stream, "disconnected")

    def heartbeat(self, stream_id: str, draining: bool, working_on: frozenset[str] = frozenset()) -> None:
        with self._critical():
            stream = self._streams.get(stream_id)
            if stream is None or stream.closed:
                return
            stream.last_seen = self.clock()
            stream.draining = stream.draining or draining
            stream.zombies &= working_on  # what the runner no longer runs frees its slot
            if stream.in_flight:
                held = self.queue.extend(stream.info.id, list(stream.in_flight), self._session_timeout)
                for item_id in [i for i in stream.in_flight if i not in held]:
                    self._withdraw_locked(stream, item_id, "its lease ran out")
            self._offer_locked(stream.info.user_id)

    def complete(self, stream_id: str, item_id: str, result: bytes) -> None:
        """A result from a runner; the first one for an item wins, later ones are dropped."""
        with self._critical():
            stream = self._streams.get(stream_id)
            if stream is None:
                return
            stream.last_seen = self.clock()
            stream.in_flight.pop(item_id, None)
            stream.zombies.discard(item_id)
            self.queue.complete(item_id, stream_id, result)
            self._offer_locked(stream.info.user_id)

    def streams_of(self, user_id: str) -> list[StreamInfo]:
        """The user's open streams on this replica."""
        with self._lock:
            return [s.info for s in self._streams.values() if s.info.user_id == user_id and not s.closed]

    def close_runner(self, user_id: str, runner_id: str, reason: str = "runner deleted") -> None:
        with self._critical():
            for stream in list(self._streams.values()):
                if (stream.info.user_id, stream.info.runner_id) == (user_id, runner_id):
                    self._close_locked(stream, reason)

    # caller side

    def submit(
        self, user_id: str, selector: frozenset[str], payload: bytes, timeout: float, wait: float, description: str
    ) -> Ticket:
        """Queue one item: each attempt may take `timeout` seconds; the caller waits at most `wait`."""
        deadline = self.clock() + wait
        if self.closed:
            raise Unavailable("the server is stopping")
        item_id = self.queue.enqueue(NewItem(user_id, selector, payload, deadline, timeout, self.max_attempts))
        return Ticket(self, item_id, user_id, selector, deadline, description)

    def served(self, owner: str, selector: frozenset[str]) -> bool:
        """True if a runner stream (on any replica) could take items with this selector."""
        return any(selector <= w.labels for w in self.queue.workers(owner))

    # upkeep

    def tick(self) -> None:
        """One pass of upkeep: drop silent streams, take back items out of time, expire items
        past their deadline, and offer what is claimable (the fallback to notifications)."""
        with self._critical():
            now = self.clock()
            for stream in list(self._streams.values()):
                if stream.closed:
                    continue
                if now - stream.last_seen > self._session_timeout:
                    self._close_locked(stream, "no heartbeat")
                    continue
                for item_id, lease in list(stream.in_flight.items()):
                    if now >= lease.attempt_ends:
                        seconds = lease.attempt_ends - lease.claimed_at
                        self._withdraw_locked(stream, item_id, f"not answered within {seconds:g}s")
                        self.queue.release(stream.info.id, [item_id])
            if now - self._last_poll < self.queue.poll_seconds:
                return  # a shared queue: its notifications tell of news, the poll is only the fallback
            self._last_poll = now
        self.queue.expire()
        with self._critical():
            for owner in {s.info.user_id for s in self._streams.values()}:
                self._claimable[owner] = float("inf")  # the poll behind the notifications
                self._offer_locked(owner)

    def watch_streams(self, check: Callable[[list[StreamInfo]], dict[str, str]]) -> None:
        """Every STREAM_CHECK_SECONDS, close the open streams `check` names (with why): the
        runners' module names those whose registration changed through another replica. In a
        thread of its own, as `check` reads the metadata store, which may be slow or away: the
        upkeep of `tick` never waits for it. Without an upkeep thread (tests tick by hand),
        they call `check_streams`."""
        self._stream_check = check
        if self._monitor is not None and self._stream_watch is None:
            self._stream_watch = threading.Thread(
                target=self._watch_streams, name="pellucid-router-streams", daemon=True
            )
            self._stream_watch.start()

    def check_streams(self) -> None:
        """One pass of `watch_streams`' check; a failure is logged (the next pass tries again)."""
        check = self._stream_check
        if check is None:
            return
        with self._lock:
            streams = [s.info for s in self._streams.values() if not s.closed]
        if not streams:
            return
        try:
            stale = check(streams)
        except Exception as exc:  # noqa: BLE001 - a store away or closing: streams stay until the next pass
            log.warning("checking runner streams' registrations failed, retrying: %s", exc)
            return
        for stream_id, reason in stale.items():
            self.close_stream(stream_id, reason)

    def _watch_streams(self) -> None:
        while not self._stop.wait(STREAM_CHECK_SECONDS):
            self.check_streams()

    def _watch(self, tick_seconds: float) -> None:
        while not self._stop.wait(tick_seconds):
            try:
                self.tick()
            except ConnectionError as exc:  # a shared queue's database away: the next tick tries again
                log.warning("router upkeep failed, retrying: %s", exc)

    def close(self) -> None:
        """Stop: streams end and waiting callers get Unavailable."""
        self.closed = True
        self._stop.set()
        with self._critical():
            for stream in list(self._streams.values()):
                self._close_locked(stream, "server stopping")
        self._unsubscribe()
        self.queue.close()
        for thread in (self._monitor, self._stream_watch):
            if thread is not None and thread is not threading.current_thread():
                thread.join(5)

    # internals

    def _critical(self) -> _Critical:
        """Hold the lock; queue events that arrive meanwhile (also from this thread's own calls
        into the queue) are handled when the outermost holder is done, not in the middle."""
        return self._critical_section

    def _on_event(self, event: QueueEvent) -> None:
        with self._critical():
            self._events.append(event)

    def _handle_locked(self, event: QueueEvent) -> None:
        if event.kind is EventKind.ENQUEUED:
            self._claimable[event.owner] = self._claimable.get(event.owner, 0) + 1
            self._offer_locked(event.owner)
            return
        freed = False
        for stream in self._streams.values():
            if stream.info.user_id != event.owner or event.item_id not in stream.in_flight:
                continue
            if stream.info.id == event.worker_id:
                stream.in_flight.pop(event.item_id)
            else:
                why = "answered by another runner" if event.worker_id else event.reason
                self._withdraw_locked(stream, event.item_id, why)
            freed = True
        if freed:
            self._offer_locked(event.owner)

    def _withdraw_locked(self, stream: _Stream, item_id: str, reason: str) -> None:
        """Tell the stream to drop an item; it keeps the slot until its runner lets go."""
        if stream.in_flight.pop(item_id, None) is not None:
            stream.zombies.add(item_id)
            stream.send(Withdrawal(item_id, reason))

    def _close_locked(self, stream: _Stream, reason: str) -> None:
        if stream.closed:
            return
        stream.closed = True
        stream.in_flight.clear()
        self.queue.unregister_worker(stream.info.id)  # its items are claimable again at once
        stream.send(StreamEnd(reason))

    def _offer_locked(self, owner: str) -> None:
        """Streams with free slots claim what they can, one item at a time to the least loaded."""
        if not self._claimable.get(owner):
            return  # nothing announced since every stream last found nothing
        streams = [
            s
            for s in self._streams.values()
            if s.info.user_id == owner and not s.closed and not s.draining and s.load < s.info.capacity
        ]
        now = None
        found_nothing = 0
        while streams and self._claimable.get(owner):
            stream = min(streams, key=lambda s: (s.load / s.info.capacity, s.dispatched))
            leases = self.queue.claim(stream.info.id, 1, self._session_timeout)
            if not leases:
                streams.remove(stream)  # nothing it can take now
                found_nothing += 1
                continue
            self._claimable[owner] = max(self._claimable[owner] - len(leases), 0)
            now = now if now is not None else (time.time(), self.clock())
            for lease in leases:
                stream.in_flight[lease.item_id] = lease
                stream.send(WorkOrder(lease.item_id, now[0] + lease.attempt_ends - now[1], lease.payload))
            stream.dispatched = next(self._order)
            if stream.load >= stream.info.capacity:
                streams.remove(stream)
        if found_nothing and found_nothing == self._open_streams(owner):
            self._claimable[owner] = 0  # every stream looked and found nothing: wait for news

    def _open_streams(self, owner: str) -> int:
        return sum(1 for s in self._streams.values() if s.info.user_id == owner and not s.closed and not s.draining)
