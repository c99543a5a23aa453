"""One caller cannot starve the others: caps on streams, waiting predicts and runner connections.

Each test starts its own server on a loopback port, holds hundreds of real stalled calls on it
(client streams that send one chunk and stop, predicts with no runner to serve them), checks
that the holder is refused past its cap while health checks and other users still answer,
and then cancels every call and stops the server.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import pellucid.errors as errors
from pellucid.api import v1
from pellucid.client.runner import Runner
from pellucid.client.user import User
from pellucid.server.runtime import PellucidServer, ServerSettings
from tests.test_runners import wait_for

ANSWER_WITHIN = 10.0  # a guard against hanging, not a timing threshold: a starved call waits forever


@dataclass
class Tenant:
    user: User
    pat: str
    app_id: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.pat}"),)


@dataclass
class Limited:
    server: PellucidServer
    admin: User
    channel: grpc.Channel

    def tenant(self, prefix: str) -> Tenant:
        created = self.admin.create_user(f"{prefix}-{uuid.uuid4().hex[:8]}")
        user = User(base_url=f"grpc://{self.server.address}", pat=created.pat.secret, user_id=created.user.id)
        app = user.create_app("limits")
        return Tenant(user, created.pat.secret, app.id)

    def healthy(self) -> bool:
        answer = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=ANSWER_WITHIN)
        return answer.status == health_pb2.HealthCheckResponse.SERVING


@contextmanager
def limited_server(tmp_path: Path, **settings: Any) -> Iterator[Limited]:
    server = PellucidServer(ServerSettings(data_dir=tmp_path / "data", **settings))
    server.start()
    channel = grpc.insecure_channel(server.address)
    try:
        credentials = server.data_dir.read_credentials()
        assert credentials is not None
        yield Limited(server, User(base_url=f"grpc://{server.address}", pat=credentials.pat), channel)
    finally:
        channel.close()
        server.stop(grace=0.5)


class Stalled:
    """Calls a test holds open; `close` cancels them all and ends their request streams."""

    def __init__(self) -> None:
        self.calls: list[grpc.Future] = []
        self.release = threading.Event()
        self._finished = threading.Semaphore(0)

    def add(self, call: grpc.Future) -> None:
        self.calls.append(call)
        call.add_done_callback(lambda _: self._finished.release())

    def wait_finished(self, count: int) -> None:
        """Until `count` calls have ended (refused ones end at once)."""
        for _ in range(count):
            assert self._finished.acquire(timeout=ANSWER_WITHIN), "refused calls did not end"

    def refused(self) -> list[grpc.Future]:
        return [c for c in self.calls if c.done() and not c.cancelled()]

    def open(self) -> list[grpc.Future]:
        return [c for c in self.calls if not c.done()]

    def close(self) -> None:
        for call in self.calls:
            call.cancel()
        self.release.set()


@contextmanager
def stalled_calls() -> Iterator[Stalled]:
    held = Stalled()
    try:
        yield held
    finally:
        held.close()


def stall_uploads(channel: grpc.Channel, tenant: Tenant, held: Stalled, count: int) -> None:
    """`count` UploadBlob streams that send their first chunk and then wait for `held.release`."""
    upload = v1.InputServiceStub(channel).UploadBlob

    def chunks() -> Iterator[v1.BlobChunk]:
        yield v1.BlobChunk(data=b"first chunk", app_id=tenant.app_id)
        held.release.wait()

    for _ in range(count):
        held.add(upload.future(chunks(), metadata=tenant.metadata, timeout=60))


def assert_refused(calls: list[grpc.Future], *words: str) -> None:
    assert calls
    for call in calls:
        error = call.exception()
        assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        for word in words:
            assert word in error.details(), error.details()


def others_still_answer(limited: Limited, other: Tenant) -> None:
    assert limited.healthy()
    assert other.app_id in [a.id for a in other.user.with_options(timeout=ANSWER_WITHIN).list_apps()]
    other.user.with_options(timeout=ANSWER_WITHIN).create_app(f"more-{uuid.uuid4().hex[:6]}")
    # a stream of another user goes through too
    upload = v1.InputServiceStub(limited.channel).UploadBlob
    chunks = iter([v1.BlobChunk(data=b"whole blob", app_id=other.app_id)])
    assert upload(chunks, metadata=other.metadata, timeout=ANSWER_WITHIN).size == len(b"whole blob")


class Echo(Runner):
    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        return v1.Output(data=v1.Data(text=v1.Text(raw=input.data.text.raw)))


def test_300_stalled_streams_of_one_user_do_not_block_health_or_other_users(tmp_path: Path) -> None:
    with limited_server(tmp_path) as limited, stalled_calls() as held:
        alice, bob = limited.tenant("alice"), limited.tenant("bob")
        stall_uploads(limited.channel, alice, held, 300)
        held.wait_finished(300 - 32)
        assert len(held.open()) == 32  # the default cap; the rest were refused at once
        assert_refused(held.refused(), "32 concurrent streams", "max_streams_per_user=32", "--max-streams-per-user")
        others_still_answer(limited, bob)
        alice_fast = alice.user.with_options(timeout=ANSWER_WITHIN)
        assert alice_fast.list_apps()  # the holder's own short calls are not capped
        with pytest.raises(errors.RateLimited, match="max_streams_per_user"):  # the SDK's error for the cap
            alice.user._connection.send_stream(
                v1.InputServiceStub,
                "UploadBlob",
                iter([v1.BlobChunk(data=b"x", app_id=alice.app_id)]),
                timeout=ANSWER_WITHIN,
            )

        # runner connections are counted apart: a user at the stream cap still serves predicts
        alice.user.create_runner("echo", labels=["cpu"])
        model = alice.user.app(alice.app_id).create_model("echo", runner_labels=["cpu"], input_fields=["text"])
        runner = Echo("echo", base_url=alice.user.base_url, pat=alice.pat, num_parallel_polls=1)
        thread = threading.Thread(target=runner.start, daemon=True)
        thread.start()
        try:
            assert runner.wait_connected(ANSWER_WITHIN)
            assert model.with_options(timeout=ANSWER_WITHIN).predict_by_bytes(b"hi", "text").runner_id == "echo"
        finally:
            runner.stop(drain=False)
            thread.join(ANSWER_WITHIN)


def test_300_predicts_waiting_for_a_runner_do_not_block_health_or_other_users(tmp_path: Path) -> None:
    with limited_server(tmp_path) as limited, stalled_calls() as held:
        alice, bob = limited.tenant("alice"), limited.tenant("bob")
        for tenant in (alice, bob):
            tenant.user.app(tenant.app_id).create_model("unserved", runner_labels=["gpu"], input_fields=["text"])
        predict = v1.ModelServiceStub(limited.channel).PostModelOutputs
        request = v1.PostModelOutputsRequest(
            app_id=alice.app_id, model_id="unserved", inputs=[v1.Input(data=v1.Data(text=v1.Text(raw="x")))]
        )
        for _ in range(300):
            held.add(predict.future(request, metadata=alice.metadata, timeout=60))
        held.wait_finished(300 - 64)
        assert len(held.open()) == 64
        assert_refused(held.refused(), "64 predicts in flight", "max_predicts_per_user=64", "--max-predicts-per-user")
        others_still_answer(limited, bob)
        # bob's own predict waits for a runner like any other, and says which one is missing
        with pytest.raises(errors.Unavailable, match=r"unserved.*gpu"):
            bob.user.app(bob.app_id).model("unserved").with_options(timeout=1.0).predict_by_bytes(b"x", "text")


def test_many_users_at_their_caps_leave_threads_for_short_calls(tmp_path: Path) -> None:
    """All long calls together take at most three quarters of the threads (here 12 of 16)."""
    with (
        limited_server(tmp_path, max_workers=16, max_streams_per_user=5, max_runner_connections_per_user=1) as limited,
        stalled_calls() as held,
    ):
        tenants = [limited.tenant(f"user{i}") for i in range(5)]
        for tenant in tenants[:4]:
            stall_uploads(limited.channel, tenant, held, 5)
        held.wait_finished(20 - 12)
        assert len(held.open()) == 12
        assert_refused(held.refused(), "the server is busy", "--max-workers")
        others_still_answer_briefly(limited, tenants[4])

    with (
        limited_server(tmp_path / "runners", max_workers=16, max_runner_connections_per_user=1) as limited,
        stalled_calls() as held,
    ):
        carol = limited.tenant("carol")
        carol.user.create_runner("r", labels=[])
        connect = v1.RunnerServiceStub(limited.channel).Connect

        def hello() -> Iterator[v1.RunnerMessage]:
            yield v1.RunnerMessage(hello=v1.RunnerHello(runner_id="r", capacity=1))
            held.release.wait()

        first = connect(hello(), metadata=carol.metadata, timeout=60)
        assert next(first).HasField("welcome")
        second = connect(hello(), metadata=carol.metadata, timeout=ANSWER_WITHIN)
        with pytest.raises(grpc.RpcError) as refused:
            next(second)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_runner_connections_per_user=1" in refused.value.details()
        first.cancel()


def test_300_health_watches_without_a_token_do_not_block_health_checks(tmp_path: Path) -> None:
    """Unauthenticated streams (health Watch; reflection) are counted together, as one caller."""
    with limited_server(tmp_path) as limited, stalled_calls() as held:
        bob = limited.tenant("bob")
        watch = health_pb2_grpc.HealthStub(limited.channel).Watch
        watches = [watch(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(300)]
        held.calls.extend(watches)
        refused = 0
        for call in watches:  # each one either says SERVING and stays open, or is refused
            try:
                assert next(call).status == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                assert "callers without a token (all together) already has 32 concurrent streams" in exc.details()
                refused += 1
        assert refused == 300 - 32
        others_still_answer(limited, bob)


def others_still_answer_briefly(limited: Limited, other: Tenant) -> None:
    assert limited.healthy()
    assert other.app_id in [a.id for a in other.user.with_options(timeout=ANSWER_WITHIN).list_apps()]


def test_limits_are_checked_when_the_server_starts(tmp_path: Path) -> None:
    for bad in (
        {"max_workers": 4},
        {"max_streams_per_user": 0},
        {"max_predicts_per_user": -1},
        {"max_input_batches_per_user": 0},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PellucidServer(ServerSettings(data_dir=tmp_path / "data", **bad)).start()


def test_server_flags_set_the_limits(capsys: pytest.CaptureFixture[str]) -> None:
    from pellucid.cli import build_parser

    args = build_parser().parse_args(
        [
            "server",
            "--max-streams-per-user",
            "8",
            "--max-predicts-per-user",
            "9",
            "--max-runner-connections-per-user",
            "10",
            "--max-workers",
            "64",
        ]
    )
    assert (
        args.max_streams_per_user,
        args.max_predicts_per_user,
        args.max_runner_connections_per_user,
        args.max_workers,
    ) == (8, 9, 10, 64)
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["server", "--max-streams-per-user", "0"])
    assert exited.value.code == 2
    assert "--max-streams-per-user: must be at least 1, got 0" in capsys.readouterr().err


def test_callers_without_a_token_cannot_take_the_long_calls_of_authenticated_users(tmp_path: Path) -> None:
    """Unauthenticated streams from many addresses together hold at most one caller's share.

    Counted per peer address, anyone could open health Watch streams from a few
    addresses (here IPv4 and IPv6 loopback) until every authenticated user's upload,
    predict and runner connection was refused as SERVER_BUSY.
    """
    with limited_server(tmp_path, host="[::]", max_workers=80) as limited, stalled_calls() as held:
        bob = limited.tenant("bob")
        channels = [grpc.insecure_channel(f"{host}:{limited.server.port}") for host in ("127.0.0.1", "[::1]")]
        try:
            for channel in channels:
                watch = health_pb2_grpc.HealthStub(channel).Watch
                watches = [watch(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(32)]
                held.calls.extend(watches)
                for call in watches:  # each one is serving (and stays open) or refused
                    try:
                        next(call)
                    except grpc.RpcError as exc:
                        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
            others_still_answer(limited, bob)
        finally:
            held.close()
            for channel in channels:
                channel.close()


@contextmanager
def slow_text_site() -> Iterator[tuple[str, threading.Event, threading.Event]]:
    """A loopback web server whose text answers wait until `answer` is set (a slow remote host);
    `asked` is set once a request arrived."""
    import http.server

    answer, asked = threading.Event(), threading.Event()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.set()
            answer.wait(ANSWER_WITHIN)
            body = b"fetched at last"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{site.server_address[1]}/review.txt", answer, asked
    finally:
        answer.set()
        site.shutdown()
        site.server_close()


def post_url_batch(channel: grpc.Channel, tenant: Tenant, url: str, n: int) -> grpc.Future:
    request = v1.PostInputsRequest(
        app_id=tenant.app_id,
        inputs=[v1.Input(id=f"slow-{n}", data=v1.Data(text=v1.Text(url=url)))],
        request_id=uuid.uuid4().hex,
    )
    return v1.InputServiceStub(channel).PostInputs.future(request, metadata=tenant.metadata, timeout=60)


def test_input_batches_fetching_slow_urls_do_not_block_health_or_other_users(tmp_path: Path) -> None:
    with (
        limited_server(tmp_path, max_workers=16, max_input_batches_per_user=4, allow_private_urls=True) as limited,
        slow_text_site() as (url, answer, _),
        stalled_calls() as held,
    ):
        holder, other = limited.tenant("holder"), limited.tenant("other")
        for n in range(40):  # more than the server has threads: each waits for its URL
            held.add(post_url_batch(limited.channel, holder, url, n))
        held.wait_finished(36)
        assert_refused(held.refused(), "max_input_batches_per_user=4", "--max-input-batches-per-user")
        assert len(held.open()) == 4
        others_still_answer(limited, other)
        answer.set()
        for call in held.calls:
            if call not in held.refused():
                assert call.result(timeout=ANSWER_WITHIN).results[0].status.code == 0  # fetched and stored


def test_the_sdk_retries_a_batch_refused_while_the_user_is_at_the_cap(tmp_path: Path) -> None:
    with (
        limited_server(tmp_path, max_input_batches_per_user=1, allow_private_urls=True) as limited,
        slow_text_site() as (url, answer, asked),
    ):
        holder = limited.tenant("holder")
        slow = post_url_batch(limited.channel, holder, url, 0)
        assert asked.wait(ANSWER_WITHIN)  # the server is fetching it: the user's one slot is taken
        threading.Timer(0.5, answer.set).start()
        job = holder.user.app(holder.app_id).inputs().upload_text("quick", "sent while the slot is taken")
        assert job and slow.result(timeout=ANSWER_WITHIN).results[0].status.code == 0
        assert {i.id for i in holder.user.app(holder.app_id).inputs().list_inputs()} == {"quick", "slow-0"}


def test_searches_fetching_slow_image_urls_are_capped_per_user(tmp_path: Path) -> None:
    """A search holds its thread while the server fetches its image URL (or embeds its query)."""
    with (
        limited_server(tmp_path, max_workers=16, max_searches_per_user=3, allow_private_urls=True) as limited,
        slow_text_site() as (url, answer, _),
        stalled_calls() as held,
    ):
        holder, other = limited.tenant("holder"), limited.tenant("other")
        app_id = holder.user.create_app("images", base_workflow="Universal").id
        search = v1.SearchServiceStub(limited.channel).PostInputsSearches
        request = v1.PostInputsSearchesRequest(app_id=app_id, query=v1.Query(ranks=[v1.Rank(image_url=url)]))
        for _ in range(12):
            held.add(search.future(request, metadata=holder.metadata, timeout=60))
        held.wait_finished(9)
        assert_refused(held.refused(), "max_searches_per_user=3", "--max-searches-per-user")
        assert len(held.open()) == 3
        others_still_answer(limited, other)
        answer.set()
        for call in held.calls:  # the fetched "image" is text: refused as such, not a hang
            error = call.exception(timeout=ANSWER_WITHIN)
            assert error is not None and error.code() in (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION,
            ), error


class Held(Runner):
    """Holds every item until `release` is set: predicts in flight for as long as the test likes."""

    release = threading.Event()

    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        from pellucid.client.runner import features_from_values

        assert Held.release.wait(ANSWER_WITHIN * 3)
        if input.data.features:
            return v1.Output(data=v1.Data(features=features_from_values({"Echo": "held"})))
        return v1.Output(data=v1.Data(text=v1.Text(raw="held")))


def test_one_cap_on_predicts_in_flight_over_grpc_and_http_together(tmp_path: Path) -> None:
    """With max_predicts_per_user=N, N predicts held over gRPC make the next HTTP call (deployment
    forward and OIP REST infer) answer 429, and N held over HTTP make the next gRPC predict
    RESOURCE_EXHAUSTED: one count, not one per protocol."""
    cap = 2
    Held.release.clear()
    with limited_server(tmp_path, max_predicts_per_user=cap, http_port=0) as limited, stalled_calls() as held:
        alice = limited.tenant("alice")
        app = alice.user.app(alice.app_id)
        alice.user.create_runner("held", labels=["held"])
        app.create_model("plain", runner_labels=["held"], input_fields=["text"])
        app.create_model(
            "named",
            runner_labels=["held"],
            input_specs=[{"name": "Sound", "type": "text"}],
            output_specs=[{"name": "Echo", "type": "text"}],
        )
        _, token = app.create_deployment("named", model_id="named").create_token()
        runner = Held("held", base_url=alice.user.base_url, pat=alice.pat, num_parallel_polls=2 * cap)
        thread = threading.Thread(target=runner.start, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{limited.server.http_port}"
        counts = limited.server.engine.predicts_in_flight
        caller = f"user {alice.user.user_id!r}"

        def forward() -> httpx.Response:
            return httpx.post(
                f"{base}/v1/deployments/named/forward",
                json={"rows": [{"Sound": "hi"}]},
                headers={"Authorization": f"Bearer {token}"},
                timeout=ANSWER_WITHIN * 3,
            )

        def infer() -> httpx.Response:
            body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}
            return httpx.post(
                f"{base}/v2/models/{alice.app_id}--plain/infer",
                json=body,
                headers={"Authorization": f"Bearer {alice.pat}"},
                timeout=ANSWER_WITHIN * 3,
            )

        predict = v1.ModelServiceStub(limited.channel).PostModelOutputs
        request = v1.PostModelOutputsRequest(
            app_id=alice.app_id, model_id="plain", inputs=[v1.Input(data=v1.Data(text=v1.Text(raw="x")))]
        )
        try:
            assert runner.wait_connected(ANSWER_WITHIN)
            # N over gRPC: HTTP is refused
            for _ in range(cap):
                held.add(predict.future(request, metadata=alice.metadata, timeout=ANSWER_WITHIN * 3))
            wait_for(lambda: counts.held(caller) == cap)
            busy = forward()
            assert busy.status_code == 429, busy.text
            assert busy.json()["error"]["reason"] == "TOO_MANY_CALLS" and busy.headers["retry-after"]
            assert infer().status_code == 429
            Held.release.set()
            assert [call.result(ANSWER_WITHIN).outputs[0].data.text.raw for call in held.calls] == ["held"] * cap
            wait_for(lambda: counts.held(caller) == 0)

            # N over HTTP (one forward, one OIP infer): gRPC is refused
            Held.release.clear()
            answers: list[httpx.Response] = []
            calls = [threading.Thread(target=lambda f=f: answers.append(f())) for f in (forward, infer)]
            for call in calls:
                call.start()
            wait_for(lambda: counts.held(caller) == cap)
            with pytest.raises(grpc.RpcError) as refused:
                predict(request, metadata=alice.metadata, timeout=ANSWER_WITHIN)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"{cap} predicts in flight" in refused.value.details()
            Held.release.set()
            for call in calls:
                call.join(ANSWER_WITHIN * 3)
            assert sorted(r.status_code for r in answers) == [200, 200], [r.text for r in answers]
            wait_for(lambda: counts.held(caller) == 0)
        finally:
            Held.release.set()
            runner.stop(drain=False)
            thread.join(ANSWER_WITHIN)
