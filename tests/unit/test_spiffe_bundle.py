"""SPIFFE trust bundles: which keys verify JWTs, which certificates anchor X.509-SVIDs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from authz.config import parse_config
from authz.credentials.spiffe_bundle import parse_spiffe_bundle
from authz.credentials.trust import build_trust_store, key_sources
from authz.credentials.wit import WitRules, WitVerifier
from authz.devtools.certs import CertificateAuthority
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import mint_wit
from authz.devtools.spiffe import authority_jwk, spiffe_bundle
from authz.errors import ConfigError, CredentialError
from tests.support import NOW, MutableClock

TRUST_DOMAIN = "demo.example"
ES256 = frozenset({"ES256"})
ISSUER = generate_private_jwk("ES256", kid="jwt-1")
WORKLOAD = generate_private_jwk("EdDSA")
CA = CertificateAuthority.create("demo root", trust_domain_uri=f"spiffe://{TRUST_DOMAIN}")


def wit(issuer: dict[str, Any] = ISSUER) -> str:
    return mint_wit(issuer, f"spiffe://{TRUST_DOMAIN}/frontend", WORKLOAD, now=NOW)


def verifier_for(document: dict[str, Any]) -> WitVerifier:
    bundle = parse_spiffe_bundle(document, ES256, "bundle")
    store = build_trust_store({TRUST_DOMAIN: (ES256, bundle, "trust_domains.demo.example")})
    rules = WitRules(clock_skew=30, max_lifetime=86400, proof_algorithms=frozenset({"EdDSA"}))
    return WitVerifier(store, rules, MutableClock(NOW), 10)


def test_jwt_svid_keys_verify_wits_and_x509_svid_certificates_become_authorities() -> None:
    document = spiffe_bundle(
        jwt_keys=[ISSUER], authorities=[CA.certificate], sequence=7, refresh_hint=600
    )
    bundle = parse_spiffe_bundle(document, ES256, "bundle")
    assert [key.kid for key in bundle.jwt_keys] == ["jwt-1"]
    assert bundle.x509_authorities == (CA.certificate,)
    assert (bundle.sequence, bundle.refresh_hint) == (7, 600.0)
    assert verifier_for(document).verify(wit()).subject.trust_domain == TRUST_DOMAIN


def test_an_x509_svid_entry_never_verifies_a_jwt() -> None:
    """The CA's key is in the bundle, but only as an X.509 authority: a JWT it signs (with
    the kid of that entry) is refused as if the key were absent."""
    ca_jwk = {**authority_jwk(CA.certificate), "kid": "ca-key"}
    signer = generate_private_jwk("ES256", kid="ca-key")
    document = spiffe_bundle(jwt_keys=[ISSUER], extra_keys=[{**ca_jwk, **public_jwk(signer)}])
    with pytest.raises(CredentialError) as caught:
        verifier_for(document).verify(wit(signer))
    assert caught.value.reason == "wit.kid_unknown"


@pytest.mark.parametrize("use", [None, "sig", "enc", "JWT-SVID", "x509"], ids=lambda u: f"use={u}")
def test_keys_with_another_or_no_use_are_ignored_and_never_verify(use: str | None) -> None:
    other = generate_private_jwk("ES256", kid="other")
    entry = public_jwk(other)
    if use is not None:
        entry["use"] = use
    document = spiffe_bundle(jwt_keys=[ISSUER], extra_keys=[entry])
    assert [key.kid for key in parse_spiffe_bundle(document, ES256, "b").jwt_keys] == ["jwt-1"]
    with pytest.raises(CredentialError) as caught:
        verifier_for(document).verify(wit(other))
    assert caught.value.reason == "wit.kid_unknown"


def test_unknown_key_types_and_authorities_without_x5c_are_ignored() -> None:
    document = spiffe_bundle(
        jwt_keys=[ISSUER],
        extra_keys=[
            {"kty": "oct", "k": "c2VjcmV0", "use": "jwt-svid", "kid": "hmac"},
            {"kty": "EC", "use": "x509-svid"},
            {"kty": "EC", "use": "x509-svid", "x5c": []},
        ],
    )
    bundle = parse_spiffe_bundle(document, ES256, "b")
    assert len(bundle.jwt_keys) == 1
    assert bundle.x509_authorities == ()


def test_only_the_first_x5c_certificate_is_an_authority() -> None:
    other = CertificateAuthority.create("other root")
    entry = authority_jwk(CA.certificate)
    entry["x5c"].append(authority_jwk(other.certificate)["x5c"][0])
    bundle = parse_spiffe_bundle(spiffe_bundle(extra_keys=[entry]), ES256, "b")
    assert bundle.x509_authorities == (CA.certificate,)


def test_a_bundle_with_only_x509_authorities_verifies_no_jwt() -> None:
    document = spiffe_bundle(authorities=[CA.certificate])
    with pytest.raises(CredentialError) as caught:
        verifier_for(document).verify(wit())
    assert caught.value.reason == "wit.kid_unknown"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "not a SPIFFE bundle"),
        ({"keys": {}}, "not a SPIFFE bundle"),
        ({"keys": [], "spiffe_sequence": "7"}, "spiffe_sequence"),
        ({"keys": [], "spiffe_refresh_hint": -1}, "spiffe_refresh_hint"),
        (
            {"keys": [{"kty": "EC", "use": "x509-svid", "x5c": ["not base64!"]}]},
            "not a DER certificate",
        ),
        (
            {"keys": [{**public_jwk(generate_private_jwk("ES384")), "use": "jwt-svid"}]},
            "key #0",
        ),
    ],
)
def test_malformed_bundles_are_refused_with_the_reason(document: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_spiffe_bundle(document, ES256, "bundle")


def test_a_spiffe_bundle_file_configures_a_trust_domain(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(spiffe_bundle(jwt_keys=[ISSUER], authorities=[CA.certificate])))
    config = parse_config(
        {
            "server": {"listeners": [{"address": "127.0.0.1:9191"}]},
            "trust_domains": {
                TRUST_DOMAIN: {"algorithms": ["ES256"], "spiffe_bundle_file": "bundle.json"}
            },
            "services": {
                "echo": {"id": f"spiffe://{TRUST_DOMAIN}/echo", "origins": ["https://e.example"]}
            },
            "policy": {"directory": "policies"},
        },
        "test",
        tmp_path,
    )
    store = build_trust_store(key_sources(config.trust_domains, "trust_domains"))
    domain = store.get(TRUST_DOMAIN)
    assert domain is not None
    assert domain.current.x509_authorities == (CA.certificate,)
    assert [key.kid for key in domain.current.keys] == ["jwt-1"]
