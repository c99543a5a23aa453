"""One table from engine exceptions to gRPC status codes."""

from __future__ import annotations

import grpc

from pellucid.api.v1 import ErrorDetail, Status
from pellucid.server.engine import errors

STATUS_CODES: dict[type[errors.EngineError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}

ERROR_DETAIL_KEY = "pellucid-error-bin"
REQUEST_ID_KEY = "x-request-id"


def status_code(exc: errors.EngineError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.UNKNOWN


def item_status(exc: errors.EngineError | None) -> Status:
    """The per-item Status of a batch call: OK, or the code a whole call would have failed with."""
    if exc is None:
        return Status(code=Status.OK)
    return Status(code=Status.Code.Value(status_code(exc).name), message=bounded(exc.message, MAX_ERROR_MESSAGE_BYTES))


# An error message or field often quotes what the client sent; a huge id quoted whole would make
# the trailers pass gRPC's metadata limit (16 KiB), and the client would get a bare "Stream removed".
MAX_ERROR_MESSAGE_BYTES = 2048
MAX_FIELD_BYTES = 256


def bounded(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8 (saying how much was left out)."""
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit:
        return text
    kept = encoded[: limit - 48].decode("utf-8", "ignore")
    return f"{kept}... ({len(text) - len(kept)} more characters)"


def abort(context: grpc.ServicerContext, exc: errors.EngineError, request_id: str) -> None:
    detail = ErrorDetail(reason=exc.reason, field=bounded(exc.field, MAX_FIELD_BYTES), request_id=request_id)
    context.set_trailing_metadata(((REQUEST_ID_KEY, request_id), (ERROR_DETAIL_KEY, detail.SerializeToString())))
    context.abort(status_code(exc), bounded(exc.message, MAX_ERROR_MESSAGE_BYTES))
