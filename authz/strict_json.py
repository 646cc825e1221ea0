"""JSON parsing without the extensions Python accepts by default (NaN, Infinity)."""

from __future__ import annotations

import json
from typing import Any


def reject_constant(name: str) -> None:
    raise ValueError(f"non-standard JSON constant {name}")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name")
    return result


def loads(text: str) -> Any:
    """Standard JSON only: NaN and Infinity are errors."""
    return json.loads(text, parse_constant=reject_constant)


def loads_object(data: bytes) -> dict[str, Any]:
    """A UTF-8 JSON object with unique member names (what JOSE headers and claims must be)."""
    value = json.loads(
        data.decode("utf-8"), object_pairs_hook=_reject_duplicates, parse_constant=reject_constant
    )
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value
