"""Compact JWS serialization for the tokens and proofs the gateway signs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from authz.credentials.jose import b64url_encode
from authz.issuing.signing_key import SigningKey


def encoded_segment(member: Mapping[str, Any]) -> str:
    """One JWS segment: compact JSON, base64url without padding."""
    return b64url_encode(json.dumps(member, separators=(",", ":")).encode("utf-8"))


def compact_jws(encoded_header: str, claims: Mapping[str, Any], key: SigningKey) -> str:
    """`claims` signed by `key` under a header already encoded with `encoded_segment` (a
    signer's header is the same for every token, so it is encoded once)."""
    signing_input = f"{encoded_header}.{encoded_segment(claims)}"
    return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode('ascii')))}"
