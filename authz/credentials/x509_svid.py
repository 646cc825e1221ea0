"""X.509-SVID verification of the client certificate Envoy forwards to ext_authz.

With `include_peer_certificate`, Envoy sends the TLS client's leaf certificate in
`attributes.source.certificate`, URL-encoded PEM (Envoy sends the leaf only, never the
chain). Instead of taking `source.principal` as given, the gateway checks that certificate
itself (X509-SVID specification, sections 4 and 5):

1. one PEM leaf, bounded in size (further certificates, if a proxy adds them, are only
   untrusted intermediates);
2. the leaf is an end entity: basic constraints `cA` false, key usage with
   `digitalSignature` and without `keyCertSign`/`cRLSign`;
3. exactly one URI SAN, a canonical workload identifier (`spiffe://` as the SPIFFE
   specification has it; `wimse://` too, which this project treats as the same kind of
   identifier): its trust domain picks the bundle, and must be one mTLS accepts;
4. now (the gateway's clock, with its skew) within the leaf's validity;
5. the chain verifies, by RFC 5280 path validation, to one of that trust domain's
   `x509-svid` authorities (its SPIFFE bundle, file or URL). With a leaf-only Envoy, an
   SVID issued by an intermediate verifies only if that intermediate is in the bundle.

Path validation is `cryptography.x509.verification`'s client verifier (which accepts the
empty subjects and critical SANs SVIDs have, and checks signatures, validity and CA
constraints up the chain); the SPIFFE leaf rules above are checked here, since the web PKI
profile it implements does not require them. The clock skew is applied by validating "as
of" the gateway's time moved into the leaf's validity window when it is within the skew
of it, so the CA certificates are checked at that same instant.

Verified certificates are cached by their exact text until they expire, and only while
their trust domain serves the authorities that verified them.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509 import verification

from authz.clock import Clock
from authz.credentials.identifiers import InvalidIdentifier, WorkloadId, parse_workload_id
from authz.credentials.verified_cache import VerifiedCache
from authz.errors import CredentialError
from authz.reasons import Reason
from authz.trust.key_sets import KeySet, TrustStore

MAX_CERTIFICATE_BYTES = 64 * 1024
"""Far above a real leaf; Envoy's URL encoding roughly triples a PEM's size."""
MAX_CHAIN_DEPTH = 8


@dataclass(frozen=True, slots=True)
class SvidRules:
    trust_domains: frozenset[str]
    """Trust domains whose SVIDs may authenticate a caller."""
    clock_skew: float
    cache_entries: int


class SvidVerifier:
    """Verifies forwarded client certificates against the trust store's X.509 authorities."""

    def __init__(self, trust_store: TrustStore, rules: SvidRules, clock: Clock) -> None:
        self._trust_store = trust_store
        self._rules = rules
        self._clock = clock
        self._cache: VerifiedCache[str, tuple[WorkloadId, KeySet]] = VerifiedCache(
            rules.cache_entries, clock, 0.0
        )
        # One trust store per trust domain's current authorities, rebuilt when they change.
        self._stores: dict[str, tuple[KeySet, verification.Store]] = {}

    def verify(self, certificate: str) -> WorkloadId:
        """The identity in `certificate` (Envoy's URL-encoded PEM), or `CredentialError`
        (`mtls.*`); `UnavailableError` when its trust domain's live bundle is unavailable."""
        if not certificate:
            raise CredentialError(
                Reason.MTLS_CERTIFICATE_MISSING, "Envoy forwarded no client certificate"
            )
        entry = self._cache.get(certificate)
        if entry is not None:
            identity, key_set = entry
            holder = self._trust_store.get(identity.trust_domain)
            if holder is not None and holder.current is key_set:
                return identity
        leaf, intermediates = _load(certificate)
        identity = _leaf_identity(leaf)
        if identity.trust_domain not in self._rules.trust_domains:
            raise CredentialError(
                Reason.MTLS_TRUST_DOMAIN_UNKNOWN, "the certificate's trust domain is not trusted"
            )
        key_set = self._authorities(identity.trust_domain)
        at = self._verification_time(leaf)
        verifier = (
            verification.PolicyBuilder()
            .store(self._store(identity.trust_domain, key_set))
            .time(at)
            .max_chain_depth(MAX_CHAIN_DEPTH)
            .build_client_verifier()
        )
        try:
            verifier.verify(leaf, intermediates)
        except verification.VerificationError as exc:
            raise _invalid(f"the chain does not verify: {exc}") from None
        self._cache.put(certificate, (identity, key_set), leaf.not_valid_after_utc.timestamp())
        return identity

    def _authorities(self, trust_domain: str) -> KeySet:
        holder = self._trust_store.get(trust_domain)
        key_set = holder.current if holder is not None else None
        if key_set is None or not key_set.x509_authorities:
            raise _invalid(f"trust domain {trust_domain!r} has no X.509 authorities")
        return key_set

    def _store(self, trust_domain: str, key_set: KeySet) -> verification.Store:
        cached = self._stores.get(trust_domain)
        if cached is not None and cached[0] is key_set:
            return cached[1]
        store = verification.Store(list(key_set.x509_authorities))
        self._stores[trust_domain] = (key_set, store)
        return store

    def _verification_time(self, leaf: x509.Certificate) -> datetime.datetime:
        now = self._clock()
        not_before = leaf.not_valid_before_utc.timestamp()
        not_after = leaf.not_valid_after_utc.timestamp()
        skew = self._rules.clock_skew
        if now < not_before - skew:
            raise _invalid("the certificate is not valid yet")
        if now > not_after + skew:
            raise _invalid("the certificate has expired")
        at = min(max(now, not_before), not_after)
        return datetime.datetime.fromtimestamp(at, datetime.UTC)


def _load(certificate: str) -> tuple[x509.Certificate, list[x509.Certificate]]:
    if len(certificate) > MAX_CERTIFICATE_BYTES:
        raise _invalid("the forwarded certificate is too large")
    try:
        certificates = x509.load_pem_x509_certificates(unquote(certificate).encode("ascii"))
    except (UnicodeEncodeError, ValueError):
        raise _invalid("the forwarded certificate is not PEM") from None
    return certificates[0], certificates[1:]


def _leaf_identity(leaf: x509.Certificate) -> WorkloadId:
    """The SPIFFE leaf rules; the SVID's identifier."""
    constraints = _extension(leaf, x509.BasicConstraints, "basic constraints")
    usage = _extension(leaf, x509.KeyUsage, "key usage")
    names = _extension(leaf, x509.SubjectAlternativeName, "a subject alternative name")
    if constraints.ca:
        raise _invalid("the certificate is a CA, not a leaf SVID")
    if not usage.digital_signature or usage.key_cert_sign or usage.crl_sign:
        raise _invalid("a leaf SVID has digitalSignature and neither keyCertSign nor cRLSign")
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise _invalid(f"an SVID has exactly one URI SAN, this one has {len(uris)}")
    try:
        return parse_workload_id(uris[0])
    except InvalidIdentifier as exc:
        raise _invalid(f"URI SAN: {exc}") from None


_E = TypeVar("_E", bound=x509.ExtensionType)


def _extension(leaf: x509.Certificate, kind: type[_E], name: str) -> _E:
    try:
        return leaf.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        raise _invalid(f"an SVID needs {name}") from None
    except ValueError as exc:  # present but malformed
        raise _invalid(f"unreadable extension: {exc}") from None


def _invalid(message: str) -> CredentialError:
    return CredentialError(Reason.MTLS_CERTIFICATE_INVALID, message)
