"""Small, shared checks on JWT claim values (RFC 7519 NumericDate and friends)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

from authz.credentials.jose import b64url_encode


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


def token_hash(header_value: str) -> str:
    """base64url(SHA-256(value)) without padding: the `wth`/`tth`/`oth` binding hash."""
    return b64url_encode(hashlib.sha256(header_value.encode("utf-8")).digest())
