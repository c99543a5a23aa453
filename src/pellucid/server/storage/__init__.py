"""Stores: where state lives. They store and fetch; rules and permissions live in the engine."""

from pellucid.server.storage.base import (
    AnnotationResult,
    AppStore,
    ClaimOutcome,
    Conflict,
    HostedDataStore,
    IngestResult,
    InputStore,
    MetadataStore,
    ModelStore,
    ModuleStore,
    RequestLogStore,
    StoreUnavailable,
    UserStore,
    WorkflowStore,
)
from pellucid.server.storage.registry import open_metadata_store

__all__ = [
    "AnnotationResult",
    "AppStore",
    "ClaimOutcome",
    "Conflict",
    "HostedDataStore",
    "IngestResult",
    "InputStore",
    "MetadataStore",
    "ModelStore",
    "ModuleStore",
    "RequestLogStore",
    "StoreUnavailable",
    "UserStore",
    "WorkflowStore",
    "open_metadata_store",
]
