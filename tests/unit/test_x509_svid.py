"""X.509-SVID verification of forwarded client certificates (`credentials/x509_svid.py`)."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authz.credentials.x509_svid import SvidRules, SvidVerifier
from authz.devtools.certs import CertificateAuthority, IssuedCertificate
from authz.errors import CredentialError
from authz.trust.key_sets import KeySet, TrustStore, build_key_set
from tests.support import MutableClock

TD = "demo.example"
FRONTEND = f"spiffe://{TD}/frontend"
ROOT = CertificateAuthority.create("demo root", trust_domain_uri=f"spiffe://{TD}")
INTERMEDIATE = ROOT.intermediate("demo intermediate", trust_domain_uri=f"spiffe://{TD}")
OTHER = CertificateAuthority.create("someone else's root", trust_domain_uri=f"spiffe://{TD}")


class Holder:
    """A trust domain's key set that a test can swap, as a live refresh would."""

    def __init__(self, authorities: Iterable[x509.Certificate]) -> None:
        self.current = authorities_key_set(authorities)


def authorities_key_set(authorities: Iterable[x509.Certificate]) -> KeySet:
    return build_key_set(TD, ["ES256"], [], x509_authorities=authorities)


def verifier(
    *authorities: x509.Certificate, clock: MutableClock | None = None, holder: Holder | None = None
) -> SvidVerifier:
    holder = holder or Holder(authorities or (ROOT.certificate,))
    store = TrustStore({TD: holder, "empty.example": authorities_key_set(())}, "r1")
    rules = SvidRules(frozenset({TD, "empty.example"}), clock_skew=30, cache_entries=100)
    return SvidVerifier(store, rules, clock or MutableClock(time.time()))


def forwarded(*certificates: x509.Certificate) -> str:
    """What Envoy puts in `source.certificate`: URL-encoded PEM."""
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
    return quote(pem.decode("ascii"), safe="")


def svid(ca: CertificateAuthority = ROOT, uri: str = FRONTEND) -> IssuedCertificate:
    return ca.issue("frontend", uris=[uri], server=True, client=True)


def handmade_leaf(
    *,
    uris: Iterable[str] = (FRONTEND,),
    ca: bool = False,
    digital_signature: bool = True,
    key_cert_sign: bool = False,
) -> x509.Certificate:
    """A leaf with exactly the extensions asked for, signed by ROOT."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ROOT.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ROOT.private_key.public_key()),
            critical=False,
        )
    )
    names = [x509.UniformResourceIdentifier(uri) for uri in uris]
    if names:
        # An SVID without a subject marks its SAN critical (RFC 5280 section 4.2.1.6).
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    return builder.sign(ROOT.private_key, hashes.SHA256())


def refused(check: SvidVerifier, certificate: str, reason: str = "mtls.certificate_invalid") -> str:
    with pytest.raises(CredentialError) as caught:
        check.verify(certificate)
    assert caught.value.reason == reason, caught.value.message
    return caught.value.message


def test_a_valid_svid_from_the_bundle_authority_is_its_uri_san() -> None:
    assert verifier().verify(forwarded(svid().certificate)).uri == FRONTEND


def test_a_subjectless_svid_with_a_critical_san_verifies() -> None:
    assert verifier().verify(forwarded(handmade_leaf())).uri == FRONTEND


def test_a_certificate_from_another_ca_is_refused() -> None:
    assert "does not verify" in refused(verifier(), forwarded(svid(OTHER).certificate))


def test_an_svid_issued_by_an_intermediate_needs_that_intermediate() -> None:
    leaf = svid(INTERMEDIATE)
    # Envoy forwards the leaf alone: the root-only bundle cannot reach it ...
    refused(verifier(), forwarded(leaf.certificate))
    # ... unless the intermediate is in the bundle, or came along with the leaf.
    assert verifier(ROOT.certificate, INTERMEDIATE.certificate).verify(
        forwarded(leaf.certificate)
    ).uri == (FRONTEND)
    assert verifier().verify(forwarded(leaf.certificate, *leaf.intermediates)).uri == FRONTEND


def test_expiry_is_checked_with_the_clock_skew() -> None:
    leaf = svid().certificate
    expires = leaf.not_valid_after_utc.timestamp()
    assert verifier(clock=MutableClock(expires + 29)).verify(forwarded(leaf)).uri == FRONTEND
    message = refused(verifier(clock=MutableClock(expires + 31)), forwarded(leaf))
    assert "expired" in message
    starts = leaf.not_valid_before_utc.timestamp()
    assert "not valid yet" in refused(verifier(clock=MutableClock(starts - 31)), forwarded(leaf))


@pytest.mark.parametrize(
    ("leaf", "message"),
    [
        (lambda: handmade_leaf(ca=True), "is a CA"),
        (lambda: handmade_leaf(digital_signature=False), "digitalSignature"),
        (lambda: handmade_leaf(key_cert_sign=True), "keyCertSign"),
        (lambda: handmade_leaf(uris=(FRONTEND, f"spiffe://{TD}/ops")), "exactly one URI SAN"),
        (lambda: handmade_leaf(uris=()), "subject alternative name"),
        (lambda: handmade_leaf(uris=(f"spiffe://{TD}",)), "URI SAN"),
        (lambda: handmade_leaf(uris=("spiffe://Demo.example/frontend",)), "URI SAN"),
        (lambda: handmade_leaf(uris=("https://demo.example/frontend",)), "URI SAN"),
    ],
    ids=["ca", "no-digital-signature", "key-cert-sign", "two-uris", "no-san", "no-path",
         "not-canonical", "not-a-workload-id"],
)  # fmt: skip
def test_leaf_rules_of_the_x509_svid_specification(leaf: object, message: str) -> None:
    assert callable(leaf)
    assert message in refused(verifier(), forwarded(leaf()))


def test_a_trust_domain_not_accepted_for_mtls_is_refused() -> None:
    certificate = forwarded(svid(uri="spiffe://elsewhere.example/frontend").certificate)
    refused(verifier(), certificate, "mtls.trust_domain_unknown")


def test_a_trust_domain_without_x509_authorities_verifies_no_certificate() -> None:
    certificate = forwarded(svid(uri="spiffe://empty.example/frontend").certificate)
    assert "no X.509 authorities" in refused(verifier(), certificate)


@pytest.mark.parametrize("text", ["garbage", quote("-----BEGIN CERTIFICATE-----\nAAAA\n")])
def test_what_is_not_pem_is_invalid(text: str) -> None:
    assert "not PEM" in refused(verifier(), text)


def test_no_certificate_is_missing() -> None:
    refused(verifier(), "", "mtls.certificate_missing")


def test_a_cached_certificate_is_verified_again_when_the_authorities_change() -> None:
    holder = Holder([ROOT.certificate])
    check = verifier(holder=holder)
    certificate = forwarded(svid().certificate)
    assert check.verify(certificate).uri == FRONTEND
    assert check.verify(certificate).uri == FRONTEND
    holder.current = authorities_key_set([OTHER.certificate])  # the bundle rotated its CA
    refused(check, certificate)
