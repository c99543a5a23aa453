"""Model evaluation: `evaluate`, `get_eval_by_id`, `get_latest_eval`, `list_evaluations` (mixed into Model).

An evaluation is a server job: `evaluate` queues it and returns at once (or, with `wait=True`,
when it ends); it goes on if the script exits and after a server restart. The answer is an
`EvalMetrics` message: `status` (MODEL_QUEUED_FOR_EVALUATION, MODEL_EVALUATING, MODEL_EVALUATED,
or MODEL_EVALUATION_FAILED with the reason in `status.message`), `progress`, `summary`, and the
parts each flag of `get_eval_by_id` asks for.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from typing import Any

from pellucid.api import v1
from pellucid.errors import NotFound, UserError

FINISHED = (v1.Status.MODEL_EVALUATED, v1.Status.MODEL_EVALUATION_FAILED)
POLL_SECONDS = (0.1, 1.0)  # the first and the longest wait between polls of wait=True


class EvaluationMixin:
    """Evaluation methods of `pellucid.client.model.Model` (which provides `_call`, `_ids`, ...)."""

    id: str
    version_id: str
    _call: Any
    _ids: Any
    list_pages_generator: Any

    def evaluate(
        self,
        dataset_id: Any,
        dataset_app_id: str | None = None,
        dataset_user_id: str | None = None,
        eval_id: str | None = None,
        extended_metrics: dict[str, Any] | None = None,
        eval_info: dict[str, Any] | None = None,
        *,
        dataset_version_id: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> v1.EvalMetrics:
        """Evaluate this model (its pinned version, else its latest) on a labelled dataset.

        `dataset_id` (or a Dataset object) in the model's app, or in `dataset_app_id` of
        `dataset_user_id`; `dataset_version_id` evaluates a frozen version of it. `eval_id` names the
        evaluation (default: generated); `eval_info` and `extended_metrics` are stored with it as
        given. Returns the queued evaluation, or with `wait=True` the finished one (waiting at most
        `timeout` seconds, if given). A dataset without labelled inputs, or a model whose declared
        concepts label none of its inputs, is refused at once (FailedPrecondition)."""
        dataset = getattr(dataset_id, "id", dataset_id)
        if not isinstance(dataset, str) or not dataset:
            raise UserError("evaluate needs the id of a labelled dataset (dataset_id)")
        for name, value in (("eval_info", eval_info), ("extended_metrics", extended_metrics)):
            if value is not None and not isinstance(value, dict):
                raise UserError(f"{name} must be a dict, got {type(value).__name__}")
        request = v1.PostEvaluationRequest(
            **self._ids(),
            version_id=self.version_id,
            dataset_id=dataset,
            dataset_app_id=dataset_app_id or "",
            dataset_user_id=dataset_user_id or "",
            dataset_version_id=dataset_version_id or "",
            eval_id=eval_id or "",
        )
        if eval_info:
            request.eval_info.update(eval_info)
        if extended_metrics:
            request.extended_metrics.update(extended_metrics)
        queued: v1.EvalMetrics = self._call(v1.EvaluationServiceStub, "PostEvaluation", request)
        if not wait:
            return queued
        return self.wait_for_eval(queued.id, timeout=timeout)

    def wait_for_eval(self, eval_id: str, timeout: float | None = None, **parts: bool) -> v1.EvalMetrics:
        """Poll the evaluation until it is evaluated or failed (TimeoutError after `timeout` seconds);
        `parts` are get_eval_by_id's flags for the final answer."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = POLL_SECONDS[0]
        while True:
            metrics = self.get_eval_by_id(eval_id, **parts)
            if metrics.status.code in FINISHED:
                return metrics
            if deadline is not None and time.monotonic() + pause > deadline:
                progress = metrics.progress
                raise TimeoutError(
                    f"evaluation {eval_id!r} is still running after {timeout} s"
                    f" ({progress.processed_inputs} of {progress.total_inputs} inputs done)"
                )
            time.sleep(pause)
            pause = min(pause * 2, POLL_SECONDS[1])

    def get_eval_by_id(
        self,
        eval_id: str,
        label_counts: bool = False,
        test_set: bool = False,
        binary_metrics: bool = False,
        confusion_matrix: bool = False,
        metrics_by_class: bool = False,
        metrics_by_area: bool = False,
    ) -> v1.EvalMetrics:
        """The evaluation with its status, progress and summary, and the parts asked for.
        metrics_by_area (detection metrics by region area) is empty for classifiers."""
        if not eval_id:
            raise UserError("get_eval_by_id needs an eval_id (evaluate returns it as .id)")
        request = v1.GetEvaluationRequest(
            **self._ids(),
            eval_id=eval_id,
            label_counts=label_counts,
            test_set=test_set,
            binary_metrics=binary_metrics,
            confusion_matrix=confusion_matrix,
            metrics_by_class=metrics_by_class,
            metrics_by_area=metrics_by_area,
        )
        return self._call(v1.EvaluationServiceStub, "GetEvaluation", request)

    def get_latest_eval(
        self,
        label_counts: bool = False,
        test_set: bool = False,
        binary_metrics: bool = False,
        confusion_matrix: bool = False,
        metrics_by_class: bool = False,
        metrics_by_area: bool = False,
    ) -> v1.EvalMetrics | None:
        """The model's most recent evaluation (whatever its state), or None if it has none."""
        request = v1.GetLatestEvaluationRequest(
            **self._ids(),
            label_counts=label_counts,
            test_set=test_set,
            binary_metrics=binary_metrics,
            confusion_matrix=confusion_matrix,
            metrics_by_class=metrics_by_class,
            metrics_by_area=metrics_by_area,
        )
        try:
            return self._call(v1.EvaluationServiceStub, "GetLatestEvaluation", request)
        except NotFound as exc:
            if exc.details.get("reason") == "EVALUATION_NOT_FOUND":
                return None
            raise

    def list_evaluations(self, page_no: int | None = None, per_page: int | None = None) -> Iterator[v1.EvalMetrics]:
        """The model's evaluations, oldest first, each with its status, progress and summary."""
        endpoint = functools.partial(self._call, v1.EvaluationServiceStub, "ListEvaluations")
        yield from self.list_pages_generator(endpoint, v1.ListEvaluationsRequest, self._ids(), page_no, per_page)
