"""Hosted data seen from inside an algorithm call: which algorithm is calling, and `data://.algo`.

A runner signs in with its owner's token, so what tells an algorithm's requests apart from its
owner's is the call it serves: while a runner serves an algorithm call, its client sends the
call id (header `x-pellucid-algorithm-call`, pellucid.client.algo.serving_call) with every
request. The server believes the id only if the call exists, its algorithm belongs to the user
whose token came with it (the runner's owner: someone else's call id sent with another token is
refused, so a leaked call id gives nothing), and it started at most MAX_CALL_SECONDS ago (the
longest a call may wait for its runner). Such a request reads as the algorithm, not as its
owner: the owner's `my_algos` and `public` collections, not the `private` ones (NOT_FOUND, as
for anyone who may not read a path), and it writes only where it reads. The owner's own scripts
could send the header too; they only lose access by it.

`data://.algo/<path>` inside a call is `data://<owner>/.algo/<algorithm name>/<path>`: one
collection `.algo` per owner (made with ACL my_algos the first time an algorithm names it), a
folder in it per algorithm. Outside a call `data://.algo/` is refused (hosted_data.parse says
where the folder lives).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from pellucid.server.engine.access import Principal
from pellucid.server.engine.errors import PermissionDenied
from pellucid.server.engine.hosted_data import MY_ALGOS, AlgorithmCaller, DataPath
from pellucid.server.engine.ids import validate_id
from pellucid.server.storage import Conflict, MetadataStore

ALGO_COLLECTION = ".algo"
MAX_CALL_SECONDS = 24 * 3600.0 + 60.0  # the longest a call waits for its runner (grpc.models.MAX_RUNNER_WAIT)
_CACHE_SIZE = 1024


class AlgorithmData:
    """The two hooks HostedData takes: `caller` (its algorithm_of) and `resolve` (its resolve_algo)."""

    def __init__(self, store: MetadataStore, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        # (user, call id) -> the algorithm: a call's owner and name never change, only its age does
        self._known: collections.OrderedDict[tuple[str, str], tuple[AlgorithmCaller, float]] = collections.OrderedDict()

    def caller(self, principal: Principal) -> AlgorithmCaller | None:
        """The algorithm a request is made by, None if it names no call; refuses a call id that is
        not a recent call of one of the requesting user's algorithms."""
        call_id = principal.algorithm_call
        if not call_id:
            return None
        key = (principal.user_id, call_id)
        with self._lock:
            known = self._known.get(key)
        if known is None:
            validate_id(call_id, "x-pellucid-algorithm-call")
            call = self._store.get_algorithm_call(call_id)
            if call is None or call.user_id != principal.user_id:
                raise self._refused(call_id)
            known = (AlgorithmCaller(owner=call.user_id, algorithm=call.name), call.created_at)
            with self._lock:
                self._known[key] = known
                while len(self._known) > _CACHE_SIZE:
                    self._known.popitem(last=False)
        if self._clock() - known[1] > MAX_CALL_SECONDS:
            raise self._refused(call_id)
        return known[0]

    @staticmethod
    def _refused(call_id: str) -> PermissionDenied:
        return PermissionDenied(
            f"algorithm call {call_id!r} is not a call in progress of one of your algorithms: only the runner"
            " serving a call (signed in as the algorithm's owner) acts for it",
            reason="NOT_ALGORITHM_CALL",
            field="x-pellucid-algorithm-call",
        )

    def resolve(self, principal: Principal, names: tuple[str, ...]) -> DataPath | None:
        """`data://.algo/<names>` inside a call: the calling algorithm's folder, made if missing."""
        algorithm = self.caller(principal)
        if algorithm is None:
            return None
        folder = [ALGO_COLLECTION, algorithm.algorithm]
        entries = self._store.data_lookup(algorithm.owner, folder)
        while len(entries) < len(folder):
            depth = len(entries)
            parent = entries[-1].seq if entries else None
            acl = MY_ALGOS if depth == 0 else ""
            try:
                self._store.data_insert_dir(algorithm.owner, parent, folder[depth], acl, self._clock())
            except Conflict:  # made meanwhile by another call
                pass
            entries = self._store.data_lookup(algorithm.owner, folder)
            if len(entries) <= depth:  # a file by that name, or deleted meanwhile: the path reads as missing
                break
        return DataPath(algorithm.owner, (*folder, *names))


__all__ = ["ALGO_COLLECTION", "MAX_CALL_SECONDS", "AlgorithmData"]
