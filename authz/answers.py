"""What Envoy is told for each outcome: one place for statuses, headers and bodies.

| outcome                                      | default answer                               |
|----------------------------------------------|----------------------------------------------|
| allowed by policy                            | OK; identity headers set, proofs stripped    |
| invalid credentials, WPT presentation        | 401 + `WWW-Authenticate: WPT`                |
| invalid credentials, HTTP-signature request  | 400                                          |
| malformed request (path, body)               | 400                                          |
| no credentials, policy denies                | 401 + `WWW-Authenticate: WPT` (or policy's)  |
| authenticated, policy denies                 | 403 (or the policy's `http_status`)          |
| gateway failure (engine, capacity, config)   | 503, or `error_response` for Envoy to answer |

Every deny carries its reason code in the configured reason header. Identity headers are
set with `append=false` so a client can never pre-set them, and every configured identity
header the gateway does not set is removed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from authz.config import ResponsesConfig, UpstreamConfig
from authz.credentials.authenticator import Authentication, Caller
from authz.credentials.presentation import (
    AUTHORIZATION_HEADER,
    LEGACY_WPT_HEADER,
    SIGNATURE_HEADER,
    SIGNATURE_INPUT_HEADER,
    TXN_TOKEN_HEADER,
    ProofStyle,
)
from authz.policy.decision import HeaderList, PolicyDecision
from authz.reasons import Reason

WWW_AUTHENTICATE = ("www-authenticate", "WPT")
_NOTHING_ALLOWED = PolicyDecision(allowed=True)


@dataclass(frozen=True, slots=True)
class Allowed:
    decision_id: str
    headers: HeaderList
    """Set on the upstream request, overwriting any client value (`append=false`)."""
    headers_to_remove: tuple[str, ...]
    response_headers_to_add: HeaderList = ()
    query_parameters_to_set: HeaderList = ()
    query_parameters_to_remove: tuple[str, ...] = ()
    dynamic_metadata: Mapping[str, Any] = field(default_factory=dict)
    reason: Reason = Reason.POLICY_ALLOWED


@dataclass(frozen=True, slots=True)
class Denied:
    decision_id: str
    status: int
    reason: Reason
    headers: HeaderList
    body: str
    dynamic_metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Failed:
    """The gateway could not decide: answered as unavailable, never as a denial."""

    decision_id: str
    status: int
    reason: Reason
    as_envoy_error: bool
    headers: HeaderList
    body: str
    dynamic_metadata: Mapping[str, Any] = field(default_factory=dict)


Verdict = Allowed | Denied | Failed


def verdict_result(verdict: Verdict) -> str:
    """`allow`, `deny` or `error`: what Envoy was told, as metrics and logs label it."""
    if isinstance(verdict, Allowed):
        return "allow"
    return "deny" if isinstance(verdict, Denied) else "error"


class Answers:
    """Builds verdicts from outcomes, per the `responses` and `upstream` configuration."""

    def __init__(self, responses: ResponsesConfig, upstream: UpstreamConfig) -> None:
        self._responses = responses
        identity = upstream.identity_headers
        # Resolved once: `names()` builds a tuple on every call.
        self._caller_header = identity.caller
        self._trust_domain_header = identity.trust_domain
        self._authenticated_by_header = identity.authenticated_by
        self._identity_names = identity.names()
        self._strip_proofs = upstream.strip_proof_headers
        self.managed_headers = frozenset((*self._identity_names, responses.reason_header))

    def _metadata(self, decision_id: str, reason: Reason, caller: Caller | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"decision_id": decision_id, "reason": reason.value}
        if caller is not None:
            metadata["caller"] = caller.id.uri
        return metadata

    def _deny_body(self, decision_id: str, reason: Reason) -> str:
        return json.dumps({"reason": reason.value, "decision_id": decision_id})

    def _deny_headers(self, reason: Reason, *extra: tuple[str, str]) -> HeaderList:
        return (
            (self._responses.reason_header, reason.value),
            ("content-type", "application/json"),
            *extra,
        )

    def invalid_credentials(self, decision_id: str, reason: Reason, style: ProofStyle) -> Denied:
        extra: HeaderList
        if style is ProofStyle.HTTP_SIGNATURE:
            status, extra = self._responses.invalid_signature_status, ()
        else:
            status, extra = self._responses.invalid_credentials_status, (WWW_AUTHENTICATE,)
        return Denied(
            decision_id=decision_id,
            status=status,
            reason=reason,
            headers=self._deny_headers(reason, *extra),
            body=self._deny_body(decision_id, reason),
            dynamic_metadata=self._metadata(decision_id, reason, None),
        )

    def bad_request(self, decision_id: str, reason: Reason) -> Denied:
        return Denied(
            decision_id=decision_id,
            status=self._responses.bad_request_status,
            reason=reason,
            headers=self._deny_headers(reason),
            body=self._deny_body(decision_id, reason),
            dynamic_metadata=self._metadata(decision_id, reason, None),
        )

    def unavailable(self, decision_id: str, reason: Reason) -> Failed:
        unavailable = self._responses.unavailable
        return Failed(
            decision_id=decision_id,
            status=unavailable.status,
            reason=reason,
            as_envoy_error=unavailable.as_envoy_error,
            headers=self._deny_headers(reason),
            body=self._deny_body(decision_id, reason),
            dynamic_metadata=self._metadata(decision_id, reason, None),
        )

    def blocked(self, decision_id: str, reason: Reason, caller: Caller | None) -> Denied:
        """The emergency deny-list matched: refused before policy, dry-run or not."""
        return Denied(
            decision_id=decision_id,
            status=self._responses.deny_list_status,
            reason=reason,
            headers=self._deny_headers(reason),
            body=self._deny_body(decision_id, reason),
            dynamic_metadata=self._metadata(decision_id, reason, caller),
        )

    def policy_denied(
        self, decision_id: str, decision: PolicyDecision, authentication: Authentication
    ) -> Denied:
        caller = authentication.caller
        if caller is None:
            reason = Reason.POLICY_UNAUTHENTICATED
            status = decision.http_status or self._responses.unauthenticated_status
        else:
            reason = Reason.POLICY_DENIED
            status = decision.http_status or self._responses.policy_denied_status
        extra = (WWW_AUTHENTICATE,) if status == 401 else ()
        body = decision.body if decision.body is not None else self._deny_body(decision_id, reason)
        return Denied(
            decision_id=decision_id,
            status=status,
            reason=reason,
            headers=(*self._deny_headers(reason, *extra), *decision.headers),
            body=body,
            dynamic_metadata={
                **(decision.dynamic_metadata or {}),
                **self._metadata(decision_id, reason, caller),
            },
        )

    def dry_run_allowed(
        self, decision_id: str, denial: PolicyDecision, authentication: Authentication
    ) -> Allowed:
        """A policy denial under dry-run: allowed as a plain allow would be (none of the
        denial's headers or body), with what would have happened in the metadata."""
        allowed = self.allowed(decision_id, _NOTHING_ALLOWED, authentication)
        would_deny: dict[str, object] = {"reasons": list(denial.reasons)}
        if denial.http_status is not None:
            would_deny["http_status"] = denial.http_status
        metadata = {
            **self._metadata(decision_id, Reason.POLICY_DRY_RUN_DENIED, authentication.caller),
            "dry_run": True,
            "would_deny": would_deny,
        }
        return replace(allowed, reason=Reason.POLICY_DRY_RUN_DENIED, dynamic_metadata=metadata)

    def allowed(
        self, decision_id: str, decision: PolicyDecision, authentication: Authentication
    ) -> Allowed:
        caller = authentication.caller
        identity: HeaderList = ()
        # With a caller every configured identity header is set; without one, none is, and
        # all of them are removed so a client-sent copy never reaches the upstream.
        to_remove = list(self._identity_names)
        if caller is not None:
            identity = tuple(
                (name, value)
                for name, value in (
                    (self._caller_header, caller.id.uri),
                    (self._trust_domain_header, caller.id.trust_domain),
                    (self._authenticated_by_header, caller.authenticated_by.value),
                )
                if name
            )
            to_remove = []
        if self._strip_proofs:
            to_remove.extend(self._proof_headers(authentication))
        to_remove.extend(decision.request_headers_to_remove)
        return Allowed(
            decision_id=decision_id,
            headers=(*identity, *decision.headers),
            headers_to_remove=tuple(dict.fromkeys(to_remove)),
            response_headers_to_add=decision.response_headers_to_add,
            query_parameters_to_set=decision.query_parameters_to_set,
            query_parameters_to_remove=decision.query_parameters_to_remove,
            dynamic_metadata={
                **(decision.dynamic_metadata or {}),
                **self._metadata(decision_id, Reason.POLICY_ALLOWED, caller),
            },
        )

    def egress_denied(self, decision_id: str, decision: PolicyDecision, workload: str) -> Denied:
        """Egress policy refused the local workload's request: 403 to the app."""
        reason = Reason.POLICY_DENIED
        status = decision.http_status or self._responses.policy_denied_status
        body = decision.body if decision.body is not None else self._deny_body(decision_id, reason)
        return Denied(
            decision_id=decision_id,
            status=status,
            reason=reason,
            headers=(*self._deny_headers(reason), *decision.headers),
            body=body,
            dynamic_metadata={
                **(decision.dynamic_metadata or {}),
                "decision_id": decision_id,
                "reason": reason.value,
                "workload": workload,
            },
        )

    def egress_allowed(
        self,
        decision_id: str,
        decision: PolicyDecision,
        workload: str,
        credentials: HeaderList,
        headers_to_remove: tuple[str, ...],
    ) -> Allowed:
        """The request leaves with `credentials` set (overwriting what the app sent) and
        `headers_to_remove` removed. No header is both set and removed: Envoy applies
        removals after it sets headers (measured on Envoy 1.40), so a header on both lists
        would leave without the gateway's value, even one a policy asked to remove."""
        headers = (*credentials, *decision.headers)
        set_names = {name for name, _ in headers}
        removed = (*headers_to_remove, *decision.request_headers_to_remove)
        return Allowed(
            decision_id=decision_id,
            headers=headers,
            headers_to_remove=tuple(
                dict.fromkeys(name for name in removed if name not in set_names)
            ),
            response_headers_to_add=decision.response_headers_to_add,
            query_parameters_to_set=decision.query_parameters_to_set,
            query_parameters_to_remove=decision.query_parameters_to_remove,
            dynamic_metadata={
                **(decision.dynamic_metadata or {}),
                "decision_id": decision_id,
                "reason": Reason.POLICY_ALLOWED.value,
                "workload": workload,
            },
        )

    def edge_unauthenticated(self, decision_id: str, reason: Reason, error: str | None) -> Denied:
        """No usable external credential at the edge: 401 with RFC 6750's challenge
        (`error` is `invalid_token` or `invalid_request`, or None for no credential)."""
        challenge = "Bearer" if error is None else f'Bearer error="{error}"'
        return Denied(
            decision_id=decision_id,
            status=self._responses.unauthenticated_status,
            reason=reason,
            headers=self._deny_headers(reason, ("www-authenticate", challenge)),
            body=self._deny_body(decision_id, reason),
            dynamic_metadata=self._metadata(decision_id, reason, None),
        )

    def issuance_refused(
        self, decision_id: str, reason: Reason, policy_reasons: tuple[str, ...]
    ) -> Denied:
        """No Txn-Token for this request (policy, or a scope wider than granted): 403."""
        return Denied(
            decision_id=decision_id,
            status=self._responses.policy_denied_status,
            reason=reason,
            headers=self._deny_headers(reason),
            body=self._deny_body(decision_id, reason),
            dynamic_metadata={
                **self._metadata(decision_id, reason, None),
                "reasons": list(policy_reasons),
            },
        )

    def edge_allowed(
        self,
        decision_id: str,
        txn_token: str,
        headers_to_remove: tuple[str, ...],
        metadata: Mapping[str, Any],
    ) -> Allowed:
        """The request goes on with the Txn-Token just issued (any client-sent one
        overwritten) and `headers_to_remove` removed."""
        return Allowed(
            decision_id=decision_id,
            headers=((TXN_TOKEN_HEADER, txn_token),),
            headers_to_remove=tuple(name for name in headers_to_remove if name != TXN_TOKEN_HEADER),
            dynamic_metadata={
                **metadata,
                "decision_id": decision_id,
                "reason": Reason.POLICY_ALLOWED.value,
            },
        )

    @staticmethod
    def _proof_headers(authentication: Authentication) -> list[str]:
        presented = authentication.presented
        headers = [SIGNATURE_HEADER, SIGNATURE_INPUT_HEADER] if presented.signature else []
        if presented.wpt is not None:
            headers.append(LEGACY_WPT_HEADER if presented.legacy_form else AUTHORIZATION_HEADER)
        if presented.legacy_header_refused:
            headers.append(LEGACY_WPT_HEADER)  # ignored here, but still a proof: not forwarded
        return headers
