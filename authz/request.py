"""The parts of Envoy's CheckRequest the stages read, extracted once per request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext

from authz.canonical_path import require_canonical_path
from authz.credentials.httpsig.message import HttpRequest
from authz.credentials.httpsig.verifier import PARTIAL_BODY_HEADER
from authz.errors import RequestError
from authz.policy.http_parsing import split_path
from authz.reasons import Reason


@dataclass(frozen=True, slots=True)
class RequestView:
    attributes: AttributeContext
    method: str
    raw_path: str
    """`:path` exactly as Envoy forwarded it (query included, not decoded)."""
    path: str
    """`raw_path` without its query, canonical (`require_canonical_path`): the path a WPT
    `aud` and a signature's `@path` bind, and the one policies see as `parsed_path`."""
    query: str
    headers: Mapping[str, str]
    """Lower-cased names; repeated headers joined with commas, as Envoy does."""
    context_extensions: Mapping[str, str]
    source_principal: str
    destination_principal: str
    """What Envoy reports for the callee: on a TLS listener the URI SAN of the listener's
    certificate (a sidecar's SPIFFE id), else its first DNS SAN; empty on plaintext
    (measured on Envoy 1.40)."""


def _joined_raw_headers(attributes: AttributeContext) -> dict[str, str]:
    """Envoy's `encode_raw_headers` mode sends `header_map`; join repeats like `headers`."""
    headers: dict[str, str] = {}
    for header in attributes.request.http.header_map.headers:
        value = header.raw_value.decode("utf-8", "replace") if header.raw_value else header.value
        name = header.key.lower()
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


def request_view(attributes: AttributeContext) -> RequestView:
    """The request the stages read; a `RequestError` when there is no HTTP request
    (`request.malformed`) or its path is not canonical (`request.path_not_canonical`),
    so no later stage ever sees such a path."""
    if not attributes.request.HasField("http"):
        raise RequestError(Reason.REQUEST_MALFORMED, "CheckRequest carries no HTTP request")
    http = attributes.request.http
    headers: Mapping[str, str] = (
        _joined_raw_headers(attributes) if http.header_map.headers else http.headers
    )
    raw_path = http.path or headers.get(":path", "")
    path, query = split_path(raw_path)
    require_canonical_path(path)
    return RequestView(
        attributes=attributes,
        method=http.method,
        raw_path=raw_path,
        path=path,
        query=query,
        headers=headers,
        context_extensions=attributes.context_extensions,
        source_principal=attributes.source.principal,
        destination_principal=attributes.destination.principal,
    )


def _announces_body(headers: Mapping[str, str]) -> bool:
    length = headers.get("content-length")
    return (length is not None and length.strip() != "0") or "transfer-encoding" in headers


def signed_message(view: RequestView) -> HttpRequest:
    """The request as an HTTP signature covers it; `body` is the exact bytes Envoy forwarded,
    or None when the check shows a body that Envoy did not forward as bytes.

    With `with_request_body`, Envoy (measured on 1.40, see deploy/envoy/README.md) waits for
    the body and sets `x-envoy-auth-partial-body` itself, replacing any value a client sent;
    a request that ended with its headers is checked at once, without that header and with
    no body. So, with the header, the body is `raw_body`, but None if it came only as text
    (`pack_as_bytes` off: text is not the bytes a digest was computed over); without it the
    request had no body (`b""`), but None if its headers announce one (Envoy did not wait
    for it). A body that arrives unannounced on a route where Envoy does not wait for it
    looks like no body here: signatures are accepted only on routes that declare
    `wimse.body: forwarded` (see `authz.routing`).
    """
    http = view.attributes.request.http
    headers = view.headers
    flag = headers.get(PARTIAL_BODY_HEADER)
    body: bytes | None
    if flag is not None:
        body = None if http.body and not http.raw_body else http.raw_body
    else:
        body = None if _announces_body(headers) else b""
    return HttpRequest(
        method=view.method,
        path=view.path,
        query=view.query,
        headers=headers,
        authority=http.host,
        scheme=http.scheme,
        body=body,
        # Envoy writes `true` or `false`; anything else is not its flag and is not trusted.
        body_partial=flag is not None and flag != "false",
    )
