"""The WorkQueue interface: prediction items waiting for runners, leased to them, answered once.

It speaks in ids, leases and deadlines, never live objects, so that the replica that enqueues
an item, the replica whose runner claims it and the replica whose caller waits for it may be
three different processes. One class per backend implements it, chosen by URI in
`open_work_queue` (storage/registry.py): `memory:` (queue_memory.py) and `postgresql://...`
(queue_postgres.py, shared by replicas), with pgmq's semantics (docs/scale-out.md, "Work queue"):

- `enqueue` is an INSERT (and a NOTIFY on the owner's channel);
- `claim` is `SELECT ... FOR UPDATE SKIP LOCKED LIMIT n` over the items that are visible
  (pending, or whose lease ran out) and whose selector the worker's labels cover, setting
  `lease_until` (the visibility deadline) and counting the attempt;
- `extend` pushes `lease_until` forward for the items a worker still holds (its heartbeats),
  never past the attempt's end (`run_seconds` after the claim), so a hung runner loses its item;
- `complete` and `cancel` are one conditional UPDATE each (the first result wins) and a NOTIFY
  that wakes the waiter; `wait` is LISTEN with a short poll as fallback.

Times are seconds on the queue's clock (the wall clock in production; tests inject a fake one).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

DEFAULT_MAX_ATTEMPTS = 5


class ItemState(enum.Enum):
    PENDING = "pending"  # waiting for a worker (new, released, or its lease ran out)
    LEASED = "leased"  # claimed by a worker until its lease_until
    SUCCEEDED = "succeeded"  # a worker completed it: `result` holds the answer
    CANCELLED = "cancelled"  # the caller gave up (or the server stopped)
    EXPIRED = "expired"  # its deadline passed before any answer
    FAILED = "failed"  # its attempts ran out (max_attempts claims lost their lease)

    @property
    def finished(self) -> bool:
        return self not in (ItemState.PENDING, ItemState.LEASED)


@dataclass(frozen=True)
class NewItem:
    owner: str  # the user whose runners may claim it
    selector: frozenset[str]  # a worker claims it if its labels include all of these
    payload: bytes  # what the worker gets, as it gets it
    deadline: float  # the caller stops waiting then: the item expires
    run_seconds: float  # how long one attempt may take before the item goes to another worker
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


@dataclass(frozen=True)
class Worker:
    """A connected runner stream that claims items: its owner and labels decide which."""

    id: str
    owner: str
    runner_id: str
    labels: frozenset[str]
    capacity: int


@dataclass(frozen=True)
class Lease:
    item_id: str
    payload: bytes
    lease_until: float  # the item becomes claimable again then, unless extended
    attempt_ends: float  # extensions stop here: the attempt took too long
    attempt: int  # 1 for the first claim
    claimed_at: float


@dataclass(frozen=True)
class Outcome:
    item_id: str
    state: ItemState
    result: bytes = b""
    worker_id: str = ""  # the worker that answered (SUCCEEDED) or last held it
    runner_id: str = ""  # that worker's runner
    attempts: int = 0  # claims so far
    message: str = ""  # why it was cancelled or failed


class EventKind(enum.Enum):
    ENQUEUED = "enqueued"  # an item is claimable for `owner` (new, released or its lease ran out)
    FINISHED = "finished"  # an item is answered, cancelled, expired or failed


@dataclass(frozen=True)
class QueueEvent:
    kind: EventKind
    item_id: str
    owner: str
    worker_id: str = ""  # FINISHED: the worker that answered, if any
    reason: str = ""  # FINISHED: why it was cancelled, expired or failed


class UnknownItem(KeyError):
    """No such item (never enqueued, or already forgotten)."""


class WorkQueue(abc.ABC):
    """Items in, leases out, one outcome per item."""

    # how often a replica needs to sweep (`expire`) and poll (`claim` with nothing announced):
    # 0 for a queue in this process (cheap: every tick); a shared queue's events come by
    # notification, so its polls are only the fallback and need not load the database
    poll_seconds: float = 0.0

    # callers

    @abc.abstractmethod
    def enqueue(self, item: NewItem) -> str:
        """Store an item; returns its id."""

    @abc.abstractmethod
    def cancel(self, item_id: str, reason: str) -> bool:
        """Finish an unfinished item as CANCELLED; False if it had finished already."""

    @abc.abstractmethod
    def wait(self, item_id: str, timeout: float) -> Outcome | None:
        """The item's outcome once finished; None if it is still unfinished after `timeout` seconds."""

    @abc.abstractmethod
    def on_finished(self, item_id: str, callback: Callable[[Outcome], None]) -> None:
        """Call `callback(outcome)` once when the item finishes (at once if it has): an async
        caller resolves a future from it instead of holding a thread in `wait`."""

    @abc.abstractmethod
    def forget(self, item_id: str) -> None:
        """Drop a finished item once its caller has its outcome (pgmq: delete or archive)."""

    # workers

    @abc.abstractmethod
    def register_worker(self, worker: Worker) -> None:
        """A runner stream opened: it may now claim."""

    @abc.abstractmethod
    def unregister_worker(self, worker_id: str) -> list[str]:
        """A runner stream closed: the items it held are released at once; returns their ids."""

    @abc.abstractmethod
    def workers(self, owner: str) -> list[Worker]:
        """The owner's registered workers (on every replica)."""

    @abc.abstractmethod
    def claim(self, worker_id: str, limit: int, visibility_seconds: float) -> list[Lease]:
        """Lease up to `limit` claimable items whose selector the worker's labels cover, oldest
        first, until `visibility_seconds` from now (at most the attempt's end)."""

    @abc.abstractmethod
    def extend(self, worker_id: str, item_ids: Iterable[str], visibility_seconds: float) -> frozenset[str]:
        """Heartbeat: push the leases the worker still holds forward; returns the ids it still holds
        (an item missing was answered elsewhere, cancelled, or its lease ran out)."""

    @abc.abstractmethod
    def release(self, worker_id: str, item_ids: Iterable[str]) -> None:
        """Give items back at once (claimable again); ids the worker does not hold are ignored."""

    @abc.abstractmethod
    def complete(self, item_id: str, worker_id: str, result: bytes) -> bool:
        """Record an answer; the first one wins (also from a worker whose lease ran out). False if
        the item had finished already (or is unknown)."""

    # upkeep and notifications

    @abc.abstractmethod
    def expire(self) -> list[Outcome]:
        """Finish the items whose deadline passed (EXPIRED), or whose lease ran out with no attempts
        left (FAILED), and make lapsed leases claimable; returns the items finished."""

    @abc.abstractmethod
    def subscribe(self, listener: Callable[[QueueEvent], None]) -> Callable[[], None]:
        """Call `listener` on every event (LISTEN/NOTIFY); returns a function that unsubscribes.
        Listeners are called outside the queue's locks and must not block."""

    @abc.abstractmethod
    def close(self, reason: str = "the server is stopping") -> None:
        """Cancel what is unfinished (waiters wake) and release resources."""


__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "EventKind",
    "ItemState",
    "Lease",
    "NewItem",
    "Outcome",
    "QueueEvent",
    "UnknownItem",
    "WorkQueue",
    "Worker",
]
