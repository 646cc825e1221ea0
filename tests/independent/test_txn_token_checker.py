"""The independent Txn-Token checker against the draft's published example and against
mutated copies of it.

The published claim sets are `tests/vectors/published/txn-token-examples.json` (see
`SOURCES.md` beside it): the draft -10 Txn-Token body, the -06 and -08 legacy fragments
and RFC 8693's `act` examples. They are claim sets, not tokens: this file signs them with
keys it generates, with `cryptography` only -- never with the project's own code.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.independent.txn_token_checker import (
    ISSUED_TOKEN_TYPE,
    REGISTERED_ERRORS,
    REQUIRED_CLAIMS,
    RULES,
    TxnCheckFailed,
    check_exchange_error,
    check_exchange_response,
    check_issued_from,
    check_replacement,
    check_txn_token,
)
from tests.vectors.published_vectors import load_published

EXAMPLES: dict[str, Any] = load_published("txn-token-examples.json")
DRAFT10: dict[str, Any] = EXAMPLES["txn_token_draft10"]
CLAIMS: dict[str, Any] = DRAFT10["claims"]
HEADER: dict[str, Any] = DRAFT10["header"]
LEGACY_06: dict[str, Any] = EXAMPLES["txn_token_legacy_06_rctx_req_wl_array"]["claims_fragment"]
LEGACY_08: dict[str, Any] = EXAMPLES["txn_token_legacy_08_req_wl_comma"]["claims_fragment"]
ACT_SIMPLE: dict[str, Any] = EXAMPLES["rfc8693_act_simple"]["claims"]["act"]
ACT_NESTED: dict[str, Any] = EXAMPLES["rfc8693_act_nested"]["claims"]["act"]

TRUST_DOMAIN = "trust-domain.example"
KID: str = HEADER["kid"]  # "identifier-to-key"
IAT: int = CLAIMS["iat"]  # 1686536226
EXP: int = CLAIMS["exp"]  # 1686536586: a 360-second lifetime
NOW = IAT + 60
GATEWAY: str = CLAIMS["req_wl"]  # "apigateway.trust-domain.example"
WORKLOAD3 = "workload3.trust-domain.example"

PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def test_published_example_is_the_draft10_body() -> None:
    """Guards the vector this file leans on: the -10 body as SOURCES.md describes it."""
    assert HEADER == {"typ": "txntoken+jwt", "alg": "RS256", "kid": "identifier-to-key"}
    assert set(REQUIRED_CLAIMS) <= CLAIMS.keys()
    assert CLAIMS["aud"] == TRUST_DOMAIN
    assert CLAIMS["scope"] == "trade.stocks"
    assert IAT < NOW < EXP


# --------------------------------------------------------------------------------------
# Helpers: encodings, keys, minting


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_json(value: object) -> str:
    return b64u(json.dumps(value).encode("utf-8"))


def public_jwk(key: PrivateKey, **members: Any) -> dict[str, Any]:
    """The public JWK of ``key`` (RFC 7518 section 6, RFC 8037 section 2)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        numbers = key.public_key().public_numbers()
        size = (key.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]
        jwk: dict[str, Any] = {
            "kty": "EC",
            "crv": crv,
            "x": b64u(numbers.x.to_bytes(size, "big")),
            "y": b64u(numbers.y.to_bytes(size, "big")),
        }
    elif isinstance(key, rsa.RSAPrivateKey):
        rsa_numbers = key.public_key().public_numbers()
        jwk = {
            "kty": "RSA",
            "n": b64u(rsa_numbers.n.to_bytes((rsa_numbers.n.bit_length() + 7) // 8, "big")),
            "e": b64u(rsa_numbers.e.to_bytes((rsa_numbers.e.bit_length() + 7) // 8, "big")),
        }
    else:
        raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64u(raw)}
    jwk.update(members)
    return jwk


def jws_signature(alg: str, key: PrivateKey | bytes | None, signing_input: bytes) -> bytes:
    """A JWS signature (RFC 7518 section 3), written out here apart from the checker."""
    if alg == "none":
        return b""
    if isinstance(key, bytes):
        assert alg == "HS256"
        return hmac.new(key, signing_input, hashlib.sha256).digest()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        hash_alg = {"ES256": hashes.SHA256(), "ES384": hashes.SHA384(), "ES512": hashes.SHA512()}
        der = key.sign(signing_input, ec.ECDSA(hash_alg[alg]))
        r, s = decode_dss_signature(der)
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if isinstance(key, rsa.RSAPrivateKey):
        hash_alg2 = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[
            alg[2:]
        ]
        if alg.startswith("PS"):
            pss = padding.PSS(mgf=padding.MGF1(hash_alg2), salt_length=hash_alg2.digest_size)
            return key.sign(signing_input, pss, hash_alg2)
        return key.sign(signing_input, padding.PKCS1v15(), hash_alg2)
    assert isinstance(key, Ed25519PrivateKey)
    return key.sign(signing_input)


def mint(
    claims: Mapping[str, Any] | None = None,
    header: Mapping[str, Any] | None = None,
    key: PrivateKey | bytes | None = None,
) -> str:
    """A compact JWS of ``claims`` (default: the draft's example body) under ``header``
    (default: the draft's example header with ES256), signed by ``key`` (default:
    :data:`ES256_KEY`)."""
    header = dict(header) if header is not None else {**HEADER, "alg": "ES256"}
    claims = claims if claims is not None else CLAIMS
    signing_input = f"{b64u_json(header)}.{b64u_json(claims)}"
    signer = key if key is not None else ES256_KEY
    signature = jws_signature(header["alg"], signer, signing_input.encode("ascii"))
    return f"{signing_input}.{b64u(signature)}"


@functools.cache
def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


ES256_KEY = ec.generate_private_key(ec.SECP256R1())
JWKS: dict[str, Any] = {"keys": [public_jwk(ES256_KEY, kid=KID, use="sig")]}


def check(token: str, *, now: float = NOW, jwks: Mapping[str, Any] = JWKS) -> dict[str, Any]:
    return check_txn_token(token, jwks, now=now, trust_domain=TRUST_DOMAIN)


def claims_with(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(CLAIMS)
    out.update(changes)
    return out


def claims_without(*names: str) -> dict[str, Any]:
    return {k: v for k, v in copy.deepcopy(CLAIMS).items() if k not in names}


def rule_of(call: Callable[[], object]) -> str:
    with pytest.raises(TxnCheckFailed) as info:
        call()
    assert info.value.rule in RULES
    assert info.value.detail
    return info.value.rule


# --------------------------------------------------------------------------------------
# check_txn_token: the published example is accepted


def test_the_drafts_example_body_signed_es256_is_accepted() -> None:
    claims = check(mint())
    assert claims == CLAIMS
    assert claims["tctx"]["customer_type"] == {"geo": "US", "level": "VIP"}


def test_the_drafts_example_header_as_published_rs256_is_accepted() -> None:
    key = rsa_key()
    jwks = {"keys": [public_jwk(key, kid=KID)]}
    assert check(mint(header=HEADER, key=key), jwks=jwks) == CLAIMS


@pytest.mark.parametrize(
    ("alg", "make_key"),
    [
        ("ES384", lambda: ec.generate_private_key(ec.SECP384R1())),
        ("ES512", lambda: ec.generate_private_key(ec.SECP521R1())),
        ("RS512", rsa_key),
        ("PS256", rsa_key),
        ("PS384", rsa_key),
        ("EdDSA", Ed25519PrivateKey.generate),
        ("Ed25519", Ed25519PrivateKey.generate),
    ],
)
def test_other_asymmetric_algorithms_are_accepted(
    alg: str, make_key: Callable[[], PrivateKey]
) -> None:
    key = make_key()
    jwks = {"keys": [public_jwk(key, kid=KID, alg=alg)]}
    assert check(mint(header={**HEADER, "alg": alg}, key=key), jwks=jwks) == CLAIMS


@pytest.mark.parametrize(
    "typ", ["txntoken+jwt", "TxnToken+JWT", "application/txntoken+jwt", "APPLICATION/TXNTOKEN+JWT"]
)
def test_typ_is_compared_as_a_media_type(typ: str) -> None:
    check(mint(header={**HEADER, "alg": "ES256", "typ": typ}))


def test_now_from_iat_up_to_just_before_exp_is_accepted() -> None:
    token = mint()
    check(token, now=IAT)
    check(token, now=EXP - 0.001)


def test_aud_array_holding_the_trust_domain_is_accepted() -> None:
    check(mint(claims_with(aud=["other.example", TRUST_DOMAIN])))


def test_optional_and_unknown_claims_are_accepted() -> None:
    claims = claims_with(
        iss="https://trust-domain.example/txn-token-service",
        act=ACT_NESTED,
        nbf=IAT,
        x_unknown={"ignored": True},
    )
    check(mint(claims))
    check(mint(claims_without("tctx", "rctx")))  # RECOMMENDED, not REQUIRED


def test_key_selection_by_kid_among_several_keys() -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": [public_jwk(other, kid="next"), public_jwk(ES256_KEY, kid=KID)]}
    check(mint(), jwks=jwks)
    assert rule_of(lambda: check(mint(key=other), jwks=jwks)) == "txn.signature"


def test_without_kid_every_fitting_key_is_tried_and_a_single_jwk_is_a_key_set() -> None:
    header = {"typ": "txntoken+jwt", "alg": "ES256"}
    other = ec.generate_private_key(ec.SECP256R1())
    check(mint(header=header), jwks={"keys": [public_jwk(other), public_jwk(ES256_KEY)]})
    check(mint(header=header), jwks=public_jwk(ES256_KEY))


# --------------------------------------------------------------------------------------
# check_txn_token: mutated copies are rejected


@pytest.mark.parametrize(
    "typ", [None, "JWT", "jwt", "txn_token", "at+jwt", "application/jwt", "txntoken", 1]
)
def test_typ_other_than_txntoken_jwt_is_rejected(typ: object) -> None:
    header: dict[str, Any] = {**HEADER, "alg": "ES256", "typ": typ}
    if typ is None:
        del header["typ"]
    assert rule_of(lambda: check(mint(header=header))) == "txn.typ"


def test_alg_none_is_rejected() -> None:
    token = mint(header={**HEADER, "alg": "none"}, key=None)
    assert token.endswith(".")
    assert rule_of(lambda: check(token)) == "txn.alg"


def test_alg_hs256_keyed_with_the_public_key_is_rejected() -> None:
    """The classic key-confusion forgery: HMAC keyed with the TTS's public key bytes."""
    secret = ES256_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    token = mint(header={**HEADER, "alg": "HS256"}, key=secret)
    assert rule_of(lambda: check(token)) == "txn.alg"


@pytest.mark.parametrize("alg", [None, "RS1", "ES256K", "es256", 256])
def test_unknown_or_missing_alg_is_rejected(alg: object) -> None:
    header: dict[str, Any] = {**HEADER, "alg": alg}
    if alg is None:
        del header["alg"]
    token = f"{b64u_json(header)}.{b64u_json(CLAIMS)}.{b64u(b'x' * 64)}"
    assert rule_of(lambda: check(token)) == "txn.alg"


def test_crit_is_rejected() -> None:
    header = {**HEADER, "alg": "ES256", "crit": ["exp"]}
    assert rule_of(lambda: check(mint(header=header))) == "txn.crit"


@pytest.mark.parametrize("kid", ["another-key", 7])
def test_kid_not_naming_a_key_is_rejected(kid: object) -> None:
    assert rule_of(lambda: check(mint(header={**HEADER, "alg": "ES256", "kid": kid}))) == (
        "txn.kid"
    )


@pytest.mark.parametrize(
    ("alg", "jwk"),
    [
        ("ES384", public_jwk(ES256_KEY, kid=KID)),  # P-256 key for ES384
        ("ES256", public_jwk(ES256_KEY, kid=KID, use="enc")),
        ("ES256", public_jwk(ES256_KEY, kid=KID, key_ops=["encrypt"])),
        ("ES256", public_jwk(ES256_KEY, kid=KID, alg="ES512")),
        ("ES256", {**public_jwk(ES256_KEY, kid=KID), "x": b64u(b"\x01" * 31)}),
        ("ES256", {**public_jwk(ES256_KEY, kid=KID), "y": b64u(b"\x01" * 32)}),  # off-curve
        ("RS256", public_jwk(ES256_KEY, kid=KID)),
        ("EdDSA", public_jwk(ES256_KEY, kid=KID)),
    ],
)
def test_no_key_fit_for_alg_is_rejected(alg: str, jwk: dict[str, Any]) -> None:
    token = f"{b64u_json({**HEADER, 'alg': alg})}.{b64u_json(CLAIMS)}.{b64u(b'x' * 96)}"
    assert rule_of(lambda: check(token, jwks={"keys": [jwk]})) == "txn.key"


def test_rsa_key_shorter_than_2048_bits_is_rejected() -> None:
    weak = rsa_key(1024)
    token = mint(header=HEADER, key=weak)
    assert rule_of(lambda: check(token, jwks={"keys": [public_jwk(weak, kid=KID)]})) == ("txn.key")


def test_flipped_signature_is_rejected() -> None:
    head, body, sig = mint().split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[10] ^= 0x01
    assert rule_of(lambda: check(f"{head}.{body}.{b64u(bytes(raw))}")) == "txn.signature"


def test_claims_changed_after_signing_are_rejected() -> None:
    head, _, sig = mint().split(".")
    forged = b64u_json(claims_with(scope="trade.stocks trade.options"))
    assert rule_of(lambda: check(f"{head}.{forged}.{sig}")) == "txn.signature"


def test_signature_by_another_key_or_of_wrong_length_is_rejected() -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    assert rule_of(lambda: check(mint(key=stranger))) == "txn.signature"
    head, body, sig = mint().split(".")
    assert rule_of(lambda: check(f"{head}.{body}.{sig}AA")) == "txn.signature"


@pytest.mark.parametrize(
    "transform",
    [
        lambda t: t.rsplit(".", 1)[0],  # two parts
        lambda t: t + ".extra",  # four parts
        lambda t: " " + t,  # surrounding whitespace
        lambda t: "Bearer " + t,  # a scheme prefix: the header carries the bare token
        lambda t: t + "\n",
        lambda t: t.split(".")[0] + "=." + ".".join(t.split(".")[1:]),  # padding
        lambda t: f"{t}, {t}",  # two tokens
        lambda t: t.replace(".", ".!", 1),  # outside the base64url alphabet
        lambda t: t.replace("-", "+").replace("_", "/") + "+/",  # base64, not base64url
    ],
)
def test_anything_but_one_bare_compact_jws_is_rejected(transform: Callable[[str], str]) -> None:
    assert rule_of(lambda: check(transform(mint()))) == "txn.format"


@pytest.mark.parametrize(
    ("header_json", "claims_json"),
    [
        (b"[]", json.dumps(CLAIMS).encode()),  # header not an object
        (json.dumps({**HEADER, "alg": "ES256"}).encode(), b'"claims"'),
        (json.dumps({**HEADER, "alg": "ES256"}).encode(), b"{not json"),
        (json.dumps({**HEADER, "alg": "ES256"}).encode(), b'{"sub": "a", "sub": "b"}'),
        (b'{"typ": "txntoken+jwt", "typ": "JWT", "alg": "ES256"}', json.dumps(CLAIMS).encode()),
        (json.dumps({**HEADER, "alg": "ES256"}).encode(), b'{"iat": NaN}'),
        (json.dumps({**HEADER, "alg": "ES256"}).encode(), b"\xff\xfe"),
    ],
)
def test_header_and_claims_must_be_strict_json_objects(
    header_json: bytes, claims_json: bytes
) -> None:
    signing_input = f"{b64u(header_json)}.{b64u(claims_json)}"
    sig = jws_signature("ES256", ES256_KEY, signing_input.encode())
    assert rule_of(lambda: check(f"{signing_input}.{b64u(sig)}")) == "txn.format"


def test_a_token_that_is_not_a_string_is_rejected() -> None:
    assert rule_of(lambda: check(mint().encode())) == "txn.format"  # type: ignore[arg-type]


@pytest.mark.parametrize("name", REQUIRED_CLAIMS)
def test_each_required_claim_removed_is_rejected(name: str) -> None:
    assert rule_of(lambda: check(mint(claims_without(name)))) == f"txn.{name}"


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"iat": str(IAT)}, "txn.iat"),
        ({"iat": True}, "txn.iat"),
        ({"exp": None}, "txn.exp"),
        ({"exp": [EXP]}, "txn.exp"),
        ({"aud": 42}, "txn.aud"),
        ({"aud": []}, "txn.aud"),
        ({"aud": [TRUST_DOMAIN, 1]}, "txn.aud"),
        ({"aud": ""}, "txn.aud"),
        ({"txn": 97053963}, "txn.txn"),
        ({"txn": ""}, "txn.txn"),
        ({"sub": ""}, "txn.sub"),
        ({"sub": {"id": "d084sdrt234fsaw34tr23t"}}, "txn.sub"),
        ({"scope": ["trade.stocks"]}, "txn.scope"),
        ({"scope": ""}, "txn.scope"),
        ({"scope": "trade.stocks  trade.bonds"}, "txn.scope"),
        ({"scope": " trade.stocks"}, "txn.scope"),
        ({"scope": 'trade."stocks"'}, "txn.scope"),
        ({"req_wl": [GATEWAY]}, "txn.req_wl"),
        ({"req_wl": ""}, "txn.req_wl"),
        ({"tctx": ["BUY", "MSFT"]}, "txn.tctx"),
        ({"tctx": "action=BUY"}, "txn.tctx"),
        ({"tctx": None}, "txn.tctx"),
        ({"rctx": "69.151.72.123"}, "txn.rctx"),
        ({"iss": 5}, "txn.iss"),
        ({"act": "https://service16.example.com"}, "txn.act"),
        ({"act": {}}, "txn.act"),
        ({"act": {"sub": "svc", "exp": EXP}}, "txn.act"),
        ({"act": {"sub": "svc", "act": ["earlier"]}}, "txn.act"),
        ({"act": {"sub": 16}}, "txn.act"),
        ({"refresh_token": "8xLOxBtZp8"}, "txn.embedded_token"),
        ({"rctx": {"req_ip": "69.151.72.123", "access_token": "eyJ..."}}, "txn.embedded_token"),
    ],
)
def test_ill_typed_claims_are_rejected(changes: dict[str, Any], rule: str) -> None:
    assert rule_of(lambda: check(mint(claims_with(**changes)))) == rule


def test_legacy_06_form_purp_and_req_wl_array_in_rctx_is_rejected() -> None:
    claims = claims_without("scope", "req_wl", "rctx")
    claims.update(copy.deepcopy(LEGACY_06))
    assert rule_of(lambda: check(mint(claims))) == "txn.scope"
    claims["scope"] = claims.pop("purp")
    assert rule_of(lambda: check(mint(claims))) == "txn.req_wl"


def test_legacy_08_comma_joined_req_wl_is_rejected() -> None:
    assert rule_of(lambda: check(mint(claims_with(**LEGACY_08)))) == "txn.req_wl"


@pytest.mark.parametrize("aud", ["other-domain.example", ["other-domain.example"]])
def test_aud_of_another_trust_domain_is_rejected(aud: object) -> None:
    assert rule_of(lambda: check(mint(claims_with(aud=aud)))) == "txn.aud"


def test_expired_token_is_rejected() -> None:
    token = mint()
    assert rule_of(lambda: check(token, now=EXP)) == "txn.expired"
    assert rule_of(lambda: check(token, now=EXP + 3600)) == "txn.expired"


def test_token_issued_in_the_future_or_not_yet_valid_is_rejected() -> None:
    assert rule_of(lambda: check(mint(), now=IAT - 1)) == "txn.iat"
    assert rule_of(lambda: check(mint(claims_with(nbf=NOW + 1)))) == "txn.nbf"
    assert rule_of(lambda: check(mint(claims_with(nbf="soon")))) == "txn.nbf"


def test_lifetime_longer_than_the_maximum_is_rejected() -> None:
    long_lived = mint(claims_with(exp=IAT + 601))
    assert rule_of(lambda: check(long_lived)) == "txn.lifetime"
    assert rule_of(lambda: check(mint(claims_with(exp=IAT + 86400)))) == "txn.lifetime"
    # The example's own 360 s exceeds a stricter configured maximum.
    with pytest.raises(TxnCheckFailed) as info:
        check_txn_token(mint(), JWKS, now=NOW, trust_domain=TRUST_DOMAIN, max_lifetime=300)
    assert info.value.rule == "txn.lifetime"


# --------------------------------------------------------------------------------------
# check_issued_from


def issued(claims: Mapping[str, Any], **overrides: Any) -> None:
    arguments: dict[str, Any] = {
        "subject": CLAIMS["sub"],
        "granted_scope": ["trade.stocks", "trade.bonds", "profile"],
        "requesting_workload": GATEWAY,
        "trust_domain": TRUST_DOMAIN,
    }
    arguments.update(overrides)
    check_issued_from(claims, **arguments)


def test_issued_from_accepts_the_example_issued_to_the_gateway() -> None:
    issued(CLAIMS)
    issued(CLAIMS, granted_scope=["trade.stocks"])  # exactly the grant
    issued(CLAIMS, granted_scope="profile trade.stocks")  # a scope string, not characters
    issued(claims_with(aud=[TRUST_DOMAIN]))


@pytest.mark.parametrize(
    ("claims", "overrides", "rule"),
    [
        (CLAIMS, {"subject": "someone-else"}, "issue.sub"),
        (claims_with(scope="trade.stocks trade.options"), {}, "issue.scope"),
        (CLAIMS, {"granted_scope": ["trade.bonds"]}, "issue.scope"),
        (CLAIMS, {"granted_scope": []}, "issue.scope"),
        (claims_with(scope=["trade.stocks"]), {}, "issue.scope"),
        (CLAIMS, {"requesting_workload": WORKLOAD3}, "issue.req_wl"),
        (CLAIMS, {"trust_domain": "other-domain.example"}, "issue.aud"),
        (claims_with(aud=["other-domain.example"]), {}, "issue.aud"),
    ],
)
def test_issued_from_rejects_a_token_not_matching_its_request(
    claims: dict[str, Any], overrides: dict[str, Any], rule: str
) -> None:
    assert rule_of(lambda: issued(claims, **overrides)) == rule


# --------------------------------------------------------------------------------------
# check_replacement (draft 14.15; RFC 8693 section 4.1 nesting)

SERVICE16: str = ACT_NESTED["sub"]  # "https://service16.example.com", the current actor
SERVICE77: str = ACT_NESTED["act"]["sub"]  # "https://service77.example.com", a prior one
REPLACED_AT = NOW + 120


def replacement_of(original: Mapping[str, Any], requester: str, **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(dict(original))
    act: dict[str, Any] = {"sub": requester}
    if "act" in original:
        act["act"] = copy.deepcopy(original["act"])
    out.update(iat=REPLACED_AT, exp=REPLACED_AT + 300, act=act)
    out.update(changes)
    return out


def replace(
    original: Mapping[str, Any],
    replacement: Mapping[str, Any],
    *,
    requester: str = WORKLOAD3,
    now: float = REPLACED_AT,
    max_extension: float | None = None,
) -> None:
    check_replacement(
        original, replacement, requester=requester, now=now, max_extension=max_extension
    )


def test_a_good_replacement_passes() -> None:
    replace(CLAIMS, replacement_of(CLAIMS, WORKLOAD3))


def test_a_good_replacement_of_signed_tokens_passes_end_to_end() -> None:
    original = check(mint())
    second = mint(replacement_of(original, WORKLOAD3))
    replacement = check(second, now=REPLACED_AT)
    replace(original, replacement, max_extension=300)
    assert replacement["act"] == {"sub": WORKLOAD3}


def test_replacement_of_a_replacement_nests_the_earlier_actor_as_rfc8693_shows() -> None:
    """RFC 8693 section 4.1's nested example: service16 current, service77 prior."""
    original = claims_with(act={"sub": SERVICE77})
    replacement = replacement_of(original, SERVICE16)
    assert replacement["act"] == ACT_NESTED
    replace(original, replacement, requester=SERVICE16)


def test_replacement_may_narrow_scope_and_add_values() -> None:
    original = claims_with(scope="trade.stocks trade.bonds")
    replacement = replacement_of(original, WORKLOAD3, scope="trade.stocks")
    replacement["tctx"] = {**CLAIMS["tctx"], "approved_by": "risk-engine"}
    replace(original, replacement)


def test_replacement_aud_string_and_one_element_array_are_the_same() -> None:
    replace(CLAIMS, replacement_of(CLAIMS, WORKLOAD3, aud=[TRUST_DOMAIN]))


def test_replacement_within_the_allowed_extension_passes() -> None:
    replacement = replacement_of(CLAIMS, WORKLOAD3, exp=EXP + 60)
    replace(CLAIMS, replacement, max_extension=60)


@pytest.mark.parametrize(
    ("original", "replacement", "kwargs", "rule"),
    [
        (CLAIMS, replacement_of(CLAIMS, WORKLOAD3, txn="new-txn"), {}, "replace.txn_changed"),
        (CLAIMS, replacement_of(CLAIMS, WORKLOAD3, sub="someone"), {}, "replace.sub_changed"),
        (
            CLAIMS,
            replacement_of(CLAIMS, WORKLOAD3, aud="other-domain.example"),
            {},
            "replace.aud_changed",
        ),
        (
            CLAIMS,
            replacement_of(CLAIMS, WORKLOAD3, aud=[TRUST_DOMAIN, "other-domain.example"]),
            {},
            "replace.aud_changed",
        ),
        (
            CLAIMS,
            replacement_of(CLAIMS, WORKLOAD3, scope="trade.stocks trade.options"),
            {},
            "replace.scope_wider",
        ),
        (CLAIMS, replacement_of(CLAIMS, WORKLOAD3, scope="admin"), {}, "replace.scope_wider"),
        (CLAIMS, replacement_of(CLAIMS, WORKLOAD3), {"now": EXP}, "replace.original_expired"),
        (
            CLAIMS,
            replacement_of(CLAIMS, WORKLOAD3),
            {"now": EXP + 1},
            "replace.original_expired",
        ),
        (
            CLAIMS,
            replacement_of(CLAIMS, WORKLOAD3, req_wl=WORKLOAD3),
            {},
            "replace.req_wl_changed",
        ),
        (
            CLAIMS,
            replacement_of(CLAIMS, WORKLOAD3, **LEGACY_08),  # the -08 comma-appended form
            {},
            "replace.req_wl_changed",
        ),
        (
            CLAIMS,
            {k: v for k, v in replacement_of(CLAIMS, WORKLOAD3).items() if k != "act"},
            {},
            "replace.act_missing",
        ),
        (CLAIMS, replacement_of(CLAIMS, WORKLOAD3, act=WORKLOAD3), {}, "replace.act_missing"),
        (CLAIMS, replacement_of(CLAIMS, SERVICE16), {}, "replace.act_requester"),
        (CLAIMS, replacement_of(CLAIMS, WORKLOAD3, act=ACT_SIMPLE), {}, "replace.act_requester"),
        (
            # the original's act dropped instead of nested
            claims_with(act={"sub": SERVICE77}),
            replacement_of(CLAIMS, SERVICE16),
            {"requester": SERVICE16},
            "replace.act_chain",
        ),
        (
            # the original's act replaced by the requester instead of wrapped
            claims_with(act={"sub": SERVICE77}),
            replacement_of(CLAIMS, WORKLOAD3, act={"sub": WORKLOAD3}),
            {},
            "replace.act_chain",
        ),
        (
            # the original's act altered inside the nesting
            claims_with(act={"sub": SERVICE77}),
            replacement_of(
                CLAIMS, WORKLOAD3, act={"sub": WORKLOAD3, "act": {"sub": "someone-else"}}
            ),
            {},
            "replace.act_chain",
        ),
        (
            # an explicit null where the original had no act
            CLAIMS,
            replacement_of(CLAIMS, WORKLOAD3, act={"sub": WORKLOAD3, "act": None}),
            {},
            "replace.act_chain",
        ),
        (
            # an invented prior actor where the original had none
            CLAIMS,
            replacement_of(CLAIMS, SERVICE16, act=ACT_NESTED),
            {"requester": SERVICE16},
            "replace.act_chain",
        ),
        (
            CLAIMS,
            replacement_of(CLAIMS, WORKLOAD3, exp=EXP + 61),
            {"max_extension": 60},
            "replace.exp_extended",
        ),
        (
            CLAIMS,
            replacement_of(CLAIMS, WORKLOAD3, exp=EXP + 1),
            {"max_extension": 0},
            "replace.exp_extended",
        ),
    ],
)
def test_a_bad_replacement_fails_its_rule(
    original: dict[str, Any], replacement: dict[str, Any], kwargs: dict[str, Any], rule: str
) -> None:
    assert rule_of(lambda: replace(original, replacement, **kwargs)) == rule


def test_a_negative_extension_limit_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="max_extension"):
        replace(CLAIMS, replacement_of(CLAIMS, WORKLOAD3), max_extension=-1)


# --------------------------------------------------------------------------------------
# check_exchange_response (draft 12.4; RFC 8693 section 2.2.1)

GOOD_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}


def response_body(token: str | None = None, **changes: Any) -> bytes:
    """The draft's example Txn-Token Response, carrying a freshly minted token."""
    payload: dict[str, Any] = {
        "token_type": "N_A",
        "issued_token_type": ISSUED_TOKEN_TYPE,
        "access_token": token if token is not None else mint(),
    }
    payload.update(changes)
    return json.dumps({k: v for k, v in payload.items() if v is not None}).encode()


def test_a_good_response_yields_a_token_that_passes_every_check() -> None:
    token = check_exchange_response(200, GOOD_HEADERS, response_body())
    claims = check(token)
    check_issued_from(
        claims,
        subject=CLAIMS["sub"],
        granted_scope=["trade.stocks"],
        requesting_workload=GATEWAY,
        trust_domain=TRUST_DOMAIN,
    )


@pytest.mark.parametrize(
    ("headers", "changes"),
    [
        ({"content-type": "application/json; charset=UTF-8", "CACHE-CONTROL": "no-store"}, {}),
        ({"Content-Type": "Application/JSON", "Cache-Control": "private, No-Store"}, {}),
        ({**GOOD_HEADERS, "Pragma": "no-cache"}, {"expires_in": 300}),
        (GOOD_HEADERS, {"scope": "trade.stocks"}),
        (GOOD_HEADERS, {"token_type": "n_a"}),  # token_type is case-insensitive
    ],
)
def test_good_response_variants_pass(headers: dict[str, str], changes: dict[str, Any]) -> None:
    token = mint()
    assert check_exchange_response(200, headers, response_body(token, **changes)) == token


@pytest.mark.parametrize(
    ("status", "headers", "body", "rule"),
    [
        (201, GOOD_HEADERS, response_body(), "response.status"),
        (400, GOOD_HEADERS, response_body(), "response.status"),
        (200, {"Cache-Control": "no-store"}, response_body(), "response.content_type"),
        (
            200,
            {**GOOD_HEADERS, "Content-Type": "text/plain"},
            response_body(),
            "response.content_type",
        ),
        (
            200,
            {**GOOD_HEADERS, "Content-Type": "application/json; charset=latin1"},
            response_body(),
            "response.content_type",
        ),
        (200, {"Content-Type": "application/json"}, response_body(), "response.cache_control"),
        (
            200,
            {**GOOD_HEADERS, "Cache-Control": "no-cache"},
            response_body(),
            "response.cache_control",
        ),
        (
            200,
            {**GOOD_HEADERS, "Cache-Control": "max-age=0"},
            response_body(),
            "response.cache_control",
        ),
        (200, GOOD_HEADERS, b"access_token=eyJ", "response.json"),
        (200, GOOD_HEADERS, b"[]", "response.json"),
        (200, GOOD_HEADERS, b'{"token_type": "N_A", "token_type": "Bearer"}', "response.json"),
        (200, GOOD_HEADERS, response_body(token_type="Bearer"), "response.token_type"),
        (200, GOOD_HEADERS, response_body(token_type=None), "response.token_type"),
        (
            200,
            GOOD_HEADERS,
            response_body(issued_token_type="urn:ietf:params:oauth:token-type:access_token"),
            "response.issued_token_type",
        ),
        (200, GOOD_HEADERS, response_body(issued_token_type=None), "response.issued_token_type"),
        (200, GOOD_HEADERS, response_body(refresh_token="tGzv3JOkF0X"), "response.refresh_token"),
        (200, GOOD_HEADERS, response_body(refresh_token=""), "response.refresh_token"),
        (200, GOOD_HEADERS, response_body(access_token=None), "response.access_token"),
        (200, GOOD_HEADERS, response_body(access_token=["eyJ.e30.sig"]), "response.access_token"),
        (200, GOOD_HEADERS, response_body("opaque-handle-1234"), "response.access_token"),
        (200, GOOD_HEADERS, response_body(expires_in="300"), "response.expires_in"),
        (200, GOOD_HEADERS, response_body(expires_in=-1), "response.expires_in"),
        (200, GOOD_HEADERS, response_body(scope=["trade.stocks"]), "response.scope"),
    ],
)
def test_bad_responses_fail_their_rule(
    status: int, headers: dict[str, str], body: bytes, rule: str
) -> None:
    assert rule_of(lambda: check_exchange_response(status, headers, body)) == rule


# --------------------------------------------------------------------------------------
# check_exchange_error (RFC 6749 section 5.2; RFC 8693 section 2.2.2)


def error_body(error: object = "invalid_request", **members: Any) -> bytes:
    return json.dumps({"error": error, **members}).encode()


@pytest.mark.parametrize("code", sorted(REGISTERED_ERRORS))
def test_every_registered_error_code_passes_with_400(code: str) -> None:
    check_exchange_error(400, GOOD_HEADERS, error_body(code), code)


def test_good_error_variants_pass() -> None:
    described = error_body(
        "invalid_request",
        error_description="subject_token expired at 1686536586 (see 'exp')",
        error_uri="https://tts.trust-domain.example/errors#expired",
    )
    check_exchange_error(400, GOOD_HEADERS, described, "invalid_request")
    unauthenticated = {**GOOD_HEADERS, "WWW-Authenticate": 'Basic realm="tts"'}
    check_exchange_error(401, unauthenticated, error_body("invalid_client"), "invalid_client")
    check_exchange_error(
        400,
        {"content-type": "application/json;charset=utf-8", "cache-control": "no-store"},
        error_body("invalid_target", error_description=""),
        "invalid_target",
    )


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected", "rule"),
    [
        (400, GOOD_HEADERS, error_body("access_denied"), "invalid_request", "error.code"),
        (400, GOOD_HEADERS, error_body("server_error"), "invalid_request", "error.code"),
        (400, GOOD_HEADERS, error_body("Invalid_Request"), "invalid_request", "error.code"),
        (400, GOOD_HEADERS, error_body(None), "invalid_request", "error.code"),
        (400, GOOD_HEADERS, b'{"error_description": "bad"}', "invalid_request", "error.code"),
        (400, GOOD_HEADERS, error_body("invalid_grant"), "invalid_request", "error.expected"),
        (500, GOOD_HEADERS, error_body(), "invalid_request", "error.status"),
        (200, GOOD_HEADERS, error_body(), "invalid_request", "error.status"),
        (
            403,
            GOOD_HEADERS,
            error_body("unauthorized_client"),
            "unauthorized_client",
            "error.status",
        ),
        (
            401,
            {**GOOD_HEADERS, "WWW-Authenticate": "Bearer"},
            error_body(),
            "invalid_request",
            "error.status",
        ),
        (
            401,
            GOOD_HEADERS,
            error_body("invalid_client"),
            "invalid_client",
            "error.www_authenticate",
        ),
        (
            400,
            GOOD_HEADERS,
            error_body(error_description='the "scope" is wider'),
            "invalid_request",
            "error.description",
        ),
        (
            400,
            GOOD_HEADERS,
            error_body(error_description="C:\\path"),
            "invalid_request",
            "error.description",
        ),
        (
            400,
            GOOD_HEADERS,
            error_body(error_description="jeton expiré"),
            "invalid_request",
            "error.description",
        ),
        (
            400,
            GOOD_HEADERS,
            error_body(error_description="line one\nline two"),
            "invalid_request",
            "error.description",
        ),
        (
            400,
            GOOD_HEADERS,
            error_body(error_description=["not", "a", "string"]),
            "invalid_request",
            "error.description",
        ),
        (
            400,
            GOOD_HEADERS,
            error_body(error_uri="https://tts.example/errors expired"),
            "invalid_request",
            "error.uri",
        ),
        (400, GOOD_HEADERS, error_body(error_uri=42), "invalid_request", "error.uri"),
        (
            400,
            {"Content-Type": "application/json"},
            error_body(),
            "invalid_request",
            "error.cache_control",
        ),
        (
            400,
            {"Content-Type": "text/html", "Cache-Control": "no-store"},
            error_body(),
            "invalid_request",
            "error.content_type",
        ),
        (400, GOOD_HEADERS, b"error=invalid_request", "invalid_request", "error.json"),
        (400, GOOD_HEADERS, b'"invalid_request"', "invalid_request", "error.json"),
        (
            400,
            GOOD_HEADERS,
            error_body(access_token="eyJ.e30.sig"),
            "invalid_request",
            "error.token",
        ),
    ],
)
def test_bad_errors_fail_their_rule(
    status: int, headers: dict[str, str], body: bytes, expected: str, rule: str
) -> None:
    assert rule_of(lambda: check_exchange_error(status, headers, body, expected)) == rule


def test_expecting_an_unregistered_error_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="registered"):
        check_exchange_error(400, GOOD_HEADERS, error_body("access_denied"), "access_denied")
