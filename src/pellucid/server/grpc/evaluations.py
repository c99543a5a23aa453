"""EvaluationService: model evaluations over labelled datasets (run by server workers)."""

from __future__ import annotations

import grpc

from pellucid.api import v1
from pellucid.server.engine import Engine
from pellucid.server.grpc.context import principal
from pellucid.server.grpc.convert import page_request, to_dict
from pellucid.server.grpc.idempotency import replayable
from pellucid.server.grpc.translate.evaluations import Parts, eval_metrics_message


def _parts(request: v1.GetEvaluationRequest | v1.GetLatestEvaluationRequest) -> Parts:
    return Parts(
        label_counts=request.label_counts,
        test_set=request.test_set,
        binary_metrics=request.binary_metrics,
        confusion_matrix=request.confusion_matrix,
        metrics_by_class=request.metrics_by_class,
        metrics_by_area=request.metrics_by_area,
    )


class EvaluationServicer(v1.EvaluationServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @replayable(v1.EvalMetrics)
    def PostEvaluation(self, request: v1.PostEvaluationRequest, context: grpc.ServicerContext) -> v1.EvalMetrics:
        record = self.engine.evaluations.create(
            principal(),
            request.user_id,
            request.app_id,
            request.model_id,
            version_id=request.version_id,
            dataset_id=request.dataset_id,
            dataset_app_id=request.dataset_app_id,
            dataset_user_id=request.dataset_user_id,
            dataset_version_id=request.dataset_version_id,
            eval_id=request.eval_id,
            eval_info=to_dict(request.eval_info),
            extended_metrics=to_dict(request.extended_metrics),
        )
        return eval_metrics_message(self.engine.evaluations.result(record))

    def GetEvaluation(self, request: v1.GetEvaluationRequest, context: grpc.ServicerContext) -> v1.EvalMetrics:
        result = self.engine.evaluations.get(
            principal(), request.user_id, request.app_id, request.model_id, request.eval_id, request.test_set
        )
        return eval_metrics_message(result, _parts(request))

    def GetLatestEvaluation(
        self, request: v1.GetLatestEvaluationRequest, context: grpc.ServicerContext
    ) -> v1.EvalMetrics:
        result = self.engine.evaluations.latest(
            principal(), request.user_id, request.app_id, request.model_id, request.test_set
        )
        return eval_metrics_message(result, _parts(request))

    def ListEvaluations(
        self, request: v1.ListEvaluationsRequest, context: grpc.ServicerContext
    ) -> v1.ListEvaluationsResponse:
        results, token = self.engine.evaluations.list(
            principal(), request.user_id, request.app_id, request.model_id, page_request(request)
        )
        return v1.ListEvaluationsResponse(evaluations=[eval_metrics_message(r) for r in results], next_page_token=token)
