"""Indexing: server workers embed stored inputs, in batches, for their app's base workflow (#10).

Ingestion stores inputs at full speed and marks those whose type the app's base workflow
embeds PENDING (engine/inputs.py), then wakes the workers. A worker claims a batch of them
from the metadata store (any app; a claim is a lease, so a worker that dies loses its batch
to another after `lease_seconds`, and replicas never claim the same input), embeds each
(app, embedder) group, writes the vectors into the vector index (keys: the inputs' seqs;
space: spaces.space_name) and marks each input READY, or FAILED with the reason: one bad
input fails alone. Idle workers wait on an Event that ingestion sets, and look again every
`poll_seconds` for work other replicas stored.

Embedders: the built-in ones (server/embedders, the `models` extra: without it inputs fail
with the install hint, and naming the base workflow again in a patch re-embeds them), or an
app's own model, run through its runner like any predict (Models.predict), whose outputs
carry `data.embeddings`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pellucid.server.embedders import Embedder, EmbedderUnavailable, builtin_embedder
from pellucid.server.engine.access import Principal
from pellucid.server.engine.apps import Apps
from pellucid.server.engine.errors import EngineError
from pellucid.server.engine.models import Models
from pellucid.server.engine.predict import Media, PredictInput, PredictRequest
from pellucid.server.engine.spaces import (
    MODEL_EMBEDDER_PREFIX,
    WORKFLOW_EMBEDDER_PREFIX,
    output_embedding,
    space_name,
)
from pellucid.server.engine.workflow_runs import WorkflowRuns
from pellucid.server.records import IndexState, IndexWork, InputRecord
from pellucid.server.storage import MetadataStore, StoreUnavailable
from pellucid.server.storage.blobs import BlobStore
from pellucid.server.storage.vectors import DimensionMismatch, VectorIndex

log = logging.getLogger("pellucid.server.indexing")

DEFAULT_BATCH_SIZE = 32
DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_POLL_SECONDS = 2.0
# Workers run at this CPU niceness (Linux, where it is per thread): ingestion and calls come first,
# embedding takes the CPU they leave. The model's own threads, started by the worker that loads it,
# inherit it.
DEFAULT_NICENESS = 10
INDEXER_TOKEN_ID = "pellucid-indexer"  # the principal a model embedder's predicts run as (the app's owner)


@dataclass(frozen=True)
class Embedded:
    """One input's outcome: its vector, or why it has none."""

    seq: int
    vector: npt.NDArray[np.float32] | None = None
    error: str = ""


class Indexer:
    """The workers that embed PENDING inputs. `run_once` does one batch (tests call it
    directly); `start` runs it in threads until `stop`."""

    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        apps: Apps,
        models: Models,
        vectors: VectorIndex | None,
        embedder: Callable[[str], Embedder] = builtin_embedder,
        clock: Callable[[], float] = time.time,
        batch_size: int = DEFAULT_BATCH_SIZE,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        niceness: int = DEFAULT_NICENESS,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._apps = apps
        self._models = models
        self._vectors = vectors
        self.embedder = embedder  # modality -> the built-in embedder (replaceable for tests)
        self._clock = clock
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.niceness = niceness
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.workflows: WorkflowRuns | None = None  # runs an app's base workflow when it names a workflow

    # running

    def wake(self) -> None:
        """New work was stored: idle workers look now instead of at their next poll."""
        self._wake.set()

    def start(self, workers: int = 1, exclusive: bool = False) -> None:
        """Run `workers` threads until stop() (none without a vector index to write to).

        `exclusive`: this process is the only one using the metadata store (the data dir's
        SQLite), so inputs left IN_PROGRESS were held by a process that is gone: take them at
        once instead of after their lease."""
        if self._vectors is None or workers <= 0 or self._threads:
            return
        self._stopping.clear()
        for i in range(workers):
            thread = threading.Thread(
                target=self._loop, args=(exclusive and i == 0,), name=f"pellucid-indexer-{i}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def request_stop(self) -> None:
        """Take no new batch; a batch in progress is left unfinished (its claims lapse and it is
        embedded again by the next worker), so closing the runner routing under it marks nothing FAILED."""
        self._stopping.set()
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers and wait for them (before the stores close)."""
        self.request_stop()
        threads, self._threads = self._threads, []
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("indexer thread %s still running %.0f s after stop", thread.name, timeout)

    def _loop(self, reclaim: bool) -> None:
        if self.niceness and sys.platform == "linux":
            try:  # this thread only (and the threads it starts): Linux keeps niceness per thread
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.niceness)
            except OSError:
                log.info("cannot lower the indexer's CPU priority; it competes with calls as an equal")
        while not self._stopping.is_set():
            self._wake.clear()  # before looking: a wake-up during the batch is not lost
            try:
                claimed = self.run_once(reclaim)
            except Exception:  # a store away, a bug: logged, tried again after a poll interval
                log.exception("indexing failed; trying again in %.1f s", self.poll_seconds)
                claimed = 0
            reclaim = reclaim and claimed == self.batch_size  # until the left-over claims are taken
            if not claimed:
                self._wake.wait(self.poll_seconds)

    # one batch

    def run_once(self, reclaim: bool = False) -> int:
        """Claim up to batch_size inputs, embed them and record the outcome; returns how many were
        claimed. `reclaim` also takes inputs whose claim has not lapsed yet (see start)."""
        if self._vectors is None:
            return 0
        now = self._clock()
        # every live claim ends before now + lease_seconds: claiming "then" takes them all
        work = self._store.claim_unindexed(
            self.batch_size, now + self.lease_seconds if reclaim else now, self.lease_seconds
        )
        if not work:
            return 0
        groups: dict[tuple[str, str, str], list[IndexWork]] = defaultdict(list)
        for item in work:
            groups[(item.input.user_id, item.input.app_id, item.base_workflow)].append(item)
        results: list[tuple[int, IndexState, str]] = []
        for (user_id, app_id, workflow), items in groups.items():
            try:
                results.extend(self._index_app(user_id, app_id, workflow, items))
            except StoreUnavailable:
                raise  # transient: the claims lapse and the inputs are embedded again
            except Exception as exc:  # one app's failure must not hold other apps' inputs
                log.exception("indexing app %s/%s failed", user_id, app_id)
                reason = f"indexing failed: {type(exc).__name__}: {exc}"
                results.extend((item.input.seq, IndexState.FAILED, reason) for item in items)
            if self._stopping.is_set():
                return len(work)  # unfinished: the claims lapse, the next worker embeds them again
        self._store.finish_indexing(results)
        return len(work)

    def _index_app(
        self, user_id: str, app_id: str, workflow: str, items: list[IndexWork]
    ) -> list[tuple[int, IndexState, str]]:
        assert self._vectors is not None
        embedders = self._apps.embedders(user_id, app_id, workflow)
        results: list[tuple[int, IndexState, str]] = []
        by_key: dict[str, list[InputRecord]] = defaultdict(list)
        for item in items:
            key = embedders.get(item.input.input_type)
            if key is None:  # the workflow does not embed this type (any more): nothing to do
                results.append((item.input.seq, IndexState.READY, ""))
            else:
                by_key[key].append(item.input)
        written: dict[str, list[InputRecord]] = {}
        for key, records in by_key.items():
            outcomes = self._embed(user_id, app_id, key, records)
            space = space_name(user_id, app_id, key)
            failed = {o.seq: o.error for o in outcomes if o.vector is None}
            sized = [(o, o.vector.shape[-1]) for o in outcomes if o.vector is not None]
            # a model embedder may answer vectors of several lengths: the space takes one
            held = self._vectors.dimension(space)
            width = held if held is not None else (sized[0][1] if sized else 0)
            for o, length in sized:
                if length != width:
                    failed[o.seq] = f"the embedding has {length} dimensions, the app's vector space {width}"
            good = [o for o, length in sized if length == width]
            if good:
                try:
                    self._vectors.upsert(
                        space,
                        np.array([o.seq for o in good], dtype=np.int64),
                        np.stack([o.vector for o in good if o.vector is not None]).astype(np.float32, copy=False),
                    )
                    by_seq = {r.seq: r for r in records}
                    written[space] = [by_seq[o.seq] for o in good]
                except DimensionMismatch as exc:
                    failed.update({o.seq: f"the embedding does not fit the app's vector space: {exc}" for o in good})
                    good = []
            results.extend((o.seq, IndexState.READY, "") for o in good)
            results.extend((seq, IndexState.FAILED, message) for seq, message in failed.items())
        if written:
            self._forget_stale(user_id, app_id, workflow, written)
        return results

    def _forget_stale(self, user_id: str, app_id: str, workflow: str, written: dict[str, list[InputRecord]]) -> None:
        """Remove the vectors just written for inputs deleted meanwhile (their deleter may have
        removed its vectors before these were written), and those of spaces a workflow change
        dropped meanwhile (the change also put the inputs back to PENDING)."""
        assert self._vectors is not None
        ids = sorted({r.id for records in written.values() for r in records})
        app = self._store.get_app(user_id, app_id)
        if app is None:  # the app was deleted while its inputs were embedded: nothing written may stay
            for space in written:
                self._vectors.drop_space(space)
            return
        current = self._store.input_seqs(user_id, app_id, ids)
        live_spaces = set(self._apps.spaces(app)) if app is not None and app.base_workflow != workflow else set(written)
        for space, records in written.items():
            stale = [r.seq for r in records if current.get(r.id) != r.seq or space not in live_spaces]
            if stale:
                self._vectors.remove(space, np.array(stale, dtype=np.int64))

    # embedding

    def _embed(self, user_id: str, app_id: str, key: str, records: list[InputRecord]) -> list[Embedded]:
        contents: list[bytes | None] = []
        problems: dict[int, str] = {}
        for i, record in enumerate(records):
            content, problem = self._content(record)
            contents.append(content)
            if problem:
                problems[i] = problem
        ready = [i for i in range(len(records)) if i not in problems]
        vectors: dict[int, npt.NDArray[np.float32]] = {}
        if ready:
            batch = [contents[i] or b"" for i in ready]
            if key.startswith(MODEL_EMBEDDER_PREFIX):
                found, errors = self._embed_with_model(
                    user_id, app_id, key[len(MODEL_EMBEDDER_PREFIX) :], [records[i] for i in ready], batch
                )
            elif key.startswith(WORKFLOW_EMBEDDER_PREFIX) and self.workflows is not None:
                found, errors = {}, {}
                inputs = [
                    PredictInput(records[i].id, (Media(records[i].input_type, data, mime=records[i].media_mime),))
                    for i, data in zip(ready, batch, strict=True)
                ]
                owner = Principal(user_id=user_id, is_admin=False, token_id=INDEXER_TOKEN_ID)
                workflow_id = key.removeprefix(WORKFLOW_EMBEDDER_PREFIX)
                for j, (vector, why) in enumerate(
                    self.workflows.embeddings(owner, user_id, app_id, workflow_id, inputs, self.lease_seconds / 2)
                ):
                    if vector is None:
                        errors[j] = why
                    else:
                        found[j] = vector
            else:
                found, errors = self._embed_builtin(key, batch)
            for j, i in enumerate(ready):
                if j in found:
                    vectors[i] = found[j]
                else:
                    problems[i] = errors.get(j, "the embedder returned no vector")
        return [Embedded(r.seq, vectors.get(i), problems.get(i, "")) for i, r in enumerate(records)]

    def _content(self, record: InputRecord) -> tuple[bytes | None, str]:
        """The bytes to embed (text: UTF-8), or why there are none."""
        if record.input_type == "text":
            if record.text:
                return record.text.encode("utf-8", "surrogatepass"), ""
            return None, "the input has no text to embed"
        if not record.media_sha256:
            return None, f"the {record.input_type}'s bytes were never stored (only its URL): upload the bytes"
        data = self._blobs.get(record.media_sha256)
        if data is None:
            return None, f"the {record.input_type}'s bytes are not in the blob store any more: upload it again"
        return data, ""

    def _embed_builtin(
        self, modality: str, items: list[bytes]
    ) -> tuple[dict[int, npt.NDArray[np.float32]], dict[int, str]]:
        try:
            embedder = self.embedder(modality)
        except EmbedderUnavailable as exc:
            return {}, dict.fromkeys(range(len(items)), str(exc))
        try:
            batch = embedder.embed(items)
        except Exception as exc:  # noqa: BLE001 - the batch as a whole failed: embed one by one, so one bad input fails alone
            if len(items) == 1:
                return {}, {0: f"the {modality} embedder failed on this input: {exc}"}
            found: dict[int, npt.NDArray[np.float32]] = {}
            errors: dict[int, str] = {}
            for i, item in enumerate(items):
                one, error = self._embed_builtin(modality, [item])
                if 0 in one:
                    found[i] = one[0]
                else:
                    errors[i] = error.get(0, f"the {modality} embedder failed on this input")
            return found, errors
        found = {i: batch.vectors[i] for i in range(len(items)) if i not in batch.errors}
        return found, dict(batch.errors)

    def _embed_with_model(
        self, user_id: str, app_id: str, model_id: str, records: Sequence[InputRecord], items: list[bytes]
    ) -> tuple[dict[int, npt.NDArray[np.float32]], dict[int, str]]:
        """The app's model on its runner: output i's first embedding is input i's vector."""
        request = PredictRequest(
            user_id=user_id,
            app_id=app_id,
            model_id=model_id,
            inputs=tuple(
                PredictInput(r.id, (Media(r.input_type, data, mime=r.media_mime),)) for r, data in zip(records, items)
            ),
            deadline_seconds=self.lease_seconds / 2,
        )
        owner = Principal(user_id=user_id, is_admin=False, token_id=INDEXER_TOKEN_ID)
        try:
            result = self._models.predict(owner, request)
        except EngineError as exc:
            message = f"model {model_id!r} could not embed it: {exc.message}"
            return {}, dict.fromkeys(range(len(items)), message)
        by_id = {o.input_id: o for o in result.outputs if o.input_id}
        found: dict[int, npt.NDArray[np.float32]] = {}
        errors: dict[int, str] = {}
        for i, record in enumerate(records):
            output = by_id.get(record.id) or (result.outputs[i] if i < len(result.outputs) else None)
            if output is None:
                errors[i] = f"model {model_id!r} returned no output for this input"
                continue
            vector, why = output_embedding(output, "this input")
            if vector is None:
                errors[i] = f"model {model_id!r} {why}"
            else:
                found[i] = vector
        return found, errors


__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_LEASE_SECONDS", "DEFAULT_POLL_SECONDS", "Indexer"]
