"""Caps on the calls that hold a server thread for long, so one caller cannot starve the others.

The sync gRPC server runs each call on one thread of a fixed pool (`max_workers`) from its
start to its end, and a call that arrives while every thread is busy waits in a queue: health
checks too. A stream (an upload that stalls, a download the client stops reading, a runner's
connection) and a predict waiting for a runner hold their thread for as long as the caller
likes, and an input batch (PostInputs) holds it while the server fetches its URLs (up to 20 s
each). So these calls are counted, per user and in total, when their thread starts them:
past a cap the call is refused with RESOURCE_EXHAUSTED at once, freeing its thread, and all
of them together never take more than `max_workers` minus a reserve, so health checks and
short calls of every user always find a free thread.

gRPC runs the interceptor on its polling thread, before the call is queued for a worker; the
caller is known only after authentication, so the count is taken when a worker starts the
call. That is safe because long calls never take the reserved threads: a refused call holds
its thread only to send its status. (`maximum_concurrent_rpcs` would not help: past it gRPC
refuses every call, health checks included.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import grpc

from pellucid.server.engine.errors import ResourceExhausted
from pellucid.server.engine.in_flight import PredictsInFlight, user_caller
from pellucid.server.grpc import context as request_context
from pellucid.server.grpc.errors import abort

RUNNER_CONNECT = "/pellucid.api.v1.RunnerService/Connect"
PREDICT = "/pellucid.api.v1.ModelService/PostModelOutputs"
CALL_ALGORITHM = "/pellucid.api.v1.AlgorithmService/CallAlgorithm"  # a predict of the owner's model
WORKFLOW_PREDICT = "/pellucid.api.v1.WorkflowService/PostWorkflowResults"
OIP_INFER = "/inference.GRPCInferenceService/ModelInfer"
POST_INPUTS = "/pellucid.api.v1.InputService/PostInputs"
SEARCH = "/pellucid.api.v1.SearchService/PostInputsSearches"
MIN_WORKERS = 8


class CallKind(Enum):
    """A kind of long call; its value: (what, setting, CLI flag, error reason)."""

    STREAM = ("concurrent streams", "max_streams_per_user", "--max-streams-per-user", "TOO_MANY_STREAMS")
    PREDICT = (
        "predicts in flight (waiting for or running on a runner)",
        "max_predicts_per_user",
        "--max-predicts-per-user",
        "TOO_MANY_PREDICTS",
    )
    INPUT_BATCH = (
        "input batches in flight (PostInputs, whose URL inputs the server fetches)",
        "max_input_batches_per_user",
        "--max-input-batches-per-user",
        "TOO_MANY_INPUT_BATCHES",
    )
    SEARCH = (
        "searches in flight (the server embeds their queries, fetches their image URLs, or asks a runner)",
        "max_searches_per_user",
        "--max-searches-per-user",
        "TOO_MANY_SEARCHES",
    )
    RUNNER = (
        "runner connections",
        "max_runner_connections_per_user",
        "--max-runner-connections-per-user",
        "TOO_MANY_RUNNER_CONNECTIONS",
    )


def call_kind(method: str, handler: grpc.RpcMethodHandler) -> CallKind | None:
    """Which cap a call counts against; None for the short unary calls, which are not counted."""
    if method == RUNNER_CONNECT:
        return CallKind.RUNNER
    if method in (PREDICT, CALL_ALGORITHM, WORKFLOW_PREDICT, OIP_INFER):
        return CallKind.PREDICT
    if method == POST_INPUTS:
        return CallKind.INPUT_BATCH
    if method == SEARCH:
        return CallKind.SEARCH
    if handler.request_streaming or handler.response_streaming:
        return CallKind.STREAM
    return None


def reserved_workers(max_workers: int) -> int:
    """Threads kept for short calls (health checks, reads, writes) that long calls never take."""
    return max(MIN_WORKERS // 2, max_workers // 4)


@dataclass(frozen=True)
class CallLimits:
    max_workers: int = 256
    max_streams_per_user: int = 32
    max_predicts_per_user: int = 64
    max_input_batches_per_user: int = 32
    max_searches_per_user: int = 16
    max_runner_connections_per_user: int = 64

    def __post_init__(self) -> None:
        if self.max_workers < MIN_WORKERS:
            raise ValueError(f"max_workers must be at least {MIN_WORKERS}, got {self.max_workers}")
        for kind in CallKind:
            if getattr(self, kind.value[1]) < 1:
                raise ValueError(f"{kind.value[1]} must be at least 1, got {getattr(self, kind.value[1])}")

    @property
    def max_long_calls(self) -> int:
        """Long calls of all users together: the pool minus the reserve for short calls."""
        return self.max_workers - reserved_workers(self.max_workers)

    def per_caller(self, kind: CallKind) -> int:
        return int(getattr(self, kind.value[1]))


class CallLimiter:
    """Counts the long calls running now, per (kind, caller) and in total.

    Predicts are counted per caller in `predicts` (the engine's, shared with the HTTP routes)
    so that one cap holds over every path; the other kinds here."""

    def __init__(self, limits: CallLimits, predicts: PredictsInFlight | None = None) -> None:
        self.limits = limits
        self.predicts = predicts if predicts is not None else PredictsInFlight()
        self._lock = threading.Lock()
        self._held: dict[tuple[CallKind, str], int] = {}
        self._total = 0

    def acquire(self, kind: CallKind, caller: str) -> None:
        """Count one more call of `caller`, or refuse it if a cap is reached; `release` it when it ends."""
        what, setting, flag, reason = kind.value
        cap, total_cap = self.limits.per_caller(kind), self.limits.max_long_calls
        with self._lock:
            held = self._held.get((kind, caller), 0)
            if held >= cap or (kind is CallKind.PREDICT and not self.predicts.acquire(caller, cap)):
                held = max(held, self.predicts.held(caller)) if kind is CallKind.PREDICT else held
                raise ResourceExhausted(
                    f"{caller} already has {held} {what}, the most one caller may have (limit {setting}={cap}): "
                    f"finish or cancel some first, or start the server with a higher {flag}",
                    reason=reason,
                )
            if self._total >= total_cap:
                if kind is CallKind.PREDICT:
                    self.predicts.release(caller)
                raise ResourceExhausted(
                    f"the server is busy: {self._total} long calls (streams, predicts, input batches, runner connections) are "
                    f"running, the most its {self.limits.max_workers} threads allow while keeping "
                    f"{reserved_workers(self.limits.max_workers)} for short calls: retry later, or start the "
                    f"server with a higher --max-workers (max_workers)",
                    reason="SERVER_BUSY",
                )
            self._held[(kind, caller)] = held + 1
            self._total += 1

    def release(self, kind: CallKind, caller: str) -> None:
        with self._lock:
            if kind is CallKind.PREDICT:
                self.predicts.release(caller)
            self._total -= 1
            left = self._held[(kind, caller)] - 1
            if left:
                self._held[(kind, caller)] = left
            else:
                del self._held[(kind, caller)]

    def guard(
        self, handler: grpc.RpcMethodHandler, kind: CallKind | None, caller: Callable[[grpc.ServicerContext], str]
    ) -> grpc.RpcMethodHandler:
        """The handler, counting each call against `kind`'s caps for `caller(context)` while it runs."""
        if kind is None:
            return handler

        def admit(context: grpc.ServicerContext) -> str:
            key = caller(context)
            try:
                self.acquire(kind, key)
            except ResourceExhausted as exc:
                abort(context, exc, request_context.request_id())  # raises: the call ends here
            return key

        def unary_response(behavior: Callable) -> Callable:
            def run(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
                key = admit(context)
                try:
                    return behavior(request_or_iterator, context)
                finally:
                    self.release(kind, key)

            return run

        def stream_response(behavior: Callable) -> Callable:
            def run(request_or_iterator: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                key = admit(context)
                try:
                    yield from behavior(request_or_iterator, context)
                finally:
                    self.release(kind, key)

            return run

        kwargs = dict(
            request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), **kwargs)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), **kwargs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), **kwargs)
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), **kwargs)
        raise ValueError("a method handler with no behaviour to guard")


def unauthenticated_callers(context: grpc.ServicerContext) -> str:
    """Calls without a token (health Watch, reflection) all count as one caller.

    Counted per peer address, a few addresses (IPv4 and IPv6 loopback, an IPv6 prefix)
    held every long call the server allows, and authenticated users' uploads, predicts
    and runner connections were refused as SERVER_BUSY.
    """
    return "callers without a token (all together)"


def authenticated_user(context: grpc.ServicerContext) -> str:
    """Who an authenticated call comes from (the interceptor has bound the principal)."""
    return user_caller(request_context.principal().user_id)
