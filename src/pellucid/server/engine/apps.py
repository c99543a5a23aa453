"""Apps: a user's namespaces for datasets, inputs, concepts and models.

An app's base workflow decides what the server embeds (engine/spaces.py): a built-in one
("Empty", "Text", "Language-Understanding", "Universal") or the id of a model in the app whose
runner returns embeddings, for the input types the model declares as its input fields.
Apps stored before workflows existed hold "" (read as "Empty") or another string: a value
that is neither built in nor a model of the app embeds nothing, as "Empty" does.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pellucid.server.engine.access import Principal, own_namespace, visible_namespace
from pellucid.server.engine.errors import AlreadyExists, InvalidArgument, NotFound
from pellucid.server.engine.ids import validate_id
from pellucid.server.engine.paging import PageRequest, next_token, to_query
from pellucid.server.engine.spaces import (
    BUILTIN_WORKFLOWS,
    DEFAULT_BASE_WORKFLOW,
    MODEL_EMBEDDER_PREFIX,
    WORKFLOW_EMBEDDER_PREFIX,
    space_name,
)
from pellucid.server.engine.validation import (
    MAX_DESCRIPTION_LENGTH,
    MAX_NAME_LENGTH,
    check_metadata,
    check_text,
)
from pellucid.server.records import AppRecord, IndexState, InputFilter, InputRecord
from pellucid.server.storage import Conflict, MetadataStore
from pellucid.server.storage.vectors import VectorIndex

PATCHABLE_FIELDS = ("name", "description", "base_workflow", "metadata")
METADATA_ACTIONS = ("merge", "overwrite", "remove")


EMPTY_WORKFLOW = "Empty"
MAX_FAILED_SHOWN = 10


@dataclass(frozen=True)
class IndexStatus:
    """How far the server has embedded an app's inputs (GetAppIndexStatus)."""

    base_workflow: str  # the workflow the server runs ("Empty" for a legacy value)
    embedded_types: tuple[str, ...]
    counts: dict[IndexState, int]
    failed: tuple[InputRecord, ...] = ()  # up to MAX_FAILED_SHOWN, with their index_message


class Apps:
    def __init__(
        self,
        store: MetadataStore,
        clock: Callable[[], float] = time.time,
        vectors: VectorIndex | None = None,
        on_reindex: Callable[[], None] | None = None,
    ) -> None:
        """`vectors`: where the app's embeddings live (its spaces are dropped with the app or
        its workflow); `on_reindex` wakes the indexer when a workflow change re-embeds inputs."""
        self._store = store
        self._clock = clock
        self.vectors = vectors
        self.on_reindex = on_reindex
        # told (the app) after a delete: workflows elsewhere deprecate the pins of its models
        self.on_delete: Callable[[AppRecord], None] | None = None

    # base workflows

    def embedders(self, user_id: str, app_id: str, base_workflow: str) -> dict[str, str]:
        """Input type -> embedder key ("text", "image" or "model:<id>") of a base workflow in an
        app: what the server embeds, and the vector space each type's vectors go to."""
        if not base_workflow or base_workflow in BUILTIN_WORKFLOWS:
            return dict(BUILTIN_WORKFLOWS.get(base_workflow or EMPTY_WORKFLOW, {}))
        model = self._store.get_model(user_id, app_id, base_workflow)
        if model is None:  # a workflow of the app, a value stored before workflows were checked, or its model deleted
            kinds = self.workflow_input_kinds(user_id, app_id, base_workflow)
            return {kind: WORKFLOW_EMBEDDER_PREFIX + base_workflow for kind in kinds}
        return {kind: MODEL_EMBEDDER_PREFIX + model.id for kind in model.input_fields}

    def workflow_input_kinds(self, user_id: str, app_id: str, workflow_id: str) -> tuple[str, ...]:
        """The input types a workflow of the app reads (its root nodes' models' input_fields);
        () if there is no such workflow."""
        version = self._store.get_workflow_version(user_id, app_id, workflow_id)
        if version is None:
            return ()
        kinds: set[str] = set()
        for node in version.nodes:
            if not node.node_inputs:
                model = self._store.get_model(node.model_user_id, node.model_app_id, node.model_id)
                kinds.update(model.input_fields if model is not None else ())
        return tuple(sorted(kinds))

    def workflow_name(self, app: AppRecord) -> str:
        """The workflow the server runs for the app: its base_workflow, or "Empty" for a legacy
        value that is neither built in nor one of the app's models."""
        if app.base_workflow in BUILTIN_WORKFLOWS:
            return app.base_workflow
        if app.base_workflow and self._store.get_model(app.user_id, app.id, app.base_workflow) is not None:
            return app.base_workflow
        if app.base_workflow and self._store.get_workflow(app.user_id, app.id, app.base_workflow) is not None:
            return app.base_workflow
        return EMPTY_WORKFLOW

    def spaces(self, app: AppRecord, embedders: dict[str, str] | None = None) -> builtins.list[str]:
        """The names of the app's vector spaces (one per embedder of its workflow)."""
        keys = (embedders if embedders is not None else self.embedders(app.user_id, app.id, app.base_workflow)).values()
        return [space_name(app.user_id, app.id, key) for key in dict.fromkeys(keys)]

    def forget_vectors(self, app: AppRecord, seqs: builtins.list[int]) -> None:
        """Remove these inputs' vectors from the app's spaces (the inputs were deleted)."""
        if self.vectors is None or not seqs:
            return
        keys = np.array(sorted(seqs), dtype=np.int64)
        for space in self.spaces(app):
            self.vectors.remove(space, keys)

    def _check_workflow(self, user_id: str, app_id: str, value: str) -> str:
        """A built-in workflow or the id of a model of the app (that declares its input fields)."""
        check_text(value, "base_workflow", MAX_NAME_LENGTH)
        if value in BUILTIN_WORKFLOWS:
            return value
        accepted = ", ".join(repr(w) for w in BUILTIN_WORKFLOWS)
        model = self._store.get_model(user_id, app_id, value) if value else None
        if model is None and value and self._store.get_workflow(user_id, app_id, value) is not None:
            if not self.workflow_input_kinds(user_id, app_id, value):
                raise InvalidArgument(
                    f"workflow {value!r} does not say which inputs it embeds: the models of its first nodes "
                    "declare no input_fields (create them with input_fields, e.g. ['image'] or ['text'])",
                    reason="MODEL_WITHOUT_INPUT_FIELDS",
                    field="base_workflow",
                )
            return value
        if model is None:
            raise InvalidArgument(
                f"base_workflow {value!r} is neither a built-in workflow ({accepted}) nor the id of a model "
                f"or workflow in app {app_id!r} (to embed with your own model: create the app, then the model, "
                "then patch the app's base_workflow to the model's id)",
                reason="UNKNOWN_WORKFLOW",
                field="base_workflow",
            )
        if not model.input_fields:
            raise InvalidArgument(
                f"model {model.id!r} declares no input_fields, so pellucid cannot tell which inputs it embeds: "
                "create it with input_fields (e.g. ['image'] or ['text'])",
                reason="MODEL_WITHOUT_INPUT_FIELDS",
                field="base_workflow",
            )
        return value

    def create(
        self,
        principal: Principal,
        user_id: str,
        app_id: str,
        *,
        name: str = "",
        description: str = "",
        base_workflow: str = DEFAULT_BASE_WORKFLOW,
        metadata: dict[str, Any] | None = None,
    ) -> AppRecord:
        """An empty base_workflow (a caller that sets none) is the default, "Language-Understanding"."""
        owner = own_namespace(principal, user_id, "create apps in the namespace")
        validate_id(app_id, "app_id")
        check_text(name, "name", MAX_NAME_LENGTH)
        check_text(description, "description", MAX_DESCRIPTION_LENGTH)
        base_workflow = self._check_workflow(owner, app_id, base_workflow or DEFAULT_BASE_WORKFLOW)
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
        return _read(app)

    def list(
        self, principal: Principal, user_id: str, page: PageRequest, text: str = ""
    ) -> tuple[builtins.list[AppRecord], str]:
        owner = own_namespace(principal, user_id, "list the apps")
        check_text(text, "query", MAX_NAME_LENGTH)
        scope = f"apps:{owner}:{text}"
        result = self._store.list_apps(owner, text, to_query(page, scope))
        return [_read(a) for a in result.items], next_token(result, scope)

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
        for field in ("name", "description"):
            if field in changes:
                limit = MAX_DESCRIPTION_LENGTH if field == "description" else MAX_NAME_LENGTH
                updated[field] = check_text(changes[field], field, limit)
        if "base_workflow" in changes:
            given = changes["base_workflow"]
            updated["base_workflow"] = self._check_workflow(
                app.user_id, app.id, given if isinstance(given, str) else ""
            )
        if "metadata" in changes:
            updated["metadata"] = check_metadata(merge_metadata(app.metadata, changes["metadata"], metadata_action))
        old_spaces = self.spaces(app) if "base_workflow" in changes else []
        app = replace(app, **updated, modified_at=self._clock())
        self._store.update_app(app)
        if "base_workflow" in changes:
            self._reindex(app, old_spaces)
        return app

    def reindex(self, app: AppRecord) -> None:
        """Re-embed every input of the app with its base workflow as it stands (its spaces dropped)."""
        self._reindex(app, self.spaces(app))

    def _reindex(self, app: AppRecord, old_spaces: builtins.list[str]) -> None:
        """Naming base_workflow in a patch re-embeds the app's inputs (also with the value it
        had: that retries failed inputs, or re-runs a model whose runner changed): the old
        vectors go, the inputs of the types the workflow embeds wait for the indexer again.

        The spaces are dropped before the reset: a worker still embedding under the old
        workflow finds its inputs PENDING again (the reset wins) and re-embeds them."""
        for space in old_spaces:
            if self.vectors is not None:
                self.vectors.drop_space(space)
        embedded = tuple(sorted(self.embedders(app.user_id, app.id, app.base_workflow)))
        if self._store.reset_indexing(app.user_id, app.id, embedded) and self.on_reindex is not None:
            self.on_reindex()

    def index_status(self, principal: Principal, user_id: str, app_id: str) -> IndexStatus:
        """How many of the app's inputs are embedded, wait or failed, with a few failed ones."""
        app = self.get(principal, user_id, app_id)
        counts = self._store.index_counts(app.user_id, app.id)
        failed: tuple[InputRecord, ...] = ()
        if counts.get(IndexState.FAILED):
            seqs = self._store.select_inputs(
                app.user_id, app.id, [InputFilter(status_codes=(IndexState.FAILED,))], limit=MAX_FAILED_SHOWN
            )
            found = self._store.inputs_by_seq(app.user_id, app.id, seqs)
            failed = tuple(found[s] for s in seqs if s in found)
        return IndexStatus(
            base_workflow=self.workflow_name(app),
            embedded_types=tuple(sorted(self.embedders(app.user_id, app.id, app.base_workflow))),
            counts={state: counts.get(state, 0) for state in IndexState},
            failed=failed,
        )

    def delete(self, principal: Principal, user_id: str, app_id: str) -> None:
        app = self.get(principal, user_id, app_id)
        spaces = self.spaces(app)
        if not self._store.delete_app(app.user_id, app.id):
            raise NotFound(f"app {app_id!r} of user {app.user_id!r} not found", reason="APP_NOT_FOUND", field="app_id")
        if self.on_delete is not None:
            self.on_delete(app)
        if self.vectors is not None:
            for space in spaces:
                self.vectors.drop_space(space)


def _read(app: AppRecord) -> AppRecord:
    """An app stored before base workflows existed (base_workflow "") reads as "Empty"."""
    return app if app.base_workflow else replace(app, base_workflow=EMPTY_WORKFLOW)


def merge_metadata(current: dict[str, Any], given: dict[str, Any], action: str) -> dict[str, Any]:
    """merge sets the given keys, overwrite replaces everything, remove deletes the given keys."""
    if action == "overwrite":
        return dict(given)
    if action == "remove":
        return {k: v for k, v in current.items() if k not in given}
    return {**current, **given}
