"""The stages of an edge check (`mode: edge`): an external credential in, a Txn-Token out.

request → the external credential (an RFC 9068 access token for this edge's resource, or
an mTLS client with a configured grant) → issuance policy, then its answer held to the
rules of `authz.tts.issuance` → a Txn-Token minted and signed → the request goes on with it
(any client-sent `Txn-Token` overwritten; the access token removed unless the route keeps
it) → decision log. A missing or invalid credential is 401 with RFC 6750's `Bearer`
challenge, a refusal 403, our own failure (signing, policy) 503; never a request without
its Txn-Token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext

from authz.answers import Answers, Verdict
from authz.clock import Clock
from authz.config.tts import EdgeConfig
from authz.credentials.presentation import AUTHORIZATION_HEADER
from authz.credentials.user_token import UserTokenVerifier
from authz.errors import CredentialError, RequestError, UnavailableError
from authz.observability.decision_log import DecisionRecord
from authz.pipeline import Observers, new_decision_id, observed_check, unavailable_answer
from authz.policy.engine import PolicyEngine
from authz.policy.http_parsing import parse_body
from authz.policy.input import opa_envoy_members
from authz.reasons import Reason
from authz.request import RequestView, request_view
from authz.tts.issuance import (
    IssuanceRefused,
    IssuanceRequest,
    Subject,
    access_token_subject,
    decide_issuance,
)
from authz.tts.keys import TtsKeys
from authz.tts.minting import TxnTokenMinter

log = logging.getLogger("authz.tts")

EXTERNAL_TOKEN_CONTEXT_KEY = "wimse.external_token"
"""A route sets it to `keep` to forward the access token upstream, `remove` to drop it."""

_BEARER = "bearer "


class EdgePipeline:
    def __init__(
        self,
        *,
        config: EdgeConfig,
        trust_domain: str,
        issuer: str | None,
        lifetime: float,
        access_tokens: UserTokenVerifier,
        keys: TtsKeys,
        engine: PolicyEngine,
        answers: Answers,
        parsed_body_bytes: int,
        observers: Observers,
        clock: Clock,
    ) -> None:
        self._config = config
        self._trust_domain = trust_domain
        self._minter = TxnTokenMinter(
            keys, trust_domain=trust_domain, issuer=issuer, lifetime=lifetime, clock=clock
        )
        self._access_tokens = access_tokens
        self.keys = keys
        self.engine = engine
        self._answers = answers
        self._parsed_body_bytes = parsed_body_bytes
        self._observers = observers
        self._metrics = observers.metrics
        self._decision_log = observers.decision_log
        self._mtls_grants = {
            principal: frozenset(scopes) for principal, scopes in config.mtls_clients.items()
        }

    async def check(self, attributes: AttributeContext) -> Verdict:
        record = DecisionRecord(new_decision_id(), time.time(), direction="edge")
        return await observed_check(self._observers, record, attributes, self._check)

    async def _check(self, attributes: AttributeContext, record: DecisionRecord) -> Verdict:
        decision_id = record.decision_id
        try:
            return await self._decide(request_view(attributes), record)
        except CredentialError as error:
            self._metrics.count_verification_failure(error.reason.value)
            log.info("edge deny %s %s: %s", decision_id, error.reason, error.message)
            # RFC 6750 §3.1: no error code for a client that used another method at all.
            unsupported = error.reason is Reason.EDGE_AUTHORIZATION_UNSUPPORTED
            return self._answers.edge_unauthenticated(
                decision_id, error.reason, None if unsupported else "invalid_token"
            )
        except RequestError as error:
            log.info("edge deny %s %s: %s", decision_id, error.reason, error.message)
            return self._answers.bad_request(decision_id, error.reason)
        except IssuanceRefused as refused:
            record.policy_reasons = refused.policy_reasons
            log.info("edge refused %s %s: %s", decision_id, refused.reason, refused.message)
            return self._answers.issuance_refused(
                decision_id, refused.reason, refused.policy_reasons
            )
        except BaseException as error:  # noqa: BLE001 - answered; others re-raised there
            return unavailable_answer(error, decision_id, self._answers, log)

    async def _decide(self, request: RequestView, record: DecisionRecord) -> Verdict:
        started = time.perf_counter()
        record.method, record.path = request.method, request.path
        record.policy_revision = self.engine.revision
        if self._decision_log.enabled:
            record.route = dict(request.context_extensions)
        tracing = self._observers.tracing
        with tracing.stage("authenticate"):
            subject = await self._subject(request)
        if subject is None:
            return self._answers.edge_unauthenticated(
                record.decision_id, Reason.EDGE_CREDENTIALS_MISSING, None
            )
        record.caller, record.authenticated_by = subject.sub, subject.kind
        record.verify_us = int((time.perf_counter() - started) * 1e6)

        evaluating = time.perf_counter()
        http = request.attributes.request.http
        parsed_body = parse_body(request.headers, http.body, http.raw_body, self._parsed_body_bytes)
        with tracing.stage("evaluate policy"):
            issuance = await decide_issuance(
                self.engine,
                IssuanceRequest(
                    shape="edge",
                    subject=subject,
                    requester=self._config.workload,
                    peer_address=request.attributes.source.address.socket_address.address or None,
                    request=opa_envoy_members(request, parsed_body),
                ),
                self._trust_domain,
            )
        record.evaluate_us = int((time.perf_counter() - evaluating) * 1e6)
        record.policy_reasons = issuance.policy_reasons
        with tracing.stage("mint txn-token"):
            token = self._minter.mint(issuance.claims)
        record.txn, record.txn_sub = issuance.claims.txn, issuance.claims.sub
        remove = (
            ()
            if self._keeps_external_token(request.context_extensions)
            else (AUTHORIZATION_HEADER,)
        )
        log.info(
            "edge issued %s txn=%s sub=%s scope=%s",
            record.decision_id,
            issuance.claims.txn,
            issuance.claims.sub,
            " ".join(issuance.claims.scope),
        )
        return self._answers.edge_allowed(
            record.decision_id, token, remove, {"txn": issuance.claims.txn}
        )

    async def _subject(self, request: RequestView) -> Subject | None:
        authorization = request.headers.get(AUTHORIZATION_HEADER)
        if authorization is not None:
            if authorization[: len(_BEARER)].lower() != _BEARER:
                raise CredentialError(
                    Reason.EDGE_AUTHORIZATION_UNSUPPORTED,
                    "the edge takes an access token as Authorization: Bearer",
                )
            token = await self._access_tokens.verify_refreshing(
                authorization[len(_BEARER) :].strip()
            )
            return access_token_subject(token)
        principal = request.source_principal
        if principal and principal in self._mtls_grants:
            return Subject(
                sub=principal,
                kind="mtls",
                granted_scope=self._mtls_grants[principal],
                claims={"principal": principal},
            )
        return None

    def _keeps_external_token(self, context_extensions: Mapping[str, str]) -> bool:
        setting = context_extensions.get(EXTERNAL_TOKEN_CONTEXT_KEY)
        if setting is None:
            return self._config.keep_external_token
        if setting not in ("keep", "remove"):
            # A route typo must not silently forward or drop a credential.
            raise UnavailableError(
                Reason.ROUTE_CONFIG_INVALID,
                f"{EXTERNAL_TOKEN_CONTEXT_KEY} must be keep or remove, not {setting!r}",
            )
        return setting == "keep"
