"""Models, predictions and runners: routing, failure isolation, crashes, stalls, drains, restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pellucid.errors as errors
from pellucid.api import v1
from pellucid.client.app import App
from pellucid.client.model import Model
from pellucid.client.runner import Runner
from pellucid.client.user import User
from tests.conftest import RunningServer
from tests.media_samples import png
from tests.test_server_process import ServerProcess, admin_pat

ROOT = Path(__file__).resolve().parent.parent


class Echo(Runner):
    """In-process runner: reports what it saw, fails on "boom"."""

    def run_input(self, input: v1.Input, output_info: v1.OutputInfo) -> v1.Output:
        text = input.data.text.raw or f"{len(input.data.image.base64)} bytes"
        if text == "slow":
            time.sleep(3)
        if text == "boom":
            raise ValueError("cannot handle boom")
        output = v1.Output(
            data=v1.Data(
                concepts=[v1.Concept(id="a", value=0.9), v1.Concept(id="b", value=0.5), v1.Concept(id="c", value=0.1)]
            )
        )
        output.data.text.raw = text
        output.data.metadata.update({"runner": self.runner_id, "params": dict(output_info.params)})
        return output


@pytest.fixture
def app(alice: User, unique: str) -> App:
    return alice.create_app(f"models-{unique}")


def serve(runner: Runner) -> threading.Thread:
    thread = threading.Thread(target=runner.start, daemon=True)
    thread.start()
    assert runner.wait_connected(10)
    return thread


@pytest.fixture
def echo(alice: User, unique: str) -> Iterator[Echo]:
    alice.create_runner(f"echo-{unique}", labels=["cpu", "small"])
    runner = Echo(f"echo-{unique}", base_url=alice.base_url, pat=alice._connection.settings.pat, num_parallel_polls=2)
    thread = serve(runner)
    yield runner
    runner.stop(drain=False)
    thread.join(10)


def test_runner_registry(alice: User, bob: User, unique: str) -> None:
    created = alice.create_runner(f"r-{unique}", labels=["gpu", "fast"], description="laptop")
    assert list(created.labels) == ["gpu", "fast"] and created.description == "laptop"
    assert [r.id for r in alice.list_runners()] == [f"r-{unique}"]
    assert list(alice.list_runners(filter_by={"labels": ["tpu"]})) == []
    alice.create_runner(f"r2-{unique}", labels=["fast"])
    assert [r.id for r in alice.list_runners(filter_by={"labels": ["fast"]}, page_no=1, per_page=1)] == [f"r-{unique}"]
    assert [r.id for r in alice.list_runners(filter_by={"labels": ["fast", "gpu"]})] == [f"r-{unique}"]
    assert [r.id for r in alice.list_runners(filter_by={"labels": ["gpu"]}, page_no=1, per_page=1)] == [f"r-{unique}"]
    alice.delete_runner(f"r2-{unique}")
    assert alice.runner(f"r-{unique}").connections == 0
    with pytest.raises(errors.AlreadyExists):
        alice.create_runner(f"r-{unique}", labels=[])
    with pytest.raises(errors.InvalidArgument):
        alice.create_runner("x", labels=["bad label"])
    with pytest.raises(errors.NotFound):
        bob.runner(f"r-{unique}")
    alice.delete_runner(f"r-{unique}")
    with pytest.raises(errors.NotFound):
        alice.runner(f"r-{unique}")


def test_model_crud_and_versions(app: App, server: RunningServer) -> None:
    model = app.create_model(
        "clf",
        runner_labels=["cpu"],
        name="Classifier",
        input_fields=["image"],
        params={"threshold": 0.5},
        concepts=["cat", "dog"],
    )
    assert model.model_info.model_version.runner_labels == ["cpu"]
    assert dict(model.model_info.model_version.output_info.params) == {"threshold": 0.5}
    second = model.create_version(runner_labels=["gpu"], description="bigger")
    assert [m.version_id for m in model.list_versions()] == [model.version_id, second.version_id]
    assert app.model("clf").model_info.model_version.id == second.version_id  # latest by default
    pinned = app.model("clf", model_version={"id": model.version_id})
    assert list(pinned.model_info.model_version.runner_labels) == ["cpu"]
    by_url = Model(
        url=f"{server.url}/{app.user_id}/{app.id}/models/clf/versions/{model.version_id}",
        pat=app._connection.settings.pat,
    )
    assert by_url.version_id == model.version_id and by_url.load_info().id == "clf"
    assert [m.id for m in app.list_models()] == ["clf"]
    model.delete_version(second.version_id)
    assert [m.version_id for m in model.list_versions()] == [model.version_id]
    with pytest.raises(errors.AlreadyExists):
        app.create_model("clf")
    with pytest.raises(errors.InvalidArgument):
        app.create_model("bad", input_fields=["smell"])
    app.delete_model("clf")
    with pytest.raises(errors.NotFound):
        app.model("clf")


def test_predict_through_a_runner(app: App, echo: Echo, tmp_path: Path) -> None:
    model = app.create_model("echo", runner_labels=["cpu"], input_fields=["text"], params={"temperature": 2})
    response = model.predict_by_bytes(b"hello", "text", inference_params={"extra": 1})
    output = response.outputs[0]
    assert response.runner_id == echo.runner_id and output.data.text.raw == "hello"
    assert output.data.metadata["params"] == {"temperature": 2, "extra": 1}  # defaults merged with the call's
    assert model.predict_by_bytes(b"no type given").outputs[0].data.text.raw == "no type given"  # from input_fields
    image = tmp_path / "x.png"
    image.write_bytes(png("predict"))
    pictures = app.create_model("echo-images", runner_labels=["cpu"], input_fields=["image"])
    assert pictures.predict_by_filepath(str(image), "image").outputs[0].data.text.raw == f"{len(png('predict'))} bytes"
    with pytest.raises(errors.InvalidArgument, match="cannot fetch"):  # the runner fetches URLs before the model runs
        pictures.predict_by_url("http://127.0.0.1:9/x.png", "image")
    with pytest.raises(errors.InvalidArgument, match="boom"):
        model.predict_by_bytes(b"boom", "text")
    with pytest.raises(errors.UserError):
        model.predict_by_filepath(str(tmp_path / "missing.png"), "image")


def test_a_caller_that_gives_up_cancels_its_item(app: App, echo: Echo, caplog: pytest.LogCaptureFixture) -> None:
    model = app.create_model("slowpoke", runner_labels=["cpu"])
    caplog.set_level("DEBUG", logger="pellucid.runner")
    with pytest.raises(errors.DeadlineExceeded):
        model.with_options(timeout=0.5).predict_by_bytes(b"slow", "text")
    wait_for(lambda: "cancelled, not sent" in caplog.text, timeout=10)
    assert model.predict_by_bytes(b"fine", "text").outputs[0].data.text.raw == "fine"  # the runner goes on


def test_one_bad_input_does_not_fail_the_others(app: App, echo: Echo) -> None:
    model = app.create_model("batch", runner_labels=["cpu"])
    inputs = [v1.Input(id=f"i{i}", data=v1.Data(text=v1.Text(raw="boom" if i == 1 else f"text {i}"))) for i in range(4)]
    response = model.predict(inputs)
    assert [o.input.id for o in response.outputs] == ["i0", "i1", "i2", "i3"]
    assert [o.status.code for o in response.outputs] == [
        v1.Status.OK,
        v1.Status.INVALID_ARGUMENT,
        v1.Status.OK,
        v1.Status.OK,
    ]
    assert "boom" in response.outputs[1].status.message
    with pytest.raises(errors.UserError, match="at most 128"):
        model.predict([inputs[0]] * 129)
    with pytest.raises(errors.InvalidArgument, match="1-128"):
        model._call(
            v1.ModelServiceStub,
            "PostModelOutputs",
            v1.PostModelOutputsRequest(app_id=app.id, model_id="batch", inputs=[inputs[0]] * 129),
        )


def test_output_config(app: App, echo: Echo) -> None:
    model = app.create_model("cfg", runner_labels=["cpu"], output_config={"min_value": 0.2})
    concepts = lambda r: [c.id for c in r.outputs[0].data.concepts]  # noqa: E731
    assert concepts(model.predict_by_bytes(b"x", "text")) == ["a", "b"]  # the version's default min_value
    assert concepts(model.predict_by_bytes(b"x", "text", output_config={"max_concepts": 1})) == ["a"]
    assert concepts(model.predict_by_bytes(b"x", "text", output_config={"min_value": 0.6})) == ["a"]
    assert concepts(model.predict_by_bytes(b"x", "text", output_config={"select_concepts": ["b"]})) == ["b"]
    with pytest.raises(errors.UserError, match="output_config keys"):
        model.predict_by_bytes(b"x", "text", output_config={"top": 1})
    with pytest.raises(errors.InvalidArgument, match="min_value"):
        model.predict_by_bytes(b"x", "text", output_config={"min_value": 3})


def test_selector_labels(app: App, echo: Echo) -> None:
    assert (
        app.create_model("both", runner_labels=["cpu", "small"]).predict_by_bytes(b"ok", "text").runner_id
        == echo.runner_id
    )
    assert app.create_model("any", runner_labels=[]).predict_by_bytes(b"ok", "text").runner_id == echo.runner_id
    unserved = app.create_model("gpu", runner_labels=["cpu", "gpu"]).with_options(timeout=1.0)
    started = time.monotonic()
    with pytest.raises(errors.Unavailable) as info:
        unserved.predict_by_bytes(b"x", "text")
    assert "model 'gpu'" in info.value.message and "gpu" in info.value.message
    assert 0.8 < time.monotonic() - started < 5


def test_a_connection_can_serve_fewer_labels(alice: User, app: App, unique: str) -> None:
    alice.create_runner(f"narrow-{unique}", labels=["cpu", "gpu"])
    kwargs = {"base_url": alice.base_url, "pat": alice._connection.settings.pat}
    narrow = Echo(f"narrow-{unique}", labels=["cpu"], **kwargs)
    thread = serve(narrow)
    try:
        assert app.create_model("c", runner_labels=["cpu"]).predict_by_bytes(b"x", "text").runner_id == narrow.runner_id
        with pytest.raises(errors.Unavailable):
            app.create_model("g", runner_labels=["gpu"]).with_options(timeout=1.0).predict_by_bytes(b"x", "text")
    finally:
        narrow.stop(drain=False)
        thread.join(10)
    with pytest.raises(errors.InvalidArgument, match="not registered with"):
        Echo(f"narrow-{unique}", labels=["tpu"], **kwargs).start()


def test_patching_labels_moves_a_connected_runner_to_the_new_ones(
    alice: User, bob: User, app: App, unique: str
) -> None:
    runner_id = f"patched-{unique}"
    alice.create_runner(runner_id, labels=["cpu"], description="laptop")
    runner = Echo(runner_id, base_url=alice.base_url, pat=alice._connection.settings.pat)
    thread = serve(runner)
    try:
        patched = alice.patch_runner(runner_id, labels=["gpu", "gpu", "big"])
        assert list(patched.labels) == ["gpu", "big"] and patched.description == "laptop"
        # its stream served "cpu", which it lost: it reconnects and serves the new labels
        gpu = app.create_model("on-gpu", runner_labels=["gpu"]).with_options(timeout=10)
        assert gpu.predict_by_bytes(b"x", "text").runner_id == runner_id
        assert list(alice.patch_runner(runner_id, description="desk").labels) == ["gpu", "big"]
        assert alice.runner(runner_id).description == "desk"
    finally:
        runner.stop(drain=False)
        thread.join(10)
    with pytest.raises(errors.NotFound):
        bob.patch_runner(runner_id, labels=["mine"])
    with pytest.raises(errors.InvalidArgument, match=r"labels\[0\]"):
        alice.patch_runner(runner_id, labels=["bad label"])
    with pytest.raises(errors.UserError):
        alice.patch_runner(runner_id)
    assert list(alice.runner(runner_id).labels) == ["gpu", "big"]


def test_other_users_runners_do_not_serve_my_models(app: App, bob: User, unique: str) -> None:
    bob.create_runner(f"bobs-{unique}", labels=["cpu"])
    runner = Echo(f"bobs-{unique}", base_url=bob.base_url, pat=bob._connection.settings.pat)
    thread = serve(runner)
    try:
        with pytest.raises(errors.Unavailable):
            app.create_model("mine", runner_labels=["cpu"]).with_options(timeout=1.0).predict_by_bytes(b"x", "text")
    finally:
        runner.stop(drain=False)
        thread.join(10)


def test_load_is_balanced(alice: User, app: App, unique: str) -> None:
    runners = []
    for n in range(2):
        alice.create_runner(f"pool{n}-{unique}", labels=["pool"])
        runners.append(
            Echo(f"pool{n}-{unique}", base_url=alice.base_url, pat=alice._connection.settings.pat, num_parallel_polls=1)
        )
    threads = [serve(r) for r in runners]
    try:
        model = app.create_model("pooled", runner_labels=["pool"])
        seen: list[str] = []
        workers = [
            threading.Thread(
                target=lambda: seen.extend(model.predict_by_bytes(b"x", "text").runner_id for _ in range(10))
            )
            for _ in range(4)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert len(seen) == 40 and {r.runner_id for r in runners} == set(seen)
        assert min(seen.count(r.runner_id) for r in runners) >= 8
    finally:
        for r, t in zip(runners, threads):
            r.stop(drain=False)
            t.join(10)


# --- separate processes: crashes, stalls, drains and restarts ---------------------------------


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data")
    yield process
    process.stop()


def start_runner(
    server: ServerProcess, runner_id: str, tmp_path: Path, sleep: float = 0.0, log_level: str = "info"
) -> tuple[subprocess.Popen, Path]:
    started = tmp_path / f"{runner_id}.started"
    env = {**os.environ, "SLEEP": str(sleep), "STARTED": str(started), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pellucid.cli",
            "runner",
            "start",
            str(ROOT / "tests" / "runner_models.py") + ":Sleepy",
            "--runner-id",
            runner_id,
            "--labels",
            "proc",
            "--concurrency",
            "1",
            "--api",
            f"grpc://{server.address}",
            "--pat",
            admin_pat(server.data_dir),
            "--log-level",
            log_level,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return proc, started


def wait_for(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def connected(user: User, runner_id: str) -> bool:
    try:
        return user.runner(runner_id).connections > 0
    except errors.NotFound:
        return False


def predict_in_background(model: Model, timeout: float) -> tuple[threading.Thread, list]:  # type: ignore[type-arg]
    answers: list = []  # type: ignore[type-arg]

    def call() -> None:
        try:
            answers.append(model.with_options(timeout=timeout).predict_by_bytes(b"item", "text"))
        except errors.ApiError as exc:
            answers.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    return thread, answers


def setup_model(server: ServerProcess, item_timeout: int = 60) -> tuple[User, Model]:
    user = User(base_url=f"grpc://{server.address}", pat=admin_pat(server.data_dir))
    app = user.create_app("procs")
    return user, app.create_model("m", runner_labels=["proc"], item_timeout_seconds=item_timeout)


def test_runner_killed_mid_item(standalone: ServerProcess, tmp_path: Path) -> None:
    user, model = setup_model(standalone)
    doomed, doomed_started = start_runner(standalone, "doomed", tmp_path, sleep=60)
    wait_for(lambda: connected(user, "doomed"))
    thread, answers = predict_in_background(model, timeout=40)
    wait_for(doomed_started.exists)
    healthy, _ = start_runner(standalone, "healthy", tmp_path)
    wait_for(lambda: connected(user, "healthy"))
    doomed.send_signal(signal.SIGKILL)
    thread.join(40)
    try:
        assert len(answers) == 1 and isinstance(answers[0], v1.PostModelOutputsResponse), answers
        assert answers[0].runner_id == "healthy"
    finally:
        healthy.send_signal(signal.SIGTERM)
        healthy.wait(20)


@pytest.mark.parametrize("how", ["hangs", "stalls"])
def test_runner_that_hangs_or_stalls(standalone: ServerProcess, tmp_path: Path, how: str) -> None:
    """hangs: its code never returns (heartbeats go on) -> the item times out and moves;
    stalls: the whole process stops (SIGSTOP, no heartbeats) -> the session is dropped and the item moves."""
    user, model = setup_model(standalone, item_timeout=2 if how == "hangs" else 60)
    stuck, stuck_started = start_runner(standalone, "stuck", tmp_path, sleep=600)
    wait_for(lambda: connected(user, "stuck"))
    thread, answers = predict_in_background(model, timeout=30)
    wait_for(stuck_started.exists)
    if how == "stalls":
        stuck.send_signal(signal.SIGSTOP)
    other, _ = start_runner(standalone, "other", tmp_path)
    try:
        thread.join(30)
        assert len(answers) == 1 and isinstance(answers[0], v1.PostModelOutputsResponse), answers
        assert answers[0].runner_id == "other"
    finally:
        stuck.send_signal(signal.SIGKILL)
        other.send_signal(signal.SIGTERM)
        other.wait(20)
        stuck.wait(20)


def test_drain_on_sigterm_and_debug_log(standalone: ServerProcess, tmp_path: Path) -> None:
    user, model = setup_model(standalone)
    runner, started = start_runner(standalone, "drainer", tmp_path, sleep=2, log_level="debug")
    wait_for(lambda: connected(user, "drainer"))
    thread, answers = predict_in_background(model, timeout=30)
    wait_for(started.exists)
    runner.send_signal(signal.SIGTERM)  # finishes the item it holds, then exits
    thread.join(30)
    assert runner.wait(20) == 0
    assert isinstance(answers[0], v1.PostModelOutputsResponse) and answers[0].runner_id == "drainer"
    log = runner.stderr.read()  # type: ignore[union-attr]
    assert "predict on 1 inputs (0 failed)" in log
    assert not connected(user, "drainer")


def test_runner_reconnects_after_a_server_restart(tmp_path: Path) -> None:
    first = ServerProcess(tmp_path / "data")
    port = first.address.split(":")[1]
    user, model = setup_model(first)
    runner, _ = start_runner(first, "comeback", tmp_path)
    wait_for(lambda: connected(user, "comeback"))
    assert first.stop() == 0
    second = ServerProcess(tmp_path / "data", "--port", port)
    try:
        assert second.address == first.address
        wait_for(lambda: connected(user, "comeback"), timeout=30)
        assert model.predict_by_bytes(b"again", "text").runner_id == "comeback"
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(20)
        second.stop()
