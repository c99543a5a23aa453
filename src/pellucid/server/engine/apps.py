"""Apps: a user's namespaces for datasets, inputs, concepts and models."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pellucid.server.engine.access import Principal, own_namespace, visible_namespace
from pellucid.server.engine.errors import AlreadyExists, InvalidArgument, NotFound
from pellucid.server.engine.ids import validate_id
from pellucid.server.engine.paging import PageRequest, next_token, to_query
from pellucid.server.engine.validation import (
    MAX_DESCRIPTION_LENGTH,
    MAX_NAME_LENGTH,
    check_metadata,
    check_text,
)
from pellucid.server.records import AppRecord
from pellucid.server.storage import AppStore, Conflict

PATCHABLE_FIELDS = ("name", "description", "base_workflow", "metadata")
METADATA_ACTIONS = ("merge", "overwrite", "remove")


class Apps:
    def __init__(self, store: AppStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def create(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        *,
        name: str = "",
        description: str = "",
        base_workflow: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> AppRecord:
        owner = own_namespace(principal, user_id, "create apps in the namespace")
        validate_id(app_id, "app_id")
        check_text(name, "name", MAX_NAME_LENGTH)
        check_text(description, "description", MAX_DESCRIPTION_LENGTH)
        check_text(base_workflow, "base_workflow", MAX_NAME_LENGTH)
        now = self._clock()
        app = AppRecord(
            user_id=owner,
            id=app_id,
            created_at=now,
            modified_at=now,
            name=name or app_id,
            description=description,
            base_workflow=base_workflow,
            metadata=check_metadata(metadata or {}),
        )
        try:
            self._store.insert_app(app)
        except Conflict:
            raise AlreadyExists(
                f"app {app_id!r} already exists for user {owner!r}: pick another id or delete that app first",
                reason="APP_EXISTS",
                field="app_id",
            ) from None
        return app

    def get(self, principal: Principal, user_id: str, app_id: str) -> AppRecord:
        """The app, if it exists and the caller may see it; NOT_FOUND alike in both other cases."""
        owner, visible = visible_namespace(principal, user_id)
        validate_id(app_id, "app_id")
        app = self._store.get_app(owner, app_id) if visible else None
        if app is None:
            raise NotFound(f"app {app_id!r} of user {owner!r} not found", reason="APP_NOT_FOUND", field="app_id")
        return app

    def list(
        self, principal: Principal, user_id: str, page: PageRequest, text: str = ""
    ) -> tuple[builtins.list[AppRecord], str]:
        owner = own_namespace(principal, user_id, "list the apps")
        check_text(text, "query", MAX_NAME_LENGTH)
        scope = f"apps:{owner}:{text}"
        result = self._store.list_apps(owner, text, to_query(page, scope))
        return result.items, next_token(result, scope)

    def patch(
        self, principal: Principal, user_id: str, app_id: str, changes: dict[str, Any], metadata_action: str = "merge"
    ) -> AppRecord:
        unknown = sorted(set(changes) - set(PATCHABLE_FIELDS))
        if unknown:
            raise InvalidArgument(
                f"cannot patch {', '.join(unknown)}: patchable fields are {', '.join(PATCHABLE_FIELDS)}",
                field="update_mask",
            )
        if not changes:
            raise InvalidArgument(f"nothing to patch: name one of {', '.join(PATCHABLE_FIELDS)}", field="update_mask")
        if metadata_action not in METADATA_ACTIONS:
            raise InvalidArgument(f"metadata action {metadata_action!r}: use one of {', '.join(METADATA_ACTIONS)}")
        app = self.get(principal, user_id, app_id)
        updated: dict[str, Any] = {}
        for field in ("name", "description", "base_workflow"):
            if field in changes:
                limit = MAX_DESCRIPTION_LENGTH if field == "description" else MAX_NAME_LENGTH
                updated[field] = check_text(changes[field], field, limit)
        if "metadata" in changes:
            updated["metadata"] = check_metadata(merge_metadata(app.metadata, changes["metadata"], metadata_action))
        app = replace(app, **updated, modified_at=self._clock())
        self._store.update_app(app)
        return app

    def delete(self, principal: Principal, user_id: str, app_id: str) -> None:
        app = self.get(principal, user_id, app_id)
        if not self._store.delete_app(app.user_id, app.id):
            raise NotFound(f"app {app_id!r} of user {app.user_id!r} not found", reason="APP_NOT_FOUND", field="app_id")


def merge_metadata(current: dict[str, Any], given: dict[str, Any], action: str) -> dict[str, Any]:
    """merge sets the given keys, overwrite replaces everything, remove deletes the given keys."""
    if action == "overwrite":
        return dict(given)
    if action == "remove":
        return {k: v for k, v in current.items() if k not in given}
    return {**current, **given}
