"""The count of each user's predicts in flight, shared by every adapter that admits them.

gRPC (grpc/limits.py), the HTTP deployment endpoint and the Open Inference Protocol's REST
routes (server/http) all cap a user's predicts in flight at max_predicts_per_user; counted
apart, a user could hold the cap on each path at once. One counter per engine is what makes
the cap one cap.
"""

from __future__ import annotations

import threading


def user_caller(user_id: str) -> str:
    """How a user is named in the counts (and in the messages of a refused call)."""
    return f"user {user_id!r}"


class PredictsInFlight:
    """Predicts in flight per caller; each adapter gives its cap when it admits a call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def acquire(self, caller: str, cap: int) -> bool:
        """Count one more predict of `caller`; False (and nothing counted) if it holds `cap` already."""
        with self._lock:
            held = self._held.get(caller, 0)
            if held >= cap:
                return False
            self._held[caller] = held + 1
            return True

    def release(self, caller: str) -> None:
        with self._lock:
            left = self._held[caller] - 1
            if left:
                self._held[caller] = left
            else:
                del self._held[caller]

    def held(self, caller: str) -> int:
        with self._lock:
            return self._held.get(caller, 0)
