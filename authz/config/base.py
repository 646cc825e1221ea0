"""What every configuration model shares: strictness and the checks of common value types."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from authz.credentials.algorithms import SUPPORTED_ALGORITHMS
from authz.credentials.identifiers import InvalidIdentifier, parse_workload_id
from authz.http_names import ENVOY_STATUS_CODES, HEADER_NAME

PositiveSeconds = Annotated[float, Field(gt=0)]
ProofStyleName = Literal["wpt", "http_signature"]
PositiveInt = Annotated[int, Field(gt=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def check_header_name(value: str) -> str:
    if HEADER_NAME.fullmatch(value) is None or value != value.lower():
        raise ValueError("must be a lower-case HTTP header name")
    return value


def check_status(value: int) -> int:
    if value not in ENVOY_STATUS_CODES:
        raise ValueError(f"{value} is not an HTTP status Envoy can send")
    return value


def check_algorithms(values: list[str]) -> list[str]:
    for value in values:
        if value not in SUPPORTED_ALGORITHMS:
            supported = ", ".join(SUPPORTED_ALGORITHMS)
            raise ValueError(f"{value!r} is not an allowed algorithm (choose from {supported})")
    if not values:
        raise ValueError("list at least one algorithm")
    return values


def check_host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected host:port")
    return value


DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DNS_NAME = re.compile(rf"(?=.{{1,253}}$)(?:{DNS_LABEL}\.)*{DNS_LABEL}")
"""A lower-case DNS name without a trailing dot (no wildcards)."""


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def check_origin(value: str) -> str:
    """A lower-case `scheme://host[:port]` (http or https), nothing before or after."""
    parts = urlsplit(value)
    if (
        parts.scheme not in ("https", "http")
        or not parts.hostname
        or "@" in parts.netloc
        or value != f"{parts.scheme}://{parts.netloc}"
        or value != value.lower()
    ):
        raise ValueError(f"{value!r} is not a lower-case origin like https://svc.example.com")
    return value


def check_workload_id(value: str) -> str:
    """A canonical workload identifier (`spiffe://` or `wimse://`)."""
    try:
        parse_workload_id(value)
    except InvalidIdentifier as exc:
        raise ValueError(str(exc)) from None
    return value


_RULE_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_rule_path(value: str) -> str:
    """A Rego rule as an OPA path (`envoy/authz/allow`) or `data.envoy.authz.allow`,
    normalised to the latter."""
    path = value.removeprefix("data.").replace("/", ".").strip(".")
    segments = path.split(".")
    if len(segments) < 2 or not all(_RULE_SEGMENT.fullmatch(s) for s in segments):
        raise ValueError("expected a rule path such as envoy/authz/allow")
    return "data." + path
