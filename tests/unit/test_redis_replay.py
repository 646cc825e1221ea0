"""The shared replay cache against a real redis-server (started per test, never a service)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from authz.clock import system_clock
from authz.config import RedisReplayConfig, parse_config
from authz.devtools.certs import CertificateAuthority, write_pem
from authz.devtools.redis import RedisServer, RedisTls
from authz.errors import ConfigError, CredentialError, UnavailableError
from authz.gateway import Runtime, build_gateway
from authz.reasons import Reason
from authz.replay.memory import InMemoryReplayCache
from authz.replay.redis_store import (
    RedisReplayCache,
    open_redis_replay_cache,
    read_password,
    replay_key,
)
from tests.support import (
    GatewayHarness,
    check_request,
    expect_allowed,
    expect_denied,
    expect_failed,
)
from tests.unit.test_config import error_for, minimal
from tests.unit.test_http_signature import BODY_ROUTE, accepting, signed
from tests.unit.test_metrics import samples

pytest_plugins = ("tests.redis_server",)  # the `redis_server` fixture

SENDER = "spiffe://demo.example/frontend"
OTHER = "spiffe://demo.example/ops"
# Generous: these tests pin behaviour, not latency, on a shared and noisy machine.
SLOW_OK = {"connect_timeout_seconds": 5.0, "timeout_seconds": 5.0}


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def later(seconds: float = 60.0) -> float:
    return time.time() + seconds


class Counts:
    def __init__(self) -> None:
        self.errors = 0
        self.fallbacks = 0

    def error(self) -> None:
        self.errors += 1

    def fallback(self) -> None:
        self.fallbacks += 1


def open_cache(
    server: RedisServer,
    counts: Counts | None = None,
    *,
    fallback: InMemoryReplayCache | None = None,
    **settings: Any,
) -> RedisReplayCache:
    config = RedisReplayConfig.model_validate({"url": server.url, **SLOW_OK, **settings})
    return open_redis_replay_cache(
        config,
        system_clock,
        fallback=fallback,
        on_error=counts.error if counts else None,
        on_fallback=counts.fallback if counts else None,
    )


async def until_claimed(cache: RedisReplayCache, proof_id: str, timeout: float = 20.0) -> None:
    """Poll until a fresh claim of `proof_id` succeeds (failures meanwhile are expected)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await cache.claim(SENDER, proof_id, later(), usable_from=time.time()):
                return
        except UnavailableError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{proof_id} was never claimed")


async def until_answering(cache: RedisReplayCache, timeout: float = 20.0) -> None:
    """Claim probes, each a new proof usable from now, until one is accepted: Redis answers
    again. Meanwhile claims fail, and a Redis that came back empty refuses the probe that
    finds the loss (`replay.state_lost`): it could have been used before."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        try:
            if await cache.claim(SENDER, f"probe-{attempt}", later(), usable_from=time.time()):
                return
        except UnavailableError:
            pass
        except CredentialError as error:
            if error.reason is not Reason.REPLAY_STATE_LOST:
                raise
        await asyncio.sleep(0.1)
    raise TimeoutError("the replay store never accepted a probe")


# --- claims ---------------------------------------------------------------------------------


def test_first_claim_wins_and_a_repeat_is_refused(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        cache = open_cache(redis_server)
        try:
            assert await cache.claim(SENDER, "jti-1", later(), usable_from=time.time())
            assert not await cache.claim(SENDER, "jti-1", later(), usable_from=time.time())
        finally:
            await cache.aclose()

    run(scenario)


def test_proof_ids_are_separate_per_sender(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        cache = open_cache(redis_server)
        try:
            assert await cache.claim(SENDER, "jti-1", later(), usable_from=time.time())
            assert await cache.claim(OTHER, "jti-1", later(), usable_from=time.time())
            assert not await cache.claim(OTHER, "jti-1", later(), usable_from=time.time())
        finally:
            await cache.aclose()

    run(scenario)


def test_two_caches_on_one_redis_refuse_each_others_proofs(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        first, second = open_cache(redis_server), open_cache(redis_server)
        try:
            assert await first.claim(SENDER, "jti-1", later(), usable_from=time.time())
            assert not await second.claim(SENDER, "jti-1", later(), usable_from=time.time())
            assert await second.claim(SENDER, "jti-2", later(), usable_from=time.time())
            assert not await first.claim(SENDER, "jti-2", later(), usable_from=time.time())
        finally:
            await first.aclose()
            await second.aclose()

    run(scenario)


def test_a_claim_lasts_until_its_proof_expires_and_no_longer(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        cache = open_cache(redis_server)
        try:
            assert await cache.claim(SENDER, "short", time.time() + 0.3, usable_from=time.time())
            assert not await cache.claim(
                SENDER, "short", time.time() + 0.3, usable_from=time.time()
            )
            with redis_server.client() as client:
                key = replay_key("wimse-authz:replay", SENDER, "short")
                assert 0 < client.pttl(key) <= 300, "the key lives as long as the proof"
            await until_claimed(cache, "short")
        finally:
            await cache.aclose()

    run(scenario)


def test_keys_are_the_prefix_and_a_sha256_never_the_proof_id(redis_server: RedisServer) -> None:
    redis_server.put_in_service("mesh-a:replay")

    async def scenario() -> None:
        cache = open_cache(redis_server, key_prefix="mesh-a:replay")
        try:
            assert await cache.claim(SENDER, "visible-jti", later(), usable_from=time.time())
        finally:
            await cache.aclose()

    run(scenario)
    digest = hashlib.sha256(f"{SENDER}\0visible-jti".encode()).hexdigest()
    with redis_server.client() as client:
        assert set(client.keys("mesh-a:*")) == {
            f"mesh-a:replay:{digest}".encode(),
            b"mesh-a:replay:sentinel",
        }


def test_meshes_with_their_own_prefix_do_not_share_proofs(redis_server: RedisServer) -> None:
    redis_server.put_in_service("mesh-a")
    redis_server.put_in_service("mesh-b")

    async def scenario() -> None:
        mesh_a = open_cache(redis_server, key_prefix="mesh-a")
        mesh_b = open_cache(redis_server, key_prefix="mesh-b")
        try:
            assert await mesh_a.claim(SENDER, "jti-1", later(), usable_from=time.time())
            assert await mesh_b.claim(SENDER, "jti-1", later(), usable_from=time.time())
        finally:
            await mesh_a.aclose()
            await mesh_b.aclose()

    run(scenario)


ODD_IDS = [
    "x" * 100_000,
    "\0",
    "a\0b",
    "line\r\nbreak",
    "spaces and * glob ? [chars]",
    "é ✓ 𝄞",
    "\ud800",  # a lone surrogate: a JSON string may carry one
    "{prefix}:0000",
]


def test_long_and_odd_proof_ids_are_claimed_once_under_fixed_size_keys(
    redis_server: RedisServer,
) -> None:
    redis_server.put_in_service("p")

    async def scenario() -> None:
        cache = open_cache(redis_server, key_prefix="p")
        try:
            for proof_id in ODD_IDS:
                assert await cache.claim(SENDER, proof_id, later(), usable_from=time.time()), repr(
                    proof_id[:20]
                )
            for proof_id in ODD_IDS:
                assert not await cache.claim(SENDER, proof_id, later(), usable_from=time.time()), (
                    repr(proof_id[:20])
                )
        finally:
            await cache.aclose()

    run(scenario)
    with redis_server.client() as client:
        keys = set(client.keys("p:*")) - {b"p:sentinel"}
    assert len(keys) == len(ODD_IDS)
    assert {len(key) for key in keys} == {len("p:") + 64}


def test_exactly_one_of_fifty_concurrent_claims_wins(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        replicas = [open_cache(redis_server), open_cache(redis_server)]
        try:
            claims = [
                replicas[i % 2].claim(SENDER, "raced", later(), usable_from=time.time())
                for i in range(50)
            ]
            results = await asyncio.gather(*claims)
            assert results.count(True) == 1
        finally:
            for cache in replicas:
                await cache.aclose()

    run(scenario)


# --- Redis unavailable ------------------------------------------------------------------------


def test_redis_down_fails_closed_with_store_unavailable(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    counts = Counts()

    async def scenario() -> None:
        cache = open_cache(redis_server, counts)
        try:
            assert await cache.claim(SENDER, "before", later(), usable_from=time.time())
            redis_server.stop()
            for attempt in range(3):
                with pytest.raises(UnavailableError) as caught:
                    await cache.claim(SENDER, f"during-{attempt}", later(), usable_from=time.time())
                assert caught.value.reason is Reason.REPLAY_STORE_UNAVAILABLE
        finally:
            await cache.aclose()

    with caplog.at_level(logging.WARNING, logger="authz.replay"):
        run(scenario)
    assert counts.errors == 3
    assert counts.fallbacks == 0
    outage = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(outage) == 1, "one warning per outage, not one per request"
    assert "refusing proofs" in outage[0].getMessage()


def test_redis_down_with_local_fallback_checks_proofs_in_this_process(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    counts = Counts()
    local = InMemoryReplayCache(100, system_clock)

    async def scenario() -> None:
        cache = open_cache(redis_server, counts, fallback=local, on_unavailable="local_fallback")
        try:
            assert len(cache) == 0, "Redis's entries are not counted"
            redis_server.stop()
            assert await cache.claim(SENDER, "during", later(), usable_from=time.time())
            assert not await cache.claim(SENDER, "during", later(), usable_from=time.time()), (
                "still replay-checked"
            )
            assert len(cache) == 1
        finally:
            await cache.aclose()

    with caplog.at_level(logging.WARNING, logger="authz.replay"):
        run(scenario)
    assert (counts.errors, counts.fallbacks) == (2, 2)
    outage = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(outage) == 1
    assert "this process only" in outage[0].getMessage()


def test_a_local_fallback_is_not_used_when_the_mode_is_fail_closed(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        local = InMemoryReplayCache(100, system_clock)
        cache = open_cache(redis_server, fallback=local)  # on_unavailable: fail_closed
        try:
            redis_server.stop()
            with pytest.raises(UnavailableError):
                await cache.claim(SENDER, "during", later(), usable_from=time.time())
            assert len(local) == 0
        finally:
            await cache.aclose()

    run(scenario)


def test_claims_work_again_once_redis_is_back_with_the_same_client(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        cache = open_cache(redis_server)
        try:
            assert await cache.claim(SENDER, "before", later(), usable_from=time.time())
            redis_server.stop()
            with pytest.raises(UnavailableError):
                await cache.claim(SENDER, "during", later(), usable_from=time.time())
            redis_server.start()
            await until_answering(cache)
            assert await cache.claim(SENDER, "after", later(), usable_from=time.time())
            assert not await cache.claim(SENDER, "after", later(), usable_from=time.time())
        finally:
            await cache.aclose()

    with caplog.at_level(logging.INFO, logger="authz.replay"):
        run(scenario)
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_a_proof_accepted_during_an_outage_stays_refused_after_redis_returns(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        local = InMemoryReplayCache(100, system_clock)
        cache = open_cache(redis_server, fallback=local, on_unavailable="local_fallback")
        try:
            redis_server.stop()
            assert await cache.claim(SENDER, "during", later(), usable_from=time.time())
            redis_server.start()
            await until_answering(cache)
            assert not await cache.claim(SENDER, "during", later(), usable_from=time.time())
        finally:
            await cache.aclose()

    run(scenario)


def test_a_connection_redis_dropped_is_replaced_without_failing_a_claim(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        cache = open_cache(redis_server, max_connections=1)
        try:
            assert await cache.claim(SENDER, "before", later(), usable_from=time.time())
            with redis_server.client() as client:
                client.client_kill_filter(_type="normal", skipme=True)
            assert await cache.claim(SENDER, "after", later(), usable_from=time.time())
        finally:
            await cache.aclose()

    run(scenario)


def test_an_unreachable_address_is_unavailable_within_the_deadline() -> None:
    async def scenario() -> None:
        # 192.0.2.0/24 is reserved for documentation: nothing answers there.
        config = RedisReplayConfig(
            url="redis://192.0.2.1:6379", connect_timeout_seconds=0.2, timeout_seconds=0.2
        )
        cache = open_redis_replay_cache(config, system_clock, fallback=None)
        try:
            with pytest.raises(UnavailableError) as caught:
                await asyncio.wait_for(
                    cache.claim(SENDER, "jti", later(), usable_from=time.time()), timeout=20
                )
            assert caught.value.reason is Reason.REPLAY_STORE_UNAVAILABLE
        finally:
            await cache.aclose()

    run(scenario)


# --- credentials ------------------------------------------------------------------------------


def test_a_wrong_password_is_unavailable_and_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text("not-the-password-7f3a\n")

    wrong_or_none: list[dict[str, Any]] = [{"password_file": secret_file}, {}]

    async def scenario(server: RedisServer) -> None:
        for settings in wrong_or_none:
            cache = open_cache(server, **settings)
            try:
                with pytest.raises(UnavailableError) as caught:
                    await cache.claim(SENDER, "jti", later(), usable_from=time.time())
                assert caught.value.reason is Reason.REPLAY_STORE_UNAVAILABLE
                assert "7f3a" not in str(caught.value)
            finally:
                await cache.aclose()

    with (
        RedisServer(tmp_path / "redis", password="the-password-c9d1") as server,
        caplog.at_level(logging.DEBUG),
    ):
        run(lambda: scenario(server))
    assert "7f3a" not in caplog.text
    assert "c9d1" not in caplog.text


def test_the_password_comes_from_a_file_or_an_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text("s3cret-pass\n")
    monkeypatch.setenv("TEST_REDIS_PASSWORD", "s3cret-pass")

    sources: list[dict[str, Any]] = [
        {"password_file": secret_file},
        {"password_env": "TEST_REDIS_PASSWORD"},
    ]

    async def scenario(server: RedisServer) -> None:
        for number, settings in enumerate(sources):
            cache = open_cache(server, username="default", **settings)
            try:
                assert await cache.claim(SENDER, f"jti-{number}", later(), usable_from=time.time())
            finally:
                await cache.aclose()

    with RedisServer(tmp_path / "redis", password="s3cret-pass") as server:
        server.put_in_service()
        run(lambda: scenario(server))


def test_a_missing_or_empty_password_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_REDIS_PASSWORD", raising=False)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"password_file": tmp_path / "absent"}, "cannot read"),
        ({"password_file": empty}, "empty or unset"),
        ({"password_env": "TEST_REDIS_PASSWORD"}, "$TEST_REDIS_PASSWORD is empty or unset"),
    ]
    for settings, message in cases:
        config = RedisReplayConfig.model_validate({"url": "redis://127.0.0.1", **settings})
        with pytest.raises(ConfigError, match=message.replace("$", r"\$")):
            read_password(config)


def tls_files(directory: Path, *, client_certificates: bool) -> tuple[RedisTls, Path, Path]:
    """A CA, a server certificate for 127.0.0.1 and, when asked, a client certificate the
    server requires; returns the server's settings and a client's certificate and key."""
    ca = CertificateAuthority.create("redis test CA")
    server = ca.issue("redis", ip_addresses=["127.0.0.1"])
    client = ca.issue("wimse-authz", server=False, client=True)
    ca_file = write_pem(directory / "ca.pem", ca.cert_pem)
    client_cert = write_pem(directory / "client.pem", client.chain_pem)
    client_key = write_pem(directory / "client.key", client.key_pem)
    tls = RedisTls(
        cert_file=write_pem(directory / "server.pem", server.chain_pem),
        key_file=write_pem(directory / "server.key", server.key_pem),
        ca_file=ca_file,
        client_cert_file=client_cert if client_certificates else None,
        client_key_file=client_key if client_certificates else None,
    )
    return tls, client_cert, client_key


def test_rediss_verifies_the_server_against_ca_file(tmp_path: Path) -> None:
    tls, _, _ = tls_files(tmp_path / "tls", client_certificates=False)

    async def scenario(server: RedisServer) -> None:
        trusted = open_cache(server, ca_file=tls.ca_file)
        untrusted = open_cache(server)  # the system's CAs do not know the test CA
        try:
            assert await trusted.claim(SENDER, "over-tls", later(), usable_from=time.time())
            with pytest.raises(UnavailableError) as caught:
                await untrusted.claim(SENDER, "unverified", later(), usable_from=time.time())
            assert caught.value.reason is Reason.REPLAY_STORE_UNAVAILABLE
        finally:
            await trusted.aclose()
            await untrusted.aclose()

    with RedisServer(tmp_path / "redis", tls=tls) as server:
        server.put_in_service()
        assert server.url.startswith("rediss://")
        run(lambda: scenario(server))


def test_rediss_presents_the_client_certificate_a_server_requires(tmp_path: Path) -> None:
    tls, client_cert, client_key = tls_files(tmp_path / "tls", client_certificates=True)

    async def scenario(server: RedisServer) -> None:
        with_cert = open_cache(
            server, ca_file=tls.ca_file, cert_file=client_cert, key_file=client_key
        )
        without = open_cache(server, ca_file=tls.ca_file)
        try:
            assert await with_cert.claim(SENDER, "mutual-tls", later(), usable_from=time.time())
            with pytest.raises(UnavailableError):
                await without.claim(SENDER, "no-client-cert", later(), usable_from=time.time())
        finally:
            await with_cert.aclose()
            await without.aclose()

    with RedisServer(tmp_path / "redis", tls=tls) as server:
        server.put_in_service()
        run(lambda: scenario(server))


def test_aclose_releases_the_connections(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        cache = open_cache(redis_server)
        assert await cache.claim(SENDER, "jti", later(), usable_from=time.time())
        with redis_server.client() as client:
            assert "wimse-authz" in _client_names(client.client_list())
        await cache.aclose()

    run(scenario)
    with redis_server.client() as client:
        assert "wimse-authz" not in _client_names(client.client_list())


def _client_names(clients: list[dict[str, Any]]) -> set[str]:
    return {str(entry.get("name", "")) for entry in clients}


# --- configuration ----------------------------------------------------------------------------


def redis_section(**settings: Any) -> dict[str, Any]:
    return {"replay": {"redis": {"url": "redis://redis.internal:6379/0", **settings}}}


@pytest.mark.parametrize(
    ("settings", "key", "message"),
    [
        ({"url": "http://redis.internal"}, "replay.redis.url", "redis://host"),
        ({"url": "redis://"}, "replay.redis.url", "redis://host"),
        ({"url": "redis://user:pw@redis.internal"}, "replay.redis.url", "no credentials"),
        ({"url": "redis://redis.internal/0?timeout=9"}, "replay.redis.url", "nothing may follow"),
        ({"url": "redis://redis.internal/zero"}, "replay.redis.url", "nothing may follow"),
        ({"url": "redis://redis.internal:99999"}, "replay.redis.url", "port"),
        ({"key_prefix": "has space"}, "replay.redis.key_prefix", "printable"),
        ({"key_prefix": ""}, "replay.redis.key_prefix", "printable"),
        ({"key_prefix": "p" * 65}, "replay.redis.key_prefix", "printable"),
        ({"password_env": "NOT-A-NAME"}, "replay.redis.password_env", "environment variable"),
        (
            {"password_env": "PW", "password_file": "pw"},
            "replay.redis",
            "at most one of 'password_file' or 'password_env'",
        ),
        ({"username": "authz"}, "replay.redis", "'username' needs"),
        ({"ca_file": "ca.pem"}, "replay.redis", "rediss://"),
        (
            {"url": "rediss://redis.internal", "cert_file": "c.pem"},
            "replay.redis",
            "both 'cert_file' and 'key_file'",
        ),
        ({"timeout_seconds": 0}, "replay.redis.timeout_seconds", "greater than 0"),
        ({"connect_timeout_seconds": -1}, "replay.redis.connect_timeout_seconds", "greater than 0"),
        ({"max_connections": 0}, "replay.redis.max_connections", "greater than 0"),
        ({"on_unavailable": "accept"}, "replay.redis.on_unavailable", "fail_closed"),
        ({"unknown": 1}, "replay.redis.unknown", "unknown key unknown"),
    ],
)
def test_invalid_redis_settings_name_the_key(
    settings: dict[str, Any], key: str, message: str
) -> None:
    text = error_for(minimal(**redis_section(**settings)))
    assert f"  {key}: " in text, text
    assert message in text, text


def test_redis_settings_default_to_small_timeouts_and_failing_closed(tmp_path: Path) -> None:
    config = parse_config(minimal(), "gateway.yaml", tmp_path)
    assert config.replay.redis is None
    document = minimal(**redis_section(url="rediss://redis.internal", ca_file="tls/ca.pem"))
    redis = parse_config(document, "gateway.yaml", tmp_path).replay.redis
    assert redis is not None
    assert (redis.connect_timeout_seconds, redis.timeout_seconds) == (0.25, 0.25)
    assert redis.on_unavailable == "fail_closed"
    assert redis.key_prefix == "wimse-authz:replay"
    assert redis.ca_file == tmp_path / "tls" / "ca.pem", "relative to the config file"


def test_file_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    document = minimal(
        **redis_section(
            url="rediss://redis.internal",
            password_file="secrets/redis",
            cert_file="/abs/client.pem",
            key_file="tls/client.key",
        )
    )
    redis = parse_config(document, "gateway.yaml", tmp_path).replay.redis
    assert redis is not None
    assert redis.password_file == tmp_path / "secrets" / "redis"
    assert redis.cert_file == Path("/abs/client.pem")
    assert redis.key_file == tmp_path / "tls" / "client.key"


# --- the gateway ------------------------------------------------------------------------------


def test_the_gateway_uses_redis_when_configured_and_its_own_cache_otherwise(
    harness: GatewayHarness, redis_server: RedisServer
) -> None:
    assert isinstance(harness.gateway.runtime.replay_cache, InMemoryReplayCache)

    shared = harness.rebuild(replay={"redis": {"url": redis_server.url, **SLOW_OK}})
    config = shared.config()
    replica_1 = build_gateway(config, shared.clock)
    replica_2 = build_gateway(config, shared.clock)
    assert isinstance(replica_1.runtime.replay_cache, RedisReplayCache)

    async def scenario() -> None:
        try:
            headers = shared.signed_headers()
            request = check_request("/api/hello", headers).attributes
            expect_allowed(await replica_1.pipeline.check(request))
            expect_denied(await replica_2.pipeline.check(request), "wpt.replayed", 401)
        finally:
            await replica_1.runtime.aclose()
            await replica_2.runtime.aclose()

    run(scenario)


def test_the_gateway_answers_503_when_redis_is_down_and_fail_closed(
    harness: GatewayHarness, redis_server: RedisServer
) -> None:
    shared = harness.rebuild(replay={"redis": {"url": redis_server.url, **SLOW_OK}})
    runtime = Runtime.create(shared.config(), shared.clock)
    gateway = build_gateway(shared.config(), shared.clock, runtime=runtime)
    redis_server.stop()

    async def scenario() -> None:
        try:
            verdict = await gateway.pipeline.check(
                check_request("/api/hello", shared.signed_headers()).attributes
            )
            assert expect_failed(verdict, "replay.store_unavailable").status == 503
        finally:
            await runtime.aclose()

    run(scenario)
    values = samples(runtime.metrics)
    assert values[("wimse_authz_replay_store_errors_total", ())] == 1
    assert values[("wimse_authz_replay_store_fallbacks_total", ())] == 0
    assert values[("wimse_authz_replay_cache_entries", ())] == 0


def test_a_signature_nonce_is_single_use_across_replicas_whoever_sends_it(
    harness: GatewayHarness, redis_server: RedisServer
) -> None:
    """http-signature editor's copy, with the shared store: a nonce one workload used at one
    replica is refused at the other when another workload sends it; a request with two
    WIMSE-tagged signatures is refused there too, without using up its nonce."""
    shared = accepting(harness, "wpt", "http_signature").rebuild(
        replay={"redis": {"url": redis_server.url, **SLOW_OK}}
    )
    config = shared.config()
    replica_1 = build_gateway(config, shared.clock)
    replica_2 = build_gateway(config, shared.clock)

    def request(headers: dict[str, str]) -> Any:
        return check_request("/api/hello", headers, context=BODY_ROUTE).attributes

    async def scenario() -> None:
        try:
            first = signed(shared, nonce="nonce-1")
            expect_allowed(await replica_1.pipeline.check(request(first)))
            other = signed(shared, workload="ops", nonce="nonce-1")
            verdict = await replica_2.pipeline.check(request(other))
            expect_denied(verdict, "httpsig.replayed", 400)

            one = signed(shared, nonce="nonce-2", label="a")
            two = signed(shared, nonce="nonce-3", label="b")
            both = {
                **one,
                "signature-input": f"{one['signature-input']}, {two['signature-input']}",
                "signature": f"{one['signature']}, {two['signature']}",
            }
            verdict = await replica_1.pipeline.check(request(both))
            expect_denied(verdict, "httpsig.ambiguous", 400)
            expect_allowed(await replica_2.pipeline.check(request(one)))
        finally:
            await replica_1.runtime.aclose()
            await replica_2.runtime.aclose()

    run(scenario)
