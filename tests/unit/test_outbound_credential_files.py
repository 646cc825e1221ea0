"""What an issuer might write that the outbound side cannot use: each is a
`CredentialProblem` or `UnusableKey` (so 503 `outbound.credentials_unavailable` at serving
time, a one-line error at start), never another exception."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.issuing.signing_key import UnusableKey, load_private_key, load_signing_jwk
from authz.outbound.credentials import CredentialProblem, credentials_from

WORKLOAD = "spiffe://demo.example/frontend"
NOW = 1_800_000_000.0


def segment(document: Any) -> str:
    # json.dumps writes NaN and Infinity, as a careless issuer's JSON library might.
    raw = json.dumps(document).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def wit(key: dict[str, Any], **claims: Any) -> str:
    body = {"sub": WORKLOAD, "exp": NOW + 600, "cnf": {"jwk": public_jwk(key)}, **claims}
    return f"{segment({'alg': 'ES256', 'typ': 'wit+jwt'})}.{segment(body)}.c2ln"


@pytest.mark.parametrize("exp", [float("inf"), float("nan"), 10**400, "soon", True, None])
def test_a_wit_with_an_unusable_exp_is_a_credential_problem(exp: Any) -> None:
    key = generate_private_jwk("ES256")
    with pytest.raises(CredentialProblem):
        credentials_from(wit(key, exp=exp), json.dumps(key).encode(), WORKLOAD, NOW)


def test_a_usable_pair_is_accepted() -> None:
    key = generate_private_jwk("ES256")
    credentials = credentials_from(wit(key), json.dumps(key).encode(), WORKLOAD, NOW)
    assert credentials.expires_at == NOW + 600
    assert credentials.wit not in repr(credentials), "a WIT never shows in a repr"


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "EC", "crv": "P-999", "x": "AA", "y": "AA", "d": "AA"},
        {"kty": "EC", "x": "AA", "y": "AA", "d": "AA"},
        {"kty": "OKP", "crv": "X25519", "x": "AA", "d": "AA"},
        {"kty": "oct", "k": "c2VjcmV0"},
    ],
)
def test_a_malformed_private_jwk_is_an_unusable_key(jwk: dict[str, Any]) -> None:
    with pytest.raises(UnusableKey):
        load_private_key(json.dumps(jwk).encode())


def test_a_deeply_nested_key_file_is_an_unusable_key() -> None:
    with pytest.raises(UnusableKey):
        load_private_key(b"[" * 100_000 + b"]" * 100_000)


def test_a_pem_where_a_jwk_is_needed_is_an_unusable_key(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(UnusableKey):
        load_signing_jwk(path)
