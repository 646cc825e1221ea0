"""The diagnostics port over a real loopback socket: /metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.parser import text_string_to_metric_families

from authz.observability.diagnostics import DiagnosticsServer, Readiness, parse_address
from authz.observability.metrics import Metrics

TIMEOUT = aiohttp.ClientTimeout(total=5)

FAMILIES = {
    "wimse_authz_decisions": "counter",
    "wimse_authz_check_duration_seconds": "histogram",
    "wimse_authz_verification_failures": "counter",
    "wimse_authz_dry_run_denials": "counter",
    "wimse_authz_replay_cache_full": "counter",
    "wimse_authz_replay_cache_entries": "gauge",
    "wimse_authz_replay_store_errors": "counter",
    "wimse_authz_replay_store_fallbacks": "counter",
    "wimse_authz_replay_store_losses": "counter",
    "wimse_authz_replay_store_lost_at_seconds": "gauge",
    "wimse_authz_policy_engine_rebuilds": "counter",
    "wimse_authz_policy_reloads": "counter",
    "wimse_authz_policy_last_reload_timestamp_seconds": "gauge",
    "wimse_authz_policy_revision_info": "gauge",
    "wimse_authz_key_set_refreshes": "counter",
    "wimse_authz_decision_log_dropped": "counter",
    "wimse_authz_decision_log_queue_entries": "gauge",
    "wimse_authz_decision_cache_lookups": "counter",
    "wimse_authz_decision_cache_entries": "gauge",
    "wimse_authz_deny_list_entries": "gauge",
    "wimse_authz_deny_list_reloads": "counter",
}

SampleKey = tuple[str, tuple[tuple[str, str], ...]]
Samples = dict[SampleKey, float]


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=30))


@asynccontextmanager
async def serving(
    metrics: Metrics, readiness: Callable[[], Readiness] = lambda: Readiness(True)
) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    server = DiagnosticsServer("127.0.0.1:0", metrics.registry, readiness)
    await server.start()
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            yield session, f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()


async def scrape(session: aiohttp.ClientSession, base: str) -> tuple[dict[str, str], Samples]:
    async with session.get(f"{base}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE_PLAIN_0_0_4
        text = await response.text()
    families = list(text_string_to_metric_families(text))
    types = {family.name: family.type for family in families}
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }
    return types, values


def test_metrics_lists_every_family_with_its_type() -> None:
    async def scenario() -> None:
        async with serving(Metrics()) as (session, base):
            types, _ = await scrape(session, base)
        assert {name: types.get(name) for name in FAMILIES} == FAMILIES

    run(scenario)


def test_counters_move_between_scrapes_when_events_are_recorded() -> None:
    metrics = Metrics()
    events: list[tuple[Callable[[], None], SampleKey]] = [
        (lambda: metrics.count_verification_failure("wpt.expired"),
         ("wimse_authz_verification_failures_total", (("reason", "wpt.expired"),))),
        (lambda: metrics.count_dry_run_denial("caller may not write"),
         ("wimse_authz_dry_run_denials_total", (("reason", "caller may not write"),))),
        (lambda: metrics.record_reload(True),
         ("wimse_authz_policy_reloads_total", (("result", "success"),))),
        (lambda: metrics.record_reload(False),
         ("wimse_authz_policy_reloads_total", (("result", "failure"),))),
        (lambda: metrics.record_key_refresh(True),
         ("wimse_authz_key_set_refreshes_total", (("result", "success"),))),
        (lambda: metrics.record_key_refresh(False),
         ("wimse_authz_key_set_refreshes_total", (("result", "failure"),))),
        (metrics.count_decision_log_drop,
         ("wimse_authz_decision_log_dropped_total", ())),
        (lambda: metrics.count_cache_lookup(hit=True),
         ("wimse_authz_decision_cache_lookups_total", (("result", "hit"),))),
        (lambda: metrics.count_cache_lookup(hit=False),
         ("wimse_authz_decision_cache_lookups_total", (("result", "miss"),))),
        (lambda: metrics.record_deny_list_reload(True),
         ("wimse_authz_deny_list_reloads_total", (("result", "success"),))),
        (lambda: metrics.record_deny_list_reload(False),
         ("wimse_authz_deny_list_reloads_total", (("result", "failure"),))),
        (lambda: metrics.count_decision("deny", "wit.expired"),
         ("wimse_authz_decisions_total", (("reason", "wit.expired"), ("result", "deny")))),
    ]  # fmt: skip

    async def scenario() -> None:
        async with serving(metrics) as (session, base):
            _, before = await scrape(session, base)
            for record, _key in events:
                record()
            _, after = await scrape(session, base)
        for _record, key in events:
            assert after[key] - before.get(key, 0.0) == 1, key

    run(scenario)


def test_size_gauges_are_read_at_scrape_time() -> None:
    metrics = Metrics()
    sizes = {"queue": 0, "cache": 0, "deny": 0}
    metrics.watch_decision_log_queue(lambda: sizes["queue"])
    metrics.watch_decision_cache(lambda: sizes["cache"])
    metrics.watch_deny_list(lambda: sizes["deny"])

    async def scenario() -> None:
        async with serving(metrics) as (session, base):
            _, before = await scrape(session, base)
            sizes.update(queue=3, cache=7, deny=2)
            _, after = await scrape(session, base)
        for name, size in (
            ("wimse_authz_decision_log_queue_entries", 3),
            ("wimse_authz_decision_cache_entries", 7),
            ("wimse_authz_deny_list_entries", 2),
        ):
            assert (before[(name, ())], after[(name, ())]) == (0, size)

    run(scenario)


def test_revision_info_follows_the_serving_revision() -> None:
    metrics = Metrics()

    async def scenario() -> None:
        async with serving(metrics) as (session, base):
            metrics.set_revision("p1", "t1")
            _, first = await scrape(session, base)
            metrics.set_revision("p2", "t1")
            _, second = await scrape(session, base)

        def revisions(values: Samples) -> list[dict[str, str]]:
            return [
                dict(labels)
                for (name, labels), value in values.items()
                if name == "wimse_authz_policy_revision_info" and value == 1
            ]

        assert revisions(first) == [{"revision": "p1", "trust_revision": "t1"}]
        assert revisions(second) == [{"revision": "p2", "trust_revision": "t1"}]

    run(scenario)


def test_openmetrics_is_served_when_the_scraper_asks_for_it() -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"

    async def scenario() -> None:
        async with serving(Metrics()) as (session, base):
            async with session.get(f"{base}/metrics", headers={"Accept": accept}) as response:
                assert response.headers["Content-Type"] == openmetrics.CONTENT_TYPE_LATEST
                assert (await response.text()).endswith("# EOF\n")
            refused = "application/openmetrics-text;q=0,text/plain"
            async with session.get(f"{base}/metrics", headers={"Accept": refused}) as response:
                assert response.headers["Content-Type"] == CONTENT_TYPE_PLAIN_0_0_4

    run(scenario)


def test_healthz_answers_ok() -> None:
    async def scenario() -> None:
        async with serving(Metrics()) as (session, base), session.get(f"{base}/healthz") as got:
            assert got.status == 200
            assert await got.json() == {"status": "ok"}

    run(scenario)


def test_readyz_is_503_until_the_check_reports_ready() -> None:
    state: dict[str, object] = {"ready": False, "policy_revision": None}

    def readiness() -> Readiness:
        detail = {"policy_revision": state["policy_revision"], "last_reload": "pending"}
        return Readiness(ready=bool(state["ready"]), detail=detail)

    async def scenario() -> None:
        async with serving(Metrics(), readiness) as (session, base):
            async with session.get(f"{base}/readyz") as response:
                assert response.status == 503
                assert response.headers["Cache-Control"] == "no-store"
                assert await response.json() == {
                    "status": "not_ready",
                    "detail": {"policy_revision": None, "last_reload": "pending"},
                }
            state.update(ready=True, policy_revision="abc123")
            async with session.get(f"{base}/readyz") as response:
                assert response.status == 200
                assert await response.json() == {
                    "status": "ready",
                    "detail": {"policy_revision": "abc123", "last_reload": "pending"},
                }
            state["ready"] = False
            async with session.head(f"{base}/readyz") as response:
                assert response.status == 503

    run(scenario)


def test_readyz_fails_closed_when_the_check_itself_fails() -> None:
    def broken() -> Readiness:
        raise RuntimeError("state not built")

    def unserialisable() -> Readiness:
        return Readiness(ready=True, detail={"loaded_at": object()})

    async def scenario() -> None:
        for readiness in (broken, unserialisable):
            async with serving(Metrics(), readiness) as (session, base):
                async with session.get(f"{base}/readyz") as response:
                    assert response.status == 503
                    body = await response.json()
                assert body == {
                    "status": "not_ready",
                    "detail": {"error": "readiness check failed"},
                }

    run(scenario)


def test_unknown_paths_are_404_and_other_methods_405() -> None:
    async def scenario() -> None:
        async with serving(Metrics()) as (session, base):
            for path in ("/", "/metrics/", "/debug", "/readyz/../etc", "/%3Cscript%3E"):
                async with session.get(f"{base}{path}") as response:
                    assert response.status == 404, path
                    assert "script" not in await response.text()
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                async with session.request(method, f"{base}/metrics", data=b"x") as response:
                    assert response.status == 405, method
            async with session.head(f"{base}/metrics") as response:
                assert response.status == 200
                assert await response.read() == b""

    run(scenario)


def test_a_port_in_use_is_refused_with_the_address_named() -> None:
    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            address = f"127.0.0.1:{taken.getsockname()[1]}"
            server = DiagnosticsServer(address, Metrics().registry, lambda: Readiness(True))
            with pytest.raises(OSError, match=f"cannot listen on {address} for diagnostics"):
                await server.start()
            await server.stop()

    run(scenario)


def test_stop_releases_the_port() -> None:
    async def scenario() -> None:
        registry = Metrics().registry
        first = DiagnosticsServer("127.0.0.1:0", registry, lambda: Readiness(True))
        await first.start()
        address = f"127.0.0.1:{first.port}"
        await first.stop()
        await first.stop()
        again = DiagnosticsServer(address, registry, lambda: Readiness(True))
        await again.start()
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as session,
                session.get(f"http://{address}/healthz") as response,
            ):
                assert response.status == 200
        finally:
            await again.stop()

    run(scenario)


@pytest.mark.parametrize("address", ["9102", "127.0.0.1", ":9102", "127.0.0.1:http", "h:70000"])
def test_a_malformed_address_is_refused_before_binding(address: str) -> None:
    with pytest.raises(ValueError, match="expected host:port"):
        parse_address(address)


def test_ipv6_addresses_keep_their_host() -> None:
    assert parse_address("[::1]:9102") == ("::1", 9102)


def test_a_unix_socket_address_serves_the_same_paths(tmp_path: Path) -> None:
    """The workers of `serve --workers N` serve their diagnostics this way."""
    path = tmp_path / "worker-0.sock"

    async def scenario() -> None:
        server = DiagnosticsServer(f"unix:{path}", Metrics().registry, lambda: Readiness(False))
        await server.start()
        try:
            connector = aiohttp.UnixConnector(path=str(path))
            async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
                async with session.get("http://worker/healthz") as response:
                    assert response.status == 200
                async with session.get("http://worker/readyz") as response:
                    assert response.status == 503
                async with session.get("http://worker/metrics") as response:
                    assert "wimse_authz_decisions_total" in await response.text()
        finally:
            await server.stop()

    run(scenario)


def test_an_asynchronous_readiness_check_is_awaited() -> None:
    async def scenario() -> None:
        async def ready() -> Readiness:
            await asyncio.sleep(0)
            return Readiness(False, {"workers": {"1": {"ready": False}}})

        server = DiagnosticsServer("127.0.0.1:0", Metrics().registry, ready)
        await server.start()
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as session,
                session.get(f"http://127.0.0.1:{server.port}/readyz") as response,
            ):
                assert response.status == 503
                body = await response.json()
            assert body == {
                "status": "not_ready",
                "detail": {"workers": {"1": {"ready": False}}},
            }
        finally:
            await server.stop()

    run(scenario)


def test_a_liveness_check_decides_healthz_and_fails_closed() -> None:
    answers: list[Readiness | Exception] = [
        Readiness(True, {"workers": 2}),
        Readiness(False, {"workers": 1}),
        RuntimeError("broken"),
    ]

    async def scenario() -> None:
        async def alive() -> Readiness:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

        server = DiagnosticsServer(
            "127.0.0.1:0", Metrics().registry, lambda: Readiness(True), liveness=alive
        )
        await server.start()
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
                statuses = []
                for _ in range(3):
                    async with session.get(f"http://127.0.0.1:{server.port}/healthz") as response:
                        statuses.append((response.status, (await response.json())["status"]))
            assert statuses == [(200, "ok"), (503, "failing"), (503, "failing")]
        finally:
            await server.stop()

    run(scenario)


def test_before_scrape_runs_before_each_metrics_answer() -> None:
    metrics = Metrics()
    scrapes: list[int] = []

    async def before() -> None:
        scrapes.append(1)
        metrics.count_decision("allow", "policy.allowed")

    async def scenario() -> None:
        server = DiagnosticsServer(
            "127.0.0.1:0", metrics.registry, lambda: Readiness(True), before_scrape=before
        )
        await server.start()
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
                _, values = await scrape(session, f"http://127.0.0.1:{server.port}")
        finally:
            await server.stop()
        key = ("wimse_authz_decisions_total", (("reason", "policy.allowed"), ("result", "allow")))
        assert values[key] == 1
        assert scrapes == [1]

    run(scenario)
