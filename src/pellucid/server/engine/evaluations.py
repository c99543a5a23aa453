"""Evaluations: a model version's predictions over a labelled dataset (or dataset version),
measured against the labels (issue #11).

`create` checks what can be checked at once (the model, version and dataset exist; the dataset
has labelled inputs; a model that declares its concepts shares some with the labels) and stores a
QUEUED job. Server workers (`start`, run by server/runtime.py like the indexer's) claim jobs with a
lease: a worker predicts the dataset's inputs in batches, in store order, through `Models.submit`
(a runner, or in-process for a local model type), and records each batch's results with the job's
progress and its position in one transaction. A worker that dies or a server that stops leaves the
job claimed until its lease lapses; the next worker goes on after the last recorded batch (a server
alone on its data dir takes it over at once). An input whose predict fails is recorded with the
reason and counted; a whole batch that no runner answers is tried again, and after
MAX_BATCH_ATTEMPTS the job fails saying why. At the end the metrics (engine/metrics.py) are computed
from the recorded results and stored with the job.

Which concepts are measured: those the model can predict (its version's declared concepts, or else
every concept it predicted) that also label the dataset's inputs. Labels are an input's concepts
with a value above 0, from its labels and its annotations (regions included). Inputs without labels
are left out (counted as unlabelled), and so are inputs labelled only with concepts the model does
not predict (counted as skipped).
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pellucid.server.engine import metrics
from pellucid.server.engine.access import Principal
from pellucid.server.engine.datasets import Datasets
from pellucid.server.engine.errors import (
    AlreadyExists,
    DeadlineExceeded,
    EngineError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from pellucid.server.engine.ids import new_id, validate_id
from pellucid.server.engine.models import Models
from pellucid.server.engine.paging import PageRequest, next_token, to_query
from pellucid.server.engine.predict import Media, OutputCode, PredictInput, PredictOutput, PredictRequest
from pellucid.server.engine.validation import check_metadata
from pellucid.server.records import (
    ConceptValue,
    EvaluationItem,
    EvaluationRecord,
    EvaluationState,
    InputRecord,
    ModelRecord,
    ModelVersionRecord,
    PageQuery,
)
from pellucid.server.storage import Conflict, MetadataStore, StoreUnavailable
from pellucid.server.storage.blobs import BlobStore

log = logging.getLogger("pellucid.server.evaluations")

DEFAULT_BATCH_SIZE = 32
DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_POLL_SECONDS = 2.0
MAX_BATCH_ATTEMPTS = 3  # a batch no runner answered is tried this often before the job fails
MAX_FAILURES_SHOWN = 10
MAX_IDS_SHOWN = 10
ITEMS_PAGE = 1000
EVALUATOR_TOKEN_ID = "pellucid-evaluator"  # the principal a job's predicts run as (the model's owner)


@dataclass(frozen=True)
class EvaluationResult:
    """What an evaluation shows: the job, and once DONE its metrics."""

    record: EvaluationRecord
    metrics: metrics.Evaluation | None = None
    evaluated: int = 0  # inputs the metrics cover
    unlabelled: int = 0  # inputs without labels: not predicted
    skipped: int = 0  # labelled only with concepts the model does not predict
    failures: tuple[tuple[str, str], ...] = ()  # (input id, why), the first MAX_FAILURES_SHOWN
    test_set: tuple[EvaluationItem, ...] = ()  # with_test_set: every input predicted with labels


class _Stopping(Exception):
    """The worker is asked to stop: leave the job as it is (its claim lapses, another goes on)."""


class _ClaimLost(Exception):
    """Another worker took the job over (this one's lease lapsed): stop working on it."""


class Evaluations:
    """The evaluation API and the workers that run the jobs. `run_once` runs one job to its end
    (tests call it directly); `start` runs it in threads until `stop`."""

    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        datasets: Datasets,
        models: Models,
        clock: Callable[[], float] = time.time,
        batch_size: int = DEFAULT_BATCH_SIZE,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._datasets = datasets
        self._models = models
        self._clock = clock
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: builtins.list[threading.Thread] = []

    # the API

    def create(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        model_id: str,
        *,
        version_id: str = "",
        dataset_id: str,
        dataset_app_id: str = "",
        dataset_user_id: str = "",
        dataset_version_id: str = "",
        eval_id: str = "",
        eval_info: dict[str, Any] | None = None,
        extended_metrics: dict[str, Any] | None = None,
    ) -> EvaluationRecord:
        """Check the request and queue the job; the workers run it."""
        model, version = self._models.get(principal, user_id, app_id, model_id, version_id)
        if version is None:
            raise FailedPrecondition(f"model {model_id!r} has no version to evaluate: create one", field="version_id")
        local_type = self._models.local.get(model.model_type_id)
        if local_type is not None:
            why_not = local_type.check_version(model, version)
            if why_not:
                raise FailedPrecondition(f"version {version.id!r} of model {model_id!r} cannot predict: {why_not}")
        if not dataset_id:
            raise InvalidArgument("name the labelled dataset to evaluate on (dataset_id)", field="dataset_id")
        dataset = self._datasets.get(
            principal, dataset_user_id or model.user_id, dataset_app_id or model.app_id, dataset_id
        )
        if dataset_version_id:
            validate_id(dataset_version_id, "dataset_version_id")
        stats = self._datasets.stats(principal, dataset.user_id, dataset.app_id, dataset.id, dataset_version_id)
        where = f"dataset {dataset.id!r}" + (f" (version {dataset_version_id!r})" if dataset_version_id else "")
        if not stats.inputs:
            raise FailedPrecondition(
                f"{where} has no inputs: upload labelled inputs to it first", reason="NO_LABELLED_INPUTS"
            )
        if not stats.concept_counts:
            raise FailedPrecondition(
                f"{where} has {stats.inputs} inputs and none is labelled with a concept: label them"
                " (upload with labels, or add annotations) before evaluating",
                reason="NO_LABELLED_INPUTS",
            )
        declared = {c.id for c in version.concepts}
        if declared and not declared & set(stats.concept_counts):
            raise FailedPrecondition(
                f"model {model.id!r} predicts {_ids(declared)} and {where} is labelled {_ids(stats.concept_counts)}:"
                " no concept in common; label the dataset with the model's concepts, or evaluate a model that"
                " predicts the dataset's",
                reason="NO_COMMON_CONCEPTS",
            )
        eval_id = eval_id or new_id()
        validate_id(eval_id, "eval_id")
        now = self._clock()
        record = EvaluationRecord(
            user_id=model.user_id,
            app_id=model.app_id,
            model_id=model.id,
            id=eval_id,
            model_version_id=version.id,
            dataset_user_id=dataset.user_id,
            dataset_app_id=dataset.app_id,
            dataset_id=dataset.id,
            dataset_version_id=dataset_version_id,
            created_at=now,
            modified_at=now,
            total=stats.inputs,
            eval_info=check_metadata(eval_info or {}, "eval_info"),
            extended_metrics=check_metadata(extended_metrics or {}, "extended_metrics"),
        )
        try:
            stored = self._store.insert_evaluation(record)
        except Conflict:
            raise AlreadyExists(
                f"evaluation {eval_id!r} of model {model.id!r} already exists: read it with get_eval_by_id,"
                " or pick another eval_id",
                field="eval_id",
            ) from None
        except LookupError:
            raise NotFound(f"model {model.id!r} was deleted", field="model_id") from None
        self.wake()
        return stored

    def get(
        self, principal: Principal, user_id: str, app_id: str, model_id: str, eval_id: str, with_test_set: bool = False
    ) -> EvaluationResult:
        model, _ = self._models.get(principal, user_id, app_id, model_id)
        validate_id(eval_id, "eval_id")
        record = self._store.get_evaluation(model.user_id, model.app_id, model.id, eval_id)
        if record is None:
            raise NotFound(
                f"evaluation {eval_id!r} of model {model.id!r} not found: list them with list_evaluations",
                reason="EVALUATION_NOT_FOUND",
                field="eval_id",
            )
        return self.result(record, with_test_set)

    def latest(
        self, principal: Principal, user_id: str, app_id: str, model_id: str, with_test_set: bool = False
    ) -> EvaluationResult:
        """The model's most recent evaluation, whatever its state; NotFound if it has none."""
        model, _ = self._models.get(principal, user_id, app_id, model_id)
        record = self._store.latest_evaluation(model.user_id, model.app_id, model.id)
        if record is None:
            raise NotFound(
                f"model {model.id!r} has not been evaluated: run evaluate first",
                reason="EVALUATION_NOT_FOUND",
                field="model_id",
            )
        return self.result(record, with_test_set)

    def list(
        self, principal: Principal, user_id: str, app_id: str, model_id: str, page: PageRequest
    ) -> tuple[builtins.list[EvaluationResult], str]:
        model, _ = self._models.get(principal, user_id, app_id, model_id)
        scope = f"evaluations:{model.user_id}:{model.app_id}:{model.id}"
        result = self._store.list_evaluations(model.user_id, model.app_id, model.id, to_query(page, scope))
        return [self.result(r) for r in result.items], next_token(result, scope)

    def result(self, record: EvaluationRecord, with_test_set: bool = False) -> EvaluationResult:
        """What a stored evaluation shows (its metrics read back; its test set if asked for)."""
        stored = record.metrics
        test_set: tuple[EvaluationItem, ...] = ()
        if with_test_set:
            test_set = tuple(i for i in self._items(record.seq) if i.truth and not i.error)
        return EvaluationResult(
            record=record,
            metrics=_evaluation_from_json(stored["evaluation"]) if stored.get("evaluation") else None,
            evaluated=stored.get("evaluated", 0),
            unlabelled=stored.get("unlabelled", 0),
            skipped=stored.get("skipped", 0),
            failures=tuple((i, m) for i, m in stored.get("failures", ())),
            test_set=test_set,
        )

    def _items(self, seq: int) -> Iterable[EvaluationItem]:
        after = 0
        while items := self._store.evaluation_items(seq, after, ITEMS_PAGE):
            yield from items
            after = items[-1].input_seq

    # the workers

    def wake(self) -> None:
        """A job was stored: idle workers look now instead of at their next poll."""
        self._wake.set()

    def start(self, workers: int = 1, exclusive: bool = False) -> None:
        """Run `workers` threads until stop(). `exclusive`: this process alone uses the metadata
        store, so a job left RUNNING belongs to a process that is gone: take it at once."""
        if workers <= 0 or self._threads:
            return
        self._stopping.clear()
        for i in range(workers):
            thread = threading.Thread(
                target=self._loop, args=(exclusive and i == 0,), name=f"pellucid-evaluator-{i}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def request_stop(self) -> None:
        """Take no new job and leave the current one unfinished (a later worker goes on with it)."""
        self._stopping.set()
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self.request_stop()
        threads, self._threads = self._threads, []
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("evaluator thread %s still running %.0f s after stop", thread.name, timeout)

    def _loop(self, reclaim: bool) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before looking: a wake-up during a job is not lost
            try:
                ran = self.run_once(reclaim)
            except Exception:  # a store away, a bug: logged, tried again after a poll interval
                log.exception("evaluation failed; trying again in %.1f s", self.poll_seconds)
                ran = False
            reclaim = reclaim and ran  # until the jobs left by a dead process are taken
            if not ran:
                self._wake.wait(self.poll_seconds)

    def run_once(self, reclaim: bool = False) -> bool:
        """Claim one job and run it to its end (or until stop); False if there was none."""
        now = self._clock()
        owner = uuid.uuid4().hex
        # every live claim ends before now + lease_seconds: claiming "then" takes them all
        job = self._store.claim_evaluation(owner, now + self.lease_seconds if reclaim else now, self.lease_seconds)
        if job is None:
            return False
        if reclaim:  # the claim was made as of a later time: its lease must run from now
            self._store.record_evaluation_batch(job.seq, owner, [], job.last_input_seq, now + self.lease_seconds, now)
        try:
            self._run(job, owner)
        except (_Stopping, _ClaimLost):
            pass
        except StoreUnavailable:
            raise  # transient: the claim lapses and the job goes on later
        except _BatchUnanswered as exc:
            message = f"no answer for a batch of inputs after {MAX_BATCH_ATTEMPTS} attempts: {exc.message}"
            self._finish_quietly(job, owner, message)
        except EngineError as exc:  # the model or its version went away, or cannot predict now
            self._finish_quietly(job, owner, exc.message)
        except Exception as exc:
            log.exception("evaluation %s of model %s/%s/%s failed", job.id, job.user_id, job.app_id, job.model_id)
            self._finish_quietly(job, owner, f"the evaluation failed: {type(exc).__name__}: {exc}")
        return True

    def _finish_quietly(self, job: EvaluationRecord, owner: str, message: str) -> None:
        """Fail the job, unless another worker holds it by now (then that one decides)."""
        try:
            self._finish(job, owner, EvaluationState.FAILED, message)
        except _ClaimLost:
            pass

    def _run(self, job: EvaluationRecord, owner: str) -> None:
        model = self._store.get_model(job.user_id, job.app_id, job.model_id)
        version = self._store.get_model_version(job.user_id, job.app_id, job.model_id, job.model_version_id)
        if model is None or version is None:
            self._finish(
                job,
                owner,
                EvaluationState.FAILED,
                f"version {job.model_version_id!r} of model {job.model_id!r} was deleted before the evaluation ended",
            )
            return
        after = job.last_input_seq
        where = f"dataset {job.dataset_id!r} of app {job.dataset_app_id!r}"
        while True:
            if self._stopping.is_set():
                raise _Stopping
            try:
                page = self._store.list_inputs(
                    job.dataset_user_id,
                    job.dataset_app_id,
                    PageQuery(limit=self.batch_size, after=after or None),
                    dataset_id=job.dataset_id,
                    version_id=job.dataset_version_id,
                )
            except LookupError as exc:
                self._finish(job, owner, EvaluationState.FAILED, f"{where} is gone: {exc}")
                return
            if not page.items:
                break
            renew = functools.partial(self._renew, job, owner, after)
            items = self._predict_batch(job, model, version, page.items, renew)
            after = page.items[-1].seq
            now = self._clock()
            if not self._store.record_evaluation_batch(job.seq, owner, items, after, now + self.lease_seconds, now):
                raise _ClaimLost
            if page.next_after is None:
                break
        state, message, computed = self._measure(job, version)
        self._finish(job, owner, state, message, computed)

    def _renew(self, job: EvaluationRecord, owner: str, position: int) -> None:
        """Extend the claim (before each attempt at a batch, so the lease outlives the attempt)."""
        now = self._clock()
        if not self._store.record_evaluation_batch(job.seq, owner, [], position, now + self.lease_seconds, now):
            raise _ClaimLost

    def _finish(
        self,
        job: EvaluationRecord,
        owner: str,
        state: EvaluationState,
        message: str,
        computed: dict[str, Any] | None = None,
    ) -> None:
        if not self._store.finish_evaluation(job.seq, owner, state, message, computed or {}, self._clock()):
            raise _ClaimLost

    # one batch

    def _predict_batch(
        self,
        job: EvaluationRecord,
        model: ModelRecord,
        version: ModelVersionRecord,
        records: Sequence[InputRecord],
        renew: Callable[[], None],
    ) -> builtins.list[EvaluationItem]:
        truth = self._truth(job, records)
        results: dict[int, EvaluationItem] = {}
        ready: builtins.list[tuple[InputRecord, PredictInput]] = []
        for record in records:
            labels = truth.get(record.id, ())
            if not labels:  # nothing to measure against: not predicted
                results[record.seq] = EvaluationItem(record.seq, record.id)
                continue
            given, problem = self._predict_input(model, record)
            if given is None:
                results[record.seq] = EvaluationItem(record.seq, record.id, labels, error=problem)
            else:
                ready.append((record, given))
        if ready:
            outputs = self._predict(job, version, [g for _, g in ready], renew)
            for (record, _), (output, error) in zip(ready, outputs):
                labels = truth[record.id]
                if error:
                    results[record.seq] = EvaluationItem(record.seq, record.id, labels, error=error)
                else:
                    assert output is not None
                    predicted = tuple(ConceptValue(c.id, value=c.value) for c in output.data.concepts)
                    results[record.seq] = EvaluationItem(record.seq, record.id, labels, predicted)
        return [results[r.seq] for r in records]

    def _truth(self, job: EvaluationRecord, records: Sequence[InputRecord]) -> dict[str, tuple[str, ...]]:
        """Each input's labels: concepts with a value above 0 of its labels and annotations (regions too)."""
        positive: dict[str, dict[str, None]] = {r.id: {c.id: None for c in r.labels if c.value > 0} for r in records}
        after: int | None = None
        while True:
            page = self._store.list_annotations(
                job.dataset_user_id, job.dataset_app_id, PageQuery(limit=1000, after=after), [r.id for r in records]
            )
            for annotation in page.items:
                concepts = [*annotation.concepts, *(c for region in annotation.regions for c in region.concepts)]
                positive[annotation.input_id].update((c.id, None) for c in concepts if c.value > 0)
            if page.next_after is None:
                break
            after = page.next_after
        return {input_id: tuple(sorted(ids)) for input_id, ids in positive.items()}

    def _predict_input(self, model: ModelRecord, record: InputRecord) -> tuple[PredictInput | None, str]:
        """What the model is given for a stored input, or why it cannot be."""
        if model.input_fields and record.input_type not in model.input_fields:
            return None, (
                f"the input is {_a(record.input_type)}, and model {model.id!r} reads only"
                f" {', '.join(model.input_fields)}"
            )
        if record.input_type == "text":
            if record.text:
                return PredictInput(record.id, (Media("text", record.text.encode("utf-8", "surrogatepass")),)), ""
            if record.text_url:  # the runner fetches it, as for a predict by URL
                return PredictInput(record.id, (Media("text", url=record.text_url),)), ""
            return None, "the input has no text"
        if record.media_sha256:
            data = self._blobs.get(record.media_sha256)
            if data is None:
                return None, f"the {record.input_type}'s bytes are not in the blob store any more: upload it again"
            return PredictInput(record.id, (Media(record.input_type, data, mime=record.media_mime),)), ""
        if record.media_url:
            return PredictInput(record.id, (Media(record.input_type, url=record.media_url),)), ""
        return None, f"the {record.input_type} has no bytes and no URL"

    def _predict(
        self,
        job: EvaluationRecord,
        version: ModelVersionRecord,
        inputs: builtins.list[PredictInput],
        renew: Callable[[], None],
    ) -> builtins.list[tuple[PredictOutput | None, str]]:
        """(output, "") or (None, why) per input. A batch that no runner answers is tried again
        (MAX_BATCH_ATTEMPTS); one the model refuses as a whole is predicted an input at a time."""
        request = PredictRequest(
            user_id=job.user_id,
            app_id=job.app_id,
            model_id=job.model_id,
            version_id=version.id,
            inputs=tuple(inputs),
            deadline_seconds=self.lease_seconds / 2,
        )
        for attempt in range(1, MAX_BATCH_ATTEMPTS + 1):
            renew()
            try:
                outputs = self._wait(request)
                break
            except (Unavailable, DeadlineExceeded) as exc:
                if self._stopping.is_set():
                    raise _Stopping from None
                if attempt == MAX_BATCH_ATTEMPTS:
                    raise _BatchUnanswered(exc.message) from None
                if self._stopping.wait(self.poll_seconds):
                    raise _Stopping from None
            except InvalidArgument as exc:
                if len(inputs) == 1:
                    return [(None, exc.message)]
                return [out for one in inputs for out in self._predict(job, version, [one], renew)]
        by_id = {o.input_id: o for o in outputs if o.input_id}
        found: builtins.list[tuple[PredictOutput | None, str]] = []
        for i, given in enumerate(inputs):
            output = by_id.get(given.id) or (outputs[i] if i < len(outputs) else None)
            if output is None:
                found.append((None, "the model returned no output for this input"))
            elif output.code != OutputCode.OK:
                found.append((None, f"the model failed on this input: {output.message or output.code.name}"))
            else:
                found.append((output, ""))
        return found

    def _wait(self, request: PredictRequest) -> tuple[PredictOutput, ...]:
        """The predict's outputs, waiting in short steps so that a stop is not held up by it."""
        owner = Principal(user_id=request.user_id, is_admin=False, token_id=EVALUATOR_TOKEN_ID)
        pending = self._models.submit(owner, request)
        done = threading.Event()
        pending.add_done_callback(done.set)
        give_up = time.monotonic() + request.deadline_seconds + 2.0  # the router answers at the deadline itself
        while not done.wait(0.1):
            if self._stopping.is_set():
                pending.cancel("the server is stopping")
                raise _Stopping
            if time.monotonic() > give_up:
                pending.cancel("the evaluation's deadline passed")
                raise DeadlineExceeded(
                    f"model {request.model_id!r} did not answer within {request.deadline_seconds:.0f} s"
                )
        return pending.result().outputs

    # the end

    def _measure(
        self, job: EvaluationRecord, version: ModelVersionRecord
    ) -> tuple[EvaluationState, str, dict[str, Any]]:
        """The metrics over the recorded results, or why there are none."""
        predicted: builtins.list[EvaluationItem] = []
        failures: builtins.list[tuple[str, str]] = []
        failed = unlabelled = 0
        for item in self._items(job.seq):
            if item.error:
                failed += 1
                if len(failures) < MAX_FAILURES_SHOWN:
                    failures.append((item.input_id, item.error))
            elif not item.truth:
                unlabelled += 1
            else:
                predicted.append(item)
        counts: dict[str, Any] = {"unlabelled": unlabelled, "failures": failures}
        where = f"dataset {job.dataset_id!r}" + (
            f" (version {job.dataset_version_id!r})" if job.dataset_version_id else ""
        )
        if not predicted:
            if failed:
                first = failures[0][1]
                return (
                    EvaluationState.FAILED,
                    f"the model failed on every labelled input ({failed}); the first: {first}",
                    counts,
                )
            return EvaluationState.FAILED, f"{where} has no labelled inputs: label them, then evaluate again", counts
        declared = {c.id for c in version.concepts}
        model_concepts = declared or {c.id for item in predicted for c in item.predicted}
        labels = {c for item in predicted for c in item.truth}
        concepts = sorted(model_concepts & labels)
        if not concepts:
            said = "predicts" if declared else "predicted"
            return (
                EvaluationState.FAILED,
                f"model {job.model_id!r} {said} {_ids(model_concepts)} and {where} is labelled {_ids(labels)}:"
                " no concept in common; label the dataset with the model's concepts, or evaluate a model that"
                " predicts the dataset's",
                counts,
            )
        column = {c: j for j, c in enumerate(concepts)}
        rows = [item for item in predicted if any(c in column for c in item.truth)]
        scores = np.zeros((len(rows), len(concepts)))
        truth = np.zeros((len(rows), len(concepts)), dtype=bool)
        for i, item in enumerate(rows):
            for c in item.predicted:
                if c.id in column:
                    scores[i, column[c.id]] = max(scores[i, column[c.id]], c.value)
            for label in item.truth:
                if label in column:
                    truth[i, column[label]] = True
        result = metrics.evaluate(scores, truth, concepts)
        counts.update(evaluated=len(rows), skipped=len(predicted) - len(rows), evaluation=dataclasses.asdict(result))
        return EvaluationState.DONE, "", counts


class _BatchUnanswered(Exception):
    """No runner answered a batch after every attempt: the job fails with this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _evaluation_from_json(data: dict[str, Any]) -> metrics.Evaluation:
    def curves(c: dict[str, Any]) -> metrics.Curves:
        return metrics.Curves(**{k: tuple(v) for k, v in c.items()})

    return metrics.Evaluation(
        concepts=tuple(data["concepts"]),
        summary=metrics.Summary(**data["summary"]),
        confusion=tuple((a, p, n) for a, p, n in data["confusion"]),
        label_counts=tuple((c, n) for c, n in data["label_counts"]),
        by_class=tuple(metrics.ClassMetrics(**c) for c in data["by_class"]),
        binary=tuple(metrics.BinaryMetrics(**{**b, "curves": curves(b["curves"])}) for b in data["binary"]),
    )


def _ids(ids: Iterable[str]) -> str:
    shown = sorted(ids)
    more = f" and {len(shown) - MAX_IDS_SHOWN} more" if len(shown) > MAX_IDS_SHOWN else ""
    return "[" + ", ".join(shown[:MAX_IDS_SHOWN]) + more + "]"


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


__all__ = ["DEFAULT_BATCH_SIZE", "EvaluationResult", "Evaluations"]
