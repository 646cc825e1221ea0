"""RFC 9530 `Content-Digest`, recomputed over the exact body bytes Envoy forwarded.

Only `sha-256` and `sha-512` are accepted (RFC 9530's non-deprecated algorithms). Every
accepted algorithm the header names must match; algorithms this gateway does not know are
ignored, but at least one accepted algorithm must be present, so a header naming only
unknown (or deprecated, such as `md5`) digests binds nothing and is refused.
"""

from __future__ import annotations

import hashlib
import hmac

from authz.credentials.httpsig.structured_fields import (
    Item,
    StructuredFieldError,
    parse_dictionary,
)
from authz.errors import CredentialError
from authz.reasons import Reason

_ALGORITHMS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}


def verify_content_digest(header: str, body: bytes) -> None:
    """Raise `CredentialError` unless `header` is a valid digest of exactly `body`."""
    try:
        members = parse_dictionary(header)
    except StructuredFieldError as exc:
        raise CredentialError(Reason.HTTPSIG_DIGEST_INVALID, f"Content-Digest: {exc}") from None
    checked = 0
    for algorithm, member in members.items():
        if not isinstance(member, Item) or not isinstance(member.value, bytes):
            raise CredentialError(
                Reason.HTTPSIG_DIGEST_INVALID, "Content-Digest members must be byte sequences"
            )
        digest = _ALGORITHMS.get(algorithm)
        if digest is None:
            continue
        if not hmac.compare_digest(digest(body).digest(), member.value):
            raise CredentialError(
                Reason.HTTPSIG_DIGEST_MISMATCH, f"Content-Digest {algorithm} differs from the body"
            )
        checked += 1
    if not checked:
        raise CredentialError(
            Reason.HTTPSIG_DIGEST_INVALID, "Content-Digest names no sha-256 or sha-512 digest"
        )
