"""End-user token verification: RFC 9068 access tokens, OIDC ID tokens only when enabled.

Every reason code of the verifier has a case in `REFUSALS`; `user.unbound` is the context
stage's (pinned in `test_context.py`).
"""

from __future__ import annotations

from typing import Any

import pytest

from authz.credentials.algorithms import public_key_from_jwk
from authz.credentials.user_token import (
    UserIssuer,
    UserTokenRules,
    UserTokenType,
    UserTokenVerifier,
    VerifiedUserToken,
)
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import mint_user_token, sign_jws
from authz.errors import CredentialError
from authz.reasons import Reason
from authz.trust.key_sets import build_key_set
from tests.support import MutableClock

NOW = 1_800_000_000
ISSUER = "https://idp.example"
OTHER_ISSUER = "https://login.partner.example"
AUDIENCE = "https://api.example"
IDP = generate_private_jwk("ES256", kid="idp-1")
PARTNER_IDP = generate_private_jwk("ES256", kid="partner-1")
FORGER = generate_private_jwk("ES256", kid="idp-1")
ES384_KEY = generate_private_jwk("ES384", kid="idp-1")


def issuer(private: dict[str, Any], *audiences: str) -> UserIssuer:
    algorithms = frozenset({"ES256"})
    keys = [public_key_from_jwk(public_jwk(private), algorithms)]
    return UserIssuer(build_key_set(private["kid"], algorithms, keys), frozenset(audiences))


def verifier(*, id_tokens: bool = False) -> UserTokenVerifier:
    issuers = {
        ISSUER: issuer(IDP, AUDIENCE, "https://api2.example"),
        OTHER_ISSUER: issuer(PARTNER_IDP, "partner-client"),
    }
    rules = UserTokenRules(clock_skew=30, max_lifetime=3600, id_tokens=id_tokens)
    return UserTokenVerifier(issuers, rules, MutableClock(NOW))


def claims(**overrides: Any) -> dict[str, Any]:
    """RFC 9068 access token claims; an override of None removes the claim."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": AUDIENCE,
        "client_id": "web-app",
        "iat": NOW - 60,
        "exp": NOW + 600,
        "jti": "at-1",
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def token(
    claim_overrides: dict[str, Any] | None = None, *, key: dict[str, Any] = IDP, **header: Any
) -> str:
    header = {"typ": "at+jwt", "kid": "idp-1", **header}
    return sign_jws(claims(**(claim_overrides or {})), key, header)


def id_token(typ: str | None = "JWT", **overrides: Any) -> str:
    """An OIDC ID token: no `client_id` or `jti`, typed JWT or untyped."""
    return token({"client_id": None, "jti": None, "nonce": "n-1", **overrides}, typ=typ)


def verify(user_token: str, *, id_tokens: bool = False) -> VerifiedUserToken:
    return verifier(id_tokens=id_tokens).verify(user_token)


def reason(user_token: str, *, id_tokens: bool = False) -> Reason:
    with pytest.raises(CredentialError) as caught:
        verify(user_token, id_tokens=id_tokens)
    return caught.value.reason


VALID = token()
REFUSALS: dict[str, tuple[str, Reason]] = {
    "two headers joined": (f"{VALID},{VALID}", Reason.USER_MULTIPLE),
    "not a JWS": ("not-a-token", Reason.USER_MALFORMED),
    "kid a number": (token(kid=1), Reason.USER_MALFORMED),
    "header jwk": (token(jwk=public_jwk(IDP)), Reason.USER_HEADER_KEY_FORBIDDEN),
    "header x5u": (token(x5u="https://evil.example/cert"), Reason.USER_HEADER_KEY_FORBIDDEN),
    "crit": (token(crit=["exp"]), Reason.USER_CRIT_UNSUPPORTED),
    "b64": (token(b64=False), Reason.USER_B64_UNSUPPORTED),
    "typ JWT, ID tokens off": (token(typ="JWT"), Reason.USER_TYP_INVALID),
    "typ absent, ID tokens off": (token(typ=None), Reason.USER_TYP_INVALID),
    "typ txntoken+jwt": (token(typ="txntoken+jwt"), Reason.USER_TYP_INVALID),
    "iss not configured": (token({"iss": "https://evil.example"}), Reason.USER_ISSUER_UNKNOWN),
    "iss absent": (token({"iss": None}), Reason.USER_ISSUER_UNKNOWN),
    "iss not a string": (token({"iss": [ISSUER]}), Reason.USER_ISSUER_UNKNOWN),
    "alg not allowed": (token(key=ES384_KEY), Reason.USER_ALG_NOT_ALLOWED),
    "kid unknown": (token(kid="idp-2"), Reason.USER_KID_UNKNOWN),
    "another issuer's key and kid": (
        token(key=PARTNER_IDP, kid="partner-1"),
        Reason.USER_KID_UNKNOWN,
    ),
    "another key with the issuer's kid": (token(key=FORGER), Reason.USER_SIGNATURE_INVALID),
    "aud another service": (token({"aud": "https://other.example"}), Reason.USER_AUD_MISMATCH),
    "aud another issuer's audience": (token({"aud": "partner-client"}), Reason.USER_AUD_MISMATCH),
    "aud empty list": (token({"aud": []}), Reason.USER_AUD_MISMATCH),
    "exp absent": (token({"exp": None}), Reason.USER_EXP_MISSING),
    "expired": (token({"exp": NOW - 31}), Reason.USER_EXPIRED),
    "exp too far": (token({"iat": NOW, "exp": NOW + 3631}), Reason.USER_EXP_TOO_FAR),
    "iat in future": (token({"iat": NOW + 31}), Reason.USER_IAT_IN_FUTURE),
    "nbf in future": (token({"nbf": NOW + 31}), Reason.USER_NOT_YET_VALID),
    "lifetime exceeded": (
        token({"iat": NOW - 3000, "exp": NOW + 601}),
        Reason.USER_LIFETIME_EXCEEDED,
    ),
    **{
        f"{name} absent": (token({name: None}), Reason.USER_CLAIM_MISSING)
        for name in ("aud", "sub", "client_id", "iat", "jti")
    },
    **{
        f"{name}={value!r}": (token({name: value}), Reason.USER_CLAIM_INVALID)
        for name, value in (
            ("aud", 5),
            ("aud", [AUDIENCE, 5]),
            ("exp", "soon"),
            ("iat", "now"),
            ("sub", 5),
            ("sub", ""),
            ("client_id", ["web-app"]),
            ("jti", 1),
            ("scope", ["read"]),
            ("scope", 5),
            ("roles", "admin"),
            ("roles", ["admin", 1]),
            ("groups", {"admins": True}),
            ("entitlements", "pay"),
        )
    },
}


@pytest.mark.parametrize(("user_token", "expected"), REFUSALS.values(), ids=REFUSALS.keys())
def test_refused_token_names_the_failed_check(user_token: str, expected: Reason) -> None:
    assert reason(user_token) is expected


def test_every_user_reason_code_of_the_verifier_has_a_refusal_case() -> None:
    verifier_codes = {code for code in Reason if code.startswith("user.")}
    assert {expected for _, expected in REFUSALS.values()} == verifier_codes - {Reason.USER_UNBOUND}


# --- accepted tokens ---------------------------------------------------------------------


def test_valid_access_token_yields_the_user() -> None:
    verified = verify(VALID)
    assert verified.type is UserTokenType.ACCESS_TOKEN
    assert (verified.issuer, verified.subject) == (ISSUER, "alice")
    assert verified.audiences == (AUDIENCE,)
    assert verified.client_id == "web-app"
    assert (verified.scopes, verified.roles, verified.groups, verified.entitlements) == (
        (),
        (),
        (),
        (),
    )
    assert (verified.issued_at, verified.expires_at) == (NOW - 60, NOW + 600)
    assert verified.claims["jti"] == "at-1"


def test_access_token_minted_by_the_dev_idp_verifies() -> None:
    minted = mint_user_token(
        IDP, issuer=ISSUER, subject="bob", audience=AUDIENCE, roles=["customer"], now=NOW
    )
    verified = verify(minted)
    assert (verified.subject, verified.roles) == ("bob", ("customer",))


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT"])
def test_at_jwt_typ_variants_are_access_tokens(typ: str) -> None:
    assert verify(token(typ=typ)).type is UserTokenType.ACCESS_TOKEN


def test_each_issuer_is_checked_with_its_own_keys_and_audiences() -> None:
    partner = token(
        {"iss": OTHER_ISSUER, "aud": "partner-client"}, key=PARTNER_IDP, kid="partner-1"
    )
    assert verify(partner).issuer == OTHER_ISSUER
    # The partner's token for our audience: its issuer does not list that audience.
    wrong_aud = token({"iss": OTHER_ISSUER}, key=PARTNER_IDP, kid="partner-1")
    assert reason(wrong_aud) is Reason.USER_AUD_MISMATCH


def test_without_kid_every_key_of_the_issuer_is_tried() -> None:
    assert verify(token(kid=None)).subject == "alice"
    assert reason(token(key=FORGER, kid=None)) is Reason.USER_SIGNATURE_INVALID


@pytest.mark.parametrize(
    ("aud", "expected"),
    [
        ([AUDIENCE], (AUDIENCE,)),
        (["https://unrelated.example", AUDIENCE], ("https://unrelated.example", AUDIENCE)),
        ("https://api2.example", ("https://api2.example",)),
    ],
)
def test_aud_may_be_a_list_naming_any_configured_audience(
    aud: str | list[str], expected: tuple[str, ...]
) -> None:
    assert verify(token({"aud": aud})).audiences == expected


def test_scope_roles_groups_and_entitlements_are_parsed_into_tuples() -> None:
    verified = verify(
        token(
            {
                "scope": "orders:read  orders:write",
                "roles": ["customer", "vip"],
                "groups": ["eu"],
                "entitlements": [],
            }
        )
    )
    assert verified.scopes == ("orders:read", "orders:write")
    assert verified.roles == ("customer", "vip")
    assert verified.groups == ("eu",)
    assert verified.entitlements == ()


def test_clock_skew_tolerates_small_differences() -> None:
    assert verify(token({"exp": NOW - 29})).expires_at == NOW - 29
    assert verify(token({"nbf": NOW + 29, "iat": NOW + 29})).issued_at == NOW + 29


def test_signature_is_checked_before_any_claim() -> None:
    assert reason(token({"aud": 5, "exp": None}, key=FORGER)) is Reason.USER_SIGNATURE_INVALID


# --- OIDC ID tokens -----------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["JWT", None])
def test_id_token_is_refused_without_the_switch(typ: str | None) -> None:
    assert reason(id_token(typ)) is Reason.USER_TYP_INVALID


@pytest.mark.parametrize("typ", ["JWT", "jwt", "application/jwt", None])
def test_id_token_typed_jwt_or_untyped_is_accepted_with_the_switch(typ: str | None) -> None:
    verified = verify(id_token(typ), id_tokens=True)
    assert verified.type is UserTokenType.ID_TOKEN
    assert (verified.subject, verified.client_id) == ("alice", None)


def test_id_token_still_needs_sub_and_iat() -> None:
    assert reason(id_token(sub=None), id_tokens=True) is Reason.USER_CLAIM_MISSING
    assert reason(id_token(iat=None), id_tokens=True) is Reason.USER_CLAIM_MISSING


def test_the_switch_admits_no_other_typ() -> None:
    assert reason(token(typ="wit+jwt"), id_tokens=True) is Reason.USER_TYP_INVALID


def test_at_jwt_stays_an_access_token_with_the_switch_and_keeps_its_requirements() -> None:
    assert verify(VALID, id_tokens=True).type is UserTokenType.ACCESS_TOKEN
    assert reason(token({"client_id": None}), id_tokens=True) is Reason.USER_CLAIM_MISSING


@pytest.mark.parametrize("name", ["sub", "client_id", "jti"])
def test_a_required_claim_that_is_null_is_refused(name: str) -> None:
    null_claim = sign_jws({**claims(), name: None}, IDP, {"typ": "at+jwt", "kid": "idp-1"})
    assert reason(null_claim) is Reason.USER_CLAIM_INVALID
