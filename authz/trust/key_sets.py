"""Trust anchors: named sets of configured keys, and per trust domain the WIT issuer keys.

A `KeySet` is every key one party may sign with (a trust domain's WIT issuer, its
Transaction Token Service, a user-token issuer, an attestation verifier) with that party's
algorithm allow-list, and, for a trust domain given a SPIFFE bundle, the CA certificates its
X.509-SVIDs chain to. A `KeySet` is immutable; keys are parsed and bound to their
algorithms once, here, never per request.

A key set taken from a SPIFFE bundle holds only the bundle keys meant for its party: a trust
domain's WIT anchors its `wit-svid` keys, every other signer its `jwt-svid` keys (the
caller of `key_sources` says which, with `JwtKeyUse`); `bundle_use` records it.

Verifiers hold a `KeyHolder` and read its `current` key set on every verification. A
configured (file or inline) key set is its own holder: it changes only when a reload builds
a new gateway, so a check never sees half of an old key set and half of a new one. A live
key set (`trust/live.py`, fetched from a URL) swaps its whole `KeySet` in one
assignment when a refresh brings new keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509

from authz.credentials.algorithms import InvalidKey, PublicKey, public_key_from_jwk
from authz.credentials.identifiers import is_valid_trust_domain
from authz.errors import ConfigError
from authz.files import read_bounded
from authz.trust.spiffe_bundle import JwtKeyUse, SpiffeBundle, parse_spiffe_bundle

if TYPE_CHECKING:
    from authz.config import KeySetConfig


class KeyRefresh(Protocol):
    """Where a key set came from, when it can be asked for newer keys."""

    async def refresh_for_unknown_kid(self) -> bool:
        """Fetch the keys again unless that is rate-limited; True when the key set may have
        changed (a fetch completed, or one already in flight did)."""
        ...

    @property
    def error(self) -> str | None:
        """Why the latest fetch failed; None when it succeeded."""
        ...


@dataclass(frozen=True, slots=True)
class KeySet:
    """One signer's keys (a trust domain's issuer, a TTS, a verifier) and allowed algorithms."""

    name: str
    algorithms: frozenset[str]
    keys: tuple[PublicKey, ...]
    _by_kid: Mapping[str, PublicKey] = field(repr=False)
    _by_alg: Mapping[str, tuple[PublicKey, ...]] = field(repr=False)
    _kids_by_thumbprint: Mapping[str, frozenset[str]] = field(repr=False)
    x509_authorities: tuple[x509.Certificate, ...] = field(default=(), repr=False)
    """CA certificates X.509-SVIDs of this trust domain chain to (from a SPIFFE bundle)."""
    bundle_use: JwtKeyUse | None = None
    """The `use` of the SPIFFE bundle keys these are; None for keys from a JWKS."""
    origin: KeyRefresh | None = field(default=None, repr=False, compare=False)
    """The live source these keys were fetched from; None for configured keys."""

    @property
    def current(self) -> KeySet:
        """A configured key set is its own holder (see `KeyHolder`)."""
        return self

    def key_for_kid(self, kid: str) -> PublicKey | None:
        return self._by_kid.get(kid)

    def keys_for_alg(self, alg: str) -> tuple[PublicKey, ...]:
        """Keys that may verify `alg`, for tokens that name no `kid`."""
        return self._by_alg.get(alg, ())

    def kids_of(self, key: PublicKey) -> frozenset[str]:
        """Every `kid` this set publishes `key`'s material under (one key may be listed
        twice, under two kids): a deny-listed kid names the key, not one listing of it."""
        return self._kids_by_thumbprint.get(key.thumbprint, frozenset())


class KeyHolder(Protocol):
    """What verifiers hold: `current` is the key set to verify with right now. It may raise
    `UnavailableError` (`trust.anchors_unavailable`) when the keys cannot be vouched for."""

    @property
    def current(self) -> KeySet: ...


def build_key_set(
    name: str,
    algorithms: Iterable[str],
    keys: Iterable[PublicKey],
    *,
    x509_authorities: Iterable[x509.Certificate] = (),
    bundle_use: JwtKeyUse | None = None,
    origin: KeyRefresh | None = None,
) -> KeySet:
    allowed = frozenset(algorithms)
    key_tuple = tuple(keys)
    by_kid: dict[str, PublicKey] = {}
    for key in key_tuple:
        if key.kid is not None:
            if key.kid in by_kid:
                raise ValueError(f"two keys share kid {key.kid!r}")
            by_kid[key.kid] = key
    by_alg = {alg: tuple(k for k in key_tuple if alg in k.algorithms) for alg in allowed}
    kids_by_thumbprint: dict[str, set[str]] = {}
    for key in key_tuple:
        if key.kid is not None:
            kids_by_thumbprint.setdefault(key.thumbprint, set()).add(key.kid)
    return KeySet(
        name,
        allowed,
        key_tuple,
        by_kid,
        by_alg,
        {thumbprint: frozenset(kids) for thumbprint, kids in kids_by_thumbprint.items()},
        x509_authorities=tuple(x509_authorities),
        bundle_use=bundle_use,
        origin=origin,
    )


class RevisionSource(Protocol):
    """A live key set's revision: changes whenever its keys do."""

    @property
    def revision(self) -> str: ...


class TrustStore:
    """Every configured trust domain's WIT issuer keys, by trust domain name.

    `revision` changes whenever any key or setting does: for configured keys it is fixed
    when the store is built; live key sets add their own revisions, read when asked (so a
    background refresh shows without a reload).
    """

    __slots__ = ("_cached", "_configured", "_live", "domains")

    def __init__(
        self,
        domains: Mapping[str, KeyHolder],
        revision: str,
        live: Sequence[RevisionSource] = (),
    ) -> None:
        self.domains = domains
        self._configured = revision
        self._live = tuple(live)
        self._cached: tuple[tuple[str, ...], str] = ((), revision)

    def get(self, trust_domain: str) -> KeyHolder | None:
        return self.domains.get(trust_domain)

    @property
    def revision(self) -> str:
        if not self._live:
            return self._configured
        parts = tuple(source.revision for source in self._live)
        seen, revision = self._cached
        if parts != seen:
            digest = hashlib.sha256(self._configured.encode())
            for part in parts:
                digest.update(b"\0" + part.encode())
            revision = digest.hexdigest()[:16]
            self._cached = (parts, revision)
        return revision


def parse_jwks(document: object, algorithms: frozenset[str], where: str) -> list[PublicKey]:
    """Parse a JWKS document into public keys; errors name `where` and the key."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ConfigError(f"{where}: not a JWKS document (an object with a 'keys' list)")
    keys: list[PublicKey] = []
    for index, jwk in enumerate(document["keys"]):
        label = f"key #{index}" + (f" (kid {jwk.get('kid')!r})" if isinstance(jwk, dict) else "")
        try:
            keys.append(public_key_from_jwk(jwk, algorithms))
        except InvalidKey as exc:
            raise ConfigError(f"{where}: {label}: {exc}") from None
    if not keys:
        raise ConfigError(f"{where}: the JWKS holds no keys")
    return keys


def read_jwks_file(path: Path, where: str) -> Any:
    try:
        return json.loads(read_bounded(path, MAX_JWKS_FILE_BYTES, where))
    except ValueError as exc:
        raise ConfigError(f"{where}: {path} is not JSON: {exc}") from None


MAX_JWKS_FILE_BYTES = 4 << 20
"""Far above any real JWKS; a file replaced by something huge is refused, not read."""

KeySources = Mapping[str, tuple[frozenset[str], object, str]]
"""`{name: (algorithms, document, where)}`: key sets as configured, before parsing. The
document is a JWKS (a mapping), or a `SpiffeBundle` already parsed from a bundle file."""


def key_sources(
    key_sets: Mapping[str, KeySetConfig],
    where: str,
    suffix: str = "",
    *,
    bundle_use: JwtKeyUse,
) -> KeySources:
    """Configured key sets as `build_key_sets` takes them, each file read now; errors name
    `<where>.<name><suffix>`. A SPIFFE bundle gives the keys of `bundle_use` only (`wit-svid`
    for trust domains' WIT anchors, `jwt-svid` for any other signer). Key sets fetched from a
    URL are not configured keys: they are refused here (`trust/live.py` holds
    them)."""
    sources: dict[str, tuple[frozenset[str], object, str]] = {}
    for name, key_set in key_sets.items():
        label = f"{where}.{name}{suffix}"
        algorithms = frozenset(key_set.algorithms)
        document: object
        if key_set.jwks_file is not None:
            document = read_jwks_file(Path(key_set.jwks_file), f"{label}.jwks_file")
            # A key the file holds is named with the file: that is what to open and fix.
            label = f"{label} ({key_set.jwks_file})"
        elif key_set.spiffe_bundle_file is not None:
            bundle_label = f"{label}.spiffe_bundle_file ({key_set.spiffe_bundle_file})"
            bundle = read_jwks_file(Path(key_set.spiffe_bundle_file), bundle_label)
            document = parse_spiffe_bundle(bundle, algorithms, bundle_label, bundle_use)
        elif key_set.jwks is not None:
            document = key_set.jwks
        else:
            raise ConfigError(f"{label}: keys fetched from a URL cannot be used here")
        sources[name] = (algorithms, document, label)
    return sources


def build_key_sets(sources: KeySources) -> tuple[dict[str, KeySet], str]:
    """Parse every source into a `KeySet`; also return a digest of them all (a revision)."""
    built: dict[str, KeySet] = {}
    digest = hashlib.sha256()
    for name in sorted(sources):
        algorithms, document, where = sources[name]
        authorities: tuple[x509.Certificate, ...] = ()
        bundle_use: JwtKeyUse | None = None
        if isinstance(document, SpiffeBundle):
            keys = list(document.jwt_keys)
            authorities = document.x509_authorities
            bundle_use = document.key_use
            content = document.digest
        else:
            keys = parse_jwks(document, algorithms, where)
            content = json.dumps(document, sort_keys=True)
        try:
            built[name] = build_key_set(
                name, algorithms, keys, x509_authorities=authorities, bundle_use=bundle_use
            )
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        digest.update(name.encode())
        digest.update(json.dumps(sorted(algorithms)).encode())
        digest.update(content.encode())
    return built, digest.hexdigest()[:16]


def build_trust_store(domains: KeySources) -> TrustStore:
    """Build a store of WIT issuer key sets, one per trust domain."""
    for name, (_, _, where) in domains.items():
        if not is_valid_trust_domain(name):
            raise ConfigError(f"{where}: {name!r} is not a canonical trust domain name")
    built, revision = build_key_sets(domains)
    return TrustStore(domains=built, revision=revision)
