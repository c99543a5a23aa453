"""Replays the stored response when a mutation is retried with the same request id."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from pellucid.server import faults
from pellucid.server.engine.requests import ClaimLost
from pellucid.server.grpc import context as request_context

M = TypeVar("M", bound=Message)


def replayable(response_type: type[M]) -> Callable:
    """Decorate a servicer method whose request has a `request_id` field.

    The method's writes and its response, stored in the request log, commit in one
    transaction (`RequestLog.attempt`), so a retry after a crash at any moment gets either
    the stored response or a fresh run, never a second application. Keep slow work (network,
    hashing, blob writes) ahead of the method's first store write: from that write until
    the method returns, the metadata store's writer is held for this request.

    The servicer must have an `engine` attribute. Responses holding secrets must not
    use this (they would be stored): token-minting calls replay in the engine instead.
    """

    def decorate(
        method: Callable[[Any, Any, grpc.ServicerContext], M],
    ) -> Callable[[Any, Any, grpc.ServicerContext], M]:
        name = method.__name__

        @functools.wraps(method)
        def run(self: Any, request: Any, context: grpc.ServicerContext) -> M:
            if not request.request_id:
                return method(self, request, context)
            caller = request_context.principal()
            requests = self.engine.requests
            while True:
                wait = min(context.time_remaining() or 0.0, 30.0) - 0.05
                stored, owner = requests.claim(caller, request.request_id, name, wait=wait)
                if stored is not None:
                    return response_type.FromString(stored)
                try:
                    with requests.attempt(caller, request.request_id, owner) as record:
                        response = method(self, request, context)
                        record(response.SerializeToString(deterministic=True))
                        faults.crash_point("crash-before-commit", name)
                except ClaimLost:
                    continue  # rolled back: the attempt that took the claim over decides the outcome
                faults.crash_point("crash-after-commit", name)
                return response

        return run

    return decorate
