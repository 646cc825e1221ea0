"""A small X.509 certificate authority for tests and demos: TLS server and client
certificates, intermediates, and SPIFFE X.509-SVID-shaped certificates.

Every key is new (EC P-256 unless asked otherwise) and every certificate short-lived by
default. Nothing here is fit for a production PKI: it exists so tests can run real TLS
handshakes with certificates they control.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_VALIDITY = datetime.timedelta(days=2)
LEAF_VALIDITY = datetime.timedelta(days=1)
# Issued a little in the past, so a verifier whose clock is slightly behind accepts it.
BACKDATE = datetime.timedelta(minutes=5)


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """An end-entity certificate, its private key, and the intermediates between it and
    the root (nearest first; empty when the root issued it)."""

    certificate: x509.Certificate
    private_key: PrivateKey
    intermediates: tuple[x509.Certificate, ...] = ()

    @property
    def cert_pem(self) -> bytes:
        """The certificate alone."""
        return _cert_pem(self.certificate)

    @property
    def chain_pem(self) -> bytes:
        """The certificate followed by its intermediates: what a TLS peer should send."""
        return b"".join(_cert_pem(c) for c in (self.certificate, *self.intermediates))

    @property
    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM."""
        return _key_pem(self.private_key)


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A root or intermediate CA that issues certificates signed with its key."""

    certificate: x509.Certificate
    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...] = field(default=())
    """What a peer sends after a leaf this CA issued: for an intermediate, its own
    certificate and those above it, the root excluded; empty for a root."""

    @classmethod
    def create(
        cls,
        common_name: str,
        *,
        trust_domain_uri: str | None = None,
        not_after: datetime.datetime | None = None,
    ) -> CertificateAuthority:
        """A new self-signed root. `trust_domain_uri` (`spiffe://example.org`) is put in
        its URI SAN, as SPIFFE signing certificates may carry it."""
        key = _new_key("ec")
        name = _name(common_name)
        now = _now()
        builder = _ca_builder(name, name, key, now - BACKDATE, not_after or now + CA_VALIDITY)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        if trust_domain_uri is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(trust_domain_uri)]),
                critical=False,
            )
        return cls(builder.sign(key, hashes.SHA256()), key)

    @property
    def cert_pem(self) -> bytes:
        """This CA's certificate: for a root, the trust anchor to configure."""
        return _cert_pem(self.certificate)

    def intermediate(
        self, common_name: str, *, trust_domain_uri: str | None = None
    ) -> CertificateAuthority:
        """A CA below this one; what it issues carries the chain up to the root."""
        key = _new_key("ec")
        now = _now()
        subject = _name(common_name)
        builder = _ca_builder(
            subject,
            self.certificate.subject,
            key,
            now - BACKDATE,
            min(now + CA_VALIDITY, self.certificate.not_valid_after_utc),
        )
        builder = builder.add_extension(self._authority_key_id(), critical=False)
        if trust_domain_uri is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(trust_domain_uri)]),
                critical=False,
            )
        certificate = builder.sign(self.private_key, hashes.SHA256())
        return CertificateAuthority(certificate, key, (certificate, *self.chain))

    def issue(
        self,
        common_name: str,
        *,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str] = (),
        uris: Iterable[str] = (),
        server: bool = True,
        client: bool = False,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        key_type: KeyType = "ec",
    ) -> IssuedCertificate:
        """An end-entity certificate for the given names. An empty `common_name` leaves
        the subject empty (as X.509-SVIDs may); `server`/`client` set the extended key
        usages; validity defaults to one day from just before now (never past this CA's
        own expiry)."""
        key = _new_key(key_type)
        now = _now()
        start = not_before or now - BACKDATE
        end = not_after or min(now + LEAF_VALIDITY, self.certificate.not_valid_after_utc)
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        names.extend(x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses)
        names.extend(x509.UniformResourceIdentifier(uri) for uri in uris)
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    # RSA key exchange encrypts to the key; EC keys only sign.
                    key_encipherment=key_type == "rsa",
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(self._authority_key_id(), critical=False)
        )
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if names:
            # RFC 5280 4.2.1.6: with an empty subject, the SANs are the identity: critical.
            builder = builder.add_extension(
                x509.SubjectAlternativeName(names), critical=not common_name
            )
        return IssuedCertificate(builder.sign(self.private_key, hashes.SHA256()), key, self.chain)

    def _authority_key_id(self) -> x509.AuthorityKeyIdentifier:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key())


def _name(common_name: str) -> x509.Name:
    if not common_name:
        return x509.Name([])
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: PrivateKey,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def write_pem(path: Path, *pems: bytes, mode: int = 0o600) -> Path:
    """Write the PEM blocks, in order, to `path` (created with `mode`, default owner-only:
    a key file must never be world-readable, and certificates lose nothing by it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(pems))
    path.chmod(mode)
    return path
