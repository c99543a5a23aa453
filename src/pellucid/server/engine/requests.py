"""The request log: a mutation carrying a request id runs once, however often it is retried."""

from __future__ import annotations

import time
from collections.abc import Callable

from pellucid.server.engine.access import Principal
from pellucid.server.engine.errors import Aborted, InvalidArgument
from pellucid.server.engine.ids import new_id
from pellucid.server.engine.validation import check_text
from pellucid.server.storage import ClaimOutcome, MetadataStore

MAX_REQUEST_ID_LENGTH = 128


class RequestLog:
    STALE_AFTER = 120.0  # a claim older than this is from a crashed attempt: take it over
    RETENTION = 24 * 3600.0
    PURGE_EVERY = 600.0
    POLL_INTERVAL = 0.02

    def __init__(self, store: MetadataStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
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
            claim = self._store.claim_request(principal.user_id, request_id, method, self._clock(), self.STALE_AFTER,
                                              owner)
            if claim.outcome is ClaimOutcome.CLAIMED:
                return None, owner
            if claim.outcome is ClaimOutcome.DONE:
                return claim.response, ""
            if claim.outcome is ClaimOutcome.OTHER_METHOD:
                raise InvalidArgument(
                    f"request_id {request_id!r} was already used for a different call: use a new request id per call",
                    reason="REQUEST_ID_REUSED", field="request_id",
                )
            if time.monotonic() >= deadline:
                raise Aborted(
                    f"request {request_id!r} is still being processed by an earlier attempt: retry later",
                    reason="REQUEST_IN_PROGRESS",
                )
            time.sleep(self.POLL_INTERVAL)

    def finish(self, principal: Principal, request_id: str, response: bytes, owner: str) -> None:
        self._store.finish_request(principal.user_id, request_id, response, self._clock(), owner)

    def release(self, principal: Principal, request_id: str, owner: str) -> None:
        """The attempt failed without applying anything: a retry may run it afresh."""
        self._store.release_request(principal.user_id, request_id, owner)
