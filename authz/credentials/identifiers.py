"""Workload identifiers: `spiffe://<trust-domain>/<path>` and `wimse://<trust-domain>/<path>`.

Identifiers are compared byte-for-byte and never normalised or repaired
(draft-ietf-wimse-identifier-03; the SPIFFE ID specification). Anything that is not already
in canonical form is rejected, so two spellings of one workload can never both pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

MAX_IDENTIFIER_BYTES = 2048
MAX_TRUST_DOMAIN_BYTES = 255

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
# SPIFFE restricts path segments to these characters.
_SPIFFE_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
# WIMSE allows RFC 3986 pchar, but not percent-encoding (a canonical form must be unique).
_WIMSE_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]+")

Scheme = Literal["spiffe", "wimse"]


class InvalidIdentifier(ValueError):
    """The string is not a canonical workload identifier; the message says why."""


@dataclass(frozen=True, slots=True)
class WorkloadId:
    """A canonical workload identifier. `uri` is the exact string that was validated."""

    uri: str
    scheme: Scheme
    trust_domain: str
    path: str

    def __str__(self) -> str:
        return self.uri


def parse_workload_id(value: object) -> WorkloadId:
    """Validate `value` as a canonical workload identifier, or raise `InvalidIdentifier`."""
    if not isinstance(value, str):
        raise InvalidIdentifier("identifier is not a string")
    if not value.isascii():
        raise InvalidIdentifier("identifier contains non-ASCII characters")
    if len(value) > MAX_IDENTIFIER_BYTES:
        raise InvalidIdentifier(f"identifier is longer than {MAX_IDENTIFIER_BYTES} bytes")

    scheme: Scheme
    if value.startswith("spiffe://"):
        scheme, segment_pattern = "spiffe", _SPIFFE_SEGMENT
    elif value.startswith("wimse://"):
        scheme, segment_pattern = "wimse", _WIMSE_SEGMENT
    else:
        raise InvalidIdentifier("scheme is not 'spiffe://' or 'wimse://' (lowercase)")

    rest = value[len(scheme) + 3 :]
    if "?" in rest or "#" in rest:
        raise InvalidIdentifier("identifier carries a query or fragment")
    trust_domain, slash, path_tail = rest.partition("/")
    if not trust_domain:
        raise InvalidIdentifier("trust domain is empty")
    if len(trust_domain) > MAX_TRUST_DOMAIN_BYTES:
        raise InvalidIdentifier("trust domain is too long")
    if _TRUST_DOMAIN.fullmatch(trust_domain) is None:
        # Catches userinfo ('@'), ports (':'), uppercase and percent-encoding alike.
        raise InvalidIdentifier("trust domain is not lowercase [a-z0-9._-]")
    if not slash or not path_tail:
        raise InvalidIdentifier("a workload identifier needs a path")
    for segment in path_tail.split("/"):
        if not segment:
            raise InvalidIdentifier("path has an empty segment or a trailing slash")
        if segment in (".", ".."):
            raise InvalidIdentifier("path has a '.' or '..' segment")
        if segment_pattern.fullmatch(segment) is None:
            raise InvalidIdentifier(f"path segment has characters not allowed in {scheme} IDs")
    return WorkloadId(uri=value, scheme=scheme, trust_domain=trust_domain, path="/" + path_tail)


def is_valid_trust_domain(name: str) -> bool:
    """Whether `name` is a canonical trust domain name."""
    return (
        0 < len(name) <= MAX_TRUST_DOMAIN_BYTES
        and name.isascii()
        and _TRUST_DOMAIN.fullmatch(name) is not None
    )
