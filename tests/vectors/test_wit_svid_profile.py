"""WITs built to the SPIFFE WIT-SVID profile (spiffe/spiffe `standards/WIT-SVID.md`, 2026), as
SPIRE mints them, against a trust domain whose anchors are a SPIFFE bundle's `wit-svid` keys.

The profile, as far as a receiver sees it: JOSE `kid` required, `typ` `wit+jwt`, `alg` and
`cnf.jwk.alg` from RS/ES/PS 256-512 (no EdDSA), `sub` a SPIFFE ID, `exp` required, `nbf`
checked when present, `iat` and `jti` informational (`jti` is never a replay key), no `aud`.
The profile publishes no issuer key for its example token, so these tokens are minted here,
with real keys, to exactly that shape; each goes through the WIT verifier and through the
whole in-process pipeline (real configuration, the sample policy, a fresh WPT per request).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from authz.answers import Verdict
from authz.credentials.jose import JoseReasons, parse_compact_jws
from authz.credentials.wit import WitRules, WitVerifier
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import mint_wpt, sign_jws
from authz.devtools.spiffe import spiffe_bundle
from authz.devtools.stack import TRUST_DOMAIN
from authz.errors import CredentialError
from authz.reasons import Reason
from authz.trust.key_sets import build_trust_store
from authz.trust.spiffe_bundle import JwtKeyUse, parse_spiffe_bundle
from tests.support import (
    NOW,
    ORIGIN,
    GatewayHarness,
    MutableClock,
    check_request,
    expect_allowed,
    expect_denied,
    header,
)

SUBJECT = f"spiffe://{TRUST_DOMAIN}/frontend"
ISSUER_ALGORITHMS = ("RS256", "ES256", "PS256")
WORKLOAD_ALGORITHMS = ("ES256", "RS256")
ISSUERS = {
    alg: generate_private_jwk(alg, kid=f"spire-wit-{alg.lower()}") for alg in ISSUER_ALGORITHMS
}
WORKLOADS = {alg: generate_private_jwk(alg) for alg in WORKLOAD_ALGORITHMS}
BUNDLE = spiffe_bundle(wit_keys=ISSUERS.values(), sequence=1)
PAIRS = [(issuer, workload) for issuer in ISSUER_ALGORITHMS for workload in WORKLOAD_ALGORITHMS]


def wit_svid(
    issuer_alg: str = "ES256",
    workload_alg: str = "ES256",
    *,
    nbf: float = NOW - 30,
    with_kid: bool = True,
) -> str:
    """A WIT-SVID for SUBJECT: every claim the profile names except `aud`, which it forbids."""
    issuer = ISSUERS[issuer_alg]
    confirmation = public_jwk(WORKLOADS[workload_alg])
    confirmation.pop("kid")
    claims = {
        "sub": SUBJECT,
        "iat": int(NOW),
        "nbf": int(nbf),
        "exp": int(NOW) + 3600,
        "jti": secrets.token_urlsafe(32),
        "cnf": {"jwk": confirmation},
    }
    kid = issuer["kid"] if with_kid else None
    return sign_jws(claims, issuer, {"typ": "wit+jwt", "kid": kid})


def test_the_tokens_here_have_the_profiles_shape() -> None:
    """Guards the builder: a token missing what the profile asks would prove nothing."""
    jws = parse_compact_jws(wit_svid("PS256", "RS256"), JoseReasons.for_token("wit"))
    assert jws.header == {"alg": "PS256", "typ": "wit+jwt", "kid": "spire-wit-ps256"}
    assert set(jws.claims) == {"sub", "iat", "nbf", "exp", "jti", "cnf"}
    assert jws.claims["cnf"]["jwk"]["alg"] == "RS256"
    assert {entry["use"] for entry in BUNDLE["keys"]} == {"wit-svid"}


def wit_verifier() -> WitVerifier:
    algorithms = frozenset(ISSUER_ALGORITHMS)
    bundle = parse_spiffe_bundle(BUNDLE, algorithms, "bundle", JwtKeyUse.WIT_SVID)
    store = build_trust_store({TRUST_DOMAIN: (algorithms, bundle, "trust_domains.demo.example")})
    rules = WitRules(30, 86400, frozenset(WORKLOAD_ALGORITHMS))
    return WitVerifier(store, rules, MutableClock(NOW), 10)


def verifier_reason(token: str) -> Reason:
    with pytest.raises(CredentialError) as caught:
        wit_verifier().verify(token)
    return caught.value.reason


@pytest.mark.parametrize(("issuer_alg", "workload_alg"), PAIRS)
def test_a_wit_svid_verifies_with_the_bundles_wit_svid_key(
    issuer_alg: str, workload_alg: str
) -> None:
    verified = wit_verifier().verify(wit_svid(issuer_alg, workload_alg))
    assert verified.subject.uri == SUBJECT
    assert (verified.issuer_alg, verified.issuer_key.kid) == (
        issuer_alg,
        ISSUERS[issuer_alg]["kid"],
    )
    assert verified.proof_alg == workload_alg


def test_the_wit_verifier_finds_a_wit_svid_whose_nbf_is_ahead_not_yet_valid() -> None:
    assert verifier_reason(wit_svid(nbf=NOW + 600)) is Reason.WIT_NOT_YET_VALID


def test_the_wit_verifier_refuses_a_wit_svid_without_kid() -> None:
    assert verifier_reason(wit_svid(with_kid=False)) is Reason.WIT_KID_MISSING


# --- the whole pipeline ---------------------------------------------------------------------


@pytest.fixture
def gateway(harness: GatewayHarness, tmp_path: Path) -> GatewayHarness:
    """The demo gateway, its trust domain's WIT anchors the bundle above (a file)."""
    path = tmp_path / "demo.example.bundle.json"
    path.write_text(json.dumps(BUNDLE))
    domain = {"algorithms": list(ISSUER_ALGORITHMS), "spiffe_bundle_file": str(path)}
    checked = harness.rebuild(trust_domains={TRUST_DOMAIN: domain})
    checked.clock.now = NOW
    return checked


def presented(token: str, workload_alg: str = "ES256") -> dict[str, str]:
    """`token` with a fresh WPT (its own `jti`) by the workload key it confirms."""
    proof = mint_wpt(WORKLOADS[workload_alg], token, ORIGIN + "/api/hello", now=NOW)
    return {"workload-identity-token": token, "authorization": f"WPT {proof}"}


def check(gateway: GatewayHarness, headers: dict[str, str]) -> Verdict:
    return gateway.check(check_request("/api/hello", headers))


@pytest.mark.parametrize(("issuer_alg", "workload_alg"), PAIRS)
def test_a_wit_svid_with_a_fresh_wpt_is_the_caller(
    gateway: GatewayHarness, issuer_alg: str, workload_alg: str
) -> None:
    token = wit_svid(issuer_alg, workload_alg)
    allowed = expect_allowed(check(gateway, presented(token, workload_alg)))
    assert header(allowed, "x-wimse-caller") == SUBJECT


def test_the_same_wit_svid_with_two_fresh_wpts_is_accepted_both_times(
    gateway: GatewayHarness,
) -> None:
    """Its `jti` is no replay key; the proof's is (the same WPT again is a replay)."""
    token = wit_svid()
    expect_allowed(check(gateway, presented(token)))
    again = presented(token)
    expect_allowed(check(gateway, again))
    expect_denied(check(gateway, again), Reason.WPT_REPLAYED, 401)


def test_the_gateway_refuses_a_wit_svid_whose_nbf_is_ahead(gateway: GatewayHarness) -> None:
    verdict = check(gateway, presented(wit_svid(nbf=NOW + 600)))
    expect_denied(verdict, Reason.WIT_NOT_YET_VALID, 401)


def test_the_gateway_refuses_a_wit_svid_without_kid(gateway: GatewayHarness) -> None:
    verdict = check(gateway, presented(wit_svid(with_kid=False)))
    expect_denied(verdict, Reason.WIT_KID_MISSING, 401)
