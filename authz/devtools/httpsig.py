"""Signing requests the WIMSE way (draft-ietf-wimse-http-signature), for tests and demos.

Like `mint`, it signs whatever it is asked to (any parameters, any covered components), so
tests can build what an attacker could; it is never part of the serving path.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from authz.credentials.httpsig.message import HttpRequest, signature_base
from authz.credentials.httpsig.structured_fields import (
    BareItem,
    InnerList,
    Item,
    serialize_inner_list,
)
from authz.credentials.httpsig.verifier import (
    COVERED_WHEN_PRESENT,
    REQUIRED_COMPONENTS,
    WIMSE_TAG,
)
from authz.devtools.keys import private_key_from_jwk
from authz.devtools.mint import signer_for


def content_digest(body: bytes) -> str:
    """An RFC 9530 `Content-Digest` value (sha-256) for `body`."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def sign_request(
    workload_jwk: dict[str, Any],
    *,
    method: str,
    path: str,
    audience: str,
    headers: Mapping[str, str],
    query: str = "",
    body: bytes | None = None,
    now: float | None = None,
    ttl: int = 60,
    nonce: str | None = None,
    covered: Sequence[str] | None = None,
    also_cover: Sequence[str] = (),
    params: Mapping[str, BareItem | None] | None = None,
    label: str = "wimse",
) -> dict[str, str]:
    """The headers to add to a request so it carries a WIMSE signature by `workload_jwk`.

    `headers` are the request's other headers (the WIT among them). A non-empty `body` gets
    a `Content-Digest` unless `headers` has one. By default the signature covers what the
    draft requires for this request, plus `also_cover`; `covered` replaces that list.
    `params` adds or overrides signature parameters (None removes one).
    """
    all_headers = dict(headers)
    added: dict[str, str] = {}
    if body and "content-digest" not in all_headers:
        added["content-digest"] = all_headers["content-digest"] = content_digest(body)
    if covered is None:
        present = [name for name in COVERED_WHEN_PRESENT if name in all_headers]
        covered = [*REQUIRED_COMPONENTS, *present, *also_cover]
    created = int(time.time() if now is None else now)
    parameters: dict[str, BareItem | None] = {
        "created": created,
        "expires": created + ttl,
        "nonce": nonce or secrets.token_urlsafe(12),
        "tag": WIMSE_TAG,
        "wimse-aud": audience,
        **(params or {}),
    }
    inner = InnerList(
        tuple(Item(name, {}) for name in covered),
        {key: value for key, value in parameters.items() if value is not None},
    )
    request = HttpRequest(method, path, query, all_headers, body=body)
    base = signature_base(request, inner)
    alg = str(workload_jwk["alg"])
    signature = signer_for(alg).sign(base, private_key_from_jwk(workload_jwk))
    added["signature-input"] = f"{label}={serialize_inner_list(inner)}"
    added["signature"] = f"{label}=:{base64.b64encode(signature).decode('ascii')}:"
    return added
