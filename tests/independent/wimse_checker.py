"""An independent checker of WIMSE proofs, written from the drafts' text.

It exists to test the gateway's *minting* of WIMSE proofs (outbound mode) against the
specifications rather than against our own verifier, so it deliberately shares no code
with ``authz`` and imports only the standard library and ``cryptography``.

Sources (the revisions the project targets):

* ``draft-ietf-wimse-workload-creds-02`` -- section 3.1 "The Workload Identity Token"
  (the WIT, its JOSE header and claims), 3.1.1 "The WIT HTTP Header"; the editor's copy's
  "Validating the WIT" list (cited as section 5.1.4 by the two documents below).
* ``draft-ietf-wimse-wpt-02`` -- section 2 "Workload Proof Token" (the WPT claims, the
  ``WPT`` authentication scheme and the recipient's validation list), section 2.2
  "Coexistence with Bearer Tokens", and the security considerations ("Limiting Proof of
  Possession Lifespan" 3.1.2, "Audience validation" 3.1.7, "Workload Identity Key
  Management" 3.2).
* ``draft-ietf-wimse-http-signature-07`` -- section 3 "The Protocol: Authentication Based
  on HTTP Message Signatures" (covered components, mandatory and forbidden signature
  parameters, selection by ``tag``, Content-Digest) and its subsection "The ``wimse-aud``
  Signature Parameter".
* RFC 9421 (HTTP Message Signatures), RFC 8941 (Structured Field Values), RFC 9530
  (Digest Fields), RFC 7515/7518/7519 (JWS, JWA, JWT), RFC 7800 (``cnf``), RFC 8037 and
  RFC 9864 (EdDSA / ``Ed25519``), RFC 8725 section 3.11 (explicit typing).

Where the drafts leave a value open, the limits here are the project's choices (the WPT
and HTTP-signature sections of docs/configuration.md): at most ``max_lifetime``
seconds (300 by default) of remaining WPT validity and of HTTP-signature lifetime, a
``jti`` of at least 16 characters, and a WPT ``exp`` no later than the WIT's ``exp``.

Every failure raises :class:`CheckFailed` whose ``rule`` names the rule that failed; the
rule strings are listed in :data:`RULES`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from types import MappingProxyType
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = [
    "RULES",
    "SUPPORTED_ALGS",
    "WIMSE_TAG",
    "CheckFailed",
    "check_http_signature",
    "check_wit",
    "check_wpt",
    "content_digest_matches",
    "parse_sf_dictionary",
    "token_hash",
    "wpt_from_authorization",
]

WIMSE_TAG: Final = "wimse-workload-to-workload"
"""The ``tag`` value of a WIMSE signature (http-signature-07 section 3)."""

#: Every rule string this module can raise, with the text it enforces and its source.
RULES: Final[Mapping[str, str]] = MappingProxyType(
    {
        # --- WIT (workload-creds-02 section 3.1; editor's copy "Validating the WIT")
        "wit.format": "one compact JWS, base64url without padding, JSON-object header and "
        "claims with unique member names (RFC 7515 section 7.1, 5.2; RFC 7519 section 7.2)",
        "wit.crit": "no `crit` header parameter: this checker understands no JWS extension "
        "(RFC 7515 section 4.1.11)",
        "wit.typ": "`typ` is wit+jwt or application/wit+jwt, case-insensitive "
        "(workload-creds-02 section 3.1; RFC 8725 section 3.11; RFC 7515 section 4.1.9)",
        "wit.alg": "`alg` is an asymmetric JWS signature algorithm: never `none`, never HMAC "
        "(workload-creds-02 section 3.1)",
        "wit.kid": "`kid`, when present, selects the issuer key; a key must be found "
        "(workload-creds editor's copy, 'Validating the WIT'; RFC 7515 section 4.1.4)",
        "wit.signature": "the issuer signature verifies (RFC 7515 section 5.2)",
        "wit.sub": "`sub` is present, a non-empty string (and the expected one) "
        "(workload-creds-02 section 3.1)",
        "wit.exp": "`exp` is present, numeric, and now < exp (workload-creds-02 section 3.1; "
        "RFC 7519 section 4.1.4)",
        "wit.nbf": "`nbf`, when present, is numeric and not after now (RFC 7519 section 4.1.5)",
        "wit.cnf": "`cnf.jwk` is present and an object (workload-creds-02 section 3.1; "
        "RFC 7800 section 3.2)",
        "wit.cnf_alg": "`cnf.jwk.alg` is present and an asymmetric signature algorithm "
        "(workload-creds-02 section 3.1)",
        "wit.cnf_private": "`cnf.jwk` carries no private or symmetric key member "
        "(RFC 7800 section 3.2: the public key; RFC 7517/7518 section 6)",
        "wit.cnf_key": "`cnf.jwk` is a well-formed public key of the type its `alg` needs "
        "(RFC 7518 section 6; RFC 8037 section 2)",
        # --- WPT (wpt-02 section 2)
        "wpt.authorization": "the Authorization value is `WPT` 1*SP token68, scheme "
        "case-insensitive (wpt-02 section 2, ABNF; RFC 9110 section 11.1)",
        "wpt.format": "the WPT is one well-formed compact JWT (wpt-02 section 2)",
        "wpt.crit": "no `crit` header parameter (RFC 7515 section 4.1.11)",
        "wpt.alg": "`alg` string-equals the WIT's `cnf.jwk.alg` (wpt-02 section 2)",
        "wpt.signature": "the signature verifies with the WIT's `cnf.jwk` (wpt-02 section 2)",
        "wpt.typ": "`typ` conveys the media type wpt+jwt (wpt-02 section 2)",
        "wpt.aud": "`aud` matches the configured target URI exactly; per RFC 7519 section "
        "4.1.3 an array containing it is accepted (wpt-02 section 2)",
        "wpt.exp": "`exp` is present, numeric, and now < exp (wpt-02 section 2)",
        "wpt.exp_lifetime": "exp - now <= max_lifetime: 'WPTs with an expiration time "
        "unreasonably far in the future SHOULD be rejected' (wpt-02 section 2)",
        "wpt.exp_after_wit": "the WPT's `exp` is not after the WIT's `exp` (project rule; "
        "wpt-02 section 3.2 'Workload Identity Key Management': the key MUST NOT be "
        "used once the WIT is expired)",
        "wpt.nbf": "`nbf`, when present, is numeric and not after now (RFC 7519 section 4.1.5)",
        "wpt.jti": "`jti` is a string of at least 16 characters (wpt-02 section 2: negligible "
        "collision probability, e.g. 128 random bits)",
        "wpt.wth": "`wth` = base64url(SHA-256(ASCII bytes of the WIT)) (wpt-02 section 2)",
        "wpt.tth": "`tth` present and matching iff a Txn-Token is sent (wpt-02 section 2)",
        "wpt.oth": "`oth` keys are exactly the lower-cased names of the other tokens' header "
        "fields, each value the hash of the trimmed field value; absent when there are none "
        "(wpt-02 section 2)",
        # --- HTTP Message Signatures (http-signature-07 section 3; RFC 9421)
        "sig.missing": "Signature-Input and Signature are present, and the selected label "
        "has a Signature member (RFC 9421 section 4.1, 4.2)",
        "sig.parse": "Signature-Input is an RFC 8941 Dictionary of Inner Lists and Signature "
        "a Dictionary of Byte Sequences (RFC 9421 section 4.1, 4.2)",
        "sig.tag": 'one signature carries tag="wimse-workload-to-workload" '
        "(http-signature-07 section 3)",
        "sig.multiple": "no more than one signature carries that tag: MUST reject "
        "(http-signature-07 section 3)",
        "sig.created": "`created` is an Integer, not after now (http-signature-07 section 3; "
        "RFC 9421 section 2.3, 3.2.1)",
        "sig.expires": "`expires` is an Integer and now < expires (http-signature-07 section "
        "3; RFC 9421 section 2.3, 3.2.1)",
        "sig.lifetime": "0 <= expires - created <= max_lifetime: 'expiration MUST be short' "
        "(http-signature-07 section 3)",
        "sig.nonce": "`nonce` is a String of at least min_nonce_chars characters "
        "(http-signature-07 section 3: mandatory; random, collisions negligible)",
        "sig.wimse_aud": "`wimse-aud` is a String equal to the configured audience "
        "(http-signature-07 section 3, 'The wimse-aud Signature Parameter')",
        "sig.keyid": "`keyid` MUST NOT be used (http-signature-07 section 3)",
        "sig.alg": "`alg` MUST NOT be used (http-signature-07 section 3)",
        "sig.sign_response": "`wimse-sign-response`, when present, is a Boolean "
        "(http-signature-07 section 3, 'The wimse-sign-response Signature Parameter'; "
        "RFC 8941 section 3.3.6)",
        "sig.components": "covered: @method, @path, @query, and content-type, content-digest, "
        "authorization, txn-token, workload-identity-token when present; each component "
        "supported, present, not repeated (http-signature-07 section 3; RFC 9421 section 2.5)",
        "sig.wit_header": "the Workload-Identity-Token header carries the WIT whose key "
        "verifies (workload-creds-02 section 3.1.1; http-signature-07 section 3)",
        "sig.content_digest": "a body requires Content-Digest, and a sha-256/sha-512 digest "
        "in it matches the received content (http-signature-07 section 3; RFC 9530 section 2)",
        "sig.base": "every signature-base line is ASCII without CR/LF (RFC 9421 section 2.5)",
        "sig.signature": "the signature verifies with the WIT's `cnf.jwk` and its `alg` "
        "(http-signature-07 section 3; RFC 9421 section 3.2, 3.3.7)",
    }
)


class CheckFailed(Exception):
    """A WIMSE proof failed a rule; ``rule`` names it (a key of :data:`RULES`)."""

    def __init__(self, rule: str, detail: str = "") -> None:
        if rule not in RULES:  # pragma: no cover - guards this module's own consistency
            raise ValueError(f"unknown rule {rule!r}")
        super().__init__(f"{rule}: {detail}" if detail else rule)
        self.rule = rule
        self.detail = detail


# --------------------------------------------------------------------------------------
# Encodings and hashes


_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*")
_EMPTY_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})


def _b64url_decode(text: str) -> bytes:
    """base64url without padding (RFC 7515 section 2); raises ValueError otherwise."""
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url without padding")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def token_hash(value: str) -> str:
    """base64url-no-padding(SHA-256(ASCII bytes of ``value``)).

    The hash of ``wth``, ``tth`` and ``oth`` values (wpt-02 section 2: "the base64url
    encoding (as defined in Section 2 of RFC 7515) of the SHA-256 hash of the bytes of the
    ASCII representation of" the token). A non-ASCII value has no ASCII representation:
    ``UnicodeEncodeError`` (a ``ValueError``).
    """
    return _b64url_encode(hashlib.sha256(value.encode("ascii")).digest())


def _strip_ows(value: str) -> str:
    """Trim leading/trailing SP and HTAB (RFC 9110 section 5.5; RFC 9421 section 2.1)."""
    return value.strip(" \t")


def _numeric_date(value: object) -> float | None:
    """A JWT NumericDate (RFC 7519 section 2): a JSON number, never a boolean."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate member {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-JSON constant {name}")


def _json_object(data: bytes) -> dict[str, Any]:
    """Strict JSON object: UTF-8, unique member names, no NaN/Infinity (RFC 8259)."""
    parsed = json.loads(
        data.decode("utf-8"),
        object_pairs_hook=_reject_duplicates,
        parse_constant=_reject_constant,
    )
    if not isinstance(parsed, dict):
        raise ValueError("not a JSON object")
    return parsed


# --------------------------------------------------------------------------------------
# Keys and signatures (RFC 7518 section 3 and 6, RFC 8037, RFC 9864)

_PublicKey = Ed25519PublicKey | Ed448PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_HASHES: Final[Mapping[str, type[hashes.HashAlgorithm]]] = MappingProxyType(
    {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
)
#: alg -> (curve name, coordinate/scalar size in bytes), RFC 7518 section 3.4 and 6.2.1.
_ECDSA: Final[Mapping[str, tuple[str, int]]] = MappingProxyType(
    {"ES256": ("P-256", 32), "ES384": ("P-384", 48), "ES512": ("P-521", 66)}
)
_CURVES: Final[Mapping[str, ec.EllipticCurve]] = MappingProxyType(
    {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
)
#: alg -> acceptable OKP curves (RFC 8037 section 3.1; RFC 9864 section 2).
_EDDSA: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "EdDSA": frozenset({"Ed25519", "Ed448"}),
        "Ed25519": frozenset({"Ed25519"}),
        "Ed448": frozenset({"Ed448"}),
    }
)
_RSA: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})

#: The asymmetric JWS signature algorithms this checker verifies. `none`, HS* and every
#: encryption algorithm are absent on purpose (workload-creds-02 section 3.1).
SUPPORTED_ALGS: Final = frozenset(_ECDSA) | frozenset(_EDDSA) | _RSA

#: JWK members that carry private or symmetric key material (RFC 7518 section 6.2.2,
#: 6.3.2, 6.4; RFC 8037 section 2).
_PRIVATE_JWK_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def _jwk_member(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"JWK member {name!r} missing")
    return _b64url_decode(value)


def _public_key(jwk: Mapping[str, Any], alg: str) -> _PublicKey:
    """The public key of ``jwk`` for ``alg``; ValueError when the key does not fit."""
    kty = jwk.get("kty")
    if alg in _EDDSA:
        crv = jwk.get("crv")
        if kty != "OKP" or crv not in _EDDSA[alg]:
            raise ValueError(f"{alg} needs an OKP key on {sorted(_EDDSA[alg])}")
        x = _jwk_member(jwk, "x")
        if crv == "Ed25519":
            if len(x) != 32:
                raise ValueError("Ed25519 x is not 32 bytes")
            return Ed25519PublicKey.from_public_bytes(x)
        if len(x) != 57:
            raise ValueError("Ed448 x is not 57 bytes")
        return Ed448PublicKey.from_public_bytes(x)
    if alg in _ECDSA:
        curve_name, size = _ECDSA[alg]
        if kty != "EC" or jwk.get("crv") != curve_name:
            raise ValueError(f"{alg} needs an EC key on {curve_name}")
        x, y = _jwk_member(jwk, "x"), _jwk_member(jwk, "y")
        if len(x) != size or len(y) != size:  # full-length coordinates, RFC 7518 6.2.1.2
            raise ValueError("EC coordinates are not full length")
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), _CURVES[curve_name]
        )
        return numbers.public_key()  # raises ValueError when the point is not on the curve
    if alg in _RSA:
        if kty != "RSA":
            raise ValueError(f"{alg} needs an RSA key")
        n = int.from_bytes(_jwk_member(jwk, "n"), "big")
        e = int.from_bytes(_jwk_member(jwk, "e"), "big")
        if n.bit_length() < 2048:  # RFC 7518 section 3.3 and 3.5
            raise ValueError("RSA key shorter than 2048 bits")
        return rsa.RSAPublicNumbers(e, n).public_key()
    raise ValueError(f"unsupported algorithm {alg!r}")


def _signature_valid(alg: str, key: _PublicKey, message: bytes, signature: bytes) -> bool:
    """JWS signature verification (RFC 7518 section 3; RFC 8037 section 3.1).

    Also the RFC 9421 section 3.3.7 rule: with a JWS algorithm, an HTTP message signature
    is the raw JWS signature value over the signature base (Ed25519: 64 bytes; ECDSA: the
    fixed-length big-endian R || S of RFC 7518 section 3.4, not DER).
    """
    try:
        if isinstance(key, Ed25519PublicKey | Ed448PublicKey):
            key.verify(signature, message)
            return True
        if isinstance(key, ec.EllipticCurvePublicKey):
            size = _ECDSA[alg][1]
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            digest = _HASHES[alg[2:]]()
            key.verify(encode_dss_signature(r, s), message, ec.ECDSA(digest))
            return True
        digest = _HASHES[alg[2:]]()
        if len(signature) != (key.key_size + 7) // 8:
            return False
        if alg.startswith("PS"):
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            key.verify(signature, message, pss, digest)
        else:
            key.verify(signature, message, padding.PKCS1v15(), digest)
    except (InvalidSignature, ValueError):
        return False
    return True


# --------------------------------------------------------------------------------------
# Compact JWS


@dataclass(frozen=True)
class _Jws:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _parse_jws(token: object, prefix: str) -> _Jws:
    """One compact-serialized JWS with a JSON claims set (RFC 7515 section 7.1)."""
    fmt = f"{prefix}.format"
    if not isinstance(token, str) or not token.isascii():
        raise CheckFailed(fmt, "not an ASCII string")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise CheckFailed(fmt, "not three non-empty dot-separated parts")
    try:
        header = _json_object(_b64url_decode(parts[0]))
        claims = _json_object(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (ValueError, binascii.Error) as exc:  # UnicodeDecodeError is a ValueError
        raise CheckFailed(fmt, str(exc)) from None
    if "crit" in header:
        raise CheckFailed(f"{prefix}.crit", "no JWS extension is understood")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    return _Jws(header, claims, signing_input, signature)


def _typ_is(typ: object, media_type: str) -> bool:
    """RFC 7515 section 4.1.9: `application/` may be omitted; media types compare
    case-insensitively (RFC 2045)."""
    if not isinstance(typ, str):
        return False
    lowered = typ.lower()
    return lowered in (media_type, f"application/{media_type}")


def _read_cnf_jwk(wit_claims: Mapping[str, Any]) -> tuple[Mapping[str, Any], str, _PublicKey]:
    """The WIT's confirmation key, its `alg` and the public key (workload-creds-02 3.1)."""
    cnf = wit_claims.get("cnf")
    jwk = cnf.get("jwk") if isinstance(cnf, dict) else None
    if not isinstance(jwk, dict):
        raise CheckFailed("wit.cnf", "cnf.jwk missing")
    alg = jwk.get("alg")
    if not isinstance(alg, str):
        raise CheckFailed("wit.cnf_alg", "cnf.jwk.alg missing")
    if alg not in SUPPORTED_ALGS:
        raise CheckFailed("wit.cnf_alg", f"{alg!r} is not an asymmetric signature algorithm")
    leaked = sorted(_PRIVATE_JWK_MEMBERS.intersection(jwk))
    if leaked:
        raise CheckFailed("wit.cnf_private", f"private members {leaked}")
    try:
        key = _public_key(jwk, alg)
    except (ValueError, binascii.Error) as exc:
        raise CheckFailed("wit.cnf_key", str(exc)) from None
    return jwk, alg, key


def _check_nbf(claims: Mapping[str, Any], now: float, rule: str) -> None:
    if "nbf" in claims:
        nbf = _numeric_date(claims["nbf"])
        if nbf is None or now < nbf:
            raise CheckFailed(rule, "not yet valid")


# --------------------------------------------------------------------------------------
# WIT


def check_wit(
    wit: str,
    issuer_jwks: Mapping[str, Any],
    *,
    now: float,
    expected_sub: str | None = None,
) -> dict[str, Any]:
    """Validate a Workload Identity Token against the issuer's JWKS; return its claims.

    Rules, in order (draft-ietf-wimse-workload-creds-02 section 3.1 and the editor's
    copy's "Validating the WIT"):

    * ``wit.format``/``wit.crit``: one compact JWS with JSON header and claims.
    * ``wit.typ``: ``typ`` is ``wit+jwt`` ("explicitly typed ... using the wit+jwt media
      type"); ``application/wit+jwt`` is the same media type (RFC 7515 section 4.1.9).
    * ``wit.alg``: "An identifier for a JWS asymmetric digital signature algorithm ...
      The value none MUST NOT be used"; a JWKS key whose own ``alg`` differs is not used.
    * ``wit.kid``: "kid selects the key within that trust domain"; without ``kid`` every
      JWKS key that fits ``alg`` is tried.
    * ``wit.signature``: the JWS verifies.
    * ``wit.sub``: ``sub`` present (the workload identifier), and equal to
      ``expected_sub`` when given (byte-for-byte).
    * ``wit.exp``: ``exp`` present and ``now < exp`` (RFC 7519 section 4.1.4: "on or
      after" expiry it MUST NOT be accepted). ``wit.nbf`` when ``nbf`` is present.
    * ``wit.cnf``/``wit.cnf_alg``/``wit.cnf_private``/``wit.cnf_key``: "a jwk key MUST be
      present that contains the public key of the workload" and "an alg field MUST be
      present ... The value none MUST NOT be used. Algorithms used in combination with
      symmetric keys MUST NOT be used".
    """
    jws = _parse_jws(wit, "wit")
    if not _typ_is(jws.header.get("typ"), "wit+jwt"):
        raise CheckFailed("wit.typ", f"typ {jws.header.get('typ')!r}")
    alg = jws.header.get("alg")
    if not isinstance(alg, str) or alg not in SUPPORTED_ALGS:
        raise CheckFailed("wit.alg", f"alg {alg!r} is not an asymmetric signature algorithm")

    keys = issuer_jwks.get("keys")
    if not isinstance(keys, list):
        raise CheckFailed("wit.kid", "the issuer JWKS has no `keys` array")
    candidates = [k for k in keys if isinstance(k, dict)]
    if "kid" in jws.header:
        candidates = [k for k in candidates if k.get("kid") == jws.header["kid"]]
        if not candidates:
            raise CheckFailed("wit.kid", f"no issuer key with kid {jws.header['kid']!r}")
    usable: list[_PublicKey] = []
    for jwk in candidates:
        if "alg" in jwk and jwk["alg"] != alg:
            continue
        try:
            usable.append(_public_key(jwk, alg))
        except (ValueError, binascii.Error):
            continue
    if not usable:
        raise CheckFailed("wit.alg", f"no issuer key fits alg {alg!r}")
    if not any(_signature_valid(alg, k, jws.signing_input, jws.signature) for k in usable):
        raise CheckFailed("wit.signature", "the issuer signature does not verify")

    claims = jws.claims
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise CheckFailed("wit.sub", "sub missing")
    if expected_sub is not None and sub != expected_sub:
        raise CheckFailed("wit.sub", f"sub {sub!r} is not {expected_sub!r}")
    exp = _numeric_date(claims.get("exp"))
    if exp is None:
        raise CheckFailed("wit.exp", "exp missing or not a number")
    if not now < exp:
        raise CheckFailed("wit.exp", "expired")
    _check_nbf(claims, now, "wit.nbf")
    _read_cnf_jwk(claims)
    return claims


# --------------------------------------------------------------------------------------
# WPT

_AUTH_RE: Final = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) +([A-Za-z0-9._~+/-]+=*)")


def wpt_from_authorization(value: str) -> str:
    """The WPT of an ``Authorization`` field value ``WPT <token68>``.

    draft-ietf-wimse-wpt-02 section 2: ``credentials = "WPT" 1*SP token68``; "the scheme
    name is case-insensitive ..., while case is significant in the credentials". Rule
    ``wpt.authorization``.
    """
    match = _AUTH_RE.fullmatch(_strip_ows(value))
    if match is None or match.group(1).lower() != "wpt":
        raise CheckFailed("wpt.authorization", "not `WPT <token68>`")
    return match.group(2)


def _unverified_claims(wit: str) -> dict[str, Any]:
    return _parse_jws(wit, "wit").claims


def check_wpt(
    wpt: str,
    *,
    wit: str,
    now: float,
    audience: str,
    txn_token: str | None = None,
    other_headers: Mapping[str, str] = _EMPTY_HEADERS,
    max_lifetime: float = 300,
) -> dict[str, Any]:
    """Validate a Workload Proof Token sent with ``wit``; return the WPT claims.

    The WIT itself is *not* validated here (its issuer signature needs trust anchors):
    wpt-02 section 2 says the recipient "MUST first validate the WIT" -- call
    :func:`check_wit` first. Only the WIT's ``cnf.jwk`` and ``exp`` are read.

    ``txn_token`` is the ``Txn-Token`` header value sent with the request, if any;
    ``other_headers`` maps the header fields of the *other* context tokens the WPT must
    bind through ``oth`` to their values.

    Rules, in the order of the recipient's list in draft-ietf-wimse-wpt-02 section 2:

    * ``wpt.format``/``wpt.crit``: "a single and well-formed JWT".
    * ``wpt.alg``: "The signature algorithm in the alg JOSE header string-equal matches
      the alg attribute of the jwk in the cnf claim of the WIT" (``EdDSA`` and ``Ed25519``
      are different strings).
    * ``wpt.signature``: "valid using the public key from the confirmation claim".
    * ``wpt.typ``: "conveys a media type of wpt+jwt".
    * ``wpt.aud``: "matches the target URI ... ignoring any query and fragment parts";
      compared exactly with ``audience`` (the configured value, never one derived from
      ``Host``: section 3.1.7 "Audience validation"). RFC 7519 section 4.1.3 lets
      ``aud`` be an array; the draft says the audience "SHOULD contain" the target URI, so
      an array of strings containing ``audience`` is accepted.
    * ``wpt.exp``: "present and conveys a time that has not passed" (``now < exp``);
      ``wpt.exp_lifetime``: "unreasonably far in the future SHOULD be rejected" -- more
      than ``max_lifetime`` seconds ahead; ``wpt.exp_after_wit``: not after the WIT's
      ``exp`` (project rule, after section 3.2: the key "MUST NOT be used once the Workload
      Identity Token is expired"). ``wpt.nbf`` when ``nbf`` is present (RFC 7519).
    * ``wpt.wth``: "present and matches the hash of the token value conveyed in the
      Workload-Identity-Token header": base64url(SHA-256(ASCII(WIT))).
    * ``wpt.jti``: "negligible probability that the same value will be assigned to any
      other WPT ... 128 bits of pseudorandom data" -- at least 16 characters here.
    * ``wpt.tth``: "mandatory if the respective tokens are included in the request"; a
      ``tth`` without a Txn-Token binds nothing that was sent and is refused too.
    * ``wpt.oth``: keys "normalized by converting it to all lower case", values the hash of
      the header value "with any leading or trailing spaces removed"; "If the oth claim
      contains entries that are not understood by the recipient, the WPT MUST be
      rejected". Without other tokens there must be no ``oth``.
    """
    wit_claims = _unverified_claims(wit)
    _, cnf_alg, cnf_key = _read_cnf_jwk(wit_claims)

    jws = _parse_jws(wpt, "wpt")
    alg = jws.header.get("alg")
    if not isinstance(alg, str) or alg != cnf_alg:
        raise CheckFailed("wpt.alg", f"alg {alg!r} is not the WIT's cnf.jwk.alg {cnf_alg!r}")
    if not _signature_valid(alg, cnf_key, jws.signing_input, jws.signature):
        raise CheckFailed("wpt.signature", "does not verify with the WIT's cnf.jwk")
    if not _typ_is(jws.header.get("typ"), "wpt+jwt"):
        raise CheckFailed("wpt.typ", f"typ {jws.header.get('typ')!r}")

    claims = jws.claims
    aud = claims.get("aud")
    if isinstance(aud, list):
        if not aud or not all(isinstance(a, str) for a in aud) or audience not in aud:
            raise CheckFailed("wpt.aud", f"aud {aud!r} does not contain {audience!r}")
    elif aud != audience:
        raise CheckFailed("wpt.aud", f"aud {aud!r} is not {audience!r}")

    exp = _numeric_date(claims.get("exp"))
    if exp is None:
        raise CheckFailed("wpt.exp", "exp missing or not a number")
    if not now < exp:
        raise CheckFailed("wpt.exp", "expired")
    if exp - now > max_lifetime:
        raise CheckFailed("wpt.exp_lifetime", f"exp is {exp - now:.0f} s ahead")
    wit_exp = _numeric_date(wit_claims.get("exp"))
    if wit_exp is None:
        raise CheckFailed("wit.exp", "the WIT has no numeric exp")
    if exp > wit_exp:
        raise CheckFailed("wpt.exp_after_wit", "the WPT outlives the WIT")
    _check_nbf(claims, now, "wpt.nbf")

    try:
        expected_wth = token_hash(wit)
    except UnicodeEncodeError:
        raise CheckFailed("wpt.wth", "the WIT is not ASCII") from None
    wth = claims.get("wth")
    if not isinstance(wth, str) or not hmac.compare_digest(wth, expected_wth):
        raise CheckFailed("wpt.wth", "wth does not match the WIT")

    jti = claims.get("jti")
    if not isinstance(jti, str) or len(jti) < 16:
        raise CheckFailed("wpt.jti", "jti missing or shorter than 16 characters")

    if txn_token is None:
        if "tth" in claims:
            raise CheckFailed("wpt.tth", "tth present but no Txn-Token is sent")
    else:
        tth = claims.get("tth")
        try:
            expected_tth = token_hash(txn_token)
        except UnicodeEncodeError:
            raise CheckFailed("wpt.tth", "the Txn-Token is not ASCII") from None
        if not isinstance(tth, str) or not hmac.compare_digest(tth, expected_tth):
            raise CheckFailed("wpt.tth", "tth missing or not the Txn-Token's hash")

    _check_oth(claims, other_headers)
    return claims


def _check_oth(claims: Mapping[str, Any], other_headers: Mapping[str, str]) -> None:
    expected: dict[str, str] = {}
    for name, value in other_headers.items():
        key = name.lower()
        if key in expected:
            raise CheckFailed("wpt.oth", f"header {key!r} given twice")
        try:
            expected[key] = token_hash(_strip_ows(value))
        except UnicodeEncodeError:
            raise CheckFailed("wpt.oth", f"header {key!r} is not ASCII") from None
    if not expected:
        if "oth" in claims:
            raise CheckFailed("wpt.oth", "oth present but no other token is sent")
        return
    oth = claims.get("oth")
    if not isinstance(oth, dict):
        raise CheckFailed("wpt.oth", "oth missing or not an object")
    if set(oth) != set(expected):
        raise CheckFailed("wpt.oth", f"oth keys {sorted(oth)} are not {sorted(expected)}")
    for key, digest in expected.items():
        value = oth[key]
        if not isinstance(value, str) or not hmac.compare_digest(value, digest):
            raise CheckFailed("wpt.oth", f"oth[{key!r}] does not match")


# --------------------------------------------------------------------------------------
# RFC 8941 Structured Field Values: the subset RFC 9421 and RFC 9530 need


@dataclass(frozen=True)
class Token:
    """An RFC 8941 Token (section 3.3.4), kept distinct from a String."""

    value: str


BareItem = bool | int | Decimal | str | bytes | Token
Params = dict[str, BareItem]


@dataclass(frozen=True)
class SfItem:
    """An RFC 8941 Item: a bare item with parameters (section 3.3)."""

    value: BareItem
    params: Params = field(default_factory=dict)


@dataclass(frozen=True)
class SfInnerList:
    """An RFC 8941 Inner List with parameters (section 3.1.1)."""

    items: tuple[SfItem, ...]
    params: Params = field(default_factory=dict)


_KEY_FIRST: Final = frozenset("abcdefghijklmnopqrstuvwxyz*")
_KEY_CHARS: Final = _KEY_FIRST | frozenset("0123456789_-.")
_ALPHA: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_DIGITS: Final = frozenset("0123456789")
_TCHAR: Final = _ALPHA | _DIGITS | frozenset("!#$%&'*+-.^_`|~")
_B64_CHARS: Final = _ALPHA | _DIGITS | frozenset("+/=")


class _SfParser:
    """RFC 8941 section 4.2 parsing; raises ValueError on any deviation."""

    def __init__(self, text: str) -> None:
        if not text.isascii():
            raise ValueError("structured field is not ASCII")
        self.text = text.strip(" ")  # section 4.2 steps 2 and 5: leading/trailing SP
        self.pos = 0

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _take(self) -> str:
        char = self._peek()
        if not char:
            raise ValueError("unexpected end of field")
        self.pos += 1
        return char

    def _skip(self, chars: str) -> None:
        while self._peek() and self._peek() in chars:
            self.pos += 1

    def dictionary(self) -> dict[str, SfItem | SfInnerList]:
        """Section 4.2.2; a repeated key overwrites the earlier member."""
        out: dict[str, SfItem | SfInnerList] = {}
        while self.pos < len(self.text):
            key = self._key()
            if self._peek() == "=":
                self.pos += 1
                out[key] = self._item_or_inner_list()
            else:
                out[key] = SfItem(True, self._params())
            self._skip(" \t")
            if self.pos >= len(self.text):
                return out
            if self._take() != ",":
                raise ValueError("expected ',' between dictionary members")
            self._skip(" \t")
            if self.pos >= len(self.text):
                raise ValueError("trailing ',' in dictionary")
        return out

    def _item_or_inner_list(self) -> SfItem | SfInnerList:
        if self._peek() == "(":
            return self._inner_list()
        return SfItem(self._bare_item(), self._params())

    def _inner_list(self) -> SfInnerList:
        """Section 4.2.1.2."""
        self._take()  # "("
        items: list[SfItem] = []
        while True:
            self._skip(" ")
            if self._peek() == ")":
                self.pos += 1
                return SfInnerList(tuple(items), self._params())
            items.append(SfItem(self._bare_item(), self._params()))
            if self._peek() not in (" ", ")"):
                raise ValueError("inner list items must be separated by SP")

    def _params(self) -> Params:
        """Section 4.2.3.2; a repeated key overwrites the earlier parameter."""
        params: Params = {}
        while self._peek() == ";":
            self.pos += 1
            self._skip(" ")
            key = self._key()
            value: BareItem = True
            if self._peek() == "=":
                self.pos += 1
                value = self._bare_item()
            params[key] = value
        return params

    def _key(self) -> str:
        """Section 4.2.3.3."""
        if self._peek() not in _KEY_FIRST or not self._peek():
            raise ValueError("a key starts with lcalpha or '*'")
        start = self.pos
        while self._peek() and self._peek() in _KEY_CHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def _bare_item(self) -> BareItem:
        """Section 4.2.3.1."""
        char = self._peek()
        if char == "-" or (char and char in _DIGITS):
            return self._number()
        if char == '"':
            return self._string()
        if char == ":":
            return self._bytes()
        if char == "?":
            return self._boolean()
        if char and (char in _ALPHA or char == "*"):
            return self._token()
        raise ValueError(f"unexpected {char!r} where an item belongs")

    def _number(self) -> int | Decimal:
        """Section 4.2.4: at most 15 integer digits; decimals 12.3 digits."""
        start = self.pos
        if self._peek() == "-":
            self.pos += 1
        if not (self._peek() and self._peek() in _DIGITS):
            raise ValueError("a number needs a digit")
        while self._peek() and self._peek() in "0123456789.":
            self.pos += 1
        text = self.text[start : self.pos]
        digits = text.lstrip("-")
        if "." not in text:
            if len(digits) > 15:
                raise ValueError("integer too long")
            return int(text)
        whole, _, frac = digits.partition(".")
        if "." in frac or len(whole) > 12 or not 1 <= len(frac) <= 3:
            raise ValueError("malformed decimal")
        return Decimal(text)

    def _string(self) -> str:
        """Section 4.2.5: printable ASCII, escapes only for DQUOTE and backslash."""
        self._take()  # DQUOTE
        out: list[str] = []
        while True:
            char = self._take()
            if char == "\\":
                escaped = self._take()
                if escaped not in ('"', "\\"):
                    raise ValueError("bad escape in string")
                out.append(escaped)
            elif char == '"':
                return "".join(out)
            elif not " " <= char <= "~":
                raise ValueError("non-printable character in string")
            else:
                out.append(char)

    def _token(self) -> Token:
        """Section 4.2.6."""
        start = self.pos
        self.pos += 1
        while self._peek() and (self._peek() in _TCHAR or self._peek() in ":/"):
            self.pos += 1
        return Token(self.text[start : self.pos])

    def _bytes(self) -> bytes:
        """Section 4.2.7 (padding required here; RFC 9421 signatures carry it)."""
        self._take()  # ":"
        start = self.pos
        while self._peek() and self._peek() in _B64_CHARS:
            self.pos += 1
        encoded = self.text[start : self.pos]
        if self._take() != ":":
            raise ValueError("unterminated byte sequence")
        return base64.b64decode(encoded, validate=True)

    def _boolean(self) -> bool:
        """Section 4.2.8."""
        self._take()  # "?"
        char = self._take()
        if char not in ("0", "1"):
            raise ValueError("a boolean is ?0 or ?1")
        return char == "1"


def parse_sf_dictionary(text: str) -> dict[str, SfItem | SfInnerList]:
    """Parse an RFC 8941 Dictionary field value (section 4.2, 4.2.2)."""
    return _SfParser(text).dictionary()


def _serialize_bare(value: BareItem) -> str:
    """RFC 8941 section 4.1.3.1."""
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        if abs(value) > 999_999_999_999_999:
            raise ValueError("integer out of range")
        return str(value)
    if isinstance(value, Decimal):
        rounded = value.quantize(Decimal("0.001"), rounding=ROUND_HALF_EVEN)
        text = f"{rounded:f}".rstrip("0")
        return text + "0" if text.endswith(".") else text
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode("ascii") + ":"
    return value.value


def _serialize_params(params: Params) -> str:
    """RFC 8941 section 4.1.1.2: a true Boolean parameter is the bare key."""
    return "".join(
        f";{key}" if value is True else f";{key}={_serialize_bare(value)}"
        for key, value in params.items()
    )


def _serialize_item(item: SfItem) -> str:
    return _serialize_bare(item.value) + _serialize_params(item.params)


def _serialize_inner_list(inner: SfInnerList) -> str:
    """RFC 8941 section 4.1.1.1."""
    return (
        "("
        + " ".join(_serialize_item(i) for i in inner.items)
        + ")"
        + _serialize_params(inner.params)
    )


# --------------------------------------------------------------------------------------
# Content-Digest (RFC 9530)

_DIGESTS: Final[Mapping[str, str]] = MappingProxyType({"sha-256": "sha256", "sha-512": "sha512"})


def content_digest_matches(field_value: str, content: bytes) -> bool:
    """RFC 9530 section 2: ``Content-Digest`` is a Dictionary of algorithm -> Byte
    Sequence. True when it holds at least one ``sha-256``/``sha-512`` digest (the
    algorithms of section 5 that are not deprecated) and every such digest matches
    ``content``; other algorithms are ignored."""
    try:
        members = parse_sf_dictionary(field_value)
    except (ValueError, binascii.Error):
        return False
    checked = 0
    for algorithm, member in members.items():
        if algorithm not in _DIGESTS:
            continue
        if not isinstance(member, SfItem) or not isinstance(member.value, bytes):
            return False
        actual = hashlib.new(_DIGESTS[algorithm], content).digest()
        if not hmac.compare_digest(member.value, actual):
            return False
        checked += 1
    return checked > 0


# --------------------------------------------------------------------------------------
# HTTP Message Signatures (RFC 9421) with the WIMSE profile (http-signature-07)

#: Derived components every WIMSE request signature covers (http-signature-07 section 3).
REQUIRED_DERIVED: Final = ("@method", "@path", "@query")
#: Request header fields covered "when they exist" (http-signature-07 section 3).
REQUIRED_IF_PRESENT: Final = (
    "content-type",
    "content-digest",
    "authorization",
    "txn-token",
    "workload-identity-token",
)


def _derived_value(
    name: str, *, method: str, path: str, query: str, headers: Mapping[str, str]
) -> str:
    """RFC 9421 section 2.2 derived component values for a request."""
    if name == "@method":  # section 2.2.1: as sent, no case normalisation
        return method
    if name == "@path":  # section 2.2.6: an empty path is "/"
        return path or "/"
    if name == "@query":  # section 2.2.7: "?" + query, "?" when there is none
        return "?" + query
    if name == "@request-target":  # section 2.2.5, origin-form
        return (path or "/") + ("?" + query if query else "")
    if name == "@authority":  # section 2.2.3: lowercased host
        if "host" not in headers:
            raise CheckFailed("sig.components", "@authority covered but no Host")
        return _strip_ows(headers["host"]).lower()
    raise CheckFailed("sig.components", f"derived component {name!r} is not supported")


def _signature_base(
    inner: SfInnerList,
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
) -> bytes:
    """RFC 9421 section 2.5: one ``"<identifier>": <value>`` line per covered component,
    in the order of the covered list, then ``"@signature-params": <inner list>`` with no
    trailing newline; lines joined with LF; the whole encoded as ASCII."""
    lines: list[str] = []
    seen: set[str] = set()
    for component in inner.items:
        if not isinstance(component.value, str):
            raise CheckFailed("sig.components", "a component identifier is not a String")
        if component.params:
            # ;req, ;sf, ;key, ;bs, ;tr, ;name do not occur in a WIMSE request signature.
            raise CheckFailed("sig.components", "component parameters are not supported")
        identifier = _serialize_item(component)
        if identifier in seen:  # section 2.5 step 1: a repeated component is an error
            raise CheckFailed("sig.components", f"{identifier} covered twice")
        seen.add(identifier)
        name = component.value
        if name.startswith("@"):
            value = _derived_value(name, method=method, path=path, query=query, headers=headers)
        else:
            if name != name.lower():  # section 2.1: field names are lowercased
                raise CheckFailed("sig.components", f"{name!r} is not lower case")
            if name not in headers:  # section 2.5: a covered field must be present
                raise CheckFailed("sig.components", f"covered field {name!r} is absent")
            value = _strip_ows(headers[name])
        line = f"{identifier}: {value}"
        if not line.isascii() or "\n" in line or "\r" in line:
            raise CheckFailed("sig.base", f"{identifier} has a non-ASCII or CR/LF value")
        lines.append(line)
    lines.append(f'"@signature-params": {_serialize_inner_list(inner)}')
    return "\n".join(lines).encode("ascii")


def check_http_signature(
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes | None,
    wit: str,
    now: float,
    audience: str,
    max_lifetime: float = 300,
    min_nonce_chars: int = 16,
) -> dict[str, Any]:
    """Verify the WIMSE HTTP message signature of a request; return its parameters.

    ``path`` is the request path and ``query`` the query *without* its leading ``?``
    (empty when there is none); ``headers`` maps lower-case field names to (combined)
    values; ``body`` is the received content (``None`` or ``b""`` for none). ``wit`` is
    the WIT whose ``cnf.jwk`` verifies: its issuer signature is *not* checked here --
    http-signature-07 section 3 says to validate the WIT first, with :func:`check_wit`.

    Returns the selected signature's parameters (Tokens as plain strings) plus
    ``"label"`` and ``"components"`` (the covered component names, in order).

    Rules (draft-ietf-wimse-http-signature-07 section 3 unless said otherwise):

    * ``sig.missing``/``sig.parse``: ``Signature-Input`` (a Dictionary of Inner Lists)
      and ``Signature`` (a Dictionary of Byte Sequences), RFC 9421 section 4.1, 4.2.
    * ``sig.tag``/``sig.multiple``: "The WIMSE signature is the one whose tag parameter is
      wimse-workload-to-workload ... If more than one signature has that tag value, the
      recipient MUST reject the message ... they MUST NOT choose by label."
    * ``sig.created``/``sig.expires``/``sig.nonce``: "the following signature parameters
      MUST be included: created, expires ..., nonce, tag"; ``created <= now < expires``
      (RFC 9421 section 3.2.1). ``sig.nonce`` also asks for ``min_nonce_chars`` characters:
      "Senders MUST generate each nonce at random with sufficient length that the
      probability of collision is negligible" (a length floor is what a receiver can see).
    * ``sig.lifetime``: "expiration MUST be short, e.g. on the order of minutes":
      ``expires - created <= max_lifetime``.
    * ``sig.wimse_aud``: "For requests only, the following signature parameter MUST also
      be included: wimse-aud"; "It is a String parameter"; the recipient verifies "that
      the audience refers to it, using trusted configuration" -- equal to ``audience``.
    * ``sig.keyid``/``sig.alg``: "The following signature parameters ... MUST NOT be used:
      keyid ... alg".
    * ``sig.sign_response``: ``wimse-sign-response`` "is a Boolean parameter".
    * ``sig.components``: "The following derived components MUST be signed: @method, @path,
      @query" and "the following request headers MUST be signed when they exist:
      Content-Type, Content-Digest, Authorization, Txn-Token, Workload-Identity-Token".
    * ``sig.wit_header``: the WIT travels in ``Workload-Identity-Token`` (workload-creds-02
      section 3.1.1) and must be the ``wit`` whose key is used.
    * ``sig.content_digest``: "if the request ... includes a message body, the sender MUST
      include (and the receiver MUST verify) a Content-Digest header ... the receiver MUST
      compute the Content-Digest value for the message content received and compare it"
      (RFC 9530). A Content-Digest sent without a body is checked against empty content.
    * ``sig.base``/``sig.signature``: the RFC 9421 section 2.5 signature base verifies
      with the WIT's ``cnf.jwk`` under its ``alg`` (RFC 9421 section 3.3.7).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    if len(lowered) != len(headers):
        raise CheckFailed("sig.parse", "a header name is given twice")
    content = body or b""

    if "signature-input" not in lowered or "signature" not in lowered:
        raise CheckFailed("sig.missing", "Signature-Input or Signature missing")
    try:
        inputs = parse_sf_dictionary(lowered["signature-input"])
        signatures = parse_sf_dictionary(lowered["signature"])
    except (ValueError, binascii.Error) as exc:
        raise CheckFailed("sig.parse", str(exc)) from None

    tagged = [
        label
        for label, member in inputs.items()
        if isinstance(member, SfInnerList) and member.params.get("tag") == WIMSE_TAG
    ]
    if not tagged:
        raise CheckFailed("sig.tag", f"no signature has tag={WIMSE_TAG!r}")
    if len(tagged) > 1:
        raise CheckFailed("sig.multiple", f"signatures {tagged} all carry the WIMSE tag")
    label = tagged[0]
    inner = inputs[label]
    assert isinstance(inner, SfInnerList)
    signature_member = signatures.get(label)
    if signature_member is None:
        raise CheckFailed("sig.missing", f"no Signature member {label!r}")
    if not isinstance(signature_member, SfItem) or not isinstance(signature_member.value, bytes):
        raise CheckFailed("sig.parse", f"Signature member {label!r} is not a Byte Sequence")

    params = inner.params
    _check_signature_params(
        params,
        now=now,
        audience=audience,
        max_lifetime=max_lifetime,
        min_nonce_chars=min_nonce_chars,
    )

    covered = [c.value for c in inner.items]
    for name in REQUIRED_DERIVED:
        if name not in covered:
            raise CheckFailed("sig.components", f"{name} is not covered")
    for name in REQUIRED_IF_PRESENT:
        if name in lowered and name not in covered:
            raise CheckFailed("sig.components", f"{name} is present but not covered")

    if lowered.get("workload-identity-token") is None:
        raise CheckFailed("sig.wit_header", "no Workload-Identity-Token header")
    if _strip_ows(lowered["workload-identity-token"]) != wit:
        raise CheckFailed("sig.wit_header", "the header's WIT is not the one given")

    if "content-digest" in lowered:
        if not content_digest_matches(lowered["content-digest"], content):
            raise CheckFailed("sig.content_digest", "Content-Digest does not match the body")
    elif content:
        raise CheckFailed("sig.content_digest", "a body without Content-Digest")

    _, cnf_alg, cnf_key = _read_cnf_jwk(_unverified_claims(wit))
    base = _signature_base(inner, method=method, path=path, query=query, headers=lowered)
    if not _signature_valid(cnf_alg, cnf_key, base, signature_member.value):
        raise CheckFailed("sig.signature", "does not verify with the WIT's cnf.jwk")

    result: dict[str, Any] = {
        key: value.value if isinstance(value, Token) else value for key, value in params.items()
    }
    result["label"] = label
    result["components"] = covered
    return result


def _check_signature_params(
    params: Params,
    *,
    now: float,
    audience: str,
    max_lifetime: float,
    min_nonce_chars: int,
) -> None:
    """The signature-parameter rules of http-signature-07 section 3 (RFC 9421 2.3)."""
    if "keyid" in params:
        raise CheckFailed("sig.keyid", "keyid MUST NOT be used")
    if "alg" in params:
        raise CheckFailed("sig.alg", "alg MUST NOT be used")
    created = params.get("created")
    if isinstance(created, bool) or not isinstance(created, int):
        raise CheckFailed("sig.created", "created missing or not an Integer")
    expires = params.get("expires")
    if isinstance(expires, bool) or not isinstance(expires, int):
        raise CheckFailed("sig.expires", "expires missing or not an Integer")
    if created > now:
        raise CheckFailed("sig.created", "created is in the future")
    if not now < expires:
        raise CheckFailed("sig.expires", "expired")
    if not 0 <= expires - created <= max_lifetime:
        raise CheckFailed("sig.lifetime", f"lifetime {expires - created} s")
    nonce = params.get("nonce")
    if not isinstance(nonce, str) or len(nonce) < min_nonce_chars:
        raise CheckFailed(
            "sig.nonce", f"nonce missing, not a String or shorter than {min_nonce_chars}"
        )
    if "wimse-sign-response" in params and not isinstance(params["wimse-sign-response"], bool):
        raise CheckFailed("sig.sign_response", "wimse-sign-response is not a Boolean")
    wimse_aud = params.get("wimse-aud")
    if not isinstance(wimse_aud, str) or wimse_aud != audience:
        raise CheckFailed("sig.wimse_aud", f"wimse-aud {wimse_aud!r} is not {audience!r}")
