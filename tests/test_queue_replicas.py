"""Replicas sharing one PostgreSQL (metadata and work queue): a runner on one serves predicts that
arrive at another, and a replica killed while its runner holds an item loses nothing."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pellucid import errors
from pellucid.api import v1
from pellucid.client.model import Model
from pellucid.client.runner import Runner
from pellucid.client.user import User
from pellucid.server.runtime import PellucidServer, ServerSettings
from tests import pg
from tests.test_runners import connected, predict_in_background, start_runner, wait_for
from tests.test_server_process import ServerProcess, admin_pat


class Upper(Runner):
    """In-process runner: answers with the text upper-cased and its runner id."""

    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        output = v1.Output(data=v1.Data(concepts=[v1.Concept(id="ok", value=1.0)]))
        output.data.text.raw = input.data.text.raw.upper()
        return output


@pytest.fixture
def two_replicas(tmp_path: Path, _postgres_session: None) -> Iterator[tuple[PellucidServer, PellucidServer]]:
    uri = pg.new_database()
    replicas: list[PellucidServer] = []
    try:
        for name in ("a", "b"):
            server = PellucidServer(ServerSettings(data_dir=tmp_path / name, port=0, metadata_uri=uri, queue_uri=uri))
            server.start()
            replicas.append(server)
        yield replicas[0], replicas[1]
    finally:
        for server in replicas:
            server.stop(grace=0.5)


def test_a_runner_on_replica_a_serves_predicts_sent_to_replica_b(
    two_replicas: tuple[PellucidServer, PellucidServer], tmp_path: Path
) -> None:
    a, b = two_replicas
    pat = admin_pat(tmp_path / "a")  # the first replica created the admin; the second found it
    on_a, on_b = User(base_url=f"grpc://{a.address}", pat=pat), User(base_url=f"grpc://{b.address}", pat=pat)
    on_a.create_runner("upper", labels=["text"])
    model = on_a.create_app("shared").create_model("m", runner_labels=["text"])
    runner = Upper("upper", base_url=f"grpc://{a.address}", pat=pat, num_parallel_polls=2)
    thread = threading.Thread(target=runner.start, daemon=True)
    thread.start()
    try:
        assert runner.wait_connected(10)
        assert on_b.runner("upper").connections == 1  # replica B sees A's runner stream
        at_b = on_b.app("shared").model("m")
        for text in ("one", "two", "three"):
            response = at_b.predict_by_bytes(text.encode(), "text")
            assert response.runner_id == "upper" and response.outputs[0].data.text.raw == text.upper()
        assert model.predict_by_bytes(b"four", "text").outputs[0].data.text.raw == "FOUR"  # and at A
    finally:
        runner.stop(drain=False)
        thread.join(10)


def test_a_killed_replica_loses_nothing(tmp_path: Path, _postgres_session: None) -> None:
    """SIGKILL of the replica whose runner holds an item: the lease lapses, a runner on the other
    replica claims the item, and the caller (at the surviving replica) gets exactly one answer."""
    uri = pg.new_database()
    shared = ("--metadata", uri, "--queue", uri)
    survivor = ServerProcess(tmp_path / "survivor", *shared)
    doomed = ServerProcess(tmp_path / "doomed", *shared)
    doomed.data_dir = survivor.data_dir  # the admin's PAT is in the first replica's data dir
    runners = []
    try:
        user = User(base_url=f"grpc://{survivor.address}", pat=admin_pat(survivor.data_dir))
        model = user.create_app("procs").create_model("m", runner_labels=["proc"], item_timeout_seconds=60)
        slow, slow_started = start_runner(doomed, "slow", tmp_path, sleep=60)
        runners.append(slow)
        wait_for(lambda: connected(user, "slow"))
        thread, answers = predict_in_background(model, timeout=40)
        wait_for(slow_started.exists)  # the item is leased through the doomed replica
        healthy, _ = start_runner(survivor, "healthy", tmp_path)
        runners.append(healthy)
        wait_for(lambda: connected(user, "healthy"))
        doomed.stop(signal.SIGKILL)
        thread.join(40)
        assert len(answers) == 1 and isinstance(answers[0], v1.PostModelOutputsResponse), answers
        assert answers[0].runner_id == "healthy"
    finally:
        for proc in runners:
            proc.send_signal(signal.SIGKILL)
            proc.wait(20)
        doomed.stop(signal.SIGKILL)
        survivor.stop()


def test_a_runner_relabelled_or_deleted_through_replica_b_stops_serving_at_replica_a(
    two_replicas: tuple[PellucidServer, PellucidServer], tmp_path: Path
) -> None:
    """Replica A holds the runner's stream; the registration changes through B, which closes only
    the streams it holds. A notices at its next check of its streams (every few seconds) and
    closes the stream, so work for a label the runner lost (or for a deleted runner) is no
    longer handed to it."""
    a, b = two_replicas
    pat = admin_pat(tmp_path / "a")
    on_a, on_b = User(base_url=f"grpc://{a.address}", pat=pat), User(base_url=f"grpc://{b.address}", pat=pat)
    on_a.create_runner("upper", labels=["text", "gpu"])
    app = on_a.create_app("shared")
    app.create_model("needs-gpu", runner_labels=["gpu"])
    text_model = app.create_model("needs-text", runner_labels=["text"])
    runner = Upper("upper", base_url=f"grpc://{a.address}", pat=pat, num_parallel_polls=1)
    ended: list[BaseException] = []

    def serve() -> None:
        try:
            runner.start()
        except errors.NotFound as exc:  # its registration deleted: it cannot connect again
            ended.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def served(model: Model) -> bool:
        try:
            model.with_options(timeout=2).predict_by_bytes(b"x", "text")
            return True
        except errors.Unavailable as exc:
            assert exc.details.get("reason") == "NO_RUNNER" or "no runner" in exc.message, exc
            return False

    try:
        assert runner.wait_connected(10)
        at_b = on_b.app("shared")
        assert served(at_b.model("needs-gpu"))
        on_b.patch_runner("upper", labels=["text"])
        wait_for(
            lambda: not served(at_b.model("needs-gpu")), timeout=20
        )  # A closed the stream; it came back without gpu
        wait_for(lambda: served(at_b.model("needs-text")), timeout=20)
        on_b.delete_runner("upper")
        wait_for(lambda: not served(text_model), timeout=20)
        thread.join(20)
        assert ended and "not found" in str(ended[0])
    finally:
        runner.stop(drain=False)
        thread.join(10)
