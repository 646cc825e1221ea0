"""JWS algorithms the gateway can verify, and public keys bound to the algorithms they may use.

Only asymmetric algorithms exist here: `none` and HMAC are not representable, so no
configuration or token can select them. Signatures are checked with pyjwt's algorithm
implementations (on `cryptography`); what this module adds is the binding between a key and
the algorithms it may verify, decided once when the key is loaded rather than per request.
`Ed25519` is RFC 9864's fully-specified name for EdDSA over Ed25519, which pyjwt does not
register. Every Ed25519 key, whichever of the two names a token uses, is verified through
libsodium (`authz.credentials.ed25519`: half OpenSSL's CPU time here, and the same verdicts
once degenerate points are refused); Ed448 and the other algorithms through OpenSSL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import (
    Algorithm,
    ECAlgorithm,
    OKPAlgorithm,
    RSAAlgorithm,
    RSAPSSAlgorithm,
)
from jwt.exceptions import InvalidKeyError

from authz.credentials import ed25519
from authz.credentials.jose import b64url_encode

PublicKeyObject = EllipticCurvePublicKey | RSAPublicKey | Ed25519PublicKey | Ed448PublicKey

MIN_RSA_BITS = 2048
# JWK members that only a private (or symmetric) key has.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


@dataclass(frozen=True, slots=True)
class JwsAlgorithm:
    """One asymmetric JWS algorithm: the key type and curves it accepts, and its verifier."""

    name: str
    kty: str
    curves: frozenset[str]
    impl: Algorithm

    def accepts(self, kty: str, crv: str | None) -> bool:
        return kty == self.kty and (not self.curves or crv in self.curves)


def _ec(name: str, hash_alg: Any, curve: str) -> JwsAlgorithm:
    return JwsAlgorithm(name, "EC", frozenset({curve}), ECAlgorithm(hash_alg))


SUPPORTED_ALGORITHMS: Mapping[str, JwsAlgorithm] = {
    alg.name: alg
    for alg in (
        _ec("ES256", ECAlgorithm.SHA256, "P-256"),
        _ec("ES384", ECAlgorithm.SHA384, "P-384"),
        _ec("ES512", ECAlgorithm.SHA512, "P-521"),
        JwsAlgorithm("RS256", "RSA", frozenset(), RSAAlgorithm(RSAAlgorithm.SHA256)),
        JwsAlgorithm("RS384", "RSA", frozenset(), RSAAlgorithm(RSAAlgorithm.SHA384)),
        JwsAlgorithm("RS512", "RSA", frozenset(), RSAAlgorithm(RSAAlgorithm.SHA512)),
        JwsAlgorithm("PS256", "RSA", frozenset(), RSAPSSAlgorithm(RSAPSSAlgorithm.SHA256)),
        JwsAlgorithm("PS384", "RSA", frozenset(), RSAPSSAlgorithm(RSAPSSAlgorithm.SHA384)),
        JwsAlgorithm("PS512", "RSA", frozenset(), RSAPSSAlgorithm(RSAPSSAlgorithm.SHA512)),
        JwsAlgorithm("EdDSA", "OKP", frozenset({"Ed25519", "Ed448"}), OKPAlgorithm()),
        JwsAlgorithm("Ed25519", "OKP", frozenset({"Ed25519"}), OKPAlgorithm()),
    )
}


class InvalidKey(ValueError):
    """A JWK that cannot serve as a verification key; the message says why."""


@dataclass(frozen=True, slots=True, eq=False)
class PublicKey:
    """A parsed public key and the algorithms it may verify (fixed at load time)."""

    kid: str | None
    kty: str
    crv: str | None
    algorithms: frozenset[str]
    key: PublicKeyObject
    jwk: Mapping[str, Any]
    thumbprint: str
    """RFC 7638 JWK SHA-256 thumbprint of the key material (whatever `kid` names it)."""
    ed25519_raw: bytes | None = None
    """The raw public key, for an Ed25519 key (verified through libsodium)."""

    def verify(self, algorithm: JwsAlgorithm, signing_input: bytes, signature: bytes) -> bool:
        """True only if `algorithm` is one this key may use and the signature checks out."""
        if algorithm.name not in self.algorithms:
            return False
        if self.ed25519_raw is not None:
            return ed25519.verify(self.ed25519_raw, signing_input, signature)
        try:
            return bool(algorithm.impl.verify(signing_input, self.key, signature))
        except (ValueError, TypeError):
            # Malformed signature encodings are simply invalid signatures.
            return False


def public_key_from_jwk(jwk: object, allowed_algorithms: Iterable[str]) -> PublicKey:
    """Parse a public JWK, binding it to the subset of `allowed_algorithms` it fits.

    Rejects private or symmetric key material, keys marked for encryption, RSA keys under
    2048 bits, and keys whose own `alg` is not allowed or does not fit their type.
    """
    if not isinstance(jwk, Mapping):
        raise InvalidKey("key is not a JSON object")
    kty = jwk.get("kty")
    if not isinstance(kty, str):
        raise InvalidKey("key has no 'kty'")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise InvalidKey("key contains private or symmetric key material")
    if jwk.get("use", "sig") != "sig":
        raise InvalidKey("key 'use' is not 'sig'")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise InvalidKey("key 'key_ops' does not include 'verify'")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidKey("key 'kid' is not a string")
    crv = jwk.get("crv")
    if crv is not None and not isinstance(crv, str):
        raise InvalidKey("key 'crv' is not a string")

    fitting = {name for name, alg in SUPPORTED_ALGORITHMS.items() if alg.accepts(kty, crv)}
    if not fitting:
        raise InvalidKey(f"key type {kty!r} with curve {crv!r} is not supported")
    jwk_alg = jwk.get("alg")
    if jwk_alg is not None:
        if not isinstance(jwk_alg, str) or jwk_alg not in fitting:
            raise InvalidKey(_misfit(jwk_alg, kty, crv))
        fitting = {jwk_alg}
    usable = frozenset(fitting & set(allowed_algorithms))
    if not usable:
        raise InvalidKey(f"key fits none of the allowed algorithms ({', '.join(sorted(fitting))})")

    key = _load(kty, jwk)
    if isinstance(key, RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise InvalidKey(f"RSA key is shorter than {MIN_RSA_BITS} bits")
    ed25519_raw = key.public_bytes_raw() if isinstance(key, Ed25519PublicKey) else None
    if ed25519_raw is not None and not ed25519.is_valid_public_key(ed25519_raw):
        raise InvalidKey("Ed25519 key is a small-order or non-canonical point")
    return PublicKey(
        kid=kid,
        kty=kty,
        crv=crv,
        algorithms=usable,
        key=key,
        jwk=dict(jwk),
        thumbprint=jwk_thumbprint(key),
        ed25519_raw=ed25519_raw,
    )


def _misfit(alg: object, kty: str, crv: str | None) -> str:
    """Why a key's own `alg` does not fit it, in the terms an operator fixes it in."""
    algorithm = SUPPORTED_ALGORITHMS.get(alg) if isinstance(alg, str) else None
    if algorithm is None:
        return f"key 'alg' {alg!r} is not a supported algorithm"
    if algorithm.kty != kty:
        return f"key 'alg' {alg} is for {algorithm.kty} keys; this key is {kty}"
    curves = " or ".join(sorted(algorithm.curves))
    return f"key 'alg' {alg} needs curve {curves}; this {kty} key is on {crv}"


# RFC 7638 section 3.2: the members each key type's thumbprint hashes.
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}


def jwk_thumbprint(key: PublicKeyObject) -> str:
    """RFC 7638 SHA-256 thumbprint, base64url: one name for one key, whatever `kid` or JSON
    spelling it was published under (the members are re-encoded from the key itself)."""
    if isinstance(key, EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(key, as_dict=True)
    elif isinstance(key, RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(key, as_dict=True)
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())


def _load(kty: str, jwk: Mapping[str, Any]) -> PublicKeyObject:
    document = dict(jwk)
    try:
        if kty == "EC":
            key: object = ECAlgorithm.from_jwk(document)
        elif kty == "RSA":
            key = RSAAlgorithm.from_jwk(document)
        else:
            key = OKPAlgorithm.from_jwk(document)
    except (InvalidKeyError, ValueError, TypeError, KeyError) as exc:
        raise InvalidKey(f"key parameters are invalid: {exc}") from None
    if not isinstance(
        key, EllipticCurvePublicKey | RSAPublicKey | Ed25519PublicKey | Ed448PublicKey
    ):
        raise InvalidKey("key is not a public key")
    return key
