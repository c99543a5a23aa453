"""Scale-out end to end: two `pellucid server` replicas over one PostgreSQL database (metadata and
work queue) and one S3 bucket (blobs, moto on loopback), four runner processes (two on each
replica), and a client that spreads its calls over both, as a load balancer would; then one
replica is SIGKILLed mid-load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import pellucid.errors as errors
from pellucid.api import v1
from pellucid.client.input import Inputs
from pellucid.client.model import Model
from pellucid.client.uploads import UploadResult
from pellucid.client.user import User
from tests import pg
from tests.media_samples import png
from tests.s3_server import CREDENTIALS, MotoServer
from tests.test_runners import ROOT, connected, wait_for
from tests.test_server_process import ServerProcess, admin_pat

RUNNERS = {"a": ("a1", "a2"), "b": ("b1", "b2")}


def start_echo_runner(address: str, pat: str, runner_id: str, hold_dir: Path) -> subprocess.Popen[str]:
    """`pellucid runner start tests/runner_models.py:Echo` connected to `address` (host:port, or
    several joined by commas: the runner keeps to the first that answers)."""
    env = {**os.environ, "HOLD_DIR": str(hold_dir), "PYTHONPATH": str(ROOT)}
    target = str(ROOT / "tests" / "runner_models.py") + ":Echo"
    options = ["--runner-id", runner_id, "--labels", "scale", "--concurrency", "2"]
    connection = ["--api", f"grpc://{address}", "--pat", pat]
    return subprocess.Popen(
        [sys.executable, "-m", "pellucid.cli", "runner", "start", target, *options, *connection],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def png_inputs(dataset_id: str, names: list[str]) -> list[v1.Input]:
    return [Inputs.get_input_from_bytes(n, image_bytes=png(n), dataset_id=dataset_id) for n in names]


def listed(user: User, dataset_id: str) -> list[str]:
    return [i.id for i in user.app("scale").dataset(dataset_id).list_inputs(per_page=500)]


def predict_on(model_at: dict[str, Model], first: str, text: str) -> tuple[str, v1.PostModelOutputsResponse]:
    """One predict sent to replica `first`; if that replica fails it, resent to replica "a" (a
    predict is safe to resend): a client behind a load balancer sees the same."""
    try:
        return first, model_at[first].with_options(timeout=10).predict_by_bytes(text.encode(), "text")
    except errors.ApiError:
        if first == "a":
            raise
        return "a", model_at["a"].with_options(timeout=60).predict_by_bytes(text.encode(), "text")


@pytest.fixture
def moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)  # replicas (subprocesses) inherit them
    server = MotoServer(tmp_path)
    server.start()
    yield server
    server.stop()


def test_two_replicas_four_runners_and_a_sigkill(tmp_path: Path, moto: MotoServer, _postgres_session: None) -> None:
    database = pg.new_database()
    shared = ("--metadata", database, "--queue", database, "--blobs", moto.uri(moto.new_bucket()))
    hold_dir = tmp_path / "hold"
    hold_dir.mkdir()
    replicas: dict[str, ServerProcess] = {}
    runners: list[subprocess.Popen[str]] = []
    try:
        replicas["a"] = ServerProcess(tmp_path / "a", *shared)
        replicas["b"] = ServerProcess(tmp_path / "b", *shared)
        pat = admin_pat(replicas["a"].data_dir)  # the first replica created the admin; the second found it
        user = {name: User(base_url=f"grpc://{r.address}", pat=pat) for name, r in replicas.items()}
        app = user["a"].create_app("scale")
        app.create_model("echo", runner_labels=["scale"], item_timeout_seconds=60)
        app.create_dataset("early")
        app.create_dataset("late")
        # A's runners know only A; B's know B first and A as the replica to move to
        addresses = {"a": replicas["a"].address, "b": f"{replicas['b'].address},{replicas['a'].address}"}
        for name, ids in RUNNERS.items():
            runners += [start_echo_runner(addresses[name], pat, runner_id, hold_dir) for runner_id in ids]
        everyone = (*RUNNERS["a"], *RUNNERS["b"])
        wait_for(lambda: all(connected(user["b"], runner_id) for runner_id in everyone), timeout=60)
        model_at = {name: u.app("scale").model("echo") for name, u in user.items()}
        inputs_at = {name: u.app("scale").inputs() for name, u in user.items()}

        # ingestion through both replicas at once: half via A, half via B, and an overlap sent to both
        names = [f"early-{i}" for i in range(40)]
        with ThreadPoolExecutor(2) as pool:
            halves = [("a", names[:25]), ("b", names[15:])]
            results = list(
                pool.map(
                    lambda half: inputs_at[half[0]].upload_inputs(
                        png_inputs("early", half[1]), show_log=False, batch_size=8
                    ),
                    halves,
                )
            )
        assert all(r.ok for r in results), [r.failed for r in results]
        assert sorted([*results[0].stored_ids, *results[1].stored_ids]) == sorted(names)  # each stored once
        assert sorted([*results[0].duplicate_ids, *results[1].duplicate_ids]) == sorted(names[15:25])
        on_a, on_b = listed(user["a"], "early"), listed(user["b"], "early")
        assert on_a == on_b and sorted(on_a) == sorted(names)  # same ids, same order, no duplicates
        assert inputs_at["b"].download_inputs(names[:3]) == [png(n) for n in names[:3]]

        # predicts spread over both replicas, until runners on both replicas have answered
        served_by: set[str] = set()
        for i in range(400):  # a guard: all four runners compete for every item
            replica, response = predict_on(model_at, "ab"[i % 2], f"warm-{i}")
            assert replica == "ab"[i % 2] and response.outputs[0].data.text.raw == f"WARM-{i}"
            served_by.add(response.runner_id)
            if served_by & set(RUNNERS["a"]) and served_by & set(RUNNERS["b"]):
                break
        assert served_by & set(RUNNERS["a"]) and served_by & set(RUNNERS["b"]), served_by

        # mid-load: a predict held in flight at B, more predicts in flight on both, an upload via B
        answers: dict[str, list[tuple[str, v1.PostModelOutputsResponse]]] = {}
        failures: list[BaseException] = []
        lock = threading.Lock()

        def predict(first: str, text: str) -> None:
            try:
                answer = predict_on(model_at, first, text)
                with lock:
                    answers.setdefault(text, []).append(answer)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                failures.append(exc)

        callers = [threading.Thread(target=predict, args=("b", "hold-0"))]
        callers += [threading.Thread(target=predict, args=("ab"[i % 2], f"load-{i}")) for i in range(16)]
        killed = threading.Event()
        late = [f"late-{i}" for i in range(48)]

        def late_inputs() -> Iterator[v1.Input]:
            yield from png_inputs("late", late[:24])
            killed.wait(60)  # the rest only once replica B is gone
            yield from png_inputs("late", late[24:])

        first_upload: list[object] = []

        def upload_via_b() -> None:
            try:
                first_upload.append(
                    inputs_at["b"]
                    .with_options(timeout=5)
                    .upload_inputs(late_inputs(), show_log=False, batch_size=8, concurrency=1)
                )
            except BaseException as exc:  # noqa: BLE001 - the upload may fail as a whole: it is re-run
                first_upload.append(exc)

        uploader = threading.Thread(target=upload_via_b)
        uploader.start()
        callers[0].start()
        wait_for(lambda: any(hold_dir.glob("started-*")), timeout=60)  # hold-0 is leased by a runner
        for caller in callers[1:]:
            caller.start()
        wait_for(lambda: len(listed(user["a"], "late")) >= 16, timeout=60)  # two batches landed
        replicas["b"].stop(signal.SIGKILL)
        killed.set()
        (hold_dir / "open").write_text("")
        for caller in callers:
            caller.join(90)
        uploader.join(90)
        assert not failures, failures
        interrupted = first_upload[0]  # the upload via B did not finish: B died under it
        assert not (isinstance(interrupted, UploadResult) and interrupted.ok), interrupted
        assert sorted(answers) == sorted(["hold-0", *(f"load-{i}" for i in range(16))])
        for text, got in answers.items():
            assert len(got) == 1, (text, got)  # exactly one answer per predict
            assert got[0][1].outputs[0].data.text.raw == text.upper()
        assert answers["hold-0"][0][0] == "a"  # its caller was on B: answered after the resend to A

        # B's runners lost their replica and moved to A: predicts, all via A now, reach them too
        served_after: set[str] = set()
        for i in range(400):  # a guard: four runners compete for every item
            _, response = predict_on(model_at, "a", f"after-{i}")
            assert response.outputs[0].data.text.raw == f"AFTER-{i}"
            served_after.add(response.runner_id)
            if set(RUNNERS["b"]) <= served_after:
                break
        assert set(RUNNERS["b"]) <= served_after, served_after

        # the client re-runs its upload against the survivor: every input stored once
        again = inputs_at["a"].upload_inputs(png_inputs("late", late), show_log=False, batch_size=8)
        assert again.ok, again.failed
        assert sorted(again.ids) == sorted(late) and len(again.duplicate_ids) >= 16
        stored = listed(user["a"], "late")
        assert sorted(stored) == sorted(late)  # none missing, none twice
        assert inputs_at["a"].download_inputs(late) == [png(n) for n in late]
        assert sorted(listed(user["a"], "early")) == sorted(names)
    finally:
        for proc in runners:
            proc.send_signal(signal.SIGKILL)
            proc.wait(20)
        for replica in replicas.values():
            replica.stop(signal.SIGKILL)
