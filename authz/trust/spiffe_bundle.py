"""SPIFFE trust bundles: a JWKS whose keys say which kind of SVID they authenticate.

Format (SPIFFE Trust Domain and Bundle, section 4; JWT-SVID, WIT-SVID and X509-SVID,
"Representation in the SPIFFE Bundle"): a JWK Set with optional `spiffe_sequence` and
`spiffe_refresh_hint` members, whose keys carry `use`:

- `wit-svid`: a public key that verifies WITs (WIT-SVIDs) issued in the trust domain, and
  nothing else. The profile requires each to carry a `kid`.
- `jwt-svid`: a public key that verifies the other JWTs the bundle is configured for (a
  Transaction Token Service's, a user-token issuer's, ...); never a WIT.
- `x509-svid`: a CA certificate (`x5c[0]`, base64 DER) that X.509-SVIDs chain to. Only the
  first `x5c` element counts; an entry without `x5c` is ignored (as the specification asks).
  These never verify a JWT.

Which JWT keys a parse keeps is the consumer's to say (`JwtKeyUse`): the keys of the other
JWT use are ignored like any key of a use the consumer has no part in, so a key meant for
another verifier can neither verify this one's tokens nor refuse its bundle. The kept keys
are parsed like any configured key, bound to the configured algorithm allow-list; one that
cannot be used refuses the whole bundle, as a bad key in a JWKS does.

Keys with any other `use`, no `use`, or an unknown `kty` are ignored, as the specification
requires of consumers. A bundle may hold no JWT keys of the wanted use at all (an
X.509-only trust domain, or one that issues no WIT-SVIDs).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography import x509

from authz.credentials.algorithms import InvalidKey, PublicKey, public_key_from_jwk
from authz.errors import ConfigError

X509_SVID = "x509-svid"
_KNOWN_KEY_TYPES = frozenset({"EC", "RSA", "OKP"})


class JwtKeyUse(StrEnum):
    """Which of a bundle's JWT keys a consumer verifies with (the keys' `use`)."""

    WIT_SVID = "wit-svid"
    """A trust domain's WIT anchors (`trust_domains.<name>`)."""
    JWT_SVID = "jwt-svid"
    """Any other signer given a bundle (a Txn-Token Service, a user-token issuer, ...)."""


@dataclass(frozen=True, slots=True)
class SpiffeBundle:
    """A parsed bundle: the keys of one JWT use, the CA certificates for X.509-SVIDs."""

    key_use: JwtKeyUse
    jwt_keys: tuple[PublicKey, ...]
    """The keys whose `use` is `key_use`: the only ones that verify this consumer's JWTs."""
    x509_authorities: tuple[x509.Certificate, ...]
    sequence: int | None
    refresh_hint: float | None
    """`spiffe_refresh_hint` in seconds, when the bundle gives one."""
    digest: str
    """SHA-256 of the bundle's canonical JSON: changes whenever its content does."""


def parse_spiffe_bundle(
    document: object, algorithms: frozenset[str], where: str, key_use: JwtKeyUse
) -> SpiffeBundle:
    """Parse a SPIFFE bundle document, keeping the JWT keys whose `use` is `key_use`;
    `ConfigError` naming `where` and the key if it is not a bundle, or if a kept key (a
    `wit-svid` key without a `kid`, say) or an `x509-svid` certificate is unusable."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ConfigError(f"{where}: not a SPIFFE bundle (a JWKS object with a 'keys' list)")
    sequence = _optional_int(document, "spiffe_sequence", where)
    hint = _optional_int(document, "spiffe_refresh_hint", where)
    jwt_keys: list[PublicKey] = []
    authorities: list[x509.Certificate] = []
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, Mapping) or jwk.get("kty") not in _KNOWN_KEY_TYPES:
            continue
        label = f"{where}: key #{index}"
        use = jwk.get("use")
        if use == key_use:
            jwt_keys.append(_jwt_key(jwk, algorithms, label, key_use))
        elif use == X509_SVID:
            authority = _authority(jwk, label)
            if authority is not None:
                authorities.append(authority)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return SpiffeBundle(
        key_use=key_use,
        jwt_keys=tuple(jwt_keys),
        x509_authorities=tuple(authorities),
        sequence=sequence,
        refresh_hint=None if hint is None else float(hint),
        digest=hashlib.sha256(canonical.encode()).hexdigest(),
    )


def _jwt_key(
    jwk: Mapping[str, Any], algorithms: frozenset[str], label: str, key_use: JwtKeyUse
) -> PublicKey:
    kid = jwk.get("kid")
    if kid is not None:
        label += f" (kid {kid!r})"
    elif key_use is JwtKeyUse.WIT_SVID:
        # WIT-SVIDs must name their key, so a wit-svid key without a kid could never verify
        # one: the bundle is not what its publisher meant to send.
        raise ConfigError(f"{label}: a wit-svid key must have a 'kid'")
    # `use` names the SVID type here, not RFC 7517's sig/enc: an SVID key is a signing key.
    signing_key = {name: value for name, value in jwk.items() if name != "use"}
    try:
        return public_key_from_jwk(signing_key, algorithms)
    except InvalidKey as exc:
        raise ConfigError(f"{label}: {exc}") from None


def _authority(jwk: Mapping[str, Any], label: str) -> x509.Certificate | None:
    chain = jwk.get("x5c")
    if not isinstance(chain, list) or not chain:
        return None
    first = chain[0]
    if not isinstance(first, str):
        raise ConfigError(f"{label}: 'x5c' holds a non-string")
    try:
        # x5c is standard base64 (RFC 7517 section 4.7), not base64url.
        return x509.load_der_x509_certificate(base64.b64decode(first, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{label}: 'x5c' is not a DER certificate: {exc}") from None


def _optional_int(document: Mapping[str, Any], name: str, where: str) -> int | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{where}: '{name}' is not a non-negative integer")
    return value
