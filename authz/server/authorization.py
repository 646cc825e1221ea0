"""The `envoy.service.auth.v3.Authorization` servicer: CheckRequest in, CheckResponse out."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from authz.answers import Answers, Failed, Verdict, verdict_result
from authz.observability.metrics import Metrics
from authz.pipeline import new_decision_id
from authz.reasons import Reason
from authz.server.envoy_response import check_response

log = logging.getLogger("authz.server")


class Checks(Protocol):
    """A pipeline: the inbound one, or an outbound listener's."""

    async def check(self, attributes: AttributeContext) -> Verdict: ...


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Answers every Check; until a pipeline is installed, answers unavailable."""

    def __init__(self, answers: Answers, metrics: Metrics) -> None:
        self.pipeline: Checks | None = None
        self._answers = answers
        self._metrics = metrics

    async def Check(self, request: CheckRequest, context: Any) -> CheckResponse:
        started = time.perf_counter()
        verdict: Verdict
        if self.pipeline is None:
            verdict = self._answers.unavailable(new_decision_id(), Reason.GATEWAY_NOT_READY)
        else:
            verdict = await self.pipeline.check(request.attributes)
        if isinstance(verdict, Failed) and verdict.as_envoy_error:
            record_answer(self._metrics, verdict, started)
            # A failed RPC is what Envoy treats as an authorization-service error: it answers
            # with its `status_on_error` (and honours `failure_mode_allow`, if set).
            await context.abort(grpc.StatusCode.UNAVAILABLE, verdict.reason.value)
        verdict, response = encoded_answer(verdict, self._answers)
        record_answer(self._metrics, verdict, started)
        return response


def encoded_answer(verdict: Verdict, answers: Answers) -> tuple[Verdict, CheckResponse]:
    """`verdict` as the CheckResponse Envoy reads, and the verdict that response answers:
    `verdict` itself, or, when a policy-supplied value Envoy's types cannot carry makes it
    unencodable, unavailable (`internal_error`) instead: fail closed, loudly."""
    try:
        return verdict, check_response(verdict)
    except Exception:
        log.exception("could not encode the answer for %s", verdict.decision_id)
        failed = answers.unavailable(verdict.decision_id, Reason.INTERNAL_ERROR)
        return failed, check_response(failed)


def record_answer(metrics: Metrics, verdict: Verdict, started: float) -> None:
    """Count the verdict a Check answered with, and how long since it `started`
    (`time.perf_counter`)."""
    metrics.count_decision(verdict_result(verdict), verdict.reason)
    metrics.check_duration.observe(time.perf_counter() - started)
