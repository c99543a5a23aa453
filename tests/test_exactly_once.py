"""Exactly once, also across a crash: a mutation and its request-log entry commit together.

Each server here is a real `pellucid server` process armed with a test-only crash point
(server/faults.py, `PELLUCID_FAULT`): `crash-after-commit` ends the process after the
commit and before the response is sent, `crash-before-commit` just before the commit.
A server then restarts on the same data dir, armed for the next step of the chain, and
the client retries with the same request id, as the SDK does after UNAVAILABLE.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from pellucid.api import v1
from pellucid.client._transport import RetryPolicy
from pellucid.client.user import User
from pellucid.server.faults import CRASH_EXIT_CODE
from pellucid.server.records import PageQuery
from tests.test_server_process import ServerProcess, admin_pat

OK = v1.Status.OK


def serve(data_dir: Path, monkeypatch: pytest.MonkeyPatch, fault: str = "", *extra: str) -> ServerProcess:
    """A server on `data_dir` that crashes at `fault` (none if empty)."""
    if fault:
        monkeypatch.setenv("PELLUCID_FAULT", fault)
    else:
        monkeypatch.delenv("PELLUCID_FAULT", raising=False)
    return ServerProcess(data_dir, *extra)


def call(server: ServerProcess, stub_type: Any, method: str, request: Any) -> Any:
    with grpc.insecure_channel(server.address) as channel:
        return getattr(stub_type(channel), method)(
            request, timeout=10, metadata=[("authorization", f"Bearer {admin_pat(server.data_dir)}")]
        )


def code_of(server: ServerProcess, stub_type: Any, method: str, request: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call(server, stub_type, method, request)
    return info.value.code()


def crash(server: ServerProcess, stub_type: Any, method: str, request: Any) -> None:
    """The call dies with the server: the client never sees the answer."""
    assert code_of(server, stub_type, method, request) == grpc.StatusCode.UNAVAILABLE
    assert server.proc.wait(timeout=15) == CRASH_EXIT_CODE, "".join(server.lines)


def text_inputs(n: int) -> list[v1.Input]:
    return [v1.Input(data=v1.Data(text=v1.Text(raw=f"crash text {i}"))) for i in range(n)]


def test_an_attempt_commits_its_writes_with_its_response_or_rolls_both_back(metadata_uri: str) -> None:
    """RequestLog.attempt in process: the request log's side of the unit of work."""
    from pellucid.server.engine import Principal
    from pellucid.server.engine.requests import ClaimLost, RequestLog
    from pellucid.server.records import AppRecord
    from pellucid.server.storage import open_metadata_store

    store = open_metadata_store(metadata_uri)
    now = [1000.0]
    log = RequestLog(store, clock=lambda: now[0])
    alice = Principal("alice", is_admin=False, token_id="t")

    def app(app_id: str) -> AppRecord:
        return AppRecord(user_id="alice", id=app_id, created_at=0, modified_at=0)

    _, owner = log.claim(alice, "r1", "CreateApp", wait=0)
    with log.attempt(alice, "r1", owner) as record:
        store.insert_app(app("a1"))
        record(b"a1 made")
    assert log.claim(alice, "r1", "CreateApp", wait=0) == (b"a1 made", "")

    _, owner = log.claim(alice, "r2", "CreateApp", wait=0)
    with pytest.raises(RuntimeError, match="without recording"), log.attempt(alice, "r2", owner):
        store.insert_app(app("a2"))  # a mutation with no response logged is not committed
    assert store.get_app("alice", "a2") is None
    assert log.claim(alice, "r2", "CreateApp", wait=0)[0] is None  # and the claim was released

    _, slow = log.claim(alice, "r3", "CreateApp", wait=0)
    now[0] += RequestLog.STALE_AFTER + 1
    _, newer = log.claim(alice, "r3", "CreateApp", wait=0)  # the slow attempt looks crashed: taken over
    with pytest.raises(ClaimLost), log.attempt(alice, "r3", slow) as record:
        store.insert_app(app("a3"))
        record(b"from the slow attempt")
    assert store.get_app("alice", "a3") is None  # the slow attempt applied nothing
    with log.attempt(alice, "r3", newer) as record:
        store.insert_app(app("a3"))
        record(b"from the newer attempt")
    assert log.claim(alice, "r3", "CreateApp", wait=0) == (b"from the newer attempt", "")
    store.close()


def test_an_attempt_whose_claim_was_taken_over_answers_with_the_attempt_that_applied(metadata_uri: str) -> None:
    """`replayable` after ClaimLost: its own writes are rolled back and it claims again,
    so a stalled attempt and the retry that took its claim over apply the call once."""
    from types import SimpleNamespace

    from pellucid.server.engine import Principal
    from pellucid.server.engine.requests import RequestLog
    from pellucid.server.grpc import context as request_context
    from pellucid.server.grpc.idempotency import replayable
    from pellucid.server.records import AppRecord
    from pellucid.server.storage import open_metadata_store

    store = open_metadata_store(metadata_uri)
    now = [1000.0]
    requests = RequestLog(store, clock=lambda: now[0])
    alice = Principal("alice", is_admin=False, token_id="t")
    runs: list[str] = []

    def retry_takes_over(request_id: str) -> None:
        now[0] += RequestLog.STALE_AFTER + 1  # the first attempt now looks crashed
        _, owner = requests.claim(alice, request_id, "CreateApp", wait=0)
        with requests.attempt(alice, request_id, owner) as record:
            store.insert_app(AppRecord(user_id="alice", id="by-the-retry", created_at=0, modified_at=0))
            record(v1.App(id="by-the-retry").SerializeToString())

    class Servicer:
        engine = SimpleNamespace(requests=requests)

        @replayable(v1.App)
        def CreateApp(self, request: v1.CreateAppRequest, context: Any) -> v1.App:
            runs.append(request.request_id)
            if len(runs) == 1:  # stalls before its first write, while the retry runs (in another thread)
                with ThreadPoolExecutor(1) as other:
                    other.submit(retry_takes_over, request.request_id).result()
            app = f"run-{len(runs)}"
            store.insert_app(AppRecord(user_id="alice", id=app, created_at=0, modified_at=0))
            return v1.App(id=app)

    tokens = request_context.bind(alice, "trace")
    try:
        answer = Servicer().CreateApp(v1.CreateAppRequest(request_id="r1"), SimpleNamespace(time_remaining=lambda: 5.0))
    finally:
        request_context.unbind(tokens)
    assert answer.id == "by-the-retry" and len(runs) == 1
    assert [a.id for a in store.list_apps("alice", "", PageQuery(limit=10)).items] == ["by-the-retry"]
    store.close()


def test_a_retry_after_a_crash_after_the_commit_gets_the_stored_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    server = serve(data_dir, monkeypatch, "crash-after-commit:CreateApp")
    create_app = v1.CreateAppRequest(app=v1.App(id="crashed", name="made once"), request_id=uuid.uuid4().hex)
    crash(server, v1.AppServiceStub, "CreateApp", create_app)

    server = serve(data_dir, monkeypatch, "crash-after-commit:PostInputs")
    app = call(server, v1.AppServiceStub, "CreateApp", create_app)  # not ALREADY_EXISTS for the app it made
    assert (app.id, app.name) == ("crashed", "made once")
    assert [a.id for a in call(server, v1.AppServiceStub, "ListApps", v1.ListAppsRequest()).apps] == ["crashed"]
    post = v1.PostInputsRequest(
        app_id="crashed", inputs=text_inputs(5), inputs_add_job_id="job1", request_id=uuid.uuid4().hex
    )
    crash(server, v1.InputServiceStub, "PostInputs", post)

    server = serve(data_dir, monkeypatch, "crash-after-commit:CreateConcepts")
    posted = call(server, v1.InputServiceStub, "PostInputs", post)
    assert [(r.status.code, r.duplicate) for r in posted.results] == [(OK, False)] * 5  # stored, not "duplicate"
    job = call(
        server, v1.InputServiceStub, "GetInputsAddJob", v1.GetInputsAddJobRequest(app_id="crashed", job_id="job1")
    )
    assert (job.received, job.stored, job.duplicates) == (5, 5, 0)  # the job counted the batch once
    concepts = v1.CreateConceptsRequest(
        app_id="crashed", concepts=[v1.Concept(id="cat"), v1.Concept(id="dog")], request_id=uuid.uuid4().hex
    )
    crash(server, v1.ConceptServiceStub, "CreateConcepts", concepts)

    server = serve(data_dir, monkeypatch, "crash-after-commit:CreatePat")
    made = call(server, v1.ConceptServiceStub, "CreateConcepts", concepts)
    assert [(c.id, s.code) for c, s in zip(made.concepts, made.statuses)] == [("cat", OK), ("dog", OK)]
    # token-minting calls replay in the engine (the secret is never stored): the token row
    # holds its request id, so the retry finds it and rotates its secret
    mint = v1.CreatePatRequest(description="through a crash", request_id=uuid.uuid4().hex)
    crash(server, v1.UserServiceStub, "CreatePat", mint)

    server = serve(data_dir, monkeypatch)
    try:
        minted = call(server, v1.UserServiceStub, "CreatePat", mint)
        pats = call(server, v1.UserServiceStub, "ListPats", v1.ListPatsRequest()).pats
        assert [p.id for p in pats if p.description == "through a crash"] == [minted.pat.id]
        assert User(base_url=f"grpc://{server.address}", pat=minted.secret).get_user_info().id == "admin"
    finally:
        server.stop()


def test_a_crash_before_the_commit_leaves_nothing_and_the_retry_applies_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    server = serve(data_dir, monkeypatch, "crash-before-commit:CreateApp")
    create_app = v1.CreateAppRequest(app=v1.App(id="crashed"), request_id=uuid.uuid4().hex)
    crash(server, v1.AppServiceStub, "CreateApp", create_app)

    server = serve(data_dir, monkeypatch, "crash-before-commit:PostInputs")
    assert code_of(server, v1.AppServiceStub, "GetApp", v1.GetAppRequest(app_id="crashed")) == grpc.StatusCode.NOT_FOUND
    assert call(server, v1.AppServiceStub, "CreateApp", create_app).id == "crashed"  # the crashed claim does not block
    post = v1.PostInputsRequest(
        app_id="crashed", inputs=text_inputs(3), inputs_add_job_id="job1", request_id=uuid.uuid4().hex
    )
    crash(server, v1.InputServiceStub, "PostInputs", post)

    server = serve(data_dir, monkeypatch, "crash-before-commit:CreateDataset")
    assert not call(server, v1.InputServiceStub, "ListInputs", v1.ListInputsRequest(app_id="crashed")).inputs
    posted = call(server, v1.InputServiceStub, "PostInputs", post)
    assert [(r.status.code, r.duplicate) for r in posted.results] == [(OK, False)] * 3
    assert (posted.job.received, posted.job.stored, posted.job.duplicates) == (3, 3, 0)
    dataset = v1.CreateDatasetRequest(app_id="crashed", dataset=v1.Dataset(id="d1"), request_id=uuid.uuid4().hex)
    crash(server, v1.DatasetServiceStub, "CreateDataset", dataset)

    server = serve(data_dir, monkeypatch)
    try:
        assert not call(
            server, v1.DatasetServiceStub, "ListDatasets", v1.ListDatasetsRequest(app_id="crashed")
        ).datasets
        assert call(server, v1.DatasetServiceStub, "CreateDataset", dataset).id == "d1"
        assert call(server, v1.DatasetServiceStub, "CreateDataset", dataset).id == "d1"  # and replays from now on
    finally:
        server.stop()


def test_the_sdk_retries_through_a_server_crash_and_gets_the_app_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK retries UNAVAILABLE with the same request id until the restarted server answers."""
    data_dir = tmp_path / "data"
    server = serve(data_dir, monkeypatch, "crash-after-commit:CreateApp")
    port = server.address.rsplit(":", 1)[1]
    user = User(
        base_url=f"grpc://{server.address}",
        pat=admin_pat(data_dir),
        retry=RetryPolicy(max_attempts=1000, initial_backoff=0.05, max_backoff=0.2),
    )
    with ThreadPoolExecutor(1) as caller:
        created = caller.submit(user.create_app, "via-sdk", description="made once")
        assert server.proc.wait(timeout=30) == CRASH_EXIT_CODE
        restarted = serve(data_dir, monkeypatch, "", "--port", port)
        try:
            assert created.result(timeout=60).id == "via-sdk"
            assert [(a.id, a.app_info.description) for a in user.list_apps()] == [("via-sdk", "made once")]
        finally:
            restarted.stop()


def test_starting_a_replica_keeps_the_claims_of_live_replicas_and_releases_those_of_gone_ones(
    tmp_path: Path,
) -> None:
    """Two server processes share one metadata store (--metadata): the second one's start
    must not release the first one's claim (its attempt is still running); the first one
    stopping releases it; a replica silent past the bound is gone for the next one to start."""
    from pellucid.server.runtime import PellucidServer, ServerSettings
    from pellucid.server.storage import ClaimOutcome

    settings = ServerSettings(data_dir=tmp_path / "a", metadata_uri=f"sqlite://{tmp_path / 'shared.sqlite3'}")
    first = PellucidServer(settings)
    first.start()
    second = PellucidServer(
        ServerSettings(data_dir=tmp_path / "b", metadata_uri=settings.metadata_uri, replica_heartbeat_seconds=0.05)
    )
    try:
        assert first.engine is not None
        store = first.engine.store
        claim = store.claim_request("u", "r1", "CreateApp", 0.0, 1e12, owner="o1", replica=first.replica_id)
        assert claim.outcome is ClaimOutcome.CLAIMED
        second.start()
        retry = store.claim_request("u", "r1", "CreateApp", 1.0, 1e12, owner="o2", replica=second.replica_id)
        assert retry.outcome is ClaimOutcome.IN_PROGRESS  # first is alive: its attempt keeps the claim
        first.stop()
        assert second.engine is not None
        store = second.engine.store
        retry = store.claim_request("u", "r1", "CreateApp", 2.0, 1e12, owner="o2", replica=second.replica_id)
        assert retry.outcome is ClaimOutcome.CLAIMED  # first stopped: it released what it held
        store.renew_replica("silent", 100.0)  # a replica that died without stopping, last seen at t=100
        store.claim_request("u", "r2", "CreateApp", 100.0, 1e12, owner="o3", replica="silent")
        assert store.release_gone_replicas(alive_since=50.0, this_replica=second.replica_id) == 0
        assert store.release_gone_replicas(alive_since=101.0, this_replica=second.replica_id) == 1
        again = store.claim_request("u", "r2", "CreateApp", 102.0, 1e12, owner="o4", replica=second.replica_id)
        assert again.outcome is ClaimOutcome.CLAIMED
        # a replica killed while the others run: their heartbeats release its claims, no restart needed
        store.renew_replica("killed", time.time() - 3600)
        store.claim_request("u", "r3", "CreateApp", 0.0, 1e12, owner="o5", replica="killed")
        deadline = time.monotonic() + 10
        while store.claim_request("u", "r3", "CreateApp", 1.0, 1e12, "o6", second.replica_id).outcome is not (
            ClaimOutcome.CLAIMED
        ):
            assert time.monotonic() < deadline, "the heartbeat never released the killed replica's claim"
            time.sleep(0.02)
    finally:
        first.stop()
        second.stop()
