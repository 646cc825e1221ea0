"""WIT verification, step by step, in the order the spec digest gives."""

from __future__ import annotations

from typing import Any

import pytest

from authz.credentials.algorithms import SUPPORTED_ALGORITHMS
from authz.credentials.claims import token_hash
from authz.credentials.wit import VerifiedWit, WitRules, WitVerifier
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import mint_wit, sign_jws
from authz.errors import CredentialError
from authz.reasons import Reason
from authz.trust.key_sets import build_trust_store
from tests.support import MutableClock

NOW = 1_800_000_000
SUBJECT = "spiffe://example.org/orders"
ISSUER = generate_private_jwk("ES256", kid="issuer-1")
OTHER_ISSUER = generate_private_jwk("ES256", kid="issuer-1")
WORKLOAD = generate_private_jwk("EdDSA", kid="w")


def verifier(clock: MutableClock | None = None, cache_entries: int = 100) -> WitVerifier:
    store = build_trust_store(
        {"example.org": (frozenset({"ES256", "EdDSA"}), {"keys": [public_jwk(ISSUER)]}, "td")}
    )
    rules = WitRules(
        clock_skew=30, max_lifetime=86400, proof_algorithms=frozenset({"EdDSA", "ES256"})
    )
    return WitVerifier(store, rules, clock or MutableClock(NOW), cache_entries)


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sub": SUBJECT,
        "iat": NOW - 60,
        "exp": NOW + 3600,
        "cnf": {"jwk": {k: v for k, v in public_jwk(WORKLOAD).items() if k != "kid"}},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def wit(claim_overrides: dict[str, Any] | None = None, **header: Any) -> str:
    header = {"typ": "wit+jwt", "kid": "issuer-1", **header}
    return sign_jws(claims(**(claim_overrides or {})), ISSUER, header)


def reason(token: str, clock: MutableClock | None = None) -> Reason:
    with pytest.raises(CredentialError) as caught:
        verifier(clock).verify(token)
    return caught.value.reason


def test_valid_wit_yields_subject_confirmation_key_and_binding_hash() -> None:
    token = wit()
    verified = verifier().verify(token)
    assert verified.subject.uri == SUBJECT
    assert verified.proof_alg == "EdDSA"
    assert verified.issuer_key.kid == "issuer-1"
    assert verified.expires_at == NOW + 3600
    assert verified.token_hash == token_hash(token)
    assert verified.proof_key.algorithms == {"EdDSA"}


def test_wit_minted_by_the_dev_issuer_verifies() -> None:
    token = mint_wit(ISSUER, SUBJECT, WORKLOAD, now=NOW)
    assert verifier().verify(token).subject.uri == SUBJECT


@pytest.mark.parametrize("typ", ["application/wit+jwt", "WIT+JWT"])
def test_typ_variants_are_accepted(typ: str) -> None:
    assert verifier().verify(wit(typ=typ)).subject.uri == SUBJECT


@pytest.mark.parametrize("typ", [None, "JWT", "wpt+jwt", "at+jwt"])
def test_wrong_typ_is_refused(typ: str | None) -> None:
    assert reason(wit(typ=typ)) is Reason.WIT_TYP_INVALID


def test_typ_is_checked_before_the_signature() -> None:
    token = wit(typ="JWT")
    head, body, _ = token.split(".")
    assert reason(f"{head}.{body}.AAAA") is Reason.WIT_TYP_INVALID


@pytest.mark.parametrize(
    ("sub", "expected"),
    [
        (None, Reason.WIT_SUB_INVALID),
        (42, Reason.WIT_SUB_INVALID),
        ("spiffe://Example.org/orders", Reason.WIT_SUB_INVALID),
        ("spiffe://example.org/orders/", Reason.WIT_SUB_INVALID),
        ("spiffe://elsewhere.org/orders", Reason.WIT_TRUST_DOMAIN_UNKNOWN),
    ],
)
def test_subject_must_be_canonical_and_name_a_configured_trust_domain(
    sub: object, expected: Reason
) -> None:
    overrides: dict[str, Any] = {"sub": sub}
    token = sign_jws(
        {k: v for k, v in claims(**overrides).items()},
        ISSUER,
        {"typ": "wit+jwt", "kid": "issuer-1"},
    )
    assert reason(token) is expected


def test_algorithm_outside_the_domain_allow_list_is_refused() -> None:
    es384 = generate_private_jwk("ES384", kid="issuer-1")
    assert reason(sign_jws(claims(), es384, {"typ": "wit+jwt", "kid": "issuer-1"})) is (
        Reason.WIT_ALG_NOT_ALLOWED
    )


def test_algorithm_the_named_key_cannot_use_is_refused() -> None:
    eddsa = generate_private_jwk("EdDSA", kid="issuer-1")
    assert reason(sign_jws(claims(), eddsa, {"typ": "wit+jwt", "kid": "issuer-1"})) is (
        Reason.WIT_ALG_NOT_ALLOWED
    )


def test_unknown_kid_is_refused() -> None:
    assert reason(wit(kid="issuer-2")) is Reason.WIT_KID_UNKNOWN


def test_non_string_kid_is_malformed() -> None:
    assert reason(sign_jws(claims(), ISSUER, {"typ": "wit+jwt", "kid": 1})) is Reason.WIT_MALFORMED


def test_signature_by_another_key_with_the_same_kid_is_refused() -> None:
    forged = sign_jws(claims(), OTHER_ISSUER, {"typ": "wit+jwt", "kid": "issuer-1"})
    assert reason(forged) is Reason.WIT_SIGNATURE_INVALID


def test_without_kid_every_anchor_for_the_alg_is_tried_and_the_verifying_key_is_named() -> None:
    token = sign_jws(claims(), ISSUER, {"typ": "wit+jwt"})
    assert verifier().verify(token).issuer_key.kid == "issuer-1"
    forged = sign_jws(claims(), OTHER_ISSUER, {"typ": "wit+jwt"})
    assert reason(forged) is Reason.WIT_SIGNATURE_INVALID


def test_tampered_claims_break_the_signature() -> None:
    head, _, signature = wit().split(".")
    _, body, _ = wit({"sub": "spiffe://example.org/admin"}).split(".")
    assert reason(f"{head}.{body}.{signature}") is Reason.WIT_SIGNATURE_INVALID


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"exp": None}, Reason.WIT_EXP_MISSING),
        ({"exp": "tomorrow"}, Reason.WIT_CLAIM_INVALID),
        ({"exp": True}, Reason.WIT_CLAIM_INVALID),
        ({"exp": NOW - 31}, Reason.WIT_EXPIRED),
        ({"exp": NOW + 86400 + 31, "iat": None}, Reason.WIT_EXP_TOO_FAR),
        ({"iat": NOW + 31}, Reason.WIT_IAT_IN_FUTURE),
        ({"iat": NOW - 86400, "exp": NOW + 60}, Reason.WIT_LIFETIME_EXCEEDED),
        ({"nbf": NOW + 31}, Reason.WIT_NOT_YET_VALID),
        ({"iat": "now"}, Reason.WIT_CLAIM_INVALID),
        ({"iss": 7}, Reason.WIT_CLAIM_INVALID),
        ({"jti": ["a"]}, Reason.WIT_CLAIM_INVALID),
    ],
)
def test_time_and_claim_checks(overrides: dict[str, Any], expected: Reason) -> None:
    assert reason(wit(overrides)) is expected


def test_clock_skew_tolerates_small_differences() -> None:
    assert verifier().verify(wit({"exp": NOW - 29})).subject.uri == SUBJECT
    assert verifier().verify(wit({"iat": NOW + 29})).subject.uri == SUBJECT


@pytest.mark.parametrize(
    ("cnf", "expected"),
    [
        (None, Reason.WIT_CNF_MISSING),
        ({}, Reason.WIT_CNF_MISSING),
        ({"jwk": "key"}, Reason.WIT_CNF_MISSING),
        ({"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AA"}}, Reason.WIT_CNF_ALG_MISSING),
        ({"jwk": {"kty": "OKP", "alg": "none"}}, Reason.WIT_CNF_ALG_NOT_ALLOWED),
        ({"jwk": {"kty": "oct", "alg": "HS256", "k": "c2VjcmV0"}}, Reason.WIT_CNF_ALG_NOT_ALLOWED),
        ({"jwk": {"kty": "EC", "alg": "ES384"}}, Reason.WIT_CNF_ALG_NOT_ALLOWED),
        ({"jwk": {**public_jwk(WORKLOAD), "d": "AAAA"}}, Reason.WIT_CNF_KEY_INVALID),
        ({"jwk": {**public_jwk(WORKLOAD), "alg": "ES256"}}, Reason.WIT_CNF_KEY_INVALID),
        ({"jwk": {**public_jwk(WORKLOAD), "x": "short"}}, Reason.WIT_CNF_KEY_INVALID),
    ],
)
def test_confirmation_key_must_be_a_usable_public_key_with_alg(
    cnf: object, expected: Reason
) -> None:
    assert reason(wit({"cnf": cnf})) is expected


def test_verified_wits_are_cached_by_exact_bytes() -> None:
    checker = verifier()
    token = wit()
    first = checker.verify(token)
    assert checker.verify(token) is first
    assert checker.cached == 1


def test_cached_wit_stops_verifying_once_expired() -> None:
    clock = MutableClock(NOW)
    checker = verifier(clock)
    token = wit({"exp": NOW + 100})
    checker.verify(token)
    clock.now = NOW + 131
    with pytest.raises(CredentialError) as caught:
        checker.verify(token)
    assert caught.value.reason is Reason.WIT_EXPIRED
    assert checker.cached == 0


def test_cache_is_bounded_and_drops_the_oldest_entry() -> None:
    checker = verifier(cache_entries=2)
    tokens = [wit({"jti": str(i)}) for i in range(3)]
    verified: list[VerifiedWit] = [checker.verify(t) for t in tokens]
    assert checker.cached == 2
    # The oldest was evicted: verifying it again builds a new result.
    assert checker.verify(tokens[0]) is not verified[0]


def test_failed_verifications_are_not_cached() -> None:
    checker = verifier()
    with pytest.raises(CredentialError):
        checker.verify(wit(kid="nope"))
    assert checker.cached == 0


def test_proof_alg_is_exactly_cnf_alg() -> None:
    ed25519 = generate_private_jwk("Ed25519")
    cnf = {"jwk": {k: v for k, v in public_jwk(ed25519).items() if k != "kid"}}
    store = build_trust_store(
        {"example.org": (frozenset({"ES256"}), {"keys": [public_jwk(ISSUER)]}, "td")}
    )
    rules = WitRules(30, 86400, frozenset(SUPPORTED_ALGORITHMS))
    verified = WitVerifier(store, rules, MutableClock(NOW), 10).verify(wit({"cnf": cnf}))
    assert verified.proof_alg == "Ed25519"
