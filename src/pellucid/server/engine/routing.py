"""The in-process work queue: routes prediction items to connected runners.

Each connected runner stream is a Session with labels and a capacity. An item goes to a
session of the same user whose labels include the item's selector and that has a free
slot, the least loaded first. An item not answered within its timeout, or whose session
stops sending heartbeats, is given to another session; the first result wins, and the
caller gets exactly one answer. A caller that gives up cancels its item.

Scale-out replaces this class with a PostgreSQL-backed queue behind the same methods.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from dataclasses import dataclass, field

from pellucid.server.engine.errors import DeadlineExceeded, Unavailable
from pellucid.server.engine.ids import new_id

CLOSE = object()  # put on an outbox to end the session's stream


@dataclass(frozen=True)
class Dispatch:
    item_id: str
    lease_deadline: float  # seconds since the epoch
    payload: bytes


@dataclass(frozen=True)
class Cancel:
    item_id: str
    reason: str


@dataclass(eq=False)
class Session:
    id: str
    user_id: str
    runner_id: str
    labels: frozenset[str]
    capacity: int
    outbox: collections.deque[object] | None = None
    in_flight: dict[str, float] = field(default_factory=dict)
    # items taken back from this session (cancelled, or their lease ran out) that its
    # runner may still be computing: they keep their slots until it answers or stops
    # listing them in its heartbeats, so it is not sent more than it can run
    zombies: set[str] = field(default_factory=set)
    last_seen: float = 0.0
    draining: bool = False
    closed: bool = False
    dispatched: int = 0
    wakeup: threading.Condition = field(default_factory=threading.Condition)

    def send(self, message: object) -> None:
        with self.wakeup:
            assert self.outbox is not None
            self.outbox.append(message)
            self.wakeup.notify()

    def next_message(self, timeout: float) -> object | None:
        """The next message for the runner, or None after `timeout` seconds."""
        with self.wakeup:
            assert self.outbox is not None
            if not self.outbox and not self.wakeup.wait_for(lambda: bool(self.outbox), timeout):
                return None
            return self.outbox.popleft()


@dataclass(eq=False)
class Item:
    id: str
    user_id: str
    selector: frozenset[str]
    payload: bytes
    timeout: float
    deadline: float  # monotonic
    description: str
    done: threading.Event = field(default_factory=threading.Event)
    result: bytes | None = None
    runner_id: str = ""
    error: Exception | None = None
    session: Session | None = None
    lease_until: float = 0.0  # monotonic
    attempts: int = 0
    ever_matched: bool = False
    tried: set[str] = field(default_factory=set)  # sessions that held it


class Router:
    def __init__(self, heartbeat_seconds: float = 2.0, missed_heartbeats: int = 3, tick: float = 0.1) -> None:
        self.heartbeat_seconds = heartbeat_seconds
        self._session_timeout = heartbeat_seconds * missed_heartbeats
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._pending: collections.deque[Item] = collections.deque()
        self._items: dict[str, Item] = {}
        self._order = itertools.count(1)
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._watch, args=(tick,), name="pellucid-router", daemon=True)
        self._monitor.start()

    # runner side

    def open_session(self, user_id: str, runner_id: str, labels: frozenset[str], capacity: int) -> Session:
        session = Session(
            new_id(), user_id, runner_id, labels, capacity, collections.deque(), last_seen=time.monotonic()
        )
        with self._lock:
            self._sessions[session.id] = session
            self._dispatch_locked()
        return session

    def close_session(self, session: Session, reason: str = "disconnected") -> None:
        """The session is gone: its unfinished items go to other runners."""
        with self._lock:
            self._close_locked(session, reason)
            self._dispatch_locked()

    def _close_locked(self, session: Session, reason: str) -> None:
        if session.closed:
            return
        session.closed = True
        self._sessions.pop(session.id, None)
        for item_id in list(session.in_flight):
            item = self._items.get(item_id)
            if item is not None and not item.done.is_set():
                item.session = None
                self._pending.appendleft(item)
        session.in_flight.clear()
        session.send(CLOSE)

    def heartbeat(self, session: Session, draining: bool, working_on: frozenset[str] = frozenset()) -> None:
        with self._lock:
            session.last_seen = time.monotonic()
            session.draining = session.draining or draining
            session.zombies &= working_on  # what the runner no longer runs frees its slot
            self._dispatch_locked()

    def complete(self, session: Session, item_id: str, result: bytes) -> None:
        """A result from a runner; the first one for an item wins, later ones are dropped."""
        with self._lock:
            session.last_seen = time.monotonic()
            session.in_flight.pop(item_id, None)
            session.zombies.discard(item_id)
            item = self._items.get(item_id)
            if item is not None and not item.done.is_set():
                if item.session is not None and item.session is not session:  # a late answer: stop the other copy
                    self._withdraw_locked(item, "answered by another runner")
                item.result, item.runner_id = result, session.runner_id
                self._finish_locked(item)
            self._dispatch_locked()

    def sessions_of(self, user_id: str) -> list[Session]:
        with self._lock:
            return [s for s in self._sessions.values() if s.user_id == user_id]

    def close_runner(self, user_id: str, runner_id: str) -> None:
        with self._lock:
            for session in [s for s in self._sessions.values() if (s.user_id, s.runner_id) == (user_id, runner_id)]:
                self._close_locked(session, "runner deleted")
            self._dispatch_locked()

    # caller side

    def submit(
        self,
        user_id: str,
        selector: frozenset[str],
        payload: bytes,
        timeout: float,
        wait: float,
        description: str,
        abandoned: threading.Event | None = None,
    ) -> tuple[bytes, str]:
        """Run one item and return (result, runner id); waits at most `wait` seconds, and stops
        waiting (cancelling the item on its runner) as soon as `abandoned` is set."""
        item = Item(new_id(), user_id, selector, payload, timeout, time.monotonic() + wait, description)
        with self._lock:
            self._items[item.id] = item
            self._pending.append(item)
            self._dispatch_locked()
        while not item.done.wait(min(0.1, max(item.deadline - time.monotonic(), 0.0))):
            if abandoned is not None and abandoned.is_set():
                self.cancel(item.id, "the caller went away")
                break
            if time.monotonic() >= item.deadline:
                break
        with self._lock:
            if not item.done.is_set():
                self._expire_locked(item)
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result, item.runner_id

    def cancel(self, item_id: str, reason: str) -> None:
        with self._lock:
            item = self._items.get(item_id)
            if item is not None and not item.done.is_set():
                item.error = DeadlineExceeded(f"{item.description}: {reason}")
                self._withdraw_locked(item, reason)
                self._finish_locked(item)

    # internals (all under self._lock)

    def _finish_locked(self, item: Item) -> None:
        item.done.set()
        self._items.pop(item.id, None)

    def _withdraw_locked(self, item: Item, reason: str) -> None:
        try:
            self._pending.remove(item)
        except ValueError:
            pass
        if item.session is not None:
            item.session.in_flight.pop(item.id, None)
            item.session.zombies.add(item.id)
            item.session.send(Cancel(item.id, reason))
            item.session = None

    def _expire_locked(self, item: Item) -> None:
        if item.ever_matched:
            item.error = DeadlineExceeded(
                f"{item.description} did not answer before the deadline "
                f"(tried {item.attempts + 1} time(s)); pass a longer timeout or add runners"
            )
        else:
            labels = ", ".join(sorted(item.selector)) or "(any)"
            item.error = Unavailable(
                f"no runner serves {item.description}: start a runner whose labels include {labels} "
                f"(pellucid runner start ...)",
                reason="NO_RUNNER",
            )
        self._withdraw_locked(item, "the caller's deadline passed")
        self._finish_locked(item)

    def _eligible(self, item: Item) -> list[Session]:
        return [
            s
            for s in self._sessions.values()
            if not s.closed and s.user_id == item.user_id and item.selector <= s.labels
        ]

    def _dispatch_locked(self) -> None:
        now = time.monotonic()
        waiting: collections.deque[Item] = collections.deque()
        while self._pending:
            item = self._pending.popleft()
            if item.done.is_set():
                continue
            matching = self._eligible(item)
            item.ever_matched = item.ever_matched or bool(matching)
            free = [s for s in matching if not s.draining and len(s.in_flight) + len(s.zombies) < s.capacity]
            if not free:
                waiting.append(item)
                continue
            # sessions that have not held this item first, then the least loaded, then the least recent
            session = min(
                free, key=lambda s: (s.id in item.tried, (len(s.in_flight) + len(s.zombies)) / s.capacity, s.dispatched)
            )
            session.dispatched = next(self._order)
            item.tried.add(session.id)
            item.session = session
            item.lease_until = now + item.timeout
            session.in_flight[item.id] = now
            session.send(Dispatch(item.id, time.time() + item.timeout, item.payload))
        self._pending = waiting

    def _watch(self, tick: float) -> None:
        while not self._stop.wait(tick):
            now = time.monotonic()
            with self._lock:
                for session in list(self._sessions.values()):
                    if now - session.last_seen > self._session_timeout:
                        self._close_locked(session, "no heartbeat")
                for item in list(self._items.values()):
                    if item.done.is_set():
                        continue
                    if now >= item.deadline:
                        self._expire_locked(item)
                    elif item.session is not None and now >= item.lease_until:
                        item.attempts += 1
                        self._withdraw_locked(item, f"not answered within {item.timeout:g}s")
                        self._pending.appendleft(item)
                self._dispatch_locked()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            for session in list(self._sessions.values()):
                self._close_locked(session, "server stopping")
            for item in list(self._items.values()):
                item.error = Unavailable("the server is stopping")
                self._finish_locked(item)
