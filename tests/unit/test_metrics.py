from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from authz.observability.metrics import DRY_RUN_REASONS_MAX, Metrics
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


def test_revision_info_exports_only_the_revision_now_serving() -> None:
    metrics = Metrics()
    metrics.set_revision("policy-1", "trust-1")
    metrics.set_revision("policy-2", "trust-1")
    revisions = {
        labels: value
        for (name, labels), value in samples(metrics).items()
        if name == "wimse_authz_policy_revision_info"
    }
    assert revisions == {(("revision", "policy-2"), ("trust_revision", "trust-1")): 1}


def test_reloads_are_counted_and_stamped_by_result() -> None:
    metrics = Metrics()
    metrics.record_reload(True, at=1000.0)
    metrics.record_reload(False, at=2000.0)
    metrics.record_reload(False, at=3000.0)
    values = samples(metrics)
    assert values[("wimse_authz_policy_reloads_total", (("result", "success"),))] == 1
    assert values[("wimse_authz_policy_reloads_total", (("result", "failure"),))] == 2
    stamp = "wimse_authz_policy_last_reload_timestamp_seconds"
    assert values[(stamp, (("result", "success"),))] == 1000.0
    assert values[(stamp, (("result", "failure"),))] == 3000.0


def test_results_are_exported_at_zero_before_anything_happens() -> None:
    values = samples(Metrics())
    for family in ("policy_reloads", "key_set_refreshes", "deny_list_reloads"):
        for result in ("success", "failure"):
            assert values[(f"wimse_authz_{family}_total", (("result", result),))] == 0
    for result in ("hit", "miss"):
        assert values[("wimse_authz_decision_cache_lookups_total", (("result", result),))] == 0


def test_dry_run_reasons_are_cut_to_64_characters() -> None:
    metrics = Metrics()
    metrics.count_dry_run_denial("x" * 200)
    metrics.count_dry_run_denial("x" * 64 + "different tail")
    metrics.count_dry_run_denial("")
    values = samples(metrics)
    assert values[("wimse_authz_dry_run_denials_total", (("reason", "x" * 64),))] == 2
    assert values[("wimse_authz_dry_run_denials_total", (("reason", "unspecified"),))] == 1


def test_dry_run_reasons_beyond_the_cap_are_counted_as_other() -> None:
    metrics = Metrics()
    for n in range(DRY_RUN_REASONS_MAX + 5):
        metrics.count_dry_run_denial(f"reason {n}")
    metrics.count_dry_run_denial("reason 0")
    values = {
        dict(labels)["reason"]: value
        for (name, labels), value in samples(metrics).items()
        if name == "wimse_authz_dry_run_denials_total"
    }
    assert len(values) == DRY_RUN_REASONS_MAX + 1
    assert values["other"] == 5
    assert values["reason 0"] == 2


@dataclass
class CertificateStatusNow:
    reloads: int = 0
    failures: int = 0
    not_after: float = 1_900_000_000.0


def test_tls_listener_certificates_are_reported_at_scrape_time() -> None:
    metrics = Metrics()
    status = CertificateStatusNow()
    metrics.watch_tls_listeners({"127.0.0.1:9443": status})
    listener = ("listener", "127.0.0.1:9443")
    expiry = ("wimse_authz_tls_certificate_not_after_seconds", (listener,))
    assert samples(metrics)[expiry] == 1_900_000_000.0
    status.reloads, status.failures, status.not_after = 2, 1, 1_950_000_000.0
    after = samples(metrics)
    reloads = "wimse_authz_tls_certificate_reloads_total"
    assert after[(reloads, (listener, ("result", "success")))] == 2
    assert after[(reloads, (listener, ("result", "failure")))] == 1
    assert after[expiry] == 1_950_000_000.0


def test_no_tls_families_without_tls_listeners() -> None:
    metrics = Metrics()
    metrics.watch_tls_listeners({})
    assert not any(name.startswith("wimse_authz_tls") for name, _ in samples(metrics))


def test_stage_times_add_up_what_each_check_spent_verifying_and_deciding(
    harness: GatewayHarness,
) -> None:
    gateway = harness.rebuild()
    gateway.check_path("/api/hello", gateway.signed_headers())  # verified and decided
    gateway.check_path("/api/hello", {"workload-identity-token": "x.y.z"})  # refused early
    values = samples(gateway.gateway.metrics)
    verify = values[("wimse_authz_check_stage_seconds_total", (("stage", "verify"),))]
    evaluate = values[("wimse_authz_check_stage_seconds_total", (("stage", "evaluate"),))]
    assert 0 < verify < 1
    assert 0 < evaluate < 1
