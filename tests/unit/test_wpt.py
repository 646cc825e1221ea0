"""WPT verification, step by step, in wpt-02's receiver order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from authz.credentials.claims import token_hash
from authz.credentials.wit import VerifiedWit, WitRules, WitVerifier
from authz.credentials.wpt import ProofContext, VerifiedWpt, WptRules, WptVerifier
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import mint_wit, mint_wpt, sign_jws
from authz.errors import CredentialError
from authz.reasons import Reason
from authz.replay.memory import InMemoryReplayCache
from authz.trust.key_sets import build_trust_store
from tests.support import MutableClock

NOW = 1_800_000_000
TARGET = "https://orders.example.org/api/orders"
ISSUER = generate_private_jwk("ES256", kid="issuer")
WORKLOAD = generate_private_jwk("EdDSA")
ATTACKER = generate_private_jwk("EdDSA")


def verified_wit(
    workload: dict[str, Any] = WORKLOAD, sub: str = "orders"
) -> tuple[str, VerifiedWit]:
    store = build_trust_store(
        {"example.org": (frozenset({"ES256"}), {"keys": [public_jwk(ISSUER)]}, "td")}
    )
    rules = WitRules(30, 86400, frozenset({"EdDSA", "Ed25519", "ES256"}))
    token = mint_wit(ISSUER, f"spiffe://example.org/{sub}", workload, now=NOW)
    return token, WitVerifier(store, rules, MutableClock(NOW), 10).verify(token)


class Scenario:
    def __init__(self, bindable: frozenset[str] = frozenset(), capacity: int = 100) -> None:
        self.clock = MutableClock(NOW)
        self.cache = InMemoryReplayCache(capacity, self.clock)
        self.verifier = WptVerifier(WptRules(30, 300, bindable), self.clock, self.cache)
        self.wit_token, self.wit = verified_wit()

    def wpt(self, **claims: Any) -> str:
        header = claims.pop("header", {})
        base: dict[str, Any] = {
            "aud": TARGET,
            "exp": NOW + 60,
            "jti": "jti-1",
            "wth": token_hash(self.wit_token),
        }
        base.update(claims)
        return sign_jws(
            {k: v for k, v in base.items() if v is not None},
            WORKLOAD,
            {"typ": "wpt+jwt", **header},
        )

    def verify(
        self,
        token: str,
        headers: dict[str, str] | None = None,
        audiences: tuple[str, ...] = (TARGET,),
    ) -> VerifiedWpt:
        context = ProofContext(audiences=audiences, headers=headers or {})
        return asyncio.run(self.verifier.verify(token, self.wit, context))

    def reason(self, token: str, headers: dict[str, str] | None = None) -> Reason:
        with pytest.raises(CredentialError) as caught:
            self.verify(token, headers)
        return caught.value.reason


def test_valid_wpt_verifies_and_reports_its_binding() -> None:
    scenario = Scenario()
    proof = scenario.verify(scenario.wpt())
    assert (proof.jti, proof.audience, proof.expires_at) == ("jti-1", TARGET, NOW + 60)
    assert proof.bound_headers == frozenset()


def test_wpt_from_the_dev_issuer_verifies() -> None:
    scenario = Scenario()
    assert (
        scenario.verify(mint_wpt(WORKLOAD, scenario.wit_token, TARGET, now=NOW)).audience == TARGET
    )


def test_alg_must_equal_cnf_alg_exactly() -> None:
    scenario = Scenario()
    # Same Ed25519 key, but RFC 9864's name instead of the WIT's "EdDSA": not string-equal.
    assert scenario.reason(scenario.wpt(header={"alg": "Ed25519"})) is Reason.WPT_ALG_MISMATCH


def test_signature_by_any_key_other_than_cnf_jwk_is_refused() -> None:
    scenario = Scenario()
    base = {"aud": TARGET, "exp": NOW + 60, "jti": "x", "wth": token_hash(scenario.wit_token)}
    forged = sign_jws(base, ATTACKER, {"typ": "wpt+jwt"})
    assert scenario.reason(forged) is Reason.WPT_SIGNATURE_INVALID


def test_signature_is_checked_before_typ() -> None:
    scenario = Scenario()
    base = {"aud": TARGET, "exp": NOW + 60, "jti": "x", "wth": token_hash(scenario.wit_token)}
    forged = sign_jws(base, ATTACKER, {"typ": "JWT"})
    assert scenario.reason(forged) is Reason.WPT_SIGNATURE_INVALID
    assert scenario.reason(scenario.wpt(header={"typ": "JWT"})) is Reason.WPT_TYP_INVALID


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"aud": None}, Reason.WPT_AUD_INVALID),
        ({"aud": [TARGET]}, Reason.WPT_AUD_INVALID),
        ({"aud": TARGET + "?x=1"}, Reason.WPT_AUD_MISMATCH),
        ({"aud": TARGET + "/"}, Reason.WPT_AUD_MISMATCH),
        ({"aud": TARGET.upper()}, Reason.WPT_AUD_MISMATCH),
        ({"aud": "https://payments.example.org/api/orders"}, Reason.WPT_AUD_MISMATCH),
        ({"exp": None}, Reason.WPT_EXP_MISSING),
        ({"exp": "soon"}, Reason.WPT_CLAIM_INVALID),
        ({"exp": NOW - 31}, Reason.WPT_EXPIRED),
        ({"exp": NOW + 331}, Reason.WPT_EXP_TOO_FAR),
        ({"iat": NOW + 31}, Reason.WPT_IAT_IN_FUTURE),
        ({"iat": NOW - 400}, Reason.WPT_LIFETIME_EXCEEDED),
        ({"wth": None}, Reason.WPT_WTH_MISSING),
        ({"wth": token_hash("another WIT")}, Reason.WPT_WTH_MISMATCH),
        ({"jti": None}, Reason.WPT_JTI_MISSING),
        ({"jti": ""}, Reason.WPT_JTI_MISSING),
        ({"jti": 5}, Reason.WPT_JTI_MISSING),
        ({"jti": "j" * 257}, Reason.WPT_CLAIM_INVALID),
    ],
)
def test_claim_checks(claims: dict[str, Any], expected: Reason) -> None:
    scenario = Scenario()
    assert scenario.reason(scenario.wpt(**claims)) is expected


def test_any_configured_audience_alias_is_accepted() -> None:
    scenario = Scenario()
    alias = "https://orders.internal/api/orders"
    token = scenario.wpt(aud=alias)
    assert scenario.verify(token, audiences=(TARGET, alias)).audience == alias


def test_a_wpt_is_accepted_once_per_sender() -> None:
    scenario = Scenario()
    token = scenario.wpt()
    scenario.verify(token)
    assert scenario.reason(token) is Reason.WPT_REPLAYED


def test_the_same_jti_from_another_workload_is_not_a_replay() -> None:
    scenario = Scenario()
    scenario.verify(scenario.wpt(jti="shared"))
    other_key = generate_private_jwk("EdDSA")
    other_token, other_wit = verified_wit(other_key, sub="payments")
    proof = sign_jws(
        {"aud": TARGET, "exp": NOW + 60, "jti": "shared", "wth": token_hash(other_token)},
        other_key,
        {"typ": "wpt+jwt"},
    )
    context = ProofContext(audiences=(TARGET,), headers={})
    assert asyncio.run(scenario.verifier.verify(proof, other_wit, context)).jti == "shared"


def test_replay_check_runs_before_txn_binding_checks() -> None:
    scenario = Scenario()
    token = scenario.wpt(tth=token_hash("txn"))
    assert scenario.reason(token, {"txn-token": "other"}) is Reason.WPT_TTH_MISMATCH
    # The jti was recorded before tth failed, so the same token is now a replay.
    assert scenario.reason(token, {"txn-token": "txn"}) is Reason.WPT_REPLAYED


@pytest.mark.parametrize(
    ("claims", "headers", "expected"),
    [
        ({}, {"txn-token": "t"}, Reason.WPT_TTH_MISSING),
        ({"tth": token_hash("t")}, {"txn-token": "u"}, Reason.WPT_TTH_MISMATCH),
        ({"tth": token_hash("t")}, {}, Reason.WPT_TTH_UNBOUND),
    ],
)
def test_txn_token_binding(
    claims: dict[str, Any], headers: dict[str, str], expected: Reason
) -> None:
    scenario = Scenario()
    assert scenario.reason(scenario.wpt(**claims), headers) is expected


def test_bound_txn_token_is_reported() -> None:
    scenario = Scenario()
    proof = scenario.verify(scenario.wpt(tth=token_hash("t")), {"txn-token": "t"})
    assert proof.bound_headers == {"txn-token"}


@pytest.mark.parametrize(
    ("oth", "headers", "expected"),
    [
        ("x", {}, Reason.WPT_OTH_INVALID),
        ({"x-user": 5}, {}, Reason.WPT_OTH_INVALID),
        ({"x-other": token_hash("u")}, {"x-other": "u"}, Reason.WPT_OTH_UNKNOWN_HEADER),
        ({"X-User": token_hash("u")}, {"x-user": "u"}, Reason.WPT_OTH_UNKNOWN_HEADER),
        ({"authorization": token_hash("u")}, {"authorization": "u"}, Reason.WPT_OTH_UNKNOWN_HEADER),
        ({"x-user": token_hash("u")}, {}, Reason.WPT_OTH_HEADER_MISSING),
        ({"x-user": token_hash("u")}, {"x-user": "v"}, Reason.WPT_OTH_MISMATCH),
    ],
)
def test_other_token_bindings(oth: object, headers: dict[str, str], expected: Reason) -> None:
    scenario = Scenario(bindable=frozenset({"x-user"}))
    assert scenario.reason(scenario.wpt(oth=oth), headers) is expected


def test_matching_other_token_binding_is_reported() -> None:
    scenario = Scenario(bindable=frozenset({"x-user"}))
    proof = scenario.verify(scenario.wpt(oth={"x-user": token_hash("u")}), {"x-user": "u"})
    assert proof.bound_headers == {"x-user"}


def test_legacy_access_token_binding() -> None:
    scenario = Scenario()
    context = ProofContext(audiences=(TARGET,), headers={}, legacy_bearer="access")
    good = scenario.wpt(jti="a", ath=token_hash("access"))
    assert (
        asyncio.run(scenario.verifier.verify(good, scenario.wit, context, legacy=True)).jti == "a"
    )
    for jti, ath, expected in (
        ("b", None, Reason.WPT_ATH_MISSING),
        ("c", token_hash("other"), Reason.WPT_ATH_MISMATCH),
    ):
        with pytest.raises(CredentialError) as caught:
            asyncio.run(
                scenario.verifier.verify(
                    scenario.wpt(jti=jti, ath=ath), scenario.wit, context, legacy=True
                )
            )
        assert caught.value.reason is expected
