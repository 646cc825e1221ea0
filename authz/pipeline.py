"""The one place that orders the stages of a check.

request → service and route settings (from route config) → credentials verified → deny-list →
policy input → decision (cached or evaluated) → verdict → decision log. Each stage reads only
what earlier stages produced. Failures become verdicts by their class: invalid credentials
and malformed requests are denied with their reason code; anything that stops the gateway
from deciding, including an unexpected exception, is answered as unavailable. Nothing here
can turn an error into an allow; dry-run only ever relaxes a *policy* denial of an
authenticated caller.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext

from authz.answers import Allowed, Answers, Failed, Verdict, verdict_result
from authz.credentials.authenticator import Authentication, Authenticator
from authz.credentials.context import ContextVerifier, TransactionContext
from authz.credentials.presentation import WIT_HEADER, ProofStyle, proof_style
from authz.deny_list import DenyListHolder
from authz.errors import CredentialError, RequestError, UnavailableError, is_rust_panic
from authz.observability.decision_log import DecisionLog, DecisionRecord, short_hash
from authz.observability.logs import decision_scope
from authz.observability.metrics import Metrics
from authz.observability.tracing import NO_TRACING, CheckTracing
from authz.policy.decision import PolicyDecision, decision_from_result
from authz.policy.decision_cache import DecisionCache, cache_key, proof_header
from authz.policy.engine import PolicyEngine
from authz.policy.http_parsing import parse_body
from authz.policy.input import build_input
from authz.reasons import Reason
from authz.request import RequestView, request_view, signed_message
from authz.routing import ServiceRouter, route_dry_run

log = logging.getLogger("authz.pipeline")


def new_decision_id() -> str:
    """A correlation id: unique, not secret (so no system call for fresh randomness)."""
    return f"{random.getrandbits(128):032x}"


def unavailable_answer(
    error: BaseException, decision_id: str, answers: Answers, logger: logging.Logger
) -> Failed:
    """The answer when the gateway itself could not decide: unavailable with the reason of
    an `UnavailableError`, or `internal.error` for anything unexpected — a Rust panic in a
    native extension (cryptography, regorus) included: still our failure to answer, not a
    gRPC error left to Envoy's `failure_mode_allow`. Any other `BaseException`
    (cancellation, exit) is raised again."""
    if isinstance(error, UnavailableError):
        logger.warning("unavailable %s %s: %s", decision_id, error.reason, error.message)
        return answers.unavailable(decision_id, error.reason)
    if isinstance(error, Exception):
        logger.error("unavailable %s: unexpected error", decision_id, exc_info=error)
    elif is_rust_panic(error):
        logger.error("unavailable %s: panic in a native extension", decision_id, exc_info=error)
    else:
        raise error
    return answers.unavailable(decision_id, Reason.INTERNAL_ERROR)


async def observed_check(
    observers: Observers,
    record: DecisionRecord,
    attributes: AttributeContext,
    check: Callable[[AttributeContext, DecisionRecord], Awaitable[Verdict]],
) -> Verdict:
    """Run `check` for the check `record` describes and report its verdict: log lines
    carry its decision id, and its span (when tracing) covers deciding and reporting."""
    started = time.perf_counter()
    with decision_scope(record.decision_id), observers.tracing.check(attributes, record):
        verdict = await check(attributes, record)
        report_verdict(observers, record, verdict, started)
    return verdict


def report_verdict(
    observers: Observers, record: DecisionRecord, verdict: Verdict, started: float
) -> None:
    """Complete `record` with what `verdict` answered and how long since `started`
    (`time.perf_counter`), count its stage times, and write it to the decision log."""
    record.total_us = _us(time.perf_counter() - started)
    record.result = verdict_result(verdict)
    record.status = verdict.status if not isinstance(verdict, Allowed) else 200
    record.reason = verdict.reason.value
    observers.metrics.count_stage_times(record.verify_us, record.evaluate_us)
    observers.decision_log.write(record)


def _us(seconds: float) -> int:
    return int(seconds * 1e6)


@dataclass(frozen=True, slots=True)
class Observers:
    """Where a pipeline reports: metrics, decision log, and the revisions it serves."""

    metrics: Metrics
    decision_log: DecisionLog
    trust_revision: str
    logged_credential_headers: tuple[str, ...] = ()
    """Headers whose `sha256:` prefix a decision log line carries."""
    live_trust_revision: Callable[[], str] | None = None
    """Set when live key sets can change the trust revision under a built gateway."""
    tracing: CheckTracing = NO_TRACING

    def current_trust_revision(self) -> str:
        live = self.live_trust_revision
        return self.trust_revision if live is None else live()


class Pipeline:
    def __init__(
        self,
        *,
        router: ServiceRouter,
        authenticator: Authenticator,
        context_verifier: ContextVerifier,
        engine: PolicyEngine,
        answers: Answers,
        parsed_body_bytes: int,
        observers: Observers,
        deny_list: DenyListHolder | None = None,
        decision_cache: DecisionCache | None = None,
        dry_run: bool = False,
    ) -> None:
        self._router = router
        self._authenticator = authenticator
        self._context_verifier = context_verifier
        self.engine = engine
        self._answers = answers
        self._parsed_body_bytes = parsed_body_bytes
        self._observers = observers
        self._metrics = observers.metrics
        self._decision_log = observers.decision_log
        self.deny_list = deny_list or DenyListHolder()
        self.decision_cache = decision_cache
        self._dry_run = dry_run

    async def check(self, attributes: AttributeContext) -> Verdict:
        record = DecisionRecord(new_decision_id(), time.time())
        return await observed_check(self._observers, record, attributes, self._check)

    async def _check(self, attributes: AttributeContext, record: DecisionRecord) -> Verdict:
        decision_id = record.decision_id
        request: RequestView | None = None
        try:
            request = request_view(attributes)
            return await self._decide(request, record)
        except CredentialError as error:
            self._metrics.count_verification_failure(error.reason.value)
            log.info(
                "deny %s %s: %s (wit %s)",
                decision_id,
                error.reason,
                error.message,
                _header_hash(request, WIT_HEADER),
            )
            return self._answers.invalid_credentials(
                decision_id,
                error.reason,
                proof_style(request.headers) if request is not None else ProofStyle.WPT,
            )
        except RequestError as error:
            log.info("deny %s %s: %s", decision_id, error.reason, error.message)
            return self._answers.bad_request(decision_id, error.reason)
        except BaseException as error:  # noqa: BLE001 - answered; others re-raised there
            return unavailable_answer(error, decision_id, self._answers, log)

    async def _decide(self, request: RequestView, record: DecisionRecord) -> Verdict:
        started = time.perf_counter()
        self._describe_request(request, record)
        service = self._router.select(request)
        record.service = service.name
        dry_run = route_dry_run(request.context_extensions, self._dry_run)
        body_forwarded = service.forwards_body(request.context_extensions)
        tracing = self._observers.tracing
        with tracing.stage("authenticate"):
            authentication: Authentication = await self._authenticator.authenticate(
                signed_message(request),
                request.source_principal,
                service.proof_target(request.path, body_forwarded=body_forwarded),
                peer_certificate=request.attributes.source.certificate,
            )
        caller = authentication.caller
        if caller is not None:
            record.caller = caller.id.uri
            record.authenticated_by = caller.authenticated_by.value
        with tracing.stage("verify context"):
            context = await self._context_verifier.verify(
                request.headers,
                caller,
                service.id.trust_domain,
                txn_required=service.requires_txn_token(request.context_extensions),
            )
            _describe_context(context, record)
            blocked = self.deny_list.current.match(caller, context)
        record.verify_us = _us(time.perf_counter() - started)
        if blocked is not None:
            log.warning("deny %s %s: caller=%s", record.decision_id, blocked, record.caller or "-")
            return self._answers.blocked(record.decision_id, blocked, caller)

        evaluating = time.perf_counter()
        with tracing.stage("build input"):
            http = request.attributes.request.http
            parsed_body = parse_body(
                request.headers, http.body, http.raw_body, self._parsed_body_bytes
            )
            document = build_input(request, parsed_body, caller, service, context)
        if self._decision_log.wants_input:
            record.input = document
        with tracing.stage("evaluate policy"):
            decision = await self._decision(document, authentication, context, record)
        record.evaluate_us = _us(time.perf_counter() - evaluating)
        record.policy_reasons = decision.reasons

        if decision.allowed:
            return self._answers.allowed(record.decision_id, decision, authentication)
        if dry_run and caller is not None:
            # Only a policy denial of a caller whose credentials verified is relaxed.
            record.dry_run = True
            self._metrics.count_dry_run_denial(decision.reasons[0] if decision.reasons else "")
            log.info(
                "dry-run %s policy would deny: caller=%s reasons=%s",
                record.decision_id,
                caller.id.uri,
                ",".join(decision.reasons) or "-",
            )
            return self._answers.dry_run_allowed(record.decision_id, decision, authentication)
        log.info(
            "deny %s policy: caller=%s reasons=%s",
            record.decision_id,
            caller.id.uri if caller else "-",
            ",".join(decision.reasons) or "-",
        )
        return self._answers.policy_denied(record.decision_id, decision, authentication)

    async def _decision(
        self,
        document: dict[str, object],
        authentication: Authentication,
        context: TransactionContext,
        record: DecisionRecord,
    ) -> PolicyDecision:
        cache = self.decision_cache
        revision = self.engine.revision
        key = b""
        if cache is not None:
            key = cache_key(document, revision, proof_header(authentication))
            cached = cache.get(key)
            self._metrics.count_cache_lookup(hit=cached is not None)
            if cached is not None:
                record.cached = True
                return cached
        result = await self.engine.evaluate(document)
        decision = decision_from_result(result, self._answers.managed_headers)
        if cache is not None:
            cache.put(key, decision, cache.not_after(authentication.caller, context))
        return decision

    def _describe_request(self, request: RequestView, record: DecisionRecord) -> None:
        record.method = request.method
        record.path = request.path
        record.policy_revision = self.engine.revision
        record.trust_revision = self._observers.current_trust_revision()
        if self._decision_log.enabled:
            # Copied: the writer thread must not read the request's protobuf map.
            record.route = dict(request.context_extensions)
            headers = request.headers
            record.credentials = {
                name: short_hash(headers[name])
                for name in self._observers.logged_credential_headers
                if name in headers
            }


def _describe_context(context: TransactionContext, record: DecisionRecord) -> None:
    record.chain = tuple(hop.id for hop in context.chain)
    if context.txn is not None:
        record.txn = context.txn.txn_id
        record.txn_sub = context.txn.subject


def _header_hash(request: RequestView | None, header: str) -> str:
    """A token's SHA-256 prefix, to correlate log lines without ever logging the token."""
    value = request.headers.get(header) if request is not None else None
    return short_hash(value) if value is not None else "-"
