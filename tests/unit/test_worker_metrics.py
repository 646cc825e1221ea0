"""The supervisor's `/metrics`: every worker's families merged, each sample labelled with the
worker it came from."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.parser import text_string_to_metric_families

from authz.observability.metrics import Metrics
from authz.observability.worker_metrics import SupervisorMetrics


def exposition(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_each_workers_samples_carry_its_index_and_families_are_merged() -> None:
    first, second = Metrics(), Metrics()
    first.count_decision("allow", "policy.allowed")
    for _ in range(2):
        second.count_decision("allow", "policy.allowed")
    second.check_duration.observe(0.002)
    supervisor = SupervisorMetrics(2)
    supervisor.collector.update({0: exposition(first), 1: exposition(second)})
    text = generate_latest(supervisor.registry).decode()
    values = samples(text)
    allowed = (("reason", "policy.allowed"), ("result", "allow"))
    assert values["wimse_authz_decisions_total", (*allowed, ("worker", "0"))] == 1
    assert values["wimse_authz_decisions_total", (*allowed, ("worker", "1"))] == 2
    count = "wimse_authz_check_duration_seconds_count"
    assert values[count, (("worker", "1"),)] == 1
    assert values[count, (("worker", "0"),)] == 0
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(names) == len(set(names)), "one family per name, not one per worker"
    assert "wimse_authz_worker_restarts_total" in names


def test_a_worker_that_did_not_answer_is_left_out_and_openmetrics_still_renders() -> None:
    worker = Metrics()
    worker.count_decision("deny", "wpt.replayed")
    supervisor = SupervisorMetrics(2)
    supervisor.collector.update({0: exposition(worker), 1: None})
    values = samples(generate_latest(supervisor.registry).decode())
    assert not any(
        dict(labels).get("worker") == "1"
        for name, labels in values
        if name.startswith("wimse_authz_decisions")
    )
    rendered = openmetrics.generate_latest(supervisor.registry).decode()  # type: ignore[no-untyped-call]
    assert (
        'wimse_authz_decisions_total{reason="wpt.replayed",result="deny",worker="0"} 1.0'
        in rendered
    )
    assert rendered.endswith("# EOF\n")
