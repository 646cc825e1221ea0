"""SPIFFE trust bundles: which keys verify WITs (`wit-svid`), which verify other JWTs
(`jwt-svid`), which certificates anchor X.509-SVIDs (`x509-svid`); the pipeline tests build a
real gateway whose trust domain and TTS are given bundle files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from authz.config import parse_config
from authz.credentials.wit import WitRules, WitVerifier
from authz.devtools.certs import CertificateAuthority
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import mint_wit, mint_wpt, sign_jws
from authz.devtools.spiffe import authority_jwk, spiffe_bundle
from authz.devtools.stack import TRUST_DOMAIN as DEMO_DOMAIN
from authz.errors import ConfigError, CredentialError
from authz.reasons import Reason
from authz.trust.key_sets import build_trust_store, key_sources
from authz.trust.spiffe_bundle import JwtKeyUse, parse_spiffe_bundle
from tests.support import (
    NOW,
    ORIGIN,
    GatewayHarness,
    MutableClock,
    expect_allowed,
    expect_denied,
)

TRUST_DOMAIN = "demo.example"
ES256 = frozenset({"ES256"})
WIT_USE = JwtKeyUse.WIT_SVID
JWT_USE = JwtKeyUse.JWT_SVID
ISSUER = generate_private_jwk("ES256", kid="wit-1")
TTS = generate_private_jwk("ES256", kid="tts-1")
WORKLOAD = generate_private_jwk("EdDSA")
CA = CertificateAuthority.create("demo root", trust_domain_uri=f"spiffe://{TRUST_DOMAIN}")


def wit(issuer: dict[str, Any] = ISSUER) -> str:
    return mint_wit(issuer, f"spiffe://{TRUST_DOMAIN}/frontend", WORKLOAD, now=NOW)


def verifier_for(document: dict[str, Any]) -> WitVerifier:
    """A WIT verifier whose trust domain's anchors are `document` (as `trust_domains` takes
    a bundle: its `wit-svid` keys)."""
    bundle = parse_spiffe_bundle(document, ES256, "bundle", WIT_USE)
    store = build_trust_store({TRUST_DOMAIN: (ES256, bundle, "trust_domains.demo.example")})
    rules = WitRules(clock_skew=30, max_lifetime=86400, proof_algorithms=frozenset({"EdDSA"}))
    return WitVerifier(store, rules, MutableClock(NOW), 10)


def wit_reason(document: dict[str, Any], token: str) -> Reason:
    with pytest.raises(CredentialError) as caught:
        verifier_for(document).verify(token)
    return caught.value.reason


def kids(document: dict[str, Any], use: JwtKeyUse) -> list[str | None]:
    return [key.kid for key in parse_spiffe_bundle(document, ES256, "b", use).jwt_keys]


def test_wit_svid_keys_verify_wits_and_x509_svid_certificates_become_authorities() -> None:
    document = spiffe_bundle(
        wit_keys=[ISSUER], authorities=[CA.certificate], sequence=7, refresh_hint=600
    )
    bundle = parse_spiffe_bundle(document, ES256, "bundle", WIT_USE)
    assert [key.kid for key in bundle.jwt_keys] == ["wit-1"]
    assert bundle.x509_authorities == (CA.certificate,)
    assert (bundle.sequence, bundle.refresh_hint) == (7, 600.0)
    assert verifier_for(document).verify(wit()).subject.trust_domain == TRUST_DOMAIN


def test_the_wit_issuers_key_published_only_as_jwt_svid_never_verifies_a_wit() -> None:
    """Without the WIT-SVID use the key is not among the trust domain's WIT anchors at all:
    a WIT naming its kid finds no key."""
    document = spiffe_bundle(jwt_keys=[ISSUER], authorities=[CA.certificate])
    assert wit_reason(document, wit()) is Reason.WIT_KID_UNKNOWN


def test_each_consumer_keeps_only_the_keys_of_its_use() -> None:
    tts = generate_private_jwk("ES256", kid="tts-1")
    document = spiffe_bundle(wit_keys=[ISSUER], jwt_keys=[tts])
    assert kids(document, WIT_USE) == ["wit-1"]
    assert kids(document, JWT_USE) == ["tts-1"]


def test_a_wit_without_kid_is_refused_when_its_anchors_are_wit_svid_keys() -> None:
    """The WIT-SVID profile requires `kid` (the WIMSE draft does not; WITs checked against a
    plain JWKS may omit it, `test_wit.py` pins that). Refused before any signature check:
    this WIT is otherwise valid and signed by the bundle's key."""
    unnamed = sign_jws(
        {
            "sub": f"spiffe://{TRUST_DOMAIN}/frontend",
            "iat": int(NOW),
            "exp": int(NOW) + 3600,
            "cnf": {"jwk": {k: v for k, v in public_jwk(WORKLOAD).items() if k != "kid"}},
        },
        ISSUER,
        {"typ": "wit+jwt"},
    )
    assert wit_reason(spiffe_bundle(wit_keys=[ISSUER]), unnamed) is Reason.WIT_KID_MISSING


def test_a_wit_svid_key_without_kid_refuses_the_bundle() -> None:
    """The profile requires every `wit-svid` entry to carry a `kid`: one without could never
    verify a WIT-SVID, so the bundle is not the one its publisher meant."""
    entry = {k: v for k, v in public_jwk(ISSUER).items() if k != "kid"}
    document = spiffe_bundle(extra_keys=[{**entry, "use": "wit-svid"}])
    with pytest.raises(ConfigError, match="wit-svid key must have a 'kid'"):
        parse_spiffe_bundle(document, ES256, "bundle", WIT_USE)
    assert kids(document, JWT_USE) == []


def test_a_key_of_the_other_use_can_neither_verify_nor_refuse_the_bundle() -> None:
    """An ES384 `jwt-svid` key does not fit the trust domain's ES256 allow-list; it is not
    the WIT anchors' business, so it does not refuse their bundle (the TTS's would)."""
    odd = {**public_jwk(generate_private_jwk("ES384", kid="odd")), "use": "jwt-svid"}
    document = spiffe_bundle(wit_keys=[ISSUER], extra_keys=[odd])
    assert kids(document, WIT_USE) == ["wit-1"]
    with pytest.raises(ConfigError, match="key #1"):
        parse_spiffe_bundle(document, ES256, "bundle", JWT_USE)


def test_an_x509_svid_entry_never_verifies_a_jwt() -> None:
    """The CA's key is in the bundle, but only as an X.509 authority: a JWT it signs (with
    the kid of that entry) is refused as if the key were absent."""
    ca_jwk = {**authority_jwk(CA.certificate), "kid": "ca-key"}
    signer = generate_private_jwk("ES256", kid="ca-key")
    document = spiffe_bundle(wit_keys=[ISSUER], extra_keys=[{**ca_jwk, **public_jwk(signer)}])
    assert wit_reason(document, wit(signer)) is Reason.WIT_KID_UNKNOWN
    assert kids(document, JWT_USE) == []


@pytest.mark.parametrize(
    "use", [None, "sig", "enc", "WIT-SVID", "jwt-svid", "x509"], ids=lambda u: f"use={u}"
)
def test_keys_with_another_or_no_use_are_ignored_and_never_verify_a_wit(use: str | None) -> None:
    other = generate_private_jwk("ES256", kid="other")
    entry = public_jwk(other)
    if use is not None:
        entry["use"] = use
    document = spiffe_bundle(wit_keys=[ISSUER], extra_keys=[entry])
    assert kids(document, WIT_USE) == ["wit-1"]
    assert wit_reason(document, wit(other)) is Reason.WIT_KID_UNKNOWN


def test_unknown_key_types_and_authorities_without_x5c_are_ignored() -> None:
    document = spiffe_bundle(
        wit_keys=[ISSUER],
        extra_keys=[
            {"kty": "oct", "k": "c2VjcmV0", "use": "wit-svid", "kid": "hmac"},
            {"kty": "EC", "use": "x509-svid"},
            {"kty": "EC", "use": "x509-svid", "x5c": []},
        ],
    )
    bundle = parse_spiffe_bundle(document, ES256, "b", WIT_USE)
    assert len(bundle.jwt_keys) == 1
    assert bundle.x509_authorities == ()


def test_only_the_first_x5c_certificate_is_an_authority() -> None:
    other = CertificateAuthority.create("other root")
    entry = authority_jwk(CA.certificate)
    entry["x5c"].append(authority_jwk(other.certificate)["x5c"][0])
    bundle = parse_spiffe_bundle(spiffe_bundle(extra_keys=[entry]), ES256, "b", WIT_USE)
    assert bundle.x509_authorities == (CA.certificate,)


def test_a_bundle_with_only_x509_authorities_verifies_no_jwt() -> None:
    document = spiffe_bundle(authorities=[CA.certificate])
    assert wit_reason(document, wit()) is Reason.WIT_KID_UNKNOWN


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
            {"keys": [{**public_jwk(generate_private_jwk("ES384")), "use": "wit-svid"}]},
            "key #0",
        ),
    ],
)
def test_malformed_bundles_are_refused_with_the_reason(document: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_spiffe_bundle(document, ES256, "bundle", WIT_USE)


def test_a_spiffe_bundle_file_configures_a_trust_domain(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    document = spiffe_bundle(wit_keys=[ISSUER], jwt_keys=[TTS], authorities=[CA.certificate])
    path.write_text(json.dumps(document))
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
    sources = key_sources(config.trust_domains, "trust_domains", bundle_use=WIT_USE)
    domain = build_trust_store(sources).get(TRUST_DOMAIN)
    assert domain is not None
    assert domain.current.x509_authorities == (CA.certificate,)
    assert [key.kid for key in domain.current.keys] == ["wit-1"]
    assert domain.current.bundle_use is WIT_USE


# --- through the pipeline: one bundle file anchoring both the WITs and the TTS -------------


def bundle_gateway(
    harness: GatewayHarness, tmp_path: Path, document: dict[str, Any]
) -> GatewayHarness:
    """The demo gateway with its trust domain's WIT anchors and its TTS both given
    `document` as their `spiffe_bundle_file`."""
    path = tmp_path / "demo.example.bundle.json"
    path.write_text(json.dumps(document))
    bundle = {"algorithms": ["ES256"], "spiffe_bundle_file": str(path)}
    return harness.rebuild(trust_domains={DEMO_DOMAIN: {**bundle, "txn_token_service": bundle}})


def with_txn_token(gateway: GatewayHarness, txn: str) -> dict[str, str]:
    token = gateway.wit()
    proof = mint_wpt(
        gateway.identities.workloads["frontend"],
        token,
        ORIGIN + "/api/hello",
        now=gateway.clock.now,
        txn_token=txn,
    )
    return {"workload-identity-token": token, "authorization": f"WPT {proof}", "txn-token": txn}


def test_the_bundles_wit_svid_key_verifies_wits_and_its_jwt_svid_key_txn_tokens(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    identities = harness.identities
    document = spiffe_bundle(wit_keys=[identities.issuer], jwt_keys=[identities.tts])
    gateway = bundle_gateway(harness, tmp_path, document)
    expect_allowed(gateway.check_path("/api/hello", with_txn_token(gateway, gateway.txn_token())))


def test_a_wit_svid_key_never_verifies_a_txn_token(harness: GatewayHarness, tmp_path: Path) -> None:
    """The TTS's key is in the bundle, but as a `wit-svid` key: the TTS anchors do not have
    it (and it does not verify WITs here either: the WIT names the issuer's kid)."""
    identities = harness.identities
    document = spiffe_bundle(wit_keys=[identities.issuer, identities.tts])
    gateway = bundle_gateway(harness, tmp_path, document)
    headers = with_txn_token(gateway, gateway.txn_token())
    expect_denied(gateway.check_path("/api/hello", headers), Reason.TXN_KID_UNKNOWN, 401)


def test_a_jwt_svid_key_never_verifies_a_wit(harness: GatewayHarness, tmp_path: Path) -> None:
    identities = harness.identities
    document = spiffe_bundle(jwt_keys=[identities.issuer, identities.tts])
    gateway = bundle_gateway(harness, tmp_path, document)
    headers = with_txn_token(gateway, gateway.txn_token())
    expect_denied(gateway.check_path("/api/hello", headers), Reason.WIT_KID_UNKNOWN, 401)
