"""Store health: probe each store every few seconds and say NOT_SERVING over gRPC health while one fails.

A load balancer health-checking a replica takes it out of rotation while its PostgreSQL or
S3 does not answer, and back once they do; the replica itself is never restarted (the
stores' connection pools reconnect by themselves). Calls made meanwhile still run: those
that need the failing store get UNAVAILABLE from the stores, and the others are answered.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from grpc_health.v1 import health, health_pb2

log = logging.getLogger("pellucid.server.health")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class StoreProbe:
    """One store's quick probe: returns when the store answers, raises (any exception) when not."""

    name: str
    probe: Callable[[], None]


class HealthMonitor:
    """Runs every probe each `interval` seconds (each within `probe_timeout`), and sets the
    health status of every name in `services` ("" is the server as a whole) to SERVING when
    all pass, NOT_SERVING when one fails, logging which store fails and why."""

    def __init__(
        self,
        health_servicer: health.HealthServicer,
        services: Sequence[str],
        probes: Sequence[StoreProbe],
        interval: float,
        probe_timeout: float = 5.0,
    ) -> None:
        self._health = health_servicer
        self._services = list(services)
        self._probes = list(probes)
        self._interval = interval
        self._probe_timeout = probe_timeout
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._failing: dict[str, str] = {}  # store name -> why it failed
        self._workers: dict[str, _ProbeWorker] = {}
        self._thread: threading.Thread | None = None

    @property
    def serving(self) -> bool:
        with self._changed:
            return not self._failing

    @property
    def failing(self) -> dict[str, str]:
        """The stores failing their probe now, with the reason."""
        with self._changed:
            return dict(self._failing)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pellucid-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for worker in self._workers.values():
            worker.close()
        self._workers.clear()

    def wait_until(self, serving: bool, timeout: float) -> bool:
        """Block until the status is `serving` (True) or not (False), at most `timeout` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: (not self._failing) == serving, timeout)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check_now()
            except Exception:  # the monitor must outlive any surprise; the next round tries again
                log.exception("store health check failed")

    def check_now(self) -> dict[str, str]:
        """Probe every store once, update the health status, and return the failing stores."""
        failing = {}
        for probe in self._probes:
            reason = self._probe(probe)
            if reason is not None:
                failing[probe.name] = reason
        with self._changed:
            before, self._failing = self._failing, failing
            for name, reason in failing.items():
                if before.get(name) != reason:
                    log.warning("the %s store is unavailable: %s; health is NOT_SERVING", name, reason)
            for name in before.keys() - failing.keys():
                log.info("the %s store answers again", name)
            if bool(before) != bool(failing):
                status = NOT_SERVING if failing else SERVING
                for service in self._services:
                    self._health.set(service, status)
                if not failing:
                    log.info("every store answers: health is SERVING")
            self._changed.notify_all()
        return failing

    def _probe(self, probe: StoreProbe) -> str | None:
        """Why `probe` failed, or None. A probe that hangs (a network that drops packets) counts as
        failed after probe_timeout; it is not started again until it returns."""
        worker = self._workers.get(probe.name)
        if worker is None:
            worker = self._workers[probe.name] = _ProbeWorker(probe)
        if worker.busy:
            return f"its probe has not returned for over {self._probe_timeout:g} s"
        error = worker.run(self._probe_timeout)
        if error is _NO_ANSWER:
            return f"no answer within {self._probe_timeout:g} s"
        if error is None:
            return None
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


_NO_ANSWER = TimeoutError("no answer")


class _ProbeWorker:
    """One long-lived thread per store runs its probes: a store that keeps a connection per thread
    (SQLite) then opens one for the monitor, not one per probe."""

    def __init__(self, probe: StoreProbe) -> None:
        self._probe = probe
        self._requested = threading.Semaphore(0)
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self.busy = False
        threading.Thread(target=self._serve, name=f"pellucid-health-{probe.name}", daemon=True).start()

    def run(self, timeout: float) -> BaseException | None:
        """The probe's exception (None: it passed), or _NO_ANSWER if it did not return in `timeout` s."""
        self.busy = True
        self._done.clear()
        self._requested.release()
        if not self._done.wait(timeout):
            return _NO_ANSWER
        return self._error

    def close(self) -> None:
        """The thread ends (after the probe it runs, if any)."""
        self._closed = True
        self._requested.release()

    def _serve(self) -> None:
        while True:
            self._requested.acquire()
            if self._closed:
                return
            try:
                self._probe.probe()
            except BaseException as exc:  # noqa: BLE001 - any failure means unavailable
                self._error = exc
            else:
                self._error = None
            self.busy = False
            self._done.set()
