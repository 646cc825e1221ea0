"""Attestation results: RATS EAR (draft-ietf-rats-ear, JWT form), verified and normalised.

An EAR arrives as a JWT signed by a configured attestation verifier (in a request header, or
nested in a WIT or Txn-Token claim), or as a plain claims object inside a token whose own
signature already vouches for it (the WIT issuer's, the TTS's). Both the current claim names
(`ear_status`, `ear_trustworthiness_vector`, `ear_verifier_id`, `ear_appraisal_policy_ids`)
and the dotted names of earlier drafts (`ear.status`, ...) are read; one object using both
spellings for one field is refused as ambiguous.

Status is ranked so that nothing hides behind an affirming appraisal: a result's status is
the worst of its submods' (a submod without a status counts as `none`) and of its optional
top-level `ear_status`; a stale result (issued more than `max_age` ago, or past its `exp`)
is at best `none`; a request's overall status is the worst of its results.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from authz.clock import Clock
from authz.credentials.claims import numeric_date
from authz.credentials.jose import JoseReasons, parse_compact_jws
from authz.credentials.signature import (
    SignatureReasons,
    SigningKey,
    verify_refreshing,
    verify_signature,
)
from authz.errors import CredentialError, UnavailableError
from authz.reasons import Reason
from authz.trust.key_sets import KeyHolder, KeySet

MAX_SUBMODS = 64

_JOSE_REASONS = JoseReasons.for_token("ear")
_SIGNATURE_REASONS = SignatureReasons.for_token("ear", kid_unknown=Reason.EAR_VERIFIER_UNKNOWN)


class EarStatus(StrEnum):
    AFFIRMING = "affirming"
    NONE = "none"
    WARNING = "warning"
    CONTRAINDICATED = "contraindicated"


# Worst last: `worst()` takes the highest rank.
_RANK = {status: rank for rank, status in enumerate(EarStatus)}
_STATUS_BY_NAME = {status.value: status for status in EarStatus}
# AR4SI trustworthiness tiers as EAR's integer encoding writes them.
_STATUS_BY_INTEGER = {
    0: EarStatus.NONE,
    2: EarStatus.AFFIRMING,
    32: EarStatus.WARNING,
    96: EarStatus.CONTRAINDICATED,
}


def worst(statuses: Iterable[EarStatus]) -> EarStatus:
    """The least trustworthy status; `none` when there is nothing to go on."""
    return max(statuses, key=_RANK.__getitem__, default=EarStatus.NONE)


class AttestationSource(StrEnum):
    HEADER = "header"
    WIT = "wit"
    TXN = "txn"


@dataclass(frozen=True, slots=True)
class Submod:
    status: EarStatus
    trustworthiness: Mapping[str, int]
    policy_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AttestationResult:
    source: AttestationSource
    status: EarStatus
    """The status policy should use: appraisal, freshness and every submod considered."""
    fresh: bool
    profile: str
    issued_at: float
    expires_at: float | None
    verifier: Mapping[str, Any] | None
    signed_by: str | None
    """The configured verifier whose key signed the EAR; None for an unsigned claims object
    carried inside another verified token."""
    subject: str | None
    """The EAR's `sub`, when it names the workload it is about."""
    submods: Mapping[str, Submod]
    signing_key: SigningKey | None = None
    """The configured verifier key that verified it (for the deny-list); None when unsigned."""


@dataclass(frozen=True, slots=True)
class EarRules:
    clock_skew: float
    max_age: float


class EarVerifier:
    def __init__(self, verifiers: Sequence[KeyHolder], rules: EarRules, clock: Clock) -> None:
        self._verifiers = tuple(verifiers)
        self._rules = rules
        self._clock = clock

    def from_jwt(self, token: str, source: AttestationSource) -> AttestationResult:
        """Verify an EAR JWT with the configured verifiers' keys and normalise it."""
        if "," in token:
            raise CredentialError(Reason.EAR_MULTIPLE, "more than one attestation header")
        jws = parse_compact_jws(token, _JOSE_REASONS)
        if not self._verifiers:
            raise CredentialError(Reason.EAR_VERIFIER_UNKNOWN, "no attestation verifier is set")
        key_sets: list[KeySet] = []
        unavailable: UnavailableError | None = None
        for verifier in self._verifiers:
            try:
                key_sets.append(verifier.current)
            except UnavailableError as exc:
                unavailable = unavailable or exc
        try:
            signer = verify_signature(jws, key_sets, _SIGNATURE_REASONS)
        except CredentialError:
            # A verifier whose keys cannot be vouched for might have had the key: the EAR
            # cannot be judged now, which is our unavailability, not an invalid EAR.
            if unavailable is not None:
                raise unavailable from None
            raise
        result = self._normalise(jws.claims, source, signer.key_set.name)
        return replace(result, signing_key=signer.key)

    async def from_jwt_refreshing(self, token: str, source: AttestationSource) -> AttestationResult:
        """`from_jwt`, refreshing live verifier key sets once when none has the EAR's `kid`."""
        return await verify_refreshing(lambda: self.from_jwt(token, source))

    async def from_claim_refreshing(
        self, value: object, source: AttestationSource
    ) -> AttestationResult:
        """`from_claim`, refreshing live verifier key sets once for a nested EAR JWT whose
        `kid` none of them has."""
        return await verify_refreshing(lambda: self.from_claim(value, source))

    def from_claim(self, value: object, source: AttestationSource) -> AttestationResult:
        """An EAR held in a claim of an already verified token: a nested JWT or an object."""
        if isinstance(value, str):
            return self.from_jwt(value, source)
        if isinstance(value, dict):
            return self._normalise(value, source, None)
        raise CredentialError(Reason.EAR_MALFORMED, "the EAR claim is neither a JWT nor an object")

    def _normalise(
        self, claims: Mapping[str, Any], source: AttestationSource, signed_by: str | None
    ) -> AttestationResult:
        profile = claims.get("eat_profile")
        if not isinstance(profile, str):
            raise CredentialError(Reason.EAR_CLAIM_INVALID, "'eat_profile' is required")
        try:
            issued_at = numeric_date(claims, "iat")
            expires_at = numeric_date(claims, "exp")
        except ValueError as exc:
            raise CredentialError(Reason.EAR_CLAIM_INVALID, str(exc)) from None
        if issued_at is None:
            raise CredentialError(Reason.EAR_CLAIM_INVALID, "'iat' is required")
        now = self._clock()
        skew = self._rules.clock_skew
        if issued_at > now + skew:
            raise CredentialError(Reason.EAR_IAT_IN_FUTURE, "'iat' is in the future")
        fresh = now - issued_at <= self._rules.max_age + skew and (
            expires_at is None or now < expires_at + skew
        )

        submods = _submods(claims.get("submods"))
        top_level = _either(claims, "ear_status", "ear.status")
        statuses = [submod.status for submod in submods.values()]
        if top_level is not None:
            statuses.append(_status(top_level))
        if not fresh:
            statuses.append(EarStatus.NONE)
        verifier = _either(claims, "ear_verifier_id", "ear.verifier-id")
        if verifier is not None and not isinstance(verifier, dict):
            raise CredentialError(Reason.EAR_CLAIM_INVALID, "the verifier id is not an object")
        subject = claims.get("sub")
        if subject is not None and not isinstance(subject, str):
            raise CredentialError(Reason.EAR_CLAIM_INVALID, "'sub' is not a string")
        return AttestationResult(
            source=source,
            status=worst(statuses),
            fresh=fresh,
            profile=profile,
            issued_at=issued_at,
            expires_at=expires_at,
            verifier=verifier,
            signed_by=signed_by,
            subject=subject,
            submods=submods,
        )


def _either(claims: Mapping[str, Any], current: str, legacy: str) -> Any:
    if current in claims and legacy in claims:
        raise CredentialError(Reason.EAR_CLAIM_INVALID, f"both '{current}' and '{legacy}'")
    return claims.get(current, claims.get(legacy))


def _status(value: object) -> EarStatus:
    if isinstance(value, str) and value in _STATUS_BY_NAME:
        return _STATUS_BY_NAME[value]
    if isinstance(value, int) and not isinstance(value, bool) and value in _STATUS_BY_INTEGER:
        return _STATUS_BY_INTEGER[value]
    raise CredentialError(Reason.EAR_CLAIM_INVALID, "unknown EAR status")


def _submods(value: object) -> dict[str, Submod]:
    if not isinstance(value, dict) or not value:
        raise CredentialError(Reason.EAR_CLAIM_INVALID, "'submods' must be a non-empty object")
    if len(value) > MAX_SUBMODS:
        raise CredentialError(Reason.EAR_CLAIM_INVALID, "too many submods")
    return {name: _submod(appraisal) for name, appraisal in value.items()}


def _submod(appraisal: object) -> Submod:
    if not isinstance(appraisal, dict):
        raise CredentialError(Reason.EAR_CLAIM_INVALID, "a submod is not an object")
    status = _either(appraisal, "ear_status", "ear.status")
    vector = _either(appraisal, "ear_trustworthiness_vector", "ear.trustworthiness-vector")
    vector = {} if vector is None else vector
    if not isinstance(vector, dict) or not all(_is_claim_value(v) for v in vector.values()):
        raise CredentialError(Reason.EAR_CLAIM_INVALID, "a trustworthiness vector is invalid")
    policies = _either(appraisal, "ear_appraisal_policy_ids", "ear.appraisal-policy-id")
    if isinstance(policies, str):
        policies = [policies]
    policies = [] if policies is None else policies
    if not isinstance(policies, list) or not all(isinstance(p, str) for p in policies):
        raise CredentialError(Reason.EAR_CLAIM_INVALID, "appraisal policy ids are invalid")
    return Submod(
        status=EarStatus.NONE if status is None else _status(status),
        trustworthiness=vector,
        policy_ids=tuple(policies),
    )


def _is_claim_value(value: object) -> bool:
    """AR4SI trustworthiness claims are signed 8-bit integers."""
    return isinstance(value, int) and not isinstance(value, bool) and -128 <= value <= 127
