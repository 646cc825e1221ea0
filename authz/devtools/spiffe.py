"""SPIFFE trust bundles for tests and demos: a JWKS of `wit-svid` and `jwt-svid` signing keys
and `x509-svid` CA certificates, in the SPIFFE Trust Domain and Bundle format.

A trust domain given a bundle verifies WITs with its `wit-svid` keys only; put a WIT
issuer's key in `wit_keys`. `jwt_keys` are for the other signers a bundle may anchor (a
Transaction Token Service, say)."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from authz.devtools.keys import public_jwk


def authority_jwk(certificate: x509.Certificate) -> dict[str, Any]:
    """The `x509-svid` entry for a CA certificate: its public key, `use`, and `x5c`."""
    key = certificate.public_key()
    jwk: dict[str, Any]
    if isinstance(key, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(key, as_dict=True)
    elif isinstance(key, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
    else:
        raise ValueError("only EC and RSA CA keys are supported here")
    der = certificate.public_bytes(serialization.Encoding.DER)
    return {**jwk, "use": "x509-svid", "x5c": [base64.b64encode(der).decode("ascii")]}


def signing_key_jwk(private_or_public_jwk: Mapping[str, Any], use: str) -> dict[str, Any]:
    """The bundle entry for a signing key: its public half, marked with `use` (`wit-svid`,
    `jwt-svid`; spelled out here, not taken from the parser, so tests check its spelling)."""
    return {**public_jwk(dict(private_or_public_jwk)), "use": use}


def spiffe_bundle(
    *,
    wit_keys: Iterable[Mapping[str, Any]] = (),
    jwt_keys: Iterable[Mapping[str, Any]] = (),
    authorities: Iterable[x509.Certificate] = (),
    extra_keys: Iterable[Mapping[str, Any]] = (),
    sequence: int | None = None,
    refresh_hint: int | None = None,
) -> dict[str, Any]:
    """A bundle document: `wit_keys` and `jwt_keys` (JWKs, private or public) as `wit-svid`
    and `jwt-svid` entries, `authorities` as `x509-svid` entries, `extra_keys` exactly as
    given."""
    keys = [signing_key_jwk(jwk, "wit-svid") for jwk in wit_keys]
    keys += [signing_key_jwk(jwk, "jwt-svid") for jwk in jwt_keys]
    keys += [authority_jwk(certificate) for certificate in authorities]
    keys += [dict(key) for key in extra_keys]
    document: dict[str, Any] = {"keys": keys}
    if sequence is not None:
        document["spiffe_sequence"] = sequence
    if refresh_hint is not None:
        document["spiffe_refresh_hint"] = refresh_hint
    return document
