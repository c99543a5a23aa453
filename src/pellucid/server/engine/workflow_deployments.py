"""Deployments of a workflow: the feature specs a workflow version implies, a deployment's rows
as workflow inputs, and what its nodes made as output rows.

Input features come from the root nodes (those without node_inputs): a root's model's declared
`input_specs`, else what it reads: a `text` feature (text) and an `image` feature (image),
required when the root reads only that one. Output features come from the leaf nodes (those no
node feeds): a leaf with one output feature gives it under the node's id, a leaf with several
gives each as `<node_id>.<feature>`. A leaf's model's declared `output_specs` are its features,
else what it makes, the first of: embeddings (an array: one vector, or one row per vector),
concepts (categorical, its categories the model version's concepts, the concepts a trained
version learnt, or for a thresholder those of the nodes feeding it), text, regions (an array of
boxes, top left bottom right) and an image. Specs given at creation replace either side; an
output spec names its node the same way (any node, not only leaves).

A row is one workflow input: its features (for roots that declare input_specs) and, of them,
the first text and the first image feature as the input's text and image (what built-in and
runner nodes read). The run is the engine's workflow run (`WorkflowRuns.run`), on a thread of
this module's pool, so callers wait on a handle with the surface of a predict's. A run holds its
thread until the workflow ends (up to the call's deadline, e.g. while a node waits for a runner
that never comes), so the pool serves owners in turns, gives one owner at most RUNS_PER_OWNER
threads at a time and keeps a few threads for owners with nothing running (see FairPool): neither
one owner's stuck runs nor several owners' can hold every thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace

import numpy as np

from pellucid.server.engine.access import Principal
from pellucid.server.engine.errors import EngineError, InvalidArgument
from pellucid.server.engine.fair_pool import FairPool
from pellucid.server.engine.local_models import DATA_KINDS
from pellucid.server.engine.models import Models
from pellucid.server.engine.predict import (
    Feature,
    Media,
    OutputCode,
    OutputData,
    PredictInput,
    PredictOutput,
    PredictResult,
    Tensor,
)
from pellucid.server.engine.validation import MAX_BATCH
from pellucid.server.engine.workflow_runs import WorkflowRunRequest, WorkflowRunResult, WorkflowRuns
from pellucid.server.engine.workflows import Workflows, declared_kinds, topological_order
from pellucid.server.records import (
    FeatureSpec,
    ModelRecord,
    ModelVersionRecord,
    WorkflowNodeRecord,
    WorkflowVersionRecord,
)
from pellucid.server.storage import MetadataStore

SEPARATOR = "."  # <node_id>.<feature> (node ids hold no dots)
CONTENT_KINDS = ("text", "image")  # what a row can carry as the workflow input's content
OUTPUT_KINDS = ("embeddings", "concepts", "text", "regions", "image")  # a leaf's output, first found
DEFAULT_WORKERS = 32  # threads of the pool (made as needed); a run mostly waits for its nodes' predicts
RUNS_PER_OWNER = 8  # of them, what one owner's runs may hold at a time


@dataclass(frozen=True)
class _Node:
    """A node with what the specs need: its model, what it reads and makes (a pass-through
    node makes what its inputs do) and the concepts it can output."""

    record: WorkflowNodeRecord
    model: ModelRecord
    reads: tuple[str, ...]
    makes: tuple[str, ...]
    categories: tuple[str, ...]


class WorkflowTargets:
    """Workflow versions as deployment targets: their specs, and their runs on deployment rows."""

    def __init__(
        self,
        store: MetadataStore,
        models: Models,
        workflows: Workflows,
        runs: WorkflowRuns,
        workers: int = DEFAULT_WORKERS,
        runs_per_owner: int = RUNS_PER_OWNER,
    ) -> None:
        self._store = store
        self._models = models
        self._workflows = workflows
        self._runs = runs
        self._pool: FairPool[PredictResult] = FairPool(workers, runs_per_owner, "workflow-deployment")

    def close(self) -> None:
        self._pool.close()

    def runnable(
        self, principal: Principal, user_id: str, app_id: str, workflow_id: str, version_id: str = ""
    ) -> WorkflowVersionRecord:
        """The version (its latest if none is named); NotFound, or FailedPrecondition if deprecated."""
        return self._workflows.runnable(principal, user_id, app_id, workflow_id, version_id)

    # specs

    def input_specs(self, principal: Principal, version: WorkflowVersionRecord) -> tuple[FeatureSpec, ...]:
        """The root nodes' input features (see the module's docstring)."""
        nodes = self._nodes(principal, version)
        specs: dict[str, tuple[FeatureSpec, str]] = {}
        for node in nodes.values():
            if node.record.node_inputs:
                continue
            own = node.model.input_specs or content_specs(node.reads)
            for spec in own:
                seen = specs.get(spec.name)
                if seen is None:
                    specs[spec.name] = (spec, node.record.id)
                elif replace(seen[0], required=True) == replace(spec, required=True):
                    specs[spec.name] = (replace(seen[0], required=seen[0].required or spec.required), seen[1])
                else:
                    raise InvalidArgument(
                        f"root nodes {seen[1]!r} and {node.record.id!r} of workflow {version.workflow_id!r} declare "
                        f"the input feature {spec.name!r} differently: give the deployment's input_specs",
                        reason="CONFLICTING_FEATURE_SPECS",
                        field="input_specs",
                    )
        return tuple(spec for spec, _ in specs.values())

    def output_specs(self, principal: Principal, version: WorkflowVersionRecord) -> tuple[FeatureSpec, ...]:
        """The leaf nodes' output features, named by node (see the module's docstring)."""
        nodes = self._nodes(principal, version)
        feeding = {parent for n in version.nodes for parent in n.node_inputs}
        specs: list[FeatureSpec] = []
        for node in nodes.values():
            if node.record.id in feeding:
                continue
            where = f"node {node.record.id!r} (model {node.model.id!r})"
            made = made_features(node.model, node.makes, node.categories, where, node.record.id)
            if len(made) == 1:
                specs.append(replace(made[0], name=node.record.id))
            else:
                specs += [replace(s, name=f"{node.record.id}{SEPARATOR}{s.name}") for s in made]
        return tuple(specs)

    @staticmethod
    def check_output_names(version: WorkflowVersionRecord, specs: Sequence[FeatureSpec]) -> None:
        """Each output spec names a node of the version (`<node_id>` or `<node_id>.<feature>`)."""
        ids = {n.id for n in version.nodes}
        for i, spec in enumerate(specs):
            if spec.name.partition(SEPARATOR)[0] not in ids:
                raise InvalidArgument(
                    f"output_specs[{i}] {spec.name!r} names no node of workflow {version.workflow_id!r}: name an "
                    f"output <node_id> or <node_id>{SEPARATOR}<feature>, with a node of {', '.join(sorted(ids))}",
                    reason="UNKNOWN_OUTPUT_NODE",
                    field=f"output_specs[{i}].name",
                )

    def _nodes(self, principal: Principal, version: WorkflowVersionRecord) -> dict[str, _Node]:
        """Every node, in topological order, with its model and what it makes."""
        records = {n.id: n for n in version.nodes}
        nodes: dict[str, _Node] = {}
        for node_id in topological_order(version.nodes):
            record = records[node_id]
            model, model_version = self._models.get(
                principal, record.model_user_id, record.model_app_id, record.model_id, record.model_version_id
            )
            local = self._models.local.get(model.model_type_id)
            reads, makes = declared_kinds(model, local)
            parents = [nodes[p] for p in dict.fromkeys(record.node_inputs)]
            if set(makes) == set(DATA_KINDS):  # passes its input on (random-sample)
                makes = tuple(dict.fromkeys(k for p in parents for k in p.makes)) if parents else CONTENT_KINDS
            categories = tuple(c.id for c in model_version.concepts) if model_version is not None else ()
            if not categories and local is not None and local.trainable:
                categories = self._trained_concepts(
                    record.model_user_id, record.model_app_id, record.model_id, record.model_version_id
                )
            if not categories and (not reads or "concepts" in reads):  # a thresholder, random-sample
                categories = tuple(dict.fromkeys(c for p in parents for c in p.categories))
            nodes[node_id] = _Node(record, model, reads, makes, categories)
        return nodes

    def _trained_concepts(self, user_id: str, app_id: str, model_id: str, version_id: str) -> tuple[str, ...]:
        """The concepts a trained version learnt (else those it was asked to learn)."""
        job = self._store.get_training_job(user_id, app_id, model_id, version_id)
        if job is None:
            return ()
        learnt = job.metrics.get("concepts") or []
        if learnt:
            return tuple(str(c["id"]) for c in learnt if isinstance(c, dict) and "id" in c)
        return tuple(str(c) for c in job.params.get("concepts") or [])

    def model_specs(
        self, principal: Principal, model: ModelRecord, version: ModelVersionRecord | None
    ) -> tuple[tuple[FeatureSpec, ...], tuple[FeatureSpec, ...]]:
        """The specs a deployment of one model gets where the model declares none: its inputs as a
        workflow root's (what it reads), its outputs as a leaf's (what it makes, named by what they
        are: `embedding`, `concepts`, ...); none where what it makes is not known."""
        local = self._models.local.get(model.model_type_id)
        reads, makes = declared_kinds(model, local)
        inputs = model.input_specs or (content_specs(reads) if reads else ())
        if model.output_specs or not makes or set(makes) == set(DATA_KINDS):
            return inputs, model.output_specs
        categories = tuple(c.id for c in version.concepts) if version is not None else ()
        if not categories and local is not None and local.trainable and version is not None:
            categories = self._trained_concepts(model.user_id, model.app_id, model.id, version.id)
        try:
            return inputs, tuple(made_features(model, makes, categories, f"model {model.id!r}", model.id))
        except InvalidArgument:
            if local is not None:  # the server runs it and answers no features: the specs must say what to read
                raise
            return inputs, ()  # a runner's model: its features as they come

    # calls

    def submit(
        self,
        owner: Principal,
        user_id: str,
        app_id: str,
        workflow_id: str,
        version_id: str,
        input_specs: Sequence[FeatureSpec],
        output_specs: Sequence[FeatureSpec],
        rows: Sequence[tuple[Feature, ...]],
        deadline_seconds: float,
    ) -> list[WorkflowRun]:
        """Checked rows run through the workflow, MAX_BATCH per run, all queued at once."""
        version = self.runnable(owner, user_id, app_id, workflow_id, version_id)
        declared = self._declared_outputs(owner, version, output_specs)
        deadline = time.monotonic() + deadline_seconds
        parts: list[WorkflowRun] = []
        for start in range(0, len(rows), MAX_BATCH):
            inputs = tuple(
                row_input(f"row-{start + i}", row, input_specs) for i, row in enumerate(rows[start : start + MAX_BATCH])
            )
            request = WorkflowRunRequest(user_id, app_id, workflow_id, version.id, inputs, None, deadline_seconds)
            future = self._pool.submit(
                owner.user_id, self._run, owner, request, deadline, tuple(output_specs), declared
            )
            parts.append(WorkflowRun(future))
        return parts

    def _declared_outputs(
        self, owner: Principal, version: WorkflowVersionRecord, specs: Sequence[FeatureSpec]
    ) -> dict[str, str]:
        """Outputs named by a bare node id whose model declares one output feature: that feature's
        name, to find it among the features a runner returns (it may return more than it declares)."""
        nodes = {n.id: n for n in version.nodes}
        declared: dict[str, str] = {}
        for spec in specs:
            record = nodes.get(spec.name)
            if record is None:
                continue
            try:
                model, _ = self._models.get(
                    owner, record.model_user_id, record.model_app_id, record.model_id, record.model_version_id
                )
            except EngineError:  # the run says why the node fails
                continue
            if len(model.output_specs) == 1:
                declared[spec.name] = model.output_specs[0].name
        return declared

    def _run(
        self,
        owner: Principal,
        request: WorkflowRunRequest,
        deadline: float,
        specs: tuple[FeatureSpec, ...],
        declared: dict[str, str],
    ) -> PredictResult:
        left = deadline - time.monotonic()  # what waiting for a thread of the pool left of it
        result = self._runs.run(owner, replace(request, deadline_seconds=max(left, 0.0)))
        return PredictResult("", result.version.id, "", tuple(_output_rows(result, specs, declared)))


class WorkflowRun:
    """One queued workflow run of a deployment call; the surface of a predict's handle."""

    def __init__(self, future: Future[PredictResult]) -> None:
        self._future = future

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        self._future.add_done_callback(lambda _future: callback())

    def cancel(self, reason: str = "the caller went away") -> None:
        self._future.cancel()  # a run already started ends by its deadline

    def result(self) -> PredictResult:
        return self._future.result()


def content_specs(reads: Sequence[str]) -> tuple[FeatureSpec, ...]:
    """Input features for what a model reads: `text` and `image` (either, when it reads neither),
    each required when it is the only one."""
    kinds = [k for k in CONTENT_KINDS if not reads or k in reads]
    return tuple(FeatureSpec(k, k, required=len(kinds) == 1) for k in kinds)


def made_features(
    model: ModelRecord, makes: Sequence[str], categories: Sequence[str], where: str, name: str
) -> list[FeatureSpec]:
    """The features a model outputs (named by what they are; a workflow adds the node id): its
    declared output_specs, else the first of OUTPUT_KINDS it makes. `name` is what errors suggest
    naming the output."""
    if model.output_specs:
        return list(model.output_specs)
    kind = next((k for k in OUTPUT_KINDS if k in makes), "")
    if kind == "embeddings":
        return [FeatureSpec("embedding", "array", dtype="float32")]
    if kind == "concepts":
        if not categories:
            raise InvalidArgument(
                f"{where} outputs concepts, and which ones is not known (its model version names none): give the "
                f"deployment's output_specs, e.g. {{'name': '{name}', 'type': 'categorical', "
                "'categories': [...]}",
                reason="NO_FEATURE_SPECS",
                field="output_specs",
            )
        return [FeatureSpec("concepts", "categorical", categories=tuple(categories))]
    if kind == "text":
        return [FeatureSpec("text", "text")]
    if kind == "regions":
        return [FeatureSpec("regions", "array", dtype="float32", shape=(-1, 4))]
    if kind == "image":
        return [FeatureSpec("image", "image")]
    raise InvalidArgument(
        f"{where} declares no outputs (output_specs, or output_fields such as concepts or embeddings): give the "
        f"deployment's output_specs, naming its outputs {name!r} or {name}{SEPARATOR}<feature>",
        reason="NO_FEATURE_SPECS",
        field="output_specs",
    )


def row_input(input_id: str, row: Sequence[Feature], specs: Sequence[FeatureSpec]) -> PredictInput:
    """A deployment row as a predict (or workflow) input: its features, and of them the first
    text and the first image feature of the specs also as the input's content (what built-in
    models and runners reading `text` or `image` read)."""
    text, image = (next((s.name for s in specs if s.type == k), "") for k in CONTENT_KINDS)
    media: list[Media] = []
    for feature in row:
        if feature.name == text and feature.text is not None:
            media.append(Media("text", feature.text.encode("utf-8", "surrogatepass")))
        elif feature.name == image and feature.media is not None:
            media.append(feature.media)
    return PredictInput(id=input_id, media=tuple(media), features=tuple(row))


def _output_rows(
    result: WorkflowRunResult, specs: Sequence[FeatureSpec], declared: dict[str, str]
) -> Iterable[PredictOutput]:
    """Per input, its output features, or the first failure in the graph's order (the node at
    fault: the failures after it only repeat it)."""
    order = {node_id: i for i, node_id in enumerate(topological_order(result.version.nodes))}
    for item in result.results:
        made = {m.node.id: m for m in item.outputs}
        failed = sorted((m for m in item.outputs if m.output.code is not OutputCode.OK), key=lambda m: order[m.node.id])
        if failed:
            yield replace(failed[0].output, input_id=item.input.id)
            continue
        features = []
        unusable = ""
        for spec in specs:
            node_id, _, inner = spec.name.partition(SEPARATOR)
            found = made.get(node_id)
            if found is not None and not inner and len(found.output.data.features) > 1:
                inner = declared.get(spec.name, "")  # the one its model declares, among more
            try:
                feature = output_feature(spec, inner, found.output.data) if found is not None else None
            except ValueError as exc:  # e.g. a runner's embeddings of different lengths: no array holds them
                unusable = f"node {node_id!r} returned {spec.name!r} in a form that is not an array: {exc}"
                break
            if feature is not None:
                features.append(feature)
        if unusable:
            yield PredictOutput(item.input.id, code=OutputCode.FAILED_PRECONDITION, message=unusable)
            continue
        yield PredictOutput(item.input.id, data=OutputData(features=tuple(features)))


def output_feature(spec: FeatureSpec, inner: str, data: OutputData) -> Feature | None:
    """The output feature `spec` of what one node made (None: the node made none of it)."""
    if data.features:
        wanted = inner or (data.features[0].name if len(data.features) == 1 else spec.name)
        named = next((f for f in data.features if f.name == wanted), None)
        if named is not None:
            return replace(named, name=spec.name)
    if spec.type == "categorical":
        return Feature(spec.name, concepts=data.concepts)
    if spec.type == "text":
        return Feature(spec.name, text=data.text) if data.text else None
    if spec.type == "image":
        image = next((m for m in data.media if m.kind == "image" and m.data), None)
        return Feature(spec.name, media=image) if image is not None else None
    if spec.type == "array":
        if data.embeddings:
            vectors = np.asarray(data.embeddings, dtype=np.float32)
            return Feature(spec.name, tensor=Tensor.from_numpy(vectors[0] if len(vectors) == 1 else vectors))
        boxes = [r.bbox for r in data.regions if r.bbox is not None]
        if boxes or data.regions:
            return Feature(spec.name, tensor=Tensor.from_numpy(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)))
    return None


__all__ = [
    "SEPARATOR",
    "WorkflowRun",
    "WorkflowTargets",
    "content_specs",
    "made_features",
    "output_feature",
    "row_input",
]
