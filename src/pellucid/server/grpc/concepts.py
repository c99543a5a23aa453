"""ConceptService: an app's labels."""

from __future__ import annotations

import grpc

from pellucid.api import v1
from pellucid.server.engine import Engine
from pellucid.server.engine.concepts import ConceptResult
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.convert import page_request, to_timestamp
from pellucid.server.grpc.errors import item_status
from pellucid.server.grpc.idempotency import replayable
from pellucid.server.records import ConceptRecord


def concept_message(concept: ConceptRecord) -> v1.Concept:
    return v1.Concept(
        id=concept.id,
        name=concept.name,
        app_id=concept.app_id,
        user_id=concept.user_id,
        created_at=to_timestamp(concept.created_at),
    )


def concept_results(results: list[ConceptResult], asked: list[v1.Concept]) -> tuple[list[v1.Concept], list[v1.Status]]:
    """Per-item concepts and statuses, in request order (a failed item echoes what was asked)."""
    concepts = [
        concept_message(r.concept) if r.concept else v1.Concept(id=a.id, name=a.name) for r, a in zip(results, asked)
    ]
    return concepts, [item_status(r.error) for r in results]


class ConceptServicer(v1.ConceptServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @replayable(v1.CreateConceptsResponse)
    def CreateConcepts(
        self, request: v1.CreateConceptsRequest, context: grpc.ServicerContext
    ) -> v1.CreateConceptsResponse:
        results = self.engine.concepts.create(
            principal(), request.user_id, request.app_id, [(c.id, c.name) for c in request.concepts]
        )
        concepts, statuses = concept_results(results, list(request.concepts))
        return v1.CreateConceptsResponse(concepts=concepts, statuses=statuses)

    @replayable(v1.PatchConceptsResponse)
    def PatchConcepts(
        self, request: v1.PatchConceptsRequest, context: grpc.ServicerContext
    ) -> v1.PatchConceptsResponse:
        results = self.engine.concepts.rename(
            principal(), request.user_id, request.app_id, [(c.id, c.name) for c in request.concepts]
        )
        concepts, statuses = concept_results(results, list(request.concepts))
        return v1.PatchConceptsResponse(concepts=concepts, statuses=statuses)

    def GetConcept(self, request: v1.GetConceptRequest, context: grpc.ServicerContext) -> v1.Concept:
        return concept_message(
            self.engine.concepts.get(principal(), request.user_id, request.app_id, request.concept_id)
        )

    def ListConcepts(self, request: v1.ListConceptsRequest, context: grpc.ServicerContext) -> v1.ListConceptsResponse:
        concepts, token = self.engine.concepts.list(principal(), request.user_id, request.app_id, page_request(request))
        return v1.ListConceptsResponse(concepts=[concept_message(c) for c in concepts], next_page_token=token)
