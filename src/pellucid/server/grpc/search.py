"""SearchService: PostInputsSearches (ranks and filters over an app's inputs)."""

from __future__ import annotations

import grpc

from pellucid.api import v1
from pellucid.server.engine import Engine
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.inputs import input_message
from pellucid.server.grpc.models import runner_wait
from pellucid.server.grpc.translate.search import search_query, search_response


class SearchServicer(v1.SearchServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def PostInputsSearches(
        self, request: v1.PostInputsSearchesRequest, context: grpc.ServicerContext
    ) -> v1.PostInputsSearchesResponse:
        result = self.engine.search.search(
            principal(),
            request.user_id,
            request.app_id,
            search_query(request),
            model_wait_seconds=runner_wait(context.time_remaining()),
        )
        return search_response(result, input_message)
