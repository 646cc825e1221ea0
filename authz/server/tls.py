"""Certificates for the gRPC listeners: read, checked, and reloaded when their files change.

`load_tls_material` reads a listener's certificate chain, key and client CAs (bounded) and
checks them: the PEM parses, the key belongs to the certificate, the certificate has not
expired. At start a failure is a `ConfigError`. Afterwards `ReloadingCredentials` hands gRPC
a fetcher that gRPC calls on each new TLS handshake: it compares the files' fingerprints
(inode, size, mtime — a few `stat` calls) and only when one changed reads and checks them
again. New material is used from that handshake on; connections already open keep theirs.
A file that is missing, half-written or wrong keeps the last good material serving; the
failure is logged once per change and counted.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa

from authz.config import ListenerTlsConfig
from authz.deny_list import file_fingerprint
from authz.errors import ConfigError
from authz.files import read_bounded

log = logging.getLogger("authz.server.tls")

MAX_PEM_BYTES = 1024 * 1024
"""Largest certificate, key or CA file read: a CA bundle fits many times over."""

_BEGIN = b"-----BEGIN "


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """One checked set of PEM bytes, as gRPC takes them."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None
    leaf: x509.Certificate

    @property
    def digest(self) -> str:
        """A short hash of the material, safe to log (it covers the key, never shows it)."""
        content = hashlib.sha256()
        for part in (self.cert_chain, self.private_key, self.client_ca or b""):
            content.update(hashlib.sha256(part).digest())
        return content.hexdigest()[:12]

    def server_configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.private_key, self.cert_chain)], root_certificates=self.client_ca
        )


def _certificates(data: bytes, where: str, path: Path) -> list[x509.Certificate]:
    # Every PEM block must be a complete certificate: a file cut short while being written
    # must fail here rather than serve a partial chain.
    if data.count(_BEGIN) != data.count(b"-----END "):
        raise ConfigError(f"{where} {path}: a PEM block is incomplete")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"{where} {path}: not PEM certificates") from None
    if len(certificates) != data.count(_BEGIN):
        raise ConfigError(f"{where} {path}: holds something other than certificates")
    return certificates


def _check_key(data: bytes, leaf: x509.Certificate, where: str, path: Path) -> None:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(f"{where} {path}: the key is encrypted; give it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{where} {path}: not a PEM private key") from None
    if isinstance(key, dsa.DSAPrivateKey):
        raise ConfigError(f"{where} {path}: DSA keys are not supported")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise ConfigError(f"{where} {path}: the key does not belong to the certificate")


def load_tls_material(
    tls: ListenerTlsConfig, where: str, now: datetime.datetime | None = None
) -> TlsMaterial:
    """Read and check one listener's files; `ConfigError` naming `where` and the file.

    Time is the real time (as the TLS library's), not the gateway's clock.
    """
    chain = read_bounded(tls.cert_file, MAX_PEM_BYTES, f"{where}.cert_file")
    leaf = _certificates(chain, f"{where}.cert_file", tls.cert_file)[0]
    expires = leaf.not_valid_after_utc
    if expires <= (now or datetime.datetime.now(datetime.UTC)):
        raise ConfigError(f"{where}.cert_file {tls.cert_file}: expired at {expires.isoformat()}")
    key = read_bounded(tls.key_file, MAX_PEM_BYTES, f"{where}.key_file")
    _check_key(key, leaf, f"{where}.key_file", tls.key_file)
    client_ca = None
    if tls.client_ca_file is not None:
        client_ca = read_bounded(tls.client_ca_file, MAX_PEM_BYTES, f"{where}.client_ca_file")
        for ca in _certificates(client_ca, f"{where}.client_ca_file", tls.client_ca_file):
            try:
                is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            except x509.ExtensionNotFound:
                is_ca = False
            if not is_ca:
                raise ConfigError(
                    f"{where}.client_ca_file {tls.client_ca_file}: "
                    f"{ca.subject.rfc4514_string()} is not a CA certificate"
                )
    return TlsMaterial(chain, key, client_ca, leaf)


class ReloadingCredentials:
    """gRPC server credentials whose certificate and client CAs follow their files."""

    def __init__(self, tls: ListenerTlsConfig, where: str) -> None:
        self._tls = tls
        self._where = where
        self._paths = [tls.cert_file, tls.key_file]
        if tls.client_ca_file is not None:
            self._paths.append(tls.client_ca_file)
        self._lock = threading.Lock()
        self.material = load_tls_material(tls, where)
        self._seen = self._fingerprint()
        self.reloads = 0
        """Times new material was taken up."""
        self.failures = 0
        """Times changed files were refused (the previous material kept serving)."""

    @property
    def not_after(self) -> float:
        """When the certificate serving now expires (Unix time)."""
        return self.material.leaf.not_valid_after_utc.timestamp()

    @property
    def mutual(self) -> bool:
        return self._tls.client_ca_file is not None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.material.server_configuration(),
            self._fetch,
            require_client_authentication=self.mutual,
        )

    def _fingerprint(self) -> tuple[tuple[int, int, int] | None, ...]:
        return tuple(file_fingerprint(path) for path in self._paths)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC, on its own threads, before each handshake: None keeps the
        current material. Never raises, and never waits for another handshake's reload."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._reload_if_changed()
        except Exception:
            # An exception here would fail the handshake: keep serving what we have.
            log.exception("%s: unexpected error while checking certificate files", self._where)
            return None
        finally:
            self._lock.release()

    def _reload_if_changed(self) -> grpc.ServerCertificateConfiguration | None:
        seen = self._fingerprint()
        if seen == self._seen:
            return None
        self._seen = seen
        try:
            material = load_tls_material(self._tls, self._where)
        except ConfigError as exc:
            self.failures += 1
            log.error(  # noqa: TRY400 - the message says what is wrong; no stack to show
                "certificate files not reloaded, the previous ones keep serving: %s", exc
            )
            return None
        if material.digest == self.material.digest:
            return None
        self.material = material
        self.reloads += 1
        log.warning(
            "%s: new certificate material %s taken up (certificate %s, expires %s)",
            self._where,
            material.digest,
            format(material.leaf.serial_number, "x"),
            material.leaf.not_valid_after_utc.isoformat(),
        )
        return material.server_configuration()
