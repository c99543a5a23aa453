"""Running a workflow version on inputs: the server executes its graph.

Nodes without node_inputs take the workflow's input; the others take what their input nodes made
(embeddings, concepts, regions, text) along with the input's own content. A node runs as soon as
the nodes feeding it are done, so independent nodes run at once, each through `Models.submit`
(a runner, or in-process for local model types). Every node has one output per input with its
own status; a failed node fails its descendants for that input only, naming the node that failed
and why. After image-crop (regions carrying images), a node that reads images runs once per
region and its output holds one region per crop. One deadline covers the whole run: nodes not
done by then fail with DEADLINE_EXCEEDED, the others keep their outputs.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pellucid.server.engine.access import Principal
from pellucid.server.engine.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    EngineError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from pellucid.server.engine.local_models import LocalPredict
from pellucid.server.engine.models import Models, PendingPredict
from pellucid.server.engine.predict import (
    Media,
    OutputCode,
    OutputData,
    OutputRegion,
    PredictInput,
    PredictOutput,
    PredictRequest,
)
from pellucid.server.engine.spaces import output_embedding
from pellucid.server.engine.validation import MAX_BATCH
from pellucid.server.engine.workflows import Workflows, declared_kinds, topological_order
from pellucid.server.records import OutputConfig, WorkflowNodeRecord, WorkflowVersionRecord

log = logging.getLogger("pellucid.server.workflows")

_CODES: dict[type[EngineError], OutputCode] = {
    InvalidArgument: OutputCode.INVALID_ARGUMENT,
    NotFound: OutputCode.NOT_FOUND,
    AlreadyExists: OutputCode.ALREADY_EXISTS,
    PermissionDenied: OutputCode.PERMISSION_DENIED,
    FailedPrecondition: OutputCode.FAILED_PRECONDITION,
    Aborted: OutputCode.ABORTED,
    ResourceExhausted: OutputCode.RESOURCE_EXHAUSTED,
    Unavailable: OutputCode.UNAVAILABLE,
    DeadlineExceeded: OutputCode.DEADLINE_EXCEEDED,
}


@dataclass(frozen=True)
class WorkflowRunRequest:
    user_id: str
    app_id: str
    workflow_id: str
    version_id: str = ""  # empty: the latest version
    inputs: tuple[PredictInput, ...] = ()
    output_config: OutputConfig | None = None  # applied to every node's concepts
    deadline_seconds: float = 60.0  # for the whole workflow


@dataclass(frozen=True)
class NodeOutput:
    """What one node made of one input, and which model version made it."""

    node: WorkflowNodeRecord
    output: PredictOutput


@dataclass(frozen=True)
class InputResult:
    input: PredictInput
    outputs: tuple[NodeOutput, ...]  # one per node, in the version's node order


@dataclass(frozen=True)
class WorkflowRunResult:
    version: WorkflowVersionRecord
    results: tuple[InputResult, ...]


def _code_of(exc: EngineError) -> OutputCode:
    for cls, code in _CODES.items():
        if isinstance(exc, cls):
            return code
    return OutputCode.UNKNOWN


@dataclass
class _Job:
    """One node's submitted work: its predicts and, per workflow input, which items are its."""

    node: WorkflowNodeRecord
    handles: list[tuple[PendingPredict | LocalPredict, list[tuple[int, int]]]]  # (handle, [(input, item)])
    fanned_out: dict[int, tuple[OutputRegion, ...]]  # workflow input -> the regions run one by one
    outputs: dict[int, PredictOutput]  # workflow input -> output decided without a predict
    waiting: int = 0


class _Run:
    """The state of one workflow run: each node's outputs and, for each failed output, the node
    whose failure it carries and why (so descendants name the node that failed and the cause)."""

    def __init__(self, inputs: Sequence[PredictInput]) -> None:
        self.inputs = inputs
        self.done: dict[str, list[PredictOutput]] = {}
        self.causes: dict[tuple[str, int], tuple[str, str]] = {}

    def fail(self, node: WorkflowNodeRecord, i: int, code: OutputCode, why: str) -> PredictOutput:
        """Node `node` failed on input `i` itself."""
        self.causes[(node.id, i)] = (node.id, why)
        return PredictOutput(self.inputs[i].id, code, f"node {node.id!r} (model {node.model_id!r}) failed: {why}")

    def inherit(self, node_id: str, i: int, parent: str) -> PredictOutput:
        """Node `node_id` did not run on input `i`: its input node `parent` failed on it."""
        source, why = self.causes[(parent, i)]
        self.causes[(node_id, i)] = (source, why)
        return PredictOutput(
            self.inputs[i].id,
            self.done[parent][i].code,
            f"node {node_id!r} did not run: node {source!r} failed on this input: {why}",
        )

    def failed_parent(self, node: WorkflowNodeRecord, i: int) -> str:
        return next((p for p in node.node_inputs if p in self.done and (p, i) in self.causes), "")


class WorkflowRuns:
    def __init__(self, workflows: Workflows, models: Models) -> None:
        self._workflows = workflows
        self._models = models

    def embeddings(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        workflow_id: str,
        inputs: Sequence[PredictInput],
        wait: float,
    ) -> list[tuple[npt.NDArray[np.float32] | None, str]]:
        """Per input, the vector of an app whose base workflow is this workflow: the first output
        (in node order) that carries an embedding, or why there is none."""
        try:
            result = self.run(
                principal, WorkflowRunRequest(user_id, app_id, workflow_id, "", tuple(inputs), None, wait)
            )
        except EngineError as exc:
            return [(None, f"workflow {workflow_id!r} could not run: {exc.message}")] * len(inputs)
        vectors: list[tuple[npt.NDArray[np.float32] | None, str]] = []
        for item in result.results:
            found: tuple[npt.NDArray[np.float32] | None, str] = (None, "")
            failures = []
            for made in item.outputs:
                if made.output.code is not OutputCode.OK:
                    failures.append(made.output.message)
                elif made.output.data.embeddings:
                    found = output_embedding(made.output, "this input")
                    if found[0] is None:
                        found = (None, f"node {made.node.id!r} {found[1]}")
                    break
            if found[0] is None and not found[1]:
                why = failures[0] if failures else "no node returned an embedding (output.data.embeddings)"
                found = (None, f"workflow {workflow_id!r}: {why}")
            vectors.append(found)
        return vectors

    def run(self, principal: Principal, request: WorkflowRunRequest) -> WorkflowRunResult:
        inputs = request.inputs
        if not 1 <= len(inputs) <= MAX_BATCH:
            raise InvalidArgument(
                f"a workflow predict takes 1-{MAX_BATCH} inputs, got {len(inputs)}: split larger lists",
                field="inputs",
            )
        version = self._workflows.runnable(
            principal, request.user_id, request.app_id, request.workflow_id, request.version_id
        )
        deadline = time.monotonic() + max(request.deadline_seconds, 0.0)
        nodes = {n.id: n for n in version.nodes}
        order = topological_order(version.nodes)
        run = _Run(inputs)
        jobs: dict[str, _Job] = {}
        finished: queue.SimpleQueue[str] = queue.SimpleQueue()

        def start_ready() -> None:
            for node_id in order:
                node = nodes[node_id]
                if node_id in run.done or node_id in jobs or not all(p in run.done for p in node.node_inputs):
                    continue
                remaining = deadline - time.monotonic()
                # each predict ends a little before the workflow, so its own error (no runner ...) is heard
                job = self._start(principal, node, run, request, remaining - min(0.5, remaining / 8))
                jobs[node_id] = job
                if not job.handles:
                    finished.put(node_id)
                for handle, _ in job.handles:
                    handle.add_done_callback(functools.partial(finished.put, node_id))

        start_ready()
        while len(run.done) < len(nodes):
            try:
                node_id = finished.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                self._expire(jobs, run, nodes, order, request.deadline_seconds)
                break
            job = jobs[node_id]
            job.waiting -= 1
            if job.waiting > 0:
                continue
            run.done[node_id] = self._collect(job, run)
            del jobs[node_id]
            start_ready()
        results = tuple(
            InputResult(given, tuple(NodeOutput(node, run.done[node.id][i]) for node in version.nodes))
            for i, given in enumerate(inputs)
        )
        return WorkflowRunResult(version, results)

    def _start(
        self, principal: Principal, node: WorkflowNodeRecord, run: _Run, request: WorkflowRunRequest, wait: float
    ) -> _Job:
        job = _Job(node, [], {}, {})
        inputs = run.inputs
        try:
            model, _ = self._models.get(
                principal, node.model_user_id, node.model_app_id, node.model_id, node.model_version_id
            )
        except EngineError as exc:
            for i in range(len(inputs)):
                parent = run.failed_parent(node, i)
                job.outputs[i] = (
                    run.inherit(node.id, i, parent) if parent else run.fail(node, i, _code_of(exc), exc.message)
                )
            job.waiting = 1
            return job
        reads, _ = declared_kinds(model, self._models.local.get(model.model_type_id))
        pending: list[tuple[PredictInput, tuple[int, int]]] = []
        for i, given in enumerate(inputs):
            parent = run.failed_parent(node, i)
            if parent:
                job.outputs[i] = run.inherit(node.id, i, parent)
                continue
            parents_made = [run.done[p][i] for p in dict.fromkeys(node.node_inputs)]
            items = _node_inputs(given, parents_made, reads, model.input_fields)
            if isinstance(items, tuple):  # one per cropped region
                regions, per_region = items
                job.fanned_out[i] = regions
                if not per_region:
                    job.outputs[i] = PredictOutput(given.id)
                pending += [(item, (i, j)) for j, item in enumerate(per_region)]
                continue
            why = _unreadable(model.id, model.input_fields, given, items)
            if why:
                job.outputs[i] = run.fail(node, i, OutputCode.INVALID_ARGUMENT, why)
                continue
            pending.append((items, (i, 0)))
        for start in range(0, len(pending), MAX_BATCH):
            chunk = pending[start : start + MAX_BATCH]
            predict = PredictRequest(
                user_id=node.model_user_id,
                app_id=node.model_app_id,
                model_id=node.model_id,
                version_id=node.model_version_id,
                inputs=tuple(item for item, _ in chunk),
                params=dict(node.params),
                output_config=request.output_config,
                deadline_seconds=max(wait, 0.0),
            )
            try:
                handle = self._models.submit(principal, predict)
            except EngineError as exc:
                for _, (i, _j) in chunk:
                    job.outputs[i] = run.fail(node, i, _code_of(exc), exc.message)
                continue
            job.handles.append((handle, [where for _, where in chunk]))
        job.waiting = max(len(job.handles), 1)
        return job

    def _collect(self, job: _Job, run: _Run) -> list[PredictOutput]:
        """Each input's output of a node whose predicts are all done."""
        node = job.node
        per_item: dict[tuple[int, int], tuple[OutputCode, str, PredictOutput | None]] = {}
        for handle, where in job.handles:
            try:
                outputs = handle.result().outputs
            except EngineError as exc:
                per_item.update((w, (_code_of(exc), exc.message, None)) for w in where)
                continue
            except Exception as exc:  # noqa: BLE001 - a model run in-process raised: its inputs fail, not the call
                log.warning("node %r (model %r) raised: %r", node.id, node.model_id, exc)
                per_item.update(
                    (w, (OutputCode.INTERNAL, f"the model raised {type(exc).__name__}: {exc}", None)) for w in where
                )
                continue
            if len(outputs) != len(where):
                why = f"the model answered {len(outputs)} outputs for {len(where)} inputs"
                per_item.update((w, (OutputCode.UNKNOWN, why, None)) for w in where)
                continue
            per_item.update(
                (w, (o.code, o.message or "no reason given", o)) for w, o in zip(where, outputs, strict=True)
            )
        results = []
        for i, given in enumerate(run.inputs):
            if i in job.outputs:
                results.append(job.outputs[i])
                continue
            regions = job.fanned_out.get(i)
            if regions is None:
                code, why, out = per_item[(i, 0)]
                if out is None or code is not OutputCode.OK:
                    results.append(run.fail(node, i, code, why))
                else:
                    results.append(dataclasses.replace(out, input_id=given.id))
                continue
            outs = [per_item[(i, j)] for j in range(len(regions))]
            bad = next((j for j, (code, _, _) in enumerate(outs) if code is not OutputCode.OK), None)
            if bad is not None:
                code, why, _ = outs[bad]
                results.append(run.fail(node, i, code, f"on region {regions[bad].id or bad}: {why}"))
                continue
            made = tuple(
                OutputRegion(
                    id=region.id,
                    bbox=region.bbox,
                    concepts=out.data.concepts,
                    text=out.data.text,
                    embeddings=out.data.embeddings,
                )
                for region, (_, _, out) in zip(regions, outs, strict=True)
                if out is not None
            )
            results.append(PredictOutput(given.id, data=OutputData(regions=made)))
        return results

    @staticmethod
    def _expire(
        jobs: dict[str, _Job], run: _Run, nodes: dict[str, WorkflowNodeRecord], order: list[str], seconds: float
    ) -> None:
        """The deadline passed: cancel what runs; unfinished nodes and their descendants fail."""
        for running in jobs.values():
            for handle, _ in running.handles:
                handle.cancel("the workflow's deadline passed")
        for node_id in order:
            if node_id in run.done:
                continue
            node = nodes[node_id]
            job = jobs.get(node_id)
            outputs = []
            for i in range(len(run.inputs)):
                parent = run.failed_parent(node, i)
                if job is not None and i in job.outputs:
                    outputs.append(job.outputs[i])
                elif parent:
                    outputs.append(run.inherit(node_id, i, parent))
                else:
                    why = f"it did not finish within the workflow's deadline of {seconds:.1f} s"
                    outputs.append(run.fail(node, i, OutputCode.DEADLINE_EXCEEDED, why))
            run.done[node_id] = outputs


def _unreadable(model_id: str, input_fields: tuple[str, ...], given: PredictInput, item: PredictInput) -> str:
    """Why a model that declares its input_fields cannot take this item ("" if it can)."""
    if not input_fields or item.fields or item.embeddings or item.concepts or item.regions:
        return ""
    holds = ", ".join(given.kinds) or "nothing"
    return f"model {model_id!r} reads {', '.join(input_fields)}, and this input holds {holds}"


def _node_inputs(
    given: PredictInput, parents: Sequence[PredictOutput], reads: tuple[str, ...], input_fields: tuple[str, ...]
) -> PredictInput | tuple[tuple[OutputRegion, ...], list[PredictInput]]:
    """What a node gets for one workflow input: the input itself (a root node), the input with
    what its input nodes made, or one input per cropped region (regions carrying images, for a
    node that reads images and not regions).

    The input's own content reaches a node whose model declares no input_fields (a local type
    decides for itself: image-crop reads the regions and crops the input's image), else only the
    fields it declares (a text classifier after an OCR node gets the OCR text, not the image).
    What the input nodes made reaches it if it reads that kind (or declares nothing)."""

    def readable(media: tuple[Media, ...]) -> tuple[Media, ...]:
        return tuple(m for m in media if m.kind in input_fields) if input_fields else media

    if not parents:
        return dataclasses.replace(given, media=readable(given.media))
    embeddings = tuple(v for out in parents for v in out.data.embeddings)
    concepts = tuple(c for out in parents for c in out.data.concepts)
    regions = tuple(r for out in parents for r in out.data.regions)
    texts = [out.data.text for out in parents if out.data.text]
    if any(r.image is not None for r in regions) and "regions" not in reads and (not reads or "image" in reads):
        cropped = tuple(r for r in regions if r.image is not None)
        return cropped, [
            PredictInput(
                id=f"{given.id}/{r.id or j}" if given.id else (r.id or str(j)),
                media=(r.image,) if r.image is not None else (),
                metadata=given.metadata,
            )
            for j, r in enumerate(cropped)
        ]
    media = tuple(m for m in given.media if not (texts and m.kind == "text"))
    if texts:
        media += (Media("text", texts[-1].encode("utf-8", "surrogatepass")),)
    if reads:
        embeddings = embeddings if "embeddings" in reads else ()
        concepts = concepts if "concepts" in reads else ()
        regions = regions if "regions" in reads else ()
    return dataclasses.replace(given, media=readable(media), embeddings=embeddings, concepts=concepts, regions=regions)


__all__ = ["InputResult", "NodeOutput", "WorkflowRunRequest", "WorkflowRunResult", "WorkflowRuns"]
