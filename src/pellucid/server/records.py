"""Plain records passed between the engine and the stores.

They carry no protobuf and no gRPC: the servicers translate them to and from
messages, the stores to and from rows. Times are seconds since the epoch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class UserRecord:
    id: str
    is_admin: bool
    created_at: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenRecord:
    id: str
    user_id: str
    kind: str  # "pat" or "session"
    token_hash: str
    created_at: float
    description: str = ""
    expires_at: float | None = None
    revoked_at: float | None = None
    request_id: str | None = None

    def active(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True)
class AppRecord:
    user_id: str
    id: str
    created_at: float
    modified_at: float
    name: str = ""
    description: str = ""
    base_workflow: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConceptRecord:
    user_id: str
    app_id: str
    id: str
    name: str
    created_at: float


@dataclass(frozen=True)
class PageQuery:
    """Which slice of an ordered listing a store returns.

    `after` is a keyset cursor (the store's internal sequence number of the last
    row already seen); `offset` serves page-number listing.
    """

    limit: int
    after: int | None = None
    offset: int = 0


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    # Cursor for the next page, or None when this page is the last.
    next_after: int | None


@dataclass(frozen=True)
class DatasetRecord:
    user_id: str
    app_id: str
    id: str
    created_at: float
    modified_at: float
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    input_count: int = 0


@dataclass(frozen=True)
class DatasetStats:
    inputs: int = 0
    inputs_by_type: dict[str, int] = field(default_factory=dict)
    annotations: int = 0
    regions: int = 0
    concept_counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetVersionRecord:
    user_id: str
    app_id: str
    dataset_id: str
    id: str
    created_at: float
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    stats: DatasetStats = field(default_factory=DatasetStats)


@dataclass(frozen=True)
class ConceptValue:
    """A concept attached to an input, a region or an output, with its value (1.0 = present)."""

    id: str
    name: str = ""
    value: float = 1.0


@dataclass(frozen=True)
class RegionRecord:
    id: str
    # (top_row, left_col, bottom_row, right_col), normalised to [0, 1]
    bbox: tuple[float, float, float, float] | None = None
    # [(row, col), ...], normalised to [0, 1]
    polygon: tuple[tuple[float, float], ...] | None = None
    concepts: tuple[ConceptValue, ...] = ()


@dataclass(frozen=True)
class AnnotationRecord:
    input_id: str
    id: str
    created_at: float
    concepts: tuple[ConceptValue, ...] = ()
    regions: tuple[RegionRecord, ...] = ()


class IndexState(enum.IntEnum):
    """Where an input stands with its app's embedder (search issue #10). The numbers are the
    input status codes the API shows (Input.status.code), after Clarifai's INPUT_DOWNLOAD_*."""

    READY = 30000  # stored; embedded and searchable by vector if its app embeds its type
    PENDING = 30001  # waiting for a server worker to embed it
    FAILED = 30002  # its embedder failed on it (index_message says why); other inputs go on
    IN_PROGRESS = 30003  # a worker holds it (its claim lapses if that worker dies)


@dataclass(frozen=True)
class InputRecord:
    user_id: str
    app_id: str
    id: str
    input_type: str  # image | video | audio | text
    content_key: str  # sha256 over the content: equal keys mean the same input
    created_at: float
    media_sha256: str = ""
    media_size: int = 0
    media_mime: str = ""
    media_url: str = ""
    width: int = 0
    height: int = 0
    text: str = ""
    text_url: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    geo: tuple[float, float] | None = None  # (longitude, latitude)
    labels: tuple[ConceptValue, ...] = ()
    dataset_ids: tuple[str, ...] = ()
    # the store's row number: an int64 key for the vector index (0 until stored)
    seq: int = 0
    index_state: IndexState = IndexState.READY
    index_message: str = ""


@dataclass(frozen=True)
class GeoFilter:
    """Inputs whose geo point lies within `radius_km` of (longitude, latitude), or, with
    radius_km 0, inside the box [min_lon, max_lon] x [min_lat, max_lat]."""

    longitude: float = 0.0
    latitude: float = 0.0
    radius_km: float = 0.0
    box: tuple[float, float, float, float] | None = None  # (min_lon, min_lat, max_lon, max_lat)


@dataclass(frozen=True)
class InputFilter:
    """One filter of a search: its set fields AND together, the values inside one field OR
    (input_types=("image", "text") is image OR text); `negate` keeps the inputs it does not
    match. A search ANDs its filters."""

    input_types: tuple[str, ...] = ()
    dataset_ids: tuple[str, ...] = ()
    status_codes: tuple[IndexState, ...] = ()
    # (concept id, value): value 1.0 = the input has the concept as positive, 0.0 = as negative;
    # labels and annotations (of the whole input or of its regions) both count
    concepts: tuple[tuple[str, float], ...] = ()
    metadata: dict[str, Any] | None = None  # nested containment: every key path and value given is in the input's
    geo: GeoFilter | None = None
    input_ids: tuple[str, ...] = ()
    negate: bool = False


@dataclass(frozen=True)
class IndexWork:
    """An input a worker claimed to embed (claim_unindexed)."""

    input: InputRecord
    base_workflow: str  # the app's, when it was claimed
    claimed_until: float


@dataclass(frozen=True)
class JobRecord:
    user_id: str
    app_id: str
    id: str
    created_at: float
    modified_at: float
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    failed: int = 0


@dataclass(frozen=True)
class IngestItem:
    """One input of a batch, ready to store, with its annotations and datasets."""

    input: InputRecord
    annotations: tuple[AnnotationRecord, ...] = ()


@dataclass(frozen=True)
class OutputConfig:
    min_value: float = 0.0
    max_concepts: int = 0
    select_concepts: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelVersionRecord:
    user_id: str
    app_id: str
    model_id: str
    id: str
    created_at: float
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    concepts: tuple[ConceptValue, ...] = ()
    output_config: OutputConfig = field(default_factory=OutputConfig)
    runner_labels: tuple[str, ...] = ()
    item_timeout_seconds: int = 60
    metadata: dict[str, Any] = field(default_factory=dict)


FEATURE_TYPES = ("numeric", "categorical", "text", "image", "array")


@dataclass(frozen=True)
class FeatureSpec:
    """A feature a model reads or writes, by name; deployments check rows against these.
    Image sizes and channels of 0 mean any; an array axis of -1 takes any size."""

    name: str
    type: str  # one of FEATURE_TYPES
    categories: tuple[str, ...] = ()
    width: int = 0
    height: int = 0
    channels: int = 0
    dtype: str = ""
    shape: tuple[int, ...] = ()
    required: bool = True


@dataclass(frozen=True)
class ModelRecord:
    user_id: str
    app_id: str
    id: str
    created_at: float
    modified_at: float
    name: str = ""
    description: str = ""
    model_type_id: str = ""
    input_fields: tuple[str, ...] = ()
    output_fields: tuple[str, ...] = ()
    input_specs: tuple[FeatureSpec, ...] = ()
    output_specs: tuple[FeatureSpec, ...] = ()


@dataclass(frozen=True)
class RunnerRecord:
    user_id: str
    id: str
    created_at: float
    labels: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class ModuleRecord:
    """A named package of code an app offers (its versions say where the code is)."""

    user_id: str
    app_id: str
    id: str
    created_at: float
    modified_at: float
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModuleVersionRecord:
    """Where one version's code is: a git repository at a ref (and, pinned, a commit), or a
    Python entry point ("package.module:attr"). The server stores it and never runs it."""

    user_id: str
    app_id: str
    module_id: str
    id: str
    created_at: float
    description: str = ""
    git_url: str = ""
    git_ref: str = ""
    git_commit: str = ""
    entry_point: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InstalledModuleVersionRecord:
    """Which version of a module an app uses: one per module and app (installing another replaces it)."""

    user_id: str  # the installing app's
    app_id: str
    id: str
    created_at: float
    version: ModuleVersionRecord


# algorithms (engine/algorithms.py)


@dataclass(frozen=True)
class AlgorithmRecord:
    """A model its owner published under a user-wide name."""

    user_id: str
    name: str
    app_id: str
    model_id: str
    public: bool
    created_at: float
    modified_at: float


@dataclass(frozen=True)
class AlgorithmTagRecord:
    """A semantic version tag naming one version of an algorithm's model."""

    user_id: str
    name: str
    tag: str
    version_id: str
    created_at: float


@dataclass(frozen=True)
class AlgorithmCallRecord:
    """One call of an algorithm: insights reported later name it."""

    id: str
    user_id: str  # the algorithm's owner
    name: str
    version_id: str
    caller: str
    created_at: float


@dataclass(frozen=True)
class InsightRecord:
    """Numeric insights reported for one algorithm call."""

    user_id: str  # the algorithm's owner
    name: str
    call_id: str
    version_id: str
    reported_by: str
    values: dict[str, float]
    created_at: float


class TrainingState(enum.Enum):
    """Where a training job stands (GetTrainingStatus). A version is served once TRAINED."""

    QUEUED = "queued"  # stored; waits for a server training worker
    TRAINING = "training"  # a worker holds it (its claim lapses if that worker dies)
    TRAINED = "trained"  # weights stored: the version predicts
    FAILED = "failed"  # `reason` says why
    NO_DATA = "no_data"  # the dataset held no usable labelled inputs (`reason` says what it held)


@dataclass(frozen=True)
class TrainingJobRecord:
    """The training job of one model version (a trainable model type's version is made by one)."""

    user_id: str
    app_id: str
    model_id: str
    version_id: str
    model_type_id: str
    created_at: float
    modified_at: float
    params: dict[str, Any] = field(default_factory=dict)  # every declared param, checked
    state: TrainingState = TrainingState.QUEUED
    progress: float = 0.0  # 0..1
    reason: str = ""
    logs: str = ""  # lines, each ending in "\n"
    metrics: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0  # claims so far (a restart after a crash claims it again)
    owner: str = ""  # the worker holding it while TRAINING
    claimed_until: float | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class ClusterAssignment:
    """The cluster a trained clusterer put one of its training inputs in."""

    input_id: str
    cluster: int
    distance: float  # Euclidean distance to the cluster's centre


class EvaluationState(enum.Enum):
    """Where an evaluation job stands (EvalMetrics.status)."""

    QUEUED = "queued"  # stored, waiting for a server worker
    RUNNING = "running"  # a worker holds it (its claim lapses if that worker dies)
    DONE = "done"  # metrics computed
    FAILED = "failed"  # `message` says why


@dataclass(frozen=True)
class EvaluationRecord:
    """A model version evaluated over a labelled dataset (or dataset version): a server job."""

    user_id: str
    app_id: str
    model_id: str
    id: str
    model_version_id: str
    dataset_user_id: str
    dataset_app_id: str
    dataset_id: str
    dataset_version_id: str
    created_at: float
    modified_at: float
    state: EvaluationState = EvaluationState.QUEUED
    message: str = ""
    total: int = 0  # inputs in the dataset (version) when the evaluation was asked for
    processed: int = 0  # inputs predicted so far (failed ones included)
    failed: int = 0  # inputs whose predict failed
    last_input_seq: int = 0  # the store seq of the last input predicted: a resumed job goes on after it
    eval_info: dict[str, Any] = field(default_factory=dict)
    extended_metrics: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)  # engine/evaluations.py's JSON, once DONE
    seq: int = 0
    owner: str = ""  # the worker claim that may write progress
    claimed_until: float | None = None


@dataclass(frozen=True)
class EvaluationItem:
    """One input of an evaluation: its labels, what the model predicted, or why it failed."""

    input_seq: int
    input_id: str
    truth: tuple[str, ...] = ()  # concept ids the input is labelled with (positives)
    predicted: tuple[ConceptValue, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class WorkflowNodeRecord:
    """One node of a workflow version: the model version it pins and the nodes that feed it."""

    id: str
    model_user_id: str
    model_app_id: str
    model_id: str
    model_version_id: str
    model_type_id: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # merged over the version's params
    node_inputs: tuple[str, ...] = ()  # empty: the workflow's input


@dataclass(frozen=True)
class WorkflowRecord:
    user_id: str
    app_id: str
    id: str
    created_at: float
    modified_at: float
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkflowVersionRecord:
    user_id: str
    app_id: str
    workflow_id: str
    id: str
    created_at: float
    nodes: tuple[WorkflowNodeRecord, ...] = ()
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    # (node id, why) for each node whose pinned model version was deleted: the version is deprecated
    deleted_pins: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DataEntryRecord:
    """A hosted-data directory or file (server/engine/hosted_data.py). `parent_seq` is None for a
    collection; `acl` is set on collections only (sub entries take their collection's)."""

    seq: int
    owner: str
    parent_seq: int | None
    name: str
    is_dir: bool
    created_at: float
    modified_at: float
    size: int = 0
    sha256: str = ""
    acl: str = ""


@dataclass(frozen=True)
class DeploymentRecord:
    """A model (at a version, or its latest) or a workflow (at the version pinned at creation:
    `version_id` is then the workflow's) served at a URL of its own: rows are checked against
    its feature specs, and only its owner's PATs and its own deployment tokens may call it.
    Deployment ids are global (the URL names only the id)."""

    user_id: str
    app_id: str
    id: str
    created_at: float
    modified_at: float
    model_id: str = ""
    workflow_id: str = ""
    version_id: str = ""  # empty: the model's latest version at each call (a workflow's is always set)
    input_specs: tuple[FeatureSpec, ...] = ()
    output_specs: tuple[FeatureSpec, ...] = ()
    enabled: bool = True
    description: str = ""


@dataclass(frozen=True)
class DeploymentTokenRecord:
    """A token that can only call one deployment; the secret is kept as its hash."""

    deployment_id: str
    id: str
    token_hash: str
    created_at: float
    description: str = ""
    revoked_at: float | None = None
    request_id: str | None = None  # of the call that made it (a retry gets it again, with a new secret)


@dataclass(frozen=True)
class DeletedDeploymentToken:
    """What is kept of a token whose deployment was deleted: which deployment, and whether its app
    went with it, so the token's holder hears that rather than "not valid"."""

    deployment_id: str
    with_app: bool
