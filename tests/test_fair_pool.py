"""FairPool's threads between tasks: they keep nothing of the last task, and end when it closes."""

from __future__ import annotations

import gc
import threading
import time
import weakref

from pellucid.server.engine.fair_pool import FairPool


class Result:
    """A task's result, which only its future should keep alive."""


def test_an_idle_thread_keeps_no_task_or_result_alive() -> None:
    pool: FairPool[Result] = FairPool(2, 1, "test-idle")
    try:
        future = pool.submit("u", Result)
        result = weakref.ref(future.result(5))
        deadline = time.monotonic() + 5
        while pool._idle == 0 and time.monotonic() < deadline:  # the thread is back waiting
            time.sleep(0.01)
        del future
        gc.collect()
        assert result() is None
    finally:
        pool.close()


def test_closing_ends_its_threads() -> None:
    pool: FairPool[int] = FairPool(3, 3, "test-close")
    futures = [pool.submit(owner, lambda: 1) for owner in ("a", "b", "c")]
    assert [f.result(5) for f in futures] == [1, 1, 1]
    pool.close()
    deadline = time.monotonic() + 5
    while any(t.name.startswith("test-close") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name.startswith("test-close") for t in threading.enumerate())
