"""Workload Identity Tokens (draft-ietf-wimse-workload-creds) from a local issuer.

Only the development issuer of outbound mode mints WITs in the gateway (`dev: true`); real
deployments read the WITs SPIRE or another issuer writes.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from authz.credentials.wit import WIT_TYP
from authz.issuing.jws import compact_jws, encoded_segment
from authz.issuing.signing_key import SigningKey


def mint_wit(
    issuer: SigningKey,
    issuer_kid: str,
    *,
    subject: str,
    confirmation_jwk: Mapping[str, Any],
    now: float,
    lifetime: float,
) -> str:
    """A WIT for `subject` confirming `confirmation_jwk` (a public JWK carrying its `alg`)."""
    header = encoded_segment({"typ": WIT_TYP, "alg": issuer.alg, "kid": issuer_kid})
    claims = {
        "sub": subject,
        "iat": int(now),
        "exp": int(now + lifetime),
        "jti": secrets.token_urlsafe(16),
        "cnf": {"jwk": dict(confirmation_jwk)},
    }
    return compact_jws(header, claims, issuer)
