"""OPA's ``crypto.x509.parse_certificates`` for regorus, plus the PEM and base64 readers it shares.

``crypto.x509.parse_certificates(certs)`` accepts what OPA accepts: a PEM string (one or more
``CERTIFICATE`` blocks), base64 of DER (one certificate or several concatenated), or base64 of
such a PEM string. Input that is none of these raises, as OPA does (an error, never an empty
result); a PEM block of another type raises too. Like OPA, a string starting ``-----BEGIN`` that
holds no well-formed PEM block yields ``[]``.

Each certificate becomes an object named like the JSON OPA builds from Go's ``x509.Certificate``.
Only this subset is provided (other Go fields are absent, not null):

* ``Raw``, ``RawTBSCertificate``, ``Signature``: DER and signature bytes, base64 (Go encodes
  ``[]byte`` as base64).
* ``Version``: 1 or 3 (Go counts from 1).
* ``SerialNumber``: a number; a decimal *string* outside the 64-bit range (see below).
* ``Issuer``, ``Subject``: Go's ``pkix.Name``: ``CommonName`` and ``SerialNumber`` (strings,
  ``""`` when absent); ``Country``, ``Organization``, ``OrganizationalUnit``, ``Locality``,
  ``Province``, ``StreetAddress``, ``PostalCode`` (lists); ``Names`` (every attribute with a
  string value, as ``{"Type": [OID arcs], "Value": s}``, in certificate order); ``ExtraNames``
  (always null).
* ``NotBefore``, ``NotAfter``: RFC 3339 in UTC, ``"2031-06-29T17:41:53Z"`` (Go's time JSON).
* ``KeyUsage``: Go's bit mask (DigitalSignature = 1, ..., CertSign = 32, ..., DecipherOnly =
  256); ``ExtKeyUsage``: Go's enum values (Any = 0, ServerAuth = 1, ClientAuth = 2, ...);
  ``UnknownExtKeyUsage``: the other OIDs as arc lists.
* ``BasicConstraintsValid``, ``IsCA``, ``MaxPathLen`` (-1 when unlimited), ``MaxPathLenZero``.
* ``SubjectKeyId``, ``AuthorityKeyId``: base64.
* ``DNSNames``, ``EmailAddresses``, ``IPAddresses`` (text form), ``URIStrings`` (as encoded;
  SPIFFE IDs are here).
* ``OCSPServer``, ``IssuingCertificateURL``, ``CRLDistributionPoints``: URLs;
  ``PolicyIdentifiers``: OID arc lists.
* ``PublicKeyAlgorithm``: Go's enum (RSA = 1, DSA = 2, ECDSA = 3, Ed25519 = 4, else 0);
  ``SignatureAlgorithm``: Go's enum (SHA256WithRSA = 4, ECDSAWithSHA256 = 10, SHA256WithRSAPSS
  = 13, PureEd25519 = 16, ...).

As in Go, a list or byte field with nothing in it is ``null``, never ``[]``.

Not provided: ``PublicKey``, ``RawSubject``, ``RawIssuer``, ``RawSubjectPublicKeyInfo``,
``Extensions``, ``ExtraExtensions``, ``UnhandledCriticalExtensions``, ``URIs`` (use
``URIStrings``), name constraints (``Permitted*``/``Excluded*``), ``Policies`` and the policy
mapping/constraint fields. ``SignatureAlgorithm`` for RSA-PSS is taken from the hash alone (Go
also checks the salt length). ``crypto.x509.parse_and_verify_certificates`` and the other
``crypto.x509.*`` built-ins are not implemented: Go's chain verification rules are not
cheap to reproduce faithfully.

Deviation: regorus' Python bridge cannot carry integers outside the 64-bit range, and a float
would silently merge distinct serial numbers, so such a ``SerialNumber`` is returned as its
decimal string.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import AuthorityInformationAccessOID

_I64_MIN = -(2**63)
_U64_MAX = 2**64 - 1

# Go's x509.SignatureAlgorithm values, keyed by signature algorithm OID.
_SIGNATURE_ALGORITHMS = {
    "1.2.840.113549.1.1.2": 1,  # MD2WithRSA
    "1.2.840.113549.1.1.4": 2,  # MD5WithRSA
    "1.2.840.113549.1.1.5": 3,  # SHA1WithRSA
    "1.3.14.3.2.29": 3,  # SHA1WithRSA, the OIW form
    "1.2.840.113549.1.1.11": 4,  # SHA256WithRSA
    "1.2.840.113549.1.1.12": 5,  # SHA384WithRSA
    "1.2.840.113549.1.1.13": 6,  # SHA512WithRSA
    "1.2.840.10040.4.3": 7,  # DSAWithSHA1
    "2.16.840.1.101.3.4.3.2": 8,  # DSAWithSHA256
    "1.2.840.10045.4.1": 9,  # ECDSAWithSHA1
    "1.2.840.10045.4.3.2": 10,  # ECDSAWithSHA256
    "1.2.840.10045.4.3.3": 11,  # ECDSAWithSHA384
    "1.2.840.10045.4.3.4": 12,  # ECDSAWithSHA512
    "1.3.101.112": 16,  # PureEd25519
}
_RSA_PSS = "1.2.840.113549.1.1.10"
_PSS_BY_HASH = {"sha256": 13, "sha384": 14, "sha512": 15}

# Go's x509.PublicKeyAlgorithm values, keyed by SubjectPublicKeyInfo algorithm OID.
_PUBLIC_KEY_ALGORITHMS = {
    "1.2.840.113549.1.1.1": 1,  # RSA
    "1.2.840.10040.4.1": 2,  # DSA
    "1.2.840.10045.2.1": 3,  # ECDSA
    "1.3.101.112": 4,  # Ed25519
}

# Go's x509.ExtKeyUsage values, keyed by OID.
_EXT_KEY_USAGES = {
    "2.5.29.37.0": 0,  # Any
    "1.3.6.1.5.5.7.3.1": 1,  # ServerAuth
    "1.3.6.1.5.5.7.3.2": 2,  # ClientAuth
    "1.3.6.1.5.5.7.3.3": 3,  # CodeSigning
    "1.3.6.1.5.5.7.3.4": 4,  # EmailProtection
    "1.3.6.1.5.5.7.3.5": 5,  # IPSECEndSystem
    "1.3.6.1.5.5.7.3.6": 6,  # IPSECTunnel
    "1.3.6.1.5.5.7.3.7": 7,  # IPSECUser
    "1.3.6.1.5.5.7.3.8": 8,  # TimeStamping
    "1.3.6.1.5.5.7.3.9": 9,  # OCSPSigning
    "1.3.6.1.4.1.311.10.3.3": 10,  # MicrosoftServerGatedCrypto
    "2.16.840.1.113730.4.1": 11,  # NetscapeServerGatedCrypto
    "1.3.6.1.4.1.311.2.1.22": 12,  # MicrosoftCommercialCodeSigning
    "1.3.6.1.4.1.311.61.1.1": 13,  # MicrosoftKernelCodeSigning
}

# pkix.Name's list fields, keyed by attribute OID; CommonName and SerialNumber are strings.
_NAME_LISTS = {
    "2.5.4.6": "Country",
    "2.5.4.10": "Organization",
    "2.5.4.11": "OrganizationalUnit",
    "2.5.4.7": "Locality",
    "2.5.4.8": "Province",
    "2.5.4.9": "StreetAddress",
    "2.5.4.17": "PostalCode",
}
_COMMON_NAME = "2.5.4.3"
_NAME_SERIAL_NUMBER = "2.5.4.5"

_REGO_TYPES = {
    str: "string",
    bool: "boolean",
    int: "number",
    float: "number",
    type(None): "null",
    list: "array",
    dict: "object",
    set: "set",
}


def rego_type_name(value: object) -> str:
    """The Rego type name OPA uses in operand errors ("string", "object", ...)."""
    return _REGO_TYPES.get(type(value), type(value).__name__)


def string_operand(value: object, position: int) -> str:
    """``value`` if it is a string, else OPA's operand type error."""
    if not isinstance(value, str):
        raise TypeError(f"operand {position} must be string but got {rego_type_name(value)}")
    return value


def _illegal_base64(data: bytes, alphabet: bytes) -> ValueError:
    # Go reports the offset of the first byte it cannot use; padding faults point past the data.
    for index, byte in enumerate(data):
        if byte not in alphabet:
            return ValueError(f"illegal base64 data at input byte {index}")
    return ValueError(f"illegal base64 data at input byte {len(data)}")


_STD_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def std_b64decode(data: bytes) -> bytes:
    """Go's ``base64.StdEncoding.DecodeString``: padded, CR and LF ignored, nothing else."""
    cleaned = data.replace(b"\r", b"").replace(b"\n", b"")
    if cleaned.rstrip(b"=").translate(None, _STD_ALPHABET):
        raise _illegal_base64(cleaned, _STD_ALPHABET + b"=")
    try:
        return binascii.a2b_base64(cleaned, strict_mode=True)
    except binascii.Error:
        raise _illegal_base64(cleaned, _STD_ALPHABET) from None


@dataclass(frozen=True, slots=True)
class PemBlock:
    """One decoded PEM block (RFC 7468); headers, which nothing here uses, are dropped."""

    type: str
    data: bytes


_PEM_BEGIN = b"-----BEGIN "
_PEM_END = b"-----END "
_PEM_DASHES = b"-----"


def _pem_line(data: bytes) -> tuple[bytes, bytes]:
    """The first line (without CR/LF and trailing blanks) and what follows it."""
    line, newline, rest = data.partition(b"\n")
    if newline and line.endswith(b"\r"):
        line = line[:-1]
    return line.rstrip(b" \t"), rest


def decode_pem(data: bytes) -> tuple[PemBlock | None, bytes]:
    """Go's ``pem.Decode``: the first well-formed block and the bytes after its END line.

    Text before the block is skipped and malformed candidates are passed over, exactly as Go
    does; ``(None, data)`` means no block was found. Keeping Go's rules matters because OPA
    rejects a key or certificate string with anything but one line break after its block.
    """
    rest = data
    while True:
        if rest.startswith(_PEM_BEGIN):
            rest = rest[len(_PEM_BEGIN) :]
        else:
            _, found, rest = rest.partition(b"\n" + _PEM_BEGIN)
            if not found:
                return None, data
        type_line, rest = _pem_line(rest)
        if not type_line.endswith(_PEM_DASHES):
            continue
        block_type = type_line[: -len(_PEM_DASHES)]
        has_headers = False
        while True:  # RFC 1421 headers ("Proc-Type: ...") sit between BEGIN and the data
            if not rest:
                return None, data
            line, following = _pem_line(rest)
            if b":" not in line:
                break
            has_headers = True
            rest = following
        if not has_headers and rest.startswith(_PEM_END):
            end, trailer_start = 0, len(_PEM_END)
        else:
            end = rest.find(b"\n" + _PEM_END)
            trailer_start = end + 1 + len(_PEM_END)
        if end < 0:
            continue
        trailer = rest[trailer_start : trailer_start + len(block_type) + len(_PEM_DASHES)]
        if trailer != block_type + _PEM_DASHES:
            continue
        after_trailer = rest[trailer_start + len(trailer) :]
        if _pem_line(after_trailer)[0]:
            continue
        try:
            body = std_b64decode(rest[:end].replace(b" ", b"").replace(b"\t", b""))
        except ValueError:
            continue
        return PemBlock(block_type.decode("latin-1"), body), _pem_line(after_trailer)[1]


def _der_end(der: bytes, start: int) -> int:
    """The offset just past the DER element starting at ``start``."""
    if start + 2 > len(der) or der[start] & 0x1F == 0x1F:
        raise ValueError("x509: malformed certificate")
    first = der[start + 1]
    if first < 0x80:
        length, header = first, 2
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or start + 2 + count > len(der):
            raise ValueError("x509: malformed certificate")
        length = int.from_bytes(der[start + 2 : start + 2 + count], "big")
        header = 2 + count
    end = start + header + length
    if end > len(der):
        raise ValueError("x509: malformed certificate")
    return end


def _certificates_from_der(der: bytes) -> list[tuple[bytes, x509.Certificate]]:
    """Go's ``x509.ParseCertificates``: concatenated DER certificates, each with its bytes."""
    certificates = []
    start = 0
    while start < len(der):
        end = _der_end(der, start)
        raw = der[start:end]
        try:
            certificates.append((raw, x509.load_der_x509_certificate(raw)))
        except (ValueError, x509.InvalidVersion):
            raise ValueError("x509: malformed certificate") from None
        start = end
    return certificates


def _certificates_from_pem(data: bytes) -> list[tuple[bytes, x509.Certificate]]:
    der = b""
    while data:
        block, data = decode_pem(data)
        if block is None:
            break
        if block.type != "CERTIFICATE":
            raise ValueError(f"PEM block type is '{block.type}', expected CERTIFICATE")
        der += block.data
    return _certificates_from_der(der)


def load_certificates(text: str) -> list[tuple[bytes, x509.Certificate]]:
    """Certificates from PEM, base64 DER or base64 PEM, each with its DER, in input order."""
    if text.startswith("-----BEGIN"):
        return _certificates_from_pem(text.encode())
    decoded = std_b64decode(text.encode())
    if decoded.startswith(b"-----BEGIN"):
        return _certificates_from_pem(decoded)
    return _certificates_from_der(decoded)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _arcs(oid: x509.ObjectIdentifier) -> list[int]:
    return [int(arc) for arc in oid.dotted_string.split(".")]


def _go_time(moment: datetime) -> str:
    # Certificate times are whole seconds in UTC, which Go's RFC 3339 JSON writes with a "Z".
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z"
    )


def _name(name: x509.Name) -> dict[str, Any]:
    """Go's ``pkix.Name`` as JSON, filled the way ``FillFromRDNSequence`` fills it."""
    lists: dict[str, list[str]] = {field: [] for field in _NAME_LISTS.values()}
    common_name = serial_number = ""
    names = []
    for rdn in name.rdns:
        for attribute in rdn:
            value = attribute.value
            if not isinstance(value, str):
                continue  # Go would expose a raw ASN.1 value here; nothing faithful to offer
            oid = attribute.oid.dotted_string
            names.append({"Type": _arcs(attribute.oid), "Value": value})
            if oid == _COMMON_NAME:
                common_name = value  # Go keeps the last one
            elif oid == _NAME_SERIAL_NUMBER:
                serial_number = value
            elif oid in _NAME_LISTS:
                lists[_NAME_LISTS[oid]].append(value)
    result: dict[str, Any] = {field: values or None for field, values in lists.items()}
    result |= {
        "SerialNumber": serial_number,
        "CommonName": common_name,
        "Names": names or None,
        "ExtraNames": None,
    }
    return result


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _key_usage(cert: x509.Certificate) -> int:
    usage = _extension(cert, x509.KeyUsage)
    if usage is None:
        return 0
    bits = [
        usage.digital_signature,
        usage.content_commitment,
        usage.key_encipherment,
        usage.data_encipherment,
        usage.key_agreement,
        usage.key_cert_sign,
        usage.crl_sign,
        # cryptography only exposes these two alongside keyAgreement, where they mean anything.
        usage.key_agreement and usage.encipher_only,
        usage.key_agreement and usage.decipher_only,
    ]
    return sum(1 << index for index, bit in enumerate(bits) if bit)


def _ext_key_usages(cert: x509.Certificate) -> dict[str, Any]:
    known: list[int] = []
    unknown: list[list[int]] = []
    for oid in _extension(cert, x509.ExtendedKeyUsage) or ():
        if oid.dotted_string in _EXT_KEY_USAGES:
            known.append(_EXT_KEY_USAGES[oid.dotted_string])
        else:
            unknown.append(_arcs(oid))
    return {"ExtKeyUsage": known or None, "UnknownExtKeyUsage": unknown or None}


def _basic_constraints(cert: x509.Certificate) -> dict[str, Any]:
    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is None:
        return {
            "BasicConstraintsValid": False,
            "IsCA": False,
            "MaxPathLen": 0,
            "MaxPathLenZero": False,
        }
    path_length = -1 if constraints.path_length is None else constraints.path_length
    return {
        "BasicConstraintsValid": True,
        "IsCA": constraints.ca,
        "MaxPathLen": path_length,
        "MaxPathLenZero": path_length == 0,
    }


def _ip_text(address: Any) -> str:
    # Go prints an IPv4-mapped IPv6 address in dotted form.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _alternative_names(cert: x509.Certificate) -> dict[str, Any]:
    names = _extension(cert, x509.SubjectAlternativeName)
    if names is None:
        names = x509.SubjectAlternativeName([])
    return {
        "DNSNames": names.get_values_for_type(x509.DNSName) or None,
        "EmailAddresses": names.get_values_for_type(x509.RFC822Name) or None,
        "IPAddresses": [_ip_text(ip) for ip in names.get_values_for_type(x509.IPAddress)] or None,
        "URIStrings": names.get_values_for_type(x509.UniformResourceIdentifier) or None,
    }


def _uris(names: Any) -> list[str]:
    return [name.value for name in names or () if isinstance(name, x509.UniformResourceIdentifier)]


def _distribution_urls(cert: x509.Certificate) -> dict[str, Any]:
    access = _extension(cert, x509.AuthorityInformationAccess) or ()
    ocsp = [
        d.access_location for d in access if d.access_method == AuthorityInformationAccessOID.OCSP
    ]
    issuers = [
        d.access_location
        for d in access
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    ]
    crls = [
        url
        for point in _extension(cert, x509.CRLDistributionPoints) or ()
        for url in _uris(point.full_name)
    ]
    return {
        "OCSPServer": _uris(ocsp) or None,
        "IssuingCertificateURL": _uris(issuers) or None,
        "CRLDistributionPoints": crls or None,
    }


def _signature_algorithm(cert: x509.Certificate) -> int:
    oid = cert.signature_algorithm_oid.dotted_string
    if oid != _RSA_PSS:
        return _SIGNATURE_ALGORITHMS.get(oid, 0)
    try:
        digest = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return 0
    return _PSS_BY_HASH.get(digest.name, 0) if isinstance(digest, hashes.HashAlgorithm) else 0


def _serial_number(serial: int) -> int | str:
    return serial if _I64_MIN <= serial <= _U64_MAX else str(serial)


def certificate_object(raw: bytes, cert: x509.Certificate) -> dict[str, Any]:
    """The documented subset of Go's ``x509.Certificate`` JSON for one certificate."""
    key_ids = _extension(cert, x509.AuthorityKeyIdentifier)
    subject_key_id = _extension(cert, x509.SubjectKeyIdentifier)
    policies = _extension(cert, x509.CertificatePolicies) or ()
    return {
        "Raw": _b64(raw),
        "RawTBSCertificate": _b64(cert.tbs_certificate_bytes),
        "Signature": _b64(cert.signature),
        "SignatureAlgorithm": _signature_algorithm(cert),
        "PublicKeyAlgorithm": _PUBLIC_KEY_ALGORITHMS.get(
            cert.public_key_algorithm_oid.dotted_string, 0
        ),
        "Version": cert.version.value + 1,
        "SerialNumber": _serial_number(cert.serial_number),
        "Issuer": _name(cert.issuer),
        "Subject": _name(cert.subject),
        "NotBefore": _go_time(cert.not_valid_before_utc),
        "NotAfter": _go_time(cert.not_valid_after_utc),
        "KeyUsage": _key_usage(cert),
        **_ext_key_usages(cert),
        **_basic_constraints(cert),
        "SubjectKeyId": _b64(None if subject_key_id is None else subject_key_id.digest),
        "AuthorityKeyId": _b64(None if key_ids is None else key_ids.key_identifier),
        **_alternative_names(cert),
        **_distribution_urls(cert),
        "PolicyIdentifiers": [_arcs(p.policy_identifier) for p in policies] or None,
    }


def parse_certificates(certs: object) -> list[dict[str, Any]]:
    """``crypto.x509.parse_certificates(certs)``: see the module docstring."""
    result = []
    for raw, cert in load_certificates(string_operand(certs, 1)):
        try:
            result.append(certificate_object(raw, cert))
        except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
            # cryptography parses extensions lazily; Go refuses such certificates up front.
            raise ValueError(f"x509: malformed certificate: {exc}") from None
    return result
