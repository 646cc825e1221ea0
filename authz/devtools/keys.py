"""Generating signing keys as JWKs, for demo trust anchors and workload keys."""

from __future__ import annotations

import secrets
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from authz.credentials.algorithms import SUPPORTED_ALGORITHMS

_EC_CURVES: dict[str, ec.EllipticCurve] = {
    "ES256": ec.SECP256R1(),
    "ES384": ec.SECP384R1(),
    "ES512": ec.SECP521R1(),
}

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def generate_private_jwk(alg: str, kid: str | None = None) -> dict[str, Any]:
    """A new private JWK for `alg`, carrying `alg` and a `kid`."""
    if alg not in SUPPORTED_ALGORITHMS:
        raise ValueError(f"unsupported algorithm {alg!r}")
    jwk: dict[str, Any]
    if alg in _EC_CURVES:
        jwk = ECAlgorithm.to_jwk(ec.generate_private_key(_EC_CURVES[alg]), as_dict=True)
    elif alg in ("EdDSA", "Ed25519"):
        jwk = OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate(), as_dict=True)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
    jwk["alg"] = alg
    jwk["kid"] = kid or secrets.token_urlsafe(8)
    return jwk


# Private members, and `key_ops` (pyjwt marks private JWKs "sign"; the public half verifies).
_NOT_PUBLIC = ("d", "p", "q", "dp", "dq", "qi", "oth", "key_ops")


def public_jwk(private: dict[str, Any]) -> dict[str, Any]:
    """The public half of a JWK."""
    return {name: value for name, value in private.items() if name not in _NOT_PUBLIC}


def private_key_from_jwk(jwk: dict[str, Any]) -> PrivateKey:
    kty = jwk["kty"]
    key: object
    if kty == "EC":
        key = ECAlgorithm.from_jwk(jwk)
    elif kty == "OKP":
        key = OKPAlgorithm.from_jwk(jwk)
    else:
        key = RSAAlgorithm.from_jwk(jwk)
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    ):
        raise ValueError("the JWK holds no private key")
    return key
