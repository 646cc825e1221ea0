"""A replay store shared by the worker processes of one `wimse-authz serve --workers N`.

Every worker must refuse a proof that any worker accepted, so the record of accepted proofs
lives in one file that each worker maps into memory: a fixed-size open-addressing hash
table, written under one inter-process lock (`flock` on the file). The supervisor creates
the file, mode 0600, in a directory of its own (0700), and removes it when it stops; a
worker that is restarted finds every proof its predecessor recorded.

Layout (little-endian): a 64-byte header (magic, slot count, probe window, a random 32-byte
key), then one 16-byte digest per physical slot, then one float64 expiry per physical slot
(Unix seconds; 0.0: never used, its digest random). A proof's digest is a BLAKE2b-128 of
(sender, NUL, proof id) keyed with the header's key, so callers cannot aim their proof ids at
one region of the table. Its home slot comes from the digest; it may live in any of the
`window` slots from there (the table has `window - 1` extra slots at the end instead of
wrapping).

A claim, under the lock:
1. looks for the digest in the whole window: live there → replayed (False); there but
   expired → the slot is renewed (True);
2. otherwise takes the first slot in the window that is empty or expired. An expired slot is
   a tombstone: it is reused, never cleared, and step 1 always searches the whole window, so
   reusing one never hides a live entry further along;
3. no such slot: the table is full around this key. The claim is refused (`replay.capacity`);
   nothing unexpired is ever evicted.

The lock is waited for at most `lock_timeout` seconds; beyond that, or on any error taking
it, the claim fails closed (`replay.store_unavailable`).
"""

from __future__ import annotations

import array
import errno
import fcntl
import hashlib
import math
import mmap
import os
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from authz.clock import Clock
from authz.errors import ConfigError, UnavailableError
from authz.reasons import Reason

MAGIC = b"WIMSERP1"
HEADER = struct.Struct("<8sQQ32s")
HEADER_BYTES = 64
DIGEST_BYTES = 16
EXPIRY = struct.Struct("<d")

DEFAULT_WINDOW = 128
"""Slots a proof may be placed in from its home slot. With the table at most half full of
unexpired proofs (`slots_for`), a window this long is all taken with a probability of about
1e-11 per claim (linear probing's run lengths)."""

COUNTED_EXACTLY = 1 << 16
"""Tables with more slots are counted by sampling this many (`len()`, for the gauge)."""

SLOTS_PER_ENTRY = 2
"""`slots_for` gives the table twice the slots of the entries it must hold."""

_CHUNK = 16
_EXPIRY_CHUNK = struct.Struct(f"<{_CHUNK}d")
_LOCK_POLL_SECONDS = 0.00005
_LOCK_YIELDS = 20
_FILL_SLOTS = 65536


def _valid_window(window: int) -> bool:
    return 0 < window <= _CHUNK or (window > 0 and window % _CHUNK == 0)


def slots_for(entries: int) -> int:
    """Home slots for a table that holds at least `entries` unexpired proofs."""
    if entries < 1:
        raise ValueError("entries must be positive")
    return SLOTS_PER_ENTRY * entries


def table_bytes(slots: int, window: int = DEFAULT_WINDOW) -> int:
    """The size of the file holding a table of `slots` home slots."""
    physical = slots + window - 1
    return HEADER_BYTES + physical * (DIGEST_BYTES + EXPIRY.size)


def create_replay_table(path: Path, slots: int, window: int = DEFAULT_WINDOW) -> None:
    """Create an empty table at `path` (mode 0600); it must not exist yet."""
    if slots < 1 or not _valid_window(window):
        raise ValueError("slots must be positive, window 1 to 16 or a multiple of 16")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        # A new file reads as zeros: every expiry 0.0, so every slot empty. Its blocks are
        # reserved now: on a tmpfs that fills up later, writing to a page of a sparse
        # mapping would kill the worker with SIGBUS in the middle of a claim.
        os.posix_fallocate(fd, 0, table_bytes(slots, window))
        os.pwrite(fd, HEADER.pack(MAGIC, slots, window, os.urandom(32)), 0)
        # Empty slots get random digests, not zeros: searching a window of zeros for a
        # digest is several times slower (CPython's byte search barely skips there), and
        # a random digest equals a proof's with probability 2**-128.
        physical = slots + window - 1
        for first in range(0, physical, _FILL_SLOTS):
            count = min(_FILL_SLOTS, physical - first)
            os.pwrite(fd, os.urandom(count * DIGEST_BYTES), HEADER_BYTES + first * DIGEST_BYTES)
    finally:
        os.close(fd)


def _checked_table(fd: int, where: str) -> tuple[int, tuple[int, int, bytes]]:
    """The file's size and its header's slot count, window and key; `ConfigError` unless
    it is a table this process may trust."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{where}: not a regular file")
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise ConfigError(f"{where}: must be this user's, mode 0600")
    header = os.pread(fd, HEADER.size, 0)
    if len(header) < HEADER.size:
        raise ConfigError(f"{where}: truncated")
    magic, slots, window, key = HEADER.unpack(header)
    if magic != MAGIC or slots < 1 or not _valid_window(window):
        raise ConfigError(f"{where}: not a replay table")
    if info.st_size != table_bytes(slots, window):
        raise ConfigError(f"{where}: size does not match its header")
    return info.st_size, (slots, window, key)


class SharedMemoryReplayCache:
    """The table at `path`, mapped into this process; implements `ReplayCache`.

    `close()` unmaps it; the file itself belongs to whoever created it.
    """

    def __init__(
        self,
        path: Path,
        clock: Clock,
        *,
        on_full: Callable[[], None] | None = None,
        on_error: Callable[[], None] | None = None,
        lock_timeout: float = 0.25,
    ) -> None:
        """Raises `ConfigError` if the file is not a table this process may trust: missing,
        not a regular file, readable by other users, owned by another user, or inconsistent
        with its header."""
        self._path = path
        self._clock = clock
        self._on_full = on_full
        self._on_error = on_error
        self._lock_timeout = lock_timeout
        self._thread_lock = threading.Lock()
        where = f"replay table {path}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise ConfigError(f"{where}: cannot open: {exc.strerror}") from None
        try:
            size, (slots, window, key) = _checked_table(fd, where)
            self._map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._key: bytes = key
        self._slots: int = slots
        self._window: int = window
        self._physical = slots + window - 1
        self._digests = HEADER_BYTES
        self._expiries = HEADER_BYTES + self._physical * DIGEST_BYTES
        self._window_format = struct.Struct(f"<{min(window, _CHUNK)}d")

    @property
    def slots(self) -> int:
        return self._slots

    def __len__(self) -> int:
        """Unexpired proofs in the table (all workers'), read without the lock. Exact for a
        table of up to `COUNTED_EXACTLY` slots; a larger one is estimated from that many
        slots evenly spread over it, so a scrape never stalls the worker's loop for long
        (reading 5 million slots would take about a third of a second)."""
        now = float(self._clock())
        physical = self._physical
        if physical <= COUNTED_EXACTLY:
            expiries = struct.unpack_from(f"<{physical}d", self._map, self._expiries)
            return sum(map(now.__le__, expiries))
        stride = physical // COUNTED_EXACTLY
        end = self._expiries + physical * EXPIRY.size
        with memoryview(self._map) as table, table[self._expiries : end] as stored:
            sample = array.array("d", stored.cast("d")[::stride])
        if sys.byteorder != "little":
            sample.byteswap()  # the table is little-endian whatever the machine
        live = sum(map(now.__le__, sample))
        return round(live * physical / len(sample))

    async def claim(
        self, sender: str, proof_id: str, expires_at: float, *, usable_from: float = -math.inf
    ) -> bool:
        """`usable_from` plays no part: the table lives as long as the supervisor whose
        workers share it, and never loses a record while they serve."""
        return self.claim_now(sender, proof_id, expires_at)

    def claim_now(self, sender: str, proof_id: str, expires_at: float) -> bool:
        """Record the proof until `expires_at`; False if it is recorded and unexpired.
        Raises `UnavailableError`: `replay.capacity` when the table is full around this
        proof, `replay.store_unavailable` when the lock cannot be had."""
        # surrogatepass: a JSON `jti` may hold a lone surrogate, which strict UTF-8 refuses.
        material = f"{sender}\0{proof_id}".encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(material, digest_size=DIGEST_BYTES, key=self._key).digest()
        home = int.from_bytes(digest[:8], "little") % self._slots
        with self._thread_lock:
            self._lock()
            try:
                return self._claim(digest, home, self._clock(), expires_at)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            self._map.close()
            os.close(self._fd)
            self._fd = -1

    # -- under the lock -----------------------------------------------------------------

    def _claim(self, digest: bytes, home: int, now: float, expires_at: float) -> bool:
        table = self._map
        start = self._digests + home * DIGEST_BYTES
        end = start + self._window * DIGEST_BYTES
        found = table.find(digest, start, end)
        while found != -1:
            offset = found - start
            if offset % DIGEST_BYTES == 0:
                slot = home + offset // DIGEST_BYTES
                (expiry,) = EXPIRY.unpack_from(table, self._expiries + slot * EXPIRY.size)
                if expiry >= now:
                    return False
                self._write(slot, digest, expires_at)
                return True
            found = table.find(digest, found + 1, end)
        free = self._first_free(home, now)
        if free is None:
            if self._on_full is not None:
                self._on_full()
            raise UnavailableError(
                Reason.REPLAY_CAPACITY, "shared replay table is full of unexpired proofs"
            )
        self._write(free, digest, expires_at)
        return True

    def _first_free(self, home: int, now: float) -> int | None:
        """The first slot of the window that is empty or expired."""
        step = self._window_format.size // EXPIRY.size
        for first in range(home, home + self._window, step):
            expiries = self._window_format.unpack_from(
                self._map, self._expiries + first * EXPIRY.size
            )
            for index, expiry in enumerate(expiries):
                if expiry < now:
                    return first + index
        return None

    def _write(self, slot: int, digest: bytes, expires_at: float) -> None:
        at = self._digests + slot * DIGEST_BYTES
        self._map[at : at + DIGEST_BYTES] = digest
        EXPIRY.pack_into(self._map, self._expiries + slot * EXPIRY.size, expires_at)

    # -- the inter-process lock ---------------------------------------------------------

    def _lock(self) -> None:
        deadline = None
        attempts = 0
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            except OSError as exc:
                self._unavailable(f"cannot lock: {errno.errorcode.get(exc.errno or 0, exc)}")
            else:
                return
            # Another worker holds it for a few microseconds: yield the core to it a few
            # times, then poll (a blocking flock could not be bounded in time).
            attempts += 1
            if attempts <= _LOCK_YIELDS:
                os.sched_yield()
                continue
            now = time.monotonic()
            if deadline is None:
                deadline = now + self._lock_timeout
            elif now > deadline:
                self._unavailable("its lock was held too long")
            time.sleep(_LOCK_POLL_SECONDS)

    def _unavailable(self, why: str) -> NoReturn:
        if self._on_error is not None:
            self._on_error()
        raise UnavailableError(
            Reason.REPLAY_STORE_UNAVAILABLE, f"shared replay table {self._path}: {why}"
        )
