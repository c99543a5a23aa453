"""Concepts with values (on inputs, outputs and model versions) <-> ConceptValue."""

from __future__ import annotations

from collections.abc import Iterable

from pellucid.api import v1
from pellucid.server.records import ConceptValue


def concept_values(concepts: Iterable[v1.Concept]) -> tuple[ConceptValue, ...]:
    return tuple(ConceptValue(c.id, c.name, c.value) for c in concepts)


def concept_messages(values: Iterable[ConceptValue]) -> list[v1.Concept]:
    return [v1.Concept(id=c.id, name=c.name, value=c.value) for c in values]
