"""The request log: a mutation carrying a request id runs once, however often it is retried.

An attempt first claims its request id (committed at once, so that a concurrent retry
waits for it instead of running too), then runs inside `attempt()`: the mutation's writes
and the response it logs commit in one transaction. A crash before that commit leaves
nothing but the claim, released once its server process (replica) is known to be gone
(`release_gone_replicas`: at once when the restarted server owns the store alone, after the
heartbeat bound when replicas share it) so the retry runs afresh; a crash after it leaves the response, which the retry replays.

Why the claim is a transaction of its own rather than the unit's first write: the unit
holds the store's writer from its first write to its end, and a claim taken at the start
would hold it through everything the request does before it writes (URL fetches, hashing,
blob writes). A claim left behind by a crash costs nothing: it is released with its replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pellucid.server.engine.access import Principal
from pellucid.server.engine.errors import Aborted, InvalidArgument
from pellucid.server.engine.ids import new_id
from pellucid.server.engine.validation import check_text
from pellucid.server.storage import ClaimOutcome, RequestLogStore

MAX_REQUEST_ID_LENGTH = 128


class ClaimLost(Exception):
    """Another attempt took this attempt's claim over (it had looked stale): this one's writes
    were rolled back; claim again to get that attempt's outcome."""


class RequestLog:
    STALE_AFTER = 120.0  # a claim older than this is from a crashed attempt: take it over
    RETENTION = 24 * 3600.0
    PURGE_EVERY = 600.0
    POLL_INTERVAL = 0.02

    def __init__(self, store: RequestLogStore, clock: Callable[[], float] = time.time, replica_id: str = "") -> None:
        self._store = store
        self._replica_id = replica_id  # the server process whose attempts claim: see release_gone_replicas
        self._clock = clock
        self._last_purge = 0.0

    def claim(self, principal: Principal, request_id: str, method: str, wait: float) -> tuple[bytes | None, str]:
        """(None, owner): run the request now, then `finish` or `release` it as `owner`.
        (bytes, ""): the stored response of an earlier attempt, to replay.

        While an earlier attempt is still running, waits up to `wait` seconds for it.
        """
        owner = new_id()
        check_text(request_id, "request_id", MAX_REQUEST_ID_LENGTH)
        now = self._clock()
        if now - self._last_purge > self.PURGE_EVERY:
            self._last_purge = now
            self._store.purge_requests(now - self.RETENTION)
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            claim = self._store.claim_request(
                principal.user_id, request_id, method, self._clock(), self.STALE_AFTER, owner, self._replica_id
            )
            if claim.outcome is ClaimOutcome.CLAIMED:
                return None, owner
            if claim.outcome is ClaimOutcome.DONE:
                return claim.response, ""
            if claim.outcome is ClaimOutcome.OTHER_METHOD:
                raise InvalidArgument(
                    f"request_id {request_id!r} was already used for a different call: use a new request id per call",
                    reason="REQUEST_ID_REUSED",
                    field="request_id",
                )
            if time.monotonic() >= deadline:
                raise Aborted(
                    f"request {request_id!r} is still being processed by an earlier attempt: retry later",
                    reason="REQUEST_IN_PROGRESS",
                )
            time.sleep(self.POLL_INTERVAL)

    @contextmanager
    def attempt(self, principal: Principal, request_id: str, owner: str) -> Iterator[Callable[[bytes], None]]:
        """Run a claimed attempt: its writes and the response given to the `record` it yields
        commit together when the block ends (the store's `unit_of_work`).

        The block raising rolls its writes back and releases the claim, so a retry runs it
        afresh; ClaimLost means another attempt owns the request now. A block that ends
        without recording its response is rolled back too: committing it would apply the
        mutation with nothing for a retry to replay.
        """
        recorded = False

        def record(response: bytes) -> None:
            nonlocal recorded
            if not self._store.finish_request(principal.user_id, request_id, response, self._clock(), owner):
                raise ClaimLost(request_id)
            recorded = True

        try:
            with self._store.unit_of_work():
                yield record
                if not recorded:
                    raise RuntimeError(f"request {request_id!r}: the attempt ended without recording its response")
        except ClaimLost:
            raise
        except BaseException:
            self.release(principal, request_id, owner)
            raise

    def release(self, principal: Principal, request_id: str, owner: str) -> None:
        """The attempt failed without applying anything: a retry may run it afresh."""
        self._store.release_request(principal.user_id, request_id, owner)
