"""Key sets at a URL (`trust/live.py`), fetched from a real aiohttp server on
127.0.0.1 (plain HTTP, allowed to loopback): refresh, conditional requests, unknown-kid
refreshes, staleness, and what a reload keeps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from authz.config import KeySetConfig, parse_config
from authz.credentials.txn_token import TxnRules, TxnTokenVerifier
from authz.credentials.wit import WitRules, WitVerifier
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import mint_txn_token, mint_wit, sign_jws
from authz.devtools.spiffe import spiffe_bundle
from authz.errors import ConfigError, CredentialError, UnavailableError
from authz.observability.metrics import Metrics
from authz.reasons import Reason
from authz.trust.live import LiveKeyRegistry, LiveKeySource, LiveSourceSettings
from authz.trust.spiffe_bundle import JwtKeyUse
from tests.e2e.inprocess import run, until
from tests.key_server import KeyServer, SeenRequest
from tests.support import NOW, MutableClock

TD = "demo.example"
WIT_USE = JwtKeyUse.WIT_SVID
OLD = generate_private_jwk("ES256", kid="old")
NEW = generate_private_jwk("ES256", kid="new")
WORKLOAD = generate_private_jwk("EdDSA")


class Monotonic:
    """A monotonic clock the test moves (staleness and rate limits read it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def jwks(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": [public_jwk(key) for key in keys]}


def key_set_config(url: str, *, spiffe: bool = False, **fetch: Any) -> KeySetConfig:
    settings = {
        "refresh_seconds": 3600,
        "min_refresh_interval_seconds": 0.01,
        "max_stale_seconds": 7200,
        "timeout_seconds": 2,
        **fetch,
    }
    source = "spiffe_bundle_url" if spiffe else "jwks_url"
    return KeySetConfig.model_validate({"algorithms": ["ES256"], source: url, "fetch": settings})


def source_for(
    server: KeyServer,
    monotonic: Monotonic | None = None,
    metrics: Metrics | None = None,
    **fetch: Any,
) -> LiveKeySource:
    settings = LiveSourceSettings.of(key_set_config(server.url, **fetch), WIT_USE)
    if monotonic is None:
        return LiveKeySource(TD, f"trust_domains.{TD}", settings, metrics=metrics)
    return LiveKeySource(TD, f"trust_domains.{TD}", settings, metrics=metrics, monotonic=monotonic)


def wit_verifier(
    registry: LiveKeyRegistry, server: KeyServer, *, spiffe: bool = False
) -> WitVerifier:
    store = registry.trust_store({TD: key_set_config(server.url, spiffe=spiffe)})
    rules = WitRules(clock_skew=30, max_lifetime=86400, proof_algorithms=frozenset({"EdDSA"}))
    return WitVerifier(store, rules, MutableClock(NOW), 100)


async def refresh(registry: LiveKeyRegistry, server: KeyServer, *, spiffe: bool = False) -> None:
    """Fetch the demo trust domain's source now (as an unknown kid would), then wait out
    its minimum interval, so the next unknown kid may fetch again."""
    key_set = key_set_config(server.url, spiffe=spiffe)
    source = registry.source(f"trust_domains.{TD}", TD, key_set, WIT_USE)
    assert await source.refresh_for_unknown_kid()
    await asyncio.sleep(0.02)


def wit(issuer: dict[str, Any]) -> str:
    return mint_wit(issuer, f"spiffe://{TD}/frontend", WORKLOAD, now=NOW)


def unavailable(source: LiveKeySource) -> str:
    with pytest.raises(UnavailableError) as caught:
        source.current  # noqa: B018 - reading it is the check
    assert caught.value.reason == "trust.anchors_unavailable"
    return caught.value.message


def test_keys_are_unavailable_until_the_first_answer() -> None:
    server = KeyServer(jwks(OLD))
    source = source_for(server)
    assert "no keys from" in unavailable(source)

    async def scenario() -> None:
        await server.start()
        try:
            source.start()
            await source.first_attempt()
            assert source.current.key_for_kid("old") is not None
        finally:
            await source.close()
            await server.stop()

    run(scenario)


def test_refreshes_are_conditional_and_an_unchanged_document_keeps_its_key_set() -> None:
    server = KeyServer(jwks(OLD))
    metrics = Metrics()
    source = source_for(server, metrics=metrics)

    async def scenario() -> None:
        await server.start()
        try:
            assert await source.refresh_for_unknown_kid()
            first = source.current
            await asyncio.sleep(0.02)  # past min_refresh_interval_seconds
            assert await source.refresh_for_unknown_kid()  # answered 304
            server.cache_control = "no-cache"  # a new document, same keys
            server.document = {**jwks(OLD), "note": "reformatted"}
            await asyncio.sleep(0.02)
            assert await source.refresh_for_unknown_kid()
            assert source.current.key_for_kid("old") is not None
            assert source.current is not first, "a changed document swaps the key set"
        finally:
            await source.close()
            await server.stop()
        etag = server.requests[1].if_none_match
        assert server.requests[0] == SeenRequest(None, None)
        assert etag is not None
        assert etag.startswith('"')

    run(scenario)
    fetches = {
        result: metrics.registry.get_sample_value(
            "wimse_authz_key_source_fetches_total",
            {"source": f"trust_domains.{TD}", "result": result},
        )
        for result in ("success", "not_modified")
    }
    assert fetches == {"success": 2.0, "not_modified": 1.0}


def test_an_identical_document_keeps_the_very_same_key_set() -> None:
    server = KeyServer(jwks(OLD), etags=False)
    source = source_for(server)

    async def scenario() -> None:
        await server.start()
        try:
            await source.refresh_for_unknown_kid()
            first = source.current
            # A server without validators sends the whole document again: same keys, same
            # KeySet object, so nothing verified with it needs verifying again.
            await asyncio.sleep(0.02)
            await source.refresh_for_unknown_kid()
            assert source.current is first
            assert server.requests == [SeenRequest(None, None)] * 2
        finally:
            await source.close()
            await server.stop()

    run(scenario)


def test_a_last_modified_date_is_sent_back_as_if_modified_since() -> None:
    date = "Mon, 23 Nov 2026 10:00:00 GMT"
    server = KeyServer(jwks(OLD), last_modified=date)
    source = source_for(server)

    async def scenario() -> None:
        await server.start()
        try:
            await source.refresh_for_unknown_kid()
            await asyncio.sleep(0.02)
            await source.refresh_for_unknown_kid()
        finally:
            await source.close()
            await server.stop()
        assert server.requests == [SeenRequest(None, None), SeenRequest(None, date)]

    run(scenario)


def test_stale_keys_are_unavailable_until_the_server_answers_again() -> None:
    server = KeyServer(jwks(OLD))
    clock = Monotonic()
    source = source_for(server, clock, refresh_seconds=60, max_stale_seconds=600)

    async def scenario() -> None:
        await server.start()
        try:
            await source.refresh_for_unknown_kid()
            server.status = 503
            clock.now += 599
            await source.refresh_for_unknown_kid()  # fails: the last good keys still serve
            assert source.error is not None
            assert "answered 503" in source.error
            assert source.current.key_for_kid("old") is not None
            clock.now += 2
            assert "older than max_stale_seconds" in unavailable(source)
            server.status = 200
            await source.refresh_for_unknown_kid()  # 304: the same keys, confirmed again
            assert source.current.key_for_kid("old") is not None
        finally:
            await source.close()
            await server.stop()

    run(scenario)


def test_an_unknown_kid_triggers_one_fetch_shared_by_every_waiting_check() -> None:
    server = KeyServer(jwks(OLD))
    registry = LiveKeyRegistry()

    async def scenario() -> None:
        await server.start()
        try:
            verifier = wit_verifier(registry, server)
            await refresh(registry, server)
            server.document = jwks(OLD, NEW)
            server.delay = 0.3  # every check arrives while the fetch is in flight
            fetches = len(server.requests)
            tokens = [wit(NEW) for _ in range(10)]
            results = await asyncio.gather(*(verifier.verify_refreshing(t) for t in tokens))
            assert {r.issuer_key.kid for r in results} == {"new"}
            assert len(server.requests) == fetches + 1
        finally:
            await registry.close()
            await server.stop()

    run(scenario)


def test_unknown_kid_refreshes_are_rate_limited() -> None:
    server = KeyServer(jwks(OLD))
    clock = Monotonic()
    source = source_for(server, clock, min_refresh_interval_seconds=30)

    async def scenario() -> None:
        await server.start()
        try:
            await source.refresh_for_unknown_kid()
            server.document = jwks(OLD, NEW)
            clock.now += 29
            assert not await source.refresh_for_unknown_kid()
            assert source.current.key_for_kid("new") is None
            assert len(server.requests) == 1
            clock.now += 1
            assert await source.refresh_for_unknown_kid()
            assert source.current.key_for_kid("new") is not None
        finally:
            await source.close()
            await server.stop()

    run(scenario)


def test_a_token_whose_kid_is_still_unknown_after_the_refresh_is_kid_unknown() -> None:
    server = KeyServer(jwks(OLD))
    registry = LiveKeyRegistry()

    async def scenario() -> None:
        await server.start()
        try:
            verifier = wit_verifier(registry, server)
            await refresh(registry, server)
            with pytest.raises(CredentialError) as caught:
                await verifier.verify_refreshing(wit(NEW))
            assert caught.value.reason == "wit.kid_unknown"
            assert len(server.requests) == 2, "one refresh for the unknown kid"
        finally:
            await registry.close()
            await server.stop()

    run(scenario)


def test_an_unknown_kid_while_the_key_server_fails_is_unavailable_not_invalid() -> None:
    """The issuer may have rotated to that key during the outage: 503, never `kid_unknown`.
    Known keys keep verifying from the last good fetch meanwhile."""
    server = KeyServer(jwks(OLD))
    registry = LiveKeyRegistry()

    async def scenario() -> None:
        await server.start()
        try:
            verifier = wit_verifier(registry, server)
            await refresh(registry, server)
            server.status = 503
            with pytest.raises(UnavailableError) as caught:
                await verifier.verify_refreshing(wit(NEW))
            assert caught.value.reason == "trust.anchors_unavailable"
            # Rate-limited now (no new fetch), but the latest one failed: still 503.
            with pytest.raises(UnavailableError):
                await verifier.verify_refreshing(wit(NEW))
            assert (await verifier.verify_refreshing(wit(OLD))).issuer_key.kid == "old"
        finally:
            await registry.close()
            await server.stop()

    run(scenario)


def test_a_dropped_key_stops_verifying_even_a_wit_verified_before() -> None:
    server = KeyServer(jwks(OLD, NEW))
    registry = LiveKeyRegistry()

    async def scenario() -> None:
        await server.start()
        try:
            verifier = wit_verifier(registry, server)
            await refresh(registry, server)
            token = wit(OLD)
            assert verifier.verify(token).issuer_key.kid == "old"
            assert verifier.verify(token).issuer_key.kid == "old"  # from the cache
            server.document = jwks(NEW)
            await asyncio.sleep(0.02)
            await refresh(registry, server)
            with pytest.raises(CredentialError) as caught:
                await verifier.verify_refreshing(token)
            assert caught.value.reason == "wit.kid_unknown"
        finally:
            await registry.close()
            await server.stop()

    run(scenario)


def test_a_bad_document_keeps_the_last_keys_and_is_fetched_in_full_next_time() -> None:
    server = KeyServer(jwks(OLD))
    source = source_for(server)

    async def scenario() -> None:
        await server.start()
        try:
            await source.refresh_for_unknown_kid()
            server.document = {"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}
            await asyncio.sleep(0.02)
            await source.refresh_for_unknown_kid()
            assert source.error is not None
            assert "key #0" in source.error
            assert source.current.key_for_kid("old") is not None
            await asyncio.sleep(0.02)
            await source.refresh_for_unknown_kid()
        finally:
            await source.close()
            await server.stop()
        assert server.requests[2].if_none_match is None, "no validator of the refused document"

    run(scenario)


@pytest.mark.parametrize("spiffe", [False, True], ids=["cache-control", "spiffe-refresh-hint"])
def test_the_servers_refresh_hint_shortens_the_interval_down_to_the_minimum(
    spiffe: bool,
) -> None:
    if spiffe:
        server = KeyServer(spiffe_bundle(wit_keys=[OLD], refresh_hint=0))
    else:
        server = KeyServer(jwks(OLD), cache_control="max-age=0")
    settings = LiveSourceSettings.of(
        key_set_config(server.url, spiffe=spiffe, min_refresh_interval_seconds=0.1), WIT_USE
    )
    source = LiveKeySource(TD, "trust_domains.demo.example", settings)

    async def scenario() -> None:
        await server.start()
        try:
            source.start()
            # refresh_seconds is an hour: only the hint can bring these fetches.
            await until(lambda: len(server.requests) >= 4, timeout=10)
        finally:
            await source.close()
            await server.stop()

    run(scenario)


def test_a_source_that_fails_at_first_keeps_retrying_until_it_loads() -> None:
    server = KeyServer(jwks(OLD), status=500)
    source = source_for(server)

    async def scenario() -> None:
        await server.start()
        try:
            source.start()
            await source.first_attempt()
            assert not source.loaded
            server.status = 200
            await until(lambda: source.loaded, timeout=10)
        finally:
            await source.close()
            await server.stop()

    run(scenario)


def test_a_spiffe_bundle_whose_sequence_goes_back_is_refused() -> None:
    server = KeyServer(spiffe_bundle(wit_keys=[OLD], sequence=5))
    settings = LiveSourceSettings.of(key_set_config(server.url, spiffe=True), WIT_USE)
    source = LiveKeySource(TD, "trust_domains.demo.example", settings)

    async def scenario() -> None:
        await server.start()
        try:
            await source.refresh_for_unknown_kid()
            server.document = spiffe_bundle(wit_keys=[NEW], sequence=4)
            await asyncio.sleep(0.02)
            await source.refresh_for_unknown_kid()
            assert source.error is not None
            assert "went back" in source.error
            assert source.current.key_for_kid("old") is not None
            assert source.sequence == 5
        finally:
            await source.close()
            await server.stop()

    run(scenario)


async def refused(verify: Awaitable[object]) -> Reason:
    """The reason `verify` is refused for (it must be)."""
    with pytest.raises(CredentialError) as caught:
        await verify
    return caught.value.reason


def test_a_live_bundle_verifies_wits_with_its_wit_svid_keys_only() -> None:
    """NEW is in the bundle as a `jwt-svid` key: a WIT naming it finds no key, even after
    the refresh its unknown kid triggers. A WIT naming no kid is refused before any key is
    tried (the WIT-SVID profile requires one)."""
    server = KeyServer(spiffe_bundle(wit_keys=[OLD], jwt_keys=[NEW]))
    registry = LiveKeyRegistry()
    verifier = wit_verifier(registry, server, spiffe=True)
    unnamed = sign_jws(
        {
            "sub": f"spiffe://{TD}/frontend",
            "exp": int(NOW) + 600,
            "cnf": {"jwk": {k: v for k, v in public_jwk(WORKLOAD).items() if k != "kid"}},
        },
        OLD,
        {"typ": "wit+jwt"},
    )

    async def scenario() -> None:
        await server.start()
        try:
            await refresh(registry, server, spiffe=True)
            assert verifier.verify(wit(OLD)).issuer_key.kid == "old"
            fetched = len(server.requests)
            unknown = await refused(verifier.verify_refreshing(wit(NEW)))
            assert unknown is Reason.WIT_KID_UNKNOWN
            assert len(server.requests) == fetched + 1, "the unknown kid was looked for"
            assert await refused(verifier.verify_refreshing(unnamed)) is Reason.WIT_KID_MISSING
        finally:
            await registry.close()
            await server.stop()

    run(scenario)


@pytest.mark.parametrize("use", [JwtKeyUse.JWT_SVID, JwtKeyUse.WIT_SVID], ids=str)
def test_a_live_bundle_for_a_tts_verifies_txn_tokens_with_its_jwt_svid_keys_only(
    use: JwtKeyUse,
) -> None:
    """The TTS's key published as `use`: only `jwt-svid` verifies its Txn-Tokens."""
    if use is JwtKeyUse.JWT_SVID:
        server = KeyServer(spiffe_bundle(jwt_keys=[OLD]))
    else:
        server = KeyServer(spiffe_bundle(wit_keys=[OLD]))
    registry = LiveKeyRegistry()
    services = {TD: key_set_config(server.url, spiffe=True)}
    holders = registry.key_sets(services, "trust_domains", ".txn_token_service")
    where = f"trust_domains.{TD}.txn_token_service"
    source = registry.source(where, TD, services[TD], JwtKeyUse.JWT_SVID)
    assert holders[TD] is source
    rules = TxnRules(clock_skew=30, max_lifetime=3600, legacy_names=False, max_chain_hops=4)
    verifier = TxnTokenVerifier(holders, rules, MutableClock(NOW), 10)
    token = mint_txn_token(
        OLD,
        audience=TD,
        requesting_workload=f"spiffe://{TD}/frontend",
        subject="user-1",
        scope="checkout",
        now=NOW,
    )

    async def scenario() -> None:
        await server.start()
        try:
            await source.refresh_for_unknown_kid()
            if use is JwtKeyUse.JWT_SVID:
                assert (await verifier.verify_refreshing(token, TD)).alg == "ES256"
            else:
                reason = await refused(verifier.verify_refreshing(token, TD))
                assert reason is Reason.TXN_KID_UNKNOWN
        finally:
            await registry.close()
            await server.stop()

    run(scenario)


def test_the_trust_revision_follows_live_keys() -> None:
    server = KeyServer(jwks(OLD))
    registry = LiveKeyRegistry()

    async def scenario() -> None:
        await server.start()
        try:
            store = registry.trust_store({TD: key_set_config(server.url)})
            unloaded = store.revision
            await refresh(registry, server)
            loaded = store.revision
            server.document = jwks(OLD, NEW)
            await asyncio.sleep(0.02)
            await refresh(registry, server)
            assert len({unloaded, loaded, store.revision}) == 3
        finally:
            await registry.close()
            await server.stop()

    run(scenario)


def config_with(tmp_path: Path, url: str, **fetch: Any) -> Any:
    return parse_config(
        {
            "server": {"listeners": [{"address": "127.0.0.1:9191"}]},
            "trust_domains": {TD: {"algorithms": ["ES256"], "jwks_url": url, "fetch": fetch or {}}},
            "services": {"echo": {"id": f"spiffe://{TD}/echo", "origins": ["https://e.example"]}},
            "policy": {"directory": "policies"},
        },
        "test",
        tmp_path,
    )


def test_a_reload_keeps_sources_whose_settings_did_not_change(tmp_path: Path) -> None:
    server = KeyServer(jwks(OLD))
    registry = LiveKeyRegistry()
    config = config_with(tmp_path, server.url)

    async def scenario() -> None:
        await server.start()
        try:
            await registry.prepare(config)
            source = registry.source(f"trust_domains.{TD}", TD, config.trust_domains[TD], WIT_USE)
            await registry.prepare(config_with(tmp_path, server.url))  # a reload, same settings
            assert len(server.requests) == 1, "nothing fetched again"
            assert registry.trust_store(config.trust_domains).get(TD) is source

            changed = config_with(tmp_path, server.url, refresh_seconds=600)
            await registry.prepare(changed)
            await registry.retain(changed)
            assert len(server.requests) == 2, "new settings: a new source, fetched at once"
            assert not source.started, "the old source stopped"
        finally:
            await registry.close()
            await server.stop()

    run(scenario)


def test_prepare_names_the_sources_that_have_no_keys_yet(tmp_path: Path) -> None:
    server = KeyServer(jwks(OLD), status=404)
    registry = LiveKeyRegistry()

    async def scenario() -> None:
        await server.start()
        try:
            with pytest.raises(ConfigError, match=r"trust_domains.demo.example \(.*answered 404"):
                await registry.prepare(config_with(tmp_path, server.url))
            assert [s.where for s in registry.pending()] == ["trust_domains.demo.example"]
        finally:
            await registry.close()
            await server.stop()

    run(scenario)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://keys.example.com/jwks.json", "only allowed to a loopback"),
        ("ftp://127.0.0.1/jwks.json", "expected an https"),
        ("https://user:pw@keys.example.com/jwks.json", "no credentials"),
    ],
)
def test_key_urls_must_be_https_except_to_loopback(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_with(tmp_path, url)


@pytest.mark.parametrize(
    ("fetch", "message"),
    [
        ({"refresh_seconds": 60, "max_stale_seconds": 60}, "max_stale_seconds must be longer"),
        ({"refresh_seconds": 10, "min_refresh_interval_seconds": 20}, "min_refresh_interval"),
    ],
)
def test_refresh_settings_must_be_consistent(
    tmp_path: Path, fetch: dict[str, float], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config_with(tmp_path, "https://keys.example.com/jwks.json", **fetch)
