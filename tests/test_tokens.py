"""PATs and session tokens: created, listed, revoked; only hashes are stored."""

from __future__ import annotations

import sqlite3
import stat
import uuid

import grpc
import pytest

import pellucid.errors as errors
from pellucid.api import v1
from pellucid.client.user import User
from tests.conftest import RunningServer


def test_first_start_writes_private_credentials(server: RunningServer) -> None:
    path = server.data_dir / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert server.client(server.admin_pat).get_user_info().is_admin


def test_only_hashes_are_stored(server: RunningServer, alice: User) -> None:
    secret = alice.create_pat(description="check").secret
    with sqlite3.connect(server.data_dir / "metadata.sqlite3") as conn:
        dump = "\n".join(conn.iterdump())
    assert secret not in dump and server.admin_pat not in dump


def test_pat_lifecycle(server: RunningServer, alice: User) -> None:
    new = alice.create_pat(description="ci")
    assert new.token.kind == v1.Token.PAT and new.secret.startswith("pel_pat_")
    second = server.client(new.secret)
    assert second.get_user_info().id == alice.user_id
    listed = {t.id: t for t in alice.list_pats()}
    assert listed[new.token.id].description == "ci"
    revoked = alice.revoke_pat(new.token.id)
    assert revoked.revoked_at.seconds > 0
    with pytest.raises(errors.Unauthenticated, match="revoked"):
        second.get_user_info()
    assert new.token.id not in {t.id for t in alice.list_pats()}
    assert new.token.id in {t.id for t in alice.list_pats(include_inactive=True)}
    with pytest.raises(errors.NotFound):
        alice.revoke_pat("no-such-token")


def test_expiring_pat_and_bad_ttl(alice: User) -> None:
    assert alice.create_pat(ttl_seconds=3600).token.expires_at.seconds > 0
    with pytest.raises(errors.InvalidArgument, match="ttl_seconds"):
        alice.create_pat(ttl_seconds=-5)


def test_session_token(server: RunningServer, alice: User) -> None:
    session = alice.create_session(ttl_seconds=60)
    assert session.token.kind == v1.Token.SESSION
    via_token = User(base_url=server.url, token=session.secret)
    assert via_token.get_user_info().id == alice.user_id
    with pytest.raises(errors.InvalidArgument):
        alice.create_session(ttl_seconds=10**9)


def test_session_token_from_environment(server: RunningServer, alice: User, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PELLUCID_SESSION_TOKEN", alice.create_session().secret)
    monkeypatch.setenv("PELLUCID_API", server.url)
    assert User().get_user_info().id == alice.user_id


def test_retried_pat_creation_makes_one_token(server: RunningServer, alice: User) -> None:
    """The secret is never stored, so a retry rotates it: one record, the last secret works."""
    pat = alice._connection.settings.pat
    request = v1.CreatePatRequest(description="retried", request_id=uuid.uuid4().hex)
    with grpc.insecure_channel(server.server.address) as channel:
        stub = v1.UserServiceStub(channel)
        meta = [("authorization", f"Bearer {pat}")]
        first = stub.CreatePat(request, timeout=5, metadata=meta)
        second = stub.CreatePat(request, timeout=5, metadata=meta)
    assert first.pat.id == second.pat.id and first.secret != second.secret
    assert [t.id for t in alice.list_pats() if t.description == "retried"] == [first.pat.id]
    assert server.client(second.secret).get_user_info().id == alice.user_id
    with pytest.raises(errors.Unauthenticated):
        server.client(first.secret).get_user_info()


def test_create_user_and_duplicates(admin: User, server: RunningServer) -> None:
    user_id = f"carol-{uuid.uuid4().hex[:6]}"
    created = admin.create_user(user_id, metadata={"team": "data"})
    assert created.user.id == user_id and not created.user.is_admin
    assert server.client(created.pat.secret).get_user_info().id == user_id
    assert user_id in [u.id for u in admin.list_users()]
    with pytest.raises(errors.AlreadyExists):
        admin.create_user(user_id)
    with pytest.raises(errors.InvalidArgument):
        admin.create_user("bad user")


def test_a_request_id_replays_only_the_kind_of_token_it_made(server: RunningServer, alice: User) -> None:
    """A session token reusing a PAT's request id gets no PAT (and the PAT keeps working), and vice versa."""
    pat = alice._connection.settings.pat
    session = alice.create_session(ttl_seconds=600).secret
    pat_request_id, session_request_id = uuid.uuid4().hex, uuid.uuid4().hex
    with grpc.insecure_channel(server.server.address) as channel:
        stub = v1.UserServiceStub(channel)
        with_pat, with_session = [("authorization", f"Bearer {pat}")], [("authorization", f"Bearer {session}")]
        made_pat = stub.CreatePat(v1.CreatePatRequest(request_id=pat_request_id), timeout=5, metadata=with_pat)
        made_session = stub.CreateSession(
            v1.CreateSessionRequest(ttl_seconds=60, request_id=session_request_id), timeout=5, metadata=with_pat
        )
        for call, request, metadata in (
            (stub.CreateSession, v1.CreateSessionRequest(request_id=pat_request_id), with_session),
            (stub.CreatePat, v1.CreatePatRequest(request_id=session_request_id), with_pat),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                call(request, timeout=5, metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
            assert "request_id" in (refused.value.details() or "")
    # neither token was rotated by the refused calls
    assert server.client(made_pat.secret).get_user_info().id == alice.user_id
    assert User(base_url=server.url, token=made_session.secret).get_user_info().id == alice.user_id
