"""`parsed_path`, `parsed_query` and `parsed_body`, as OPA-Envoy policies expect them.

The path is never parsed as a URL: a `:path` of `//admin/people` would otherwise lose its
`admin` segment to the URL authority (OPA-Envoy's 2026 advisory). Exactly one leading slash
is dropped and every other segment kept, empty ones included. Invalid percent-encoding is a
`RequestError` (400), never a silently different path. The gateway parses only canonical
paths (`authz.canonical_path`, checked when the request view is built); this parser does not
rely on that, and still never hides a segment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, unquote_plus

from authz import strict_json
from authz.errors import RequestError
from authz.reasons import Reason

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"


def split_path(raw_path: str) -> tuple[str, str]:
    """Split Envoy's `:path` into (path, query); a fragment, if any, is dropped."""
    path, _, query = raw_path.partition("#")[0].partition("?")
    return path, query


def _decode(component: str, *, plus_is_space: bool, reason: Reason) -> str:
    if "%" not in component and not (plus_is_space and "+" in component):
        return component
    if _BAD_ESCAPE.search(component):
        raise RequestError(reason, "invalid percent-escape")
    try:
        if plus_is_space:
            return unquote_plus(component, errors="strict")
        return unquote(component, errors="strict")
    except UnicodeDecodeError:
        raise RequestError(reason, "percent-escapes decode to invalid UTF-8") from None


def parse_path(path: str) -> list[str]:
    """Path segments after percent-decoding, one leading slash removed, none dropped."""
    trimmed = path[1:] if path.startswith("/") else path
    reason = Reason.REQUEST_PATH_INVALID
    return [_decode(segment, plus_is_space=False, reason=reason) for segment in trimmed.split("/")]


def parse_query(query: str, reason: Reason = Reason.REQUEST_PATH_INVALID) -> dict[str, list[str]]:
    """Query parameters as name → values in order (form encoding: `+` is a space)."""
    params: dict[str, list[str]] = {}
    if not query:
        return params
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        key = _decode(name, plus_is_space=True, reason=reason)
        params.setdefault(key, []).append(_decode(value, plus_is_space=True, reason=reason))
    return params


@dataclass(frozen=True, slots=True)
class ParsedBody:
    value: Any
    truncated: bool


NO_BODY = ParsedBody(value=None, truncated=False)


def parse_body(
    headers: Mapping[str, str], body: str, raw_body: bytes, max_bytes: int
) -> ParsedBody:
    """Parse a JSON or form body Envoy forwarded; other types stay unparsed (None).

    A body Envoy cut short (its `x-envoy-auth-partial-body` flag, or fewer bytes than
    `content-length`) is reported as truncated and not parsed.
    """
    content_type = headers.get("content-type", "").lower()
    is_json = "application/json" in content_type
    is_form = "application/x-www-form-urlencoded" in content_type
    if not (is_json or is_form):
        return NO_BODY
    payload = raw_body if raw_body else body.encode("utf-8")
    if not payload:
        return NO_BODY
    if headers.get(PARTIAL_BODY_HEADER, "").lower() == "true":
        return ParsedBody(value=None, truncated=True)
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > len(payload):
        return ParsedBody(value=None, truncated=True)
    if len(payload) > max_bytes:
        return NO_BODY
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(Reason.REQUEST_BODY_INVALID, "body is not UTF-8") from None
    if is_form:
        return ParsedBody(value=parse_query(text, Reason.REQUEST_BODY_INVALID), truncated=False)
    try:
        return ParsedBody(value=strict_json.loads(text), truncated=False)
    except (ValueError, RecursionError):
        raise RequestError(Reason.REQUEST_BODY_INVALID, "body is not valid JSON") from None
