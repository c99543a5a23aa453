"""The metadata store's interfaces, one per area, and `MetadataStore`, their composition.

Engine modules depend on the area they use (`UserStore`, `AppStore`, `InputStore`,
`ModelStore`, `RequestLogStore`, `SearchStore`, `EvaluationStore`, ...); a backend (SQLite,
PostgreSQL) implements them all in one class, opened by URI in `pellucid.server.storage.registry`. Each method is one
transaction, unless it runs inside `unit_of_work()`: then it is one step (a savepoint) of
the unit's transaction.

This module imports no backend: backends import it.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from pellucid.server.records import (
    AlgorithmCallRecord,
    AlgorithmRecord,
    AlgorithmTagRecord,
    AnnotationRecord,
    AppRecord,
    ClusterAssignment,
    ConceptRecord,
    DataEntryRecord,
    DatasetRecord,
    DatasetStats,
    DatasetVersionRecord,
    DeletedDeploymentToken,
    DeploymentRecord,
    DeploymentTokenRecord,
    EvaluationItem,
    EvaluationRecord,
    EvaluationState,
    IndexState,
    IndexWork,
    IngestItem,
    InputFilter,
    InputRecord,
    InsightRecord,
    InstalledModuleVersionRecord,
    JobRecord,
    ModelRecord,
    ModelVersionRecord,
    ModuleRecord,
    ModuleVersionRecord,
    Page,
    PageQuery,
    RunnerRecord,
    TokenRecord,
    TrainingJobRecord,
    TrainingState,
    UserRecord,
    WorkflowRecord,
    WorkflowVersionRecord,
)


class Conflict(Exception):
    """A row with the same key already exists."""


class StoreUnavailable(ConnectionError):
    """The store cannot be reached now (a database down, a network cut): the call may be retried."""


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"  # first time: the caller runs the request
    DONE = "done"  # already ran: replay the stored response
    IN_PROGRESS = "in_progress"  # another attempt is running it now
    OTHER_METHOD = "other_method"  # the request id was used for a different call


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    response: bytes = b""

    @classmethod
    def of_logged(cls, method: str, logged_method: str, done: bool, response: bytes | None) -> Claim:
        """The claim on a request id the log holds and that is not stale: every backend decides it alike."""
        if logged_method != method:
            return cls(ClaimOutcome.OTHER_METHOD)
        if done:
            return cls(ClaimOutcome.DONE, bytes(response or b""))
        return cls(ClaimOutcome.IN_PROGRESS)


class IngestResult(enum.Enum):
    """What `InputStore.ingest` did with one item."""

    NEW = "new"  # stored
    DUPLICATE = "duplicate"  # the id holds the same content: memberships and annotations added
    CONFLICT = "conflict"  # the id holds other content: nothing stored


class AnnotationResult(enum.Enum):
    """What `InputStore.put_annotations` did with one annotation."""

    NEW = "new"
    DUPLICATE = "duplicate"  # it existed and replace was off: left as it was
    UPDATED = "updated"  # it existed and replace was on: overwritten
    MISSING_INPUT = "missing_input"  # its input does not exist: nothing stored


class Transactional(abc.ABC):
    """What every area shares: the unit of work that makes several writes one transaction."""

    @abc.abstractmethod
    def unit_of_work(self) -> AbstractContextManager[None]:
        """A block whose writes, made by this thread, commit as one transaction when it ends, or none do.

        It makes a mutation and its request-log entry (`finish_request`) commit together, so a
        retry after a crash at any moment finds both or neither. Semantics every backend keeps:
        the transaction begins at the block's first write (work before it holds no lock);
        each method called inside is atomic on its own (a savepoint): one that raises leaves
        the unit's other writes in place; the block raising rolls everything back; reads
        made by this thread after its first write see the unit's rows. Units do not nest.
        SQLite holds its one writer for the rest of the block; PostgreSQL holds one pooled
        connection in one transaction.
        """


class UserStore(Transactional):
    """Users and their tokens (PATs, session tokens)."""

    @abc.abstractmethod
    def insert_user(self, user: UserRecord, first_token: TokenRecord | None = None) -> None:
        """Insert a user (and optionally its first token) atomically; Conflict if the id is taken."""

    @abc.abstractmethod
    def get_user(self, user_id: str) -> UserRecord | None: ...

    @abc.abstractmethod
    def list_users(self, query: PageQuery) -> Page[UserRecord]: ...

    @abc.abstractmethod
    def count_users(self) -> int: ...

    @abc.abstractmethod
    def insert_token(self, token: TokenRecord) -> None: ...

    @abc.abstractmethod
    def get_token(self, user_id: str, token_id: str) -> TokenRecord | None: ...

    @abc.abstractmethod
    def get_token_with_user(self, token_hash: str) -> tuple[TokenRecord, UserRecord] | None:
        """The token with this hash and its user, in one read (every call authenticates)."""

    @abc.abstractmethod
    def get_token_by_request(self, user_id: str, request_id: str) -> TokenRecord | None: ...

    @abc.abstractmethod
    def list_tokens(
        self, user_id: str, kind: str, include_inactive: bool, now: float, query: PageQuery
    ) -> Page[TokenRecord]: ...

    @abc.abstractmethod
    def replace_token_hash(self, token_id: str, token_hash: str) -> None: ...

    @abc.abstractmethod
    def revoke_token(self, token_id: str, revoked_at: float) -> TokenRecord: ...


class AppStore(Transactional):
    """Apps and their concepts."""

    @abc.abstractmethod
    def insert_app(self, app: AppRecord) -> None: ...

    @abc.abstractmethod
    def get_app(self, user_id: str, app_id: str) -> AppRecord | None: ...

    @abc.abstractmethod
    def list_apps(self, user_id: str, text: str, query: PageQuery) -> Page[AppRecord]: ...

    @abc.abstractmethod
    def update_app(self, app: AppRecord) -> None: ...

    @abc.abstractmethod
    def delete_app(self, user_id: str, app_id: str) -> bool:
        """Delete the app and everything in it; False if there was none."""

    @abc.abstractmethod
    def insert_concepts(self, concepts: list[ConceptRecord]) -> list[bool]:
        """Insert what is new; one flag per concept, False where the id already existed."""

    @abc.abstractmethod
    def get_concept(self, user_id: str, app_id: str, concept_id: str) -> ConceptRecord | None: ...

    @abc.abstractmethod
    def list_concepts(self, user_id: str, app_id: str, query: PageQuery) -> Page[ConceptRecord]: ...

    @abc.abstractmethod
    def rename_concepts(self, user_id: str, app_id: str, names: dict[str, str]) -> list[ConceptRecord]:
        """Set names of existing concepts; returns those that existed."""


class InputStore(Transactional):
    """Datasets and their versions, inputs, annotations and input jobs."""

    @abc.abstractmethod
    def insert_dataset(self, dataset: DatasetRecord) -> None: ...

    @abc.abstractmethod
    def get_dataset(self, user_id: str, app_id: str, dataset_id: str) -> DatasetRecord | None: ...

    @abc.abstractmethod
    def existing_datasets(self, user_id: str, app_id: str, dataset_ids: list[str]) -> set[str]:
        """Those of `dataset_ids` that exist (cheap: no counting)."""

    @abc.abstractmethod
    def list_datasets(self, user_id: str, app_id: str, query: PageQuery) -> Page[DatasetRecord]: ...

    @abc.abstractmethod
    def delete_dataset(self, user_id: str, app_id: str, dataset_id: str, delete_inputs: bool) -> bool: ...

    @abc.abstractmethod
    def dataset_stats(self, user_id: str, app_id: str, dataset_id: str, version_id: str = "") -> DatasetStats: ...

    @abc.abstractmethod
    def insert_dataset_version(self, version: DatasetVersionRecord) -> DatasetVersionRecord:
        """Freeze the dataset's current inputs under a new version; returns it with its stats."""

    @abc.abstractmethod
    def list_dataset_versions(
        self, user_id: str, app_id: str, dataset_id: str, query: PageQuery
    ) -> Page[DatasetVersionRecord]: ...

    @abc.abstractmethod
    def delete_dataset_version(self, user_id: str, app_id: str, dataset_id: str, version_id: str) -> bool: ...

    @abc.abstractmethod
    def ingest(
        self, user_id: str, app_id: str, items: list[IngestItem], concepts: list[ConceptRecord], job: JobRecord | None
    ) -> tuple[list[IngestResult], JobRecord | None]:
        """Store a batch in one transaction. Per item: NEW, DUPLICATE (same id, same
        content: memberships and annotations are added) or CONFLICT (id taken by other
        content). `concepts` are created where missing. `job` carries the counts the engine
        saw (received, failed before storage); the store adds what it stored, the duplicates
        and the conflicts, and returns the job's totals."""

    @abc.abstractmethod
    def get_job(self, user_id: str, app_id: str, job_id: str) -> JobRecord | None: ...

    @abc.abstractmethod
    def get_inputs(self, user_id: str, app_id: str, input_ids: list[str]) -> dict[str, InputRecord]: ...

    @abc.abstractmethod
    def list_inputs(
        self,
        user_id: str,
        app_id: str,
        query: PageQuery,
        dataset_id: str = "",
        version_id: str = "",
        input_type: str = "",
        ids: list[str] | None = None,
    ) -> Page[InputRecord]: ...

    @abc.abstractmethod
    def delete_inputs(self, user_id: str, app_id: str, input_ids: list[str]) -> list[bool]: ...

    @abc.abstractmethod
    def referenced_blobs(self, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of the (user_id, sha256) pairs whose blob is the media of an input in that user's apps."""

    @abc.abstractmethod
    def blob_references(self) -> Iterator[tuple[str, str]]:
        """Every distinct (user_id, sha256) pair an input holds (to give old blobs their owners)."""

    @abc.abstractmethod
    def put_annotations(
        self, user_id: str, app_id: str, annotations: list[AnnotationRecord], replace: bool
    ) -> list[AnnotationResult]:
        """Insert (or, with replace, overwrite) annotations; one result per annotation."""

    @abc.abstractmethod
    def get_annotations(
        self, user_id: str, app_id: str, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], AnnotationRecord]: ...

    @abc.abstractmethod
    def list_annotations(
        self, user_id: str, app_id: str, query: PageQuery, input_ids: list[str] | None = None
    ) -> Page[AnnotationRecord]: ...


class ModelStore(Transactional):
    """Models, model versions and runners."""

    @abc.abstractmethod
    def insert_model(self, model: ModelRecord, version: ModelVersionRecord) -> None:
        """Insert a model with its first version atomically; Conflict if the id is taken."""

    @abc.abstractmethod
    def get_model(self, user_id: str, app_id: str, model_id: str) -> ModelRecord | None: ...

    @abc.abstractmethod
    def list_models(self, user_id: str, app_id: str, text: str, query: PageQuery) -> Page[ModelRecord]: ...

    @abc.abstractmethod
    def delete_model(self, user_id: str, app_id: str, model_id: str) -> bool: ...

    @abc.abstractmethod
    def insert_model_version(self, version: ModelVersionRecord) -> None: ...

    @abc.abstractmethod
    def get_model_version(
        self, user_id: str, app_id: str, model_id: str, version_id: str = ""
    ) -> ModelVersionRecord | None:
        """The version (the latest if version_id is empty)."""

    @abc.abstractmethod
    def list_model_versions(
        self, user_id: str, app_id: str, model_id: str, query: PageQuery
    ) -> Page[ModelVersionRecord]: ...

    @abc.abstractmethod
    def delete_model_version(self, user_id: str, app_id: str, model_id: str, version_id: str) -> bool: ...

    @abc.abstractmethod
    def insert_runner(self, runner: RunnerRecord) -> None: ...

    @abc.abstractmethod
    def get_runner(self, user_id: str, runner_id: str) -> RunnerRecord | None: ...

    @abc.abstractmethod
    def list_runners(self, user_id: str, labels: tuple[str, ...], query: PageQuery) -> Page[RunnerRecord]:
        """The user's runners carrying all of `labels`."""

    @abc.abstractmethod
    def update_runner(self, runner: RunnerRecord) -> bool:
        """Store the runner's labels and description; False if it no longer exists."""

    @abc.abstractmethod
    def delete_runner(self, user_id: str, runner_id: str) -> bool: ...


class RequestLogStore(Transactional):
    """The request log: makes mutations carrying a request id safe to retry."""

    @abc.abstractmethod
    def claim_request(
        self,
        user_id: str,
        request_id: str,
        method: str,
        now: float,
        stale_after: float,
        owner: str,
        replica: str = "",
    ) -> Claim:
        """Claim a request id for one attempt (`owner`, run by server process `replica`),
        unless it is done or another attempt runs it."""

    @abc.abstractmethod
    def finish_request(self, user_id: str, request_id: str, response: bytes, now: float, owner: str) -> bool:
        """Store the response, if `owner` still holds the claim; False if it does not (nothing stored).

        Called inside the attempt's `unit_of_work()`, so that the response commits with the
        mutation: False then means another attempt took the claim over, and the caller rolls
        its unit back rather than apply the request a second time."""

    @abc.abstractmethod
    def release_request(self, user_id: str, request_id: str, owner: str) -> None:
        """Drop the claim, if `owner` still holds it."""

    # replicas: server processes sharing the store. Each heartbeats; the claims of one that
    # is gone (stopped, or silent for long) are released, those of live ones never.
    @abc.abstractmethod
    def renew_replica(self, replica_id: str, now: float) -> None:
        """Record that the replica is alive now (at its start, then every few seconds)."""

    @abc.abstractmethod
    def retire_replica(self, replica_id: str) -> int:
        """The replica stops: forget it and release its unfinished claims (how many)."""

    @abc.abstractmethod
    def release_gone_replicas(self, alive_since: float, this_replica: str) -> int:
        """Release the unfinished claims of every replica but `this_replica` whose last heartbeat
        is older than `alive_since` (or which has none), and forget those replicas.
        Returns how many claims were released."""

    @abc.abstractmethod
    def purge_requests(self, older_than: float) -> int: ...


class SearchStore(Transactional):
    """What search and indexing need of the metadata (issue #10): inputs selected by filters
    through indexes (not a scan of every row's JSON), and each input's index state.

    Inputs are keyed for the vector index by `InputRecord.seq` (int64, unique in the store).
    """

    @abc.abstractmethod
    def select_inputs(
        self, user_id: str, app_id: str, filters: list[InputFilter], after_seq: int = 0, limit: int | None = None
    ) -> list[int]:
        """The seqs of the app's inputs that match every filter, ascending, > after_seq, at most limit."""

    @abc.abstractmethod
    def count_inputs(self, user_id: str, app_id: str, filters: list[InputFilter]) -> int:
        """How many of the app's inputs match every filter."""

    @abc.abstractmethod
    def inputs_by_seq(self, user_id: str, app_id: str, seqs: list[int]) -> dict[int, InputRecord]:
        """The app's inputs with these seqs (missing ones are left out), with datasets and labels."""

    @abc.abstractmethod
    def input_seqs(self, user_id: str, app_id: str, input_ids: list[str]) -> dict[str, int]:
        """The seqs of those of `input_ids` that exist in the app."""

    @abc.abstractmethod
    def claim_unindexed(self, limit: int, now: float, lease_seconds: float) -> list[IndexWork]:
        """Up to `limit` inputs (any app) that are PENDING, or IN_PROGRESS with their claim
        lapsed, oldest first; they become IN_PROGRESS until now + lease_seconds. Replicas
        claiming at once never get the same input."""

    @abc.abstractmethod
    def finish_indexing(self, results: list[tuple[int, IndexState, str]]) -> None:
        """(seq, READY or FAILED, message) for inputs a worker claimed. Only inputs still
        IN_PROGRESS change (a reset_indexing meanwhile wins); a seq no longer stored is skipped."""

    @abc.abstractmethod
    def reset_indexing(self, user_id: str, app_id: str, input_types: tuple[str, ...]) -> int:
        """Every input of the app of these types back to PENDING (re-embedding after a base
        workflow change), the others to READY; returns how many are PENDING."""

    @abc.abstractmethod
    def index_counts(self, user_id: str, app_id: str) -> dict[IndexState, int]:
        """How many of the app's inputs are in each state (every state present, 0 if none)."""


class ModuleStore(Transactional):
    """Modules, their versions, and which version each app has installed."""

    @abc.abstractmethod
    def insert_module(self, module: ModuleRecord) -> None:
        """Conflict if the app has a module of that id; LookupError if the app is gone."""

    @abc.abstractmethod
    def get_module(self, user_id: str, app_id: str, module_id: str) -> ModuleRecord | None: ...

    @abc.abstractmethod
    def list_modules(self, user_id: str, app_id: str, text: str, query: PageQuery) -> Page[ModuleRecord]:
        """The app's modules, oldest first; with `text`, those whose id contains it (case-insensitive)."""

    @abc.abstractmethod
    def delete_module(self, user_id: str, app_id: str, module_id: str) -> bool:
        """Delete a module with its versions and every app's installation of them."""

    @abc.abstractmethod
    def insert_module_version(self, version: ModuleVersionRecord) -> None:
        """Conflict if the version id is taken; LookupError if the module is gone."""

    @abc.abstractmethod
    def get_module_version(
        self, user_id: str, app_id: str, module_id: str, version_id: str = ""
    ) -> ModuleVersionRecord | None:
        """The version (the latest if version_id is empty)."""

    @abc.abstractmethod
    def list_module_versions(
        self, user_id: str, app_id: str, module_id: str, query: PageQuery
    ) -> Page[ModuleVersionRecord]:
        """Oldest first; LookupError if the module is gone."""

    @abc.abstractmethod
    def install_module_version(self, installed: InstalledModuleVersionRecord) -> None:
        """Record that an app uses this version, replacing its installation of another version of
        the same module; Conflict if the app has an installation of that id (of another module);
        LookupError if the app or the version is gone."""

    @abc.abstractmethod
    def list_installed_module_versions(
        self, user_id: str, app_id: str, module_id: str, query: PageQuery
    ) -> Page[InstalledModuleVersionRecord]:
        """The app's installations, oldest first; with `module_id`, only those of modules of that id."""


class AlgorithmStore(Transactional):
    """Published algorithms, their version tags, their calls and the insights reported for them."""

    @abc.abstractmethod
    def save_algorithm(self, algorithm: AlgorithmRecord) -> None:
        """Insert it, or replace the row of the same (user_id, name); LookupError if its model does
        not exist. Deleting the model (or its app) deletes the algorithm, its tags, calls and insights."""

    @abc.abstractmethod
    def get_algorithm(self, user_id: str, name: str) -> AlgorithmRecord | None: ...

    @abc.abstractmethod
    def list_algorithms(self, user_id: str, public_only: bool, query: PageQuery) -> Page[AlgorithmRecord]:
        """The user's algorithms in publishing order (only the public ones if `public_only`)."""

    @abc.abstractmethod
    def insert_algorithm_tag(self, tag: AlgorithmTagRecord) -> None:
        """Conflict if the algorithm has that tag already, LookupError if the algorithm or the model
        version does not exist. Deleting the model version deletes its tags."""

    @abc.abstractmethod
    def list_algorithm_tags(self, user_id: str, name: str) -> list[AlgorithmTagRecord]:
        """Every tag of the algorithm, in the order they were made."""

    @abc.abstractmethod
    def insert_algorithm_call(self, call: AlgorithmCallRecord) -> None: ...

    @abc.abstractmethod
    def get_algorithm_call(self, call_id: str) -> AlgorithmCallRecord | None: ...

    @abc.abstractmethod
    def purge_algorithm_calls(self, older_than: float) -> int:
        """Delete the calls made before `older_than` (how many); their insights stay."""

    @abc.abstractmethod
    def insert_insights(self, insight: InsightRecord, max_reports: int) -> bool:
        """Store the report unless its call has `max_reports` already (False then): counted and
        inserted in one transaction, so concurrent reports cannot pass the limit."""

    @abc.abstractmethod
    def list_insights(self, user_id: str, name: str, query: PageQuery) -> Page[InsightRecord]:
        """The insights of the algorithm's calls, oldest first."""


class TrainingStore(Transactional):
    """Training jobs (issue #11): one per version of a trainable model, claimed by server
    workers with a lease (a job whose worker died is claimed again), and what they made:
    the trained weights and, for a clusterer, each training input's cluster.

    A job lives and dies with its model version (deleting the version or model deletes it).
    """

    @abc.abstractmethod
    def insert_training_job(self, job: TrainingJobRecord) -> None:
        """Store a QUEUED job for an existing version; Conflict if it has one, LookupError if the
        version does not exist."""

    @abc.abstractmethod
    def get_training_job(
        self, user_id: str, app_id: str, model_id: str, version_id: str
    ) -> TrainingJobRecord | None: ...

    @abc.abstractmethod
    def claim_training_job(self, now: float, lease_seconds: float, owner: str) -> TrainingJobRecord | None:
        """A job (any app) that is QUEUED, or TRAINING with its claim lapsed (< now), now
        TRAINING, held by `owner` until now + lease_seconds, its attempts counted: the oldest
        of the user (app owner) whose last claim is the least recent, so users take turns.
        Replicas claiming at once never get the same job."""

    @abc.abstractmethod
    def requeue_training_jobs(self) -> int:
        """Every TRAINING job back to QUEUED (how many): a server that has the store to itself
        starts, so their workers are gone and need not be waited for."""

    @abc.abstractmethod
    def update_training_job(
        self,
        job: TrainingJobRecord,
        owner: str,
        now: float,
        claimed_until: float,
        progress: float,
        log_lines: str = "",
    ) -> bool:
        """Record progress (and append log lines) and extend the claim, if `owner` still holds the
        job; False if it does not (taken over, or the version deleted): the worker stops."""

    @abc.abstractmethod
    def finish_training_job(
        self,
        job: TrainingJobRecord,
        owner: str,
        now: float,
        state: TrainingState,
        reason: str = "",
        log_lines: str = "",
        metrics: dict[str, Any] | None = None,
        artifact: bytes | None = None,
        assignments: list[ClusterAssignment] | None = None,
    ) -> bool:
        """End the job (TRAINED with its artifact and assignments, or FAILED / NO_DATA with the
        reason), in one transaction, if `owner` still holds it; False if it does not."""

    @abc.abstractmethod
    def get_training_artifact(self, user_id: str, app_id: str, model_id: str, version_id: str) -> bytes | None:
        """The weights a TRAINED job stored (None before)."""

    @abc.abstractmethod
    def list_cluster_assignments(
        self,
        user_id: str,
        app_id: str,
        model_id: str,
        version_id: str,
        query: PageQuery,
        input_ids: list[str] | None = None,
    ) -> Page[ClusterAssignment]:
        """A trained clusterer's inputs and their clusters, in training order (or only `input_ids`)."""


class WorkflowStore(Transactional):
    """Workflows and their immutable versions, with the model versions each version pins."""

    @abc.abstractmethod
    def insert_workflow(self, workflow: WorkflowRecord, version: WorkflowVersionRecord) -> None:
        """Store a workflow with its first version; Conflict if the app holds its id; LookupError if no app."""

    @abc.abstractmethod
    def insert_workflow_version(self, version: WorkflowVersionRecord) -> None:
        """Conflict if the workflow holds its id; LookupError if the workflow does not exist."""

    @abc.abstractmethod
    def get_workflow(self, user_id: str, app_id: str, workflow_id: str) -> WorkflowRecord | None: ...

    @abc.abstractmethod
    def list_workflows(self, user_id: str, app_id: str, text: str, query: PageQuery) -> Page[WorkflowRecord]:
        """The app's workflows in creation order; `text`: ids containing it (case-insensitive)."""

    @abc.abstractmethod
    def delete_workflow(self, user_id: str, app_id: str, workflow_id: str) -> bool:
        """Delete a workflow and its versions; False if it did not exist."""

    @abc.abstractmethod
    def get_workflow_version(
        self, user_id: str, app_id: str, workflow_id: str, version_id: str = ""
    ) -> WorkflowVersionRecord | None:
        """The version, or the latest one when `version_id` is empty."""

    @abc.abstractmethod
    def list_workflow_versions(
        self, user_id: str, app_id: str, workflow_id: str, query: PageQuery
    ) -> Page[WorkflowVersionRecord]:
        """Oldest first; LookupError if the workflow does not exist."""

    @abc.abstractmethod
    def deprecate_workflow_pins(
        self, user_id: str, app_id: str, model_id: str, model_version_id: str, reason: str
    ) -> int:
        """Record `reason` on every node (of any workflow version) pinning that model version
        (every version of the model when `model_version_id` is empty; every model of the app
        when `model_id` is empty too) that has none yet; how many."""


class EvaluationStore(Transactional):
    """Evaluations of models over labelled datasets (issue #11): jobs claimed by server workers
    with a lease, their per-input results, and the metrics computed at the end."""

    @abc.abstractmethod
    def insert_evaluation(self, evaluation: EvaluationRecord) -> EvaluationRecord:
        """Store a QUEUED evaluation (returned with its seq); Conflict if the model has one of this
        id, LookupError if the model does not exist."""

    @abc.abstractmethod
    def get_evaluation(self, user_id: str, app_id: str, model_id: str, eval_id: str) -> EvaluationRecord | None: ...

    @abc.abstractmethod
    def latest_evaluation(self, user_id: str, app_id: str, model_id: str) -> EvaluationRecord | None:
        """The model's most recently created evaluation, whatever its state."""

    @abc.abstractmethod
    def list_evaluations(self, user_id: str, app_id: str, model_id: str, query: PageQuery) -> Page[EvaluationRecord]:
        """The model's evaluations, oldest first."""

    @abc.abstractmethod
    def claim_evaluation(self, owner: str, now: float, lease_seconds: float) -> EvaluationRecord | None:
        """The oldest evaluation (any app) that is QUEUED, or RUNNING with its claim lapsed (before
        `now`): it becomes RUNNING, held by `owner` until now + lease_seconds. Replicas claiming at
        once never get the same one."""

    @abc.abstractmethod
    def record_evaluation_batch(
        self, seq: int, owner: str, items: list[EvaluationItem], last_input_seq: int, claimed_until: float, now: float
    ) -> bool:
        """Store a batch's items (an input stored twice keeps its first result), add them to the
        progress counts, move last_input_seq and renew the claim, in one transaction; False (nothing
        stored) if `owner` no longer holds the evaluation."""

    @abc.abstractmethod
    def finish_evaluation(
        self, seq: int, owner: str, state: EvaluationState, message: str, metrics: dict[str, Any], now: float
    ) -> bool:
        """Record the end (DONE with its metrics, or FAILED with why); False if `owner` no longer holds it."""

    @abc.abstractmethod
    def evaluation_items(self, seq: int, after_input_seq: int, limit: int) -> list[EvaluationItem]:
        """The evaluation's items by input seq, ascending, > after_input_seq, at most limit."""


class HostedDataStore(Transactional):
    """Hosted data (data://, issue #12): directories and files by (owner, parent, name), a
    collection's read ACL, each file's sha256 and size (the bytes live in the blob store).
    The store knows nothing of permissions: server/engine/hosted_data.py decides them."""

    @abc.abstractmethod
    def data_lookup(self, owner: str, names: list[str]) -> list[DataEntryRecord]:
        """The entries along `names` (a collection, then what is inside it), as far as they exist."""

    @abc.abstractmethod
    def data_children(self, parent_seq: int, names: list[str]) -> dict[str, DataEntryRecord]:
        """Those of `names` that are entries of directory `parent_seq`, by name: a download's
        files of one directory found in one query instead of one each."""

    @abc.abstractmethod
    def data_insert_dir(self, owner: str, parent_seq: int | None, name: str, acl: str, now: float) -> DataEntryRecord:
        """A new directory (a collection when parent_seq is None); Conflict if the name is taken
        or the parent is gone."""

    @abc.abstractmethod
    def data_put_files(
        self, owner: str, files: list[tuple[int, str, str, int]], now: float
    ) -> list[DataEntryRecord | None]:
        """Store (parent_seq, name, sha256, size) files in one transaction, overwriting files of
        the same name; None for each whose name is a directory or whose parent is gone."""

    @abc.abstractmethod
    def data_list(
        self, owner: str, parent_seq: int | None, query: PageQuery, public_only: bool = False
    ) -> Page[DataEntryRecord]:
        """A page of a directory's entries (of the owner's collections when parent_seq is None;
        `public_only`: only public collections), in insertion order by keyset."""

    @abc.abstractmethod
    def data_has_children(self, seq: int) -> bool: ...

    @abc.abstractmethod
    def data_delete(self, owner: str, seq: int) -> int:
        """Delete the entry and everything under it; how many entries went (0: it was gone)."""

    @abc.abstractmethod
    def data_set_acl(self, owner: str, seq: int, acl: str, now: float) -> DataEntryRecord | None:
        """Set a collection's ACL; None if it is gone."""

    @abc.abstractmethod
    def referenced_data_blobs(self, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of the (owner, sha256) pairs whose blob is the content of one of that owner's files."""


class DeploymentStore(Transactional):
    """Deployments (issue #13) and the tokens that may call each one. Deployment ids are global;
    deleting an app deletes its deployments, deleting a deployment deletes its tokens."""

    @abc.abstractmethod
    def insert_deployment(self, deployment: DeploymentRecord) -> None:
        """Conflict if the id is taken (by any user), LookupError if the app does not exist."""

    @abc.abstractmethod
    def get_deployment(self, deployment_id: str) -> DeploymentRecord | None: ...

    @abc.abstractmethod
    def list_deployments(self, user_id: str, app_id: str, query: PageQuery) -> Page[DeploymentRecord]:
        """The app's deployments, oldest first."""

    @abc.abstractmethod
    def update_deployment(self, deployment: DeploymentRecord) -> bool:
        """Replace what can change (target, specs, enabled, description, modified_at); False if gone."""

    @abc.abstractmethod
    def delete_deployment(self, deployment_id: str) -> bool:
        """Delete it and its tokens, keeping their hashes (as deleting its app does too)."""

    @abc.abstractmethod
    def get_deleted_deployment_token(self, token_hash: str) -> DeletedDeploymentToken | None:
        """What is kept of a token whose deployment (or its app) was deleted."""

    @abc.abstractmethod
    def insert_deployment_token(self, token: DeploymentTokenRecord) -> None:
        """LookupError if the deployment does not exist, Conflict if the id or hash is taken."""

    @abc.abstractmethod
    def list_deployment_tokens(
        self, deployment_id: str, include_revoked: bool, query: PageQuery
    ) -> Page[DeploymentTokenRecord]:
        """Its tokens, oldest first."""

    @abc.abstractmethod
    def get_deployment_token_by_hash(self, token_hash: str) -> DeploymentTokenRecord | None: ...

    @abc.abstractmethod
    def get_deployment_token_by_request(self, deployment_id: str, request_id: str) -> DeploymentTokenRecord | None:
        """The token a call with this request id made (a retry of it)."""

    @abc.abstractmethod
    def replace_deployment_token_hash(self, token_id: str, token_hash: str) -> None:
        """A new secret for a token (a retried creation: the server never kept the first)."""

    @abc.abstractmethod
    def revoke_deployment_token(self, deployment_id: str, token_id: str, now: float) -> DeploymentTokenRecord | None:
        """The token, revoked at `now` (kept as it was if revoked before); None if it is not one of the deployment's."""


class MetadataStore(
    UserStore,
    AppStore,
    InputStore,
    ModelStore,
    RequestLogStore,
    SearchStore,
    ModuleStore,
    AlgorithmStore,
    TrainingStore,
    WorkflowStore,
    EvaluationStore,
    HostedDataStore,
    DeploymentStore,
):
    """Metadata of every resource, every area in one backend. Safe to use from many threads."""

    @abc.abstractmethod
    def schema_version(self) -> int: ...

    def check(self) -> None:
        """Return if the store answers now, raise StoreUnavailable if not (health checks: one cheap query)."""
        self.schema_version()

    @abc.abstractmethod
    def close(self) -> None: ...
