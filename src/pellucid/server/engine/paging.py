"""Page requests: sizes, opaque keyset tokens and page numbers, checked in one place."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from pellucid.server.engine.errors import InvalidArgument
from pellucid.server.records import Page, PageQuery

DEFAULT_PAGE_SIZE = 128
MAX_PAGE_SIZE = 1000
MAX_PAGE_TOKEN_LENGTH = 256  # tokens this server issues are about 60 characters
MAX_POSITION = 2**63 - 1  # keyset positions are SQLite integers


@dataclass(frozen=True)
class PageRequest:
    page_size: int = 0
    page_token: str = ""
    page: int = 0  # 1-based page number; 0 means "use page_token"


def _scope_tag(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:12]


def to_query(request: PageRequest, scope: str) -> PageQuery:
    """Turn a request into a store query; `scope` ties a token to the listing that issued it."""
    size = request.page_size or DEFAULT_PAGE_SIZE
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"page_size {request.page_size} is out of range: use 1-{MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})",
            reason="INVALID_PAGE_SIZE",
            field="page_size",
        )
    if request.page < 0:
        raise InvalidArgument(f"page {request.page} is not valid: pages start at 1", field="page")
    if request.page and request.page_token:
        raise InvalidArgument("give either page or page_token, not both", field="page_token")
    if request.page:
        return PageQuery(limit=size, offset=(request.page - 1) * size)
    if not request.page_token:
        return PageQuery(limit=size)
    after = _token_position(request.page_token, scope)
    return PageQuery(limit=size, after=after)


def _token_position(page_token: str, scope: str) -> int:
    """The keyset position in a token this server issued for this listing; anything else is refused.

    Tokens come back from clients, so every part is checked: size, encoding, JSON shape,
    types (no bools, floats or strings standing in for numbers) and range (a SQLite integer).
    """
    position, tag = None, None
    if len(page_token) <= MAX_PAGE_TOKEN_LENGTH:
        try:
            padded = page_token + "=" * (-len(page_token) % 4)
            decoded = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        except (ValueError, RecursionError):  # bad base64, not ASCII, not UTF-8 or not JSON (or absurdly nested)
            decoded = None
        if isinstance(decoded, dict) and set(decoded) == {"a", "s"}:
            position, tag = decoded["a"], decoded["s"]
    if type(position) is not int or not 0 <= position <= MAX_POSITION or not isinstance(tag, str):
        raise InvalidArgument(
            "page_token is not valid: pass the next_page_token of the previous response unchanged",
            reason="INVALID_PAGE_TOKEN",
            field="page_token",
        )
    if tag != _scope_tag(scope):
        raise InvalidArgument(
            "page_token belongs to a different listing: pass the next_page_token of this listing",
            reason="INVALID_PAGE_TOKEN",
            field="page_token",
        )
    return position


def next_token(page: Page, scope: str) -> str:
    if page.next_after is None:
        return ""
    raw = json.dumps({"a": page.next_after, "s": _scope_tag(scope)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
