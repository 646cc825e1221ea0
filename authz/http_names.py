"""HTTP vocabulary shared by configuration and policy decisions."""

from __future__ import annotations

import re

from envoy.type.v3 import http_status_pb2

HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
"""An RFC 9110 field name (token)."""

ENVOY_STATUS_CODES = frozenset(http_status_pb2.StatusCode.values()) - {0}
"""HTTP statuses Envoy's `HttpStatus` can carry in a denied response."""
