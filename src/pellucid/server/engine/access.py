"""Who may touch which namespace: every engine call starts here."""

from __future__ import annotations

from dataclasses import dataclass

from pellucid.server.engine.errors import PermissionDenied
from pellucid.server.engine.ids import validate_id


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    user_id: str
    is_admin: bool
    token_id: str
    # Tokens minted with a session token must not outlive it (see Users.create_pat).
    is_session: bool = False
    expires_at: float | None = None
    # Set for a deployment token: it may call that deployment and nothing else.
    deployment_id: str = ""
    # The algorithm call a runner says this request is made for (the `x-pellucid-algorithm-call`
    # header); hosted data checks it (engine/algorithm_data.py) and then reads as that algorithm.
    algorithm_call: str = ""


def own_namespace(principal: Principal, user_id: str, action: str) -> str:
    """Resolve an empty user_id to the caller; acting in another user's namespace is refused.

    Used where the answer would not leak anything (creating, listing). Reads of a
    named resource in another namespace answer NOT_FOUND instead: see `visible_namespace`.
    """
    owner = user_id or principal.user_id
    validate_id(owner, "user_id")
    if owner != principal.user_id:
        raise PermissionDenied(
            f"user {principal.user_id!r} cannot {action} of user {owner!r}: a token acts only in its own user's namespace",
            reason="OTHER_USER",
            field="user_id",
        )
    return owner


def visible_namespace(principal: Principal, user_id: str) -> tuple[str, bool]:
    """Resolve an empty user_id to the caller; the flag says whether the caller may see inside it."""
    owner = user_id or principal.user_id
    validate_id(owner, "user_id")
    return owner, owner == principal.user_id


def self_or_admin(principal: Principal, user_id: str, action: str) -> str:
    """For user and token management: yourself, or anyone if you are an admin."""
    target = user_id or principal.user_id
    validate_id(target, "user_id")
    if target != principal.user_id and not principal.is_admin:
        raise PermissionDenied(
            f"user {principal.user_id!r} cannot {action} of user {target!r}: only admins manage other users",
            reason="NOT_ADMIN",
            field="user_id",
        )
    return target


def require_admin(principal: Principal, action: str) -> None:
    if not principal.is_admin:
        raise PermissionDenied(
            f"only admins can {action}; user {principal.user_id!r} is not an admin", reason="NOT_ADMIN"
        )
