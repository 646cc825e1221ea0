"""Workload Proof Tokens (draft-ietf-wimse-wpt-02) for one request of the local workload.

A WPT proves possession of the key its WIT confirms: `aud` the target URI (the callee's origin
and the path without query), `wth` the hash of the WIT it travels with, `tth` of the
Txn-Token and `oth` of other context tokens when the request carries them, a fresh `jti`, and
an `exp` a few seconds ahead that never outlives the WIT.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authz.credentials.claims import token_hash
from authz.credentials.wpt import WPT_TYP
from authz.issuing.jws import compact_jws, encoded_segment
from authz.issuing.signing_key import SigningKey


@dataclass(frozen=True, slots=True)
class ProofRequest:
    """What one WPT binds."""

    audience: str
    txn_token: str | None = None
    other_tokens: Mapping[str, str] | None = None
    """Lower-cased header name → the header's value, for `oth`."""


class WptMinter:
    """Mints WPTs for one WIT and the key its `cnf.jwk` confirms."""

    def __init__(self, wit: str, wit_expires_at: float, key: SigningKey) -> None:
        self._key = key
        self._wit_hash = token_hash(wit)
        self._wit_expires_at = int(wit_expires_at)
        self._header = encoded_segment({"typ": WPT_TYP, "alg": key.alg})

    def mint(self, request: ProofRequest, *, now: float, lifetime: float) -> str:
        """A WPT for `request`, expiring `lifetime` seconds from `now` or with the WIT."""
        claims: dict[str, Any] = {
            "aud": request.audience,
            "exp": min(int(now + lifetime), self._wit_expires_at),
            "jti": secrets.token_urlsafe(16),
            "wth": self._wit_hash,
        }
        if request.txn_token is not None:
            claims["tth"] = token_hash(request.txn_token)
        if request.other_tokens:
            claims["oth"] = {
                name: token_hash(value) for name, value in sorted(request.other_tokens.items())
            }
        return compact_jws(self._header, claims, self._key)
