"""Noticing that the shared Redis lost the proofs it recorded, and refusing those proofs
that could have been used before the loss.

A Redis restarted without persistence, flushed, restored from an older snapshot, or failed
over to a replica that had not received the latest writes no longer knows every proof it
recorded: a proof accepted before the loss would be accepted once more.

Detection. The key `<prefix>:sentinel` holds `<loss time in ms> <run_id>`: when the latest
loss was recorded, by the gateway's clock, and the `run_id` of the Redis process that
recorded it. It has no expiry.
- Every claim is one Lua script (`CLAIM_SCRIPT`): `SET` the proof's key `NX PX`, `GET` the
  sentinel, and when it is missing (a flush, a restart without persistence, a new Redis),
  record a loss now, atomically: no claim can ever land in an emptied Redis unnoticed.
- Each new connection first runs `RECONCILE_SCRIPT`: a sentinel recorded under another
  `run_id` than the server's own (a restart that reloaded a snapshot, a failover) records a
  loss now. A connection dropped by a restart or failover is always replaced by a new one,
  so this costs nothing per claim. Both scripts read `run_id` from `INFO server` inside
  Redis: the sentinel is checked against the server that answers, never a client's belief.
Every claim's reply carries the sentinel, so a loss recorded by one replica reaches every
other on its next claim.

The rule. A verifier passes the earliest time any replica could have accepted the proof
(`usable_from`, from the proof's own signed times and this gateway's acceptance limits). A
proof with `usable_from` before the latest loss may have been accepted and then forgotten:
it is refused, `replay.state_lost`. A proof accepted before the loss has expired by
`loss + longest proof lifetime + twice the clock skew`, and after that no verified proof has
`usable_from` before the loss, so the rule ends by itself.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from authz.clock import Clock
from authz.errors import CredentialError
from authz.reasons import Reason

log = logging.getLogger("authz.replay")

CLAIM_SCRIPT = """
local claimed = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
local sentinel = redis.call('GET', KEYS[2])
local cause = 0
if not (sentinel and string.match(sentinel, '^%d+ %x+$')) then
  local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  sentinel = ARGV[3] .. ' ' .. run_id
  redis.call('SET', KEYS[2], sentinel)
  cause = 1
end
if claimed then
  return {1, sentinel, cause}
end
return {0, sentinel, cause}
"""
"""KEYS: the proof's key, the sentinel. ARGV: a claim token, the key's lifetime in ms, now
in ms. Returns {claimed (1/0), the sentinel, what was recorded now (a `LOSS_CAUSES` index)}."""

CLAIM_SCRIPT_SHA = hashlib.sha1(CLAIM_SCRIPT.encode(), usedforsecurity=False).hexdigest()
"""How Redis names the script in its cache (EVALSHA)."""

RECONCILE_SCRIPT = """
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local sentinel = redis.call('GET', KEYS[1])
local cause = 0
local recorded = sentinel and string.match(sentinel, '^%d+ (%x+)$')
if not recorded then
  cause = 1
elseif recorded ~= run_id then
  cause = 2
end
if cause ~= 0 then
  sentinel = ARGV[1] .. ' ' .. run_id
  redis.call('SET', KEYS[1], sentinel)
end
return {sentinel, cause}
"""
"""KEYS: the sentinel. ARGV: now in ms. Returns {the sentinel, what was recorded now}."""

LOSS_CAUSES = ("", "sentinel_missing", "run_id_changed")
"""What made a replica record a loss, by the scripts' cause number (0: nothing)."""


def sentinel_key(prefix: str) -> str:
    """The sentinel's key: never a proof's (those end in 64 hex digits)."""
    return f"{prefix}:sentinel"


def sentinel_value(lost_at: float, run_id: str) -> bytes:
    """The sentinel as the scripts write it for a loss recorded at `lost_at` (Unix seconds)
    by the Redis process `run_id`: for tools that prepare a store."""
    return f"{math.ceil(lost_at * 1000)} {run_id}".encode()


@dataclass(frozen=True, slots=True)
class ClaimReply:
    """A claim script's answer."""

    claimed: bool
    sentinel: bytes
    cause: int


def claim_reply(raw: object) -> ClaimReply:
    """`CLAIM_SCRIPT`'s reply, typed; `ValueError` for anything else."""
    if not isinstance(raw, list) or len(raw) != 3:
        raise ValueError("unexpected claim script reply")
    claimed, sentinel, cause = raw
    if not isinstance(sentinel, bytes) or not isinstance(cause, int):
        raise ValueError("unexpected claim script reply")
    return ClaimReply(claimed == 1, sentinel, cause)


class StoreLoss:
    """What this process knows of the shared store's latest loss of records.

    `connect` goes in the connection pool (`redis_connect_func`); `learn` takes each claim
    reply's sentinel; `check` applies the rule. Use it from one event loop.
    """

    def __init__(
        self,
        prefix: str,
        clock: Clock,
        *,
        where: str,
        on_loss: Callable[[str], None] | None = None,
        on_lost_at: Callable[[float], None] | None = None,
    ) -> None:
        """`on_loss(cause)`: a loss this process recorded; `on_lost_at(time)`: the latest
        loss known changed. `where` names the store in logs (never credentials)."""
        self.key = sentinel_key(prefix)
        self._clock = clock
        self._where = where
        self._on_loss = on_loss
        self._on_lost_at = on_lost_at
        self._seen: bytes | None = None
        self.lost_at: float | None = None
        """The latest loss known, by the recording gateway's clock; None before the first
        reply."""

    def now_ms(self) -> int:
        """Now, in the milliseconds a loss is recorded in (rounded up: never early)."""
        return math.ceil(self._clock() * 1000)

    def check(self, usable_from: float) -> None:
        """Raise `CredentialError` (`replay.state_lost`) when a proof first usable at
        `usable_from` may have been accepted before the latest loss known."""
        lost_at = self.lost_at
        if lost_at is not None and usable_from < lost_at:
            raise CredentialError(
                Reason.REPLAY_STATE_LOST,
                "the proof could have been used before the replay store lost its records",
            )

    async def connect(self, connection: AbstractConnection) -> None:
        """The connection's usual handshake, then `RECONCILE_SCRIPT` on it. Raises
        `RedisError` when that fails: redis-py then drops the connection, so no claim ever
        runs on a connection whose server was not checked."""
        await connection.on_connect()
        await connection.send_command("EVAL", RECONCILE_SCRIPT, 1, self.key, self.now_ms())
        reply = await connection.read_response()
        if (
            not isinstance(reply, list)
            or len(reply) != 2
            or not isinstance(reply[0], bytes)
            or not isinstance(reply[1], int)
        ):
            raise RedisError("unexpected reconcile script reply")
        try:
            self.learn(reply[0], reply[1])
        except ValueError as error:
            raise RedisError(str(error)) from None

    def learn(self, sentinel: bytes, cause: int) -> None:
        """Take in a sentinel Redis returned, and `cause` when this process recorded it."""
        if sentinel == self._seen and not cause:
            return
        self._seen = sentinel
        try:
            lost_at = int(sentinel.split(b" ", 1)[0]) / 1000
        except ValueError:
            raise ValueError("the replay store's sentinel is malformed") from None
        if cause:
            label = LOSS_CAUSES[cause] if cause < len(LOSS_CAUSES) else "unknown"
            if self._on_loss is not None:
                self._on_loss(label)
            # Once per loss: only the replica whose claim or connection recorded it warns.
            log.warning(
                "replay store %s lost its records (%s): recorded at %s; refusing proofs that "
                "could have been used before then (replay.state_lost) until they expire",
                self._where,
                label,
                _utc(lost_at),
            )
        if self.lost_at is None or lost_at > self.lost_at:
            if not cause:
                log.info(
                    "replay store %s: latest loss of its records was recorded at %s",
                    self._where,
                    _utc(lost_at),
                )
            self.lost_at = lost_at
            if self._on_lost_at is not None:
                self._on_lost_at(lost_at)


def _utc(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="milliseconds")
