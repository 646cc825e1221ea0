"""Whether to issue a Txn-Token, and with which claims: the issuance policy proposes, this
module enforces.

The policy (rule `tts.issuance_decision`, default `data.wimse.issuance.decision`) answers
`{"allowed": bool, "scope": [...] or "a b", "tctx": {...}, "rctx": {...}, "reasons":
[...]}`; every member but `allowed` is optional. Whatever it returns, then:

- `scope` (default: what was asked for — the endpoint's `scope` parameter, or at the edge
  the whole grant) is never wider than the subject's grant: the access token's `scope`
  claim, the scopes configured for an mTLS client, or the replaced Txn-Token's scope. A
  subject whose grant cannot be determined is refused, as the draft requires.
- `txn`, `sub`, `aud`, `iat`, `exp`, `req_wl`, `iss` and `act` are the gateway's: a
  decision naming any of them is invalid, not obeyed.
- `rctx.req_ip` is the peer address Envoy reports, never a header; on a replacement `tctx`
  and `rctx` are the original's (the transaction context is immutable).

Refusals carry a reason code (`issuance.*`); the edge answers them 403 and the endpoint
with the matching OAuth error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from authz.credentials.txn_token import VerifiedTxnToken
from authz.credentials.user_token import VerifiedUserToken
from authz.errors import UnavailableError
from authz.policy.engine import PolicyEngine
from authz.policy.input import txn_document
from authz.reasons import Reason
from authz.tts.minting import TxnClaims, new_txn_id

_DECISION_MEMBERS = frozenset({"allowed", "scope", "tctx", "rctx", "reasons"})
_RESERVED = frozenset({"txn", "sub", "aud", "iat", "exp", "req_wl", "iss", "act", "nbf"})


class IssuanceRefused(Exception):
    """The token is not issued; `reason` says why (never quoting a token)."""

    def __init__(self, reason: Reason, message: str, reasons: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.policy_reasons = tuple(reasons)


class InvalidIssuanceDecision(UnavailableError):
    """The policy answered something that is not an issuance decision: a policy bug,
    answered as our failure (503), never as an issuance."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.POLICY_INVALID_DECISION, message)


@dataclass(frozen=True, slots=True)
class Subject:
    """Whom the transaction is for, and what they were granted."""

    sub: str
    kind: str
    """`access_token`, `mtls`, `txn_token`, `self_signed` or `unsigned_json`."""
    granted_scope: frozenset[str] | None
    """None: the grant cannot be determined (issuance is then refused)."""
    claims: Mapping[str, Any] = field(default_factory=dict)
    """What policy may read of the subject token (its claims; the principal for mTLS)."""


def access_token_subject(token: VerifiedUserToken) -> Subject:
    """The subject of a verified access token, granted its `scope`. A token without a
    `scope` claim says nothing of what was granted, so nothing is issued for it."""
    granted = frozenset(token.scopes) if isinstance(token.claims.get("scope"), str) else None
    return Subject(token.subject, "access_token", granted, token.claims)


@dataclass(frozen=True, slots=True)
class IssuanceRequest:
    shape: str
    """`edge` or `token_exchange`."""
    subject: Subject
    requester: str
    """The workload asking: the edge itself, or the authenticated requester."""
    requested_scope: tuple[str, ...] | None = None
    request_context: Mapping[str, Any] | None = None
    request_details: Mapping[str, Any] | None = None
    peer_address: str | None = None
    """The client's address as Envoy reports it (edge) or the requester's (endpoint)."""
    replacing: VerifiedTxnToken | None = None
    request: Mapping[str, Any] = field(default_factory=dict)
    """OPA-Envoy's members for the HTTP request (edge), for policies that read the path."""


@dataclass(frozen=True, slots=True)
class Issuance:
    claims: TxnClaims
    policy_reasons: tuple[str, ...]


def issuance_input(request: IssuanceRequest, trust_domain: str) -> dict[str, Any]:
    """The issuance policy's input (docs/tts.md, "Issuance policy")."""
    subject = request.subject
    return {
        **request.request,
        "wimse": {
            "direction": "issuance",
            "issuance": {
                "shape": request.shape,
                "trust_domain": trust_domain,
                "requester": request.requester,
                "subject": {
                    "sub": subject.sub,
                    "kind": subject.kind,
                    "granted_scope": sorted(subject.granted_scope)
                    if subject.granted_scope is not None
                    else None,
                    "claims": dict(subject.claims),
                },
                "requested_scope": list(request.requested_scope)
                if request.requested_scope is not None
                else None,
                "request_context": request.request_context,
                "request_details": request.request_details,
                "peer_address": request.peer_address,
                "replacing": txn_document(request.replacing, None)
                if request.replacing is not None
                else None,
            },
        },
    }


async def decide_issuance(
    engine: PolicyEngine, request: IssuanceRequest, trust_domain: str
) -> Issuance:
    """Ask the policy, then hold its answer to the rules above. `IssuanceRefused` for a
    refusal, `InvalidIssuanceDecision` (503) for an answer that is not a decision."""
    subject = request.subject
    if subject.granted_scope is None:
        raise IssuanceRefused(
            Reason.ISSUANCE_NO_GRANT, "the subject's grant (its scope) cannot be determined"
        )
    decision = _decision(await engine.evaluate(issuance_input(request, trust_domain)))
    reasons = _strings(decision.get("reasons", []), "reasons")
    if decision["allowed"] is not True:
        raise IssuanceRefused(Reason.ISSUANCE_DENIED, "the issuance policy refused", reasons)
    default = (
        request.requested_scope
        if request.requested_scope is not None
        else tuple(sorted(subject.granted_scope))
    )
    scope = _scope(decision.get("scope", list(default)))
    if not scope:
        raise IssuanceRefused(Reason.ISSUANCE_SCOPE_EMPTY, "no scope to issue", reasons)
    if wider := sorted(set(scope) - subject.granted_scope):
        raise IssuanceRefused(
            Reason.ISSUANCE_SCOPE_TOO_WIDE,
            f"scope {' '.join(wider)} is wider than the subject was granted",
            reasons,
        )
    replacing = request.replacing
    if replacing is not None:
        return Issuance(_replacement(replacing, scope, request.requester), reasons)
    rctx = dict(_object(decision.get("rctx"), "rctx") or {})
    if request.peer_address is not None:
        rctx["req_ip"] = request.peer_address
    claims = TxnClaims(
        txn=new_txn_id(),
        sub=subject.sub,
        scope=scope,
        req_wl=request.requester,
        tctx=_object(decision.get("tctx"), "tctx"),
        rctx=rctx,
    )
    return Issuance(claims, reasons)


def _replacement(original: VerifiedTxnToken, scope: tuple[str, ...], requester: str) -> TxnClaims:
    """A replacement keeps `txn`, `sub`, `req_wl` (the origin) and the transaction context;
    the requester becomes the current actor, earlier actors nested inside (RFC 8693 §4.1)."""
    actor: dict[str, Any] = {"sub": requester}
    previous = original.claims.get("act")
    if isinstance(previous, Mapping):
        actor["act"] = dict(previous)
    return TxnClaims(
        txn=original.txn_id,
        sub=original.subject,
        scope=scope,
        req_wl=original.requesting_workloads[0],
        tctx=original.tctx,
        rctx=original.rctx,
        act=actor,
    )


def _decision(value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidIssuanceDecision("the issuance decision is not an object")
    if reserved := sorted(_RESERVED & value.keys()):
        raise InvalidIssuanceDecision(
            f"the issuance decision sets {', '.join(reserved)}: those are the gateway's"
        )
    if unknown := sorted(value.keys() - _DECISION_MEMBERS):
        raise InvalidIssuanceDecision(f"unknown issuance decision members: {', '.join(unknown)}")
    if not isinstance(value.get("allowed"), bool):
        raise InvalidIssuanceDecision("the issuance decision needs a boolean 'allowed'")
    return value


def _scope(value: object) -> tuple[str, ...]:
    values = value.split() if isinstance(value, str) else _strings(value, "scope")
    if any(not item or any(c.isspace() for c in item) for item in values):
        raise InvalidIssuanceDecision("'scope' holds an empty or blank value")
    return tuple(dict.fromkeys(values))


def _strings(value: object, name: str) -> tuple[str, ...]:
    if isinstance(value, list | set | tuple) and all(isinstance(item, str) for item in value):
        return tuple(sorted(value)) if isinstance(value, set) else tuple(value)
    raise InvalidIssuanceDecision(f"'{name}' is not a list of strings")


def _object(value: object, name: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidIssuanceDecision(f"'{name}' is not an object")
    return value
