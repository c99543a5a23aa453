"""The DeploymentStore contract, over SQLite and PostgreSQL (the `metadata_uri` fixture)."""

from __future__ import annotations

import dataclasses

import pytest

from pellucid.server.records import (
    AppRecord,
    DeletedDeploymentToken,
    DeploymentRecord,
    DeploymentTokenRecord,
    FeatureSpec,
    PageQuery,
)
from pellucid.server.storage import Conflict, deployment_rows, open_metadata_store


def test_deployments_and_their_tokens_round_trip(metadata_uri: str) -> None:
    store = open_metadata_store(metadata_uri)
    store.insert_app(AppRecord(user_id="u", id="app", created_at=0, modified_at=0))
    store.insert_app(AppRecord(user_id="v", id="app", created_at=0, modified_at=0))
    first = DeploymentRecord(
        user_id="u",
        app_id="app",
        id="d1",
        created_at=1,
        modified_at=1,
        model_id="m",
        version_id="v1",
        input_specs=(FeatureSpec("Size", "numeric"), FeatureSpec("Type", "categorical", categories=("a", "b"))),
        output_specs=(FeatureSpec("Grid", "array", dtype="float32", shape=(-1, 2), required=False),),
        description="first",
    )
    store.insert_deployment(first)
    assert store.get_deployment("d1") == first
    with pytest.raises(Conflict):  # ids are global: another user cannot take it either
        store.insert_deployment(dataclasses.replace(first, user_id="v"))
    with pytest.raises(LookupError):
        store.insert_deployment(dataclasses.replace(first, id="d9", app_id="nope"))
    for i in range(2, 5):
        store.insert_deployment(dataclasses.replace(first, id=f"d{i}", created_at=i))
    store.insert_deployment(dataclasses.replace(first, id="other", user_id="v"))
    page = store.list_deployments("u", "app", PageQuery(limit=3))
    assert [d.id for d in page.items] == ["d1", "d2", "d3"] and page.next_after is not None
    rest = store.list_deployments("u", "app", PageQuery(limit=3, after=page.next_after))
    assert [d.id for d in rest.items] == ["d4"] and rest.next_after is None

    of_workflow = dataclasses.replace(first, id="w1", model_id="", workflow_id="wf", version_id="wv", created_at=9)
    store.insert_deployment(of_workflow)
    assert store.get_deployment("w1") == of_workflow
    store.delete_deployment("w1")

    disabled = dataclasses.replace(first, enabled=False, modified_at=5, input_specs=(), description="off")
    assert store.update_deployment(disabled) and store.get_deployment("d1") == disabled
    assert not store.update_deployment(dataclasses.replace(first, id="missing"))

    token = DeploymentTokenRecord(deployment_id="d1", id="t1", token_hash="h1", created_at=2, description="ci")
    store.insert_deployment_token(token)
    store.insert_deployment_token(dataclasses.replace(token, id="t2", token_hash="h2", created_at=3))
    with pytest.raises(Conflict):
        store.insert_deployment_token(dataclasses.replace(token, id="t3"))  # the same hash
    with pytest.raises(LookupError):
        store.insert_deployment_token(dataclasses.replace(token, deployment_id="missing", id="t4", token_hash="h4"))
    assert store.get_deployment_token_by_hash("h1") == token and store.get_deployment_token_by_hash("x") is None
    revoked = store.revoke_deployment_token("d1", "t1", 9.0)
    assert revoked is not None and revoked.revoked_at == 9.0
    again = store.revoke_deployment_token("d1", "t1", 10.0)
    assert again is not None and again.revoked_at == 9.0  # the first revocation stands
    assert store.revoke_deployment_token("d2", "t2", 9.0) is None  # not d2's token
    assert [t.id for t in store.list_deployment_tokens("d1", False, PageQuery(limit=5)).items] == ["t2"]
    everything = store.list_deployment_tokens("d1", True, PageQuery(limit=1))
    assert [t.id for t in everything.items] == ["t1"] and everything.next_after is not None
    rest = store.list_deployment_tokens("d1", True, PageQuery(limit=1, after=everything.next_after))
    assert [t.id for t in rest.items] == ["t2"]
    store.insert_deployment_token(dataclasses.replace(token, id="t5", token_hash="h5", request_id="req"))
    with pytest.raises(Conflict):  # one token per request id and deployment
        store.insert_deployment_token(dataclasses.replace(token, id="t6", token_hash="h6", request_id="req"))
    made = store.get_deployment_token_by_request("d1", "req")
    assert made is not None and made.id == "t5" and store.get_deployment_token_by_request("d2", "req") is None
    store.replace_deployment_token_hash("t5", "h7")
    assert store.get_deployment_token_by_hash("h7") == dataclasses.replace(made, token_hash="h7")
    assert store.get_deployment_token_by_hash("h5") is None

    store.insert_deployment_token(dataclasses.replace(token, deployment_id="d2", id="t8", token_hash="h8"))
    store.insert_deployment_token(dataclasses.replace(token, deployment_id="other", id="t9", token_hash="h9"))
    assert store.get_deleted_deployment_token("h2") is None  # its deployment is there

    assert store.delete_deployment("d1") and not store.delete_deployment("d1")
    assert store.get_deployment("d1") is None and store.get_deployment_token_by_hash("h2") is None
    # a deleted deployment's tokens (revoked or not) leave their hash, naming it
    for kept in ("h1", "h2", "h7"):
        assert store.get_deleted_deployment_token(kept) == DeletedDeploymentToken("d1", with_app=False)
    assert store.delete_app("u", "app")
    assert store.get_deployment("d2") is None and store.get_deployment("other") is not None
    assert store.get_deleted_deployment_token("h8") == DeletedDeploymentToken("d2", with_app=True)
    assert store.get_deleted_deployment_token("h9") is None  # v's app of the same id stays
    assert store.get_deleted_deployment_token("h1") == DeletedDeploymentToken("d1", with_app=False)
    assert store.get_deleted_deployment_token("x") is None
    store.close()


def test_only_the_newest_deleted_tokens_are_kept(metadata_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleting keeps the tokens' hashes, but only the newest DELETED_TOKENS_KEPT: the table
    stays bounded however many deployments are made and deleted."""
    monkeypatch.setattr(deployment_rows, "DELETED_TOKENS_KEPT", 3)
    store = open_metadata_store(metadata_uri)
    try:
        store.insert_app(AppRecord(user_id="u", id="app", created_at=0, modified_at=0))
        base = DeploymentRecord(user_id="u", app_id="app", id="d0", created_at=1, modified_at=1, model_id="m")
        for i in range(5):
            store.insert_deployment(dataclasses.replace(base, id=f"d{i}"))
            store.insert_deployment_token(
                DeploymentTokenRecord(deployment_id=f"d{i}", id=f"t{i}", token_hash=f"h{i}", created_at=1.0)
            )
            assert store.delete_deployment(f"d{i}")
        kept = [i for i in range(5) if store.get_deleted_deployment_token(f"h{i}") is not None]
        assert kept == [2, 3, 4]
        store.insert_deployment(dataclasses.replace(base, id="d5"))
        store.insert_deployment_token(
            DeploymentTokenRecord(deployment_id="d5", id="t5", token_hash="h5", created_at=1.0)
        )
        assert store.delete_app("u", "app")  # deleting the app keeps and prunes the same way
        assert [i for i in range(6) if store.get_deleted_deployment_token(f"h{i}") is not None] == [3, 4, 5]
    finally:
        store.close()
