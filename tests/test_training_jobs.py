"""Training jobs inside one engine (no gRPC): progress and log lines reach the store while a job
runs, a job whose version is deleted mid-run stops cleanly, and a server stopping mid-run
leaves the job to be run again."""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pellucid import trained
from pellucid.server.engine import Engine, Principal, trainable, training
from pellucid.server.engine.inputs import InputSpec
from pellucid.server.engine.spaces import space_name
from pellucid.server.records import ConceptValue, TrainingJobRecord, TrainingState
from pellucid.server.storage import open_metadata_store
from pellucid.server.storage.registry import open_blob_store, open_vector_index
from pellucid.trained import fit_softmax

OWNER = Principal(user_id="u", is_admin=False, token_id="t")
N = 600


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """An app whose N labelled texts have stored 384-d vectors (two clear concepts): jobs read
    them back and embed nothing."""
    engine = _engine(tmp_path)
    yield engine
    engine.close()


def _engine(tmp_path: Path, clock: Callable[[], float] = time.time) -> Engine:
    store = open_metadata_store(f"sqlite://{tmp_path / 'metadata.sqlite3'}")
    blobs = open_blob_store(f"file://{tmp_path}", tmp_path)
    engine = Engine(store, blobs, vectors=open_vector_index("memory:", None), clock=clock)
    engine.apps.create(OWNER, "u", "a", base_workflow="Empty")
    engine.datasets.create(OWNER, "u", "a", "d")
    rng = np.random.default_rng(0)
    labels = rng.integers(2, size=N)
    specs = [
        InputSpec(id=f"in-{i}", text=f"text {i}", labels=(ConceptValue(f"c{labels[i]}"),), dataset_ids=("d",))
        for i in range(N)
    ]
    for start in range(0, N, 128):
        engine.inputs.post(OWNER, "u", "a", specs[start : start + 128])
    seqs = store.input_seqs("u", "a", [s.id for s in specs])
    vectors = rng.standard_normal((N, 384)).astype(np.float32)
    vectors[:, 0] += labels * 4.0
    engine.vectors.upsert(space_name("u", "a", "text"), np.array([seqs[s.id] for s in specs]), vectors)
    engine.models.create(OWNER, "u", "a", "m", model_type_id="embedding-classifier")
    return engine


def _job(engine: Engine, version_id: str) -> TrainingJobRecord:
    job = engine.store.get_training_job("u", "a", "m", version_id)
    assert job is not None
    return job


def test_progress_and_log_lines_reach_the_store_while_the_job_runs(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training, "FLUSH_SECONDS", 0.0)  # every report is written (normally: at most 2 a second)
    seen: list[tuple[float, str]] = []
    update = engine.store.update_training_job

    def recording(
        job: TrainingJobRecord, owner: str, now: float, until: float, progress: float, lines: str = ""
    ) -> bool:
        seen.append((progress, lines))
        return update(job, owner, now, until, progress, lines)

    engine.store.update_training_job = recording  # type: ignore[method-assign]  # records, then stores as always
    version, _ = engine.training.train(OWNER, "u", "a", "m", {"dataset_id": "d", "epochs": 50})
    assert _job(engine, version.id).state is TrainingState.QUEUED
    assert engine.training.run_once()
    job = _job(engine, version.id)
    assert job.state is TrainingState.TRAINED and job.progress == 1.0
    progress = [p for p, _ in seen]
    assert len(progress) >= 50 and progress == sorted(progress) and progress[-1] < 1
    assert any(0.5 < p < 0.95 for p in progress)  # reported while fitting, not only at the end
    logs = "".join(lines for _, lines in seen)
    assert f"holds {N} inputs" in logs and f"{N} vectors were stored for search; 0 to embed" in logs
    assert job.logs.startswith(logs) and job.logs.rstrip().endswith("trained")
    assert job.metrics["train_accuracy"] > 0.95


@pytest.fixture
def long_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs that run every epoch they are given: on an idle machine two clear concepts converge
    (the loss stops moving) within a second, before a test can catch the job mid-fit."""
    monkeypatch.setattr(trainable, "fit_softmax", functools.partial(fit_softmax, tolerance=-1.0))


@pytest.mark.usefixtures("long_jobs")
def test_a_job_whose_version_is_deleted_mid_run_stops(engine: Engine) -> None:
    version, _ = engine.training.train(OWNER, "u", "a", "m", {"dataset_id": "d", "hidden_units": 256, "epochs": 100000})
    worker = threading.Thread(target=engine.training.run_once)
    worker.start()
    deadline = time.monotonic() + 60
    while (job := _job(engine, version.id)).state is not TrainingState.TRAINING or job.progress < 0.5:
        assert job.state in (TrainingState.QUEUED, TrainingState.TRAINING), f"{job.state}: {job.logs[-500:]}"
        assert time.monotonic() < deadline, f"the job never reached its fitting: {job.state} {job.progress}"
        time.sleep(0.05)
    engine.models.delete_version(OWNER, "u", "a", "m", version.id)
    worker.join(30)
    assert not worker.is_alive()  # stopped at its next report (JobLost), without failing anything
    assert engine.store.get_training_job("u", "a", "m", version.id) is None


@pytest.mark.usefixtures("long_jobs")
def test_a_stopping_server_leaves_its_job_to_be_run_again(engine: Engine) -> None:
    version, _ = engine.training.train(OWNER, "u", "a", "m", {"dataset_id": "d", "hidden_units": 256, "epochs": 100000})
    engine.training.start(workers=1)
    deadline = time.monotonic() + 60
    while _job(engine, version.id).progress < 0.5:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    engine.training.stop(timeout=30)
    left = _job(engine, version.id)
    assert left.state is TrainingState.TRAINING and left.attempts == 1  # its claim lapses, or a restart requeues it
    assert engine.store.requeue_training_jobs() == 1
    assert _job(engine, version.id).state is TrainingState.QUEUED


@pytest.mark.usefixtures("long_jobs")
def test_a_job_past_the_servers_time_limit_fails_and_is_not_run_again(engine: Engine) -> None:
    engine.training.max_seconds = 1.0  # the training_max_seconds setting
    version, _ = engine.training.train(OWNER, "u", "a", "m", {"dataset_id": "d", "hidden_units": 256, "epochs": 100000})
    worker = threading.Thread(target=engine.training.run_once)
    worker.start()
    worker.join(60)
    assert not worker.is_alive()  # stopped at a report past the limit, not after its 100,000 epochs
    job = _job(engine, version.id)
    assert job.state is TrainingState.FAILED and job.attempts == 1 and job.progress < 0.95
    assert "training ran longer than 1 s, this server's limit per job" in job.reason
    assert "--training-max-seconds" in job.reason and "training_max_seconds" in job.reason
    assert job.logs.rstrip().endswith(job.reason)
    assert not engine.training.run_once()  # failed for good: no claim takes it up again


@pytest.mark.parametrize(
    ("model_type", "params", "first_report"),
    [
        # one epoch of an MLP: the old first report was the end of that epoch
        ("embedding-classifier", {"hidden_units": 64, "epochs": 1}, "epoch 1/"),
        # k-means++ seeding 300 centres: the old first report was the end of the first iteration
        ("clusterer", {"num_clusters": 300, "max_iterations": 1}, "iteration 1:"),
    ],
)
def test_a_fit_past_the_time_limit_stops_before_its_first_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_type: str, params: dict[str, Any], first_report: str
) -> None:
    """The clock moves a second each time it is read, and the limit is 100 s: gathering the data
    reads it far fewer times, so the limit passes inside the fit, which reads it before each block
    of work (CHECK_WORK shrunk so that the classifier's epoch over the test's 600 rows is 200 blocks).
    The job fails saying so, before the fit's first report (which is where the limit used to be
    checked: both jobs used to be trained, their 100 s never seen)."""
    monkeypatch.setattr(trained, "CHECK_WORK", 1 << 18)
    ticks = itertools.count()
    engine = _engine(tmp_path, clock=lambda: 1_000_000.0 + next(ticks))
    try:
        engine.models.create(OWNER, "u", "a", "k", model_type_id=model_type)
        engine.training.max_seconds = 100.0
        version, _ = engine.training.train(OWNER, "u", "a", "k", {"dataset_id": "d", **params})
        assert engine.training.run_once()
        job = engine.store.get_training_job("u", "a", "k", version.id)
        assert job is not None and job.state is TrainingState.FAILED, job
        assert "training ran longer than 100 s, this server's limit per job" in job.reason
        assert f"holds {N} inputs" in job.logs and first_report not in job.logs
    finally:
        engine.close()
