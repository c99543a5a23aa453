"""Users and their tokens (PATs and session tokens): creation, listing, revocation, authentication."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pellucid.server.engine.access import Principal, require_admin, self_or_admin
from pellucid.server.engine.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from pellucid.server.engine.ids import new_id, validate_id
from pellucid.server.engine.paging import PageRequest, next_token, to_query
from pellucid.server.engine.validation import (
    MAX_DESCRIPTION_LENGTH,
    check_metadata,
    check_text,
)
from pellucid.server.records import TokenRecord, UserRecord
from pellucid.server.storage import Conflict, UserStore

PAT, SESSION = "pat", "session"
MAX_TOKEN_LENGTH = 512  # tokens are about 50 characters
SESSION_DEFAULT_TTL = 12 * 3600
SESSION_MAX_TTL = 30 * 24 * 3600
# A PAT lives at most 366 days, or never expires (ttl_seconds 0) when minted with a PAT.
PAT_MAX_TTL = 366 * 24 * 3600
_SECRET_PREFIX = {PAT: "pel_pat_", SESSION: "pel_ses_"}


def hash_secret(secret: str) -> str:
    """Tokens are 256 random bits, so a plain SHA-256 is enough (no slow KDF needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _is_token_shaped(secret: str) -> bool:
    return len(secret) <= MAX_TOKEN_LENGTH and all("!" <= c <= "~" for c in secret)


def _refuse_session(principal: Principal, action: str) -> None:
    """Session tokens mint no PATs. Capping the PAT at the session's expiry would not be enough:
    that PAT could mint a never-expiring one, so a stolen or short-lived session could outlive itself."""
    if principal.is_session:
        raise PermissionDenied(
            f"a session token cannot {action}: tokens made with a session would outlive it; call with a PAT",
            reason="SESSION_CANNOT_MINT_PAT",
        )


def _check_within_session(principal: Principal, ttl_seconds: int, now: float) -> None:
    """A session made with a session token expires no later than that one, so sessions never extend themselves."""
    left = int(principal.expires_at - now) if principal.expires_at is not None else None
    if left is None or ttl_seconds <= left:
        return
    raise InvalidArgument(
        f"ttl_seconds {ttl_seconds} would outlive the session token this call was made with: a session made with "
        f"a session expires with it at the latest, so use 1-{max(left, 0)} (or 0), or call with a PAT",
        reason="OUTLIVES_SESSION",
        field="ttl_seconds",
    )


class Users:
    def __init__(self, store: UserStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    # authentication

    def authenticate(self, secret: str) -> Principal:
        if not secret:
            raise Unauthenticated(
                "no token: send `authorization: Bearer <PAT or session token>` (the SDK does it for you)",
                reason="NO_TOKEN",
            )
        if not _is_token_shaped(secret):
            raise Unauthenticated(
                "the authorization header is malformed: it must read `Bearer <token>`, the token printable ASCII "
                "without spaces or control characters (a token read from a file may end in a newline: strip it)",
                reason="MALFORMED_TOKEN",
            )
        found = self._store.get_token_with_user(hash_secret(secret))
        if found is None:  # (deleting a user deletes its tokens)
            raise Unauthenticated("the token is not valid: check PELLUCID_PAT or create a new PAT", reason="BAD_TOKEN")
        token, user = found
        now = self._clock()
        if token.revoked_at is not None:
            raise Unauthenticated(f"token {token.id} was revoked: create a new PAT", reason="REVOKED_TOKEN")
        if token.expires_at is not None and token.expires_at <= now:
            raise Unauthenticated(f"token {token.id} has expired: create a new one", reason="EXPIRED_TOKEN")
        return Principal(
            user_id=user.id,
            is_admin=user.is_admin,
            token_id=token.id,
            is_session=token.kind == SESSION,
            expires_at=token.expires_at,
        )

    # users

    def bootstrap(self, admin_id: str) -> tuple[UserRecord, str] | None:
        """On an empty store, create the first user (an admin) and its PAT; else None."""
        if self._store.count_users():
            return None
        validate_id(admin_id, "admin user id")
        user = UserRecord(id=admin_id, is_admin=True, created_at=self._clock())
        token, secret = self._new_token(admin_id, PAT, "created on first start", None, None)
        try:
            self._store.insert_user(user, token)
        except Conflict:
            return None  # another process bootstrapped first
        return user, secret

    def create_user(
        self, principal: Principal, user_id: str, is_admin: bool, metadata: dict[str, Any], request_id: str
    ) -> tuple[UserRecord, TokenRecord, str]:
        require_admin(principal, "create users")
        _refuse_session(principal, "create users (each comes with a PAT)")
        validate_id(user_id, "user_id")
        check_metadata(metadata)
        if request_id:
            replay = self._replay_token(user_id, request_id, PAT)
            if replay is not None:
                user = self._store.get_user(user_id)
                assert user is not None
                return user, replay[0], replay[1]
        user = UserRecord(id=user_id, is_admin=is_admin, created_at=self._clock(), metadata=metadata)
        token, secret = self._new_token(user_id, PAT, "created with the user", None, request_id or None)
        try:
            self._store.insert_user(user, token)
        except Conflict:
            raise AlreadyExists(f"user {user_id!r} already exists", reason="USER_EXISTS", field="user_id") from None
        return user, token, secret

    def get_user(self, principal: Principal, user_id: str) -> UserRecord:
        target = self_or_admin(principal, user_id, "read the profile")
        user = self._store.get_user(target)
        if user is None:
            raise NotFound(f"user {target!r} not found", field="user_id")
        return user

    def list_users(self, principal: Principal, page: PageRequest) -> tuple[list[UserRecord], str]:
        require_admin(principal, "list users")
        result = self._store.list_users(to_query(page, "users"))
        return result.items, next_token(result, "users")

    # tokens

    def create_pat(
        self, principal: Principal, user_id: str, description: str, ttl_seconds: int, request_id: str
    ) -> tuple[TokenRecord, str]:
        target = self_or_admin(principal, user_id, "create tokens")
        check_text(description, "description", MAX_DESCRIPTION_LENGTH)
        if not 0 <= ttl_seconds <= PAT_MAX_TTL:
            raise InvalidArgument(
                f"ttl_seconds {ttl_seconds} is out of range: a PAT lives 1-{PAT_MAX_TTL} seconds (366 days), "
                "or 0 for one that never expires",
                reason="TTL_OUT_OF_RANGE",
                field="ttl_seconds",
            )
        _refuse_session(principal, "create PATs")
        now = self._clock()
        if self._store.get_user(target) is None:
            raise NotFound(f"user {target!r} not found", field="user_id")
        if request_id:
            replay = self._replay_token(target, request_id, PAT)
            if replay is not None:
                return replay
        expires = now + ttl_seconds if ttl_seconds else None
        token, secret = self._new_token(target, PAT, description, expires, request_id or None)
        self._store.insert_token(token)
        return token, secret

    def create_session(self, principal: Principal, ttl_seconds: int, request_id: str) -> tuple[TokenRecord, str]:
        ttl = ttl_seconds or SESSION_DEFAULT_TTL
        if not 0 < ttl <= SESSION_MAX_TTL:
            raise InvalidArgument(f"ttl_seconds must be 1-{SESSION_MAX_TTL} (0 means 12 hours)", field="ttl_seconds")
        if principal.is_session:
            now = self._clock()
            if not ttl_seconds and principal.expires_at is not None:  # the default ends with the parent session
                ttl = max(1, min(ttl, int(principal.expires_at - now)))
            _check_within_session(principal, ttl, now)
        if request_id:
            replay = self._replay_token(principal.user_id, request_id, SESSION)
            if replay is not None:
                return replay
        token, secret = self._new_token(principal.user_id, SESSION, "session", self._clock() + ttl, request_id or None)
        self._store.insert_token(token)
        return token, secret

    def list_pats(
        self, principal: Principal, user_id: str, include_inactive: bool, page: PageRequest
    ) -> tuple[list[TokenRecord], str]:
        target = self_or_admin(principal, user_id, "list tokens")
        scope = f"pats:{target}:{include_inactive}"
        result = self._store.list_tokens(target, PAT, include_inactive, self._clock(), to_query(page, scope))
        return result.items, next_token(result, scope)

    def revoke_pat(self, principal: Principal, user_id: str, pat_id: str) -> TokenRecord:
        target = self_or_admin(principal, user_id, "revoke tokens")
        validate_id(pat_id, "pat_id")
        token = self._store.get_token(target, pat_id)
        if token is None or token.kind != PAT:
            raise NotFound(f"PAT {pat_id!r} of user {target!r} not found", field="pat_id")
        return self._store.revoke_token(pat_id, self._clock())

    def _new_token(
        self, user_id: str, kind: str, description: str, expires_at: float | None, request_id: str | None
    ) -> tuple[TokenRecord, str]:
        secret = _SECRET_PREFIX[kind] + secrets.token_urlsafe(32)
        token = TokenRecord(
            id=new_id(),
            user_id=user_id,
            kind=kind,
            token_hash=hash_secret(secret),
            created_at=self._clock(),
            description=description,
            expires_at=expires_at,
            request_id=request_id,
        )
        return token, secret

    def _replay_token(self, user_id: str, request_id: str, kind: str) -> tuple[TokenRecord, str] | None:
        """A retried token-minting call: the server never kept the secret, so it rotates it.

        Only the secret in the last response the client received is valid, and the
        retry still yields exactly one token record. The token must be of the `kind` the
        call mints: else a session token could get (and rotate) a PAT through CreateSession.
        """
        token = self._store.get_token_by_request(user_id, request_id)
        if token is None:
            return None
        if token.kind != kind:
            raise InvalidArgument(
                f"request_id {request_id!r} was already used for a different call: use a new request id per call",
                reason="REQUEST_ID_REUSED",
                field="request_id",
            )
        if token.revoked_at is not None:
            raise PermissionDenied(
                f"request {request_id!r} made token {token.id}, which was revoked since", field="request_id"
            )
        secret = _SECRET_PREFIX[token.kind] + secrets.token_urlsafe(32)
        self._store.replace_token_hash(token.id, hash_secret(secret))
        return replace(token, token_hash=hash_secret(secret)), secret
