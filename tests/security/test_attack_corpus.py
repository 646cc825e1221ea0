"""The attack corpus: every known way to forge, confuse or replay WIMSE credentials.

Each attack starts from a valid request (frontend `GET /api/hello`, which the sample
policy allows: see the control tests) and changes exactly one thing. Every attack must be
denied with the exact reason code of the first check that fails; credential failures on a
WPT-presented request are 401 with `WWW-Authenticate: WPT` (draft-ietf-wimse-wpt-02).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authz.answers import Allowed, Denied, Verdict
from authz.credentials.claims import token_hash
from authz.devtools.httpsig import content_digest, sign_request
from authz.devtools.stack import SERVICE_ID
from authz.server.envoy_response import check_response
from tests.security.forgery import (
    AUTHORIZATION,
    DROP,
    TARGET,
    WIT_HEADER,
    Forge,
    attacker_key,
    b64url,
    compact,
    compact_json,
    expect_refused,
    key_bearing_header,
    public_jwk_json,
    public_pem,
    weak_rsa_jwk,
    with_wpt,
    write_policy,
)
from tests.support import (
    NOW,
    ORIGIN,
    GatewayHarness,
    check_request,
    expect_allowed,
    expect_denied,
    expect_failed,
    header,
)

FRONTEND = "spiffe://demo.example/frontend"
IDENTITY_HEADERS = ("x-wimse-caller", "x-wimse-caller-trust-domain", "x-wimse-authenticated-by")
WIT_MAX_LIFETIME = 24 * 3600


@pytest.fixture
def forge(harness: GatewayHarness) -> Forge:
    return Forge(harness)


def check(harness: GatewayHarness, headers: dict[str, str], path: str = "/api/hello") -> Verdict:
    return harness.check_path(path, headers)


# =========================================================================================
# Controls: the unmodified requests every attack starts from are allowed.
# =========================================================================================


def test_control_valid_forged_request_is_allowed(harness: GatewayHarness, forge: Forge) -> None:
    allowed = expect_allowed(check(harness, forge.headers()))
    assert header(allowed, "x-wimse-caller") == FRONTEND
    assert header(allowed, "x-wimse-authenticated-by") == "wpt"


def test_control_valid_minted_request_is_allowed(harness: GatewayHarness) -> None:
    expect_allowed(check(harness, harness.signed_headers()))


def test_control_ops_with_es256_proof_is_allowed(harness: GatewayHarness, forge: Forge) -> None:
    allowed = expect_allowed(check(harness, forge.headers(workload="ops")))
    assert header(allowed, "x-wimse-caller") == "spiffe://demo.example/ops"


def test_control_batch_with_ed25519_proof_authenticates(
    harness: GatewayHarness, forge: Forge
) -> None:
    # batch has no grant: authenticated (proof verified) and then denied by policy.
    expect_denied(check(harness, forge.headers(workload="batch")), "policy.denied", 403)


def test_control_unauthenticated_healthz_is_allowed(harness: GatewayHarness) -> None:
    expect_allowed(check(harness, {}, "/healthz"))


def test_control_unauthenticated_api_is_refused(harness: GatewayHarness) -> None:
    expect_refused(check(harness, {}), "policy.unauthenticated")


@pytest.mark.parametrize(
    "typ", ["wit+jwt", "application/wit+jwt", "WIT+JWT", "Application/Wit+Jwt"]
)
def test_control_wit_typ_spellings_are_accepted(
    harness: GatewayHarness, forge: Forge, typ: str
) -> None:
    expect_allowed(check(harness, forge.headers(wit=forge.wit(header={"typ": typ}))))


@pytest.mark.parametrize("typ", ["wpt+jwt", "application/wpt+jwt", "WPT+JWT"])
def test_control_wpt_typ_spellings_are_accepted(
    harness: GatewayHarness, forge: Forge, typ: str
) -> None:
    expect_allowed(check(harness, forge.headers(wpt_header={"typ": typ})))


def test_control_wit_without_kid_is_accepted(harness: GatewayHarness, forge: Forge) -> None:
    expect_allowed(check(harness, forge.headers(wit=forge.wit(header={"kid": DROP}))))


def test_control_lowercase_wpt_scheme_is_accepted(harness: GatewayHarness, forge: Forge) -> None:
    headers = forge.headers()
    headers[AUTHORIZATION] = "wpt " + headers[AUTHORIZATION].removeprefix("WPT ")
    expect_allowed(check(harness, headers))


# =========================================================================================
# Algorithm attacks: `none`, HMAC with public key bytes, self-issued WITs.
# =========================================================================================


def test_unsigned_wit_with_alg_none_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    header_bytes = compact_json(forge.wit_header({"alg": "none"}))
    wit = compact(header_bytes, compact_json(forge.wit_claims()), None)
    assert wit.endswith(".")
    # An empty signature segment fails before any algorithm is looked at.
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.malformed")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_wit_with_alg_none_and_a_signature_is_refused(
    harness: GatewayHarness, forge: Forge, alg: str
) -> None:
    wit = forge.wit(header={"alg": alg})
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.alg_not_allowed")


def test_unsigned_wpt_with_alg_none_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    wit = forge.wit()
    wpt = compact(
        compact_json(forge.wpt_header({"alg": "none"})), compact_json(forge.wpt_claims(wit)), None
    )
    expect_refused(check(harness, with_wpt(wit, wpt)), "wpt.malformed")


def test_wpt_with_alg_none_and_a_signature_is_refused(
    harness: GatewayHarness, forge: Forge
) -> None:
    expect_refused(check(harness, forge.headers(wpt_header={"alg": "none"})), "wpt.alg_mismatch")


SECRETS: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "public-pem": public_pem,
    "public-jwk-json": public_jwk_json,
}


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_wit_hmac_signed_with_issuer_public_key_is_refused(
    harness: GatewayHarness, forge: Forge, secret: str, alg: str
) -> None:
    key_bytes = SECRETS[secret](forge.issuer)
    wit = forge.wit(header={"alg": alg}, key=key_bytes)
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.alg_not_allowed")


@pytest.mark.parametrize("secret", SECRETS)
def test_wpt_hmac_signed_with_workload_public_key_is_refused(
    harness: GatewayHarness, forge: Forge, secret: str
) -> None:
    wit = forge.wit()
    wpt = forge.wpt(wit, header={"alg": "HS256"}, key=SECRETS[secret](forge.workload_key()))
    expect_refused(check(harness, with_wpt(wit, wpt)), "wpt.alg_mismatch")


@pytest.mark.parametrize(
    "alg", ["ES384", "ES512", "RS256", "PS256", "EdDSA", "Ed25519", "ES256K", ""]
)
def test_wit_with_alg_outside_the_trust_domains_list_is_refused(
    harness: GatewayHarness, forge: Forge, alg: str
) -> None:
    # demo.example allows ES256 only; the issuer's own key signs, only the alg name differs.
    wit = forge.wit(header={"alg": alg})
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.alg_not_allowed")


def test_wit_self_issued_by_a_workload_key_is_refused(
    harness: GatewayHarness, forge: Forge
) -> None:
    # frontend signs its own WIT (EdDSA): not an algorithm the trust domain allows.
    wit = forge.wit(header={"alg": "EdDSA", "kid": DROP}, key=forge.workload_key("frontend"))
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.alg_not_allowed")


def test_wit_signed_by_another_workloads_es256_key_is_refused(
    harness: GatewayHarness, forge: Forge
) -> None:
    # ops holds a real ES256 key of this deployment, but it is no trust anchor.
    wit = forge.wit(header={"kid": DROP}, key=forge.workload_key("ops"))
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.signature_invalid")


# =========================================================================================
# JOSE header key injection: jwk, jku, x5u, x5c (the attacker's key really signs).
# =========================================================================================


@pytest.mark.parametrize("name", ["jwk", "jku", "x5u", "x5c"])
def test_wit_with_key_bearing_header_is_refused(
    harness: GatewayHarness, forge: Forge, name: str
) -> None:
    key = attacker_key("ES256")
    wit = forge.wit(header={"kid": DROP, name: key_bearing_header(name, key)}, key=key)
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.header_key_forbidden")


@pytest.mark.parametrize("name", ["jwk", "jku", "x5u", "x5c"])
def test_wit_with_key_bearing_header_and_issuer_kid_is_refused(
    harness: GatewayHarness, forge: Forge, name: str
) -> None:
    # Even signed by the real issuer key, a key-bearing header is refused outright.
    wit = forge.wit(header={name: key_bearing_header(name, attacker_key("ES256"))})
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.header_key_forbidden")


@pytest.mark.parametrize("name", ["jwk", "jku", "x5u", "x5c"])
def test_wpt_with_key_bearing_header_is_refused(
    harness: GatewayHarness, forge: Forge, name: str
) -> None:
    key = attacker_key("EdDSA")
    wit = forge.wit()
    wpt = forge.wpt(wit, header={name: key_bearing_header(name, key)}, key=key)
    expect_refused(check(harness, with_wpt(wit, wpt)), "wpt.header_key_forbidden")


# =========================================================================================
# kid attacks.
# =========================================================================================


def test_wit_with_unknown_kid_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    wit = forge.wit(header={"kid": "no-such-key"})
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.kid_unknown")


def test_wit_with_real_kid_but_attacker_key_is_refused(
    harness: GatewayHarness, forge: Forge
) -> None:
    wit = forge.wit(key=attacker_key("ES256"))
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.signature_invalid")


def test_wit_without_kid_signed_by_attacker_key_is_refused(
    harness: GatewayHarness, forge: Forge
) -> None:
    wit = forge.wit(header={"kid": DROP}, key=attacker_key("ES256"))
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.signature_invalid")


@pytest.mark.parametrize("kid", [123, ["issuer"], {"kid": "issuer"}, True])
def test_wit_with_non_string_kid_is_refused(
    harness: GatewayHarness, forge: Forge, kid: object
) -> None:
    header_bytes = compact_json(forge.wit_header({"kid": kid}))
    wit = forge.wit(raw_header=header_bytes)
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.malformed")


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("kid", "wit.malformed"),
        ("typ", "wit.typ_invalid"),
        ("crit", "wit.crit_unsupported"),
        ("b64", "wit.b64_unsupported"),
        ("jwk", "wit.header_key_forbidden"),
    ],
)
def test_wit_header_member_sent_as_null_is_not_ignored(
    harness: GatewayHarness, forge: Forge, member: str, reason: str
) -> None:
    # A member present with a null value is present: RFC 7515 4.1.4 makes `kid` a string,
    # and a null `kid` must not silently mean "no kid" (try every anchor key).
    header_bytes = compact_json({**forge.wit_header(), member: None})
    assert f'"{member}":null'.encode() in header_bytes
    wit = forge.wit(raw_header=header_bytes)
    expect_refused(check(harness, forge.headers(wit=wit)), reason)


@pytest.mark.parametrize("claim", ["iss", "jti", "exp", "iat", "nbf"])
def test_wit_claim_sent_as_null_is_refused(
    harness: GatewayHarness, forge: Forge, claim: str
) -> None:
    claims = {**forge.wit_claims(), claim: None}
    wit = forge.wit(raw_claims=compact_json(claims))
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.claim_invalid")


# =========================================================================================
# typ confusion.
# =========================================================================================


@pytest.mark.parametrize("typ", ["JWT", DROP, "wpt+jwt", "application/wpt+jwt", "", "wit"])
def test_wit_with_wrong_typ_is_refused(harness: GatewayHarness, forge: Forge, typ: object) -> None:
    wit = forge.wit(header={"typ": typ})
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.typ_invalid")


@pytest.mark.parametrize("typ", ["JWT", DROP, "wit+jwt", "application/wit+jwt", "", "wpt"])
def test_wpt_with_wrong_typ_is_refused(harness: GatewayHarness, forge: Forge, typ: object) -> None:
    expect_refused(check(harness, forge.headers(wpt_header={"typ": typ})), "wpt.typ_invalid")


def test_wpt_presented_as_the_wit_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    wit = forge.wit()
    wpt = forge.wpt(wit)
    # The proof token in the WIT header: it is typed wpt+jwt.
    expect_refused(check(harness, forge.headers(wit=wpt)), "wit.typ_invalid")


# =========================================================================================
# Lifetimes.
# =========================================================================================


def _wit_times(forge: Forge, case: str) -> dict[str, Any]:
    now = forge.now
    return {
        "expired": {"iat": now - 7200, "exp": now - 3600},
        "expired-beyond-skew": {"iat": now - 3600, "exp": now - 31},
        "expired-at-skew": {"iat": now - 3600, "exp": now - 30},
        "exp-far-future": {"exp": now + WIT_MAX_LIFETIME + 3600},
        "exp-year-3000": {"exp": 32_503_680_000},
        "iat-in-future": {"iat": now + 3600, "exp": now + 7200},
        "lifetime-exceeded": {"iat": now - 23 * 3600, "exp": now + 2 * 3600},
        "nbf-in-future": {"nbf": now + 3600},
        "exp-missing": {"exp": DROP},
        "exp-string": {"exp": str(now + 3600)},
        "exp-boolean": {"exp": True},
    }[case]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("expired", "wit.expired"),
        ("expired-beyond-skew", "wit.expired"),
        ("expired-at-skew", "wit.expired"),
        ("exp-far-future", "wit.exp_too_far"),
        ("exp-year-3000", "wit.exp_too_far"),
        ("iat-in-future", "wit.iat_in_future"),
        ("lifetime-exceeded", "wit.lifetime_exceeded"),
        ("nbf-in-future", "wit.not_yet_valid"),
        ("exp-missing", "wit.exp_missing"),
        ("exp-string", "wit.claim_invalid"),
        ("exp-boolean", "wit.claim_invalid"),
    ],
)
def test_wit_with_bad_lifetime_is_refused(
    harness: GatewayHarness, forge: Forge, case: str, reason: str
) -> None:
    wit = forge.wit(claims=_wit_times(forge, case))
    expect_refused(check(harness, forge.headers(wit=wit)), reason)


@pytest.mark.parametrize(
    "times",
    [
        pytest.param({"iat": -3600, "exp": -29}, id="expired-within-skew"),
        pytest.param({"iat": 30, "exp": 3600}, id="iat-within-skew"),
        pytest.param({"iat": 0, "exp": 3600.5}, id="fractional-exp"),
        pytest.param({"iat": 0, "exp": WIT_MAX_LIFETIME}, id="maximum-lifetime"),
    ],
)
def test_control_wit_lifetimes_at_the_limits_are_accepted(
    harness: GatewayHarness, forge: Forge, times: dict[str, float]
) -> None:
    claims = {name: forge.now + offset for name, offset in times.items()}
    expect_allowed(check(harness, forge.headers(wit=forge.wit(claims=claims))))


# Numbers no float can hold: 1e400 parses as float('inf'); 10**400 as an int that
# overflows when converted to float (both within the JSON parser's digit limits).
OVERFLOWING_NUMBERS = [
    pytest.param("1e400", id="float-overflow"),
    pytest.param("1" + "0" * 400, id="int-overflow"),
]


@pytest.mark.parametrize("number", OVERFLOWING_NUMBERS)
@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_wit_with_overflowing_numeric_date_is_refused(
    harness: GatewayHarness, forge: Forge, claim: str, number: str
) -> None:
    claims = {k: v for k, v in forge.wit_claims().items() if k != claim}
    wit = forge.wit(raw_claims=compact_json(claims)[:-1] + f',"{claim}":{number}}}'.encode())
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.claim_invalid")


@pytest.mark.parametrize("number", OVERFLOWING_NUMBERS)
@pytest.mark.parametrize("claim", ["exp", "iat"])
def test_wpt_with_overflowing_numeric_date_is_refused(
    harness: GatewayHarness, forge: Forge, claim: str, number: str
) -> None:
    wit = forge.wit()
    claims = {k: v for k, v in forge.wpt_claims(wit).items() if k != claim}
    wpt = forge.wpt(wit, raw_claims=compact_json(claims)[:-1] + f',"{claim}":{number}}}'.encode())
    expect_refused(check(harness, with_wpt(wit, wpt)), "wpt.claim_invalid")


def _wpt_times(forge: Forge, case: str) -> dict[str, Any]:
    now = forge.now
    return {
        "expired": {"exp": now - 120},
        "exp-far-future": {"exp": now + 3600},
        "iat-in-future": {"iat": now + 600},
        "lifetime-exceeded": {"iat": now - 290},
        "exp-missing": {"exp": DROP},
        "exp-string": {"exp": str(now + 60)},
    }[case]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("expired", "wpt.expired"),
        ("exp-far-future", "wpt.exp_too_far"),
        ("iat-in-future", "wpt.iat_in_future"),
        ("lifetime-exceeded", "wpt.lifetime_exceeded"),
        ("exp-missing", "wpt.exp_missing"),
        ("exp-string", "wpt.claim_invalid"),
    ],
)
def test_wpt_with_bad_lifetime_is_refused(
    harness: GatewayHarness, forge: Forge, case: str, reason: str
) -> None:
    expect_refused(check(harness, forge.headers(wpt_claims=_wpt_times(forge, case))), reason)


def test_wit_expiring_while_cached_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    wit = forge.wit(claims={"exp": forge.now + 120})
    expect_allowed(check(harness, forge.headers(wit=wit)))
    harness.clock.now = NOW + 120 + 31
    expect_refused(check(harness, Forge(harness).headers(wit=wit)), "wit.expired")


# =========================================================================================
# The subject: trust domain and canonical form.
# =========================================================================================


@pytest.mark.parametrize(
    "sub",
    [
        "spiffe://evil.example/frontend",
        "spiffe://demo.example./frontend",
        "spiffe://example/frontend",
        "spiffe://sub.demo.example/frontend",
    ],
)
def test_wit_for_untrusted_trust_domain_is_refused(
    harness: GatewayHarness, forge: Forge, sub: str
) -> None:
    wit = forge.wit(claims={"sub": sub})
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.trust_domain_unknown")


@pytest.mark.parametrize(
    "sub",
    [
        pytest.param("wimse://demo.example/frontend", id="wimse-scheme-twin"),
        pytest.param("spiffe://demo.example/Frontend", id="path-case"),
        pytest.param("spiffe://demo.example/frontend/admin", id="child-path"),
    ],
)
def test_look_alike_subject_gets_none_of_frontends_grants(
    harness: GatewayHarness, forge: Forge, sub: str
) -> None:
    # Valid, canonical, and a different identity: authenticated, then denied by policy.
    wit = forge.wit(claims={"sub": sub})
    denied = expect_denied(check(harness, forge.headers(wit=wit)), "policy.denied", 403)
    assert denied.dynamic_metadata["caller"] == sub


def test_wpt_claiming_another_subject_does_not_change_the_caller(
    harness: GatewayHarness, forge: Forge
) -> None:
    headers = forge.headers(wpt_claims={"sub": "spiffe://demo.example/ops", "iss": "x"})
    allowed = expect_allowed(check(harness, headers))
    assert header(allowed, "x-wimse-caller") == FRONTEND


@pytest.mark.parametrize(
    "sub",
    [
        pytest.param("spiffe://DEMO.example/frontend", id="uppercase-trust-domain"),
        pytest.param("SPIFFE://demo.example/frontend", id="uppercase-scheme"),
        pytest.param("spiffe://demo.example/frontend/", id="trailing-slash"),
        pytest.param("spiffe://demo.example/admin/../frontend", id="dotdot-segment"),
        pytest.param("spiffe://demo.example/./frontend", id="dot-segment"),
        pytest.param("spiffe://demo.example//frontend", id="empty-segment"),
        pytest.param("spiffe://demo.example/%66rontend", id="percent-encoding"),
        pytest.param("spiffe://demo%2Eexample/frontend", id="percent-encoded-trust-domain"),
        pytest.param("spiffe://demo.example/frontend?admin=1", id="query"),
        pytest.param("spiffe://demo.example/frontend#x", id="fragment"),
        pytest.param("spiffe://demo.example:443/frontend", id="port"),
        pytest.param("spiffe://ops@demo.example/frontend", id="userinfo"),
        pytest.param("https://demo.example/frontend", id="https-scheme"),
        pytest.param("spiffe://demo.example", id="no-path"),
        pytest.param("spiffe:///frontend", id="empty-trust-domain"),
        pytest.param("spiffe://demo.example/front end", id="space"),
        pytest.param("spiffe://demo.example/frontend\u0000", id="nul"),
        pytest.param("spiffe://demo.exampl\u0435/frontend", id="cyrillic-homoglyph"),
        pytest.param(123, id="not-a-string"),
        pytest.param(DROP, id="missing"),
    ],
)
def test_wit_with_non_canonical_sub_is_refused(
    harness: GatewayHarness, forge: Forge, sub: object
) -> None:
    wit = forge.wit(claims={"sub": sub})
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.sub_invalid")


# =========================================================================================
# The confirmation key (`cnf.jwk`).
# =========================================================================================


def _cnf(forge: Forge, case: str) -> object:
    jwk = forge.wit_claims()["cnf"]["jwk"]
    private = forge.workload_key("frontend")
    cases: dict[str, object] = {
        "missing": DROP,
        "empty": {},
        "jwk-not-object": {"jwk": "frontend"},
        "no-alg": {"jwk": {k: v for k, v in jwk.items() if k != "alg"}},
        "empty-alg": {"jwk": {**jwk, "alg": ""}},
        "alg-none": {"jwk": {**jwk, "alg": "none"}},
        "alg-hs256": {"jwk": {**jwk, "alg": "HS256"}},
        "symmetric-key": {"jwk": {"kty": "oct", "k": b64url(b"secret"), "alg": "HS256"}},
        "private-d": {"jwk": {**jwk, "d": private["d"]}},
        "alg-for-other-key-type": {"jwk": {**jwk, "alg": "ES256"}},
        "use-enc": {"jwk": {**jwk, "use": "enc"}},
        "bad-point": {"jwk": {**jwk, "x": b64url(b"short")}},
        "key-ops-sign-only": {"jwk": {**jwk, "key_ops": ["sign"]}},
        "weak-rsa": {"jwk": weak_rsa_jwk()},
    }
    return cases[case]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "wit.cnf_missing"),
        ("empty", "wit.cnf_missing"),
        ("jwk-not-object", "wit.cnf_missing"),
        ("no-alg", "wit.cnf_alg_missing"),
        ("empty-alg", "wit.cnf_alg_missing"),
        ("alg-none", "wit.cnf_alg_not_allowed"),
        ("alg-hs256", "wit.cnf_alg_not_allowed"),
        ("symmetric-key", "wit.cnf_alg_not_allowed"),
        ("private-d", "wit.cnf_key_invalid"),
        ("alg-for-other-key-type", "wit.cnf_key_invalid"),
        ("use-enc", "wit.cnf_key_invalid"),
        ("bad-point", "wit.cnf_key_invalid"),
        ("key-ops-sign-only", "wit.cnf_key_invalid"),
        ("weak-rsa", "wit.cnf_key_invalid"),
    ],
)
def test_wit_with_bad_confirmation_key_is_refused(
    harness: GatewayHarness, forge: Forge, case: str, reason: str
) -> None:
    wit = forge.wit(claims={"cnf": _cnf(forge, case)})
    expect_refused(check(harness, forge.headers(wit=wit)), reason)


# =========================================================================================
# The proof's signature and algorithm.
# =========================================================================================


def test_wpt_signed_by_attacker_key_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    wit = forge.wit()
    wpt = forge.wpt(wit, key=attacker_key("EdDSA"))
    expect_refused(check(harness, with_wpt(wit, wpt)), "wpt.signature_invalid")


def test_wpt_signed_by_another_workloads_key_is_refused(
    harness: GatewayHarness, forge: Forge
) -> None:
    wit = forge.wit()
    # batch's Ed25519 key, under frontend's own alg name: only the key differs.
    wpt = forge.wpt(wit, key=forge.workload_key("batch"))
    expect_refused(check(harness, with_wpt(wit, wpt)), "wpt.signature_invalid")


def test_wpt_signed_by_the_issuer_key_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    wit = forge.wit(workload="ops")
    wpt = forge.wpt(wit, workload="ops", key=forge.issuer)
    expect_refused(check(harness, with_wpt(wit, wpt)), "wpt.signature_invalid")


def test_wit_presented_as_its_own_proof_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    wit = forge.wit(workload="ops")
    # ops's cnf alg is ES256, like the issuer's: the alg matches, the key does not.
    expect_refused(check(harness, with_wpt(wit, wit)), "wpt.signature_invalid")


@pytest.mark.parametrize(
    ("workload", "alg"),
    [
        pytest.param("frontend", "Ed25519", id="eddsa-key-ed25519-proof"),
        pytest.param("frontend", "eddsa", id="eddsa-key-lowercase-proof"),
        pytest.param("batch", "EdDSA", id="ed25519-key-eddsa-proof"),
        pytest.param("ops", "ES384", id="es256-key-es384-proof"),
        pytest.param("ops", "ES256K", id="es256-key-es256k-proof"),
    ],
)
def test_wpt_alg_must_equal_cnf_alg_exactly(
    harness: GatewayHarness, forge: Forge, workload: str, alg: str
) -> None:
    # Signed by the right key: only the alg name differs from `cnf.jwk.alg`.
    headers = forge.headers(workload=workload, wpt_header={"alg": alg})
    expect_refused(check(harness, headers), "wpt.alg_mismatch")


# =========================================================================================
# `wth`: the proof binds exactly this WIT.
# =========================================================================================


def test_wpt_binding_another_wit_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    wit, other = forge.wit(), forge.wit()
    wpt = forge.wpt(wit, claims={"wth": token_hash(other)})
    expect_refused(check(harness, with_wpt(wit, wpt)), "wpt.wth_mismatch")


def test_wpt_minted_for_another_wit_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    # A stolen WIT with the attacker's own (valid) WIT's proof: same workload key.
    stolen, own = forge.wit(), forge.wit()
    expect_refused(check(harness, with_wpt(stolen, forge.wpt(own))), "wpt.wth_mismatch")


@pytest.mark.parametrize("wth", [DROP, None, ["x"], 1])
def test_wpt_without_string_wth_is_refused(
    harness: GatewayHarness, forge: Forge, wth: object
) -> None:
    expect_refused(check(harness, forge.headers(wpt_claims={"wth": wth})), "wpt.wth_missing")


def test_wpt_wth_with_padding_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    wit = forge.wit()
    wpt = forge.wpt(wit, claims={"wth": token_hash(wit) + "="})
    expect_refused(check(harness, with_wpt(wit, wpt)), "wpt.wth_mismatch")


# =========================================================================================
# `aud`: the configured target URI, never the Host header.
# =========================================================================================


@pytest.mark.parametrize(
    "aud",
    [
        pytest.param("https://other.demo.example/api/hello", id="other-service"),
        pytest.param(ORIGIN + "/api/other", id="other-path"),
        pytest.param(ORIGIN + "/api/hello/", id="trailing-slash"),
        pytest.param(ORIGIN + "/API/hello", id="path-case"),
        pytest.param(ORIGIN + "/api/%68ello", id="percent-encoded-path"),
        pytest.param("http://echo.demo.example/api/hello", id="http-scheme"),
        pytest.param("https://ECHO.demo.example/api/hello", id="host-case"),
        pytest.param("https://echo.demo.example:443/api/hello", id="default-port"),
        pytest.param(ORIGIN + "/api/hello#frag", id="fragment"),
        pytest.param(ORIGIN, id="origin-only"),
        pytest.param("", id="empty"),
    ],
)
def test_wpt_for_another_target_is_refused(harness: GatewayHarness, forge: Forge, aud: str) -> None:
    expect_refused(check(harness, forge.headers(audience=aud)), "wpt.aud_mismatch")


@pytest.mark.parametrize(
    "aud",
    [
        pytest.param([TARGET], id="array"),
        pytest.param([TARGET, "https://other.example/api/hello"], id="array-of-two"),
        pytest.param(DROP, id="missing"),
        pytest.param(None, id="null"),
        pytest.param({"uri": TARGET}, id="object"),
    ],
)
def test_wpt_with_non_string_aud_is_refused(
    harness: GatewayHarness, forge: Forge, aud: object
) -> None:
    expect_refused(check(harness, forge.headers(wpt_claims={"aud": aud})), "wpt.aud_invalid")


@pytest.mark.parametrize(
    "host_source", ["host", ":authority", "x-forwarded-host", "http.host", "all"]
)
def test_wpt_audience_is_never_taken_from_the_host(
    harness: GatewayHarness, forge: Forge, host_source: str
) -> None:
    attacker = "attacker.example"
    headers = forge.headers(audience=f"https://{attacker}/api/hello")
    for name in ("host", ":authority", "x-forwarded-host"):
        if host_source in (name, "all"):
            headers[name] = attacker
    request = check_request("/api/hello", headers)
    if host_source in ("http.host", "all"):
        request.attributes.request.http.host = attacker
    expect_refused(harness.check(request), "wpt.aud_mismatch")


def test_wpt_audience_with_query_string_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    headers = forge.headers(audience=TARGET + "?x=1")
    expect_refused(check(harness, headers, "/api/hello?x=1"), "wpt.aud_mismatch")


def test_control_wpt_audience_without_query_is_accepted(
    harness: GatewayHarness, forge: Forge
) -> None:
    expect_allowed(check(harness, forge.headers(), "/api/hello?x=1"))


# =========================================================================================
# Path shapes an upstream reads differently from the policy: refused before credentials.
# Each carries a WPT for exactly that path, so only the path can be what is refused.
# =========================================================================================


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/api/../admin/users", id="dotdot-out-of-a-granted-prefix"),
        pytest.param("/api/%2e%2e/admin/users", id="encoded-dotdot"),
        pytest.param("/api/%2E%2e/admin/users", id="mixed-case-encoded-dotdot"),
        pytest.param("/api/./hello", id="dot-segment"),
        pytest.param("/api/..;/admin/users", id="tomcat-dotdot-with-parameter"),
        pytest.param("/api/hello;jsessionid=x", id="path-parameter"),
        pytest.param("/api;x/hello", id="path-parameter-on-a-prefix"),
        pytest.param("/api/hello%3Bx", id="encoded-semicolon"),
        pytest.param("/api/hello%3b", id="encoded-semicolon-lowercase"),
        pytest.param("//admin/users", id="leading-double-slash"),
        pytest.param("/api//hello", id="inner-double-slash"),
        pytest.param("/api%2F..%2Fadmin/users", id="encoded-slash-traversal"),
        pytest.param("/api/a%2fb", id="encoded-slash-lowercase"),
        pytest.param("/api%5C..%5Cadmin/users", id="encoded-backslash-traversal"),
        pytest.param("/api\\..\\admin\\users", id="backslash-traversal"),
        pytest.param("api/hello", id="no-leading-slash"),
    ],
)
def test_non_canonical_path_is_refused_before_credentials(
    harness: GatewayHarness, forge: Forge, path: str
) -> None:
    verdict = check(harness, forge.headers(audience=ORIGIN + path), path)
    denied = expect_denied(verdict, "request.path_not_canonical", 400)
    assert header(denied, "x-wimse-authz-reason") == "request.path_not_canonical"
    assert header(denied, "www-authenticate") is None, "not a credential failure"


def test_control_percent_encoded_unreserved_path_is_accepted(
    harness: GatewayHarness, forge: Forge
) -> None:
    expect_allowed(check(harness, forge.headers(audience=ORIGIN + "/api/%68ello"), "/api/%68ello"))


# =========================================================================================
# `jti` and replay.
# =========================================================================================


def test_replayed_wpt_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    headers = forge.headers()
    expect_allowed(check(harness, headers))
    expect_refused(check(harness, headers), "wpt.replayed")


def test_new_wpt_reusing_a_jti_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    wit = forge.wit()
    expect_allowed(check(harness, with_wpt(wit, forge.wpt(wit, claims={"jti": "same-jti"}))))
    # A different token (other exp) from the same sender, same jti.
    again = forge.wpt(wit, claims={"jti": "same-jti", "exp": forge.now + 50})
    expect_refused(check(harness, with_wpt(wit, again)), "wpt.replayed")


def test_replay_with_a_new_wit_for_the_same_workload_is_refused(
    harness: GatewayHarness, forge: Forge
) -> None:
    first = forge.wit()
    expect_allowed(check(harness, with_wpt(first, forge.wpt(first, claims={"jti": "j1"}))))
    second = forge.wit()
    expect_refused(
        check(harness, with_wpt(second, forge.wpt(second, claims={"jti": "j1"}))), "wpt.replayed"
    )


def test_same_jti_from_another_workload_is_not_a_replay(
    harness: GatewayHarness, forge: Forge
) -> None:
    expect_allowed(check(harness, forge.headers(wpt_claims={"jti": "shared-jti"})))
    allowed = expect_allowed(
        check(harness, forge.headers(workload="ops", wpt_claims={"jti": "shared-jti"}))
    )
    assert header(allowed, "x-wimse-caller") == "spiffe://demo.example/ops"


@pytest.mark.parametrize("jti", [DROP, "", None, 17])
def test_wpt_without_jti_is_refused(harness: GatewayHarness, forge: Forge, jti: object) -> None:
    expect_refused(check(harness, forge.headers(wpt_claims={"jti": jti})), "wpt.jti_missing")


def test_wpt_with_oversized_jti_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    expect_refused(
        check(harness, forge.headers(wpt_claims={"jti": "j" * 257})), "wpt.claim_invalid"
    )


def test_replay_is_refused_even_when_the_cache_is_full(harness: GatewayHarness) -> None:
    small = harness.rebuild(wpt={"replay_cache_entries": 1})
    forge = Forge(small)
    headers = forge.headers()
    expect_allowed(check(small, headers))
    expect_refused(check(small, headers), "wpt.replayed")


def test_full_replay_cache_fails_closed_and_recovers_after_expiry(
    harness: GatewayHarness,
) -> None:
    small = harness.rebuild(wpt={"replay_cache_entries": 2})
    forge = Forge(small)
    expect_allowed(check(small, forge.headers()))
    expect_allowed(check(small, forge.headers()))
    verdict = check(small, forge.headers())
    failed = expect_failed(verdict, "replay.capacity")
    assert failed.status == 503
    assert not isinstance(verdict, Denied)
    # Entries are kept until the WPT's exp + clock skew (60 s + 30 s): never evicted early.
    small.clock.now = NOW + 60 + 30
    expect_failed(check(small, Forge(small).headers()), "replay.capacity")
    # Then they expire and the cache accepts new proofs again.
    small.clock.now = NOW + 60 + 30 + 1
    expect_allowed(check(small, Forge(small).headers()))


# =========================================================================================
# `tth`: the Txn-Token binding.
# =========================================================================================


def test_wpt_with_tth_but_no_txn_token_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    headers = forge.headers(wpt_claims={"tth": token_hash(harness.txn_token())})
    expect_refused(check(harness, headers), "wpt.tth_unbound")


def test_txn_token_without_tth_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    headers = forge.headers() | {"txn-token": harness.txn_token()}
    expect_refused(check(harness, headers), "wpt.tth_missing")


def test_txn_token_with_wrong_tth_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    headers = forge.headers(wpt_claims={"tth": token_hash(harness.txn_token())})
    headers["txn-token"] = harness.txn_token()
    expect_refused(check(harness, headers), "wpt.tth_mismatch")


def test_control_txn_token_with_matching_tth_is_accepted(
    harness: GatewayHarness, forge: Forge
) -> None:
    txn_token = harness.txn_token()
    headers = forge.headers(wpt_claims={"tth": token_hash(txn_token)})
    headers["txn-token"] = txn_token
    expect_allowed(check(harness, headers))


# =========================================================================================
# `oth`: other context tokens.
# =========================================================================================

CONTEXT_VALUE = "context-value"


def test_oth_naming_a_header_the_gateway_does_not_use_is_refused(
    harness: GatewayHarness, forge: Forge
) -> None:
    headers = forge.headers(wpt_claims={"oth": {"x-context": token_hash(CONTEXT_VALUE)}})
    headers["x-context"] = CONTEXT_VALUE
    expect_refused(check(harness, headers), "wpt.oth_unknown_header")


@pytest.fixture
def bindable(harness: GatewayHarness) -> GatewayHarness:
    return harness.rebuild(wpt={"bindable_headers": ["x-context"]})


def test_oth_with_an_unconfigured_name_next_to_a_configured_one_is_refused(
    bindable: GatewayHarness,
) -> None:
    forge = Forge(bindable)
    oth = {"x-context": token_hash(CONTEXT_VALUE), "x-other": token_hash("v")}
    headers = forge.headers(wpt_claims={"oth": oth}) | {"x-context": CONTEXT_VALUE, "x-other": "v"}
    expect_refused(check(bindable, headers), "wpt.oth_unknown_header")


def test_oth_name_in_another_case_is_refused(bindable: GatewayHarness) -> None:
    forge = Forge(bindable)
    headers = forge.headers(wpt_claims={"oth": {"X-Context": token_hash(CONTEXT_VALUE)}})
    headers["x-context"] = CONTEXT_VALUE
    expect_refused(check(bindable, headers), "wpt.oth_unknown_header")


def test_oth_bound_header_absent_is_refused(bindable: GatewayHarness) -> None:
    forge = Forge(bindable)
    headers = forge.headers(wpt_claims={"oth": {"x-context": token_hash(CONTEXT_VALUE)}})
    expect_refused(check(bindable, headers), "wpt.oth_header_missing")


def test_oth_hash_mismatch_is_refused(bindable: GatewayHarness) -> None:
    forge = Forge(bindable)
    headers = forge.headers(wpt_claims={"oth": {"x-context": token_hash("another-value")}})
    headers["x-context"] = CONTEXT_VALUE
    expect_refused(check(bindable, headers), "wpt.oth_mismatch")


@pytest.mark.parametrize("oth", [["x-context"], "x-context", {"x-context": 1}])
def test_oth_of_the_wrong_shape_is_refused(bindable: GatewayHarness, oth: object) -> None:
    forge = Forge(bindable)
    headers = forge.headers(wpt_claims={"oth": oth}) | {"x-context": CONTEXT_VALUE}
    expect_refused(check(bindable, headers), "wpt.oth_invalid")


def test_oth_matching_binding_is_accepted(bindable: GatewayHarness) -> None:
    forge = Forge(bindable)
    headers = forge.headers(wpt_claims={"oth": {"x-context": token_hash(CONTEXT_VALUE)}})
    headers["x-context"] = CONTEXT_VALUE
    expect_allowed(check(bindable, headers))


BOUND_HEADERS_POLICY = """package envoy.authz

import rego.v1

decision := {
	"allowed": true,
	"headers": {"x-test-bound": concat(",", input.wimse.caller.proof.bound_headers)},
}
"""


@pytest.mark.parametrize(
    ("send_txn", "send_user", "bound"),
    [
        (False, True, "x-context"),
        (True, True, "txn-token,x-context"),
        (True, False, "txn-token"),
        (False, False, ""),
    ],
)
def test_bound_headers_reach_policy_input(
    harness: GatewayHarness, tmp_path: Path, send_txn: bool, send_user: bool, bound: str
) -> None:
    gateway = harness.rebuild(
        wpt={"bindable_headers": ["x-context"]},
        policy=write_policy(tmp_path / "policy", BOUND_HEADERS_POLICY),
    )
    forge = Forge(gateway)
    claims: dict[str, Any] = {}
    extra: dict[str, str] = {}
    if send_txn:
        txn_token = gateway.txn_token()
        claims["tth"] = token_hash(txn_token)
        extra["txn-token"] = txn_token
    if send_user:
        claims["oth"] = {"x-context": token_hash(CONTEXT_VALUE)}
        extra["x-context"] = CONTEXT_VALUE
    allowed = expect_allowed(check(gateway, forge.headers(wpt_claims=claims) | extra))
    assert header(allowed, "x-test-bound") == bound


def test_unbound_context_header_is_not_reported_as_bound(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    gateway = harness.rebuild(
        wpt={"bindable_headers": ["x-context"]},
        policy=write_policy(tmp_path / "policy", BOUND_HEADERS_POLICY),
    )
    # x-context is sent but the proof does not bind it: it must not count as bound.
    headers = Forge(gateway).headers() | {"x-context": CONTEXT_VALUE}
    allowed = expect_allowed(check(gateway, headers))
    assert header(allowed, "x-test-bound") == ""


# =========================================================================================
# Repeated credential headers (Envoy joins repeats with a comma).
# =========================================================================================


def test_two_wpt_authorization_headers_are_refused(harness: GatewayHarness, forge: Forge) -> None:
    wit = forge.wit()
    first, second = forge.wpt(wit), forge.wpt(wit)
    headers = {WIT_HEADER: wit, AUTHORIZATION: f"WPT {first},WPT {second}"}
    expect_refused(check(harness, headers), "wpt.multiple")


def test_same_wpt_sent_twice_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    wit = forge.wit()
    wpt = forge.wpt(wit)
    headers = {WIT_HEADER: wit, AUTHORIZATION: f"WPT {wpt}, WPT {wpt}"}
    expect_refused(check(harness, headers), "wpt.multiple")


@pytest.mark.parametrize("order", ["bearer-first", "wpt-first"])
def test_bearer_next_to_wpt_is_refused(harness: GatewayHarness, forge: Forge, order: str) -> None:
    wit = forge.wit()
    wpt = "WPT " + forge.wpt(wit)
    bearer = "Bearer some-access-token"
    value = f"{bearer},{wpt}" if order == "bearer-first" else f"{wpt},{bearer}"
    expect_refused(check(harness, {WIT_HEADER: wit, AUTHORIZATION: value}), "wpt.multiple")


def test_two_wit_headers_are_refused(harness: GatewayHarness, forge: Forge) -> None:
    wit, other = forge.wit(), forge.wit()
    headers = with_wpt(wit, forge.wpt(wit))
    headers[WIT_HEADER] = f"{wit},{other}"
    expect_refused(check(harness, headers), "wit.multiple")


def _raw_header_request(entries: list[tuple[str, str]]) -> Any:
    """A CheckRequest in Envoy's `encode_raw_headers` form: one `header_map` entry each."""
    request = check_request("/api/hello", {})
    for name, value in entries:
        request.attributes.request.http.header_map.headers.add(
            key=name, raw_value=value.encode("utf-8")
        )
    return request


def test_control_raw_header_map_request_is_allowed(harness: GatewayHarness, forge: Forge) -> None:
    headers = forge.headers()
    request = _raw_header_request([("Workload-Identity-Token", headers[WIT_HEADER])])
    request.attributes.request.http.header_map.headers.add(
        key="Authorization", raw_value=headers[AUTHORIZATION].encode()
    )
    expect_allowed(harness.check(request))


def test_repeated_authorization_in_raw_header_map_is_refused(
    harness: GatewayHarness, forge: Forge
) -> None:
    wit = forge.wit()
    entries = [
        (WIT_HEADER, wit),
        ("Authorization", "WPT " + forge.wpt(wit)),
        ("authorization", "WPT " + forge.wpt(wit)),
    ]
    expect_refused(harness.check(_raw_header_request(entries)), "wpt.multiple")


def test_repeated_wit_in_raw_header_map_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    wit = forge.wit()
    entries = [
        ("Workload-Identity-Token", wit),
        (AUTHORIZATION, "WPT " + forge.wpt(wit)),
        ("workload-identity-token", forge.wit()),
    ]
    expect_refused(harness.check(_raw_header_request(entries)), "wit.multiple")


def test_non_utf8_wit_in_raw_header_map_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    headers = forge.headers()
    request = _raw_header_request([(AUTHORIZATION, headers[AUTHORIZATION])])
    request.attributes.request.http.header_map.headers.add(
        key=WIT_HEADER, raw_value=headers[WIT_HEADER].encode() + b"\xff"
    )
    expect_refused(harness.check(request), "wit.malformed")


def test_wpt_in_both_forms_is_ambiguous_when_legacy_is_enabled(harness: GatewayHarness) -> None:
    legacy = harness.rebuild(wpt={"legacy_header": True})
    forge = Forge(legacy)
    headers = forge.headers()
    headers["workload-proof-token"] = forge.wpt(headers[WIT_HEADER])
    expect_refused(check(legacy, headers), "credentials.ambiguous")


def test_wpt_under_bearer_scheme_is_not_a_proof(harness: GatewayHarness, forge: Forge) -> None:
    headers = forge.headers()
    headers[AUTHORIZATION] = "Bearer " + headers[AUTHORIZATION].removeprefix("WPT ")
    expect_refused(check(harness, headers), "wpt.missing")


# =========================================================================================
# Unsupported JOSE extensions: `crit`, `b64`.
# =========================================================================================

EXTENSIONS: list[Any] = [
    pytest.param({"crit": ["exp"]}, "crit_unsupported", id="crit"),
    pytest.param({"crit": []}, "crit_unsupported", id="crit-empty"),
    pytest.param({"crit": ["b64"], "b64": False}, "crit_unsupported", id="crit-b64-false"),
    pytest.param({"b64": False}, "b64_unsupported", id="b64-false"),
    pytest.param({"b64": True}, "b64_unsupported", id="b64-true"),
]


@pytest.mark.parametrize(("changes", "code"), EXTENSIONS)
def test_wit_with_unsupported_extension_is_refused(
    harness: GatewayHarness, forge: Forge, changes: dict[str, Any], code: str
) -> None:
    wit = forge.wit(header=changes)
    expect_refused(check(harness, forge.headers(wit=wit)), f"wit.{code}")


@pytest.mark.parametrize(("changes", "code"), EXTENSIONS)
def test_wpt_with_unsupported_extension_is_refused(
    harness: GatewayHarness, forge: Forge, changes: dict[str, Any], code: str
) -> None:
    expect_refused(check(harness, forge.headers(wpt_header=changes)), f"wpt.{code}")


# =========================================================================================
# Identity headers are gateway-managed.
# =========================================================================================

FORGED_IDENTITY = {
    "x-wimse-caller": "spiffe://demo.example/ops",
    "x-wimse-caller-trust-domain": "evil.example",
    "x-wimse-authenticated-by": "mtls",
}


def _identity_actions(allowed: Allowed) -> dict[str, str | None]:
    """What the upstream sees for each identity header: the set value, or None (removed)."""
    actions: dict[str, str | None] = {}
    for name in IDENTITY_HEADERS:
        values = [value for key, value in allowed.headers if key == name]
        assert len(values) <= 1, f"{name} set more than once"
        if values:
            assert name not in allowed.headers_to_remove
            actions[name] = values[0]
        else:
            assert name in allowed.headers_to_remove, f"client's {name} would reach upstream"
            actions[name] = None
    return actions


def test_forged_caller_header_is_overwritten_on_allowed_request(
    harness: GatewayHarness, forge: Forge
) -> None:
    assert set(harness.gateway.config.upstream.identity_headers.names()) == set(IDENTITY_HEADERS)
    allowed = expect_allowed(check(harness, forge.headers() | FORGED_IDENTITY))
    assert _identity_actions(allowed) == {
        "x-wimse-caller": FRONTEND,
        "x-wimse-caller-trust-domain": "demo.example",
        "x-wimse-authenticated-by": "wpt",
    }
    ok = check_response(allowed).ok_response
    set_by_gateway = {option.header.key: option for option in ok.headers}
    for name in IDENTITY_HEADERS:
        # append=false: Envoy overwrites whatever the client sent.
        assert set_by_gateway[name].HasField("append")
        assert set_by_gateway[name].append.value is False


def test_forged_caller_header_is_removed_on_public_path(harness: GatewayHarness) -> None:
    allowed = expect_allowed(check(harness, FORGED_IDENTITY, "/healthz"))
    assert _identity_actions(allowed) == dict.fromkeys(IDENTITY_HEADERS)
    assert set(IDENTITY_HEADERS) <= set(check_response(allowed).ok_response.headers_to_remove)


def test_forged_caller_header_does_not_authenticate(harness: GatewayHarness) -> None:
    expect_refused(check(harness, FORGED_IDENTITY), "policy.unauthenticated")


MANAGED_HEADER_POLICY = """package envoy.authz

import rego.v1

decision := {"allowed": true, "%s": {"%s": "spiffe://demo.example/admin"}}
"""


@pytest.mark.parametrize(
    "name",
    [*IDENTITY_HEADERS, "X-Wimse-Caller", "x-wimse-authz-reason"],
)
@pytest.mark.parametrize("member", ["headers", "response_headers_to_add"])
def test_policy_setting_a_managed_header_is_an_invalid_decision(
    harness: GatewayHarness, forge: Forge, tmp_path: Path, name: str, member: str
) -> None:
    policy = write_policy(tmp_path / "policy", MANAGED_HEADER_POLICY % (member, name))
    gateway = harness.rebuild(policy=policy)
    verdict = check(gateway, Forge(gateway).headers())
    failed = expect_failed(verdict, "policy.invalid_decision")
    assert failed.status == 503


# =========================================================================================
# Sizes.
# =========================================================================================


def test_oversized_wit_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    wit = forge.wit(claims={"pad": "a" * 9000})
    assert len(wit) > 8 * 1024
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.too_large")


def test_control_large_wit_under_the_limit_is_accepted(
    harness: GatewayHarness, forge: Forge
) -> None:
    wit = forge.wit(claims={"pad": "a" * 5000})
    assert len(wit) < 8 * 1024
    expect_allowed(check(harness, forge.headers(wit=wit)))


def test_oversized_wpt_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    headers = forge.headers(wpt_claims={"pad": "a" * 9000})
    assert len(headers[AUTHORIZATION]) > 8 * 1024
    expect_refused(check(harness, headers), "wpt.too_large")


def test_wit_over_a_configured_limit_is_refused(harness: GatewayHarness) -> None:
    small = harness.rebuild(limits={"token_header_bytes": 256})
    forge = Forge(small)
    wit = forge.wit()
    assert len(wit) > 256
    expect_refused(check(small, forge.headers(wit=wit)), "wit.too_large")


def test_oversized_txn_token_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    txn = harness.txn_token(tctx={"padding": "t" * 9000})
    headers = forge.headers(wpt_claims={"tth": token_hash(txn)}) | {"txn-token": txn}
    expect_refused(check(harness, headers), "txn.too_large")


def _context_headers(harness: GatewayHarness, count: int) -> tuple[GatewayHarness, dict[str, str]]:
    """A gateway binding nine 7.5 KiB context headers, and a valid request sending `count`."""
    names = [f"x-context-{index}" for index in range(9)]
    gateway = harness.rebuild(wpt={"bindable_headers": names})
    values = {name: name[-1] * 7500 for name in names[:count]}
    oth = {name: token_hash(value) for name, value in values.items()}
    headers = Forge(gateway).headers(wpt_claims={"oth": oth}) | values
    assert all(len(value) < 8 * 1024 for value in headers.values())
    return gateway, headers


def test_control_credential_headers_under_64_kib_are_accepted(harness: GatewayHarness) -> None:
    gateway, headers = _context_headers(harness, 7)
    assert sum(len(value) for value in headers.values()) < 64 * 1024
    expect_allowed(check(gateway, headers))


def test_total_credential_headers_over_64_kib_are_refused(harness: GatewayHarness) -> None:
    # Every header is under the 8 KiB per-token limit; together they exceed 64 KiB.
    gateway, headers = _context_headers(harness, 9)
    assert sum(len(value) for value in headers.values()) > 64 * 1024
    expect_refused(check(gateway, headers), "credentials.too_large")


def test_total_credential_headers_over_a_configured_limit_are_refused(
    harness: GatewayHarness,
) -> None:
    small = harness.rebuild(limits={"credential_headers_bytes": 4096})
    forge = Forge(small)
    txn = harness.txn_token(tctx={"padding": "t" * 3000})
    headers = forge.headers(wpt_claims={"tth": token_hash(txn)}) | {"txn-token": txn}
    assert sum(len(value) for value in headers.values()) > 4096
    expect_refused(check(small, headers), "credentials.too_large")
    # The same request under the default limit is fine.
    expect_allowed(
        check(
            harness,
            Forge(harness).headers(wpt_claims={"tth": token_hash(txn)}) | {"txn-token": txn},
        )
    )


# =========================================================================================
# Malformed tokens.
# =========================================================================================


def _segments(token: str) -> list[str]:
    return token.split(".")


def _impossible_length(token: str) -> str:
    """The signature segment cut to a length no base64 encoding has (4n + 1)."""
    head, payload, signature = _segments(token)
    signature = signature[: len(signature) - (len(signature) - 1) % 4]
    assert len(signature) % 4 == 1
    return f"{head}.{payload}.{signature}"


STRING_MUTATIONS: dict[str, Callable[[str], str]] = {
    "non-ascii-suffix": lambda t: t + "\u00e9",
    "non-ascii-inside": lambda t: t[:20] + "\u00e9" + t[21:],
    "ideographic-full-stop": lambda t: t.replace(".", "\u3002", 1),
    "fullwidth-letter": lambda t: "\uff41" + t[1:],
    "garbage-base64": lambda t: "!!!!." + ".".join(_segments(t)[1:]),
    "two-segments": lambda t: ".".join(_segments(t)[:2]),
    "four-segments": lambda t: t + ".AAAA",
    "five-segments-jwe": lambda t: ".".join([*_segments(t), "AAAA", "AAAA"]),
    "one-segment": lambda t: _segments(t)[1],
    "empty": lambda t: "",
    "empty-payload": lambda t: f"{_segments(t)[0]}..{_segments(t)[2]}",
    "signature-padding": lambda t: t + "==",
    "header-padding": lambda t: _segments(t)[0] + "=." + ".".join(_segments(t)[1:]),
    "payload-padding": lambda t: ".".join(
        [_segments(t)[0], _segments(t)[1] + "=", _segments(t)[2]]
    ),
    "signature-bad-char": lambda t: t[:-1] + "*",
    "standard-base64-alphabet": lambda t: t[:-1] + "+",
    "signature-length-4n-plus-1": _impossible_length,
    "trailing-space": lambda t: t + " ",
}


@pytest.mark.parametrize("mutation", STRING_MUTATIONS)
def test_malformed_wit_is_refused(harness: GatewayHarness, forge: Forge, mutation: str) -> None:
    wit = STRING_MUTATIONS[mutation](forge.wit())
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.malformed")


@pytest.mark.parametrize("mutation", STRING_MUTATIONS)
def test_malformed_wpt_is_refused(harness: GatewayHarness, forge: Forge, mutation: str) -> None:
    wit = forge.wit()
    wpt = STRING_MUTATIONS[mutation](forge.wpt(wit))
    expect_refused(check(harness, with_wpt(wit, wpt)), "wpt.malformed")


def _duplicate(document: dict[str, Any], name: str, value: object) -> bytes:
    """`document` as JSON with a second `name` member appended (last one wins in Python)."""
    return compact_json(document)[:-1] + b"," + compact_json({name: value})[1:]


NESTED = b"[" * 2000 + b"]" * 2000

JSON_CASES = [
    "header-array",
    "claims-array",
    "header-duplicate-typ",
    "header-duplicate-alg",
    "claims-duplicate",
    "claims-nan",
    "claims-infinity",
    "header-not-json",
    "header-invalid-utf8",
    "claims-not-json",
    "header-without-alg",
    "header-numeric-alg",
    "header-deep-nesting",
]


def _json_case(
    case: str, header: dict[str, Any], claims: dict[str, Any], duplicate: tuple[str, object]
) -> tuple[bytes | None, bytes | None]:
    header_bytes, claims_bytes = compact_json(header), compact_json(claims)
    result: dict[str, tuple[bytes | None, bytes | None]] = {
        "header-array": (compact_json([header]), None),
        "claims-array": (None, compact_json([claims])),
        "header-duplicate-typ": (_duplicate({**header, "typ": "JWT"}, "typ", header["typ"]), None),
        "header-duplicate-alg": (_duplicate({**header, "alg": "none"}, "alg", header["alg"]), None),
        "claims-duplicate": (None, _duplicate(claims, *duplicate)),
        "claims-nan": (None, claims_bytes[:-1] + b',"iat":NaN}'),
        "claims-infinity": (None, claims_bytes[:-1] + b',"iat":Infinity}'),
        "header-not-json": (b"not json", None),
        "header-invalid-utf8": (b'{"alg":"\xff"}', None),
        "claims-not-json": (None, b"{" + claims_bytes),
        "header-without-alg": (compact_json({k: v for k, v in header.items() if k != "alg"}), None),
        "header-numeric-alg": (compact_json({**header, "alg": 256}), None),
        # Deeper than Python's recursion limit, small enough for the 8 KiB header limit.
        "header-deep-nesting": (header_bytes[:-1] + b',"x":' + NESTED + b"}", None),
    }
    return result[case]


@pytest.mark.parametrize("case", JSON_CASES)
def test_wit_with_invalid_json_is_refused(harness: GatewayHarness, forge: Forge, case: str) -> None:
    claims = forge.wit_claims()
    raw_header, raw_claims = _json_case(case, forge.wit_header(), claims, ("sub", claims["sub"]))
    if case == "claims-duplicate":
        # The first `sub` names ops; a last-wins parser would see frontend.
        raw_claims = _duplicate(
            {**claims, "sub": "spiffe://demo.example/ops"}, "sub", claims["sub"]
        )
    wit = forge.wit(raw_header=raw_header, raw_claims=raw_claims)
    expect_refused(check(harness, forge.headers(wit=wit)), "wit.malformed")


@pytest.mark.parametrize("case", JSON_CASES)
def test_wpt_with_invalid_json_is_refused(harness: GatewayHarness, forge: Forge, case: str) -> None:
    wit = forge.wit()
    claims = forge.wpt_claims(wit)
    raw_header, raw_claims = _json_case(case, forge.wpt_header(), claims, ("aud", TARGET))
    if case == "claims-duplicate":
        raw_claims = _duplicate({**claims, "aud": "https://other.example/"}, "aud", TARGET)
    wpt = forge.wpt(wit, raw_header=raw_header, raw_claims=raw_claims)
    expect_refused(check(harness, with_wpt(wit, wpt)), "wpt.malformed")


# =========================================================================================
# How credentials are presented.
# =========================================================================================


def test_wit_without_any_proof_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    headers = forge.headers()
    del headers[AUTHORIZATION]
    expect_refused(check(harness, headers), "wpt.missing")


def test_wit_without_proof_on_a_public_path_is_refused(
    harness: GatewayHarness, forge: Forge
) -> None:
    # A bare WIT is refused outright, even where no credentials are needed at all.
    headers = forge.headers()
    del headers[AUTHORIZATION]
    expect_refused(check(harness, headers, "/healthz"), "wpt.missing")


def test_wit_with_bearer_token_only_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    headers = forge.headers() | {AUTHORIZATION: "Bearer some-access-token"}
    expect_refused(check(harness, headers), "wpt.missing")


def test_wpt_without_wit_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    headers = forge.headers()
    del headers[WIT_HEADER]
    expect_refused(check(harness, headers), "wit.missing")


def test_wit_in_authorization_header_is_refused(harness: GatewayHarness, forge: Forge) -> None:
    # The WIT belongs in its own header, never in Authorization.
    wit = forge.wit()
    expect_refused(check(harness, {AUTHORIZATION: "WPT " + wit}), "wit.missing")


def test_obsolete_workload_proof_token_header_is_refused(
    harness: GatewayHarness, forge: Forge
) -> None:
    headers = forge.headers()
    headers["workload-proof-token"] = headers.pop(AUTHORIZATION).removeprefix("WPT ")
    expect_refused(check(harness, headers), "wpt.legacy_form_disabled")


SIGNATURE_HEADERS = {
    "signature": "wimse=:AAAA:",
    "signature-input": 'wimse=("@method" "@path" "@query");created=1800000000;'
    'expires=1800000060;nonce="n";tag="wimse-workload-to-workload"',
}


@pytest.mark.parametrize(
    "names", [("signature", "signature-input"), ("signature",), ("signature-input",)]
)
def test_http_signature_is_refused_where_the_service_accepts_only_wpts(
    harness: GatewayHarness, forge: Forge, names: tuple[str, ...]
) -> None:
    wpt_only = harness.rebuild(
        services={"echo": {"id": SERVICE_ID, "origins": [ORIGIN], "proofs": ["wpt"]}}
    )
    headers = {WIT_HEADER: forge.wit()} | {name: SIGNATURE_HEADERS[name] for name in names}
    denied = expect_denied(check(wpt_only, headers), "httpsig.not_accepted", 400)
    assert header(denied, "www-authenticate") is None


def test_http_signature_without_wit_is_refused(harness: GatewayHarness) -> None:
    denied = expect_denied(check(harness, dict(SIGNATURE_HEADERS)), "wit.missing", 400)
    assert header(denied, "www-authenticate") is None


def test_http_signature_next_to_a_wpt_is_ambiguous(harness: GatewayHarness, forge: Forge) -> None:
    headers = forge.headers() | SIGNATURE_HEADERS
    expect_refused(check(harness, headers), "credentials.ambiguous")


# =========================================================================================
# Signed requests that smuggle a body: a signature made as if the request had no body (or
# over another body), sent with one. The route context and Envoy's body flag are what Envoy
# sends on each route shape of deploy/envoy/gateway.yaml (measured on Envoy 1.40): where it
# forwards bodies (`wimse.body: forwarded`) it adds `x-envoy-auth-partial-body` to a check
# that carried a body, and removes a client's copy; where it does not, the body never
# reaches the gateway and a chunked or HTTP/2 body announces itself nowhere in the check.
# =========================================================================================

BODY_ROUTE = {"wimse.body": "forwarded"}
NO_BODY_ROUTE: dict[str, str] = {}
ENVOY_FLAG = {"x-envoy-auth-partial-body": "false"}
SMUGGLED = b'{"item":"cone","amount":1000}'
SIGNED_BODY = b'{"item":"cone","amount":1}'


@dataclass(frozen=True)
class SignedShape:
    """One signed request as the gateway's check sees it."""

    method: str = "GET"
    signed_body: bytes | None = None
    """The body the signature's Content-Digest covers (None: signed as body-less)."""
    raw_body: bytes = b""
    """The bytes Envoy forwarded in `raw_body`."""
    text_body: str = ""
    """A body Envoy forwarded only as text (`pack_as_bytes` off)."""
    headers: tuple[tuple[str, str], ...] = ()
    """Sent after signing (client-sent Envoy flags, a Content-Length)."""
    signed_headers: tuple[tuple[str, str], ...] = ()
    """Sent and covered by the signature."""
    route: tuple[tuple[str, str], ...] = tuple(BODY_ROUTE.items())


def check_signed(harness: GatewayHarness, shape: SignedShape) -> Verdict:
    request_headers = {WIT_HEADER: harness.wit()}
    if shape.signed_body is not None:
        request_headers["content-type"] = "application/json"
    request_headers |= dict(shape.signed_headers)
    request_headers |= sign_request(
        harness.identities.workloads["frontend"],
        method=shape.method,
        path="/api/hello",
        body=shape.signed_body,
        audience=TARGET,
        headers=request_headers,
        now=harness.clock.now,
    )
    return harness.check_path(
        "/api/hello",
        request_headers | dict(shape.headers),
        method=shape.method,
        raw_body=shape.raw_body,
        body=shape.text_body,
        context=dict(shape.route),
    )


@pytest.fixture
def signing(harness: GatewayHarness) -> GatewayHarness:
    """The demo service accepting HTTP signatures (and WPTs)."""
    service = {"id": SERVICE_ID, "origins": [ORIGIN], "proofs": ["wpt", "http_signature"]}
    return harness.rebuild(services={"echo": service})


CONTROL_SHAPES = [
    pytest.param(SignedShape(), id="bodyless-get"),
    pytest.param(
        SignedShape(
            "POST",
            SIGNED_BODY,
            SIGNED_BODY,
            headers=(*ENVOY_FLAG.items(), ("content-length", str(len(SIGNED_BODY)))),
        ),
        id="post-with-its-digest",
    ),
]

SMUGGLED_BODY_SHAPES = [
    # Routes that do not declare `wimse.body: forwarded`: refused before any verification.
    pytest.param(SignedShape(route=()), "httpsig.not_accepted", 400, id="route-no-body-get"),
    pytest.param(
        SignedShape("HEAD", route=()), "httpsig.not_accepted", 400, id="route-no-body-head"
    ),
    pytest.param(
        SignedShape("POST", route=()), "httpsig.not_accepted", 400, id="route-no-body-h2-post"
    ),
    pytest.param(
        SignedShape(headers=tuple(ENVOY_FLAG.items()), route=()),
        "httpsig.not_accepted",
        400,
        id="route-no-body-client-sent-envoy-flag",
    ),
    pytest.param(
        SignedShape(
            "POST",
            SIGNED_BODY,
            SIGNED_BODY,
            headers=(*ENVOY_FLAG.items(), ("content-length", str(len(SIGNED_BODY)))),
            route=(("wimse.service", "echo"),),
        ),
        "httpsig.not_accepted",
        400,
        id="route-no-body-even-a-fully-signed-post",
    ),
    # A route that forwards bodies: the smuggled bytes arrive and are checked.
    pytest.param(
        SignedShape(raw_body=SMUGGLED, headers=tuple(ENVOY_FLAG.items())),
        "httpsig.digest_missing",
        400,
        id="chunked-or-h2-get-signed-bodyless",
    ),
    pytest.param(
        SignedShape("HEAD", raw_body=SMUGGLED, headers=tuple(ENVOY_FLAG.items())),
        "httpsig.digest_missing",
        400,
        id="head-signed-bodyless",
    ),
    pytest.param(
        SignedShape("POST", raw_body=SMUGGLED, headers=tuple(ENVOY_FLAG.items())),
        "httpsig.digest_missing",
        400,
        id="post-signed-bodyless",
    ),
    pytest.param(
        SignedShape("POST", SIGNED_BODY, SMUGGLED, headers=tuple(ENVOY_FLAG.items())),
        "httpsig.digest_mismatch",
        400,
        id="post-body-swapped-without-content-length",
    ),
    pytest.param(
        SignedShape(
            "POST",
            raw_body=SMUGGLED,
            headers=tuple(ENVOY_FLAG.items()),
            signed_headers=(("content-digest", content_digest(b"")),),
        ),
        "httpsig.digest_mismatch",
        400,
        id="digest-of-an-empty-body",
    ),
    pytest.param(
        SignedShape(
            "POST",
            SIGNED_BODY,
            SIGNED_BODY + SMUGGLED,
            headers=(*ENVOY_FLAG.items(), ("content-length", str(len(SIGNED_BODY)))),
        ),
        "httpsig.body_partial",
        400,
        id="more-bytes-than-content-length",
    ),
    pytest.param(
        SignedShape(
            "POST", SIGNED_BODY, SIGNED_BODY, headers=(("x-envoy-auth-partial-body", "true"),)
        ),
        "httpsig.body_partial",
        400,
        id="envoy-flags-a-partial-body",
    ),
    # Envoy's configuration contradicts the route's declaration: our outage, not an allow.
    pytest.param(
        SignedShape("POST", headers=(("content-length", str(len(SMUGGLED))),)),
        "httpsig.body_not_forwarded",
        503,
        id="forwarded-route-not-buffering",
    ),
    pytest.param(
        SignedShape(
            "POST", SIGNED_BODY, text_body=SIGNED_BODY.decode(), headers=tuple(ENVOY_FLAG.items())
        ),
        "httpsig.body_not_forwarded",
        503,
        id="forwarded-route-body-as-text",
    ),
    pytest.param(
        SignedShape(raw_body=SMUGGLED, route=(("wimse.body", "Forwarded"),)),
        "route.config_invalid",
        503,
        id="wimse-body-typo",
    ),
]


@pytest.mark.parametrize("shape", CONTROL_SHAPES)
def test_control_signed_request_on_a_body_forwarding_route_is_allowed(
    signing: GatewayHarness, shape: SignedShape
) -> None:
    allowed = expect_allowed(check_signed(signing, shape))
    assert header(allowed, "x-wimse-authenticated-by") == "http_signature"


@pytest.mark.parametrize(("shape", "reason", "status"), SMUGGLED_BODY_SHAPES)
def test_signed_request_smuggling_a_body_is_refused(
    signing: GatewayHarness, shape: SignedShape, reason: str, status: int
) -> None:
    verdict = check_signed(signing, shape)
    if status == 503:
        assert expect_failed(verdict, reason).status == 503
    else:
        expect_denied(verdict, reason, status)


# =========================================================================================
# mTLS identities reported by Envoy.
# =========================================================================================


@pytest.fixture
def mtls(harness: GatewayHarness) -> GatewayHarness:
    return harness.rebuild(mtls={"authenticate": True})


def test_control_mtls_principal_authenticates_when_enabled(mtls: GatewayHarness) -> None:
    allowed = expect_allowed(mtls.check_path("/api/hello", {}, principal=FRONTEND))
    assert header(allowed, "x-wimse-caller") == FRONTEND
    assert header(allowed, "x-wimse-authenticated-by") == "mtls"


def test_mtls_principal_in_unknown_trust_domain_is_refused(mtls: GatewayHarness) -> None:
    verdict = mtls.check_path("/api/hello", {}, principal="spiffe://evil.example/frontend")
    expect_refused(verdict, "mtls.trust_domain_unknown")


@pytest.mark.parametrize(
    "principal",
    [
        pytest.param("frontend.demo.example", id="dns-name"),
        pytest.param("CN=frontend", id="subject-dn"),
        pytest.param("spiffe://demo.example/frontend/", id="trailing-slash"),
        pytest.param("spiffe://DEMO.example/frontend", id="uppercase-trust-domain"),
        pytest.param("https://demo.example/frontend", id="https-scheme"),
    ],
)
def test_mtls_principal_that_is_not_a_workload_id_is_refused(
    mtls: GatewayHarness, principal: str
) -> None:
    verdict = mtls.check_path("/api/hello", {}, principal=principal)
    expect_refused(verdict, "mtls.principal_invalid")


def test_mtls_principal_is_not_a_caller_when_mtls_is_off(harness: GatewayHarness) -> None:
    verdict = harness.check_path("/api/hello", {}, principal=FRONTEND)
    expect_refused(verdict, "policy.unauthenticated")


def test_bare_wit_does_not_fall_back_to_mtls(mtls: GatewayHarness) -> None:
    headers = Forge(mtls).headers()
    del headers[AUTHORIZATION]
    expect_refused(mtls.check_path("/api/hello", headers, principal=FRONTEND), "wpt.missing")


def test_mtls_does_not_rescue_an_invalid_wpt(mtls: GatewayHarness) -> None:
    headers = Forge(mtls).headers(wpt_claims={"aud": "https://other.example/api/hello"})
    verdict = mtls.check_path("/api/hello", headers, principal=FRONTEND)
    expect_refused(verdict, "wpt.aud_mismatch")
