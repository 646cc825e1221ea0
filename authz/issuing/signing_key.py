"""A private key bound to the one JWS algorithm it signs with.

Keys are loaded once (from a private JWK or a PKCS#8 PEM file) and checked against the
algorithm before any use, so signing per request is only the signature itself. Ed25519 signs
through libsodium (PyNaCl), like its verification; the other algorithms through OpenSSL.
ECDSA signatures are the JWS form (raw r||s), which RFC 9421 uses too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError
from nacl.bindings import crypto_sign

from authz.credentials.algorithms import (
    MIN_RSA_BITS,
    SUPPORTED_ALGORITHMS,
    PublicKeyObject,
    jwk_thumbprint,
)

PrivateKeyObject = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
_SIGNING_KEY_TYPES = (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey)

_EC_HASHES: dict[str, hashes.HashAlgorithm] = {
    "ES256": hashes.SHA256(),
    "ES384": hashes.SHA384(),
    "ES512": hashes.SHA512(),
}
_RSA_HASHES: dict[str, hashes.HashAlgorithm] = {
    "RS256": hashes.SHA256(),
    "RS384": hashes.SHA384(),
    "RS512": hashes.SHA512(),
    "PS256": hashes.SHA256(),
    "PS384": hashes.SHA384(),
    "PS512": hashes.SHA512(),
}


class UnusableKey(ValueError):
    """A key that cannot sign: unreadable, public only, or not fit for its algorithm."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key and the algorithm it signs with; `public_jwk` carries that `alg`."""

    alg: str
    private_key: PrivateKeyObject = field(repr=False)
    public_jwk: Mapping[str, Any]
    thumbprint: str
    """RFC 7638 SHA-256 thumbprint of the public key."""
    _ed25519_secret: bytes | None = field(default=None, repr=False)

    def sign(self, data: bytes) -> bytes:
        """The JWS signature of `data` (raw r||s for ECDSA)."""
        if self._ed25519_secret is not None:
            return crypto_sign(data, self._ed25519_secret)[:64]
        key = self.private_key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(_EC_HASHES[self.alg])))
            size = (key.curve.key_size + 7) // 8
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if isinstance(key, rsa.RSAPrivateKey):
            digest = _RSA_HASHES[self.alg]
            pad: padding.AsymmetricPadding = (
                padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
                if self.alg.startswith("PS")
                else padding.PKCS1v15()
            )
            return key.sign(data, pad, digest)
        raise UnusableKey(f"no signer for {self.alg}")  # unreachable: checked when bound


def signing_key(private_key: PrivateKeyObject, alg: str) -> SigningKey:
    """Bind `private_key` to `alg`; `UnusableKey` when the key does not fit it."""
    algorithm = SUPPORTED_ALGORITHMS.get(alg)
    if algorithm is None:
        raise UnusableKey(f"{alg!r} is not a supported signing algorithm")
    public = private_key.public_key()
    jwk = _public_jwk(public)
    if not algorithm.accepts(jwk["kty"], jwk.get("crv")):
        raise UnusableKey(f"a {_describe(jwk)} key cannot sign {alg}")
    if isinstance(private_key, rsa.RSAPrivateKey) and private_key.key_size < MIN_RSA_BITS:
        raise UnusableKey(f"RSA key is shorter than {MIN_RSA_BITS} bits")
    secret = None
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        # libsodium's secret key form: the 32-byte seed followed by the public key.
        secret = private_key.private_bytes_raw() + private_key.public_key().public_bytes_raw()
    return SigningKey(
        alg=alg,
        private_key=private_key,
        public_jwk={**jwk, "alg": alg},
        thumbprint=jwk_thumbprint(public),
        _ed25519_secret=secret,
    )


def load_private_key(data: bytes) -> tuple[PrivateKeyObject, str | None]:
    """A private key from a JWK (JSON) or an unencrypted PKCS#8/SEC1/PKCS#1 PEM, and the
    `alg` a JWK names (None for PEM). `UnusableKey` names what is wrong, never the key."""
    text = data.strip()
    if text.startswith(b"{"):
        return _from_jwk(text)
    try:
        key = serialization.load_pem_private_key(text, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise UnusableKey(f"not a private JWK or an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, _SIGNING_KEY_TYPES):
        raise UnusableKey("the PEM holds a key type that cannot sign JWS here")
    return key, None


def _from_jwk(text: bytes) -> tuple[PrivateKeyObject, str | None]:
    try:
        jwk = json.loads(text)
    except (ValueError, RecursionError):
        raise UnusableKey("not valid JSON") from None
    if not isinstance(jwk, dict) or "d" not in jwk:
        raise UnusableKey("the JWK holds no private key ('d')")
    alg = jwk.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise UnusableKey("the JWK's 'alg' is not a string")
    kty = jwk.get("kty")
    if kty not in ("EC", "OKP", "RSA"):
        raise UnusableKey(f"key type {kty!r} cannot sign here")
    try:
        key: object
        if kty == "EC":
            key = ECAlgorithm.from_jwk(jwk)
        elif kty == "OKP":
            key = OKPAlgorithm.from_jwk(jwk)
        else:
            key = RSAAlgorithm.from_jwk(jwk)
    except (InvalidKeyError, ValueError, TypeError, KeyError) as exc:
        raise UnusableKey(f"the JWK's parameters are invalid ({type(exc).__name__})") from None
    if not isinstance(key, _SIGNING_KEY_TYPES):
        raise UnusableKey("the JWK holds no private key this gateway can sign with")
    return key, alg


def _public_jwk(public: PublicKeyObject) -> dict[str, Any]:
    if isinstance(public, ec.EllipticCurvePublicKey):
        try:
            return dict(ECAlgorithm.to_jwk(public, as_dict=True))
        except InvalidKeyError:
            raise UnusableKey(f"EC curve {public.curve.name} has no JWS algorithm") from None
    if isinstance(public, rsa.RSAPublicKey):
        return dict(RSAAlgorithm.to_jwk(public, as_dict=True))
    return dict(OKPAlgorithm.to_jwk(public, as_dict=True))


def _describe(jwk: Mapping[str, Any]) -> str:
    return f"{jwk['kty']} {jwk['crv']}" if "crv" in jwk else str(jwk["kty"])


def load_signing_jwk(path: Path) -> tuple[SigningKey, str]:
    """A signing key and its `kid` from a private JWK file that names both `alg` and `kid`
    (a token signer publishes its keys by kid). `UnusableKey` says what is wrong."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnusableKey(f"{path}: {exc.strerror}") from None
    private, alg = load_private_key(data)
    # Only a JWK names an `alg` (a PEM does not, and is not JSON to read a `kid` from).
    kid = json.loads(data).get("kid") if alg is not None else None
    if alg is None or not isinstance(kid, str) or not kid:
        raise UnusableKey(f"{path}: a private JWK with 'alg' and 'kid' is needed")
    return signing_key(private, alg), kid
