"""What every resource class shares: settings resolution, the shared connection, deadlines."""

from __future__ import annotations

import copy
from typing import Any, TypeVar

from google.protobuf.message import Message

from pellucid.api import v1
from pellucid.client._transport import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    Connection,
    RetryPolicy,
    get_connection,
)
from pellucid.client.config import resolve_settings
from pellucid.errors import UserError

C = TypeVar("C", bound="BaseClient")


class BaseClient:
    """Holds a shared Connection and the caller's user id; no network I/O happens here."""

    def __init__(
        self,
        user_id: str = "",
        base_url: str = "",
        pat: str = "",
        token: str = "",
        root_certificates_path: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        profile: str | None = None,
        _connection: Connection | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise UserError(
                f"{type(self).__name__} got unknown arguments {sorted(unknown)}; it takes user_id, base_url, pat, token, "
                "root_certificates_path, timeout, retry and profile (set an app's name or description with "
                "User.create_app or User.patch_app, a dataset's with App.create_dataset)"
            )
        if _connection is None:
            settings = resolve_settings(base_url, pat, token, user_id, root_certificates_path, profile)
            _connection = get_connection(settings)
            user_id = settings.user_id  # argument, else environment, else profile: this object's own
        self._connection = _connection
        # never the connection's: objects with other user ids share it (one channel per target and token)
        self._user_id = user_id
        self._token_owner = ""
        self.timeout = timeout
        self.retry = retry

    @property
    def user_id(self) -> str:
        """The user this object acts for: the one it was given (argument, environment, profile),
        else the token's own user (for the local target read from its credentials, otherwise
        asked of the server once)."""
        if self._user_id:
            return self._user_id
        if not self._token_owner:
            self._token_owner = (
                self._connection.user_id or self._call(v1.UserServiceStub, "GetUser", v1.GetUserRequest()).id
            )
        return self._token_owner

    @property
    def base_url(self) -> str:
        return str(self._connection.settings.target)

    def _call(self, stub: type, method: str, request: Message, timeout: float | None = None) -> Any:
        return self._connection.call(
            stub, method, request, timeout=timeout if timeout is not None else self.timeout, retry=self.retry
        )

    def _child_kwargs(self) -> dict[str, Any]:
        return {"timeout": self.timeout, "retry": self.retry, "_connection": self._connection}

    def with_options(self: C, *, timeout: float | None = None, retry: RetryPolicy | None = None) -> C:
        """A copy of this object with another default deadline (seconds) or retry policy, sharing the connection."""
        clone = copy.copy(self)
        clone.timeout = timeout if timeout is not None else self.timeout
        clone.retry = retry or self.retry
        return clone

    def close(self) -> None:
        """Close the connection shared by every object built from the same settings."""
        self._connection.close()

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
