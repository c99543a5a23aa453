""" "No runner" at any deadline: the caller hears which model and labels lack a runner, never a bare
DEADLINE_EXCEEDED, however long its deadline (the grpc-timeout header rounds long ones up)."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest

import pellucid.errors as errors
from pellucid.client._transport import DEFAULT_TIMEOUT
from pellucid.client.user import User
from pellucid.server.grpc.models import runner_wait
from pellucid.server.runtime import PellucidServer, ServerSettings

CALLERS = 300


def test_the_wait_ends_before_the_callers_deadline_whatever_its_length() -> None:
    """Real gRPC calls: the server sees each deadline as the header carried it, rounded up, and
    must still stop waiting for a runner safely (here: 0.2 s) before the caller's deadline."""

    def wait_for(request: bytes, context: grpc.ServicerContext) -> bytes:
        return repr(runner_wait(context.time_remaining())).encode()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    handler = grpc.unary_unary_rpc_method_handler(wait_for)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.Deadlines", {"Wait": handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/t.Deadlines/Wait")
            for timeout in (2.0, 3.0, 9.99, 10.0, 30.0, 99.95, 100.4, 999.5, 1000.5, 3599.0, 86399.0):
                started = time.monotonic()
                wait = float(call(b"", timeout=timeout))
                assert 0 < wait <= timeout - (time.monotonic() - started) - 0.2, timeout
    finally:
        server.stop(0)


def test_300_callers_with_the_default_deadline_all_hear_no_runner(tmp_path: Path) -> None:
    """One ~30 s test: the SDK's default deadline, 300 callers waiting at once, no runner."""
    assert DEFAULT_TIMEOUT == 30.0
    server = PellucidServer(ServerSettings(data_dir=tmp_path / "data", max_workers=512, max_predicts_per_user=CALLERS))
    server.start()
    try:
        credentials = server.data_dir.read_credentials()
        assert credentials is not None
        user = User(base_url=f"grpc://{server.address}", pat=credentials.pat)
        model = user.create_app("no-runner").create_model(
            "detector", runner_labels=["gpu", "large"], input_fields=["text"]
        )
        outcomes: list[tuple[BaseException | None, float]] = [(None, 0.0)] * CALLERS

        def predict(i: int) -> None:
            started = time.monotonic()
            try:
                model.predict_by_bytes(b"x", "text")  # the default deadline
            except Exception as exc:  # noqa: BLE001 - every outcome is checked below
                outcomes[i] = (exc, time.monotonic() - started)

        threads = [threading.Thread(target=predict, args=(i,)) for i in range(CALLERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEFAULT_TIMEOUT + 30)
        assert not any(t.is_alive() for t in threads)
        kinds = {type(error).__name__ for error, _ in outcomes}
        assert kinds == {"Unavailable"}, [e for e, _ in outcomes if not isinstance(e, errors.Unavailable)][:3]
        for error, elapsed in outcomes:
            assert isinstance(error, errors.Unavailable)
            assert "'detector'" in error.message and "gpu, large" in error.message, error.message
            assert error.details.get("reason") == "NO_RUNNER"
            assert elapsed > DEFAULT_TIMEOUT / 2  # it did wait for a runner
    finally:
        server.stop(grace=0.5)


def test_no_runner_is_not_retried_into_a_deadline(tmp_path: Path) -> None:
    """A short deadline too: the SDK raises the server's Unavailable, not DEADLINE_EXCEEDED after retrying."""
    server = PellucidServer(ServerSettings(data_dir=tmp_path / "data"))
    server.start()
    try:
        credentials = server.data_dir.read_credentials()
        assert credentials is not None
        user = User(base_url=f"grpc://{server.address}", pat=credentials.pat)
        model = user.create_app("no-runner").create_model("m", runner_labels=["cpu"], input_fields=["text"])
        for timeout in (0.5, 2.0):
            with pytest.raises(errors.Unavailable, match=r"'m'.*cpu"):
                model.with_options(timeout=timeout).predict_by_bytes(b"x", "text")
    finally:
        server.stop(grace=0.5)
