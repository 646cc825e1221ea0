"""The stages of an egress check, in order: the caller's half of WIMSE, done for the app.

request → callee and target URI (from route config) → the app's context tokens (a bearer
token moved to the user-token header) → the workload's credentials → the Txn-Token verified
→ egress policy → a fresh proof → the headers the request leaves with → decision log.
The same failure classes as inbound: the app's malformed input is a 400 with its reason,
a policy denial 403, and anything that stops the gateway from attaching credentials —
missing or expired credentials, a route it cannot serve, an unexpected error — 503. No
request ever leaves without a proof because of an error, and nothing minted is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext

from authz.answers import Allowed, Answers, Verdict
from authz.clock import Clock
from authz.credentials.httpsig.verifier import CONTENT_DIGEST_HEADER
from authz.credentials.identifiers import WorkloadId
from authz.credentials.presentation import (
    AUTHORIZATION_HEADER,
    LEGACY_WPT_HEADER,
    SIGNATURE_HEADER,
    SIGNATURE_INPUT_HEADER,
    TXN_TOKEN_HEADER,
    WIT_HEADER,
    ProofStyle,
)
from authz.credentials.txn_token import TxnTokenVerifier, VerifiedTxnToken
from authz.errors import CredentialError, RequestError, UnavailableError
from authz.issuing.http_signature import sign_request
from authz.issuing.wpt import ProofRequest
from authz.observability.decision_log import DecisionRecord
from authz.outbound.callee import Callee, CalleeRouter, upstream_path
from authz.outbound.credentials import CredentialSource, WorkloadCredentials
from authz.pipeline import Observers, new_decision_id, observed_check, unavailable_answer
from authz.policy.decision import PolicyDecision, decision_from_result
from authz.policy.engine import PolicyEngine
from authz.policy.http_parsing import parse_body, parse_path
from authz.policy.input import outbound_input
from authz.reasons import Reason
from authz.request import RequestView, request_view, signed_message

log = logging.getLogger("authz.outbound")

_BEARER = "bearer "


@dataclass(frozen=True, slots=True)
class ProofSettings:
    lifetime_seconds: float
    user_token_header: str


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """The app's context tokens as the request will carry them."""

    txn_token: str | None
    user_token: str | None
    moved_bearer: bool
    """The user token came as `Authorization: Bearer` and moves to the user-token header."""


class OutboundPipeline:
    """Checks for one outbound listener: its one workload, whatever the request says."""

    def __init__(
        self,
        *,
        workload: WorkloadId,
        credentials: CredentialSource,
        callees: CalleeRouter,
        txn_verifier: TxnTokenVerifier,
        engine: PolicyEngine,
        answers: Answers,
        settings: ProofSettings,
        parsed_body_bytes: int,
        observers: Observers,
        clock: Clock,
    ) -> None:
        self._workload = workload
        self._credentials = credentials
        self._callees = callees
        self._txn_verifier = txn_verifier
        self.engine = engine
        self._answers = answers
        self._settings = settings
        self._parsed_body_bytes = parsed_body_bytes
        self._observers = observers
        self._decision_log = observers.decision_log
        self._clock = clock
        # Policy may add headers, but never one that carries the workload's credentials.
        self._managed_headers = answers.managed_headers | {
            WIT_HEADER,
            AUTHORIZATION_HEADER,
            SIGNATURE_HEADER,
            SIGNATURE_INPUT_HEADER,
            CONTENT_DIGEST_HEADER,
            TXN_TOKEN_HEADER,
            settings.user_token_header,
        }

    async def check(self, attributes: AttributeContext) -> Verdict:
        record = DecisionRecord(new_decision_id(), time.time(), direction="outbound")
        record.caller = self._workload.uri
        return await observed_check(self._observers, record, attributes, self._check)

    async def _check(self, attributes: AttributeContext, record: DecisionRecord) -> Verdict:
        decision_id = record.decision_id
        try:
            return await self._decide(request_view(attributes), record)
        except (RequestError, CredentialError) as error:
            # The app's own request is what is wrong (a malformed path, an unusable
            # Authorization, an invalid Txn-Token): it is told so, and nothing leaves.
            log.info("outbound deny %s %s: %s", decision_id, error.reason, error.message)
            return self._answers.bad_request(decision_id, error.reason)
        except BaseException as error:  # noqa: BLE001 - answered; others re-raised there
            return unavailable_answer(error, decision_id, self._answers, log)

    async def _decide(self, request: RequestView, record: DecisionRecord) -> Verdict:
        started = time.perf_counter()
        record.method, record.path = request.method, request.path
        record.policy_revision = self.engine.revision
        if self._decision_log.enabled:
            record.route = dict(request.context_extensions)
        callee = self._callees.select(request.context_extensions)
        record.service = callee.name
        path = upstream_path(request.path, request.context_extensions)
        audience = callee.audience(path)
        outgoing = self._outgoing_tokens(request.headers)
        # Before policy: without credentials nothing could leave, and an outage must show
        # as one (503), not hide behind a denial.
        credentials = self._credentials.current()
        tracing = self._observers.tracing
        with tracing.stage("verify context"):
            txn = await self._verified_txn(outgoing.txn_token)
        if txn is not None:
            record.txn, record.txn_sub = txn.txn_id, txn.subject
        record.verify_us = int((time.perf_counter() - started) * 1e6)

        evaluating = time.perf_counter()
        http = request.attributes.request.http
        parsed_body = parse_body(request.headers, http.body, http.raw_body, self._parsed_body_bytes)
        callee_document = {
            "name": callee.name,
            "origin": callee.origin,
            "path": path,
            "parsed_path": parse_path(path),
            "audience": audience,
            "proof": callee.proof.value,
        }
        document = outbound_input(request, parsed_body, self._workload, callee_document, txn)
        if self._decision_log.wants_input:
            record.input = document
        with tracing.stage("evaluate policy"):
            result = await self.engine.evaluate(document)
        decision = decision_from_result(result, self._managed_headers)
        record.evaluate_us = int((time.perf_counter() - evaluating) * 1e6)
        record.policy_reasons = decision.reasons
        if not decision.allowed:
            log.info(
                "outbound deny %s policy: workload=%s callee=%s reasons=%s",
                record.decision_id,
                self._workload.uri,
                callee.name,
                ",".join(decision.reasons) or "-",
            )
            return self._answers.egress_denied(record.decision_id, decision, self._workload.uri)
        with tracing.stage("attach credentials"):
            return self._attach(
                request,
                record.decision_id,
                decision,
                callee=callee,
                path=path,
                audience=audience,
                outgoing=outgoing,
                credentials=credentials,
            )

    def _attach(
        self,
        request: RequestView,
        decision_id: str,
        decision: PolicyDecision,
        *,
        callee: Callee,
        path: str,
        audience: str,
        outgoing: _Outgoing,
        credentials: WorkloadCredentials,
    ) -> Allowed:
        """The verdict that sends the request on to `path` (`audience` in its proof) with
        the workload's WIT and a fresh proof."""
        user_header = self._settings.user_token_header
        # The context tokens the proof binds: the callee's headers the request carries, and
        # the user token wherever the app sent it (a moved bearer is bound under its new name).
        bound = {
            name: request.headers[name] for name in callee.bound_headers if name in request.headers
        }
        if outgoing.user_token is not None:
            bound[user_header] = outgoing.user_token
        now = self._clock()
        lifetime = self._settings.lifetime_seconds
        headers: list[tuple[str, str]] = [(WIT_HEADER, credentials.wit)]
        if outgoing.moved_bearer and outgoing.user_token is not None:
            headers.append((user_header, outgoing.user_token))
        remove = [LEGACY_WPT_HEADER]
        if callee.proof is ProofStyle.HTTP_SIGNATURE:
            message = signed_message(request)
            body = message.body
            if body is None or message.body_partial:
                raise UnavailableError(
                    Reason.OUTBOUND_BODY_NOT_FORWARDED,
                    "a signed request's body must be forwarded whole (wimse.body: forwarded)",
                )
            leaving = {**_context_headers(request.headers), **bound, WIT_HEADER: credentials.wit}
            signed = sign_request(
                credentials.key,
                method=request.method,
                path=path,
                query=request.query,
                headers=leaving,
                body=body,
                audience=audience,
                now=now,
                lifetime=int(lifetime),
                also_cover=tuple(bound),
            )
            headers += [
                (SIGNATURE_INPUT_HEADER, signed.signature_input),
                (SIGNATURE_HEADER, signed.signature),
            ]
            if signed.content_digest is not None:
                headers.append((CONTENT_DIGEST_HEADER, signed.content_digest))
            else:
                remove.append(CONTENT_DIGEST_HEADER)
            remove.append(AUTHORIZATION_HEADER)
        else:
            wpt = credentials.wpt.mint(
                ProofRequest(audience, outgoing.txn_token, bound), now=now, lifetime=lifetime
            )
            headers.append((AUTHORIZATION_HEADER, f"WPT {wpt}"))
            remove += [SIGNATURE_HEADER, SIGNATURE_INPUT_HEADER]
        return self._answers.egress_allowed(
            decision_id, decision, self._workload.uri, tuple(headers), tuple(remove)
        )

    def _outgoing_tokens(self, headers: Mapping[str, str]) -> _Outgoing:
        user_header = self._settings.user_token_header
        user_token = headers.get(user_header)
        authorization = headers.get(AUTHORIZATION_HEADER)
        if authorization is None:
            return _Outgoing(headers.get(TXN_TOKEN_HEADER), user_token, moved_bearer=False)
        if authorization[: len(_BEARER)].lower() != _BEARER or "," in authorization:
            raise RequestError(
                Reason.OUTBOUND_AUTHORIZATION_UNSUPPORTED,
                "the app's Authorization is not a single Bearer token; the proof takes that "
                "header, and only a bearer token can move to the user-token header",
            )
        if user_token is not None:
            raise RequestError(
                Reason.OUTBOUND_USER_TOKEN_AMBIGUOUS,
                f"the app sent both Authorization: Bearer and {user_header}",
            )
        bearer = authorization[len(_BEARER) :].strip()
        if not bearer:
            raise RequestError(Reason.OUTBOUND_AUTHORIZATION_UNSUPPORTED, "an empty bearer token")
        return _Outgoing(headers.get(TXN_TOKEN_HEADER), bearer, moved_bearer=True)

    async def _verified_txn(self, txn_token: str | None) -> VerifiedTxnToken | None:
        if txn_token is None:
            return None
        return await self._txn_verifier.verify_refreshing(txn_token, self._workload.trust_domain)


def _context_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The app's headers a signature covers whenever they are present (besides ours)."""
    return {name: headers[name] for name in ("content-type", TXN_TOKEN_HEADER) if name in headers}
