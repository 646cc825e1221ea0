"""RFC 9421 signature bases: covered components of an HTTP request or response, as bytes.

A message here is what the verifier can know exactly: for requests, Envoy's method, raw path
and query (as Envoy forwards them, after its own path normalisation) and headers; for
responses (signature-base tests only: ext_authz never sees a response), the status and
headers plus the request a `;req` component refers to. Component values follow RFC 9421
section 2: header values trimmed. RFC 9421 joins a repeated header's values with `, `; Envoy
joins them with `,` and a single value may itself hold commas, so the two cannot be told
apart: a covered header sent twice does not verify, and the request fails closed.
Structured-field re-serialisation (`;sf`, `;key`, `;bs`, `;tr`) and `@query-param` are not
supported; a signature covering them is refused, never verified against a guessed value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from authz.credentials.httpsig.structured_fields import (
    InnerList,
    Item,
    serialize_inner_list,
    serialize_item,
)


class ComponentError(ValueError):
    """A covered component cannot be computed for this message."""

    def __init__(self, message: str, *, absent: bool = False) -> None:
        super().__init__(message)
        self.absent = absent
        """The component is understood but the message does not have it."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    """The raw path without its query, as Envoy forwarded it (not decoded)."""
    query: str
    """The raw query without its `?` (empty when there is none)."""
    headers: Mapping[str, str]
    """Lower-cased names, repeated headers joined with commas."""
    authority: str = ""
    scheme: str = ""
    body: bytes | None = None
    """The exact body bytes Envoy forwarded (empty for a request without a body); None when
    the request has a body Envoy did not forward as bytes, which nothing can verify."""
    body_partial: bool = False
    """Envoy forwarded only the start of the body (its buffer limit was reached)."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    request: HttpRequest | None = None
    """The request this responds to: what `;req` components read."""
    body: bytes | None = field(default=None)


HttpMessage = HttpRequest | HttpResponse

_REQUEST_DERIVED = frozenset(
    {"@method", "@path", "@query", "@authority", "@scheme", "@target-uri", "@request-target"}
)


def _header_value(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise ComponentError(f"covered header {name!r} is absent", absent=True)
    # Used as Envoy forwards it: splitting on commas would corrupt a single value that
    # contains one (a quoted media-type parameter, a two-digest Content-Digest).
    return value.strip(" \t")


def _request_value(request: HttpRequest, name: str) -> str:
    if name == "@method":
        return request.method
    if name == "@path":
        return request.path or "/"
    if name == "@query":
        return "?" + request.query
    if name == "@request-target":
        return request.path + ("?" + request.query if request.query else "")
    if not request.authority or not request.scheme:
        raise ComponentError(f"{name} is not known for this request")
    if name == "@authority":
        return request.authority.lower()
    if name == "@scheme":
        return request.scheme.lower()
    target = f"{request.scheme.lower()}://{request.authority.lower()}{request.path}"
    return target + ("?" + request.query if request.query else "")


def component_value(message: HttpMessage, component: Item) -> str:
    """The value of one covered component, or raise `ComponentError`."""
    name = component.value
    if not isinstance(name, str):
        raise ComponentError("a component identifier must be a string")
    params = dict(component.params)
    from_request = params.pop("req", False) is True
    if params:
        raise ComponentError(f"component parameters {sorted(params)} are not supported")
    if from_request:
        if not isinstance(message, HttpResponse) or message.request is None:
            raise ComponentError(";req is only meaningful on a response")
        target: HttpMessage = message.request
    else:
        target = message
    if name == "@status":
        if not isinstance(target, HttpResponse):
            raise ComponentError("@status is only defined for responses")
        return str(target.status)
    if name.startswith("@"):
        if name not in _REQUEST_DERIVED:
            raise ComponentError(f"derived component {name!r} is not supported")
        if not isinstance(target, HttpRequest):
            raise ComponentError(f"{name} is only defined for requests")
        return _request_value(target, name)
    if name != name.lower() or not name:
        raise ComponentError("header component names are lower-case")
    return _header_value(target.headers, name)


def signature_base(message: HttpMessage, covered: InnerList) -> bytes:
    """The bytes a signature over `covered` (with its parameters) signs.

    Raises `ComponentError` for a component that is repeated, unsupported or absent.
    """
    lines: list[str] = []
    seen: set[str] = set()
    for component in covered.items:
        identifier = serialize_item(component)
        if identifier in seen:
            raise ComponentError(f"component {identifier} is covered twice")
        seen.add(identifier)
        value = component_value(message, component)
        if "\n" in value or "\r" in value:
            raise ComponentError(f"component {identifier} contains a line break")
        lines.append(f"{identifier}: {value}")
    lines.append(f'"@signature-params": {serialize_inner_list(covered)}')
    return "\n".join(lines).encode("utf-8")


def covered_names(covered: InnerList) -> Sequence[str]:
    """The covered component names of the message itself (not `;req` ones)."""
    return [
        item.value
        for item in covered.items
        if isinstance(item.value, str) and "req" not in item.params
    ]
