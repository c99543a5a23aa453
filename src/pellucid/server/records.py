"""Plain records passed between the engine and the stores.

They carry no protobuf and no gRPC: the servicers translate them to and from
messages, the stores to and from rows. Times are seconds since the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class UserRecord:
    id: str
    is_admin: bool
    created_at: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenRecord:
    id: str
    user_id: str
    kind: str  # "pat" or "session"
    token_hash: str
    created_at: float
    description: str = ""
    expires_at: float | None = None
    revoked_at: float | None = None
    request_id: str | None = None

    def active(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True)
class AppRecord:
    user_id: str
    id: str
    created_at: float
    modified_at: float
    name: str = ""
    description: str = ""
    base_workflow: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConceptRecord:
    user_id: str
    app_id: str
    id: str
    name: str
    created_at: float


@dataclass(frozen=True)
class PageQuery:
    """Which slice of an ordered listing a store returns.

    `after` is a keyset cursor (the store's internal sequence number of the last
    row already seen); `offset` serves page-number listing.
    """

    limit: int
    after: int | None = None
    offset: int = 0


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    # Cursor for the next page, or None when this page is the last.
    next_after: int | None
