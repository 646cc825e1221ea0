"""Replay state loss in the shared Redis: a real redis-server restarted, flushed, reloaded
from a snapshot; gateways built in-process (real keys, real policy) on a clock the tests
move. A proof that could have been used before the loss is refused (`replay.state_lost`)
until every such proof has expired; proofs that cannot predate it are judged as always."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from authz.devtools.redis import RedisServer
from authz.errors import UnavailableError
from authz.gateway import Gateway, build_gateway
from authz.reasons import Reason
from tests.support import GatewayHarness, check_request, expect_allowed, expect_denied
from tests.unit.test_http_signature import BODY_ROUTE, accepting, signed
from tests.unit.test_metrics import samples
from tests.unit.test_redis_replay import SLOW_OK, open_cache

pytest_plugins = ("tests.redis_server",)  # the `redis_server` fixture

SKEW = 30.0  # the harness's clock_skew_seconds (the default)
WPT_MAX_LIFETIME = 300.0  # wpt.max_lifetime_seconds (the default)
WINDOW = WPT_MAX_LIFETIME + 2 * SKEW
"""After a loss, every proof that could have been used before it has expired by then."""
LOSSES = "wimse_authz_replay_store_losses_total"
LOST_AT = "wimse_authz_replay_store_lost_at_seconds"


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def on_redis(harness: GatewayHarness, server: RedisServer) -> GatewayHarness:
    """The harness gateway (WPTs and HTTP signatures) with `server` as its replay store."""
    both = accepting(harness, "wpt", "http_signature")
    return both.rebuild(replay={"redis": {"url": server.url, **SLOW_OK}})


def replicas(harness: GatewayHarness, count: int = 1) -> list[Gateway]:
    config = harness.config()
    return [build_gateway(config, harness.clock) for _ in range(count)]


async def check(replica: Gateway, headers: Mapping[str, str], **kwargs: Any) -> Any:
    return await replica.pipeline.check(check_request("/api/hello", headers, **kwargs).attributes)


async def close(*gateways: Gateway) -> None:
    for gateway in gateways:
        await gateway.runtime.aclose()


def losses(replica: Gateway) -> dict[str, float]:
    values = samples(replica.runtime.metrics)
    counted = {
        dict(labels)["cause"]: value for (name, labels), value in values.items() if name == LOSSES
    }
    return {"lost_at": values[(LOST_AT, ())], **counted}


# --- a restart without persistence ------------------------------------------------------------


def test_a_wpt_accepted_before_a_redis_restart_is_refused_after_it(
    harness: GatewayHarness, redis_server: RedisServer
) -> None:
    shared = on_redis(harness, redis_server)
    [replica] = replicas(shared)
    headers = shared.signed_headers()

    async def scenario() -> None:
        try:
            expect_allowed(await check(replica, headers))
            expect_denied(await check(replica, headers), Reason.WPT_REPLAYED, 401)
            redis_server.stop()
            redis_server.start()  # empty: it no longer knows the WPT
            shared.clock.now += 1
            expect_denied(await check(replica, headers), Reason.REPLAY_STATE_LOST, 401)
        finally:
            await close(replica)

    run(scenario)
    assert losses(replica) == {
        "lost_at": shared.clock.now,
        "sentinel_missing": 1,
        "run_id_changed": 0,
    }


def test_a_signature_accepted_before_a_redis_restart_is_refused_after_it(
    harness: GatewayHarness, redis_server: RedisServer
) -> None:
    shared = on_redis(harness, redis_server)
    [replica] = replicas(shared)
    headers = signed(shared, nonce="before-the-restart")

    async def scenario() -> None:
        try:
            expect_allowed(await check(replica, headers, context=BODY_ROUTE))
            redis_server.stop()
            redis_server.start()
            verdict = await check(replica, headers, context=BODY_ROUTE)
            expect_denied(verdict, Reason.REPLAY_STATE_LOST, 400)
        finally:
            await close(replica)

    run(scenario)


def test_proofs_made_after_the_loss_are_accepted_once_they_cannot_predate_it(
    harness: GatewayHarness, redis_server: RedisServer
) -> None:
    """The exact rule: refused while `usable_from` (the earliest time the gateway could have
    accepted the proof) is before the loss. WPT: `exp - max_lifetime - skew`, or `iat - skew`
    when later; signature: `created - skew`."""
    shared = on_redis(harness, redis_server)
    [replica] = replicas(shared)
    clock = shared.clock

    def wpt(**kwargs: Any) -> dict[str, str]:
        return shared.signed_headers(**kwargs)

    async def scenario() -> None:
        try:
            redis_server.stop()
            redis_server.start()
            lost_at = clock.now
            # The first claim finds the loss; this proof may be older than it.
            expect_denied(await check(replica, wpt()), Reason.REPLAY_STATE_LOST)
            # Within the skew of the loss, even an `iat` or `created` of now could be a
            # proof the gateway accepted just before it, from a signer whose clock is ahead.
            clock.now = lost_at + SKEW - 1
            expect_denied(
                await check(replica, wpt(extra_claims={"iat": clock.now})), "replay.state_lost"
            )
            sig = signed(shared)
            expect_denied(await check(replica, sig, context=BODY_ROUTE), "replay.state_lost")

            clock.now = lost_at + SKEW
            expect_allowed(await check(replica, wpt(extra_claims={"iat": clock.now})))
            expect_allowed(await check(replica, signed(shared), context=BODY_ROUTE))
            # Without `iat`, `exp` bounds the issue time: a WPT as long-lived as allowed...
            expect_allowed(await check(replica, wpt(ttl=WPT_MAX_LIFETIME)))
            # ...but a short-lived one may have been minted long before its `exp`.
            expect_denied(await check(replica, wpt(ttl=60)), Reason.REPLAY_STATE_LOST)
            clock.now = lost_at + WPT_MAX_LIFETIME - 60 + SKEW - 1
            expect_denied(await check(replica, wpt(ttl=60)), Reason.REPLAY_STATE_LOST)
            clock.now = lost_at + WPT_MAX_LIFETIME - 60 + SKEW
            expect_allowed(await check(replica, wpt(ttl=60)))
        finally:
            await close(replica)

    run(scenario)


def test_after_the_window_proofs_are_judged_normally_again(
    harness: GatewayHarness, redis_server: RedisServer
) -> None:
    shared = on_redis(harness, redis_server)
    [replica] = replicas(shared)
    clock = shared.clock
    before = shared.signed_headers(ttl=WPT_MAX_LIFETIME)

    async def scenario() -> None:
        try:
            expect_allowed(await check(replica, before))
            redis_server.stop()
            redis_server.start()
            lost_at = clock.now
            expect_denied(await check(replica, before), Reason.REPLAY_STATE_LOST)
            clock.now = lost_at + WINDOW
            # The proof from before the loss is judged as any other: it has expired.
            expect_denied(await check(replica, before), Reason.WPT_EXPIRED, 401)
            expect_allowed(await check(replica, shared.signed_headers(ttl=1)))
            expect_allowed(await check(replica, signed(shared), context=BODY_ROUTE))
        finally:
            await close(replica)

    run(scenario)


# --- a flush, a snapshot, a new Redis -----------------------------------------------------------


def test_a_flushall_is_detected_by_the_sentinel(
    harness: GatewayHarness, redis_server: RedisServer
) -> None:
    shared = on_redis(harness, redis_server)
    [replica] = replicas(shared)
    headers = shared.signed_headers()

    async def scenario() -> None:
        try:
            expect_allowed(await check(replica, headers))
            with redis_server.client() as client:
                run_id = client.info("server")["run_id"]
                client.flushall()  # same process, same connections: only the sentinel tells
            expect_denied(await check(replica, headers), Reason.REPLAY_STATE_LOST, 401)
            with redis_server.client() as client:
                assert client.info("server")["run_id"] == run_id
                sentinel = client.get("wimse-authz:replay:sentinel")
            assert sentinel == f"{int(shared.clock.now * 1000)} {run_id}".encode()
        finally:
            await close(replica)

    run(scenario)
    assert losses(replica)["sentinel_missing"] == 1


def test_a_restart_that_reloads_a_snapshot_is_detected_by_its_run_id(
    harness: GatewayHarness, redis_server: RedisServer
) -> None:
    """The snapshot brings back the sentinel, and the proofs recorded before it, but not the
    proofs recorded after it: only the changed `run_id` tells. The replica that records the
    loss counts it; the other learns it from the sentinel."""
    shared = on_redis(harness, redis_server)
    first, second = replicas(shared, 2)
    in_snapshot, after_snapshot = shared.signed_headers(), shared.signed_headers()

    async def scenario() -> None:
        try:
            expect_allowed(await check(first, in_snapshot))
            with redis_server.client() as client:
                client.save()
            expect_allowed(await check(first, after_snapshot))
            redis_server.stop()
            redis_server.start()  # loads the snapshot
            with redis_server.client() as client:
                assert client.get("wimse-authz:replay:sentinel") is not None, "reloaded"
            shared.clock.now += 1
            verdict = await check(first, after_snapshot)
            expect_denied(verdict, Reason.REPLAY_STATE_LOST, 401)
            shared.clock.now += 1
            expect_denied(await check(second, in_snapshot), Reason.REPLAY_STATE_LOST, 401)
        finally:
            await close(first, second)

    run(scenario)
    recorded, learnt = losses(first), losses(second)
    assert recorded["run_id_changed"] == 1
    assert recorded["sentinel_missing"] == 0
    assert learnt["run_id_changed"] == learnt["sentinel_missing"] == 0
    assert learnt["lost_at"] == recorded["lost_at"] == shared.clock.now - 1


def test_a_new_redis_records_a_loss_at_first_use(harness: GatewayHarness, tmp_path: Path) -> None:
    """A Redis with no sentinel cannot tell a first deployment from a flushed store: the
    first claim records a loss, and refuses what could predate it."""
    with RedisServer(tmp_path / "redis") as server:
        shared = on_redis(harness, server)
        [replica] = replicas(shared)

        async def scenario() -> None:
            try:
                expect_denied(await check(replica, shared.signed_headers()), "replay.state_lost")
                shared.clock.now += SKEW
                expect_allowed(await check(replica, signed(shared), context=BODY_ROUTE))
            finally:
                await close(replica)

        run(scenario)
    assert losses(replica) == {
        "lost_at": shared.clock.now - SKEW,
        "sentinel_missing": 1,
        "run_id_changed": 0,
    }


# --- replicas, logs, cost -----------------------------------------------------------------------


def test_a_loss_one_replica_records_is_applied_by_the_other(
    harness: GatewayHarness, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    shared = on_redis(harness, redis_server)
    first, second = replicas(shared, 2)
    used_at_first = shared.signed_headers()

    async def scenario() -> None:
        try:
            expect_allowed(await check(first, used_at_first))
            expect_allowed(await check(second, shared.signed_headers()))
            with redis_server.client() as client:
                client.flushall()
            shared.clock.now += 1
            # The first replica's next claim finds the sentinel gone and records the loss.
            expect_denied(await check(first, shared.signed_headers()), "replay.state_lost")
            # Redis no longer knows the proof the first replica accepted; the sentinel tells
            # the second one it may have been used.
            expect_denied(await check(second, used_at_first), Reason.REPLAY_STATE_LOST, 401)
        finally:
            await close(first, second)

    with caplog.at_level(logging.INFO, logger="authz.replay"):
        run(scenario)
    assert losses(first)["sentinel_missing"] == 1
    assert losses(second)["sentinel_missing"] == 0
    assert losses(second)["lost_at"] == losses(first)["lost_at"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "the replica that recorded the loss warns, once"
    assert "lost its records (sentinel_missing)" in warnings[0].getMessage()


def test_a_loss_is_logged_once_and_never_with_a_proof(
    harness: GatewayHarness, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    shared = on_redis(harness, redis_server)
    [replica] = replicas(shared)
    proofs = [shared.signed_headers() for _ in range(5)]

    async def scenario() -> None:
        try:
            for headers in proofs:
                expect_allowed(await check(replica, headers))
            redis_server.stop()
            redis_server.start()
            for headers in proofs:
                expect_denied(await check(replica, headers), "replay.state_lost")
        finally:
            await close(replica)

    with caplog.at_level(logging.DEBUG):
        run(scenario)
    store = [r for r in caplog.records if r.name == "authz.replay"]
    assert len([r for r in store if "lost its records" in r.getMessage()]) == 1
    for headers in proofs:
        for token in headers.values():
            assert token.split(" ")[-1] not in caplog.text


def test_a_claim_is_one_script_call_and_nothing_else_in_steady_state(
    redis_server: RedisServer,
) -> None:
    async def scenario(stats_client: Any) -> None:
        cache = open_cache(redis_server)
        try:
            assert await cache.claim("s", "warm-up", time.time() + 60, usable_from=time.time())
            stats_client.config_resetstat()
            for number in range(10):
                now = time.time()
                assert await cache.claim("s", f"{number}", now + 60, usable_from=now)
        finally:
            await cache.aclose()

    # One connection for resetting and reading the counters: nothing else of its counts.
    with redis_server.client() as client:
        client.ping()
        run(lambda: scenario(client))
        stats = client.info("commandstats")
    counted = {name for name in stats if not name.startswith("cmdstat_config")}
    # SET and GET run inside the script; Redis counts them under their own names.
    assert counted == {"cmdstat_evalsha", "cmdstat_set", "cmdstat_get"}, "no INFO, no EXISTS"
    assert stats["cmdstat_evalsha"]["calls"] == 10
    assert stats["cmdstat_set"]["calls"] == stats["cmdstat_get"]["calls"] == 10


DOCUMENTED_ACL = "+evalsha +eval +set +get +info +client|setname"
"""docs/operations.md, "Shared replay cache (Redis)"."""


@pytest.mark.parametrize(
    ("commands", "works"), [(DOCUMENTED_ACL, True), (DOCUMENTED_ACL.replace(" +info", ""), False)]
)
def test_the_documented_acl_is_enough_and_without_info_claims_fail_closed(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, commands: str, works: bool
) -> None:
    monkeypatch.setenv("TEST_REDIS_PASSWORD", "acl-pass-4e1f")
    with redis_server.client() as client:
        client.execute_command(
            "ACL",
            "SETUSER",
            "gateway",
            "on",
            ">acl-pass-4e1f",
            "~wimse-authz:replay:*",
            *commands.split(),
        )

    async def scenario() -> None:
        cache = open_cache(redis_server, username="gateway", password_env="TEST_REDIS_PASSWORD")
        try:
            now = time.time()
            if works:
                assert await cache.claim("s", "jti", now + 60, usable_from=now)
            else:
                with pytest.raises(UnavailableError) as caught:
                    await cache.claim("s", "jti", now + 60, usable_from=now)
                assert caught.value.reason is Reason.REPLAY_STORE_UNAVAILABLE
        finally:
            await cache.aclose()

    run(scenario)
