"""Datasets and their versions."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from typing import Any

from pellucid.server.engine.access import Principal
from pellucid.server.engine.apps import Apps
from pellucid.server.engine.errors import AlreadyExists, NotFound
from pellucid.server.engine.ids import new_id, validate_id
from pellucid.server.engine.paging import PageRequest, next_token, to_query
from pellucid.server.engine.validation import (
    MAX_DESCRIPTION_LENGTH,
    check_metadata,
    check_text,
)
from pellucid.server.records import DatasetRecord, DatasetStats, DatasetVersionRecord, InputFilter
from pellucid.server.storage import Conflict, MetadataStore


class Datasets:
    def __init__(self, store: MetadataStore, apps: Apps, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._apps = apps
        self._clock = clock

    def create(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        dataset_id: str,
        description: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> DatasetRecord:
        app = self._apps.get(principal, user_id, app_id)
        validate_id(dataset_id, "dataset_id")
        check_text(description, "description", MAX_DESCRIPTION_LENGTH)
        now = self._clock()
        dataset = DatasetRecord(
            user_id=app.user_id,
            app_id=app.id,
            id=dataset_id,
            created_at=now,
            modified_at=now,
            description=description,
            metadata=check_metadata(metadata or {}),
        )
        try:
            self._store.insert_dataset(dataset)
        except Conflict:
            raise AlreadyExists(
                f"dataset {dataset_id!r} already exists in app {app.id!r}", reason="DATASET_EXISTS", field="dataset_id"
            ) from None
        return dataset

    def get(self, principal: Principal, user_id: str, app_id: str, dataset_id: str) -> DatasetRecord:
        app = self._apps.get(principal, user_id, app_id)
        validate_id(dataset_id, "dataset_id")
        dataset = self._store.get_dataset(app.user_id, app.id, dataset_id)
        if dataset is None:
            raise NotFound(
                f"dataset {dataset_id!r} not found in app {app.id!r}: create it first",
                reason="DATASET_NOT_FOUND",
                field="dataset_id",
            )
        return dataset

    def list(
        self, principal: Principal, user_id: str, app_id: str, page: PageRequest
    ) -> tuple[builtins.list[DatasetRecord], str]:
        app = self._apps.get(principal, user_id, app_id)
        scope = f"datasets:{app.user_id}:{app.id}"
        result = self._store.list_datasets(app.user_id, app.id, to_query(page, scope))
        return result.items, next_token(result, scope)

    def delete(self, principal: Principal, user_id: str, app_id: str, dataset_id: str, delete_inputs: bool) -> None:
        dataset = self.get(principal, user_id, app_id, dataset_id)
        members: builtins.list[int] = []
        if delete_inputs and self._apps.vectors is not None:  # the inputs that go take their vectors along
            members = self._store.select_inputs(
                dataset.user_id, dataset.app_id, [InputFilter(dataset_ids=(dataset.id,))]
            )
        if not self._store.delete_dataset(dataset.user_id, dataset.app_id, dataset.id, delete_inputs):
            raise NotFound(f"dataset {dataset_id!r} not found in app {app_id!r}", field="dataset_id")
        if members:
            kept = set(self._store.select_inputs(dataset.user_id, dataset.app_id, []))  # those in other datasets
            app = self._apps.get(principal, user_id, app_id)
            self._apps.forget_vectors(app, [seq for seq in members if seq not in kept])

    def stats(
        self, principal: Principal, user_id: str, app_id: str, dataset_id: str, version_id: str = ""
    ) -> DatasetStats:
        dataset = self.get(principal, user_id, app_id, dataset_id)
        try:
            return self._store.dataset_stats(dataset.user_id, dataset.app_id, dataset.id, version_id)
        except LookupError as exc:
            raise NotFound(str(exc), field="version_id") from None

    def create_version(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        dataset_id: str,
        version_id: str = "",
        description: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> DatasetVersionRecord:
        dataset = self.get(principal, user_id, app_id, dataset_id)
        version_id = version_id or new_id()
        validate_id(version_id, "version_id")
        check_text(description, "description", MAX_DESCRIPTION_LENGTH)
        version = DatasetVersionRecord(
            user_id=dataset.user_id,
            app_id=dataset.app_id,
            dataset_id=dataset.id,
            id=version_id,
            created_at=self._clock(),
            description=description,
            metadata=check_metadata(metadata or {}),
        )
        try:
            return self._store.insert_dataset_version(version)
        except Conflict:
            raise AlreadyExists(
                f"version {version_id!r} of dataset {dataset_id!r} already exists", field="version_id"
            ) from None

    def list_versions(
        self, principal: Principal, user_id: str, app_id: str, dataset_id: str, page: PageRequest
    ) -> tuple[builtins.list[DatasetVersionRecord], str]:
        dataset = self.get(principal, user_id, app_id, dataset_id)
        scope = f"versions:{dataset.user_id}:{dataset.app_id}:{dataset.id}"
        result = self._store.list_dataset_versions(dataset.user_id, dataset.app_id, dataset.id, to_query(page, scope))
        return result.items, next_token(result, scope)

    def delete_version(self, principal: Principal, user_id: str, app_id: str, dataset_id: str, version_id: str) -> None:
        dataset = self.get(principal, user_id, app_id, dataset_id)
        validate_id(version_id, "version_id")
        if not self._store.delete_dataset_version(dataset.user_id, dataset.app_id, dataset.id, version_id):
            raise NotFound(f"version {version_id!r} of dataset {dataset_id!r} not found", field="version_id")
