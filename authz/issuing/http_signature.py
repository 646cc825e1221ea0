"""HTTP Message Signatures for one request of the local workload, per
draft-ietf-wimse-http-signature-07 (the RFC 9421 profile).

The signature covers `@method`, `@path`, `@query` and, when the request carries them,
`content-type`, `content-digest`, `authorization`, `txn-token`, `workload-identity-token`,
plus the other context-token headers the callee binds. Its parameters are `created`,
`expires`, a fresh `nonce`, the WIMSE `tag` and `wimse-aud`; never `keyid` or `alg` (the
algorithm is the WIT's `cnf.jwk.alg`). A body is covered through `Content-Digest`, computed
here over the exact bytes Envoy forwarded.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from authz.credentials.httpsig.message import HttpRequest, signature_base
from authz.credentials.httpsig.structured_fields import InnerList, Item, serialize_inner_list
from authz.credentials.httpsig.verifier import (
    CONTENT_DIGEST_HEADER,
    COVERED_WHEN_PRESENT,
    REQUIRED_COMPONENTS,
    WIMSE_TAG,
)
from authz.issuing.signing_key import SigningKey

SIGNATURE_LABEL = "wimse"


def content_digest(body: bytes) -> str:
    """The RFC 9530 `Content-Digest` value (sha-256) of `body`."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    """The headers that make a request signed: set them, overwriting any the app sent."""

    signature_input: str
    signature: str
    content_digest: str | None
    """Set when the request has a body."""


def sign_request(
    key: SigningKey,
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    audience: str,
    now: float,
    lifetime: int,
    also_cover: Sequence[str] = (),
) -> SignedHeaders:
    """Sign a request whose headers are `headers` as they will leave (the WIT among them,
    lower-cased names) and whose body is exactly `body`. `also_cover` names further
    headers to cover when present (the context tokens the callee binds)."""
    all_headers = dict(headers)
    digest = None
    if body:
        digest = all_headers[CONTENT_DIGEST_HEADER] = content_digest(body)
    else:
        all_headers.pop(CONTENT_DIGEST_HEADER, None)
    present = [
        name for name in dict.fromkeys((*COVERED_WHEN_PRESENT, *also_cover)) if name in all_headers
    ]
    created = int(now)
    covered = InnerList(
        tuple(Item(name, {}) for name in (*REQUIRED_COMPONENTS, *present)),
        {
            "created": created,
            "expires": created + lifetime,
            "nonce": secrets.token_urlsafe(16),
            "tag": WIMSE_TAG,
            "wimse-aud": audience,
        },
    )
    base = signature_base(HttpRequest(method, path, query, all_headers, body=body), covered)
    signature = base64.b64encode(key.sign(base)).decode("ascii")
    return SignedHeaders(
        signature_input=f"{SIGNATURE_LABEL}={serialize_inner_list(covered)}",
        signature=f"{SIGNATURE_LABEL}=:{signature}:",
        content_digest=digest,
    )
