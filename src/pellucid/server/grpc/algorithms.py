"""AlgorithmService: publishing models as algorithms, resolving and calling them, insights."""

from __future__ import annotations

import time

import grpc

from pellucid.api import v1
from pellucid.server.engine import Engine
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.convert import page_request
from pellucid.server.grpc.idempotency import replayable
from pellucid.server.grpc.models import runner_wait
from pellucid.server.grpc.translate.algorithms import (
    algorithm_message,
    call_input,
    call_result,
    insight_message,
    resolved_message,
)
from pellucid.server.grpc.translate.models import output_message


class AlgorithmServicer(v1.AlgorithmServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @replayable(v1.Algorithm)
    def PublishAlgorithm(self, request: v1.PublishAlgorithmRequest, context: grpc.ServicerContext) -> v1.Algorithm:
        resolved = self.engine.algorithms.publish(
            principal(),
            request.user_id,
            request.app_id,
            request.model_id,
            version_id=request.version_id,
            name=request.name,
            tag=request.version,
            public=request.public,
        )
        return algorithm_message(resolved.algorithm, resolved.tags)

    def GetAlgorithm(self, request: v1.GetAlgorithmRequest, context: grpc.ServicerContext) -> v1.ResolvedAlgorithm:
        return resolved_message(self.engine.algorithms.resolve(principal(), request.algorithm))

    def ListAlgorithms(
        self, request: v1.ListAlgorithmsRequest, context: grpc.ServicerContext
    ) -> v1.ListAlgorithmsResponse:
        listed, token = self.engine.algorithms.list(principal(), request.user_id, page_request(request))
        return v1.ListAlgorithmsResponse(
            algorithms=[algorithm_message(a, tags) for a, tags in listed], next_page_token=token
        )

    def CallAlgorithm(
        self, request: v1.CallAlgorithmRequest, context: grpc.ServicerContext
    ) -> v1.CallAlgorithmResponse:
        started = time.monotonic()
        given = call_input(request.input)
        call = self.engine.algorithms.call(principal(), request.algorithm, given, runner_wait(context.time_remaining()))
        if not context.add_callback(call.pending.cancel):
            call.pending.cancel()  # the call has already ended
        result = call.pending.result()
        output = output_message(result.outputs[0])
        response = v1.CallAlgorithmResponse(
            call_id=call.id, resolved=resolved_message(call.resolved), runner_id=result.runner_id
        )
        if output.status.code != v1.Status.OK:
            response.error.CopyFrom(
                v1.AlgorithmError(
                    message=output.status.message, stack_trace=output.data.stack_trace, code=output.status.code
                )
            )
        else:
            response.result.CopyFrom(call_result(output))
        if request.stdout and call.stdout_visible:
            response.stdout = output.data.stdout
        response.duration = time.monotonic() - started
        return response

    @replayable(v1.ReportInsightsResponse)
    def ReportInsights(
        self, request: v1.ReportInsightsRequest, context: grpc.ServicerContext
    ) -> v1.ReportInsightsResponse:
        self.engine.algorithms.report_insights(principal(), request.call_id, dict(request.insights))
        return v1.ReportInsightsResponse()

    def ListInsights(self, request: v1.ListInsightsRequest, context: grpc.ServicerContext) -> v1.ListInsightsResponse:
        insights, token = self.engine.algorithms.list_insights(principal(), request.algorithm, page_request(request))
        return v1.ListInsightsResponse(insights=[insight_message(i) for i in insights], next_page_token=token)
