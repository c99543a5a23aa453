"""Engine exceptions as HTTP statuses with a JSON body a client can act on."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from pellucid.server.engine import errors
from pellucid.server.engine.features import RowsInvalid

HTTP_STATUSES: dict[type[errors.EngineError], tuple[int, str]] = {
    errors.InvalidArgument: (400, "INVALID_ARGUMENT"),
    errors.Unauthenticated: (401, "UNAUTHENTICATED"),
    errors.PermissionDenied: (403, "PERMISSION_DENIED"),
    errors.NotFound: (404, "NOT_FOUND"),
    errors.AlreadyExists: (409, "ALREADY_EXISTS"),
    errors.FailedPrecondition: (409, "FAILED_PRECONDITION"),
    errors.ResourceExhausted: (429, "RESOURCE_EXHAUSTED"),
    errors.Aborted: (502, "ABORTED"),  # the model behind the deployment failed (ModelFailed)
    errors.Unavailable: (503, "UNAVAILABLE"),
    errors.DeadlineExceeded: (504, "DEADLINE_EXCEEDED"),
}
RETRY_AFTER_SECONDS = 1


def http_status(exc: errors.EngineError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUSES:
            return HTTP_STATUSES[cls]
    return 500, "UNKNOWN"


def error_response(code: int, status: str, message: str, **extra: Any) -> JSONResponse:
    """{"error": {"code", "status", "message", ...}}; 429 and 503 say when to retry."""
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if code in (429, 503) else None
    body = {"code": code, "status": status, "message": message, **{k: v for k, v in extra.items() if v}}
    if code == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="pellucid"'}
    return JSONResponse({"error": body}, status_code=code, headers=headers)


def engine_error_response(exc: errors.EngineError) -> JSONResponse:
    code, status = http_status(exc)
    rows = None
    if isinstance(exc, RowsInvalid):
        rows = [{"row": e.row, "feature": e.feature, "message": e.message} for e in exc.errors]
    return error_response(code, status, exc.message, reason=exc.reason, field=exc.field, rows=rows)
