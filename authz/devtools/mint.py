"""A local issuer for WITs and WPTs, for tests, demos and benchmarks.

It signs whatever it is asked to: it is a tool with the authority of whoever holds the
keys, never part of the serving path.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from jwt.algorithms import Algorithm, OKPAlgorithm, get_default_algorithms

from authz.credentials.claims import token_hash
from authz.credentials.jose import b64url_encode
from authz.devtools.keys import private_key_from_jwk, public_jwk

# pyjwt's algorithms, plus RFC 9864's fully-specified "Ed25519" name it does not register.
_SIGNERS = {**get_default_algorithms(), "Ed25519": OKPAlgorithm()}


def encode_jws(
    header: Mapping[str, Any], claims: Mapping[str, Any], sign: Callable[[bytes], bytes]
) -> str:
    """A compact JWS with exactly `header` (nothing added) and `sign`'s signature."""
    signing_input = ".".join(
        b64url_encode(json.dumps(dict(part), separators=(",", ":")).encode())
        for part in (header, claims)
    )
    return f"{signing_input}.{b64url_encode(sign(signing_input.encode('ascii')))}"


def sign_jws(
    claims: Mapping[str, Any], private_jwk: dict[str, Any], header: Mapping[str, Any]
) -> str:
    """Sign `claims` with `private_jwk`, using its `alg` unless `header` names another.

    Header members set to None are left out; nothing else is added or checked, so tests
    can build any header an attacker could.
    """
    alg = str(header.get("alg") or private_jwk["alg"])
    full_header = {"alg": alg, **{k: v for k, v in header.items() if k != "alg" and v is not None}}
    key = private_key_from_jwk(private_jwk)
    signer = signer_for(alg)
    return encode_jws(full_header, claims, lambda data: signer.sign(data, key))


def signer_for(alg: str) -> Algorithm:
    """pyjwt's implementation of the JWS algorithm `alg` (raw r||s for ECDSA)."""
    return _SIGNERS[alg]


def mint_wit(
    issuer_jwk: dict[str, Any],
    subject: str,
    workload_jwk: dict[str, Any],
    *,
    ttl: float = 3600,
    now: float | None = None,
    extra_claims: Mapping[str, Any] | None = None,
    typ: str = "wit+jwt",
) -> str:
    """A WIT for `subject`, confirming the public half of `workload_jwk`."""
    issued = int(time.time() if now is None else now)
    confirmation = public_jwk(workload_jwk)
    confirmation.pop("kid", None)
    claims: dict[str, Any] = {
        "sub": subject,
        "iat": issued,
        "exp": int(issued + ttl),
        "jti": secrets.token_urlsafe(16),
        "cnf": {"jwk": confirmation},
        **(extra_claims or {}),
    }
    return sign_jws(claims, issuer_jwk, {"typ": typ, "kid": issuer_jwk.get("kid")})


def mint_wpt(
    workload_jwk: dict[str, Any],
    wit: str,
    audience: str,
    *,
    ttl: float = 60,
    now: float | None = None,
    txn_token: str | None = None,
    other_tokens: Mapping[str, str] | None = None,
    jti: str | None = None,
    extra_claims: Mapping[str, Any] | None = None,
    header: Mapping[str, Any] | None = None,
) -> str:
    """A WPT binding `wit` (and optionally a Txn-Token and other headers) to one request."""
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "aud": audience,
        "exp": int(issued + ttl),
        "jti": jti or secrets.token_urlsafe(16),
        "wth": token_hash(wit),
    }
    if txn_token is not None:
        claims["tth"] = token_hash(txn_token)
    if other_tokens:
        claims["oth"] = {name: token_hash(value) for name, value in other_tokens.items()}
    claims.update(extra_claims or {})
    return sign_jws(claims, workload_jwk, {"typ": "wpt+jwt", **(header or {})})


def mint_txn_token(
    tts_jwk: dict[str, Any],
    *,
    audience: str | list[str],
    requesting_workload: str,
    subject: str,
    scope: str,
    tctx: Mapping[str, Any] | None = None,
    rctx: Mapping[str, Any] | None = None,
    actor: Mapping[str, Any] | None = None,
    ttl: float = 300,
    now: float | None = None,
    txn: str | None = None,
    extra_claims: Mapping[str, Any] | None = None,
    typ: str = "txntoken+jwt",
) -> str:
    """A Transaction Token (draft -10/-11 claim names) as a trust domain's TTS would issue it.

    `extra_claims` are added last; a None value removes that claim (to forge tokens)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iat": issued,
        "aud": audience,
        "exp": int(issued + ttl),
        "txn": txn or str(uuid.uuid4()),
        "sub": subject,
        "scope": scope,
        "req_wl": requesting_workload,
    }
    for name, value in (("tctx", tctx), ("rctx", rctx), ("act", actor)):
        if value is not None:
            claims[name] = dict(value)
    claims.update(extra_claims or {})
    claims = {name: value for name, value in claims.items() if value is not None}
    return sign_jws(claims, tts_jwk, {"typ": typ, "kid": tts_jwk.get("kid")})


def ear_claims(
    submods: Mapping[str, tuple[str, Mapping[str, int]]],
    *,
    now: float | None = None,
    subject: str | None = None,
    profile: str = "tag:ietf.org,2026:rats/ear#03",
) -> dict[str, Any]:
    """EAR claims (current names) from `{submod: (status, trustworthiness vector)}`."""
    claims: dict[str, Any] = {
        "eat_profile": profile,
        "iat": int(time.time() if now is None else now),
        "ear_verifier_id": {"developer": "https://wimse-authz.invalid", "build": "dev"},
        "submods": {
            name: {"ear_status": status, "ear_trustworthiness_vector": dict(vector)}
            for name, (status, vector) in submods.items()
        },
    }
    if subject is not None:
        claims["sub"] = subject
    return claims


def mint_ear(verifier_jwk: dict[str, Any], claims: Mapping[str, Any]) -> str:
    """An EAR JWT signed as an attestation verifier would sign it."""
    return sign_jws(claims, verifier_jwk, {"typ": "JWT", "kid": verifier_jwk.get("kid")})


def mint_user_token(
    issuer_jwk: dict[str, Any],
    *,
    issuer: str,
    subject: str,
    audience: str | list[str],
    client_id: str = "demo-client",
    scope: str = "",
    roles: list[str] | None = None,
    ttl: float = 600,
    now: float | None = None,
    extra_claims: Mapping[str, Any] | None = None,
    typ: str | None = "at+jwt",
) -> str:
    """An RFC 9068 JWT access token for an end user."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "client_id": client_id,
        "iat": issued,
        "exp": int(issued + ttl),
        "jti": secrets.token_urlsafe(16),
    }
    if scope:
        claims["scope"] = scope
    if roles is not None:
        claims["roles"] = roles
    claims.update(extra_claims or {})
    return sign_jws(claims, issuer_jwk, {"typ": typ, "kid": issuer_jwk.get("kid")})
