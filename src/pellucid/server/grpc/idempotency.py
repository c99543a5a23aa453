"""Replays the stored response when a mutation is retried with the same request id."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from pellucid.server.grpc import context as request_context

M = TypeVar("M", bound=Message)


def replayable(response_type: type[M]) -> Callable:
    """Decorate a servicer method whose request has a `request_id` field.

    The servicer must have an `engine` attribute. Responses holding secrets must not
    use this (they would be stored): token-minting calls replay in the engine instead.
    """

    def decorate(method: Callable[[Any, Any, grpc.ServicerContext], M]) -> Callable[[Any, Any, grpc.ServicerContext], M]:
        name = method.__name__

        @functools.wraps(method)
        def run(self: Any, request: Any, context: grpc.ServicerContext) -> M:
            if not request.request_id:
                return method(self, request, context)
            caller = request_context.principal()
            wait = context.time_remaining() or 0.0
            stored, owner = self.engine.requests.claim(caller, request.request_id, name, wait=min(wait, 30.0) - 0.05)
            if stored is not None:
                return response_type.FromString(stored)
            try:
                response = method(self, request, context)
            except BaseException:
                self.engine.requests.release(caller, request.request_id, owner)
                raise
            self.engine.requests.finish(caller, request.request_id, response.SerializeToString(deterministic=True), owner)
            return response

        return run

    return decorate
