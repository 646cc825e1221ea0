"""Workload Proof Token verification (draft-ietf-wimse-wpt-02).

Runs only after the WIT verified, and only with the WIT's `cnf.jwk`. Order, each step with
its own reason code: one compact JWS → `alg` string-equal to `cnf.jwk.alg` → signature with
`cnf.jwk` → `typ` → `aud` equals a configured target URI of this request → `exp` present,
not passed, not too far → `wth` binds the WIT → `jti` not seen before from this sender →
`tth` binds the Txn-Token when one is present → every `oth` entry understood and matching.
The `jti` check also refuses (`replay.state_lost`) a WPT that could have been used before
the shared replay store last lost its records (`authz.replay.redis_loss`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authz.clock import Clock
from authz.credentials.algorithms import SUPPORTED_ALGORITHMS
from authz.credentials.claims import LifetimeReasons, check_lifetime, numeric_date, token_hash
from authz.credentials.jose import JoseReasons, parse_compact_jws, typ_matches
from authz.credentials.presentation import TXN_TOKEN_HEADER
from authz.credentials.wit import VerifiedWit
from authz.errors import CredentialError
from authz.reasons import Reason
from authz.replay.memory import ReplayCache

WPT_TYP = "wpt+jwt"
MAX_JTI_LENGTH = 256

_JOSE_REASONS = JoseReasons.for_token("wpt")
_LIFETIME_REASONS = LifetimeReasons.for_token(
    "wpt", reads_nbf=False
)  # wpt-02 defines no `nbf`; it is not read


@dataclass(frozen=True, slots=True)
class WptRules:
    clock_skew: float
    max_lifetime: float
    """Upper bound for `exp - now` (a WPT has no `iat`) and for `exp - iat` when present."""
    bindable_headers: frozenset[str]
    """Lower-cased header names an `oth` claim may bind; any other name is refused."""


@dataclass(frozen=True, slots=True)
class ProofContext:
    """What the WPT must be bound to, taken from the request and configuration."""

    audiences: Sequence[str]
    """Acceptable `aud` values: configured origin(s) + the raw path without its query."""
    headers: Mapping[str, str]
    legacy_bearer: str | None = None
    """Pre-02 compatibility only: the access token an `ath` claim must bind."""


@dataclass(frozen=True, slots=True)
class VerifiedWpt:
    jti: str
    audience: str
    expires_at: float
    bound_headers: frozenset[str]
    """Headers bound by `tth`/`oth` (the only context tokens that may feed authorization)."""
    claims: Mapping[str, Any]


class WptVerifier:
    def __init__(self, rules: WptRules, clock: Clock, replay_cache: ReplayCache) -> None:
        self._rules = rules
        self._clock = clock
        self._replay_cache = replay_cache

    async def verify(
        self, token: str, wit: VerifiedWit, context: ProofContext, *, legacy: bool = False
    ) -> VerifiedWpt:
        """Verify `token` as proof of possession for `wit` on this request."""
        jws = parse_compact_jws(token, _JOSE_REASONS)
        if jws.alg != wit.proof_alg:
            raise CredentialError(Reason.WPT_ALG_MISMATCH, "WPT alg differs from cnf.jwk.alg")
        if not wit.proof_key.verify(
            SUPPORTED_ALGORITHMS[wit.proof_alg], jws.signing_input, jws.signature
        ):
            raise CredentialError(Reason.WPT_SIGNATURE_INVALID, "signature does not verify")
        if not typ_matches(jws.header.get("typ"), WPT_TYP):
            raise CredentialError(Reason.WPT_TYP_INVALID, "JOSE 'typ' is not wpt+jwt")

        claims = jws.claims
        audience = claims.get("aud")
        if not isinstance(audience, str):
            raise CredentialError(Reason.WPT_AUD_INVALID, "'aud' must be a single target URI")
        if audience not in context.audiences:
            raise CredentialError(Reason.WPT_AUD_MISMATCH, "'aud' is not this request's target")
        expires_at = check_lifetime(
            claims,
            now=self._clock(),
            clock_skew=self._rules.clock_skew,
            max_lifetime=self._rules.max_lifetime,
            reasons=_LIFETIME_REASONS,
        )

        wth = claims.get("wth")
        if not isinstance(wth, str):
            raise CredentialError(Reason.WPT_WTH_MISSING, "'wth' is required")
        if wth != wit.token_hash:
            raise CredentialError(Reason.WPT_WTH_MISMATCH, "'wth' does not bind the presented WIT")

        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise CredentialError(Reason.WPT_JTI_MISSING, "'jti' is required")
        if len(jti) > MAX_JTI_LENGTH:
            raise CredentialError(Reason.WPT_CLAIM_INVALID, "'jti' is too long")
        if not await self._replay_cache.claim(
            wit.subject.uri,
            jti,
            expires_at + self._rules.clock_skew,
            usable_from=self._usable_from(claims, expires_at),
        ):
            raise CredentialError(Reason.WPT_REPLAYED, "this WPT was already used")

        bound = self._check_txn_binding(claims, context.headers)
        bound |= self._check_other_bindings(claims, context.headers)
        if legacy:
            _check_access_token_binding(claims, context.legacy_bearer)
        return VerifiedWpt(
            jti=jti,
            audience=audience,
            expires_at=expires_at,
            bound_headers=frozenset(bound),
            claims=claims,
        )

    def _usable_from(self, claims: Mapping[str, Any], expires_at: float) -> float:
        """The earliest time this gateway could have accepted the WPT (wpt-02 defines no
        `iat`): `exp` is at most `max_lifetime` + skew ahead of any acceptance, and an `iat`,
        when present, at most the skew ahead. Both were checked (`check_lifetime`)."""
        skew = self._rules.clock_skew
        usable_from = expires_at - self._rules.max_lifetime - skew
        issued_at = numeric_date(claims, "iat")
        if issued_at is not None:
            usable_from = max(usable_from, issued_at - skew)
        return usable_from

    @staticmethod
    def _check_txn_binding(claims: Mapping[str, Any], headers: Mapping[str, str]) -> set[str]:
        tth = claims.get("tth")
        txn_token = headers.get(TXN_TOKEN_HEADER)
        if txn_token is None:
            if tth is not None:
                raise CredentialError(Reason.WPT_TTH_UNBOUND, "'tth' present without a Txn-Token")
            return set()
        if not isinstance(tth, str):
            raise CredentialError(Reason.WPT_TTH_MISSING, "a Txn-Token needs a 'tth' binding")
        if tth != token_hash(txn_token):
            raise CredentialError(Reason.WPT_TTH_MISMATCH, "'tth' does not bind the Txn-Token")
        return {TXN_TOKEN_HEADER}

    def _check_other_bindings(
        self, claims: Mapping[str, Any], headers: Mapping[str, str]
    ) -> set[str]:
        if "oth" not in claims:
            return set()
        oth = claims["oth"]
        if not isinstance(oth, dict) or not all(isinstance(v, str) for v in oth.values()):
            raise CredentialError(Reason.WPT_OTH_INVALID, "'oth' must map header names to hashes")
        for name, expected in oth.items():
            if name not in self._rules.bindable_headers:
                # Names are compared as sent: only lower-case configured names are understood.
                raise CredentialError(
                    Reason.WPT_OTH_UNKNOWN_HEADER, "'oth' binds a header this gateway does not use"
                )
            value = headers.get(name)
            if value is None:
                raise CredentialError(Reason.WPT_OTH_HEADER_MISSING, f"'oth' binds absent {name}")
            if token_hash(value.strip()) != expected:
                raise CredentialError(Reason.WPT_OTH_MISMATCH, f"'oth' does not bind {name}")
        return set(oth)


def _check_access_token_binding(claims: Mapping[str, Any], bearer: str | None) -> None:
    """Pre-02 WPTs bound an OAuth access token in `Authorization` with `ath`."""
    ath = claims.get("ath")
    if bearer is None:
        if ath is not None:
            raise CredentialError(Reason.WPT_ATH_MISMATCH, "'ath' present without an access token")
        return
    if not isinstance(ath, str):
        raise CredentialError(Reason.WPT_ATH_MISSING, "an access token needs an 'ath' binding")
    if ath != token_hash(bearer):
        raise CredentialError(Reason.WPT_ATH_MISMATCH, "'ath' does not bind the access token")
