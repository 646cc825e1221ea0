"""The one place that orders the stages of a check.

request → service (from route config) → credentials verified → policy input → decision →
verdict. Each stage reads only what earlier stages produced. Failures become verdicts by
their class: invalid credentials and malformed requests are denied with their reason code;
anything that stops the gateway from deciding, including an unexpected exception, is
answered as unavailable. Nothing here can turn an error into an allow.
"""

from __future__ import annotations

import hashlib
import logging
import random

from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext

from authz.answers import Answers, Verdict
from authz.credentials.authenticator import Authentication, Authenticator
from authz.credentials.context import ContextVerifier
from authz.credentials.presentation import WIT_HEADER, ProofStyle, proof_style
from authz.errors import CredentialError, RequestError, UnavailableError, is_rust_panic
from authz.policy.decision import decision_from_result
from authz.policy.engine import PolicyEngine
from authz.policy.http_parsing import parse_body
from authz.policy.input import build_input
from authz.reasons import Reason
from authz.request import RequestView, request_view
from authz.routing import ServiceRouter

log = logging.getLogger("authz.pipeline")


def new_decision_id() -> str:
    """A correlation id: unique, not secret (so no system call for fresh randomness)."""
    return f"{random.getrandbits(128):032x}"


def _short_hash(request: RequestView | None, header: str) -> str:
    """A token's SHA-256 prefix, to correlate log lines without ever logging the token."""
    value = request.headers.get(header) if request is not None else None
    if value is None:
        return "-"
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:12]


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
    ) -> None:
        self._router = router
        self._authenticator = authenticator
        self._context_verifier = context_verifier
        self.engine = engine
        self._answers = answers
        self._parsed_body_bytes = parsed_body_bytes

    async def check(self, attributes: AttributeContext) -> Verdict:
        decision_id = new_decision_id()
        request: RequestView | None = None
        try:
            request = request_view(attributes)
            return await self._decide(decision_id, request)
        except CredentialError as error:
            log.info(
                "deny %s %s: %s (wit %s)",
                decision_id,
                error.reason,
                error.message,
                _short_hash(request, WIT_HEADER),
            )
            return self._answers.invalid_credentials(
                decision_id,
                error.reason,
                proof_style(request.headers) if request is not None else ProofStyle.WPT,
            )
        except RequestError as error:
            log.info("deny %s %s: %s", decision_id, error.reason, error.message)
            return self._answers.bad_request(decision_id, error.reason)
        except UnavailableError as error:
            log.warning("unavailable %s %s: %s", decision_id, error.reason, error.message)
            return self._answers.unavailable(decision_id, error.reason)
        except Exception:
            log.exception("unavailable %s: unexpected error", decision_id)
            return self._answers.unavailable(decision_id, Reason.INTERNAL_ERROR)
        except BaseException as error:
            # A Rust panic in an extension (cryptography, regorus) is still our failure to
            # answer, not a gRPC error left to Envoy's failure_mode_allow.
            if not is_rust_panic(error):
                raise
            log.exception("unavailable %s: panic in a native extension", decision_id)
            return self._answers.unavailable(decision_id, Reason.INTERNAL_ERROR)

    async def _decide(self, decision_id: str, request: RequestView) -> Verdict:
        service = self._router.select(request.context_extensions)
        authentication: Authentication = await self._authenticator.authenticate(
            request.headers, request.source_principal, service.audiences(request.path)
        )
        context = self._context_verifier.verify(
            request.headers,
            authentication.caller,
            service.id.trust_domain,
            txn_required=service.requires_txn_token(request.context_extensions),
        )
        http = request.attributes.request.http
        parsed_body = parse_body(request.headers, http.body, http.raw_body, self._parsed_body_bytes)
        document = build_input(
            request,
            parsed_body,
            authentication.caller,
            service,
            context,
        )
        result = await self.engine.evaluate(document)
        decision = decision_from_result(result, self._answers.managed_headers)
        if decision.allowed:
            return self._answers.allowed(decision_id, decision, authentication)
        caller = authentication.caller
        log.info(
            "deny %s policy: caller=%s reasons=%s",
            decision_id,
            caller.id.uri if caller else "-",
            ",".join(decision.reasons) or "-",
        )
        return self._answers.policy_denied(decision_id, decision, authentication)
