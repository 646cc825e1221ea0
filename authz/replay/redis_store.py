"""A replay cache shared by every gateway replica, kept in Redis.

A claim is one Lua script run atomically by Redis (`authz.replay.redis_loss.CLAIM_SCRIPT`):
`SET <key> <token> NX PX <ms>`, so of any number of replicas or tasks racing on one proof
exactly one wins and the key expires when the proof does, plus a read of the sentinel that
tells whether Redis has lost its records since the proof could first have been used (then
the proof is refused: `replay.state_lost`; see `authz.replay.redis_loss`). The lifetime is
sent relative to this gateway's clock (`PX`), so the Redis host's clock plays no part.

Keys are `<prefix>:<sha256 hex of sender, NUL, proof id>`: a fixed size whatever a caller
puts in its proof, and proof ids never reach Redis as they are. A sender is a canonical
workload id, which never contains NUL, so two (sender, proof id) pairs never share a key.

Redis unreachable, too slow, refusing the gateway's credentials or answering an error: the
claim raises `UnavailableError` (`replay.store_unavailable`), or, when a local fallback is
given, is checked against that process-local cache instead. It is never accepted unchecked.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    NoScriptError,
    RedisError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from authz.clock import Clock
from authz.config import RedisReplayConfig
from authz.errors import ConfigError, UnavailableError
from authz.files import read_bounded
from authz.reasons import Reason
from authz.replay.memory import InMemoryReplayCache
from authz.replay.redis_loss import (
    CLAIM_SCRIPT,
    CLAIM_SCRIPT_SHA,
    ClaimReply,
    StoreLoss,
    claim_reply,
)

log = logging.getLogger("authz.replay")

MAX_PASSWORD_BYTES = 4096

# Connection errors that a second attempt right away cannot cure.
_NOT_RETRIED = (AuthenticationError, AuthorizationError, BusyLoadingError)


def replay_key(prefix: str, sender: str, proof_id: str) -> str:
    """The Redis key recording `proof_id` from `sender`."""
    # surrogatepass: a JSON `jti` may hold a lone surrogate, which strict UTF-8 refuses.
    material = f"{sender}\0{proof_id}".encode("utf-8", "surrogatepass")
    return f"{prefix}:{hashlib.sha256(material).hexdigest()}"


class RedisReplayCache:
    """Replay protection shared through Redis; implements `ReplayCache`.

    Use it from one event loop (the serving one): redis.asyncio connections belong to the
    loop that opened them. `aclose()` releases them.
    """

    def __init__(
        self,
        client: Redis,
        key_prefix: str,
        clock: Clock,
        loss: StoreLoss,
        *,
        deadline: float,
        fallback: InMemoryReplayCache | None = None,
        on_error: Callable[[], None] | None = None,
        on_fallback: Callable[[], None] | None = None,
        where: str = "redis",
    ) -> None:
        """`loss` must be the one `client`'s connection pool runs on connect
        (`open_redis_replay_cache` wires both). `deadline` bounds a claim, its retry
        included. `fallback`: where claims go while Redis cannot answer; none: they fail.
        `where` names the store in logs (never credentials)."""
        self._client = client
        self._prefix = key_prefix
        self._clock = clock
        self._loss = loss
        self._deadline = deadline
        self._fallback = fallback
        self._on_error = on_error
        self._on_fallback = on_fallback
        self._where = where
        self._outage = False

    def __len__(self) -> int:
        """Entries held in this process: the local fallback's (Redis's are not counted)."""
        return len(self._fallback) if self._fallback is not None else 0

    @property
    def lost_at(self) -> float | None:
        """When Redis last lost its records, as far as this process knows (None: not known
        yet, before the first answer)."""
        return self._loss.lost_at

    async def claim(
        self, sender: str, proof_id: str, expires_at: float, *, usable_from: float
    ) -> bool:
        # A loss already known refuses the proof without a round trip; a newer one is
        # learnt from the claim's reply.
        self._loss.check(usable_from)
        key = replay_key(self._prefix, sender, proof_id)
        lifetime_ms = max(1, math.ceil((expires_at - self._clock()) * 1000))
        try:
            async with asyncio.timeout(self._deadline):
                claimed = await self._set_if_absent(key, lifetime_ms)
        except (RedisError, OSError, TimeoutError, ValueError) as error:
            return self._unavailable(error, sender, proof_id, expires_at)
        if self._outage:
            self._outage = False
            log.info("replay store %s answers again", self._where)
        self._loss.check(usable_from)
        fallback = self._fallback
        if claimed and fallback is not None and len(fallback) and fallback.seen(sender, proof_id):
            return False  # accepted here during an outage; Redis never heard of it
        return claimed

    async def aclose(self) -> None:
        """Close the connections; call it on the loop that used them."""
        await self._client.aclose()

    async def _set_if_absent(self, key: str, lifetime_ms: int) -> bool:
        token = secrets.token_hex(8)
        try:
            return self._learn(await self._claim(key, token, lifetime_ms))
        except RedisConnectionError as error:
            if isinstance(error, _NOT_RETRIED):
                raise
        # A connection Redis dropped (a restart, an idle timeout) fails at once: one retry,
        # on a fresh connection. The first claim may have been applied before the connection
        # broke; the key then holds this claim's own token, and the proof is still ours.
        if self._learn(await self._claim(key, token, lifetime_ms)):
            return True
        return await self._client.get(key) == token.encode()

    async def _claim(self, key: str, token: str, lifetime_ms: int) -> ClaimReply:
        keys_and_args = (key, self._loss.key, token, lifetime_ms, self._loss.now_ms())
        try:
            raw = await self._client.evalsha(CLAIM_SCRIPT_SHA, 2, *keys_and_args)
        except NoScriptError:
            # A restarted Redis has forgotten its scripts: send this one whole, once.
            raw = await self._client.eval(CLAIM_SCRIPT, 2, *keys_and_args)
        return claim_reply(raw)

    def _learn(self, reply: ClaimReply) -> bool:
        self._loss.learn(reply.sentinel, reply.cause)
        return reply.claimed

    def _unavailable(
        self, error: BaseException, sender: str, proof_id: str, expires_at: float
    ) -> bool:
        if self._on_error is not None:
            self._on_error()
        fallback = self._fallback
        if not self._outage:
            self._outage = True
            log.warning(
                "replay store %s unavailable (%s: %s): %s until it answers",
                self._where,
                type(error).__name__,
                error,
                "checking proofs in this process only"
                if fallback is not None
                else "refusing proofs",
            )
        if fallback is None:
            raise UnavailableError(
                Reason.REPLAY_STORE_UNAVAILABLE, f"replay store {self._where} unavailable"
            ) from None
        if self._on_fallback is not None:
            self._on_fallback()
        return fallback.claim_now(sender, proof_id, expires_at)


def open_redis_replay_cache(
    settings: RedisReplayConfig,
    clock: Clock,
    *,
    fallback: InMemoryReplayCache | None,
    on_error: Callable[[], None] | None = None,
    on_fallback: Callable[[], None] | None = None,
    on_loss: Callable[[str], None] | None = None,
    on_lost_at: Callable[[float], None] | None = None,
) -> RedisReplayCache:
    """A cache on the configured Redis. Nothing connects yet: the first claim does, on the
    loop it runs on. `on_loss(cause)`: this process recorded a loss of Redis's records;
    `on_lost_at(time)`: the latest loss known changed. Raises `ConfigError` when the
    password cannot be read."""
    parts = urlsplit(settings.url)
    host, port = parts.hostname or "", parts.port or 6379
    db = int(parts.path.removeprefix("/") or 0)
    where = f"{parts.scheme}://{parts.netloc}/{db}"
    loss = StoreLoss(
        settings.key_prefix, clock, where=where, on_loss=on_loss, on_lost_at=on_lost_at
    )
    tls: dict[str, Any] = {}
    if parts.scheme == "rediss":
        tls = {
            "ssl_ca_certs": _optional_str(settings.ca_file),
            "ssl_certfile": _optional_str(settings.cert_file),
            "ssl_keyfile": _optional_str(settings.key_file),
        }
    pool = BlockingConnectionPool(
        connection_class=SSLConnection if tls else Connection,
        max_connections=settings.max_connections,
        timeout=settings.timeout_seconds,  # waiting for a free connection
        host=host,
        port=port,
        db=db,
        username=settings.username,
        password=read_password(settings),
        socket_connect_timeout=settings.connect_timeout_seconds,
        socket_timeout=settings.timeout_seconds,
        retry=Retry(NoBackoff(), 0),  # the one retry is the cache's own, within its deadline
        client_name="wimse-authz",
        redis_connect_func=loss.connect,
        **tls,
    )
    return RedisReplayCache(
        Redis.from_pool(pool),
        settings.key_prefix,
        clock,
        loss,
        deadline=settings.connect_timeout_seconds + settings.timeout_seconds,
        fallback=fallback if settings.on_unavailable == "local_fallback" else None,
        on_error=on_error,
        on_fallback=on_fallback,
        where=where,
    )


def read_password(settings: RedisReplayConfig) -> str | None:
    """The Redis password from `password_file` or `password_env`; none if neither is set."""
    if settings.password_file is not None:
        where = f"replay.redis.password_file {settings.password_file}"
        raw = read_bounded(settings.password_file, MAX_PASSWORD_BYTES, "replay.redis.password_file")
        try:
            password = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise ConfigError(f"{where}: not UTF-8 text") from None
    elif settings.password_env is not None:
        where = f"replay.redis.password_env: ${settings.password_env}"
        password = os.environ.get(settings.password_env, "")
    else:
        return None
    if not password:
        raise ConfigError(f"{where} is empty or unset")
    return password


def _optional_str(value: object | None) -> str | None:
    return None if value is None else str(value)
