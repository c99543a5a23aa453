"""Engine exceptions: what went wrong, in words a user can act on.

The gRPC layer maps each class to one status code (pellucid.server.grpc.errors).
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class; `reason` is a stable machine-readable tag, `field` the request field at fault."""

    def __init__(self, message: str, *, reason: str = "", field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.field = field


class InvalidArgument(EngineError):
    pass


class NotFound(EngineError):
    pass


class AlreadyExists(EngineError):
    pass


class PermissionDenied(EngineError):
    pass


class Unauthenticated(EngineError):
    pass


class FailedPrecondition(EngineError):
    pass


class Aborted(EngineError):
    """A conflicting call is in progress; retrying later is safe."""


class ResourceExhausted(EngineError):
    pass


class Unavailable(EngineError):
    pass


class DeadlineExceeded(EngineError):
    """The work did not finish before the caller's deadline."""
