from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from authz.observability.metrics import Metrics
from tests.support import GatewayHarness, expect_failed


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_decisions_are_counted_by_result_and_reason() -> None:
    metrics = Metrics()
    metrics.count_decision("deny", "wpt.expired")
    metrics.count_decision("deny", "wpt.expired")
    metrics.count_decision("allow", "policy.allowed")
    values = samples(metrics)
    key = ("wimse_authz_decisions_total", (("reason", "wpt.expired"), ("result", "deny")))
    assert values[key] == 2
    assert (
        values[("wimse_authz_decisions_total", (("reason", "policy.allowed"), ("result", "allow")))]
        == 1
    )


def test_a_full_replay_cache_is_counted_and_its_size_exported(harness: GatewayHarness) -> None:
    small = harness.rebuild(wpt={"replay_cache_entries": 1})
    small.check_path("/api/hello", small.signed_headers())
    expect_failed(small.check_path("/api/hello", small.signed_headers()), "replay.capacity")
    values = samples(small.gateway.metrics)
    assert values[("wimse_authz_replay_cache_full_total", ())] == 1
    assert values[("wimse_authz_replay_cache_entries", ())] == 1
