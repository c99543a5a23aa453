"""The threads that run gRPC handlers, without keeping the interpreter alive at exit.

`concurrent.futures.ThreadPoolExecutor` joins its threads when the interpreter exits, before
`atexit` handlers run. The embedded server stops from an `atexit` handler, and its handlers
include calls that last as long as their caller likes (a runner's connection, a health
watch): a script using the embedded server could not exit while another process held such a
call, because the stop that would end them never ran. These threads are daemons; the server's
stop cancels the calls and drains this pool before it closes the stores.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any


class HandlerPool(futures.Executor):
    """At most `max_workers` daemon threads, started as work arrives, reused while they last."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "pellucid-rpc") -> None:
        self._max_workers = max_workers
        self._prefix = thread_name_prefix
        self._work: queue.SimpleQueue[tuple[futures.Future[Any], Callable[..., Any], tuple, dict] | None] = (
            queue.SimpleQueue()
        )
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._shut_down = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        future: futures.Future[Any] = futures.Future()
        with self._lock:
            if self._shut_down:
                raise RuntimeError("the handler pool is shut down")
            self._work.put((future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max_workers:
                thread = threading.Thread(target=self._run, name=f"{self._prefix}_{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        return future

    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - handed to the future, as ThreadPoolExecutor does
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del item, future, fn, args, kwargs
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if not self._shut_down:
                self._shut_down = True
                if cancel_futures:
                    while True:
                        try:
                            item = self._work.get_nowait()
                        except queue.Empty:
                            break
                        if item is not None:
                            item[0].cancel()
                for _ in self._threads:
                    self._work.put(None)
            threads = list(self._threads)
        if wait:
            for thread in threads:
                thread.join()
