"""A thread pool shared by owners (users) that serves them in turns, so one owner's slow or stuck
tasks cannot hold every thread: workflow deployments' runs, and URL fetches of ingestion."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

from pellucid.server.engine.errors import Unavailable

T = TypeVar("T")


class FairPool(Generic[T]):
    """Up to `workers` threads (started as tasks come), taking owners' tasks in turns, at most
    `per_owner` of one owner's at a time; threads are daemons, so a stuck run never holds up
    the process's exit.

    The last `reserve` free threads go only to owners with nothing running. A cap per owner
    alone lets a few owners with stuck runs (workers / per_owner of them) fill the pool; a
    share that shrinks as owners arrive cannot take back threads already given. A reserve
    holds whatever the owners already running do: their runs together hold at most
    `workers - reserve` threads, so an owner arriving next is answered at once, and up to
    `reserve` of them at a time, each with one thread until the others end. (No finite pool
    outlasts unboundedly many owners with stuck runs: those end at their call's deadline.)"""

    def __init__(self, workers: int, per_owner: int, name: str, reserve: int | None = None) -> None:
        self._workers = workers
        self._per_owner = per_owner
        self._reserve = min(max(1, workers // 8) if reserve is None else reserve, workers - 1)
        self._name = name
        self._lock = threading.Condition()
        self._queues: collections.OrderedDict[str, collections.deque[tuple[Future[T], Callable[[], T]]]] = (
            collections.OrderedDict()
        )
        self._running: collections.Counter[str] = collections.Counter()
        self._busy = 0  # threads running a task, of every owner
        self._threads = 0
        self._idle = 0
        self._closed = False

    def submit(self, owner: str, fn: Callable[..., T], *args: object) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise Unavailable("the server is stopping: retry on another replica or once it is back")
            self._queues.setdefault(owner, collections.deque()).append((future, lambda: fn(*args)))
            if self._idle:  # counted off here, so the next task wakes (or starts) another thread
                self._idle -= 1
                self._lock.notify()
            elif self._threads < self._workers:
                self._threads += 1
                threading.Thread(target=self._work, name=f"{self._name}-{self._threads}", daemon=True).start()
        return future

    def close(self) -> None:
        """Cancel the tasks not started; threads end once their task has."""
        with self._lock:
            self._closed = True
            for queue in self._queues.values():
                for future, _ in queue:
                    future.cancel()
            self._queues.clear()
            self._lock.notify_all()

    def _take(self) -> tuple[str, tuple[Future[T], Callable[[], T]]] | None:
        """The next task: of the first owner in turn with one waiting and a thread to spare (an
        owner with runs may not take the reserve)."""
        spare = self._workers - self._busy > self._reserve
        for owner, queue in self._queues.items():
            running = self._running[owner]
            if running < self._per_owner and (spare or not running):
                task = queue.popleft()
                if queue:
                    self._queues.move_to_end(owner)  # its next task waits for the other owners'
                else:
                    del self._queues[owner]
                self._running[owner] += 1
                self._busy += 1
                return owner, task
        return None

    def _work(self) -> None:
        with self._lock:
            while True:
                taken = self._take()
                if taken is None:
                    if self._closed:
                        self._threads -= 1
                        return
                    self._idle += 1
                    self._lock.wait()  # submit counts it off as it wakes it
                    continue
                owner, (future, task) = taken
                self._lock.release()
                try:
                    if future.set_running_or_notify_cancel():
                        try:
                            future.set_result(task())
                        except BaseException as exc:  # noqa: BLE001 - the caller's result() raises it
                            future.set_exception(exc)
                finally:
                    del taken, future, task  # an idle thread holds no task's closure or result
                    self._lock.acquire()
                    self._running[owner] -= 1
                    self._busy -= 1
                    if not self._running[owner]:
                        del self._running[owner]
                    if self._queues and self._idle:  # an ended task can let two others start (its
                        self._idle -= 1  # owner's, now with nothing running, and one for the spare)
                        self._lock.notify()
