"""The SDK's transport: one shared channel, auth header, deadlines, retries with backoff."""

from __future__ import annotations

import socket
import threading
import time
from concurrent import futures

import grpc
import pytest

import pellucid.errors as errors
from pellucid.api import v1
from pellucid.client._transport import RetryPolicy, get_connection
from pellucid.client.app import App
from pellucid.client.config import resolve_settings
from pellucid.client.user import User
from pellucid.errors import UserError
from pellucid.server.runtime import PellucidServer, ServerSettings
from tests.conftest import RunningServer


def test_resource_objects_share_one_connection(server: RunningServer, alice: User, unique: str) -> None:
    pat = alice._connection.settings.pat
    one, two = User(base_url=server.url, pat=pat), User(base_url=server.url, pat=pat)
    assert one._connection is two._connection
    app = one.create_app(f"share-{unique}")
    assert app._connection is one._connection
    assert next(one.list_apps())._connection is one._connection
    assert User(base_url=server.url, pat=server.admin_pat)._connection is not one._connection


def test_each_object_keeps_its_own_user_id(
    server: RunningServer, alice: User, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pat = alice.create_pat(description="fresh connection").secret  # a token no object has used yet
    named = User(base_url=server.url, pat=pat, user_id="someone-else")
    plain = User(base_url=server.url, pat=pat)
    assert plain._connection is named._connection  # one channel, two user ids
    assert named.user_id == "someone-else"
    assert plain.user_id == alice.user_id  # the token's own user, not the first caller's
    assert App(app_id="any", base_url=server.url, pat=pat).user_id == alice.user_id
    assert plain.create_app(f"own-{unique}").user_id == alice.user_id
    with pytest.raises(errors.PermissionDenied):
        named.create_app(f"theirs-{unique}")
    monkeypatch.setenv("PELLUCID_USER_ID", "from-env")
    assert User(base_url=server.url, pat=pat).user_id == "from-env"
    assert User(base_url=server.url, pat=pat, user_id="from-arg").user_id == "from-arg"
    assert plain.user_id == alice.user_id


def test_close_and_context_manager(server: RunningServer, alice: User) -> None:
    pat = alice._connection.settings.pat
    with User(base_url=server.url, pat=pat) as user:
        assert user.get_user_info().id == alice.user_id
    assert user._connection._channel is None
    assert user.get_user_info().id == alice.user_id  # reopens on demand


def test_constructors_do_no_network_io() -> None:
    user = User(base_url="grpc://127.0.0.1:1", pat="x")  # nothing listens on port 1
    app = user.with_options(timeout=0.5)
    assert app.timeout == 0.5 and user._connection._channel is None


class Recorder(grpc.GenericRpcHandler):
    """A bare gRPC server that records what the SDK sends and answers as told."""

    def __init__(self, answer: grpc.StatusCode | None = None, delay: float = 0.0) -> None:
        self.calls: list[tuple[dict, float | None]] = []
        self.answer, self.delay = answer, delay

    def service(self, details):  # type: ignore[no-untyped-def]
        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.calls.append((dict(context.invocation_metadata()), context.time_remaining()))
            time.sleep(self.delay)
            if self.answer is not None:
                context.abort(self.answer, "told to fail")
            return v1.User(id="recorded").SerializeToString()

        return grpc.unary_unary_rpc_method_handler(handle)


def serve(handler: Recorder, port: int = 0) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound


def test_every_call_carries_token_request_id_and_deadline() -> None:
    recorder = Recorder()
    server, port = serve(recorder)
    try:
        user = User(base_url=f"grpc://127.0.0.1:{port}", pat="pel_pat_secret", timeout=7)
        assert user.get_user_info().id == "recorded"
        metadata, remaining = recorder.calls[0]
        assert metadata["authorization"] == "Bearer pel_pat_secret"
        assert len(metadata["x-request-id"]) == 32
        assert remaining is not None and 1 < remaining <= 7.5  # the deadline travels with the call
    finally:
        server.stop(0)


def test_deadline_is_enforced() -> None:
    server, port = serve(Recorder(delay=1.0))
    try:
        user = User(base_url=f"grpc://127.0.0.1:{port}", pat="x", timeout=0.2)
        started = time.monotonic()
        with pytest.raises(errors.DeadlineExceeded):
            user.get_user_info()
        assert time.monotonic() - started < 0.9
    finally:
        server.stop(0)


def test_errors_that_are_not_transient_are_not_retried() -> None:
    recorder = Recorder(answer=grpc.StatusCode.INVALID_ARGUMENT)
    server, port = serve(recorder)
    try:
        with pytest.raises(errors.InvalidArgument):
            User(base_url=f"grpc://127.0.0.1:{port}", pat="x").get_user_info()
        assert len(recorder.calls) == 1
    finally:
        server.stop(0)


def test_unavailable_is_retried_with_backoff_until_it_gives_up() -> None:
    recorder = Recorder(answer=grpc.StatusCode.UNAVAILABLE)
    server, port = serve(recorder)
    try:
        with pytest.raises(errors.Unavailable):
            User(base_url=f"grpc://127.0.0.1:{port}", pat="x").get_user_info()
        assert len(recorder.calls) == RetryPolicy().max_attempts
    finally:
        server.stop(0)


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2.0)
    for attempt in range(10):
        cap = min(1.0, 0.1 * 2**attempt)
        pauses = [policy.backoff(attempt) for _ in range(50)]
        assert all(cap / 2 <= p <= cap for p in pauses)
        assert len(set(pauses)) > 1  # jittered


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_that_comes_up_late_is_reached_by_retrying(tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    first = PellucidServer(ServerSettings(data_dir=tmp_path, port=port))
    first.start()  # creates the admin and its credentials
    first.stop(0)
    credentials = first.data_dir.read_credentials()
    assert credentials is not None
    late = PellucidServer(ServerSettings(data_dir=tmp_path, port=port))
    timer = threading.Timer(0.6, late.start)
    timer.start()
    try:
        user = User(base_url=f"grpc://127.0.0.1:{port}", pat=credentials.pat, timeout=20)
        assert user.get_user_info().id == "admin"  # first attempts hit a closed port
    finally:
        timer.join()
        late.stop(0)


def test_a_batch_framed_from_serialized_inputs_parses_as_the_request_it_stands_for() -> None:
    from pellucid.client._protos import encode_with_repeated

    header = v1.PostInputsRequest(user_id="u", app_id="a", inputs_add_job_id="job", request_id="r1")
    inputs = [
        v1.Input(id=f"in-{size}", data=v1.Data(image=v1.Image(base64=b"x" * size)))
        for size in (0, 1, 100, 127, 128, 16_383, 16_384, 300_000)
    ]
    inputs.append(v1.Input())  # serializes to zero bytes: still one element
    framed = encode_with_repeated(header, "inputs", [i.SerializeToString() for i in inputs])
    expected = v1.PostInputsRequest()
    expected.CopyFrom(header)
    expected.inputs.extend(inputs)
    assert v1.PostInputsRequest.FromString(framed) == expected


def test_an_encoded_batch_goes_to_its_method_with_its_bytes_and_is_retried_under_one_request_id() -> None:
    from pellucid.client._transport import EncodedRequest

    methods: list[str] = []
    bodies: list[bytes] = []

    class MethodRecorder(Recorder):
        def service(self, details):  # type: ignore[no-untyped-def]
            methods.append(details.method)
            handler = super().service(details)

            def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
                bodies.append(request)
                return handler.unary_unary(request, context)

            return grpc.unary_unary_rpc_method_handler(handle)

    recorder = MethodRecorder(answer=grpc.StatusCode.UNAVAILABLE)
    server, port = serve(recorder)
    try:
        user = User(base_url=f"grpc://127.0.0.1:{port}", pat="pel_pat_secret")
        inputs = [v1.Input(id="a", data=v1.Data(text=v1.Text(raw="one"))).SerializeToString()]
        request = EncodedRequest.frame(v1.PostInputsResponse, v1.PostInputsRequest(app_id="a"), "inputs", inputs)
        with pytest.raises(errors.Unavailable):
            user._connection.call(v1.InputServiceStub, "PostInputs", request, retry=RetryPolicy(initial_backoff=0.01))
        attempts = RetryPolicy().max_attempts
        assert set(methods) == {"/pellucid.api.v1.InputService/PostInputs"}
        assert [m["x-request-id"] for m, _ in recorder.calls] == [request.request_id] * attempts
        assert {m["authorization"] for m, _ in recorder.calls} == {"Bearer pel_pat_secret"}
        assert len(bodies) == attempts and len({bytes(b) for b in bodies}) == 1  # the same bytes every time
        parsed = v1.PostInputsRequest.FromString(bodies[0])
        assert (
            parsed.request_id == request.request_id and parsed.app_id == "a" and parsed.inputs[0].data.text.raw == "one"
        )
    finally:
        server.stop(0)


def test_a_target_naming_several_replicas_spreads_calls_over_those_that_answer() -> None:
    recorders = [Recorder(), Recorder()]
    servers = [serve(r) for r in recorders]
    dead = free_port()  # a replica that is down: calls go to the others
    try:
        target = ",".join(f"127.0.0.1:{port}" for port in (dead, servers[0][1], servers[1][1]))
        user = User(base_url=f"grpc://{target}", pat="x", timeout=10)
        for _ in range(20):
            assert user.get_user_info().id == "recorded"
        assert all(len(r.calls) >= 5 for r in recorders), [len(r.calls) for r in recorders]
    finally:
        for server, _ in servers:
            server.stop(0)


def test_pick_first_keeps_to_the_first_replica_and_moves_on_when_it_dies() -> None:
    first, second = Recorder(), Recorder()
    (server_1, port_1), (server_2, port_2) = serve(first), serve(second)
    try:
        settings = resolve_settings(f"grpc://localhost:{port_1},127.0.0.1:{port_2}", pat="x")
        connection = get_connection(settings, balance="pick_first")
        for _ in range(5):
            connection.call(v1.UserServiceStub, "GetUser", v1.GetUserRequest(), timeout=10)
        assert (len(first.calls), len(second.calls)) == (5, 0)
        server_1.stop(0)
        connection.call(v1.UserServiceStub, "GetUser", v1.GetUserRequest(), timeout=10)  # retried onto the second
        assert len(second.calls) == 1
    finally:
        server_1.stop(0)
        server_2.stop(0)


def test_an_unknown_replica_host_is_unavailable_with_its_name() -> None:
    user = User(base_url="grpc://127.0.0.1:1,no-such-host.invalid:7317", pat="x", timeout=2)
    with pytest.raises(errors.Unavailable, match=r"no-such-host\.invalid:7317"):
        user.get_user_info()


def test_replicas_of_two_address_families_are_refused_not_dropped() -> None:
    """gRPC's static list holds one family: an IPv6-only replica beside IPv4 ones would be left
    out silently, so the SDK says so instead."""
    from pellucid.client._transport import replica_list

    assert replica_list(("127.0.0.1:1", "127.0.0.2:2")) == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert replica_list(("[::1]:1", "[::1]:2")) == "ipv6:[::1]:1,[::1]:2"
    with pytest.raises(UserError, match="address family"):
        replica_list(("[::1]:7317", "127.0.0.1:7318"))
