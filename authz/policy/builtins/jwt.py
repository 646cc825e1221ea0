"""OPA's ``io.jwt`` verification built-ins for regorus, as Python engine extensions.

Provided, with OPA's names, arities and results:

* ``io.jwt.decode(jwt)`` -> ``[header, payload, signature_hex]``; no verification at all.
* ``io.jwt.verify_rs256/384/512``, ``verify_ps256/384/512``, ``verify_es256/384/512`` and
  ``verify_eddsa(jwt, certificate)`` -> bool: the signature only, never the claims.
* ``io.jwt.verify_hs256/384/512(jwt, secret)`` -> bool.
* ``io.jwt.decode_verify(jwt, constraints)`` -> ``[valid, header, payload]``, or
  ``[false, {}, {}]`` when the signature or a constraint fails.

``certificate`` (and the ``cert`` constraint) is a PEM certificate, a PEM public key, a JWK or a
JWKS, as a string. With a JWKS, a key whose ``kid`` equals the token's ``kid`` is the only one
tried; otherwise every key whose ``alg`` is absent or equal to the token's ``alg`` is tried, and
keys with an ``alg`` OPA does not know are skipped.

Behaviour copied from OPA (``topdown/tokens.go``) on purpose:

* Malformed input is an error, never ``false``: a token that is not three dot-separated
  base64url segments, a header or payload that is not a JSON object, a JWE (header ``enc``),
  an unparsable key, a header ``alg``/``kid``/``typ``/``cty`` that is not a string, a ``crit``
  that is not a non-empty list. ``decode_verify`` also errors on an unknown constraint, on
  ``cert`` and ``secret`` both or neither given, and on a non-numeric ``exp`` or ``nbf``.
* ``verify_*`` check the signature with their own algorithm whatever the header's ``alg`` says;
  ``verify_ps*`` accept any PSS salt length, ``verify_es*`` split the signature in halves.
* ``decode_verify`` uses the header's ``alg``: it needs ``alg`` present, no unknown header
  named in ``crit``, the ``alg`` constraint (if any) equal to it and a key of the matching type
  (``secret`` serves only HS*, ``cert`` only public-key algorithms; PSS salt must equal the
  hash length and ES signatures must be exactly twice the curve size). Then: ``iss``, if
  constrained, must equal the claim; ``aud``, when the token has one, must equal the constraint
  or (for a list) contain it, so a token with ``aud`` fails when no ``aud`` constraint is given,
  and a constraint fails on a token without ``aud``; ``exp`` must be after and ``nbf`` not after
  the ``time`` constraint (nanoseconds) or, without it, the current time. Seconds may be
  fractional.
* Nested tokens (``cty: JWT``) are followed to the innermost token, whose header and payload are
  returned; ``decode_verify`` verifies every level with the same constraints. ``decode`` strips
  quotes around the inner token, as OPA does.
* Duplicate JSON member names: the last one wins, like Go's decoder.

Not supported: ``io.jwt.encode_sign`` and ``encode_sign_raw``; JWE and the JWS JSON
serialization (errors); the ``Ed25519``/``Ed448`` and ``ES256K`` algorithm names (EdDSA means
Ed25519); symmetric JWKs (``kty: oct``) inside ``cert`` (skipped: ``cert`` is for public keys, use
``secret``); OPA's cache of verification results; numbers outside the 64-bit range in a header or
payload (an error: regorus' Python bridge cannot carry them). ``none`` is never accepted.

Security: keys come only from the policy's arguments; the token header's ``jwk``, ``jku``,
``x5u`` and ``x5c`` are never read and nothing is fetched. Errors never quote the token.
"""

from __future__ import annotations

import binascii
import functools
import hmac
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError

from authz.policy.builtins.x509 import decode_pem, rego_type_name, string_operand

# Every algorithm OPA knows; a JWKS key naming any other `alg` is skipped.
_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
    | {"HS256", "HS384", "HS512", "EdDSA"}
)
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_KNOWN_HEADERS = frozenset({"alg", "kid", "typ", "cty", "crit"})
_CONSTRAINTS = frozenset({"cert", "secret", "alg", "iss", "aud", "time"})
_NANOSECONDS = 1_000_000_000
_I64_MIN = -(2**63)
_U64_MAX = 2**64 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
_URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

PublicKey = Any  # whatever a certificate or JWK holds; checked where it is used


# -- token structure ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    header: str
    payload: str
    signature: str

    @property
    def signing_input(self) -> bytes:
        return f"{self.header}.{self.payload}".encode()


def _split(jwt: object) -> _Token:
    text = string_operand(jwt, 1)
    if "." not in text:
        raise ValueError("encoded JWT had no period separators")
    parts = text.split(".")
    if len(parts) != 3:
        raise ValueError(f"encoded JWT must have 3 sections, found {len(parts)}")
    return _Token(*parts)


def _b64url_decode(segment: str) -> bytes:
    """OPA's ``base64url.decode``: padding optional, URL alphabet only, CR/LF ignored."""
    data = segment.encode().replace(b"\r", b"").replace(b"\n", b"")
    if not data.endswith(b"="):
        if len(data) % 4 == 1:
            raise ValueError("illegal base64url string")
        data += b"=" * (-len(data) % 4)
    illegal = data.rstrip(b"=").translate(None, _URL_ALPHABET)
    if illegal:
        index = next(i for i, byte in enumerate(data) if byte not in _URL_ALPHABET)
        raise ValueError(f"illegal base64 data at input byte {index}")
    try:
        return binascii.a2b_base64(data.translate(bytes.maketrans(b"-_", b"+/")), strict_mode=True)
    except binascii.Error:
        raise ValueError(f"illegal base64 data at input byte {len(data)}") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"invalid character in numeric literal {name}")


def _engine_value(value: Any) -> Any:
    """A JSON value regorus can take: 64-bit numbers only, no lone surrogates."""
    if isinstance(value, dict):
        return {_engine_value(k): _engine_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_engine_value(item) for item in value]
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)  # what Go's decoder makes of them
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and not _I64_MIN <= value <= _U64_MAX:
        raise ValueError("JSON number outside the engine's 64-bit range")
    if isinstance(value, float) and (
        not math.isfinite(value) or (value.is_integer() and not _I64_MIN <= value <= _U64_MAX)
    ):
        raise ValueError("JSON number outside the engine's 64-bit range")
    return value


def _json_object(data: bytes) -> dict[str, Any]:
    # Go's decoder replaces invalid UTF-8 and keeps the last of duplicate names; so does this.
    try:
        value = json.loads(data.decode("utf-8", "replace"), parse_constant=_reject_constant)
    except ValueError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("decoded JSON type was not an Object")
    result: dict[str, Any] = _engine_value(value)
    return result


def _decode_header(token: _Token) -> dict[str, Any]:
    try:
        raw = _b64url_decode(token.header)
    except ValueError as exc:
        raise ValueError(f"JWT header had invalid encoding: {exc}") from None
    try:
        header = _json_object(raw)
    except ValueError as exc:
        raise ValueError(f"bad JWT header: {exc}") from None
    if "enc" in header:
        raise ValueError("JWT is a JWE object, which is not supported")
    return header


def _decode_payload(token: _Token) -> bytes:
    try:
        return _b64url_decode(token.payload)
    except ValueError as exc:
        raise ValueError(f"JWT payload had invalid encoding: {exc}") from None


@dataclass(frozen=True, slots=True)
class _Header:
    """The JOSE header fields OPA interprets (RFC 7515 section 4.1)."""

    alg: str = ""
    kid: str = ""
    cty: str = ""
    valid: bool = False


def _header_string(header: dict[str, Any], name: str) -> str:
    value = header.get(name, "")
    if not isinstance(value, str):
        raise ValueError(f"{name}: must be a string")
    return value


def _parse_header(header: dict[str, Any]) -> _Header:
    critical: set[str] = set()
    if "crit" in header:
        names = header["crit"]
        if not isinstance(names, list):
            raise ValueError("crit: must be a list")
        for name in names:  # OPA stops at the first non-string member
            if not isinstance(name, str):
                break
            critical.add(name)
        if not critical:
            raise ValueError("crit: must be a nonempty list")  # RFC 7515: MUST NOT be empty
    _header_string(header, "typ")
    alg = _header_string(header, "alg")
    # RFC 7515 4.1.1: alg is required; 4.1.11: a critical parameter we do not know is fatal.
    unknown_critical = critical & (header.keys() - _KNOWN_HEADERS)
    return _Header(
        alg=alg,
        kid=_header_string(header, "kid"),
        cty=_header_string(header, "cty"),
        valid=bool(alg) and not unknown_critical,
    )


def _signature(token: _Token) -> bytes:
    return _b64url_decode(token.signature)


# -- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Key:
    key: PublicKey
    alg: str = ""
    kid: str = ""


_PRIVATE_KEYS = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, Ed25519PrivateKey, Ed448PrivateKey)


def _public(key: Any) -> PublicKey:
    """A JWK may carry a private key; only its public half is ever used."""
    return key.public_key() if isinstance(key, _PRIVATE_KEYS) else key


def _jwk_key(jwk: dict[str, Any]) -> PublicKey | None:
    """One JWK's public key; ``None`` for a symmetric key, which ``cert`` does not take."""
    kty = jwk.get("kty")
    if kty == "oct":
        return None
    if kty == "EC" and jwk.get("crv") not in ("P-256", "P-384", "P-521"):
        raise ValueError("unsupported EC curve")
    parsers: dict[Any, Callable[[Any], Any]] = {
        "RSA": RSAAlgorithm.from_jwk,
        "EC": ECAlgorithm.from_jwk,
        "OKP": OKPAlgorithm.from_jwk,
    }
    if kty not in parsers:
        raise ValueError("unsupported key type")
    try:
        return _public(parsers[kty](jwk))
    except (InvalidKeyError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"invalid {kty} key: {exc}") from None


def _jwk_entry(jwk: object) -> _Key | None:
    """One JWKS member as a verification key; ``None`` for keys OPA would not use."""
    if not isinstance(jwk, dict):
        raise ValueError("a JWK must be an object")
    key = _jwk_key(jwk)
    alg, kid = jwk.get("alg", ""), jwk.get("kid", "")
    if not isinstance(alg, str) or not isinstance(kid, str):
        raise ValueError("alg and kid must be strings")
    if key is None or (alg and alg not in _ALGORITHMS):
        return None
    return _Key(key, alg, kid)


def _jwk_members(text: str) -> list[Any]:
    """The JWKs of a JWK set, or the one JWK given on its own."""
    document = json.loads(text, parse_constant=_reject_constant)
    if not (isinstance(document, dict) and "keys" in document):
        return [document]
    if not isinstance(document["keys"], list):
        raise ValueError("keys must be an array")
    return document["keys"]


def _jwks_keys(text: str) -> tuple[_Key, ...]:
    try:
        return tuple(key for jwk in _jwk_members(text) if (key := _jwk_entry(jwk)) is not None)
    except ValueError as exc:
        raise ValueError(f"failed to parse a JWK key (set): {exc}") from None


# Policies pass the same certificate or JWKS on every request; parsing it once is enough. The
# cache holds only what policies themselves supply, never anything taken from a token.
@functools.lru_cache(maxsize=64)
def _load_keys(material: str) -> tuple[_Key, ...]:
    """OPA's ``getKeysFromCertOrJWK``: one PEM block (certificate or public key) or JWK(S)."""
    block, rest = decode_pem(material.encode())
    if block is None:
        return _jwks_keys(material)
    if rest:
        raise ValueError("extra data after a PEM certificate block")
    if block.type == "CERTIFICATE":
        try:
            return (_Key(x509.load_der_x509_certificate(block.data).public_key()),)
        except (ValueError, x509.InvalidVersion) as exc:
            raise ValueError(f"failed to parse a PEM certificate: {exc}") from None
    if block.type == "PUBLIC KEY":
        try:
            return (_Key(serialization.load_der_public_key(block.data)),)
        except ValueError as exc:
            raise ValueError(f"failed to parse a PEM public key: {exc}") from None
    raise ValueError("failed to extract a Key from the PEM certificate")


def _candidates(keys: tuple[_Key, ...], header: _Header) -> Iterator[_Key]:
    """The keys OPA tries, in order: the `kid` match alone, else every key fit for `alg`."""
    if header.kid:
        match = next((key for key in keys if key.kid == header.kid), None)
        if match is not None:
            yield match
            return
    yield from (key for key in keys if not key.alg or key.alg == header.alg)


# -- signature checks ----------------------------------------------------------------------

# A check takes (key, signing input, signature) and answers; a wrong key type is a "no".
_Check = Callable[[Any, bytes, bytes], bool]


def _rsa_check(digest: str, *, pss: bool, salt_equals_hash: bool = False) -> _Check:
    def check(key: Any, data: bytes, signature: bytes) -> bool:
        if not isinstance(key, rsa.RSAPublicKey):
            return False
        algorithm = _HASHES[digest]()
        scheme: padding.AsymmetricPadding = padding.PKCS1v15()
        if pss:
            salt = algorithm.digest_size if salt_equals_hash else padding.PSS.AUTO
            scheme = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=salt)
        try:
            key.verify(signature, data, scheme, algorithm)
        except (InvalidSignature, ValueError):
            return False
        return True

    return check


def _ecdsa_check(digest: str, *, exact_length: bool) -> _Check:
    def check(key: Any, data: bytes, signature: bytes) -> bool:
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        # JWS carries r || s; OPA's verify_es* split it in halves, decode_verify insists on
        # exactly twice the curve's byte size.
        half = len(signature) // 2
        if exact_length and len(signature) != 2 * ((key.curve.key_size + 7) // 8):
            return False
        r, s = (int.from_bytes(part, "big") for part in (signature[:half], signature[half:]))
        try:
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(_HASHES[digest]()))
        except (InvalidSignature, ValueError):
            return False
        return True

    return check


def _ed25519_check(key: Any, data: bytes, signature: bytes) -> bool:
    if not isinstance(key, Ed25519PublicKey):
        return False
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def _hmac_check(digest: str) -> _Check:
    def check(key: Any, data: bytes, signature: bytes) -> bool:
        if not isinstance(key, bytes):
            return False
        return hmac.compare_digest(hmac.digest(key, data, f"sha{digest}"), signature)

    return check


def _jws_check(alg: str) -> _Check | None:
    """The check ``decode_verify`` uses for a header ``alg``; ``None`` for unknown ones."""
    if alg not in _ALGORITHMS:
        return None  # "none" included
    if alg == "EdDSA":
        return _ed25519_check
    family, digest = alg[:2], alg[2:]
    if family == "HS":
        return _hmac_check(digest)
    if family == "ES":
        return _ecdsa_check(digest, exact_length=True)
    return _rsa_check(digest, pss=family == "PS", salt_equals_hash=True)


# -- the built-ins ----------------------------------------------------------------------------


def decode(jwt: object) -> list[Any]:
    """``io.jwt.decode(jwt)``: ``[header, payload, signature as hex]``, unverified."""
    token = _split(jwt)
    while True:
        header = _decode_header(token)
        payload = _decode_payload(token)
        cty = header.get("cty")
        if cty is not None and not isinstance(cty, str):
            raise ValueError("cty: must be a string")
        if cty != "JWT":
            break
        # The inner token of a nested JWT is often a quoted JSON string (jwt.io does that).
        token = _split(payload.decode("utf-8", "replace").strip("\"'"))
    claims = _json_object(payload)
    try:
        signature = _signature(token)
    except ValueError as exc:
        raise ValueError(f"JWT signature had invalid encoding: {exc}") from None
    return [header, claims, signature.hex()]


def _verify_builtin(check: _Check) -> Callable[[object, object], bool]:
    def verify(jwt: object, certificate: object) -> bool:
        token = _split(jwt)
        keys = _load_keys(string_operand(certificate, 2))
        signature = _signature(token)
        header = _parse_header(_decode_header(token))
        return any(check(k.key, token.signing_input, signature) for k in _candidates(keys, header))

    return verify


def _verify_hmac_builtin(digest: str) -> Callable[[object, object], bool]:
    check = _hmac_check(digest)

    def verify(jwt: object, secret: object) -> bool:
        token = _split(jwt)
        key = string_operand(secret, 2).encode()
        return check(key, token.signing_input, _signature(token))

    return verify


verify_rs256 = _verify_builtin(_rsa_check("256", pss=False))
verify_rs384 = _verify_builtin(_rsa_check("384", pss=False))
verify_rs512 = _verify_builtin(_rsa_check("512", pss=False))
verify_ps256 = _verify_builtin(_rsa_check("256", pss=True))
verify_ps384 = _verify_builtin(_rsa_check("384", pss=True))
verify_ps512 = _verify_builtin(_rsa_check("512", pss=True))
verify_es256 = _verify_builtin(_ecdsa_check("256", exact_length=False))
verify_es384 = _verify_builtin(_ecdsa_check("384", exact_length=False))
verify_es512 = _verify_builtin(_ecdsa_check("512", exact_length=False))
verify_eddsa = _verify_builtin(_ed25519_check)
verify_hs256 = _verify_hmac_builtin("256")
verify_hs384 = _verify_hmac_builtin("384")
verify_hs512 = _verify_hmac_builtin("512")


@dataclass(frozen=True, slots=True)
class _Constraints:
    keys: tuple[_Key, ...] | None
    secret: str
    alg: str
    iss: str
    aud: str
    seconds: float  # the verification time

    def verify(self, header: _Header, token: _Token, signature: bytes) -> bool:
        check = _jws_check(header.alg)
        if check is None:
            return False
        if self.keys is None:  # `validate` guarantees a secret then
            return check(self.secret.encode(), token.signing_input, signature)
        candidates = _candidates(self.keys, header)
        return any(check(k.key, token.signing_input, signature) for k in candidates)

    def audience_ok(self, claims: dict[str, Any]) -> bool:
        if "aud" not in claims:
            return not self.aud
        aud = claims["aud"]
        if isinstance(aud, str):
            return aud == self.aud
        return isinstance(aud, list) and self.aud in [a for a in aud if isinstance(a, str)]


def _time_constraint(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("token time constraint: must be a number")
    if value < 0:
        raise ValueError("token time constraint: must not be negative")
    return float(value)


def _string_constraint(constraints: dict[str, Any], name: str) -> str:
    value = constraints.get(name, "")
    if not isinstance(value, str):
        raise ValueError(f"{name} constraint: must be a string")
    return value


def _parse_constraints(constraints: object) -> _Constraints:
    if not isinstance(constraints, dict):
        raise TypeError(f"operand 2 must be object but got {rego_type_name(constraints)}")
    for name in constraints:
        if name not in _CONSTRAINTS:
            raise ValueError(f"unknown token validation constraint: {name}")
    keys = None
    if "cert" in constraints:
        cert = constraints["cert"]
        if not isinstance(cert, str):
            raise ValueError("cert constraint: must be a string")
        keys = _load_keys(cert)
    nanoseconds = _time_constraint(constraints["time"] if "time" in constraints else time.time_ns())
    parsed = _Constraints(
        keys=keys,
        secret=_string_constraint(constraints, "secret"),
        alg=_string_constraint(constraints, "alg"),
        iss=_string_constraint(constraints, "iss"),
        aud=_string_constraint(constraints, "aud"),
        # Float division, as OPA does: claims are compared with this value in seconds.
        seconds=nanoseconds / _NANOSECONDS,
    )
    if keys is not None and parsed.secret:
        raise ValueError("duplicate key constraints")
    if keys is None and not parsed.secret:
        raise ValueError("no key constraint")
    return parsed


def _time_claim(claims: dict[str, Any], name: str) -> int | float | None:
    value = claims.get(name)
    if value is None and name not in claims:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} value must be a number")
    return value


def decode_verify(jwt: object, constraints: object) -> list[Any]:
    """``io.jwt.decode_verify(jwt, constraints)``: ``[valid, header, payload]``."""
    unverified: list[Any] = [False, {}, {}]
    rules = _parse_constraints(constraints)
    token = _split(jwt)
    while True:
        header = _decode_header(token)
        fields = _parse_header(header)
        if not fields.valid or (rules.alg and rules.alg != fields.alg):
            return unverified
        if not rules.verify(fields, token, _signature(token)):
            return unverified
        payload = _decode_payload(token)
        if fields.cty.casefold() != "jwt":
            break
        token = _split(payload.decode("utf-8", "replace"))  # nested: verify the inner token too
    claims = _json_object(payload)
    if rules.iss and claims.get("iss") != rules.iss:
        return unverified
    if not rules.audience_ok(claims):
        return unverified
    expires = _time_claim(claims, "exp")
    if expires is not None and not rules.seconds < expires:
        return unverified
    not_before = _time_claim(claims, "nbf")
    if not_before is not None and rules.seconds < not_before:
        return unverified
    return [True, header, claims]
