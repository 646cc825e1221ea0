"""Verified tokens remembered by their exact bytes until they expire.

A token that verified once verifies again until its `exp` passes: its signature, claims and
anchors cannot change (anchors are immutable per gateway build). So a repeat presentation
costs a dictionary lookup instead of a signature check. Only expiry is re-checked; `iat`
and `nbf`, which passed once, cannot fail later.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from authz.clock import Clock

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class VerifiedCache(Generic[K, V]):
    def __init__(self, entries: int, clock: Clock, clock_skew: float) -> None:
        self._entries = entries
        self._clock = clock
        self._clock_skew = clock_skew
        self._cache: dict[K, tuple[V, float]] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, key: K) -> V | None:
        """The verified value, or None when absent or expired (the caller re-verifies, and
        the full check reports the expiry with its own reason code)."""
        entry = self._cache.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if self._clock() < expires_at + self._clock_skew:
            return value
        del self._cache[key]
        return None

    def put(self, key: K, value: V, expires_at: float) -> None:
        if len(self._cache) >= self._entries:
            # The cache only saves work; dropping the oldest entry is always safe.
            del self._cache[next(iter(self._cache))]
        self._cache[key] = (value, expires_at)
