"""Checking a compact JWS signature against configured key sets (never a key from the token).

Every token type signed by a configured party — WIT issuer, Transaction Token Service,
user-token issuer, attestation verifier — goes through `verify_signature`, so the rules are
the same everywhere: the `alg` must be on the signer's allow-list and usable by the key; a
`kid`, when present, must be a string naming a configured key (a present-but-null `kid` is
malformed, not "no kid", which would widen the keys tried); without a `kid`, each key of
that algorithm is tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from authz.credentials.algorithms import SUPPORTED_ALGORITHMS
from authz.credentials.jose import CompactJws
from authz.credentials.trust import KeySet
from authz.errors import CredentialError
from authz.reasons import Reason


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


@dataclass(frozen=True, slots=True)
class Signer:
    """Which configured key set verified a token, and the `kid` it named (if any)."""

    key_set: KeySet
    kid: str | None


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
            return Signer(key_set, kid)
        raise CredentialError(reasons.kid_unknown, "no configured key has that kid")

    for key_set in candidates:
        for key in key_set.keys_for_alg(alg):
            if key.verify(algorithm, jws.signing_input, jws.signature):
                return Signer(key_set, None)
    raise CredentialError(reasons.signature_invalid, "signature does not verify")
