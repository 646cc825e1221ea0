"""Strict parsing of compact JWS tokens (RFC 7515) before any key is touched.

Only the compact serialization with three base64url segments, no padding, JSON objects
without duplicate member names, and a JOSE header that names no key of its own: a header
`jwk`, `jku`, `x5u` or `x5c` is refused outright (keys come from configuration, RFC 8725
section 3.10), as are `crit` (no extension is understood) and `b64` (RFC 7797 unencoded
payloads). Each failure carries the reason code of the token being parsed.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from authz.errors import CredentialError
from authz.reasons import Reason
from authz.strict_json import loads_object

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_KEY_BEARING_HEADERS = ("jwk", "jku", "x5u", "x5c")


@dataclass(frozen=True, slots=True)
class JoseReasons:
    """The reason codes one token type uses for parse-level failures."""

    malformed: Reason
    header_key_forbidden: Reason
    crit_unsupported: Reason
    b64_unsupported: Reason

    @classmethod
    def for_token(cls, token: str) -> JoseReasons:
        """`<token>.malformed`, `<token>.header_key_forbidden`, ...: every token type names
        these codes alike (a missing code fails at import, not on a request)."""
        return cls(
            malformed=Reason(f"{token}.malformed"),
            header_key_forbidden=Reason(f"{token}.header_key_forbidden"),
            crit_unsupported=Reason(f"{token}.crit_unsupported"),
            b64_unsupported=Reason(f"{token}.b64_unsupported"),
        )


@dataclass(frozen=True, slots=True)
class CompactJws:
    """A syntactically valid, not yet verified, compact JWS."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        alg = self.header["alg"]
        assert isinstance(alg, str)  # guaranteed by parse_compact_jws
        return alg


def b64url_decode(segment: str) -> bytes:
    """Decode unpadded base64url; raise ValueError on anything else."""
    if _BASE64URL.fullmatch(segment) is None or len(segment) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error as exc:
        raise ValueError("not unpadded base64url") from exc


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def parse_compact_jws(token: str, reasons: JoseReasons) -> CompactJws:
    """Split and decode a compact JWS, or raise `CredentialError` with a specific reason."""
    if not token.isascii():
        raise CredentialError(reasons.malformed, "token contains non-ASCII characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise CredentialError(reasons.malformed, f"compact JWS needs 3 segments, got {len(parts)}")
    header_b64, payload_b64, signature_b64 = parts
    if not header_b64 or not payload_b64 or not signature_b64:
        raise CredentialError(reasons.malformed, "compact JWS has an empty segment")
    try:
        header = loads_object(b64url_decode(header_b64))
    except (ValueError, RecursionError):
        raise CredentialError(
            reasons.malformed, "JOSE header is not a base64url JSON object"
        ) from None

    for name in _KEY_BEARING_HEADERS:
        if name in header:
            raise CredentialError(
                reasons.header_key_forbidden, f"JOSE header carries '{name}'; keys come from config"
            )
    if "crit" in header:
        raise CredentialError(reasons.crit_unsupported, "JOSE header 'crit' is not supported")
    if "b64" in header:
        raise CredentialError(reasons.b64_unsupported, "JOSE header 'b64' is not supported")
    if not isinstance(header.get("alg"), str):
        raise CredentialError(reasons.malformed, "JOSE header has no string 'alg'")

    try:
        claims = loads_object(b64url_decode(payload_b64))
    except (ValueError, RecursionError):
        raise CredentialError(reasons.malformed, "payload is not a base64url JSON object") from None
    try:
        signature = b64url_decode(signature_b64)
    except ValueError:
        raise CredentialError(reasons.malformed, "signature is not base64url") from None
    return CompactJws(
        header=header,
        claims=claims,
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
        signature=signature,
    )


def typ_matches(typ: object, expected: str) -> bool:
    """`typ` equals `expected` or `application/<expected>`, case-insensitively (RFC 7515 4.1.9)."""
    if not isinstance(typ, str):
        return False
    lowered = typ.lower()
    return lowered in (expected, "application/" + expected)
