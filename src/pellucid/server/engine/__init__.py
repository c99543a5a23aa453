"""The engine: ids, validation, permissions and the rules of every resource.

It takes and returns plain records (pellucid.server.records); it never sees a
protobuf message or a gRPC context.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pellucid.server.engine.access import Principal
from pellucid.server.engine.algorithm_data import AlgorithmData
from pellucid.server.engine.algorithms import Algorithms
from pellucid.server.engine.apps import Apps
from pellucid.server.engine.concepts import Concepts
from pellucid.server.engine.datasets import Datasets
from pellucid.server.engine.deployments import Deployments
from pellucid.server.engine.evaluations import Evaluations
from pellucid.server.engine.fetch import UrlFetcher
from pellucid.server.engine.hosted_data import HostedData
from pellucid.server.engine.in_flight import PredictsInFlight
from pellucid.server.engine.indexing import Indexer
from pellucid.server.engine.inputs import (
    DEFAULT_BLOB_GRACE_SECONDS,
    DEFAULT_MAX_BLOB_BYTES,
    Inputs,
)
from pellucid.server.engine.models import Models
from pellucid.server.engine.modules import Modules
from pellucid.server.engine.operators import register_operators
from pellucid.server.engine.predict import WorkCodec
from pellucid.server.engine.requests import RequestLog
from pellucid.server.engine.routing import Router
from pellucid.server.engine.runners import Runners
from pellucid.server.engine.search import Search
from pellucid.server.engine.training import Training
from pellucid.server.engine.users import Users
from pellucid.server.engine.workflow_deployments import WorkflowTargets
from pellucid.server.engine.workflow_runs import WorkflowRuns
from pellucid.server.engine.workflows import Workflows
from pellucid.server.storage import MetadataStore
from pellucid.server.storage.blobs import BlobStore, CollectionReport
from pellucid.server.storage.queue import WorkQueue
from pellucid.server.storage.registry import open_vector_index, open_work_queue
from pellucid.server.storage.vectors import VectorIndex


class Engine:
    """Every resource's rules, over one set of stores."""

    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        clock: Callable[[], float] = time.time,
        allow_private_urls: bool = False,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        blob_grace_seconds: float = DEFAULT_BLOB_GRACE_SECONDS,
        queue: WorkQueue | None = None,
        work_codec: WorkCodec | None = None,
        router_clock: Callable[[], float] = time.time,
        replica_id: str = "",
        vectors: VectorIndex | None = None,
        max_data_file_bytes: int = 0,
    ) -> None:
        """`queue` defaults to the in-memory one; `work_codec` is the runner wire format that the
        runner-facing adapter provides (without one, predictions are refused); `vectors` (the
        search embeddings) defaults to an in-memory index. The engine closes what it is given."""
        self.store = store
        self.blobs = blobs
        # blobs stored before they had owners get them from the inputs that hold them (once)
        blobs.backfill_owners(store.blob_references)
        self.users = Users(store, clock)
        self.vectors = vectors if vectors is not None else open_vector_index("memory:", None)
        self.apps = Apps(store, clock, self.vectors)
        self.concepts = Concepts(store, self.apps, clock)
        self.datasets = Datasets(store, self.apps, clock)
        self.inputs = Inputs(
            store,
            blobs,
            self.apps,
            clock,
            UrlFetcher(allow_private=allow_private_urls),
            max_blob_bytes=max_blob_bytes,
            blob_grace_seconds=blob_grace_seconds,
        )
        self.requests = RequestLog(store, clock, replica_id)
        self.queue = queue if queue is not None else open_work_queue("memory:", router_clock)
        self.router = Router(self.queue, router_clock)
        self.models = Models(store, self.apps, self.router, clock, work_codec)
        register_operators(self.models.local, UrlFetcher(allow_private=allow_private_urls))
        self.runners = Runners(store, self.router, clock)
        self.modules = Modules(store, self.apps, clock)
        # embeds inputs behind ingestion; server/runtime.py starts its workers
        self.indexer = Indexer(store, blobs, self.apps, self.models, self.vectors)
        self.inputs.on_pending = self.apps.on_reindex = self.indexer.wake
        self.search = Search(store, self.apps, self.models, self.vectors, UrlFetcher(allow_private=allow_private_urls))
        # model evaluations over labelled datasets, run as jobs; server/runtime.py starts their workers
        self.evaluations = Evaluations(store, blobs, self.datasets, self.models)
        self.algorithms = Algorithms(store, self.models, clock)
        # trains model versions in server jobs and registers its trainable types; runtime.py starts its workers
        self.training = Training(store, blobs, self.models, self.vectors, clock)
        self.workflows = Workflows(store, self.apps, self.models, clock)
        self.workflow_runs = WorkflowRuns(self.workflows, self.models)
        self.models.on_delete = self.workflows.model_deleted  # deprecates the workflow versions pinning it
        self.apps.on_delete = self.workflows.app_deleted  # and those pinning any model of a deleted app
        self.indexer.workflows = self.search.workflows = self.workflow_runs  # a base_workflow naming a workflow
        self.hosted_data = HostedData(store, blobs, clock, max_data_file_bytes)  # data:// (issue #12)
        self.deployments = Deployments(store, self.apps, self.models, self.users, clock)
        self.deployments.workflows = WorkflowTargets(store, self.models, self.workflows, self.workflow_runs)
        self.predicts_in_flight = PredictsInFlight()  # one per-user cap over gRPC, HTTP and OIP REST
        algorithm_data = AlgorithmData(store, clock)  # who reads data from inside an algorithm call
        self.hosted_data.algorithm_of, self.hosted_data.resolve_algo = algorithm_data.caller, algorithm_data.resolve

    def collect_blob_garbage(self, grace_seconds: float | None = None) -> CollectionReport:
        """Delete unreferenced blobs and compact their space now (the server also runs it periodically)."""
        return self.inputs.collect_garbage(grace_seconds)

    def close(self) -> None:
        self.evaluations.stop()  # first, with the indexer: their workers use every store
        self.indexer.stop()  # first: its workers use every store
        self.training.stop()
        self.deployments.close()
        self.inputs.close()
        self.models.local.close()
        self.blobs.close()  # first: a garbage collection in progress stops while the metadata store still answers
        self.router.close()
        self.vectors.close()  # persists what it holds in memory (handlers are drained by now)
        self.store.close()


__all__ = ["Engine", "Principal"]
