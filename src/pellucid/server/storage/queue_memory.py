"""The in-memory WorkQueue (`memory:`): one process, today's speed.

Everything sits under one lock: per owner an ordered dict of claimable items (oldest first;
released and lapsed items go back to the front), a heap of lease deadlines (lapsed leases
are found lazily, on the next claim, heartbeat or expiry sweep), and per item an Event its
waiter sleeps on. Listeners are called after the lock is released.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

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


@dataclass(eq=False)
class _Item:
    id: str
    spec: NewItem
    state: ItemState = ItemState.PENDING
    attempts: int = 0
    worker_id: str = ""  # the current (or last) holder
    runner_id: str = ""
    lease_until: float = 0.0
    attempt_ends: float = 0.0
    result: bytes = b""
    message: str = ""
    done: threading.Event = field(default_factory=threading.Event)
    callbacks: list[Callable[[Outcome], None]] = field(default_factory=list)

    def outcome(self) -> Outcome:
        return Outcome(self.id, self.state, self.result, self.worker_id, self.runner_id, self.attempts, self.message)


class MemoryWorkQueue(WorkQueue):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._items: dict[str, _Item] = {}
        self._claimable: dict[str, OrderedDict[str, None]] = {}  # owner -> item ids
        self._leases: list[tuple[float, int, str]] = []  # (lease_until, tie-break, item id)
        self._order = itertools.count()
        self._workers: dict[str, Worker] = {}
        self._held: dict[str, set[str]] = {}  # worker id -> item ids it holds
        self._listeners: list[Callable[[QueueEvent], None]] = []
        self._closed = False

    # callers

    def enqueue(self, item: NewItem) -> str:
        record = _Item(os.urandom(16).hex(), item)
        with self._lock:
            if self._closed:
                record.state, record.message = ItemState.CANCELLED, "the queue is closed"
                self._items[record.id] = record
                record.done.set()
                return record.id
            self._items[record.id] = record
            self._line_locked(item.owner)[record.id] = None
        self._emit([QueueEvent(EventKind.ENQUEUED, record.id, item.owner)])
        return record.id

    def cancel(self, item_id: str, reason: str) -> bool:
        events: list[QueueEvent] = []
        with self._lock:
            item = self._items.get(item_id)
            if item is None or item.state.finished:
                return False
            self._finish_locked(item, ItemState.CANCELLED, reason, events)
        self._emit(events)
        return True

    def wait(self, item_id: str, timeout: float) -> Outcome | None:
        item = self._items.get(item_id)
        if item is None:
            raise UnknownItem(item_id)
        if not item.done.wait(max(timeout, 0.0)):
            return None
        return item.outcome()

    def on_finished(self, item_id: str, callback: Callable[[Outcome], None]) -> None:
        with self._lock:
            item = self._items.get(item_id)
            if item is None:
                raise UnknownItem(item_id)
            if not item.state.finished:
                item.callbacks.append(callback)
                return
        callback(item.outcome())

    def forget(self, item_id: str) -> None:
        with self._lock:
            item = self._items.get(item_id)
            if item is not None and item.state.finished:
                del self._items[item_id]

    # workers

    def register_worker(self, worker: Worker) -> None:
        with self._lock:
            self._workers[worker.id] = worker
            self._held.setdefault(worker.id, set())

    def unregister_worker(self, worker_id: str) -> list[str]:
        events: list[QueueEvent] = []
        with self._lock:
            self._workers.pop(worker_id, None)
            held = sorted(self._held.pop(worker_id, set()))
            for item_id in held:
                item = self._items.get(item_id)
                if item is not None and item.state is ItemState.LEASED and item.worker_id == worker_id:
                    self._make_claimable_locked(item, events)
        self._emit(events)
        return held

    def workers(self, owner: str) -> list[Worker]:
        with self._lock:
            return [w for w in self._workers.values() if w.owner == owner]

    def claim(self, worker_id: str, limit: int, visibility_seconds: float) -> list[Lease]:
        events: list[QueueEvent] = []
        leases: list[Lease] = []
        with self._lock:
            worker = self._workers.get(worker_id)
            if worker is None or limit <= 0:
                return []
            now = self._clock()
            self._reclaim_locked(now, events)
            claimable = self._claimable.get(worker.owner)
            if claimable:
                taken: list[_Item] = []
                expired: list[_Item] = []
                for item_id in claimable:  # oldest first; changed after the loop
                    item = self._items[item_id]
                    if now >= item.spec.deadline:
                        expired.append(item)
                    elif item.spec.selector <= worker.labels:
                        taken.append(item)
                        if len(taken) >= limit:
                            break
                for item in expired:
                    self._finish_locked(item, ItemState.EXPIRED, "its deadline passed", events)
                held = self._held[worker.id]
                for item in taken:
                    del claimable[item.id]
                    item.state, item.worker_id, item.runner_id = ItemState.LEASED, worker.id, worker.runner_id
                    item.attempts += 1
                    item.attempt_ends = now + item.spec.run_seconds
                    item.lease_until = min(now + visibility_seconds, item.attempt_ends)
                    heapq.heappush(self._leases, (item.lease_until, next(self._order), item.id))
                    held.add(item.id)
                    leases.append(
                        Lease(item.id, item.spec.payload, item.lease_until, item.attempt_ends, item.attempts, now)
                    )
        self._emit(events)
        return leases

    def extend(self, worker_id: str, item_ids: Iterable[str], visibility_seconds: float) -> frozenset[str]:
        events: list[QueueEvent] = []
        kept: set[str] = set()
        with self._lock:
            now = self._clock()
            self._reclaim_locked(now, events)
            held = self._held.get(worker_id, set())
            for item_id in item_ids:
                item = self._items.get(item_id)
                if item_id not in held or item is None or item.state is not ItemState.LEASED:
                    continue
                until = min(now + visibility_seconds, item.attempt_ends)
                if until > item.lease_until:
                    item.lease_until = until
                    heapq.heappush(self._leases, (until, next(self._order), item.id))
                kept.add(item_id)
        self._emit(events)
        return frozenset(kept)

    def release(self, worker_id: str, item_ids: Iterable[str]) -> None:
        events: list[QueueEvent] = []
        with self._lock:
            held = self._held.get(worker_id, set())
            for item_id in item_ids:
                item = self._items.get(item_id)
                if item_id in held and item is not None and item.state is ItemState.LEASED:
                    self._make_claimable_locked(item, events)
        self._emit(events)

    def complete(self, item_id: str, worker_id: str, result: bytes) -> bool:
        events: list[QueueEvent] = []
        with self._lock:
            item = self._items.get(item_id)
            if item is None:
                return False
            holder = self._held.get(worker_id)
            if holder is not None:
                holder.discard(item_id)
            if item.state.finished:
                return False
            if item.worker_id and item.worker_id != worker_id:
                self._drop_hold_locked(item.worker_id, item_id)
            worker = self._workers.get(worker_id)
            item.worker_id = worker_id
            item.runner_id = worker.runner_id if worker is not None else item.runner_id
            item.result = result
            self._finish_locked(item, ItemState.SUCCEEDED, "", events)
        self._emit(events)
        return True

    # upkeep and notifications

    def expire(self) -> list[Outcome]:
        events: list[QueueEvent] = []
        with self._lock:
            now = self._clock()
            self._reclaim_locked(now, events)
            for item in list(self._items.values()):
                if not item.state.finished and now >= item.spec.deadline:
                    self._finish_locked(item, ItemState.EXPIRED, "its deadline passed", events)
            finished = [self._items[e.item_id].outcome() for e in events if e.kind is EventKind.FINISHED]
        self._emit(events)
        return finished

    def subscribe(self, listener: Callable[[QueueEvent], None]) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def close(self, reason: str = "the server is stopping") -> None:
        events: list[QueueEvent] = []
        with self._lock:
            self._closed = True
            for item in list(self._items.values()):
                if not item.state.finished:
                    self._finish_locked(item, ItemState.CANCELLED, reason, events)
        self._emit(events)

    # internals

    def _emit(self, events: list[QueueEvent]) -> None:
        if not events:
            return
        for listener in list(self._listeners):
            for event in events:
                listener(event)
        for event in events:
            if event.kind is EventKind.FINISHED:
                item = self._items.get(event.item_id)
                if item is not None:
                    callbacks, item.callbacks = item.callbacks, []
                    for callback in callbacks:
                        callback(item.outcome())

    def _finish_locked(self, item: _Item, state: ItemState, message: str, events: list[QueueEvent]) -> None:
        answered_by = item.worker_id if state is ItemState.SUCCEEDED else ""
        if item.state is ItemState.LEASED and state is not ItemState.SUCCEEDED:
            self._drop_hold_locked(item.worker_id, item.id)
        elif item.state is ItemState.PENDING:
            claimable = self._claimable.get(item.spec.owner)
            if claimable is not None:
                claimable.pop(item.id, None)
        item.state, item.message = state, message
        item.done.set()
        events.append(QueueEvent(EventKind.FINISHED, item.id, item.spec.owner, answered_by, message))

    def _line_locked(self, owner: str) -> OrderedDict[str, None]:
        """The owner's claimable items, oldest first."""
        line = self._claimable.get(owner)
        if line is None:
            line = self._claimable[owner] = OrderedDict()
        return line

    def _drop_hold_locked(self, worker_id: str, item_id: str) -> None:
        held = self._held.get(worker_id)
        if held is not None:
            held.discard(item_id)

    def _make_claimable_locked(self, item: _Item, events: list[QueueEvent]) -> None:
        """The holder let go (or its lease ran out): to the front of the line, or failed if out of attempts."""
        self._drop_hold_locked(item.worker_id, item.id)
        if item.attempts >= item.spec.max_attempts:
            self._finish_locked(
                item,
                ItemState.FAILED,
                f"not answered in {item.attempts} attempts (each runner that took it stopped or ran out of time)",
                events,
            )
            return
        item.state = ItemState.PENDING
        item.lease_until = 0.0
        claimable = self._line_locked(item.spec.owner)
        claimable[item.id] = None
        claimable.move_to_end(item.id, last=False)
        events.append(QueueEvent(EventKind.ENQUEUED, item.id, item.spec.owner))

    def _reclaim_locked(self, now: float, events: list[QueueEvent]) -> None:
        while self._leases and self._leases[0][0] <= now:
            until, _, item_id = heapq.heappop(self._leases)
            item = self._items.get(item_id)
            if item is not None and item.state is ItemState.LEASED and item.lease_until == until:
                self._make_claimable_locked(item, events)
