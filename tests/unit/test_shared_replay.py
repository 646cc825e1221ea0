"""The replay table the workers of `serve --workers N` share: claims, expiry, a full table,
tombstones, the lock, and real processes racing on the same proofs."""

from __future__ import annotations

import asyncio
import fcntl
import multiprocessing
import os
import struct
from collections import Counter
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from authz.errors import ConfigError, UnavailableError
from authz.reasons import Reason
from authz.replay.shared_memory import (
    COUNTED_EXACTLY,
    HEADER_BYTES,
    SharedMemoryReplayCache,
    create_replay_table,
    slots_for,
    table_bytes,
)


class MutableClock:
    """A clock tests can move (tests.support has one too; importing it would make every
    racing process below import the whole gateway)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def table(tmp_path: Path, slots: int = 64, window: int = 16) -> Path:
    path = tmp_path / "replay.table"
    create_replay_table(path, slots, window)
    return path


def test_first_claim_succeeds_and_repeat_is_refused(tmp_path: Path) -> None:
    cache = SharedMemoryReplayCache(table(tmp_path), MutableClock(100))
    assert cache.claim_now("a", "1", 200)
    assert not cache.claim_now("a", "1", 200)
    assert cache.claim_now("b", "1", 200), "identifiers are per sender"
    assert asyncio.run(cache.claim("a", "2", 200))
    assert not asyncio.run(cache.claim("a", "2", 200))
    assert len(cache) == 3


def test_a_claim_made_through_one_mapping_is_refused_through_another(tmp_path: Path) -> None:
    path = table(tmp_path)
    first = SharedMemoryReplayCache(path, MutableClock(100))
    second = SharedMemoryReplayCache(path, MutableClock(100))
    assert first.claim_now("a", "1", 200)
    assert not second.claim_now("a", "1", 200)
    assert len(second) == 1


def test_entries_expire_with_the_proof(tmp_path: Path) -> None:
    clock = MutableClock(100)
    cache = SharedMemoryReplayCache(table(tmp_path), clock)
    cache.claim_now("a", "1", 150)
    clock.now = 150
    assert not cache.claim_now("a", "1", 150), "still unexpired at its expiry instant"
    clock.now = 151
    assert len(cache) == 0
    assert cache.claim_now("a", "1", 250)
    assert not cache.claim_now("a", "1", 250)


def test_a_full_window_refuses_rather_than_evicting_live_entries(tmp_path: Path) -> None:
    clock = MutableClock(100)
    full: list[int] = []
    # One home slot and a window of four: every proof competes for the same four slots.
    cache = SharedMemoryReplayCache(
        table(tmp_path, slots=1, window=4), clock, on_full=lambda: full.append(1)
    )
    for proof in "1234":
        assert cache.claim_now("a", proof, 1000)
    with pytest.raises(UnavailableError) as caught:
        cache.claim_now("a", "5", 1000)
    assert caught.value.reason is Reason.REPLAY_CAPACITY
    assert full == [1]
    for proof in "1234":
        assert not cache.claim_now("a", proof, 1000), "live entries were kept"


def test_expired_entries_make_room(tmp_path: Path) -> None:
    clock = MutableClock(100)
    cache = SharedMemoryReplayCache(table(tmp_path, slots=1, window=2), clock)
    cache.claim_now("a", "1", 110)
    cache.claim_now("a", "2", 1000)
    clock.now = 111
    assert cache.claim_now("a", "3", 1000)
    assert len(cache) == 2
    assert not cache.claim_now("a", "2", 1000)
    assert not cache.claim_now("a", "3", 1000)


def test_a_reused_expired_slot_never_hides_a_live_entry_behind_it(tmp_path: Path) -> None:
    """Tombstones: the expired slot in front of a live entry is free for others, but a claim
    for the live entry must still find it further along its window."""
    clock = MutableClock(100)
    cache = SharedMemoryReplayCache(table(tmp_path, slots=1, window=4), clock)
    assert cache.claim_now("a", "early", 110)  # slot 0
    assert cache.claim_now("a", "late", 1000)  # slot 1
    clock.now = 111  # slot 0 has expired; slot 1 has not
    assert not cache.claim_now("a", "late", 1000), "found behind the expired slot"
    assert cache.claim_now("a", "new", 1000), "takes the expired slot"
    assert not cache.claim_now("a", "late", 1000)
    assert not cache.claim_now("a", "new", 1000)
    assert len(cache) == 2


def test_slots_for_gives_room_to_spare() -> None:
    assert slots_for(100_000) == 200_000
    with pytest.raises(ValueError, match="positive"):
        slots_for(0)


def test_a_table_others_could_read_is_refused(tmp_path: Path) -> None:
    path = table(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="mode 0600"):
        SharedMemoryReplayCache(path, MutableClock())


def test_a_file_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other"
    path.write_bytes(b"\0" * table_bytes(64, 16))
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="not a replay table"):
        SharedMemoryReplayCache(path, MutableClock())
    cut = table(tmp_path)
    os.truncate(cut, HEADER_BYTES + 100)
    with pytest.raises(ConfigError, match="size does not match"):
        SharedMemoryReplayCache(cut, MutableClock())
    with pytest.raises(ConfigError, match="cannot open"):
        SharedMemoryReplayCache(tmp_path / "absent", MutableClock())


def test_an_existing_file_is_never_reused_as_a_new_table(tmp_path: Path) -> None:
    path = table(tmp_path)
    with pytest.raises(FileExistsError):
        create_replay_table(path, 64, 16)


def test_a_lock_held_too_long_fails_closed(tmp_path: Path) -> None:
    path = table(tmp_path)
    errors: list[int] = []
    cache = SharedMemoryReplayCache(
        path, MutableClock(100), lock_timeout=0.05, on_error=lambda: errors.append(1)
    )
    holder = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(UnavailableError) as caught:
            cache.claim_now("a", "1", 200)
        assert caught.value.reason is Reason.REPLAY_STORE_UNAVAILABLE
        assert errors == [1]
    finally:
        os.close(holder)
    assert cache.claim_now("a", "1", 200), "usable again once the lock is free"


def test_the_table_header_says_what_was_created(tmp_path: Path) -> None:
    path = table(tmp_path, slots=10, window=16)
    magic, slots, window = struct.unpack_from("<8sQQ", path.read_bytes())
    assert (magic, slots, window) == (b"WIMSERP1", 10, 16)
    assert SharedMemoryReplayCache(path, MutableClock()).slots == 10


PROOFS = 3000
RACERS = 4


def race(path: str, start: Barrier, results: Queue[list[int]]) -> None:
    """One racer: claim every proof, in the same order as every other racer."""
    cache = SharedMemoryReplayCache(Path(path), MutableClock(100))
    start.wait()
    won = [index for index in range(PROOFS) if cache.claim_now("a", f"proof-{index}", 1000)]
    results.put(won)


def test_racing_processes_each_proof_is_won_exactly_once(tmp_path: Path) -> None:
    path = table(tmp_path, slots=slots_for(PROOFS), window=128)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(RACERS)
    results: Queue[list[int]] = context.Queue()
    racers = [context.Process(target=race, args=(str(path), start, results)) for _ in range(RACERS)]
    for racer in racers:
        racer.start()
    try:
        won = [results.get(timeout=120) for _ in racers]
    finally:
        for racer in racers:
            racer.join(timeout=30)
            if racer.is_alive():
                racer.kill()
    winners = Counter(index for indexes in won for index in indexes)
    assert sorted(winners) == list(range(PROOFS)), "every proof was accepted once"
    assert set(winners.values()) == {1}, "no proof was accepted twice"
    assert all(racer.exitcode == 0 for racer in racers)


def test_a_large_table_is_counted_by_sampling_close_to_the_truth(tmp_path: Path) -> None:
    """Past `COUNTED_EXACTLY` slots the gauge's count is an estimate from evenly spread
    slots, so a scrape costs little whatever the table's size."""
    path = tmp_path / "replay"
    create_replay_table(path, slots_for(200_000))
    cache = SharedMemoryReplayCache(path, lambda: 1000.0)
    try:
        assert cache.slots > COUNTED_EXACTLY
        for number in range(40_000):
            assert cache.claim_now("spiffe://example.org/a", f"jti-{number}", 2000.0)
        assert abs(len(cache) - 40_000) < 4_000
    finally:
        cache.close()
