"""Fixtures shared by the security corpora."""

from __future__ import annotations

import pytest

HEADER_SHAPES = {"headers": False, "header_map": True}
"""How Envoy sends request headers: the `headers` map, or (`encode_raw_headers`)
`header_map` with raw byte values."""


@pytest.fixture(params=HEADER_SHAPES)
def raw_headers(request: pytest.FixtureRequest) -> bool:
    """Run the test once with each header shape; True for `header_map`."""
    return HEADER_SHAPES[request.param]
