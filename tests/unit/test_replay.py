from __future__ import annotations

import asyncio

import pytest

from authz.errors import UnavailableError
from authz.reasons import Reason
from authz.replay.memory import InMemoryReplayCache
from tests.support import MutableClock


def test_first_claim_succeeds_and_repeat_is_refused() -> None:
    cache = InMemoryReplayCache(10, MutableClock(100))
    assert cache.claim_now("a", "1", 200)
    assert not cache.claim_now("a", "1", 200)
    assert cache.claim_now("b", "1", 200), "identifiers are per sender"
    assert len(cache) == 2


def test_async_claim_matches_sync_claim() -> None:
    cache = InMemoryReplayCache(10, MutableClock(100))
    assert asyncio.run(cache.claim("a", "1", 200))
    assert not asyncio.run(cache.claim("a", "1", 200))


def test_entries_expire_with_the_proof() -> None:
    clock = MutableClock(100)
    cache = InMemoryReplayCache(10, clock)
    cache.claim_now("a", "1", 150)
    clock.now = 150
    assert not cache.claim_now("a", "1", 150), "still unexpired at its expiry instant"
    clock.now = 151
    assert cache.claim_now("a", "1", 250)


def test_full_cache_refuses_rather_than_evicting_live_entries() -> None:
    clock = MutableClock(100)
    full: list[int] = []
    cache = InMemoryReplayCache(2, clock, on_full=lambda: full.append(1))
    cache.claim_now("a", "1", 1000)
    cache.claim_now("a", "2", 1000)
    with pytest.raises(UnavailableError) as caught:
        cache.claim_now("a", "3", 1000)
    assert caught.value.reason is Reason.REPLAY_CAPACITY
    assert full == [1]
    assert not cache.claim_now("a", "1", 1000), "live entries were kept"


def test_expired_entries_make_room() -> None:
    clock = MutableClock(100)
    cache = InMemoryReplayCache(2, clock)
    cache.claim_now("a", "1", 110)
    cache.claim_now("a", "2", 1000)
    clock.now = 111
    assert cache.claim_now("a", "3", 1000)
    assert len(cache) == 2


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        InMemoryReplayCache(0, MutableClock())
