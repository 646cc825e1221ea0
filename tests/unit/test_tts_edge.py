"""Edge mode in process: an access token in, a Txn-Token out, checked by the gateway's own
Txn-Token verifier and by the independent checker; every refusal with its answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from authz.answers import Verdict
from authz.credentials.jose import b64url_decode
from authz.devtools.keys import public_jwk
from authz.devtools.tts import EDGE_WORKLOAD, access_token, tts_section
from authz.errors import ConfigError
from tests.independent import txn_token_checker as checker
from tests.support import (
    GatewayHarness,
    check_request,
    expect_allowed,
    expect_denied,
    expect_failed,
    header,
)

API = "https://api.demo.example"


def edge_overrides(harness: GatewayHarness, tmp_path: Path, **edge: Any) -> dict[str, Any]:
    section = tts_section(harness.directory, endpoint=False)
    section["edge"].update(edge)
    return {
        "server": {
            "listeners": [
                {"address": "127.0.0.1:9191"},
                {"address": f"unix:{tmp_path}/edge.sock", "mode": "edge"},
            ]
        },
        "tts": section,
    }


@pytest.fixture
def edge(harness: GatewayHarness, tmp_path: Path) -> GatewayHarness:
    return harness.rebuild(**edge_overrides(harness, tmp_path))


def send(
    harness: GatewayHarness,
    path: str,
    headers: Mapping[str, str] | None = None,
    *,
    method: str = "POST",
    body: bytes = b'{"item": "cone", "amount": 250}',
    **kwargs: Any,
) -> Verdict:
    headers = {"content-type": "application/json", **(headers or {})}
    request = check_request(path, headers, method=method, raw_body=body, service=None, **kwargs)
    pipeline = harness.gateway.edge
    assert pipeline is not None
    return asyncio.run(pipeline.check(request.attributes))


def bearer(harness: GatewayHarness, **kwargs: Any) -> dict[str, str]:
    kwargs.setdefault("now", harness.clock.now)
    return {"authorization": f"Bearer {access_token(harness.identities, **kwargs)}"}


def claims_of(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(b64url_decode(token.split(".")[1]))
    return decoded


def tts_jwks(harness: GatewayHarness) -> dict[str, Any]:
    return {"keys": [public_jwk(harness.identities.tts)]}


def test_an_access_token_becomes_a_txn_token_every_verifier_accepts(edge: GatewayHarness) -> None:
    allowed = expect_allowed(send(edge, "/api/orders", bearer(edge)))
    token = header(allowed, "txn-token")
    assert token is not None
    assert "authorization" in allowed.headers_to_remove
    claims = checker.check_txn_token(
        token, tts_jwks(edge), now=edge.clock.now, trust_domain="demo.example", max_lifetime=300
    )
    checker.check_issued_from(
        claims,
        subject="user-4711",
        granted_scope=["checkout", "read"],
        requesting_workload=EDGE_WORKLOAD,
        trust_domain="demo.example",
    )
    assert claims["scope"] == "checkout"
    assert claims["tctx"] == {"action": "checkout", "amount": 250}
    assert claims["rctx"] == {"authn": "access_token", "req_ip": "10.0.0.7"}
    # The gateway's own inbound side: the Txn-Token, bound by the frontend's WPT, is
    # what the next hop checks and its policy reads.
    frontend = edge.signed_headers("/api/hello", txn_token=token)
    verdict = edge.check_path("/api/hello", {**frontend, "txn-token": token})
    expect_allowed(verdict)


def test_two_requests_start_two_transactions(edge: GatewayHarness) -> None:
    tokens = [
        header(expect_allowed(send(edge, "/api/orders", bearer(edge))), "txn-token") or ""
        for _ in range(2)
    ]
    assert claims_of(tokens[0])["txn"] != claims_of(tokens[1])["txn"]


def test_req_ip_is_envoys_peer_address_never_x_forwarded_for(edge: GatewayHarness) -> None:
    headers = {**bearer(edge), "x-forwarded-for": "203.0.113.9", "x-real-ip": "203.0.113.9"}
    token = header(expect_allowed(send(edge, "/api/orders", headers)), "txn-token") or ""
    assert claims_of(token)["rctx"]["req_ip"] == "10.0.0.7"


def test_a_client_sent_txn_token_is_replaced(edge: GatewayHarness) -> None:
    forged = edge.txn_token(subject="someone-else")
    allowed = expect_allowed(send(edge, "/api/orders", {**bearer(edge), "txn-token": forged}))
    token = header(allowed, "txn-token") or ""
    assert token != forged
    assert claims_of(token)["sub"] == "user-4711"
    assert "txn-token" not in allowed.headers_to_remove


def test_a_route_may_keep_the_external_token(edge: GatewayHarness) -> None:
    keep = {"wimse.external_token": "keep"}
    allowed = expect_allowed(send(edge, "/api/orders", bearer(edge), context=keep))
    assert "authorization" not in allowed.headers_to_remove
    expect_failed(
        send(edge, "/api/orders", bearer(edge), context={"wimse.external_token": "yes"}),
        "route.config_invalid",
    )


@pytest.mark.parametrize(
    ("token_kwargs", "reason"),
    [
        ({"audience": "https://other-api.example"}, "user.aud_mismatch"),
        ({"ttl": -60}, "user.expired"),
        ({"typ": "JWT"}, "user.typ_invalid"),
    ],
)
def test_an_invalid_access_token_is_401_invalid_token(
    edge: GatewayHarness, token_kwargs: dict[str, Any], reason: str
) -> None:
    denied = expect_denied(send(edge, "/api/orders", bearer(edge, **token_kwargs)), reason, 401)
    assert header(denied, "www-authenticate") == 'Bearer error="invalid_token"'
    assert header(denied, "txn-token") is None


def test_an_unknown_issuer_is_401(edge: GatewayHarness) -> None:
    from authz.devtools.keys import generate_private_jwk
    from authz.devtools.mint import mint_user_token

    stranger = mint_user_token(
        generate_private_jwk("ES256"),
        issuer="https://idp.evil.example",
        subject="user-4711",
        audience=API,
        scope="checkout",
        now=edge.clock.now,
    )
    headers = {"authorization": f"Bearer {stranger}"}
    expect_denied(send(edge, "/api/orders", headers), "user.issuer_unknown", 401)


def test_no_credential_is_401_with_a_bearer_challenge(edge: GatewayHarness) -> None:
    denied = expect_denied(send(edge, "/api/orders"), "edge.credentials_missing", 401)
    assert header(denied, "www-authenticate") == "Bearer"
    other = {"authorization": "Basic dXNlcjpwdw=="}
    expect_denied(send(edge, "/api/orders", other), "edge.authorization_unsupported", 401)


def test_a_scope_wider_than_granted_is_refused(edge: GatewayHarness) -> None:
    denied = expect_denied(
        send(edge, "/api/orders", bearer(edge, scope="read")), "issuance.scope_too_wide", 403
    )
    assert header(denied, "txn-token") is None


def test_a_token_without_a_scope_claim_grants_nothing(edge: GatewayHarness) -> None:
    expect_denied(send(edge, "/api/orders", bearer(edge, scope="")), "issuance.no_grant", 403)


def test_a_request_no_issuance_rule_covers_is_403(edge: GatewayHarness) -> None:
    expect_denied(send(edge, "/api/orders", bearer(edge), method="DELETE"), "issuance.denied", 403)


def test_an_mtls_client_gets_its_configured_grant_and_no_more(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    partner = "spiffe://partner.example/reseller"
    edge = harness.rebuild(**edge_overrides(harness, tmp_path, mtls_clients={partner: ["read"]}))
    allowed = expect_allowed(send(edge, "/api/orders/7", method="GET", body=b"", principal=partner))
    token = header(allowed, "txn-token") or ""
    assert (claims_of(token)["sub"], claims_of(token)["scope"]) == (partner, "read")
    expect_denied(send(edge, "/api/orders", principal=partner), "issuance.scope_too_wide", 403)
    unknown = "spiffe://partner.example/other"
    expect_denied(
        send(edge, "/api/orders/7", method="GET", body=b"", principal=unknown),
        "edge.credentials_missing",
        401,
    )


class WrongPolicy:
    """An issuance policy answering `decision` whatever it is asked."""

    def __init__(self, decision: object, revision: str) -> None:
        self._decision = decision
        self.revision = revision

    async def evaluate(self, input_document: dict[str, Any]) -> object:
        return self._decision


@pytest.mark.parametrize(
    ("decision", "outcome"),
    [
        ({"allowed": True, "scope": ["checkout", "admin"]}, "issuance.scope_too_wide"),
        ({"allowed": True, "scope": "checkout admin"}, "issuance.scope_too_wide"),
        ({"allowed": True, "scope": []}, "issuance.scope_empty"),
        ({"allowed": True, "txn": "chosen-by-policy"}, "policy.invalid_decision"),
        ({"allowed": True, "sub": "admin"}, "policy.invalid_decision"),
        ({"allowed": True, "aud": "other.example"}, "policy.invalid_decision"),
        ({"allowed": True, "exp": 9999999999}, "policy.invalid_decision"),
        ({"allowed": True, "req_wl": "spiffe://demo.example/x"}, "policy.invalid_decision"),
        ({"allowed": "yes"}, "policy.invalid_decision"),
        (True, "policy.invalid_decision"),
        ({"allowed": True, "tctx": ["not", "an", "object"]}, "policy.invalid_decision"),
    ],
)
def test_a_deliberately_wrong_issuance_policy_never_yields_a_wider_or_forged_token(
    edge: GatewayHarness, decision: object, outcome: str
) -> None:
    pipeline = edge.gateway.edge
    assert pipeline is not None
    pipeline.engine = WrongPolicy(decision, pipeline.engine.revision)
    verdict = send(edge, "/api/orders", bearer(edge))
    if outcome.startswith("issuance."):
        expect_denied(verdict, outcome, 403)
    else:
        expect_failed(verdict, outcome)
    assert header(verdict, "txn-token") is None


def test_a_policy_that_sets_rctx_req_ip_cannot_choose_it(edge: GatewayHarness) -> None:
    pipeline = edge.gateway.edge
    assert pipeline is not None
    decision = {"allowed": True, "rctx": {"req_ip": "198.51.100.1", "authn": "x"}}
    pipeline.engine = WrongPolicy(decision, pipeline.engine.revision)
    token = header(expect_allowed(send(edge, "/api/orders", bearer(edge))), "txn-token") or ""
    assert claims_of(token)["rctx"] == {"req_ip": "10.0.0.7", "authn": "x"}


class BrokenSigner:
    """A TTS key that cannot sign (an HSM gone, a key file unreadable): its use raises."""

    alg = "ES256"

    def sign(self, data: bytes) -> bytes:
        raise OSError("the signing key is not available")


def test_a_tts_key_that_cannot_sign_is_503_never_a_request_without_its_token(
    edge: GatewayHarness,
) -> None:
    pipeline = edge.gateway.edge
    assert pipeline is not None
    keys = pipeline.keys
    object.__setattr__(keys, "signer", BrokenSigner())
    failed = expect_failed(send(edge, "/api/orders", bearer(edge)), "internal.error")
    assert failed.status == 503
    assert header(failed, "txn-token") is None


@pytest.mark.parametrize("grant", ["read write", "café", ""])
def test_an_mtls_grant_that_is_not_one_scope_token_is_refused_at_load(
    harness: GatewayHarness, tmp_path: Path, grant: str
) -> None:
    partner = "spiffe://partner.example/reseller"
    overrides = edge_overrides(harness, tmp_path, mtls_clients={partner: [grant]})
    with pytest.raises(ConfigError, match="is not one scope-token"):
        harness.rebuild(**overrides).config()
