"""Small, shared checks on JWT claim values (RFC 7519 NumericDate and friends)."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authz.credentials.jose import b64url_encode
from authz.errors import CredentialError
from authz.reasons import Reason


def numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """The claim as a finite number, None when absent; ValueError for any other type."""
    value = claims.get(name)
    if value is None and name not in claims:
        return None
    # bool is an int subclass in Python; a JSON `true` is not a date.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"'{name}' is not a number")
    try:
        date = float(value)  # a JSON integer may be far beyond what a float can hold
    except OverflowError:
        raise ValueError(f"'{name}' is out of range") from None
    if not math.isfinite(date):
        raise ValueError(f"'{name}' is not finite")
    return date


def optional_string(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None and name not in claims:
        return None
    if not isinstance(value, str):
        raise ValueError(f"'{name}' is not a string")
    return value


_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def scope_values(value: str) -> tuple[str, ...] | None:
    """A `scope` claim's values (RFC 6749 §3.3, RFC 8693 §4.2: scope-tokens of printable
    ASCII separated by spaces; runs of spaces are tolerated), or None when it holds any
    other character. Splitting on any whitespace would read the one scope
    `read\u00a0checkout` as two, granting `checkout`."""
    values = tuple(item for item in value.split(" ") if item)
    if not all(_SCOPE_TOKEN.fullmatch(item) for item in values):
        return None
    return values


def token_hash(header_value: str) -> str:
    """base64url(SHA-256(value)) without padding: the `wth`/`tth`/`oth` binding hash."""
    return b64url_encode(hashlib.sha256(header_value.encode("utf-8")).digest())


@dataclass(frozen=True, slots=True)
class LifetimeReasons:
    """The reason codes one token type uses for its time checks."""

    claim_invalid: Reason
    exp_missing: Reason
    expired: Reason
    exp_too_far: Reason
    iat_in_future: Reason
    lifetime_exceeded: Reason
    not_yet_valid: Reason | None
    """None: this token type has no `nbf` rule, and the claim is not read."""

    @classmethod
    def for_token(cls, token: str, *, reads_nbf: bool = True) -> LifetimeReasons:
        """`<token>.claim_invalid`, `<token>.expired`, ...; `reads_nbf=False` for a token
        type that defines no `nbf`."""
        return cls(
            claim_invalid=Reason(f"{token}.claim_invalid"),
            exp_missing=Reason(f"{token}.exp_missing"),
            expired=Reason(f"{token}.expired"),
            exp_too_far=Reason(f"{token}.exp_too_far"),
            iat_in_future=Reason(f"{token}.iat_in_future"),
            lifetime_exceeded=Reason(f"{token}.lifetime_exceeded"),
            not_yet_valid=Reason(f"{token}.not_yet_valid") if reads_nbf else None,
        )


def check_lifetime(
    claims: Mapping[str, Any],
    *,
    now: float,
    clock_skew: float,
    max_lifetime: float,
    reasons: LifetimeReasons,
) -> float:
    """Check `exp` (required), `iat` and `nbf`; return `exp`.

    `max_lifetime` bounds both `exp - now` and, when `iat` is present, `exp - iat`.
    """
    try:
        exp = numeric_date(claims, "exp")
        iat = numeric_date(claims, "iat")
        nbf = numeric_date(claims, "nbf") if reasons.not_yet_valid is not None else None
    except ValueError as exc:
        raise CredentialError(reasons.claim_invalid, str(exc)) from None
    if exp is None:
        raise CredentialError(reasons.exp_missing, "'exp' is required")
    # RFC 7519 4.1.4: accepted only while the current time is *before* `exp` (plus skew).
    if now >= exp + clock_skew:
        raise CredentialError(reasons.expired, "'exp' has passed")
    if exp - now > max_lifetime + clock_skew:
        raise CredentialError(reasons.exp_too_far, "'exp' is further ahead than allowed")
    if iat is not None:
        if iat > now + clock_skew:
            raise CredentialError(reasons.iat_in_future, "'iat' is in the future")
        if exp - iat > max_lifetime:
            raise CredentialError(reasons.lifetime_exceeded, "'exp - iat' exceeds the limit")
    if nbf is not None and reasons.not_yet_valid is not None and nbf > now + clock_skew:
        raise CredentialError(reasons.not_yet_valid, "'nbf' is in the future")
    return exp
