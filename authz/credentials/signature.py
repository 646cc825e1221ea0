"""Checking a compact JWS signature against configured key sets (never a key from the token).

Every token type signed by a configured party — WIT issuer, Transaction Token Service,
user-token issuer, attestation verifier — goes through `verify_signature`, so the rules are
the same everywhere: the `alg` must be on the signer's allow-list and usable by the key; a
`kid`, when present, must be a string naming a configured key (a present-but-null `kid` is
malformed, not "no kid", which would widen the keys tried); without a `kid`, each key of
that algorithm is tried.

The result names the configured key that verified, never just the header's `kid`: a token's
holder controls its header, so a deny-list or policy keyed on a kid must see the key's own
configured kid(s) and its RFC 7638 thumbprint, whether the token named a kid or not.

A `kid` no key set has may be a key its issuer has just published: `verify_refreshing`
runs a verification again, once, after the live key sets it consulted were refreshed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from authz.credentials.algorithms import SUPPORTED_ALGORITHMS, PublicKey
from authz.credentials.jose import CompactJws
from authz.errors import CredentialError, UnavailableError
from authz.reasons import Reason
from authz.trust.key_sets import KeyRefresh, KeySet


@dataclass(frozen=True, slots=True)
class SignatureReasons:
    """The reason codes one token type uses for its signature checks."""

    malformed: Reason
    alg_not_allowed: Reason
    kid_unknown: Reason
    signature_invalid: Reason

    @classmethod
    def for_token(cls, token: str, *, kid_unknown: Reason | None = None) -> SignatureReasons:
        """`<token>.malformed`, `<token>.alg_not_allowed`, ...; `kid_unknown` overrides the
        code for a `kid` no configured key has."""
        return cls(
            malformed=Reason(f"{token}.malformed"),
            alg_not_allowed=Reason(f"{token}.alg_not_allowed"),
            kid_unknown=kid_unknown or Reason(f"{token}.kid_unknown"),
            signature_invalid=Reason(f"{token}.signature_invalid"),
        )


class UnknownKid(CredentialError):
    """No consulted key set has the token's `kid`; `key_sets` are the ones consulted."""

    def __init__(self, reason: Reason, message: str, key_sets: Sequence[KeySet]) -> None:
        super().__init__(reason, message)
        self.key_sets = tuple(key_sets)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The configured key that verified a token, as the deny-list and policy name it."""

    kid: str | None
    """The kid the key is configured under (None for a key published without one)."""
    thumbprint: str
    """RFC 7638 SHA-256 thumbprint of the key material."""
    kids: frozenset[str]
    """Every kid the key set publishes this key material under (`kid` among them)."""

    @classmethod
    def of(cls, key: PublicKey, key_set: KeySet) -> SigningKey:
        return cls(key.kid, key.thumbprint, key_set.kids_of(key))


@dataclass(frozen=True, slots=True)
class Signer:
    """Which configured key set, and which key of it, verified a token."""

    key_set: KeySet
    key: SigningKey


def verify_signature(
    jws: CompactJws, key_sets: Sequence[KeySet], reasons: SignatureReasons
) -> Signer:
    """Verify `jws` with a key from `key_sets`, or raise `CredentialError`."""
    alg = jws.alg
    algorithm = SUPPORTED_ALGORITHMS.get(alg)
    candidates = [key_set for key_set in key_sets if alg in key_set.algorithms]
    if algorithm is None or not candidates:
        raise CredentialError(reasons.alg_not_allowed, f"alg {alg!r} is not allowed")

    if "kid" in jws.header:
        kid = jws.header["kid"]
        if not isinstance(kid, str):
            raise CredentialError(reasons.malformed, "JOSE 'kid' is not a string")
        for key_set in key_sets:
            key = key_set.key_for_kid(kid)
            if key is None:
                continue
            if key_set not in candidates or alg not in key.algorithms:
                raise CredentialError(reasons.alg_not_allowed, f"the kid's key does not use {alg}")
            if not key.verify(algorithm, jws.signing_input, jws.signature):
                raise CredentialError(reasons.signature_invalid, "signature does not verify")
            return Signer(key_set, SigningKey.of(key, key_set))
        raise UnknownKid(reasons.kid_unknown, "no configured key has that kid", key_sets)

    for key_set in candidates:
        for key in key_set.keys_for_alg(alg):
            if key.verify(algorithm, jws.signing_input, jws.signature):
                return Signer(key_set, SigningKey.of(key, key_set))
    raise CredentialError(reasons.signature_invalid, "signature does not verify")


T = TypeVar("T")


async def verify_refreshing(verify: Callable[[], T]) -> T:
    """`verify()`, run once more if it failed only because a live key set lacks the token's
    `kid` and refreshing that set (rate-limited; one fetch shared by concurrent callers)
    may have brought it. A `kid` still unknown afterwards is the usual `*.kid_unknown`."""
    try:
        return verify()
    except UnknownKid as error:
        origins = list({id(k.origin): k.origin for k in error.key_sets if k.origin}.values())
        if not origins:
            raise
        refreshed = await asyncio.gather(*(o.refresh_for_unknown_kid() for o in origins))
        if not any(refreshed):
            _unavailable_if_unreachable(origins)
            raise
    try:
        return verify()
    except UnknownKid:
        _unavailable_if_unreachable(origins)
        raise


def _unavailable_if_unreachable(origins: Sequence[KeyRefresh]) -> None:
    """An unknown `kid` is an invalid token only if the keys could be asked: when the latest
    fetch failed, the issuer may have rotated to that key during the outage (503)."""
    if any(origin.error is not None for origin in origins):
        raise UnavailableError(
            Reason.TRUST_ANCHORS_UNAVAILABLE,
            "the token names a key the trust anchors could not be refreshed to find",
        )
