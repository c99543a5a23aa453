"""Stores: where state lives. They store and fetch; rules and permissions live in the engine."""

from pellucid.server.storage.base import (
    ClaimOutcome,
    Conflict,
    MetadataStore,
    open_metadata_store,
)

__all__ = ["ClaimOutcome", "Conflict", "MetadataStore", "open_metadata_store"]
