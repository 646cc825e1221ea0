"""The policy input document: OPA-Envoy's shape plus `input.wimse`.

Everything OPA-Envoy policies read is here under the same names (`attributes`,
`parsed_path`, `parsed_query`, `parsed_body`, `truncated_body`, `version`), so existing
policies keep working; what this gateway verified lives under `wimse`. Members the gateway
does not know are null, never guessed. `docs/policy-input.md` documents every field.
"""

from __future__ import annotations

from typing import Any

from authz.credentials.authenticator import Caller
from authz.policy.attributes import attributes_to_json
from authz.policy.http_parsing import ParsedBody, parse_path, parse_query
from authz.request import RequestView
from authz.routing import ServiceTarget

INPUT_VERSION = {"ext_authz": "v3", "encoding": "protojson"}


def _numeric_date(value: float) -> int | float:
    """JWT dates as the token wrote them: integral seconds stay integers."""
    return int(value) if value.is_integer() else value


def caller_document(caller: Caller) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": caller.id.uri,
        "trust_domain": caller.id.trust_domain,
        "path": caller.id.path,
        "scheme": caller.id.scheme,
        "authenticated_by": caller.authenticated_by.value,
    }
    if caller.wit is not None:
        document["wit"] = {
            "claims": caller.wit.claims,
            "issuer_kid": caller.wit.issuer_kid,
            "alg": caller.wit.issuer_alg,
            "proof_alg": caller.wit.proof_alg,
            "expires_at": _numeric_date(caller.wit.expires_at),
        }
    if caller.proof is not None:
        document["proof"] = {
            "type": "wpt",
            "jti": caller.proof.jti,
            "aud": caller.proof.audience,
            "expires_at": _numeric_date(caller.proof.expires_at),
            "bound_headers": sorted(caller.proof.bound_headers),
        }
    return document


def service_document(service: ServiceTarget) -> dict[str, Any]:
    return {"name": service.name, "id": service.id.uri, "trust_domain": service.id.trust_domain}


def build_input(
    request: RequestView,
    parsed_body: ParsedBody,
    caller: Caller | None,
    service: ServiceTarget,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "attributes": attributes_to_json(request.attributes),
        "parsed_path": parse_path(request.path),
        "parsed_query": parse_query(request.query),
        "parsed_body": parsed_body.value,
        "truncated_body": parsed_body.truncated,
        "version": INPUT_VERSION,
        "wimse": {
            "caller": caller_document(caller) if caller is not None else None,
            "service": service_document(service),
            # Reserved for transaction context, caller chains, user claims and attestation.
            "txn": None,
            "chain": None,
            "user": None,
            "attestation": None,
        },
    }
    if request.source_principal:
        document["source_principal"] = request.source_principal
    return document
