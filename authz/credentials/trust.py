"""Trust anchors: named sets of configured keys, and per trust domain the WIT issuer keys.

A `KeySet` is every key one party may sign with (a trust domain's WIT issuer, its
Transaction Token Service, a user-token issuer, an attestation verifier) with that party's
algorithm allow-list. A `TrustStore` is immutable; a reload builds a new one and swaps it in
whole, so a check never sees half of an old key set and half of a new one. Keys are parsed
and bound to their algorithms once, here, never per request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from authz.credentials.algorithms import InvalidKey, PublicKey, public_key_from_jwk
from authz.credentials.identifiers import is_valid_trust_domain
from authz.errors import ConfigError
from authz.files import read_bounded

if TYPE_CHECKING:
    from authz.config import KeySetConfig


@dataclass(frozen=True, slots=True)
class KeySet:
    """One signer's keys (a trust domain's issuer, a TTS, a verifier) and allowed algorithms."""

    name: str
    algorithms: frozenset[str]
    keys: tuple[PublicKey, ...]
    _by_kid: Mapping[str, PublicKey] = field(repr=False)
    _by_alg: Mapping[str, tuple[PublicKey, ...]] = field(repr=False)

    def key_for_kid(self, kid: str) -> PublicKey | None:
        return self._by_kid.get(kid)

    def keys_for_alg(self, alg: str) -> tuple[PublicKey, ...]:
        """Keys that may verify `alg`, for tokens that name no `kid`."""
        return self._by_alg.get(alg, ())


def build_key_set(name: str, algorithms: Iterable[str], keys: Iterable[PublicKey]) -> KeySet:
    allowed = frozenset(algorithms)
    key_tuple = tuple(keys)
    by_kid: dict[str, PublicKey] = {}
    for key in key_tuple:
        if key.kid is not None:
            if key.kid in by_kid:
                raise ValueError(f"two keys share kid {key.kid!r}")
            by_kid[key.kid] = key
    by_alg = {alg: tuple(k for k in key_tuple if alg in k.algorithms) for alg in allowed}
    return KeySet(name, allowed, key_tuple, by_kid, by_alg)


@dataclass(frozen=True, slots=True)
class TrustStore:
    """All configured trust domains; `revision` changes whenever any key or setting does."""

    domains: Mapping[str, KeySet]
    revision: str

    def get(self, trust_domain: str) -> KeySet | None:
        return self.domains.get(trust_domain)


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
"""`{name: (algorithms, jwks_document, where)}`: key sets as configured, before parsing."""


def key_sources(key_sets: Mapping[str, KeySetConfig], where: str, suffix: str = "") -> KeySources:
    """Configured key sets as `build_key_sets` takes them, each `jwks_file` read now; errors
    name `<where>.<name><suffix>`."""
    sources: dict[str, tuple[frozenset[str], object, str]] = {}
    for name, key_set in key_sets.items():
        label = f"{where}.{name}{suffix}"
        if key_set.jwks_file is not None:
            document = read_jwks_file(Path(key_set.jwks_file), f"{label}.jwks_file")
        else:
            document = key_set.jwks
        sources[name] = (frozenset(key_set.algorithms), document, label)
    return sources


def build_key_sets(sources: KeySources) -> tuple[dict[str, KeySet], str]:
    """Parse every source into a `KeySet`; also return a digest of them all (a revision)."""
    built: dict[str, KeySet] = {}
    digest = hashlib.sha256()
    for name in sorted(sources):
        algorithms, document, where = sources[name]
        keys = parse_jwks(document, algorithms, where)
        try:
            built[name] = build_key_set(name, algorithms, keys)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        digest.update(name.encode())
        digest.update(json.dumps(sorted(algorithms)).encode())
        digest.update(json.dumps(document, sort_keys=True).encode())
    return built, digest.hexdigest()[:16]


def build_trust_store(domains: KeySources) -> TrustStore:
    """Build a store of WIT issuer key sets, one per trust domain."""
    for name, (_, _, where) in domains.items():
        if not is_valid_trust_domain(name):
            raise ConfigError(f"{where}: {name!r} is not a canonical trust domain name")
    built, revision = build_key_sets(domains)
    return TrustStore(domains=built, revision=revision)
