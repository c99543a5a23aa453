"""UserService: users, PATs and session tokens."""

from __future__ import annotations

import grpc

from pellucid.api import v1
from pellucid.server import faults
from pellucid.server.engine import Engine
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.convert import page_request, to_dict, to_struct, to_timestamp
from pellucid.server.records import TokenRecord, UserRecord

_KINDS = {"pat": v1.Token.PAT, "session": v1.Token.SESSION}


def user_message(user: UserRecord) -> v1.User:
    return v1.User(
        id=user.id, is_admin=user.is_admin, metadata=to_struct(user.metadata), created_at=to_timestamp(user.created_at)
    )


def token_message(token: TokenRecord) -> v1.Token:
    return v1.Token(
        id=token.id,
        user_id=token.user_id,
        kind=_KINDS[token.kind],
        description=token.description,
        created_at=to_timestamp(token.created_at),
        expires_at=to_timestamp(token.expires_at),
        revoked_at=to_timestamp(token.revoked_at),
    )


class UserServicer(v1.UserServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def GetUser(self, request: v1.GetUserRequest, context: grpc.ServicerContext) -> v1.User:
        return user_message(self.engine.users.get_user(principal(), request.user_id))

    # Token-minting calls replay in the engine (it rotates the secret), never from a stored response.
    def CreateUser(self, request: v1.CreateUserRequest, context: grpc.ServicerContext) -> v1.CreateUserResponse:
        user, token, secret = self.engine.users.create_user(
            principal(), request.user_id, request.is_admin, to_dict(request.metadata), request.request_id
        )
        return v1.CreateUserResponse(user=user_message(user), pat=token_message(token), secret=secret)

    def ListUsers(self, request: v1.ListUsersRequest, context: grpc.ServicerContext) -> v1.ListUsersResponse:
        users, token = self.engine.users.list_users(principal(), page_request(request))
        return v1.ListUsersResponse(users=[user_message(u) for u in users], next_page_token=token)

    def CreatePat(self, request: v1.CreatePatRequest, context: grpc.ServicerContext) -> v1.CreatePatResponse:
        token, secret = self.engine.users.create_pat(
            principal(), request.user_id, request.description, request.ttl_seconds, request.request_id
        )
        faults.crash_point("crash-after-commit", "CreatePat")  # test-only: the token row is committed
        return v1.CreatePatResponse(pat=token_message(token), secret=secret)

    def ListPats(self, request: v1.ListPatsRequest, context: grpc.ServicerContext) -> v1.ListPatsResponse:
        tokens, next_token = self.engine.users.list_pats(
            principal(), request.user_id, request.include_inactive, page_request(request)
        )
        return v1.ListPatsResponse(pats=[token_message(t) for t in tokens], next_page_token=next_token)

    def RevokePat(self, request: v1.RevokePatRequest, context: grpc.ServicerContext) -> v1.RevokePatResponse:
        # Revoking twice is harmless, so a retry needs no request log.
        return v1.RevokePatResponse(
            pat=token_message(self.engine.users.revoke_pat(principal(), request.user_id, request.pat_id))
        )

    def CreateSession(
        self, request: v1.CreateSessionRequest, context: grpc.ServicerContext
    ) -> v1.CreateSessionResponse:
        token, secret = self.engine.users.create_session(principal(), request.ttl_seconds, request.request_id)
        return v1.CreateSessionResponse(session=token_message(token), secret=secret)
