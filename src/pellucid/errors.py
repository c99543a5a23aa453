"""The errors pellucid raises.

- `ApiError` and its subclasses: the server refused or failed a call. Each carries the
  gRPC status `code`, the server's `message`, the `request_id` to quote in a bug
  report, and `details` (`reason`, `field` where the server named them).
- `UserError`: the SDK refused a call before sending it (bad arguments, missing credentials).
- `ApiClientError`: configuration or transport problems on the client side.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

__all__ = [
    "AlgoException",
    "AlreadyExists",
    "ApiClientError",
    "ApiError",
    "DataApiError",
    "DataExists",
    "DataFailedPrecondition",
    "DataInvalidArgument",
    "DataNotFound",
    "DataPermissionDenied",
    "DeadlineExceeded",
    "DirectoryNotEmpty",
    "FailedPrecondition",
    "InvalidArgument",
    "ItemFailure",
    "MissingCredentials",
    "NotFound",
    "PartialFailure",
    "PermissionDenied",
    "RateLimited",
    "Unauthenticated",
    "Unavailable",
    "UserError",
    "from_rpc_error",
]


class PellucidError(Exception):
    """Base of every pellucid error."""


class UserError(PellucidError):
    """The SDK rejected a call before sending it; the message says what to change."""


class MissingCredentials(UserError):
    """No token was found for a target that needs one; the message lists where to put one."""


class ApiClientError(PellucidError):
    """Client-side configuration or transport failure."""


class ApiError(PellucidError):
    """The server answered a call with an error status."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        request_id: str = "",
        details: dict[str, Any] | None = None,
        method: str = "",
    ) -> None:
        self.message = message
        if code is not None:
            self.code = code
        self.request_id = request_id
        self.details = details or {}
        self.method = method
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" in {self.method}" if self.method else ""
        rid = f" (request id {self.request_id})" if self.request_id else ""
        return f"{self.code.name}{where}: {self.message}{rid}"


class InvalidArgument(ApiError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ApiError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ApiError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(ApiError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ApiError):
    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(ApiError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class RateLimited(ApiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ApiError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ApiError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class AlgoException(ApiError):
    """The algorithm raised: `message` is its exception's type and message, `stack_trace` where it
    was raised (in the algorithm's process). An ApiError, so `except ApiError` catches it too."""

    code = grpc.StatusCode.UNKNOWN

    def __init__(
        self, message: str, *, stack_trace: str = "", error_code: int = 0, call_id: str = "", method: str = ""
    ) -> None:
        self.stack_trace = stack_trace
        self.call_id = call_id
        code = _BY_VALUE.get(error_code, grpc.StatusCode.UNKNOWN) if error_code else grpc.StatusCode.UNKNOWN
        super().__init__(message, code=code, method=method)

    @property
    def stacktrace(self) -> str:
        """The reference client's name for `stack_trace`."""
        return self.stack_trace

    def __str__(self) -> str:
        return f"algorithm error: {self.message}"


_BY_CODE: dict[grpc.StatusCode, type[ApiError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        Unauthenticated,
        FailedPrecondition,
        RateLimited,
        Unavailable,
        DeadlineExceeded,
    )
}
_BY_VALUE: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


def error_class(code: grpc.StatusCode | int) -> type[ApiError]:
    """The ApiError subclass for a status code (also the int codes of per-item statuses)."""
    if isinstance(code, int):
        code = _BY_VALUE.get(code, grpc.StatusCode.UNKNOWN)
    return _BY_CODE.get(code, ApiError)


def from_rpc_error(exc: grpc.RpcError, method: str = "") -> ApiError:
    """Translate a failed gRPC call into the matching ApiError subclass."""
    from pellucid.api.v1 import ErrorDetail

    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = exc.details() if hasattr(exc, "details") else str(exc)
    request_id, details = "", {}
    trailers: Iterable[tuple[str, str | bytes]] = (
        # grpc's metadata items are (key, value) namedtuples; types-grpcio declares a plain class
        exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else ()  # type: ignore[assignment]
    )
    for key, value in trailers:
        if key == "x-request-id" and isinstance(value, str):
            request_id = value
        elif key == "pellucid-error-bin" and isinstance(value, bytes):
            detail = ErrorDetail.FromString(value)
            details = {k: v for k, v in (("reason", detail.reason), ("field", detail.field)) if v}
    cls = _BY_CODE.get(code, ApiError)
    return cls(message or code.name, code=code, request_id=request_id, details=details, method=method)


class ItemFailure:
    """One failed item of a batch call: its position in the request, its id, and why."""

    def __init__(self, index: int, item_id: str, error: ApiError) -> None:
        self.index = index
        self.item_id = item_id
        self.error = error

    def __repr__(self) -> str:
        return f"ItemFailure(index={self.index}, item_id={self.item_id!r}, error={self.error})"


class PartialFailure(PellucidError):
    """Some items of a batch call failed; the others were stored and are in `succeeded`."""

    def __init__(self, what: str, succeeded: list[Any], failed: list[ItemFailure]) -> None:
        self.succeeded = succeeded
        self.failed = failed
        shown = "; ".join(f"{f.item_id!r}: {f.error.code.name}: {f.error.message}" for f in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        super().__init__(f"{len(failed)} of {len(failed) + len(succeeded)} {what} failed: {shown}{more}")


# Hosted data (data://): typed errors that are also the ApiError of their status code, so
# `except NotFound` and `except DataNotFound` both catch a missing file.


class DataApiError(ApiError):
    """A hosted data (data://) call failed."""


class DataNotFound(DataApiError, NotFound):
    """The path does not exist, or the caller may not read it (the server does not say which)."""


class DataExists(DataApiError, AlreadyExists):
    """A directory of that path already exists."""


class DataPermissionDenied(DataApiError, PermissionDenied):
    """The caller may read the path but not write it (only a collection's owner writes)."""


class DirectoryNotEmpty(DataApiError, FailedPrecondition):
    """A directory with files or directories in it was deleted without force."""


_DATA_BY_CODE: dict[grpc.StatusCode, type[DataApiError]] = {
    grpc.StatusCode.NOT_FOUND: DataNotFound,
    grpc.StatusCode.ALREADY_EXISTS: DataExists,
    grpc.StatusCode.PERMISSION_DENIED: DataPermissionDenied,
}


def data_error(error: ApiError) -> ApiError:
    """The DataApiError of a hosted data call's error (others, such as UNAVAILABLE, stay as they are)."""
    if isinstance(error, DataApiError):
        return error
    cls: type[DataApiError] | None = _DATA_BY_CODE.get(error.code)
    if error.code == grpc.StatusCode.FAILED_PRECONDITION and error.details.get("reason") == "DIRECTORY_NOT_EMPTY":
        cls = DirectoryNotEmpty
    elif cls is None and error.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        cls = _DATA_OTHER[error.code]
    if cls is None:
        return error
    return cls(error.message, code=error.code, request_id=error.request_id, details=error.details, method=error.method)


class DataInvalidArgument(DataApiError, InvalidArgument):
    """The path or the request is malformed (the message says what to write instead)."""


class DataFailedPrecondition(DataApiError, FailedPrecondition):
    """The path is of the wrong kind (a file where a directory is needed, or the reverse)."""


_DATA_OTHER: dict[grpc.StatusCode, type[DataApiError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: DataInvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: DataFailedPrecondition,
}
