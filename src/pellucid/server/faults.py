"""Test-only crash points: the server process dies at a chosen place, as in a power cut.

`PELLUCID_FAULT=crash-after-commit:CreateApp` (several comma-separated) is read once when
a server starts (`configure`). At a named point of a named RPC the process then ends at
once with `os._exit(137)`, the status of a SIGKILL: no cleanup, no response sent, an open
SQLite transaction left uncommitted. The crash tests (tests/test_exactly_once.py) use it
to show that a retry gets the stored answer whatever the moment of the crash.

Points, in every `replayable` RPC called with a request id (grpc/idempotency.py):
`crash-before-commit` (the mutation and its request-log entry are written but not
committed) and `crash-after-commit` (committed, the response not yet sent); CreatePat has
`crash-after-commit` too. Unset (always, outside tests) a check is one truth test of an
empty set.
"""

from __future__ import annotations

import logging
import os

POINTS = ("crash-before-commit", "crash-after-commit")
CRASH_EXIT_CODE = 137

log = logging.getLogger("pellucid.server")

_armed: frozenset[tuple[str, str]] = frozenset()


def configure(spec: str) -> None:
    """Arm the points `spec` names ("point:Method,point:Method"); empty disarms them all."""
    global _armed
    armed = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        point, _, method = part.partition(":")
        if point not in POINTS or not method:
            raise ValueError(f"PELLUCID_FAULT: {part!r} is not point:Method with a point among {', '.join(POINTS)}")
        armed.add((point, method))
    _armed = frozenset(armed)
    if armed:
        log.warning("PELLUCID_FAULT is set: this server will crash on purpose at %s (for tests only)", spec)


def crash_point(point: str, method: str) -> None:
    """End the process here if `point` is armed for `method`."""
    if _armed and (point, method) in _armed:
        os._exit(CRASH_EXIT_CODE)
