"""Txn-Token verification (draft-ietf-oauth-transaction-tokens-11, wire format of -10), step
by step.

Every reason code the verifier can give has a case in `REFUSALS`; `txn.missing` and
`txn.too_large` come from the pipeline and are pinned in `test_context.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from jwt.algorithms import ECAlgorithm

from authz.credentials.algorithms import public_key_from_jwk
from authz.credentials.claims import token_hash
from authz.credentials.txn_token import (
    MAX_CLAIM_STRING,
    TxnRules,
    TxnTokenVerifier,
    VerifiedTxnToken,
)
from authz.devtools.keys import generate_private_jwk, private_key_from_jwk, public_jwk
from authz.devtools.mint import encode_jws, mint_txn_token, sign_jws
from authz.errors import CredentialError
from authz.reasons import Reason
from authz.trust.key_sets import KeySet, build_key_set
from tests.support import MutableClock

NOW = 1_800_000_000
TRUST_DOMAIN = "demo.example"
FRONTEND = "spiffe://demo.example/frontend"
TTS = generate_private_jwk("ES256", kid="tts-1")
# The trust domain's WIT issuer: a configured anchor, but never one for Txn-Tokens.
WIT_ISSUER = generate_private_jwk("ES256", kid="issuer-1")
FORGER = generate_private_jwk("ES256", kid="tts-1")
ES384_KEY = generate_private_jwk("ES384", kid="tts-1")


def key_set(name: str, private: dict[str, Any], algorithms: frozenset[str]) -> KeySet:
    return build_key_set(name, algorithms, [public_key_from_jwk(public_jwk(private), algorithms)])


def verifier(
    *,
    legacy_names: bool = False,
    max_chain_hops: int = 8,
    services: dict[str, KeySet] | None = None,
    clock: MutableClock | None = None,
) -> TxnTokenVerifier:
    if services is None:
        services = {TRUST_DOMAIN: key_set(TRUST_DOMAIN, TTS, frozenset({"ES256"}))}
    rules = TxnRules(
        clock_skew=30, max_lifetime=600, legacy_names=legacy_names, max_chain_hops=max_chain_hops
    )
    return TxnTokenVerifier(services, rules, clock or MutableClock(NOW), 16)


def claims(**overrides: Any) -> dict[str, Any]:
    """A draft -10 claim set; an override of None removes the claim."""
    base: dict[str, Any] = {
        "iat": NOW - 60,
        "aud": TRUST_DOMAIN,
        "exp": NOW + 240,
        "txn": "97053963-771d-49cc-a4e3-20aad399c312",
        "sub": "user-4711",
        "scope": "checkout",
        "req_wl": FRONTEND,
        "tctx": {"amount": 250},
        "rctx": {"req_ip": "192.0.2.1"},
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def token(
    claim_overrides: dict[str, Any] | None = None, *, key: dict[str, Any] = TTS, **header: Any
) -> str:
    """A Txn-Token signed by `key`; header members set to None are left out."""
    header = {"typ": "txntoken+jwt", "kid": "tts-1", **header}
    return sign_jws(claims(**(claim_overrides or {})), key, header)


def token_with_raw_header(header: dict[str, Any]) -> str:
    """Signed by the TTS with exactly `header` (so a member may be JSON null)."""
    private = private_key_from_jwk(TTS)
    algorithm = ECAlgorithm(ECAlgorithm.SHA256)
    return encode_jws(header, claims(), lambda data: algorithm.sign(data, private))  # type: ignore[arg-type]


def nested_act(depth: int) -> dict[str, Any] | None:
    """`depth` nested `act` levels; the outermost (current actor) is a1."""
    act: dict[str, Any] | None = None
    for level in range(depth, 0, -1):
        act = {"sub": f"spiffe://demo.example/a{level}", **({"act": act} if act else {})}
    return act


def verify(txn_token: str, trust_domain: str = TRUST_DOMAIN, **options: Any) -> VerifiedTxnToken:
    return verifier(**options).verify(txn_token, trust_domain)


def reason(txn_token: str, trust_domain: str = TRUST_DOMAIN, **options: Any) -> Reason:
    with pytest.raises(CredentialError) as caught:
        verify(txn_token, trust_domain, **options)
    return caught.value.reason


@dataclass(frozen=True)
class Refusal:
    token: str
    expected: Reason
    trust_domain: str = TRUST_DOMAIN
    """The trust domain of the service being called."""
    options: dict[str, Any] = field(default_factory=dict)
    """Verifier settings (see `verifier`)."""


VALID = token()
HEAD, BODY, SIGNATURE = VALID.split(".")
REFUSALS: dict[str, Refusal] = {
    "two headers joined": Refusal(f"{VALID},{VALID}", Reason.TXN_MULTIPLE),
    "two segments": Refusal(f"{HEAD}.{BODY}", Reason.TXN_MALFORMED),
    "payload not json": Refusal(f"{HEAD}.bm90IGpzb24.{SIGNATURE}", Reason.TXN_MALFORMED),
    "kid null": Refusal(
        token_with_raw_header({"alg": "ES256", "typ": "txntoken+jwt", "kid": None}),
        Reason.TXN_MALFORMED,
    ),
    "kid a number": Refusal(token(kid=7), Reason.TXN_MALFORMED),
    "header jwk": Refusal(token(jwk=public_jwk(TTS)), Reason.TXN_HEADER_KEY_FORBIDDEN),
    "header jku": Refusal(token(jku="https://evil.example/jwks"), Reason.TXN_HEADER_KEY_FORBIDDEN),
    "crit": Refusal(token(crit=["exp"]), Reason.TXN_CRIT_UNSUPPORTED),
    "b64": Refusal(token(b64=False), Reason.TXN_B64_UNSUPPORTED),
    "typ absent": Refusal(token(typ=None), Reason.TXN_TYP_INVALID),
    "typ JWT": Refusal(token(typ="JWT"), Reason.TXN_TYP_INVALID),
    "typ at+jwt": Refusal(token(typ="at+jwt"), Reason.TXN_TYP_INVALID),
    "typ wit+jwt": Refusal(token(typ="wit+jwt"), Reason.TXN_TYP_INVALID),
    "legacy typ, switch off": Refusal(token(typ="txn_token"), Reason.TXN_LEGACY_FORM_DISABLED),
    "no TTS for the trust domain": Refusal(
        token({"aud": "other.example"}), Reason.TXN_TRUST_DOMAIN_UNKNOWN, "other.example"
    ),
    "no TTS configured at all": Refusal(
        VALID, Reason.TXN_TRUST_DOMAIN_UNKNOWN, options={"services": {}}
    ),
    "alg not on the TTS list": Refusal(token(key=ES384_KEY), Reason.TXN_ALG_NOT_ALLOWED),
    "kid unknown": Refusal(token(kid="tts-2"), Reason.TXN_KID_UNKNOWN),
    "another key with the TTS kid": Refusal(token(key=FORGER), Reason.TXN_SIGNATURE_INVALID),
    "aud another trust domain": Refusal(token({"aud": "other.example"}), Reason.TXN_AUD_MISMATCH),
    "aud list without ours": Refusal(
        token({"aud": ["other.example", "third.example"]}), Reason.TXN_AUD_MISMATCH
    ),
    "exp absent": Refusal(token({"exp": None}), Reason.TXN_EXP_MISSING),
    "expired": Refusal(token({"exp": NOW - 31}), Reason.TXN_EXPIRED),
    "exp too far": Refusal(token({"iat": NOW, "exp": NOW + 631}), Reason.TXN_EXP_TOO_FAR),
    "iat in future": Refusal(token({"iat": NOW + 31}), Reason.TXN_IAT_IN_FUTURE),
    "nbf in future": Refusal(token({"nbf": NOW + 31}), Reason.TXN_NOT_YET_VALID),
    "lifetime exceeded": Refusal(
        token({"iat": NOW - 400, "exp": NOW + 201}), Reason.TXN_LIFETIME_EXCEEDED
    ),
    **{
        f"{name} absent": Refusal(token({name: None}), Reason.TXN_CLAIM_MISSING)
        for name in ("aud", "iat", "txn", "sub", "scope", "req_wl")
    },
    **{
        f"{name}={value!r:.40}": Refusal(token({name: value}), Reason.TXN_CLAIM_INVALID)
        for name, value in (
            ("aud", 5),
            ("aud", []),
            ("aud", [TRUST_DOMAIN, 5]),
            ("iat", "now"),
            ("exp", "soon"),
            ("nbf", True),
            ("txn", 5),
            ("txn", ""),
            ("sub", ""),
            ("sub", {"format": "opaque", "id": "u"}),
            ("scope", 5),
            ("scope", ["checkout"]),
            ("tctx", "amount=250"),
            ("rctx", [1]),
            ("iss", 5),
            ("req_wl", ""),
            ("req_wl", 5),
            ("req_wl", ["a", "b"]),
            ("req_wl", "spiffe://demo.example/a\nb"),
            ("req_wl", "x" * (MAX_CLAIM_STRING + 1)),
            ("act", "spiffe://demo.example/orders"),
            ("act", {}),
            ("act", {"sub": 5}),
            ("act", {"sub": "spiffe://demo.example/orders", "act": {"iss": "x"}}),
        )
    },
    "act nested too deep": Refusal(
        token({"act": nested_act(4)}), Reason.TXN_ACT_TOO_DEEP, options={"max_chain_hops": 3}
    ),
    "legacy req_wl list too long": Refusal(
        token({"req_wl": ",".join(f"spiffe://demo.example/h{i}" for i in range(4))}),
        Reason.TXN_CHAIN_TOO_LONG,
        options={"max_chain_hops": 3, "legacy_names": True},
    ),
}
# Reported by the pipeline, not this verifier: pinned in test_context.py.
PIPELINE_CODES = {Reason.TXN_MISSING, Reason.TXN_TOO_LARGE}


@pytest.mark.parametrize("refusal", REFUSALS.values(), ids=REFUSALS.keys())
def test_refused_token_names_the_failed_check(refusal: Refusal) -> None:
    assert reason(refusal.token, refusal.trust_domain, **refusal.options) is refusal.expected


def test_every_txn_reason_code_of_the_verifier_has_a_refusal_case() -> None:
    verifier_codes = {code for code in Reason if code.startswith("txn.")} - PIPELINE_CODES
    assert {refusal.expected for refusal in REFUSALS.values()} == verifier_codes


# --- allowed tokens ----------------------------------------------------------------------


def test_valid_token_yields_its_context() -> None:
    verified = verify(VALID)
    assert verified.txn_id == "97053963-771d-49cc-a4e3-20aad399c312"
    assert verified.subject == "user-4711"
    assert verified.scopes == ("checkout",)
    assert verified.tctx == {"amount": 250}
    assert verified.rctx == {"req_ip": "192.0.2.1"}
    assert verified.requesting_workloads == (FRONTEND,)
    assert verified.audiences == (TRUST_DOMAIN,)
    assert verified.trust_domain == TRUST_DOMAIN
    assert verified.issuer is None
    assert (verified.issued_at, verified.expires_at) == (NOW - 60, NOW + 240)
    assert verified.actors == ()
    assert (verified.signing_key.kid, verified.alg) == ("tts-1", "ES256")
    assert verified.legacy is False
    assert verified.token_hash == token_hash(VALID)


def test_token_minted_by_the_dev_tts_verifies() -> None:
    minted = mint_txn_token(
        TTS,
        audience=TRUST_DOMAIN,
        requesting_workload=FRONTEND,
        subject="alice",
        scope="checkout",
        now=NOW,
    )
    assert verify(minted).subject == "alice"


@pytest.mark.parametrize("typ", ["application/txntoken+jwt", "TxnToken+JWT"])
def test_typ_is_compared_case_insensitively_with_optional_application_prefix(typ: str) -> None:
    assert verify(token(typ=typ)).legacy is False


def test_tctx_rctx_and_iss_are_optional() -> None:
    verified = verify(token({"tctx": None, "rctx": None, "iss": "https://tts.demo.example"}))
    assert (verified.tctx, verified.rctx) == (None, None)
    assert verified.issuer == "https://tts.demo.example"


def test_aud_may_be_a_list_naming_our_trust_domain_among_others() -> None:
    verified = verify(token({"aud": ["other.example", TRUST_DOMAIN]}))
    assert verified.audiences == ("other.example", TRUST_DOMAIN)
    assert verified.trust_domain == TRUST_DOMAIN


def test_token_for_another_trust_domain_verifies_with_that_domains_tts() -> None:
    partner_tts = generate_private_jwk("ES256", kid="partner-tts")
    services = {
        TRUST_DOMAIN: key_set(TRUST_DOMAIN, TTS, frozenset({"ES256"})),
        "partner.example": key_set("partner.example", partner_tts, frozenset({"ES256"})),
    }
    partner = token({"aud": "partner.example"}, key=partner_tts, kid="partner-tts")
    assert verify(partner, "partner.example", services=services).trust_domain == "partner.example"
    # ... but not where our own trust domain is called: the partner's key is unknown there.
    assert reason(partner, TRUST_DOMAIN, services=services) is Reason.TXN_KID_UNKNOWN


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("checkout", ("checkout",)),
        ("trade.stocks  read write", ("trade.stocks", "read", "write")),
        ("", ()),
    ],
)
def test_scope_is_split_on_spaces_into_a_tuple(scope: str, expected: tuple[str, ...]) -> None:
    assert verify(token({"scope": scope})).scopes == expected


def test_without_kid_every_tts_key_for_the_alg_is_tried_and_the_verifying_key_is_named() -> None:
    assert verify(token(kid=None)).signing_key.kid == "tts-1"
    assert reason(token(key=FORGER, kid=None)) is Reason.TXN_SIGNATURE_INVALID


def test_unknown_claims_are_ignored() -> None:
    assert verify(token({"x-custom": {"anything": [1, 2]}})).claims["x-custom"] == {
        "anything": [1, 2]
    }


def test_the_same_token_verifies_again_on_every_hop() -> None:
    checker = verifier()
    assert checker.verify(VALID, TRUST_DOMAIN).txn_id == checker.verify(VALID, TRUST_DOMAIN).txn_id


def test_clock_skew_tolerates_small_differences() -> None:
    assert verify(token({"exp": NOW - 29})).expires_at == NOW - 29
    assert verify(token({"iat": NOW + 29})).issued_at == NOW + 29
    assert verify(token({"nbf": NOW + 29})).subject == "user-4711"


# --- verification order -----------------------------------------------------------------


def test_typ_is_checked_before_the_trust_domain_and_signature() -> None:
    head, body, _ = token(typ="JWT").split(".")
    assert reason(f"{head}.{body}.AAAA", "unknown.example") is Reason.TXN_TYP_INVALID


def test_trust_domain_is_checked_before_the_signature() -> None:
    assert reason(token(key=FORGER), "unknown.example") is Reason.TXN_TRUST_DOMAIN_UNKNOWN


def test_signature_is_checked_before_any_claim() -> None:
    forged = token({"aud": 5, "exp": None, "txn": None}, key=FORGER)
    assert reason(forged) is Reason.TXN_SIGNATURE_INVALID


def test_tampered_claims_break_the_signature() -> None:
    head, _, signature = VALID.split(".")
    _, body, _ = token({"sub": "admin"}).split(".")
    assert reason(f"{head}.{body}.{signature}") is Reason.TXN_SIGNATURE_INVALID


# --- a token signed by the trust domain's WIT issuer, not its TTS -------------------------


def test_wit_issuer_key_under_its_own_kid_is_an_unknown_tts_kid() -> None:
    # The TTS anchors are the only keys consulted for a Txn-Token: the WIT issuer's `kid`
    # names no key there, so the token fails at the kid lookup, before any signature check.
    assert reason(token(key=WIT_ISSUER, kid="issuer-1")) is Reason.TXN_KID_UNKNOWN


def test_wit_issuer_key_under_the_tts_kid_or_no_kid_fails_the_signature() -> None:
    # Naming the TTS's kid (or none) selects the TTS key, which the WIT issuer's
    # signature does not verify against.
    assert reason(token(key=WIT_ISSUER, kid="tts-1")) is Reason.TXN_SIGNATURE_INVALID
    assert reason(token(key=WIT_ISSUER, kid=None)) is Reason.TXN_SIGNATURE_INVALID


# --- earlier drafts' names ----------------------------------------------------------------

LEGACY_RCTX_LIST = ["spiffe://demo.example/gateway", FRONTEND]
# name → (token using only that earlier form, what it reads as, the expected value)
LEGACY_FORMS: dict[str, tuple[str, Callable[[VerifiedTxnToken], object], object]] = {
    "typ txn_token": (token(typ="txn_token"), lambda v: v.subject, "user-4711"),
    "typ application/txn_token": (
        token(typ="application/txn_token"),
        lambda v: v.subject,
        "user-4711",
    ),
    "purp": (
        token({"scope": None, "purp": "trade.stocks"}),
        lambda v: v.scopes,
        ("trade.stocks",),
    ),
    "azd": (token({"tctx": None, "azd": {"action": "BUY"}}), lambda v: v.tctx, {"action": "BUY"}),
    "req_ctx": (
        token({"rctx": None, "req_ctx": {"req_ip": "192.0.2.9"}}),
        lambda v: v.rctx,
        {"req_ip": "192.0.2.9"},
    ),
    "sub_id": (token({"sub": None, "sub_id": "user-0815"}), lambda v: v.subject, "user-0815"),
    "comma-joined req_wl": (
        token({"req_wl": "spiffe://demo.example/gateway, " + FRONTEND}),
        lambda v: v.requesting_workloads,
        tuple(LEGACY_RCTX_LIST),
    ),
    "rctx.req_wl array": (
        token({"req_wl": None, "rctx": {"req_wl": LEGACY_RCTX_LIST}}),
        lambda v: v.requesting_workloads,
        tuple(LEGACY_RCTX_LIST),
    ),
    "req_ctx.req_wl array": (
        token({"req_wl": None, "rctx": None, "req_ctx": {"req_wl": LEGACY_RCTX_LIST}}),
        lambda v: v.requesting_workloads,
        tuple(LEGACY_RCTX_LIST),
    ),
}


@pytest.mark.parametrize(
    "legacy_token", [form[0] for form in LEGACY_FORMS.values()], ids=LEGACY_FORMS.keys()
)
def test_each_legacy_form_is_refused_while_the_switch_is_off(legacy_token: str) -> None:
    assert reason(legacy_token) is Reason.TXN_LEGACY_FORM_DISABLED


@pytest.mark.parametrize(
    ("legacy_token", "read", "expected"), LEGACY_FORMS.values(), ids=LEGACY_FORMS.keys()
)
def test_each_legacy_form_is_read_and_flagged_with_the_switch_on(
    legacy_token: str, read: Callable[[VerifiedTxnToken], object], expected: object
) -> None:
    verified = verify(legacy_token, legacy_names=True)
    assert read(verified) == expected
    assert verified.legacy is True


def test_a_current_form_token_is_not_flagged_legacy_with_the_switch_on() -> None:
    assert verify(VALID, legacy_names=True).legacy is False


def test_a_current_name_wins_over_its_legacy_name_and_the_legacy_one_is_ignored() -> None:
    verified = verify(token({"scope": "checkout", "purp": "trade.stocks"}))
    assert verified.scopes == ("checkout",)
    assert verified.legacy is False


def test_a_top_level_req_wl_wins_over_an_rctx_list() -> None:
    verified = verify(token({"rctx": {"req_wl": LEGACY_RCTX_LIST}}))
    assert verified.requesting_workloads == (FRONTEND,)
    assert verified.legacy is False


@pytest.mark.parametrize("value", ["spiffe://demo.example/gateway", [], [5]])
def test_rctx_req_wl_must_be_a_non_empty_list_of_identifiers(value: object) -> None:
    bad = token({"req_wl": None, "rctx": {"req_wl": value}})
    assert reason(bad, legacy_names=True) is Reason.TXN_CLAIM_INVALID


def test_an_empty_hop_in_a_comma_joined_req_wl_is_invalid() -> None:
    bad = token({"req_wl": FRONTEND + ",,spiffe://demo.example/b"})
    assert reason(bad, legacy_names=True) is Reason.TXN_CLAIM_INVALID


def test_a_wimse_req_wl_containing_a_comma_is_one_hop_with_legacy_names_off() -> None:
    requester = "wimse://demo.example/svc,v2"
    assert verify(token({"req_wl": requester})).requesting_workloads == (requester,)


# --- bounds: `act` nesting and legacy `req_wl` lists ------------------------------------


def test_act_nested_exactly_max_chain_hops_deep_passes_outermost_first() -> None:
    verified = verify(token({"act": nested_act(3)}), max_chain_hops=3)
    assert [actor.sub for actor in verified.actors] == [
        "spiffe://demo.example/a1",
        "spiffe://demo.example/a2",
        "spiffe://demo.example/a3",
    ]


def test_act_one_level_deeper_than_max_chain_hops_is_too_deep() -> None:
    assert reason(token({"act": nested_act(4)}), max_chain_hops=3) is Reason.TXN_ACT_TOO_DEEP


def test_an_actor_keeps_its_other_members_but_not_the_nested_act() -> None:
    act = {"sub": "https://service16.example.com", "iss": "https://issuer.example.com"}
    verified = verify(token({"act": {**act, "act": {"sub": "https://service77.example.com"}}}))
    assert dict(verified.actors[0].claims) == act
    assert dict(verified.actors[1].claims) == {"sub": "https://service77.example.com"}


@pytest.mark.parametrize(
    "make",
    [
        lambda hops: {"req_wl": ",".join(hops)},
        lambda hops: {"req_wl": None, "rctx": {"req_wl": hops}},
    ],
    ids=["comma-joined", "rctx array"],
)
def test_legacy_req_wl_list_is_bounded_by_max_chain_hops(
    make: Callable[[list[str]], dict[str, Any]],
) -> None:
    hops = [f"spiffe://demo.example/h{i}" for i in range(4)]
    at_limit = verify(token(make(hops[:3])), legacy_names=True, max_chain_hops=3)
    assert at_limit.requesting_workloads == tuple(hops[:3])
    too_long = token(make(hops))
    assert reason(too_long, legacy_names=True, max_chain_hops=3) is Reason.TXN_CHAIN_TOO_LONG


# --- the verified-token cache -------------------------------------------------------------


def test_a_repeated_txn_token_is_verified_once_until_it_expires() -> None:
    clock = MutableClock(NOW)
    checker = verifier(clock=clock)
    presented = token()
    first = checker.verify(presented, TRUST_DOMAIN)
    assert checker.verify(presented, TRUST_DOMAIN) is first, "served from the cache"
    clock.now = NOW + 240 + 31  # past exp and the 30 s skew
    with pytest.raises(CredentialError) as caught:
        checker.verify(presented, TRUST_DOMAIN)
    assert caught.value.reason is Reason.TXN_EXPIRED


def test_a_cached_txn_token_is_not_accepted_for_another_trust_domain() -> None:
    services = {
        name: key_set(name, TTS, frozenset({"ES256"})) for name in (TRUST_DOMAIN, "other.example")
    }
    checker = verifier(services=services)
    presented = token()
    checker.verify(presented, TRUST_DOMAIN)
    with pytest.raises(CredentialError) as caught:
        checker.verify(presented, "other.example")
    assert caught.value.reason is Reason.TXN_AUD_MISMATCH


@pytest.mark.parametrize("separator", ["\t", "\n", "\u00a0", "\u2003", "\x1f"])
def test_a_scope_split_by_other_whitespace_is_invalid_not_two_scopes(separator: str) -> None:
    assert reason(token({"scope": f"read{separator}checkout"})) is Reason.TXN_CLAIM_INVALID
