"""Training: server jobs that make model versions of the trainable types (issue #11).

`train` checks the params against the model type's declaration, then stores a new model
version and its QUEUED job in one transaction and returns at once. Worker threads (started by
server/runtime.py, like the indexer's) claim jobs from the metadata store with a lease that
they renew while they work: a job outlives the client that asked for it, and one whose worker
died (a crashed server, a killed replica) is claimed again once its lease lapses, or at once
when a server that has the store to itself starts. A job gathers the dataset's labelled
inputs and their embeddings (engine/training_data.py), fits the type's model
(engine/trainable.py) and stores the weights; the version is then served in-process by
Models.submit, with no runner. Progress and log lines are stored as the job goes
(GetTrainingStatus). Workers are shared by every user: a job that runs past the server's
limit (training_max_seconds) ends FAILED at its next report (the fits report between blocks of
bounded work: pellucid.trained.CHECK_WORK), and the store hands out jobs in
turns between users (claim_training_job), so one user's long queue cannot starve the others.

`export` packs a trained version as model.tar: config.yaml (everything to re-create it: the
model, the version's params, the embedder), weights.npz (pellucid.trained loads it) and the
training log.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import logging
import os
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import yaml

from pellucid.server.embedders import Embedder, builtin_embedder
from pellucid.server.engine.access import Principal
from pellucid.server.engine.errors import EngineError, FailedPrecondition, InvalidArgument, NotFound
from pellucid.server.engine.ids import validate_id
from pellucid.server.engine.models import Models, VersionSpec
from pellucid.server.engine.paging import PageRequest, next_token, to_query
from pellucid.server.engine.trainable import Clusterer, EmbeddingClassifier, TrainableModelType
from pellucid.server.engine.training_data import (
    BUILTIN,
    Embeddings,
    NoTrainingData,
    TrainingFailed,
    collect,
)
from pellucid.server.records import (
    ClusterAssignment,
    ConceptValue,
    ModelRecord,
    ModelVersionRecord,
    Page,
    PageQuery,
    TrainingJobRecord,
    TrainingState,
)
from pellucid.server.storage import Conflict, MetadataStore, StoreUnavailable
from pellucid.server.storage.blobs import BlobStore
from pellucid.server.storage.vectors import VectorIndex

log = logging.getLogger("pellucid.server.training")

DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_POLL_SECONDS = 2.0
DEFAULT_NICENESS = 10
# one attempt of a job may run this long (the training_max_seconds setting; 0: no limit): one
# user's huge job cannot hold a worker, which every user's jobs share, for ever
DEFAULT_MAX_SECONDS = 3600.0
MAX_ATTEMPTS = 3  # claims of one job: a job that kills its server every time stops being retried
FLUSH_SECONDS = 0.5  # progress and log lines reach the store at most this often
EXPORT_FORMAT = 1
MAX_INPUT_IDS = 1000  # input_ids of one ListClusterAssignments, as ListAnnotations takes


class JobLost(Exception):
    """The worker no longer holds its job (taken over, its version deleted, the server stopping)."""


class JobTimedOut(TrainingFailed):
    """The job ran past the server's limit per job: it ends FAILED (and is not run again)."""


class JobReport:
    """A running job's progress and log lines, written to the store as it goes; each write
    renews the claim and finds out whether the worker still holds the job."""

    def __init__(
        self,
        store: MetadataStore,
        job: TrainingJobRecord,
        owner: str,
        clock: Callable[[], float],
        lease_seconds: float,
        stopping: threading.Event,
        max_seconds: float = DEFAULT_MAX_SECONDS,
    ) -> None:
        self._store = store
        self._job = job
        self._owner = owner
        self._clock = clock
        self._lease = lease_seconds
        self._stopping = stopping
        self._lines: list[str] = []
        self._progress = job.progress
        self._flushed = time.monotonic()
        self._max_seconds = max_seconds
        self._deadline = clock() + max_seconds if max_seconds > 0 else float("inf")  # of this attempt

    def log(self, line: str) -> None:
        self._add(line)
        self._flush()

    def _add(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self._clock()))
        self._lines.append(f"{stamp} {line}\n")

    def progress(self, fraction: float) -> None:
        self._progress = max(self._progress, min(fraction, 0.99))
        self._flush()

    def check(self) -> None:
        self._flush()

    def _flush(self, force: bool = False) -> None:
        if self._stopping.is_set():
            raise JobLost("the server is stopping")
        if self._clock() > self._deadline:  # checked at every report, so a long fit stops at its next one
            raise JobTimedOut(
                f"training ran longer than {self._max_seconds:g} s, this server's limit per job: train on fewer "
                "inputs or for fewer epochs, or ask the server's operator to raise the limit "
                "(pellucid server --training-max-seconds, or training_max_seconds in its settings)"
            )
        if not force and time.monotonic() - self._flushed < min(FLUSH_SECONDS, self._lease / 4):
            return
        now = self._clock()
        lines, self._lines = "".join(self._lines), []
        if not self._store.update_training_job(self._job, self._owner, now, now + self._lease, self._progress, lines):
            raise JobLost("another worker holds the job, or its version was deleted")
        self._flushed = time.monotonic()

    def finish(self, state: TrainingState, reason: str = "", **outcome: Any) -> None:
        self._add(f"{state.value}" + (f": {reason}" if reason else ""))
        lines, self._lines = "".join(self._lines), []
        if not self._store.finish_training_job(self._job, self._owner, self._clock(), state, reason, lines, **outcome):
            raise JobLost("another worker holds the job, or its version was deleted")


class Training:
    """The trainable model types, the training API, and the workers that run the jobs."""

    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        models: Models,
        vectors: VectorIndex | None,
        clock: Callable[[], float] = time.time,
        embedder: Callable[[str], Embedder] = builtin_embedder,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        niceness: int = DEFAULT_NICENESS,
        max_seconds: float = DEFAULT_MAX_SECONDS,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._models = models
        self._clock = clock
        self.embeddings = Embeddings(blobs, models, vectors, embedder)
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.niceness = niceness
        self.max_seconds = max_seconds  # per attempt of a job; 0: no limit
        self._process = uuid.uuid4().hex[:12]  # owners of this process's claims: "<process>-<worker>"
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        for model_type in (EmbeddingClassifier(store, self.embeddings), Clusterer(store, self.embeddings)):
            models.local.register(model_type)

    # the API

    def trainable_types(self) -> builtins.list[TrainableModelType]:
        return [t for t in self._models.local.types() if isinstance(t, TrainableModelType)]

    def list_types(self, page: PageRequest) -> tuple[builtins.list[TrainableModelType], str]:
        """One page of the trainable types, by id (a page token is the count already listed)."""
        query = to_query(page, "trainable-model-types")
        everything = self.trainable_types()
        start = query.after if query.after is not None else query.offset
        end = start + query.limit
        return everything[start:end], next_token(
            Page([], end if end < len(everything) else None), "trainable-model-types"
        )

    def _trainable(self, model: ModelRecord) -> TrainableModelType:
        found = self._models.local.get(model.model_type_id)
        if isinstance(found, TrainableModelType):
            return found
        known = ", ".join(t.type_id for t in self.trainable_types())
        if found is not None:
            served = f"is a built-in {model.model_type_id} model"
        else:
            served = (
                f"has model_type_id {model.model_type_id!r} and is served by runners"
                if model.model_type_id
                else "is served by runners"
            )
        raise FailedPrecondition(
            f"model {model.id!r} {served}: the server trains only models of a trainable type ({known}); "
            f"create one with App.create_model(model_id, model_type_id='embedding-classifier')",
            reason="MODEL_NOT_TRAINABLE",
            field="model_id",
        )

    def params(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        model_id: str,
        template: str = "",
        given: dict[str, Any] | None = None,
    ) -> tuple[TrainableModelType, dict[str, Any]]:
        """The model's type and every param it declares: defaults, then the template's, then `given` (checked)."""
        model, _ = self._models.get(principal, user_id, app_id, model_id)
        model_type = self._trainable(model)
        return model_type, model_type.resolve_params(template, given or {})

    def train(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        model_id: str,
        given: dict[str, Any],
        template: str = "",
        version_id: str = "",
        description: str = "",
    ) -> tuple[ModelVersionRecord, TrainingJobRecord]:
        """Store a new version of the model and its QUEUED job; returns them at once."""
        model, _ = self._models.get(principal, user_id, app_id, model_id)
        model_type = self._trainable(model)
        params = model_type.resolve_params(template, given)
        for info in model_type.params:
            if info.required and params.get(info.name) in ("", None, []):
                raise InvalidArgument(
                    f"params.{info.name} is required: {info.help} (Model.update_params({info.name}=...))",
                    field=f"params.{info.name}",
                )
        validate_id(params["dataset_id"], "params.dataset_id")
        if params.get("dataset_version_id"):
            validate_id(params["dataset_version_id"], "params.dataset_version_id")
        if params.get("embedder", BUILTIN) != BUILTIN:  # the id of an embedding model of the app
            validate_id(params["embedder"], "params.embedder")
        if self._store.get_dataset(model.user_id, model.app_id, params["dataset_id"]) is None:
            raise NotFound(
                f"dataset {params['dataset_id']!r} not found in app {model.app_id!r}: name a dataset of the "
                "model's app in params.dataset_id",
                reason="DATASET_NOT_FOUND",
                field="params.dataset_id",
            )
        version_of_dataset = params.get("dataset_version_id") or ""
        if version_of_dataset and not self._dataset_version_exists(model, params["dataset_id"], version_of_dataset):
            raise NotFound(
                f"version {version_of_dataset!r} of dataset {params['dataset_id']!r} not found: name one of its "
                "versions (Dataset.list_versions) in params.dataset_version_id, or leave it empty for the inputs now",
                field="params.dataset_version_id",
            )
        concepts = params.get("concepts") or []
        spec = VersionSpec(
            id=version_id,
            description=description,
            params=params,
            concepts=tuple(_concept(c) for c in concepts),
        )
        transaction = ExitStack()
        try:
            transaction.enter_context(self._store.unit_of_work())
        except RuntimeError:
            pass  # already inside the caller's unit of work (a replayable call's): it makes both writes one
        with transaction:
            version = self._models.create_version(principal, model.user_id, model.app_id, model.id, spec)
            now = self._clock()
            job = TrainingJobRecord(
                user_id=model.user_id,
                app_id=model.app_id,
                model_id=model.id,
                version_id=version.id,
                model_type_id=model_type.type_id,
                created_at=now,
                modified_at=now,
                params=params,
            )
            try:
                self._store.insert_training_job(job)
            except Conflict:  # the version was just made: only a retry racing itself gets here
                raise FailedPrecondition(f"version {version.id!r} already has a training job") from None
        self.wake()
        return version, job

    def _dataset_version_exists(self, model: ModelRecord, dataset_id: str, version_id: str) -> bool:
        after: int | None = None
        while True:
            page = self._store.list_dataset_versions(
                model.user_id, model.app_id, dataset_id, PageQuery(limit=1000, after=after)
            )
            if any(v.id == version_id for v in page.items):
                return True
            if page.next_after is None:
                return False
            after = page.next_after

    def status(
        self, principal: Principal, user_id: str, app_id: str, model_id: str, version_id: str
    ) -> TrainingJobRecord:
        model, version = self._models.get(principal, user_id, app_id, model_id, version_id)
        if version is None:
            raise NotFound(f"model {model_id!r} has no version", field="version_id")
        job = self._store.get_training_job(model.user_id, model.app_id, model.id, version.id)
        if job is None:
            raise NotFound(
                f"version {version.id!r} of model {model.id!r} was not made by training: it has no training status",
                reason="NOT_TRAINED",
                field="version_id",
            )
        return job

    def assignments(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        model_id: str,
        version_id: str,
        page: PageRequest,
        input_ids: builtins.list[str] | None = None,
    ) -> tuple[builtins.list[ClusterAssignment], str, TrainingJobRecord]:
        """A trained clusterer's training inputs and their clusters (FAILED_PRECONDITION before it is trained)."""
        if input_ids and len(input_ids) > MAX_INPUT_IDS:
            raise InvalidArgument(f"input_ids: at most {MAX_INPUT_IDS} per call", field="input_ids")
        for i, input_id in enumerate(input_ids or []):
            validate_id(input_id, f"input_ids[{i}]")
        job = self.status(principal, user_id, app_id, model_id, version_id)
        if job.model_type_id != Clusterer.type_id:
            raise FailedPrecondition(
                f"model {model_id!r} is a {job.model_type_id}: only a clusterer assigns inputs to clusters",
                field="model_id",
            )
        if job.state is not TrainingState.TRAINED:
            raise FailedPrecondition(
                f"version {job.version_id!r} is {job.state.value}: its clusters exist once it is trained"
                + (f" ({job.reason})" if job.reason else ""),
                field="version_id",
            )
        scope = f"clusters:{job.user_id}:{job.app_id}:{job.model_id}:{job.version_id}:{','.join(input_ids or [])}"
        result = self._store.list_cluster_assignments(
            job.user_id, job.app_id, job.model_id, job.version_id, to_query(page, scope), input_ids
        )
        return result.items, next_token(result, scope), job

    def export(
        self, principal: Principal, user_id: str, app_id: str, model_id: str, version_id: str = ""
    ) -> tuple[str, bytes]:
        """The version id and model.tar of a trained version (FAILED_PRECONDITION saying why any other model cannot be)."""
        model, version = self._models.get(principal, user_id, app_id, model_id, version_id)
        local = self._models.local.get(model.model_type_id)
        if local is None:
            labels = ", ".join(version.runner_labels) if version is not None and version.runner_labels else "none"
            raise FailedPrecondition(
                f"model {model.id!r} is served by runners (runner_labels: {labels}): its code and weights live "
                "with the runner, not on this server; export them from the runner's own project "
                "(the server holds only the model's settings: Model.load_info())",
                reason="SERVED_BY_RUNNER",
                field="model_id",
            )
        if not isinstance(local, TrainableModelType):
            raise FailedPrecondition(
                f"model {model.id!r} is a built-in {model.model_type_id} model: it has no weights to export "
                "(its params are its whole configuration: Model.load_info())",
                reason="NOTHING_TO_EXPORT",
                field="model_id",
            )
        if version is None:
            raise NotFound(f"model {model_id!r} has no version", field="version_id")
        why_not = local.check_version(model, version)
        if why_not:
            raise FailedPrecondition(why_not, reason="NOT_TRAINED", field="version_id")
        job = self._store.get_training_job(model.user_id, model.app_id, model.id, version.id)
        weights = self._store.get_training_artifact(model.user_id, model.app_id, model.id, version.id)
        if job is None or weights is None:
            raise FailedPrecondition(f"version {version.id!r} has no stored weights", field="version_id")
        return version.id, _pack(model, version, job, weights, self._assignments_csv(job))

    def _assignments_csv(self, job: TrainingJobRecord) -> bytes:
        if job.model_type_id != Clusterer.type_id:
            return b""
        rows = ["input_id,cluster,distance\n"]
        after: int | None = None
        while True:
            page = self._store.list_cluster_assignments(
                job.user_id, job.app_id, job.model_id, job.version_id, PageQuery(limit=1000, after=after)
            )
            rows += [f"{a.input_id},{a.cluster},{a.distance!r}\n" for a in page.items]
            if page.next_after is None:
                return "".join(rows).encode()
            after = page.next_after

    # the workers

    def wake(self) -> None:
        self._wake.set()

    def start(self, workers: int = 1, exclusive: bool = False) -> None:
        """Run `workers` threads until stop(). `exclusive`: this process is the only one using the
        metadata store, so jobs left TRAINING were held by a process that is gone: queued again now."""
        if workers <= 0 or self._threads:
            return
        if exclusive:
            requeued = self._store.requeue_training_jobs()
            if requeued:
                log.info("%d training jobs left running by a server that stopped are queued again", requeued)
        self._stopping.clear()
        for i in range(workers):
            thread = threading.Thread(target=self._loop, args=(i,), name=f"pellucid-trainer-{i}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def request_stop(self) -> None:
        """Take no new job; a job in progress stops at its next report (its claim lapses, or the
        next start of a server with the store to itself queues it again)."""
        self._stopping.set()
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self.request_stop()
        threads, self._threads = self._threads, []
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("training thread %s still running %.0f s after stop", thread.name, timeout)

    def _loop(self, index: int) -> None:
        if self.niceness and sys.platform == "linux":
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.niceness)
            except OSError:
                log.info("cannot lower the trainer's CPU priority; it competes with calls as an equal")
        owner = f"{self._process}-{index}"
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                ran = self.run_once(owner)
            except Exception:  # the store away, a bug: logged, tried again after a poll interval
                log.exception("training failed; trying again in %.1f s", self.poll_seconds)
                ran = False
            if not ran:
                self._wake.wait(self.poll_seconds)

    def run_once(self, owner: str = "") -> bool:
        """Claim one job and run it to its end; False if none waits."""
        owner = owner or f"{self._process}-once"
        job = self._store.claim_training_job(self._clock(), self.lease_seconds, owner)
        if job is None:
            return False
        report = JobReport(self._store, job, owner, self._clock, self.lease_seconds, self._stopping, self.max_seconds)
        try:
            self._run(job, report)
        except JobLost as exc:
            log.info("training job of %s/%s/%s stopped: %s", job.app_id, job.model_id, job.version_id, exc)
        return True

    def _run(self, job: TrainingJobRecord, report: JobReport) -> None:
        model_type = self._models.local.get(job.model_type_id)
        if not isinstance(model_type, TrainableModelType):
            report.finish(TrainingState.FAILED, f"this server cannot train model type {job.model_type_id!r}")
            return
        if job.attempts > MAX_ATTEMPTS:
            report.finish(
                TrainingState.FAILED,
                f"training was interrupted {job.attempts - 1} times (its server stopped or crashed each time): "
                "train again, with fewer inputs or a smaller model if it ran out of memory",
            )
            return
        try:
            report.log(
                f"attempt {job.attempts}: training a {job.model_type_id} on dataset {job.params.get('dataset_id')!r}"
            )
            data = collect(
                self._store,
                self._blobs,
                self.embeddings,
                job.user_id,
                job.app_id,
                job.params,
                report,
                model_type.needs_labels,
            )
            fitted = model_type.fit(data, job.params, report)
            fitted.metrics["concepts"] = [{"id": c.id, "name": c.name} for c in fitted.concepts]
            report.finish(
                TrainingState.TRAINED, metrics=fitted.metrics, artifact=fitted.artifact, assignments=fitted.assignments
            )
        except (JobLost, StoreUnavailable):
            raise  # the claim lapses; the job is run again (JobLost: by whoever holds it now)
        except NoTrainingData as exc:
            report.finish(TrainingState.NO_DATA, str(exc))
        except TrainingFailed as exc:
            report.finish(TrainingState.FAILED, str(exc))
        except EngineError as exc:
            report.finish(TrainingState.FAILED, exc.message)
        except Exception as exc:
            log.exception("training job of %s/%s/%s failed", job.app_id, job.model_id, job.version_id)
            report.finish(TrainingState.FAILED, f"{type(exc).__name__}: {exc}")


def _concept(concept_id: str) -> ConceptValue:
    return ConceptValue(concept_id, concept_id)


def _pack(
    model: ModelRecord, version: ModelVersionRecord, job: TrainingJobRecord, weights: bytes, assignments: bytes
) -> bytes:
    """model.tar: config.yaml, weights.npz, training.log (and a clusterer's assignments.csv)."""
    config = {
        "format": EXPORT_FORMAT,
        "model": {
            "id": model.id,
            "name": model.name,
            "description": model.description,
            "model_type_id": model.model_type_id,
            "input_fields": list(model.input_fields),
            "output_fields": list(model.output_fields),
            "user_id": model.user_id,
            "app_id": model.app_id,
        },
        "version": {
            "id": version.id,
            "description": version.description,
            "created_at": version.created_at,
            # every param the version was trained with: update_params(**params) then train() re-creates it
            "params": dict(job.params),
            "concepts": [{"id": c.id, "name": c.name} for c in version.concepts],
            "output_config": {
                "min_value": version.output_config.min_value,
                "max_concepts": version.output_config.max_concepts,
                "select_concepts": list(version.output_config.select_concepts),
            },
        },
        "training": {
            "state": job.state.value,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "attempts": job.attempts,
            "metrics": job.metrics,
        },
        "weights": {
            "file": "weights.npz",
            "sha256": hashlib.sha256(weights).hexdigest(),
            "loader": "pellucid.trained.load_weights",
        },
        "recreate": (
            "App.create_model(model.id, model_type_id=model.model_type_id); "
            "Model.update_params(**version.params); Model.train()  -- or use weights.npz as it is: "
            "pellucid.trained.load_weights(bytes) gives the classifier or k-means the server predicts with"
        ),
    }
    files = [
        ("config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True).encode()),
        ("weights.npz", weights),
        ("training.log", job.logs.encode()),
    ]
    if assignments:
        files.append(("assignments.csv", assignments))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(job.finished_at or 0)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


__all__ = ["EXPORT_FORMAT", "JobLost", "JobTimedOut", "Training"]
