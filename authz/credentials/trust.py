"""Trust anchors: per trust domain, the issuer keys that may sign its WITs.

A `TrustStore` is immutable; a reload builds a new one and swaps it in whole, so a check
never sees half of an old key set and half of a new one. Keys are parsed and bound to their
algorithms once, here, never per request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz.credentials.algorithms import InvalidKey, PublicKey, public_key_from_jwk
from authz.credentials.identifiers import is_valid_trust_domain
from authz.errors import ConfigError


@dataclass(frozen=True, slots=True)
class TrustDomain:
    """One trust domain: its allowed algorithms and the issuer keys it trusts."""

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


def build_trust_domain(
    name: str, algorithms: Iterable[str], keys: Iterable[PublicKey]
) -> TrustDomain:
    allowed = frozenset(algorithms)
    key_tuple = tuple(keys)
    by_kid: dict[str, PublicKey] = {}
    for key in key_tuple:
        if key.kid is not None:
            if key.kid in by_kid:
                raise ValueError(f"two keys share kid {key.kid!r}")
            by_kid[key.kid] = key
    by_alg = {alg: tuple(k for k in key_tuple if alg in k.algorithms) for alg in allowed}
    return TrustDomain(name, allowed, key_tuple, by_kid, by_alg)


@dataclass(frozen=True, slots=True)
class TrustStore:
    """All configured trust domains; `revision` changes whenever any key or setting does."""

    domains: Mapping[str, TrustDomain]
    revision: str

    def get(self, trust_domain: str) -> TrustDomain | None:
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
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {path} is not JSON: {exc}") from None


def build_trust_store(domains: Mapping[str, tuple[frozenset[str], object, str]]) -> TrustStore:
    """Build a store from `{name: (algorithms, jwks_document, where)}`."""
    built: dict[str, TrustDomain] = {}
    digest = hashlib.sha256()
    for name in sorted(domains):
        algorithms, document, where = domains[name]
        if not is_valid_trust_domain(name):
            raise ConfigError(f"{where}: {name!r} is not a canonical trust domain name")
        keys = parse_jwks(document, algorithms, where)
        try:
            built[name] = build_trust_domain(name, algorithms, keys)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        digest.update(name.encode())
        digest.update(json.dumps(sorted(algorithms)).encode())
        digest.update(json.dumps(document, sort_keys=True).encode())
    return TrustStore(domains=built, revision=digest.hexdigest()[:16])
