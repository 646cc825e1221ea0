"""Turning the decision rule's value into a validated `PolicyDecision`.

The rule may return a boolean or an OPA-Envoy decision object: `allowed` (required) plus
optional `headers`, `response_headers_to_add`, `request_headers_to_remove`, `body`,
`http_status`, `dynamic_metadata`, `query_parameters_to_set`, `query_parameters_to_remove`,
and our `reasons`. An undefined rule is a denial. A value of any other shape is a policy bug,
answered as unavailable (`policy.invalid_decision`) rather than guessed at, and so is a
decision that tries to set a header the gateway itself manages (identity, reason headers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authz.errors import UnavailableError
from authz.http_names import ENVOY_STATUS_CODES, HEADER_NAME
from authz.reasons import Reason

HeaderList = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    allowed: bool
    headers: HeaderList = ()
    """On allow: set on the upstream request. On deny: sent to the client."""
    response_headers_to_add: HeaderList = ()
    request_headers_to_remove: tuple[str, ...] = ()
    body: str | None = None
    http_status: int | None = None
    dynamic_metadata: Mapping[str, Any] | None = None
    query_parameters_to_set: HeaderList = ()
    query_parameters_to_remove: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    defined: bool = True
    """False when the decision rule was undefined for this input."""


UNDEFINED = PolicyDecision(allowed=False, defined=False)


class InvalidDecision(UnavailableError):
    def __init__(self, message: str) -> None:
        super().__init__(Reason.POLICY_INVALID_DECISION, message)


def decision_from_result(result: object, managed_headers: frozenset[str]) -> PolicyDecision:
    """Validate the raw rule value; `managed_headers` may not be set by policy."""
    if result is None:
        return UNDEFINED
    if isinstance(result, bool):
        return PolicyDecision(allowed=result)
    if not isinstance(result, dict):
        raise InvalidDecision(f"decision is a {type(result).__name__}, not a boolean or object")
    allowed = result.get("allowed")
    if not isinstance(allowed, bool):
        raise InvalidDecision("decision object needs a boolean 'allowed'")

    headers = _header_pairs(result.get("headers"), "headers")
    response_headers = _header_pairs(result.get("response_headers_to_add"), "response headers")
    for name, _ in (*headers, *response_headers):
        if name.lower() in managed_headers:
            raise InvalidDecision(f"policy may not set the gateway-managed header {name}")
    return PolicyDecision(
        allowed=allowed,
        headers=headers,
        response_headers_to_add=response_headers,
        request_headers_to_remove=_names(result.get("request_headers_to_remove"), header=True),
        body=_optional_string(result.get("body"), "body"),
        http_status=_status(result.get("http_status")),
        dynamic_metadata=_metadata(result.get("dynamic_metadata")),
        query_parameters_to_set=_pairs(result.get("query_parameters_to_set"), "query parameters"),
        query_parameters_to_remove=_names(result.get("query_parameters_to_remove"), header=False),
        reasons=_reasons(result.get("reasons")),
    )


def _pairs(value: object, what: str) -> HeaderList:
    """`{name: value | [values]}` or a list of such objects, as OPA-Envoy accepts."""
    if value is None:
        return ()
    objects = value if isinstance(value, list) else [value]
    pairs: list[tuple[str, str]] = []
    for item in objects:
        if not isinstance(item, dict):
            raise InvalidDecision(f"{what} must be an object or a list of objects")
        for name, values in item.items():
            for single in values if isinstance(values, list | set | tuple) else [values]:
                if not isinstance(single, str) or not isinstance(name, str):
                    raise InvalidDecision(f"{what} names and values must be strings")
                if "\r" in single or "\n" in single or "\0" in single:
                    raise InvalidDecision(f"{what} value for {name} has a control character")
                pairs.append((name, single))
    return tuple(pairs)


def _header_pairs(value: object, what: str) -> HeaderList:
    pairs = _pairs(value, what)
    for name, _ in pairs:
        if HEADER_NAME.fullmatch(name) is None:
            raise InvalidDecision(f"{what}: {name!r} is not a valid header name")
    return pairs


def _names(value: object, *, header: bool) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | set | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidDecision("removal lists must be lists of strings")
    if header and not all(HEADER_NAME.fullmatch(v) for v in value):
        raise InvalidDecision("request_headers_to_remove holds an invalid header name")
    return tuple(sorted(value) if isinstance(value, set) else value)


def _optional_string(value: object, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidDecision(f"{what} must be a string")


def _status(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value not in ENVOY_STATUS_CODES:
        raise InvalidDecision(f"http_status {value!r} is not an HTTP status Envoy can send")
    return value


def _metadata(value: object) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidDecision("dynamic_metadata must be an object")
    normalised = _json_value(value)
    assert isinstance(normalised, dict)
    return normalised


def _json_value(value: object) -> Any:
    """Rego sets arrive as Python sets; metadata must be plain JSON."""
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, set):
        return [_json_value(v) for v in sorted(value, key=repr)]
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


def _reasons(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | set | tuple) and all(isinstance(v, str) for v in value):
        return tuple(sorted(value) if isinstance(value, set) else value)
    raise InvalidDecision("reasons must be a string or a list of strings")
