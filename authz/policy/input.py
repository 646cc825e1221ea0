"""The policy input document: OPA-Envoy's shape plus `input.wimse`.

Everything OPA-Envoy policies read is here under the same names (`attributes`,
`parsed_path`, `parsed_query`, `parsed_body`, `truncated_body`, `version`), so existing
policies keep working; what this gateway verified lives under `wimse`. Members the gateway
does not know are null, never guessed. `docs/policy-input.md` documents every field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authz.credentials.attestation import AttestationResult
from authz.credentials.authenticator import Caller
from authz.credentials.context import TransactionContext
from authz.credentials.httpsig.verifier import VerifiedSignature
from authz.credentials.identifiers import WorkloadId
from authz.credentials.presentation import TXN_TOKEN_HEADER
from authz.credentials.txn_token import VerifiedTxnToken
from authz.credentials.user_token import VerifiedUserToken
from authz.credentials.wpt import VerifiedWpt
from authz.policy.attributes import attributes_to_json
from authz.policy.http_parsing import ParsedBody, parse_path, parse_query
from authz.request import RequestView
from authz.routing import ServiceTarget

INPUT_VERSION = {"ext_authz": "v3", "encoding": "protojson"}


def _numeric_date(value: float) -> int | float:
    """JWT dates as the token wrote them: integral seconds stay integers."""
    return int(value) if value.is_integer() else value


def workload_id_document(workload: WorkloadId) -> dict[str, Any]:
    return {
        "id": workload.uri,
        "trust_domain": workload.trust_domain,
        "path": workload.path,
        "scheme": workload.scheme,
    }


def caller_document(caller: Caller) -> dict[str, Any]:
    document = workload_id_document(caller.id)
    document["authenticated_by"] = caller.authenticated_by.value
    if caller.wit is not None:
        document["wit"] = {
            "claims": caller.wit.claims,
            "issuer_kid": caller.wit.issuer_key.kid,
            "issuer_key_thumbprint": caller.wit.issuer_key.thumbprint,
            "proof_key_thumbprint": caller.wit.proof_key.thumbprint,
            "alg": caller.wit.issuer_alg,
            "proof_alg": caller.wit.proof_alg,
            "expires_at": _numeric_date(caller.wit.expires_at),
        }
    if isinstance(caller.proof, VerifiedWpt):
        document["proof"] = {
            "type": "wpt",
            "jti": caller.proof.jti,
            "aud": caller.proof.audience,
            "expires_at": _numeric_date(caller.proof.expires_at),
            "bound_headers": sorted(caller.proof.bound_headers),
        }
    elif isinstance(caller.proof, VerifiedSignature):
        document["proof"] = {
            "type": "http_signature",
            "nonce": caller.proof.nonce,
            "aud": caller.proof.audience,
            "created": caller.proof.created,
            "expires_at": _numeric_date(caller.proof.expires_at),
            "covered": list(caller.proof.covered),
            "bound_headers": sorted(caller.proof.bound_headers),
            "sign_response": caller.proof.sign_response,
        }
    return document


def txn_document(txn: VerifiedTxnToken, caller: Caller | None) -> dict[str, Any]:
    current_actor = dict(txn.actors[0].claims) if txn.actors else None
    bound = (
        caller is not None
        and caller.proof is not None
        and (TXN_TOKEN_HEADER in caller.proof.bound_headers)
    )
    return {
        "id": txn.txn_id,
        "sub": txn.subject,
        "scope": list(txn.scopes),
        "tctx": txn.tctx,
        "rctx": txn.rctx,
        # The transaction's origin; legacy list forms name it first.
        "req_wl": txn.requesting_workloads[0],
        "aud": list(txn.audiences),
        "iss": txn.issuer,
        "issued_at": _numeric_date(txn.issued_at),
        "expires_at": _numeric_date(txn.expires_at),
        "act": current_actor,
        "kid": txn.signing_key.kid,
        "key_thumbprint": txn.signing_key.thumbprint,
        "alg": txn.alg,
        "legacy": txn.legacy,
        "bound_by": caller.authenticated_by.value if bound and caller is not None else None,
        "claims": txn.claims,
    }


def user_token_document(token: VerifiedUserToken, header: str) -> dict[str, Any]:
    return {
        "type": token.type.value,
        "header": header,
        "iss": token.issuer,
        "sub": token.subject,
        "aud": list(token.audiences),
        "client_id": token.client_id,
        "scope": list(token.scopes),
        "roles": list(token.roles),
        "groups": list(token.groups),
        "entitlements": list(token.entitlements),
        "issued_at": _numeric_date(token.issued_at),
        "expires_at": _numeric_date(token.expires_at),
        "claims": token.claims,
    }


def user_document(context: TransactionContext) -> dict[str, Any] | None:
    """The principal of the transaction (from the Txn-Token) and the verified user token."""
    txn, token = context.txn, context.user_token
    if txn is None and token is None:
        return None
    return {
        "sub": txn.subject if txn is not None else None,
        "scope": list(txn.scopes) if txn is not None else None,
        "tctx": txn.tctx if txn is not None else None,
        "token": user_token_document(token, context.user_token_header)
        if token is not None
        else None,
    }


def attestation_result_document(result: AttestationResult) -> dict[str, Any]:
    return {
        "source": result.source.value,
        "status": result.status.value,
        "fresh": result.fresh,
        "profile": result.profile,
        "issued_at": _numeric_date(result.issued_at),
        "expires_at": _numeric_date(result.expires_at) if result.expires_at is not None else None,
        "verifier": result.verifier,
        "signed_by": result.signed_by,
        "subject": result.subject,
        "submods": {
            name: {
                "status": submod.status.value,
                "trustworthiness": dict(submod.trustworthiness),
                "policy_ids": list(submod.policy_ids),
            }
            for name, submod in result.submods.items()
        },
    }


def attestation_document(context: TransactionContext) -> dict[str, Any] | None:
    status = context.attestation_status
    if status is None:
        return None
    return {
        "status": status.value,
        "results": [attestation_result_document(result) for result in context.attestation],
    }


def service_document(service: ServiceTarget) -> dict[str, Any]:
    return {"name": service.name, "id": service.id.uri, "trust_domain": service.id.trust_domain}


def opa_envoy_members(request: RequestView, parsed_body: ParsedBody) -> dict[str, Any]:
    """What OPA-Envoy policies read, under OPA-Envoy's names."""
    return {
        "attributes": attributes_to_json(request.attributes),
        "parsed_path": parse_path(request.path),
        "parsed_query": parse_query(request.query),
        "parsed_body": parsed_body.value,
        "truncated_body": parsed_body.truncated,
        "version": INPUT_VERSION,
    }


def build_input(
    request: RequestView,
    parsed_body: ParsedBody,
    caller: Caller | None,
    service: ServiceTarget,
    context: TransactionContext,
) -> dict[str, Any]:
    # OPA-Envoy's members extended in place, not copied: this runs on every Check.
    document = opa_envoy_members(request, parsed_body)
    document["wimse"] = {
        "direction": "inbound",
        "caller": caller_document(caller) if caller is not None else None,
        "service": service_document(service),
        "txn": txn_document(context.txn, caller) if context.txn is not None else None,
        "chain": [
            {
                "id": hop.id,
                "trust_domain": hop.trust_domain,
                "source": hop.source.value,
                "verified": hop.verified,
                "authenticated_by": hop.authenticated_by.value
                if hop.authenticated_by is not None
                else None,
            }
            for hop in context.chain
        ],
        "user": user_document(context),
        "attestation": attestation_document(context),
    }
    if request.source_principal:
        document["source_principal"] = request.source_principal
    return document


def outbound_input(
    request: RequestView,
    parsed_body: ParsedBody,
    workload: WorkloadId,
    callee: Mapping[str, Any],
    txn: VerifiedTxnToken | None,
) -> dict[str, Any]:
    """The input of an egress decision: may `workload` send this request to `callee`
    (`name`, `origin`, `path` and `parsed_path` as Envoy will send them, `audience`,
    `proof`)? The request is the app's, as it reached its
    egress Envoy; `txn` is its Txn-Token, verified."""
    document = opa_envoy_members(request, parsed_body)
    document["wimse"] = {
        "direction": "outbound",
        "workload": workload_id_document(workload),
        "callee": dict(callee),
        "caller": None,
        "service": None,
        "txn": txn_document(txn, None) if txn is not None else None,
        "chain": [],
        "user": None,
        "attestation": None,
    }
    return document
