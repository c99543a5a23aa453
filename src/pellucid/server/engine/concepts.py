"""Concepts: the labels of an app."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from dataclasses import dataclass

from pellucid.server.engine.access import Principal
from pellucid.server.engine.apps import Apps
from pellucid.server.engine.errors import AlreadyExists, EngineError, NotFound
from pellucid.server.engine.ids import validate_id
from pellucid.server.engine.paging import PageRequest, next_token, to_query
from pellucid.server.engine.validation import MAX_NAME_LENGTH, check_batch, check_text
from pellucid.server.records import ConceptRecord
from pellucid.server.storage import AppStore


@dataclass(frozen=True)
class ConceptResult:
    """The outcome of one item of a batch: the concept, or why it was not created."""

    concept: ConceptRecord | None
    error: EngineError | None = None


class Concepts:
    def __init__(self, store: AppStore, apps: Apps, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._apps = apps
        self._clock = clock

    def create(
        self, principal: Principal, user_id: str, app_id: str, items: builtins.list[tuple[str, str]]
    ) -> builtins.list[ConceptResult]:
        """Create (id, name) pairs; each item succeeds or fails on its own."""
        check_batch(len(items), "concepts")
        app = self._apps.get(principal, user_id, app_id)
        now = self._clock()
        results: builtins.list[ConceptResult | None] = [None] * len(items)
        to_insert: builtins.list[tuple[int, ConceptRecord]] = []
        seen: set[str] = set()
        for i, (concept_id, name) in enumerate(items):
            try:
                validate_id(concept_id, f"concepts[{i}].id")
                check_text(name, f"concepts[{i}].name", MAX_NAME_LENGTH)
                if concept_id in seen:
                    raise AlreadyExists(
                        f"concept {concept_id!r} appears more than once in this request", field=f"concepts[{i}].id"
                    )
            except EngineError as exc:
                results[i] = ConceptResult(None, exc)
                continue
            seen.add(concept_id)
            to_insert.append((i, ConceptRecord(app.user_id, app.id, concept_id, name or concept_id, now)))
        if to_insert:
            try:
                inserted = self._store.insert_concepts([c for _, c in to_insert])
            except LookupError:
                raise NotFound(f"app {app.id!r} of user {app.user_id!r} not found", field="app_id") from None
            for (i, concept), new in zip(to_insert, inserted):
                if new:
                    results[i] = ConceptResult(concept)
                else:
                    results[i] = ConceptResult(
                        None,
                        AlreadyExists(
                            f"concept {concept.id!r} already exists in app {app.id!r}",
                            reason="CONCEPT_EXISTS",
                            field=f"concepts[{i}].id",
                        ),
                    )
        return [r for r in results if r is not None]

    def rename(
        self, principal: Principal, user_id: str, app_id: str, items: builtins.list[tuple[str, str]]
    ) -> builtins.list[ConceptResult]:
        """Give existing concepts new names; each (id, name) succeeds or fails on its own."""
        check_batch(len(items), "concepts")
        app = self._apps.get(principal, user_id, app_id)
        results: builtins.list[ConceptResult | None] = [None] * len(items)
        names: dict[str, str] = {}
        for i, (concept_id, name) in enumerate(items):
            try:
                validate_id(concept_id, f"concepts[{i}].id")
                check_text(name, f"concepts[{i}].name", MAX_NAME_LENGTH)
                names[concept_id] = name or concept_id
            except EngineError as exc:
                results[i] = ConceptResult(None, exc)
        renamed = {c.id: c for c in self._store.rename_concepts(app.user_id, app.id, names)} if names else {}
        for i, (concept_id, _) in enumerate(items):
            if results[i] is None:
                results[i] = (
                    ConceptResult(renamed[concept_id])
                    if concept_id in renamed
                    else ConceptResult(
                        None, NotFound(f"concept {concept_id!r} not found in app {app.id!r}", field=f"concepts[{i}].id")
                    )
                )
        return [r for r in results if r is not None]

    def get(self, principal: Principal, user_id: str, app_id: str, concept_id: str) -> ConceptRecord:
        app = self._apps.get(principal, user_id, app_id)
        validate_id(concept_id, "concept_id")
        concept = self._store.get_concept(app.user_id, app.id, concept_id)
        if concept is None:
            raise NotFound(f"concept {concept_id!r} not found in app {app.id!r}", field="concept_id")
        return concept

    def list(
        self, principal: Principal, user_id: str, app_id: str, page: PageRequest
    ) -> tuple[builtins.list[ConceptRecord], str]:
        app = self._apps.get(principal, user_id, app_id)
        scope = f"concepts:{app.user_id}:{app.id}"
        result = self._store.list_concepts(app.user_id, app.id, to_query(page, scope))
        return result.items, next_token(result, scope)
