"""Authenticates every call but health checks and reflection, tags it with a request id, and maps errors.

This is the only place engine exceptions become gRPC statuses, so a servicer just
raises (or lets the engine raise) and every RPC behaves the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from pellucid.server.engine import Engine
from pellucid.server.engine.errors import EngineError
from pellucid.server.engine.ids import new_id
from pellucid.server.grpc import context as request_context
from pellucid.server.grpc.errors import REQUEST_ID_KEY, abort
from pellucid.server.grpc.limits import CallLimiter, CallLimits, authenticated_user, call_kind, peer_host

log = logging.getLogger("pellucid.server")

# Health checks (load balancers) and reflection (grpcurl) describe only the public API.
UNAUTHENTICATED_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
)
MAX_CLIENT_REQUEST_ID = 128


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, engine: Engine, limits: CallLimits | None = None) -> None:
        self._engine = engine
        self.limiter = CallLimiter(limits or CallLimits())

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return handler
        kind = call_kind(method, handler)  # long calls count against the caps of pellucid.server.grpc.limits
        if method.startswith(UNAUTHENTICATED_PREFIXES):
            return self.limiter.guard(handler, kind, peer_host)
        metadata = dict(handler_call_details.invocation_metadata or ())
        header = metadata.get("authorization", "")
        secret = header[7:].strip() if header[:7].lower() == "bearer " else ""
        given_id = metadata.get(REQUEST_ID_KEY, "")
        request_id = given_id if 0 < len(given_id) <= MAX_CLIENT_REQUEST_ID else new_id()
        return _wrap(self.limiter.guard(handler, kind, authenticated_user), self._engine, method, secret, request_id)


def _wrap(handler: grpc.RpcMethodHandler, engine: Engine, method: str, secret: str, request_id: str) -> grpc.RpcMethodHandler:
    def enter(context: grpc.ServicerContext) -> tuple:
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        return request_context.bind(engine.users.authenticate(secret), request_id)

    def fail(context: grpc.ServicerContext, exc: BaseException) -> None:
        if isinstance(exc, EngineError):
            abort(context, exc, request_id)
        if context.code() is not None:  # the servicer aborted the call itself
            raise exc
        log.exception("internal error in %s (request id %s)", method, request_id)
        context.abort(grpc.StatusCode.INTERNAL, f"internal server error in {method}; request id {request_id}")

    def unary_response(behavior: Callable) -> Callable:
        def run(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            tokens = None
            try:
                tokens = enter(context)
                return behavior(request_or_iterator, context)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a status
                fail(context, exc)
            finally:
                if tokens is not None:
                    request_context.unbind(tokens)

        return run

    def stream_response(behavior: Callable) -> Callable:
        def run(request_or_iterator: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            tokens = None
            try:
                tokens = enter(context)
                yield from behavior(request_or_iterator, context)
            except Exception as exc:  # noqa: BLE001
                fail(context, exc)
            finally:
                if tokens is not None:
                    request_context.unbind(tokens)

        return run

    kwargs = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), **kwargs)
    return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), **kwargs)
