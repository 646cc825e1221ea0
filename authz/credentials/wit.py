"""Workload Identity Token verification (draft-ietf-wimse-workload-creds).

Order, each step with its own reason code: one compact JWS → `typ` → the trust domain named
by `sub` (its anchors, never keys from the token) → a `kid` when those anchors are a SPIFFE
bundle's `wit-svid` keys → `alg` on that domain's allow-list → signature (with the `kid` key
when one is named) → `sub` canonical → `exp` present, not passed, not too far ahead →
`iat`/`nbf` sane → `cnf.jwk` with an acceptable `alg`.

SPIFFE WIT-SVIDs (spiffe/spiffe `standards/WIT-SVID.md`) are WITs, verified the same way; the
one rule of that profile checked here is its `kid`, which it requires where the WIMSE draft
makes it optional. It applies to WITs whose anchors are a SPIFFE bundle's `wit-svid` keys:
such a bundle says its trust domain issues WIT-SVIDs. Its `jti` is no replay key (nor is any
WIT's: the proof's is).

Verified WITs are cached by their exact bytes until they expire, so a repeat caller costs
one signature check (its WPT) per request instead of two. A cached WIT counts only while its
trust domain still serves the key set that verified it: when a live key set is refreshed
(a key dropped, say), each cached WIT is verified again against the new keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authz.clock import Clock
from authz.credentials.algorithms import (
    SUPPORTED_ALGORITHMS,
    InvalidKey,
    PublicKey,
    public_key_from_jwk,
)
from authz.credentials.claims import (
    LifetimeReasons,
    check_lifetime,
    optional_string,
    token_hash,
)
from authz.credentials.identifiers import InvalidIdentifier, WorkloadId, parse_workload_id
from authz.credentials.jose import JoseReasons, parse_compact_jws, typ_matches
from authz.credentials.signature import (
    SignatureReasons,
    SigningKey,
    verify_refreshing,
    verify_signature,
)
from authz.credentials.verified_cache import VerifiedCache
from authz.errors import CredentialError
from authz.reasons import Reason
from authz.trust.key_sets import KeySet, TrustStore
from authz.trust.spiffe_bundle import JwtKeyUse

WIT_TYP = "wit+jwt"

_JOSE_REASONS = JoseReasons.for_token("wit")
_SIGNATURE_REASONS = SignatureReasons.for_token("wit")
_LIFETIME_REASONS = LifetimeReasons.for_token("wit")


@dataclass(frozen=True, slots=True)
class WitRules:
    """Time and algorithm limits applied to every WIT."""

    clock_skew: float
    max_lifetime: float
    """Upper bound for both `exp - now` and `exp - iat`."""
    proof_algorithms: frozenset[str]
    """Algorithms a workload key (`cnf.jwk.alg`) may use."""


@dataclass(frozen=True, slots=True)
class VerifiedWit:
    """A WIT whose signature, subject, lifetime and confirmation key have been checked."""

    subject: WorkloadId
    claims: Mapping[str, Any]
    issuer_key: SigningKey
    """The configured issuer key that verified it (whether or not the token named a kid)."""
    issuer_alg: str
    expires_at: float
    proof_key: PublicKey
    """The workload's key from `cnf.jwk`, bound to exactly `cnf.jwk.alg`."""
    proof_alg: str
    token_hash: str
    """base64url(SHA-256(header value)): what a WPT's `wth` must equal."""


class WitVerifier:
    """Verifies WITs against a `TrustStore` (its key sets read per verification); holds the
    verified-WIT cache."""

    def __init__(
        self, trust_store: TrustStore, rules: WitRules, clock: Clock, cache_entries: int
    ) -> None:
        self._trust_store = trust_store
        self._rules = rules
        self._clock = clock
        self._cache: VerifiedCache[str, tuple[VerifiedWit, KeySet]] = VerifiedCache(
            cache_entries, clock, rules.clock_skew
        )

    @property
    def cached(self) -> int:
        return len(self._cache)

    def verify(self, token: str) -> VerifiedWit:
        """Return the verified WIT for these exact bytes, or raise `CredentialError` (or
        `UnavailableError` when its trust domain's live keys cannot be vouched for)."""
        entry = self._cache.get(token)
        if entry is not None:
            verified, key_set = entry
            holder = self._trust_store.get(verified.subject.trust_domain)
            if holder is not None and holder.current is key_set:
                return verified
        verified, key_set = self._verify_uncached(token)
        self._cache.put(token, (verified, key_set), verified.expires_at)
        return verified

    async def verify_refreshing(self, token: str) -> VerifiedWit:
        """`verify`, refreshing a live key set once when it lacks the WIT's `kid`."""
        return await verify_refreshing(lambda: self.verify(token))

    def _verify_uncached(self, token: str) -> tuple[VerifiedWit, KeySet]:
        jws = parse_compact_jws(token, _JOSE_REASONS)
        if not typ_matches(jws.header.get("typ"), WIT_TYP):
            raise CredentialError(Reason.WIT_TYP_INVALID, "JOSE 'typ' is not wit+jwt")

        # The trust domain in `sub` picks the anchors; `sub` is re-read as verified below.
        try:
            subject = parse_workload_id(jws.claims.get("sub"))
        except InvalidIdentifier as exc:
            raise CredentialError(Reason.WIT_SUB_INVALID, f"'sub': {exc}") from None
        holder = self._trust_store.get(subject.trust_domain)
        if holder is None:
            raise CredentialError(
                Reason.WIT_TRUST_DOMAIN_UNKNOWN,
                f"no trust anchors for trust domain {subject.trust_domain!r}",
            )
        domain = holder.current
        if domain.bundle_use is JwtKeyUse.WIT_SVID and "kid" not in jws.header:
            raise CredentialError(
                Reason.WIT_KID_MISSING,
                "the trust domain issues WIT-SVIDs (SPIFFE bundle): the WIT must name a 'kid'",
            )
        signer = verify_signature(jws, (domain,), _SIGNATURE_REASONS)

        expires_at = check_lifetime(
            jws.claims,
            now=self._clock(),
            clock_skew=self._rules.clock_skew,
            max_lifetime=self._rules.max_lifetime,
            reasons=_LIFETIME_REASONS,
        )
        proof_key = self._confirmation_key(jws.claims)
        try:
            optional_string(jws.claims, "iss")
            optional_string(jws.claims, "jti")
        except ValueError as exc:
            raise CredentialError(Reason.WIT_CLAIM_INVALID, str(exc)) from None
        verified = VerifiedWit(
            subject=subject,
            claims=jws.claims,
            issuer_key=signer.key,
            issuer_alg=jws.alg,
            expires_at=expires_at,
            proof_key=proof_key,
            proof_alg=next(iter(proof_key.algorithms)),
            token_hash=token_hash(token),
        )
        return verified, domain

    def _confirmation_key(self, claims: Mapping[str, Any]) -> PublicKey:
        cnf = claims.get("cnf")
        jwk = cnf.get("jwk") if isinstance(cnf, dict) else None
        if not isinstance(jwk, dict):
            raise CredentialError(Reason.WIT_CNF_MISSING, "'cnf.jwk' is required")
        alg = jwk.get("alg")
        if not isinstance(alg, str) or not alg:
            raise CredentialError(Reason.WIT_CNF_ALG_MISSING, "'cnf.jwk.alg' is required")
        if alg not in self._rules.proof_algorithms or alg not in SUPPORTED_ALGORITHMS:
            raise CredentialError(
                Reason.WIT_CNF_ALG_NOT_ALLOWED, f"workload key alg {alg!r} is not allowed"
            )
        try:
            return public_key_from_jwk(jwk, (alg,))
        except InvalidKey as exc:
            raise CredentialError(Reason.WIT_CNF_KEY_INVALID, f"'cnf.jwk': {exc}") from None
