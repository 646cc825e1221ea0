"""Replay protection for single-use proofs (WPT `jti`s, HTTP-signature nonces).

A proof identifier is remembered until the proof itself can no longer be accepted: a WPT
`jti` per sender (draft-ietf-wimse-wpt), a signature nonce whoever sends it (the
http-signature draft's editor's copy: a nonce seen before is refused, regardless of sender),
recorded under `ANY_SENDER`.

The in-memory cache is bounded; when it is full of unexpired entries it refuses new proofs
(`replay.capacity`, an availability failure) rather than evicting one, because evicting an
unexpired entry would let that proof be replayed. It protects one process; replicas share a
store instead (`authz.replay.redis_store`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Protocol

from authz.clock import Clock
from authz.errors import UnavailableError
from authz.reasons import Reason

ANY_SENDER = ""
"""The sender of proof ids that are single-use whoever presents them. No workload id is
empty, so these never share an entry with a sender's own."""


class ReplayCache(Protocol):
    async def claim(
        self, sender: str, proof_id: str, expires_at: float, *, usable_from: float
    ) -> bool:
        """Record the proof until `expires_at`; False if it was already recorded.

        `usable_from` is the earliest time any replica could have accepted the proof (its
        verifier knows the bound). A store that lost its records since then cannot tell
        whether the proof was used: it raises `CredentialError` (`replay.state_lost`).
        Raises `UnavailableError` when the proof cannot be recorded.
        """
        ...

    def __len__(self) -> int: ...


class InMemoryReplayCache:
    """A bounded replay cache for one gateway process."""

    def __init__(
        self, capacity: int, clock: Clock, on_full: Callable[[], None] | None = None
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._clock = clock
        self._expiry: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []
        self._on_full = on_full

    def __len__(self) -> int:
        return len(self._expiry)

    async def claim(
        self, sender: str, proof_id: str, expires_at: float, *, usable_from: float = -math.inf
    ) -> bool:
        """`usable_from` plays no part: this cache lives and dies with its process, and
        never loses a record while it serves."""
        return self.claim_now(sender, proof_id, expires_at)

    def claim_now(self, sender: str, proof_id: str, expires_at: float) -> bool:
        now = self._clock()
        self._drop_expired(now)
        key = (sender, proof_id)
        if key in self._expiry:
            return False
        if len(self._expiry) >= self._capacity:
            if self._on_full is not None:
                self._on_full()
            raise UnavailableError(
                Reason.REPLAY_CAPACITY, "replay cache is full of unexpired proofs"
            )
        self._expiry[key] = expires_at
        heapq.heappush(self._heap, (expires_at, key))
        return True

    def seen(self, sender: str, proof_id: str) -> bool:
        """Whether the proof is recorded and unexpired; records nothing."""
        self._drop_expired(self._clock())
        return (sender, proof_id) in self._expiry

    def _drop_expired(self, now: float) -> None:
        heap, expiry = self._heap, self._expiry
        while heap and heap[0][0] < now:
            _, key = heapq.heappop(heap)
            del expiry[key]
