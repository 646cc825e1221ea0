"""The test CA issues certificates that a strict X.509 verifier (cryptography's, with the
Web PKI profile) accepts for the use they were issued for, and for no other."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from authz.devtools.certs import CertificateAuthority, write_pem


def verifier_time() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def test_a_server_certificate_verifies_for_its_name_through_an_intermediate() -> None:
    root = CertificateAuthority.create("root")
    intermediate = root.intermediate("issuing")
    issued = intermediate.issue("gw", dns_names=["gw.example"], ip_addresses=["127.0.0.1"])
    store = verification.Store([root.certificate])
    verifier = (
        verification.PolicyBuilder()
        .store(store)
        .time(verifier_time())
        .build_server_verifier(x509.DNSName("gw.example"))
    )
    chain = verifier.verify(issued.certificate, list(issued.intermediates))
    assert chain[-1] == root.certificate
    assert x509.load_pem_x509_certificates(issued.chain_pem) == [
        issued.certificate,
        intermediate.certificate,
    ]
    wrong_name = (
        verification.PolicyBuilder()
        .store(store)
        .time(verifier_time())
        .build_server_verifier(x509.DNSName("other.example"))
    )
    with pytest.raises(verification.VerificationError):
        wrong_name.verify(issued.certificate, list(issued.intermediates))


def test_an_svid_shaped_client_certificate_carries_its_spiffe_id() -> None:
    root = CertificateAuthority.create("td", trust_domain_uri="spiffe://example.org")
    svid = root.issue("", uris=["spiffe://example.org/envoy"], server=False, client=True)
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([root.certificate]))
        .time(verifier_time())
        .build_client_verifier()
    )
    verified = verifier.verify(svid.certificate, [])
    assert verified.subjects is not None
    assert x509.UniformResourceIdentifier("spiffe://example.org/envoy") in verified.subjects
    usages = svid.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    root_sans = root.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert root_sans.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://example.org"
    ]


def test_validity_is_short_by_default_and_never_outlives_the_issuer() -> None:
    root = CertificateAuthority.create("root")
    issued = root.issue("gw", key_type="rsa")
    lifetime = issued.certificate.not_valid_after_utc - issued.certificate.not_valid_before_utc
    assert lifetime <= datetime.timedelta(days=1, minutes=5)
    assert issued.certificate.not_valid_after_utc <= root.certificate.not_valid_after_utc
    assert b"BEGIN PRIVATE KEY" in issued.key_pem


def test_write_pem_keeps_keys_private(tmp_path: Path) -> None:
    issued = CertificateAuthority.create("root").issue("gw")
    path = write_pem(tmp_path / "tls" / "gw-key.pem", issued.key_pem)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == issued.key_pem
