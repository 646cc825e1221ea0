"""The attack corpus of the Transaction Token Service: every known way to get a Txn-Token
issued that should not be, at the edge (`mode: edge`) and at the token-exchange endpoint
(`mode: tts`, over real HTTP).

Each attack starts from a request the TTS answers with a Txn-Token (see the controls) and
changes one thing. Every attack must be refused with its exact answer — at the edge the
status, reason code (docs/reasons.md) and RFC 6750 challenge; at the endpoint the status,
the OAuth error, and the reason code in the decision log — and no Txn-Token may be issued.
An attack the gateway does not refuse as documented is marked `xfail(strict=True)`: a
finding to fix, never a test to weaken.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from authz.answers import Denied, Verdict
from authz.devtools.httpsig import sign_request
from authz.devtools.keys import generate_private_jwk
from authz.devtools.mint import mint_wit, mint_wpt, sign_jws
from authz.devtools.stack import USER_TOKEN_AUDIENCE, USER_TOKEN_ISSUER
from authz.devtools.tts import TTS_URL, access_token
from authz.tts.exchange import (
    ACCESS_TOKEN_TYPE,
    GRANT_TYPE,
    JWT_TOKEN_TYPE,
    REFRESH_TOKEN_TYPE,
    SELF_SIGNED_TYPE,
    TXN_TOKEN_TYPE,
    UNSIGNED_JSON_TYPE,
)
from tests.e2e.test_tts_endpoint import Answer, Requester, exchange_scenario, form, post
from tests.independent import txn_token_checker as checker
from tests.security.forgery import (
    DROP,
    Forge,
    Key,
    attacker_key,
    compact,
    compact_json,
    key_bearing_header,
    public_jwk_json,
    public_pem,
)
from tests.support import GatewayHarness, check_request, expect_allowed, expect_denied, header
from tests.unit.test_tts_edge import claims_of, edge_overrides, send

FRONTEND = "spiffe://demo.example/frontend"
MTLS_CLIENT = "spiffe://partner.example/reseller"
PEER_ADDRESS = "10.0.0.7"
"""The client address Envoy reports for every request `check_request` builds."""
INVALID_TOKEN = 'Bearer error="invalid_token"'
FORM_TYPE = "application/x-www-form-urlencoded"
OTHER_WHITESPACE = {
    "tab": "\t",
    "newline": "\n",
    "no-break-space": "\u00a0",
    "em-space": "\u2003",
    "unit-separator": "\x1f",
}
"""Characters `str.split()` splits on that RFC 6749 §3.3 does not (only SP delimits)."""

Call = tuple[str, str, Mapping[str, str], bytes]
"""One HTTP request to the endpoint: method, path, headers, body."""


# =========================================================================================
# The edge: helpers.
# =========================================================================================


@pytest.fixture
def edge(harness: GatewayHarness, tmp_path: Path) -> GatewayHarness:
    """An edge whose only mTLS client is `MTLS_CLIENT`, granted `read`."""
    return harness.rebuild(
        **edge_overrides(harness, tmp_path, mtls_clients={MTLS_CLIENT: ["read"]})
    )


@pytest.fixture
def forge(edge: GatewayHarness) -> Forge:
    return Forge(edge)


def access(
    forge: Forge,
    *,
    header: Mapping[str, Any] | None = None,
    claims: Mapping[str, Any] | None = None,
    key: Key | None = None,
) -> str:
    """An access token from the demo IdP granting `checkout read`, changed as asked."""
    claims = {"scope": "checkout read", **(claims or {})}
    return forge.user_token(header=header, claims=claims, key=key)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def checkout(edge: GatewayHarness, headers: Mapping[str, str], **kwargs: Any) -> Verdict:
    """`POST /api/orders`: starts a checkout, which needs the `checkout` scope."""
    return send(edge, "/api/orders", headers, **kwargs)


def read(edge: GatewayHarness, headers: Mapping[str, str], **kwargs: Any) -> Verdict:
    """`GET /api/orders/7`: a read, which needs the `read` scope."""
    return send(edge, "/api/orders/7", headers, method="GET", body=b"", **kwargs)


def refused_at_edge(
    verdict: Verdict, reason: str, status: int, challenge: str | None = INVALID_TOKEN
) -> Denied:
    """Denied with `reason` and `status`, the RFC 6750 `challenge` (None: none), and no
    Txn-Token for the upstream request."""
    denied = expect_denied(verdict, reason, status)
    assert header(denied, "x-wimse-authz-reason") == reason
    assert header(denied, "www-authenticate") == challenge
    assert header(denied, "txn-token") is None
    return denied


def issued(verdict: Verdict) -> dict[str, Any]:
    """The claims of the Txn-Token an allowed request goes on with."""
    token = header(expect_allowed(verdict), "txn-token")
    assert token is not None
    return claims_of(token)


def hmac_keyed_with(secret: Callable[[dict[str, Any]], bytes]) -> Callable[[Forge], str]:
    """HS256 keyed with the IdP's public key bytes: RS/ES-to-HMAC key confusion."""
    return lambda f: access(
        f, header={"alg": "HS256"}, key=secret(f.harness.identities.user_issuer)
    )


def naming_its_own_key(name: str) -> Callable[[Forge], str]:
    """Signed by the attacker, whose key the JOSE header carries (`jwk`, `x5c`) or points
    at (`jku`, `x5u`)."""
    key = attacker_key("ES256")
    return lambda f: access(f, header={"kid": DROP, name: key_bearing_header(name, key)}, key=key)


def signed_by(name: str) -> Callable[[Forge], str]:
    """Signed by the key of another configured key set, naming its kid."""

    def token(forge: Forge) -> str:
        key: dict[str, Any] = getattr(forge.harness.identities, name)
        return access(forge, header={"kid": key["kid"]}, key=key)

    return token


def unsigned(forge: Forge) -> str:
    """`alg: none` with an empty signature (RFC 7519 §6 Unsecured JWT)."""
    header = forge.user_header({"alg": "none"})
    return compact(
        compact_json(header), compact_json(forge.user_claims({"scope": "checkout read"})), None
    )


def id_token(forge: Forge) -> str:
    """What an OpenID provider issues as an ID token: typed `JWT`, for the client, no scope."""
    claims = {
        "aud": "demo-client",
        "nonce": "n-0S6_WzA2Mj",
        "auth_time": forge.now - 60,
        "scope": DROP,
        "client_id": DROP,
        "jti": DROP,
    }
    return forge.user_token(header={"typ": "JWT"}, claims=claims)


def times(**offsets: int) -> Callable[[Forge], str]:
    """An access token whose dates are `now` plus `offsets`."""
    return lambda f: access(f, claims={name: f.now + value for name, value in offsets.items()})


def with_claims(**changes: Any) -> Callable[[Forge], str]:
    return lambda f: access(f, claims=changes)


# =========================================================================================
# The edge: controls.
# =========================================================================================


def test_control_a_forged_but_valid_access_token_gets_a_txn_token(
    edge: GatewayHarness, forge: Forge
) -> None:
    claims = issued(checkout(edge, bearer(access(forge))))
    assert (claims["sub"], claims["scope"]) == ("alice", "checkout")


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("bearer {}", id="lowercase-scheme"),
        pytest.param("BEARER {}", id="uppercase-scheme"),
        pytest.param("Bearer   {}", id="several-spaces"),
        pytest.param("Bearer {} ", id="trailing-space"),
    ],
)
def test_control_bearer_spellings_rfc_6750_allows_are_accepted(
    edge: GatewayHarness, forge: Forge, authorization: str
) -> None:
    # RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token, the scheme compared
    # case-insensitively (RFC 9110 §11.1). Not attacks: the same token, spelt legally.
    issued(checkout(edge, {"authorization": authorization.format(access(forge))}))


def test_control_the_configured_mtls_client_gets_its_grant(edge: GatewayHarness) -> None:
    assert issued(read(edge, {}, principal=MTLS_CLIENT))["sub"] == MTLS_CLIENT


# =========================================================================================
# The edge: forged, confused or stale access tokens (401, `invalid_token`).
# =========================================================================================

ACCESS_TOKEN_ATTACKS = [
    # Algorithms (RFC 8725 §3.1).
    pytest.param(unsigned, "user.malformed", id="alg-none-unsigned"),
    pytest.param(
        lambda f: access(f, header={"alg": "none"}), "user.alg_not_allowed", id="alg-none-signed"
    ),
    pytest.param(hmac_keyed_with(public_pem), "user.alg_not_allowed", id="hs256-keyed-with-pem"),
    pytest.param(
        hmac_keyed_with(public_jwk_json), "user.alg_not_allowed", id="hs256-keyed-with-jwk"
    ),
    # Keys named by the token itself (RFC 8725 §3.10).
    *(
        pytest.param(naming_its_own_key(name), "user.header_key_forbidden", id=f"{name}-header")
        for name in ("jwk", "jku", "x5u", "x5c")
    ),
    # Keys and kids of the gateway's other key sets.
    pytest.param(signed_by("tts"), "user.kid_unknown", id="kid-and-key-of-the-tts"),
    pytest.param(signed_by("issuer"), "user.kid_unknown", id="kid-and-key-of-the-wit-issuer"),
    pytest.param(
        lambda f: access(f, header={"kid": DROP}, key=f.harness.identities.tts),
        "user.signature_invalid",
        id="no-kid-signed-by-the-tts",
    ),
    # Explicit typing (RFC 9068 §2.1, RFC 8725 §3.11): other JWTs are not access tokens.
    pytest.param(lambda f: access(f, header={"typ": "JWT"}), "user.typ_invalid", id="typ-jwt"),
    pytest.param(lambda f: access(f, header={"typ": DROP}), "user.typ_invalid", id="typ-missing"),
    pytest.param(
        lambda f: access(f, header={"typ": "txntoken+jwt"}), "user.typ_invalid", id="typ-txntoken"
    ),
    pytest.param(lambda f: f.harness.txn_token(), "user.typ_invalid", id="a-real-txn-token"),
    pytest.param(lambda f: f.wit(), "user.typ_invalid", id="a-real-wit"),
    pytest.param(id_token, "user.typ_invalid", id="an-id-token"),
    # Lifetimes (the TTS allows access tokens of up to an hour).
    pytest.param(times(iat=-1200, exp=-600), "user.expired", id="expired"),
    pytest.param(times(nbf=300), "user.not_yet_valid", id="nbf-in-future"),
    pytest.param(times(iat=300, exp=900), "user.iat_in_future", id="iat-in-future"),
    pytest.param(with_claims(exp=32_503_680_000), "user.exp_too_far", id="exp-in-year-3000"),
    pytest.param(times(iat=-3500, exp=600), "user.lifetime_exceeded", id="lifetime-over-an-hour"),
    # Audience and issuer: exact strings.
    pytest.param(
        with_claims(aud="https://other-api.demo.example"), "user.aud_mismatch", id="aud-another-api"
    ),
    pytest.param(
        with_claims(aud=["https://other-api.demo.example", "demo-client"]),
        "user.aud_mismatch",
        id="aud-array-without-ours",
    ),
    pytest.param(with_claims(aud=TTS_URL), "user.aud_mismatch", id="aud-the-token-endpoint"),
    pytest.param(
        with_claims(iss=USER_TOKEN_ISSUER + "/"), "user.issuer_unknown", id="iss-trailing-slash"
    ),
    pytest.param(
        with_claims(iss=USER_TOKEN_ISSUER.upper()), "user.issuer_unknown", id="iss-other-case"
    ),
    # Signatures.
    pytest.param(
        lambda f: access(f).rsplit(".", 1)[0] + ".", "user.malformed", id="signature-stripped"
    ),
    pytest.param(
        lambda f: access(f).rsplit(".", 1)[0], "user.malformed", id="signature-segment-removed"
    ),
    pytest.param(lambda f: access(f)[:-8], "user.signature_invalid", id="signature-truncated"),
    pytest.param(
        lambda f: access(f, key=attacker_key("ES256")),
        "user.signature_invalid",
        id="signature-by-another-key",
    ),
    # Claim types.
    pytest.param(with_claims(scope=["checkout", "read"]), "user.claim_invalid", id="scope-a-list"),
]


@pytest.mark.parametrize(("token", "reason"), ACCESS_TOKEN_ATTACKS)
def test_a_forged_confused_or_stale_access_token_is_401_and_issues_nothing(
    edge: GatewayHarness, forge: Forge, token: Callable[[Forge], str], reason: str
) -> None:
    refused_at_edge(checkout(edge, bearer(token(forge))), reason, 401)


# =========================================================================================
# The edge: the Authorization header itself.
# =========================================================================================

AUTHORIZATION_ATTACKS = [
    # `{0}` is a valid access token for alice, `{1}` one for mallory.
    pytest.param("Bearer {0}, Bearer {1}", "user.multiple", id="two-bearers-joined-by-comma"),
    pytest.param("Bearer {0},Bearer {1}", "user.multiple", id="two-bearers-joined-as-envoy-does"),
    pytest.param("Bearer {0},Basic dXNlcjpwdw==", "user.multiple", id="bearer-then-basic"),
    pytest.param(
        "Basic dXNlcjpwdw==,Bearer {0}", "edge.authorization_unsupported", id="basic-then-bearer"
    ),
    pytest.param("DPoP {0}", "edge.authorization_unsupported", id="dpop-scheme"),
    pytest.param("Bearer\t{0}", "edge.authorization_unsupported", id="tab-after-scheme"),
    pytest.param("Bearer{0}", "edge.authorization_unsupported", id="no-space-after-scheme"),
    pytest.param("Bearer ", "user.malformed", id="bearer-without-a-token"),
]


@pytest.mark.parametrize(("authorization", "reason"), AUTHORIZATION_ATTACKS)
def test_an_ambiguous_or_foreign_authorization_header_is_401(
    edge: GatewayHarness, forge: Forge, authorization: str, reason: str
) -> None:
    value = authorization.format(access(forge), access(forge, claims={"sub": "mallory"}))
    # RFC 6750 §3.1: a client that used another method at all gets no error code.
    challenge = "Bearer" if reason == "edge.authorization_unsupported" else INVALID_TOKEN
    refused_at_edge(checkout(edge, {"authorization": value}), reason, 401, challenge=challenge)


def test_two_authorization_header_lines_are_401(edge: GatewayHarness, forge: Forge) -> None:
    # Envoy's `header_map` shape keeps each line; the gateway joins them as Envoy would.
    request = check_request(
        "/api/orders",
        {"content-type": "application/json", **bearer(access(forge))},
        method="POST",
        raw_body=b'{"item": "cone"}',
        service=None,
        raw_headers=True,
    )
    mallory = "Bearer " + access(forge, claims={"sub": "mallory"})
    request.attributes.request.http.header_map.headers.add(
        key="authorization", raw_value=mallory.encode()
    )
    pipeline = edge.gateway.edge
    assert pipeline is not None
    refused_at_edge(asyncio.run(pipeline.check(request.attributes)), "user.multiple", 401)


# =========================================================================================
# The edge: a grant that only resembles the one the request needs (403, nothing issued).
# =========================================================================================


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        pytest.param({"scope": "checkout-admin read"}, "issuance.scope_too_wide", id="prefix"),
        pytest.param({"scope": "admin:checkout read"}, "issuance.scope_too_wide", id="suffix"),
        pytest.param({"scope": "CHECKOUT read"}, "issuance.scope_too_wide", id="other-case"),
        pytest.param({"scope": "checkout,read"}, "issuance.scope_too_wide", id="comma-joined"),
        pytest.param({"scope": ""}, "issuance.scope_too_wide", id="empty-scope"),
        pytest.param(
            {"scope": DROP, "scp": ["checkout", "read"]}, "issuance.no_grant", id="scp-not-scope"
        ),
    ],
)
def test_a_scope_that_only_resembles_checkout_grants_no_checkout(
    edge: GatewayHarness, forge: Forge, claims: dict[str, Any], reason: str
) -> None:
    verdict = checkout(edge, bearer(access(forge, claims=claims)))
    refused_at_edge(verdict, reason, 403, challenge=None)


@pytest.mark.parametrize("separator", OTHER_WHITESPACE.values(), ids=OTHER_WHITESPACE.keys())
def test_a_scope_split_on_other_whitespace_is_401_not_a_checkout_grant(
    edge: GatewayHarness, forge: Forge, separator: str
) -> None:
    # RFC 9068 §2.2.3 takes `scope` from RFC 8693 §4.2: space-separated RFC 6749 §3.3
    # scope-tokens (printable ASCII). Anything else is an invalid claim, never `read` and
    # `checkout`.
    verdict = checkout(edge, bearer(access(forge, claims={"scope": f"read{separator}checkout"})))
    refused_at_edge(verdict, "user.claim_invalid", 401)


# =========================================================================================
# The edge: no access token, but something that looks like a credential.
# =========================================================================================


def test_a_client_sent_txn_token_without_an_access_token_is_401_and_not_forwarded(
    edge: GatewayHarness,
) -> None:
    forged = edge.txn_token(subject="mallory")
    verdict = checkout(edge, {"txn-token": forged})
    refused_at_edge(verdict, "edge.credentials_missing", 401, challenge="Bearer")


@pytest.mark.parametrize(
    ("principal", "headers"),
    [
        pytest.param("spiffe://partner.example/Reseller", {}, id="path-case"),
        pytest.param("spiffe://PARTNER.example/reseller", {}, id="trust-domain-case"),
        pytest.param("SPIFFE://partner.example/reseller", {}, id="scheme-case"),
        pytest.param(MTLS_CLIENT + "/", {}, id="trailing-slash"),
        pytest.param(MTLS_CLIENT + "/admin", {}, id="child-path"),
        pytest.param(" " + MTLS_CLIENT, {}, id="leading-space"),
        pytest.param(
            "",
            {"x-forwarded-client-cert": f"By=spiffe://demo.example/frontend;URI={MTLS_CLIENT}"},
            id="xfcc-header-without-a-peer-certificate",
        ),
    ],
)
def test_an_mtls_principal_that_only_resembles_a_configured_one_gets_nothing(
    edge: GatewayHarness, principal: str, headers: dict[str, str]
) -> None:
    verdict = read(edge, headers, principal=principal)
    refused_at_edge(verdict, "edge.credentials_missing", 401, challenge="Bearer")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"x-forwarded-for": "203.0.113.9"}, id="x-forwarded-for"),
        pytest.param({"x-forwarded-for": "203.0.113.9, 10.0.0.7"}, id="x-forwarded-for-chain"),
        pytest.param({"forwarded": "for=203.0.113.9"}, id="forwarded"),
        pytest.param({"x-real-ip": "203.0.113.9"}, id="x-real-ip"),
        pytest.param({"x-envoy-external-address": "203.0.113.9"}, id="x-envoy-external-address"),
        pytest.param({"true-client-ip": "203.0.113.9"}, id="true-client-ip"),
    ],
)
def test_a_forwarding_header_never_sets_req_ip(
    edge: GatewayHarness, forge: Forge, headers: dict[str, str]
) -> None:
    # The request is valid and gets its token: the attack fails if `rctx.req_ip` is still
    # the peer address Envoy reports.
    claims = issued(checkout(edge, {**bearer(access(forge)), **headers}))
    assert claims["rctx"]["req_ip"] == PEER_ADDRESS


# =========================================================================================
# The token-exchange endpoint: helpers.
# =========================================================================================


@dataclass(frozen=True)
class Refusal:
    """The endpoint's answer: `status`; the OAuth `error` (None: not an OAuth error); the
    `reason` in the decision log (None: answered by the HTTP layer, no decision made)."""

    status: int
    error: str | None
    reason: str | None


@dataclass(frozen=True)
class ExchangeAttack:
    calls: Callable[[GatewayHarness], Sequence[Call]]
    """The requests, the attack last; any before it set the attack up and must succeed."""
    refusal: Refusal
    endpoint: Mapping[str, Any] = field(default_factory=dict)
    """Settings of `tts.endpoint` for this attack."""


def run_attack(harness: GatewayHarness, tmp_path: Path, attack: ExchangeAttack) -> None:
    """Send the attack's requests over HTTP: the last must be refused as expected, and no
    Txn-Token issued but for the set-up requests."""
    log = tmp_path / "decisions.jsonl"

    def calls(h: GatewayHarness, answers: list[Answer]) -> Iterator[Call]:
        yield from attack.calls(h)

    # Earlier tests' policy engines must be collected here, not on the decision log's
    # writer thread (regorus engines may only be dropped on the thread that made them).
    gc.collect()
    logged = harness.rebuild(decision_log={"output": str(log)})
    *setup, answer = exchange_scenario(logged, tmp_path, calls, **attack.endpoint)
    for earlier in setup:
        checker.check_exchange_response(earlier.status, earlier.headers, earlier.body)

    expected = attack.refusal
    assert answer.status == expected.status, answer.body
    assert b"access_token" not in answer.body
    if expected.status in (400, 401):
        assert expected.error is not None
        checker.check_exchange_error(answer.status, answer.headers, answer.body, expected.error)
    elif expected.error is not None:
        assert answer.json()["error"] == expected.error
    if expected.status == 401:
        assert answer.headers.get("WWW-Authenticate") == "WPT"

    decisions = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [d["reason"] for d in decisions].count("tts.issued") == len(setup)
    if expected.reason is not None:
        assert decisions, "no decision was logged"
        last = decisions[-1]
        assert (last["result"], last["status"], last["reason"], last["txn"]) == (
            "deny",
            expected.status,
            expected.reason,
            None,
        )


def good_access_token(h: GatewayHarness, scope: str = "checkout read") -> str:
    """An access token for the endpoint, for user-4711."""
    return access_token(h.identities, audience=TTS_URL, now=h.clock.now, scope=scope)


def exchange(
    h: GatewayHarness,
    *,
    requester: str = "frontend",
    headers: Mapping[str, str] | None = None,
    suffix: bytes = b"",
    **parameters: str,
) -> Call:
    """A Txn-Token Request by `requester` (WIT + WPT), valid unless changed: `parameters`
    replace the form's, `suffix` is appended to the body, `headers` replace the
    requester's credentials."""
    parameters.setdefault("subject_token", good_access_token(h))
    credentials = Requester(h, requester).headers() if headers is None else headers
    return post(credentials, form(**parameters) + suffix)


def replacement(
    h: GatewayHarness, txn_token: str, *, requester: str = "orders", scope: str = "checkout"
) -> Call:
    """A request to replace `txn_token` (by orders, which the sample policy allows)."""
    return exchange(
        h,
        requester=requester,
        subject_token=txn_token,
        subject_token_type=TXN_TOKEN_TYPE,
        scope=scope,
    )


def credentials(
    h: GatewayHarness, wit: str, *, audience: str = TTS_URL, workload: str = "frontend"
) -> dict[str, str]:
    """`wit` with a WPT by `workload`'s key for `audience`."""
    proof = mint_wpt(h.identities.workloads[workload], wit, audience, now=h.clock.now)
    return {"workload-identity-token": wit, "authorization": f"WPT {proof}"}


def foreign_wit(h: GatewayHarness) -> str:
    """A WIT from the issuer of a trust domain the gateway has no anchors for."""
    key = h.identities.workloads["frontend"]
    issuer = generate_private_jwk("ES256")
    return mint_wit(issuer, "spiffe://evil.example/frontend", key, now=h.clock.now)


def twice(h: GatewayHarness, name: str) -> dict[str, str]:
    """The frontend's credentials with a second value of header `name` joined on."""
    mine, other = Requester(h, "frontend").headers(), Requester(h, "ops").headers()
    return {**mine, name: f"{mine[name]},{other[name]}"}


def signed_request(
    h: GatewayHarness, *, key: dict[str, Any] | None = None, sent_body: bytes | None = None
) -> Call:
    """A Txn-Token Request authenticated by an HTTP Message Signature with the frontend's
    WIT key (`key`: signed by another key; `sent_body`: sent with another body)."""
    body = form(subject_token=good_access_token(h))
    headers = {"workload-identity-token": h.wit(), "content-type": FORM_TYPE}
    signature = sign_request(
        key or h.identities.workloads["frontend"],
        method="POST",
        path="/token",
        audience=TTS_URL,
        headers=headers,
        body=body,
        now=h.clock.now,
    )
    return post({**headers, **signature}, body if sent_body is None else sent_body)


def self_signed(h: GatewayHarness, *, key: dict[str, Any] | None = None, **changes: Any) -> str:
    """A subject token in which the frontend vouches for user-1, signed with its WIT key."""
    now = int(h.clock.now)
    document = {"iss": FRONTEND, "sub": "user-1", "aud": TTS_URL, "iat": now, "exp": now + 60}
    claims = {**document, "scope": "checkout", **changes}
    return sign_jws(claims, key or h.identities.workloads["frontend"], {"typ": "JWT"})


def subject(
    kind: str, token: Callable[[GatewayHarness], str]
) -> Callable[[GatewayHarness], Sequence[Call]]:
    """The frontend exchanging the subject token `token(h)` of type `kind`."""
    return lambda h: [exchange(h, subject_token=token(h), subject_token_type=kind)]


def dated_txn_token(h: GatewayHarness, **offsets: int) -> str:
    """A Txn-Token from the demo TTS (a checkout for user-4711) whose dates are `now`
    plus `offsets`."""
    now = int(h.clock.now)
    return Forge(h).txn_token(claims={name: now + value for name, value in offsets.items()})


def client(reason: str) -> Refusal:
    return Refusal(401, "invalid_client", reason)


def malformed(error: str = "invalid_request") -> Refusal:
    return Refusal(400, error, "tts.request_invalid")


def subject_invalid(reason: str) -> Refusal:
    return Refusal(400, "invalid_request", reason)


NOT_ALLOWED = Refusal(400, "unauthorized_client", "tts.client_not_allowed")
SELF_SIGNED = {"self_signed_workloads": [FRONTEND]}
UNSIGNED = {"unsigned_json_workloads": [FRONTEND]}


# =========================================================================================
# The token-exchange endpoint: controls.
# =========================================================================================


def test_control_a_requester_with_an_http_signature_gets_a_txn_token(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    answers = exchange_scenario(harness, tmp_path, lambda h, a: iter([signed_request(h)]))
    checker.check_exchange_response(answers[0].status, answers[0].headers, answers[0].body)


def test_control_a_txn_token_of_this_tts_is_replaced(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    answers = exchange_scenario(
        harness, tmp_path, lambda h, a: iter([replacement(h, h.txn_token())])
    )
    checker.check_exchange_response(answers[0].status, answers[0].headers, answers[0].body)


def test_control_a_self_signed_subject_with_the_wit_key_reaches_the_issuance_policy(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    # The sample policy lets no workload exchange a self-signed token: refused by policy,
    # after the signature, issuer and audience all verified.
    attack = ExchangeAttack(
        subject(SELF_SIGNED_TYPE, self_signed),
        Refusal(400, "unauthorized_client", "issuance.denied"),
        SELF_SIGNED,
    )
    run_attack(harness, tmp_path, attack)


# =========================================================================================
# The token-exchange endpoint: the requester's credentials (401 `invalid_client`).
# =========================================================================================

REQUESTER_ATTACKS = [
    pytest.param(
        ExchangeAttack(lambda h: [exchange(h, headers={})], client("tts.client_invalid")),
        id="no-credentials",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [exchange(h, headers=credentials(h, h.wit(), audience=USER_TOKEN_AUDIENCE))],
            client("wpt.aud_mismatch"),
        ),
        id="wpt-for-the-edge-resource",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [exchange(h, headers=credentials(h, h.wit(), audience=TTS_URL + "/"))],
            client("wpt.aud_mismatch"),
        ),
        id="wpt-for-the-url-and-a-slash",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [
                exchange(h, headers=once) for once in [Requester(h, "frontend").headers()] * 2
            ],
            client("wpt.replayed"),
        ),
        id="wpt-replayed",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [exchange(h, headers=twice(h, "authorization"))], client("wpt.multiple")
        ),
        id="two-wpts",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [exchange(h, headers=twice(h, "workload-identity-token"))],
            client("wit.multiple"),
        ),
        id="two-wits",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [exchange(h, headers=credentials(h, foreign_wit(h)))],
            client("wit.trust_domain_unknown"),
        ),
        id="wit-of-an-unconfigured-trust-domain",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [
                exchange(h, headers=credentials(h, Forge(h).wit(key=attacker_key("ES256"))))
            ],
            client("wit.signature_invalid"),
        ),
        id="wit-by-an-attacker-key-with-the-issuer-kid",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [signed_request(h, key=h.identities.workloads["payments"])],
            client("httpsig.signature_invalid"),
        ),
        id="http-signature-by-another-workloads-key",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [
                signed_request(h, sent_body=form(subject_token=good_access_token(h), scope="read"))
            ],
            client("httpsig.digest_mismatch"),
        ),
        id="http-signature-over-another-body",
    ),
]


@pytest.mark.parametrize("attack", REQUESTER_ATTACKS)
def test_a_requester_without_valid_credentials_is_401_invalid_client(
    harness: GatewayHarness, tmp_path: Path, attack: ExchangeAttack
) -> None:
    run_attack(harness, tmp_path, attack)


# =========================================================================================
# The token-exchange endpoint: the Txn-Token Request (RFC 8693 parameters, HTTP).
# =========================================================================================

REQUEST_ATTACKS = [
    pytest.param(
        ExchangeAttack(
            lambda h: [exchange(h, grant_type="client_credentials")],
            malformed("unsupported_grant_type"),
        ),
        id="grant-type-client-credentials",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [exchange(h, grant_type=GRANT_TYPE.upper())],
            malformed("unsupported_grant_type"),
        ),
        id="grant-type-in-other-case",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [exchange(h, requested_token_type=ACCESS_TOKEN_TYPE)], malformed()
        ),
        id="requested-token-type-access-token",
    ),
    pytest.param(
        ExchangeAttack(lambda h: [exchange(h, subject_token_type=REFRESH_TOKEN_TYPE)], malformed()),
        id="subject-token-type-refresh-token",
    ),
    pytest.param(
        ExchangeAttack(lambda h: [exchange(h, suffix=b"&scope=read")], malformed()),
        id="scope-twice",
    ),
    pytest.param(
        ExchangeAttack(lambda h: [exchange(h, suffix=b"&sc%6Fpe=read")], malformed()),
        id="scope-twice-under-a-percent-encoded-name",
    ),
    pytest.param(
        ExchangeAttack(lambda h: [exchange(h, suffix=b"&subject_token=e30.e30.e30")], malformed()),
        id="subject-token-twice",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [exchange(h, actor_token=h.wit(), actor_token_type=JWT_TOKEN_TYPE)],
            malformed(),
        ),
        id="actor-token",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [exchange(h, resource=USER_TOKEN_AUDIENCE)], malformed("invalid_target")
        ),
        id="resource",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [exchange(h, suffix=b"&audience=other.example")],
            malformed("invalid_target"),
        ),
        id="audience-twice",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [exchange(h, audience="other.example")],
            Refusal(400, "invalid_target", "tts.target_invalid"),
        ),
        id="audience-another-trust-domain",
    ),
    pytest.param(
        ExchangeAttack(lambda h: [exchange(h, request_context="[1, 2]")], malformed()),
        id="request-context-an-array",
    ),
    pytest.param(
        ExchangeAttack(lambda h: [exchange(h, request_context='"checkout"')], malformed()),
        id="request-context-a-string",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [exchange(h, request_context='{"ip": "1.2.3.4", "ip": "10.0.0.7"}')],
            malformed(),
        ),
        id="request-context-with-a-duplicate-member",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [exchange(h, suffix=b"&padding=" + b"x" * 20_000)],
            Refusal(413, "invalid_request", None),
        ),
        id="body-over-the-limit",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [
                post(
                    {**Requester(h, "frontend").headers(), "content-type": "application/json"},
                    json.dumps({"grant_type": GRANT_TYPE, "scope": "checkout"}).encode(),
                )
            ],
            malformed(),
        ),
        id="json-body",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [
                post(
                    {**Requester(h, "frontend").headers(), "content-type": "text/plain"},
                    form(subject_token=good_access_token(h)),
                )
            ],
            malformed(),
        ),
        id="form-sent-as-text-plain",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [
                post(
                    {
                        **Requester(h, "frontend").headers(),
                        "content-type": FORM_TYPE + "; charset=iso-8859-1",
                    },
                    form(subject_token=good_access_token(h)),
                )
            ],
            malformed(),
        ),
        id="form-in-another-charset",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [
                (
                    "GET",
                    "/token?" + form(subject_token=good_access_token(h)).decode(),
                    Requester(h, "frontend").headers(),
                    b"",
                )
            ],
            Refusal(405, None, None),
        ),
        id="get-with-the-parameters-in-the-query",
    ),
]


@pytest.mark.parametrize("attack", REQUEST_ATTACKS)
def test_a_malformed_txn_token_request_is_refused_before_issuance(
    harness: GatewayHarness, tmp_path: Path, attack: ExchangeAttack
) -> None:
    run_attack(harness, tmp_path, attack)


# =========================================================================================
# The token-exchange endpoint: replacements, and subject tokens of another type.
# =========================================================================================

REPLACEMENT_ATTACKS = [
    pytest.param(
        ExchangeAttack(
            lambda h: [replacement(h, dated_txn_token(h, iat=-600, exp=-300))],
            subject_invalid("txn.expired"),
        ),
        id="expired",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [replacement(h, dated_txn_token(h, iat=-290, exp=-5))],
            subject_invalid("txn.expired"),
        ),
        id="expired-within-the-clock-skew",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [replacement(h, Forge(h).txn_token(key=attacker_key("ES256")))],
            subject_invalid("txn.signature_invalid"),
        ),
        id="signed-by-an-attacker-with-the-tts-kid",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [replacement(h, h.txn_token(audience="other.example"))],
            subject_invalid("txn.aud_mismatch"),
        ),
        id="for-another-trust-domain",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [replacement(h, h.txn_token(), scope="checkout read")],
            Refusal(400, "invalid_scope", "issuance.scope_too_wide"),
        ),
        id="asking-a-wider-scope",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [replacement(h, h.txn_token(), requester="batch")],
            Refusal(400, "unauthorized_client", "issuance.denied"),
        ),
        id="by-a-workload-the-policy-does-not-allow",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [replacement(h, good_access_token(h))], subject_invalid("txn.typ_invalid")
        ),
        id="an-access-token-typed-as-a-txn-token",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [exchange(h, subject_token=h.txn_token())],
            subject_invalid("user.typ_invalid"),
        ),
        id="a-txn-token-typed-as-an-access-token",
    ),
    pytest.param(
        ExchangeAttack(
            lambda h: [exchange(h, subject_token=good_access_token(h, "read\u00a0checkout"))],
            subject_invalid("user.claim_invalid"),
        ),
        id="an-access-token-whose-scope-splits-on-nbsp",
    ),
]


@pytest.mark.parametrize("attack", REPLACEMENT_ATTACKS)
def test_a_forged_stale_or_widened_subject_token_is_refused(
    harness: GatewayHarness, tmp_path: Path, attack: ExchangeAttack
) -> None:
    run_attack(harness, tmp_path, attack)


# =========================================================================================
# The token-exchange endpoint: subjects the requester asserts itself.
# =========================================================================================

ASSERTED_SUBJECT_ATTACKS = [
    pytest.param(
        ExchangeAttack(subject(SELF_SIGNED_TYPE, self_signed), NOT_ALLOWED),
        id="self-signed-from-a-requester-not-configured",
    ),
    pytest.param(
        ExchangeAttack(
            subject(
                SELF_SIGNED_TYPE, lambda h: self_signed(h, key=h.identities.workloads["payments"])
            ),
            subject_invalid("user.signature_invalid"),
            SELF_SIGNED,
        ),
        id="self-signed-by-another-workloads-key",
    ),
    pytest.param(
        ExchangeAttack(
            subject(SELF_SIGNED_TYPE, lambda h: self_signed(h, key=attacker_key("EdDSA"))),
            subject_invalid("user.signature_invalid"),
            SELF_SIGNED,
        ),
        id="self-signed-by-an-attacker-key",
    ),
    pytest.param(
        ExchangeAttack(
            subject(SELF_SIGNED_TYPE, lambda h: self_signed(h, iss="spiffe://demo.example/orders")),
            subject_invalid("tts.subject_invalid"),
            SELF_SIGNED,
        ),
        id="self-signed-naming-another-issuer",
    ),
    pytest.param(
        ExchangeAttack(
            subject(SELF_SIGNED_TYPE, lambda h: self_signed(h, aud=USER_TOKEN_AUDIENCE)),
            subject_invalid("tts.subject_invalid"),
            SELF_SIGNED,
        ),
        id="self-signed-for-another-audience",
    ),
    pytest.param(
        ExchangeAttack(
            subject(UNSIGNED_JSON_TYPE, lambda h: '{"sub": "user-1", "scope": "checkout"}'),
            NOT_ALLOWED,
        ),
        id="unsigned-json-from-an-unlisted-workload",
    ),
    pytest.param(
        ExchangeAttack(
            subject(UNSIGNED_JSON_TYPE, lambda h: '{"scope": "checkout"}'),
            subject_invalid("tts.subject_invalid"),
            UNSIGNED,
        ),
        id="unsigned-json-without-sub",
    ),
    pytest.param(
        ExchangeAttack(
            subject(UNSIGNED_JSON_TYPE, lambda h: '{"sub": "", "scope": "checkout"}'),
            subject_invalid("tts.subject_invalid"),
            UNSIGNED,
        ),
        id="unsigned-json-with-an-empty-sub",
    ),
    pytest.param(
        ExchangeAttack(
            subject(
                UNSIGNED_JSON_TYPE,
                lambda h: '{"sub": "user-1", "sub": "admin", "scope": "checkout"}',
            ),
            subject_invalid("tts.subject_invalid"),
            UNSIGNED,
        ),
        id="unsigned-json-with-two-subs",
    ),
    pytest.param(
        ExchangeAttack(
            # Within the body limit, deep enough to exhaust Python's recursion limit.
            subject(UNSIGNED_JSON_TYPE, lambda h: '{"sub": ' + "[" * 2000 + "]" * 2000 + "}"),
            subject_invalid("tts.subject_invalid"),
            UNSIGNED,
        ),
        id="unsigned-json-nested-past-the-recursion-limit",
    ),
]


@pytest.mark.parametrize("attack", ASSERTED_SUBJECT_ATTACKS)
def test_a_subject_asserted_without_authority_is_refused(
    harness: GatewayHarness, tmp_path: Path, attack: ExchangeAttack
) -> None:
    run_attack(harness, tmp_path, attack)


def test_a_body_over_the_limit_is_logged_as_an_invalid_request(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    attack = ExchangeAttack(
        lambda h: [exchange(h, suffix=b"&padding=" + b"x" * 20_000)],
        Refusal(413, "invalid_request", "tts.request_invalid"),
    )
    run_attack(harness, tmp_path, attack)
