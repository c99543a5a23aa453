"""Authenticates every call but health checks and reflection, tags it with a request id, and maps errors.

This is the only place engine exceptions become gRPC statuses, so a servicer just
raises (or lets the engine raise) and every RPC behaves the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from pellucid.server.engine import Engine
from pellucid.server.engine.errors import EngineError, InvalidArgument, PermissionDenied
from pellucid.server.engine.ids import new_id
from pellucid.server.engine.validation import MAX_METADATA_DEPTH
from pellucid.server.grpc import context as request_context
from pellucid.server.grpc.errors import REQUEST_ID_KEY, abort
from pellucid.server.grpc.limits import CallLimiter, CallLimits, authenticated_user, call_kind, unauthenticated_callers

log = logging.getLogger("pellucid.server")

# Health checks (load balancers) and reflection (grpcurl) describe only the public API.
UNAUTHENTICATED_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    # the Open Inference Protocol's liveness and readiness probes (grpc/oip.py)
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
)
# the only calls a deployment token may make (it names its deployment as the model); every other
# call refuses it, since the rest of the API knows nothing of deployment tokens
DEPLOYMENT_TOKEN_PREFIXES = ("/inference.GRPCInferenceService/",)
MAX_CLIENT_REQUEST_ID = 128
ALGORITHM_CALL_KEY = "x-pellucid-algorithm-call"  # sent by a runner's client inside an algorithm call


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, engine: Engine, limits: CallLimits | None = None) -> None:
        self._engine = engine
        self.limiter = CallLimiter(limits or CallLimits(), engine.predicts_in_flight)

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return handler
        kind = call_kind(method, handler)  # long calls count against the caps of pellucid.server.grpc.limits
        if method.startswith(UNAUTHENTICATED_PREFIXES):
            return self.limiter.guard(handler, kind, unauthenticated_callers)
        metadata = dict(handler_call_details.invocation_metadata or ())
        secret = bearer_secret(_text_header(metadata, "authorization"))
        given_id = _text_header(metadata, REQUEST_ID_KEY)
        request_id = given_id if 0 < len(given_id) <= MAX_CLIENT_REQUEST_ID else new_id()
        algorithm_call = _text_header(metadata, ALGORITHM_CALL_KEY)
        guarded = self.limiter.guard(handler, kind, authenticated_user)
        return _wrap(guarded, self._engine, method, secret, request_id, algorithm_call)


def _text_header(metadata: Mapping[str, str | bytes], key: str) -> str:
    """A text header's value, "" when absent (gRPC carries bytes only under `-bin` keys)."""
    value = metadata.get(key, "")
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def bearer_secret(header: str) -> str:
    """The token of an `authorization: Bearer <token>` header.

    A header in any other form is passed on whole, so the engine refuses it as malformed
    (UNAUTHENTICATED, saying what the header must look like) rather than as "no token".
    """
    return header[7:].strip() if header[:7].lower() == "bearer " else header


def _wrap(
    handler: grpc.RpcMethodHandler,
    engine: Engine,
    method: str,
    secret: str,
    request_id: str,
    algorithm_call: str = "",
) -> grpc.RpcMethodHandler:
    def enter(context: grpc.ServicerContext) -> tuple:
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        caller = engine.deployments.authenticate(secret)  # a PAT or session token, or a deployment token
        if caller.deployment_id and not method.startswith(DEPLOYMENT_TOKEN_PREFIXES):
            raise PermissionDenied(
                f"a deployment token only calls its deployment ({caller.deployment_id!r}: POST "
                f"/v1/deployments/{caller.deployment_id}/forward, or the Open Inference Protocol naming it as "
                f"the model), not {method}: use a PAT",
                reason="DEPLOYMENT_TOKEN",
            )
        if algorithm_call:  # checked where it matters (hosted data), not trusted here
            caller = dataclasses.replace(caller, algorithm_call=algorithm_call)
        return request_context.bind(caller, request_id)

    def fail(context: grpc.ServicerContext, exc: BaseException) -> None:
        if isinstance(exc, EngineError):
            abort(context, exc, request_id)
        # a connection the server needs failed (the stores raise StoreUnavailable, a ConnectionError,
        # while a database is down): retryable, and not the caller's fault
        if isinstance(exc, ConnectionError):
            log.warning("%s failed, a store is unavailable (request id %s): %s", method, request_id, exc)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{method}: storage is unavailable, retry later")
        # the servicer aborted the call itself (grpc has ServicerContext.code() since 1.38; types-grpcio lacks it)
        if context.code() is not None:  # type: ignore[attr-defined]
            raise exc
        log.exception("internal error in %s (request id %s)", method, request_id)
        context.abort(grpc.StatusCode.INTERNAL, f"internal server error in {method}; request id {request_id}")

    def unary_response(behavior: Callable) -> Callable:
        def run(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            tokens = None
            try:
                tokens = enter(context)
                return behavior(_decoded(request_or_iterator, handler.request_streaming), context)
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
                yield from behavior(_decoded(request_or_iterator, handler.request_streaming), context)
            except Exception as exc:  # noqa: BLE001
                fail(context, exc)
            finally:
                if tokens is not None:
                    request_context.unbind(tokens)

        return run

    kwargs = {
        "request_deserializer": _tolerant(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), **kwargs)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(stream_response(handler.stream_stream), **kwargs)
    raise ValueError(f"the handler of {method} has no behaviour to wrap")


# Requests that fail to decode.
#
# grpc decodes a request before any handler runs and answers a failure with INTERNAL
# "Exception deserializing request!". Each handler's deserializer is wrapped instead: a
# message that does not decode becomes an Undecodable, which the handler (after
# authentication) turns into INVALID_ARGUMENT saying why.


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request message that failed to decode."""

    reason: str


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def run(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the request's fault
            return Undecodable(str(exc))

    return run


def _decoded(request_or_iterator: Any, streaming: bool) -> Any:
    if not streaming:
        return _checked(request_or_iterator)
    return (_checked(message) for message in request_or_iterator)


def _checked(message: Any) -> Any:
    if not isinstance(message, Undecodable):
        return message
    if "depth" in message.reason.lower() or "recursion" in message.reason.lower():
        why = (
            f"it nests messages too deeply (metadata and params may nest at most {MAX_METADATA_DEPTH} levels: "
            "flatten them)"
        )
    else:
        why = f"it is not a valid protobuf message of the expected type ({message.reason})"
    raise InvalidArgument(f"the request could not be decoded: {why}", reason="UNDECODABLE_REQUEST")
