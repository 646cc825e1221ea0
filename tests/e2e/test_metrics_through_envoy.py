"""The diagnostics port of a real gateway process behind a real Envoy: `/metrics` parses with
Prometheus's own text parser and moves as requests flow; `/healthz` and `/readyz` answer."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from authz.devtools.stack import Identities, free_port
from tests.e2e.stack import RunningStack, start_stack

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
DIAGNOSTICS_PORTS: dict[int, int] = {}
"""The diagnostics port of each running stack."""


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, identity_dir: Path, identities: Identities
) -> Iterator[RunningStack]:
    port = free_port()
    running = start_stack(
        tmp_path_factory.mktemp("metrics"),
        identity_dir,
        identities,
        gateway_overrides={"diagnostics": {"address": f"127.0.0.1:{port}"}},
    )
    DIAGNOSTICS_PORTS[id(running)] = port
    yield running
    running.stop()


def get(stack: RunningStack, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{DIAGNOSTICS_PORTS[id(stack)]}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(stack: RunningStack) -> tuple[Samples, dict[str, str]]:
    """Every sample by (name, labels), and each family's type, via Prometheus's parser."""
    status, text = get(stack, "/metrics")
    assert status == 200
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_parse_and_move_as_requests_flow(stack: RunningStack) -> None:
    before, types = scrape(stack)
    assert types["wimse_authz_check_duration_seconds"] == "histogram"
    assert types["wimse_authz_decisions"] == "counter"
    assert types["wimse_authz_verification_failures"] == "counter"
    assert types["wimse_authz_replay_cache_entries"] == "gauge"
    assert types["wimse_authz_policy_revision_info"] == "gauge"
    assert types["wimse_authz_policy_reloads"] == "counter"
    assert types["wimse_authz_key_set_refreshes"] == "counter"

    headers = stack.signed("/api/hello")
    for _ in range(3):
        assert stack.request("/api/hello", stack.signed("/api/hello")).status == 200
    assert stack.request("/api/hello", headers).status == 200
    assert stack.request("/api/hello", headers).status == 401  # replayed
    assert stack.request("/api/hello", stack.signed("/api/hello", "batch")).status == 403

    after, _ = scrape(stack)
    allowed = ("wimse_authz_decisions_total", {"result": "allow", "reason": "policy.allowed"})
    assert value(after, allowed[0], **allowed[1]) - value(before, allowed[0], **allowed[1]) >= 4
    replayed = {"result": "deny", "reason": "wpt.replayed"}
    assert value(after, "wimse_authz_decisions_total", **replayed) == 1
    assert value(after, "wimse_authz_verification_failures_total", reason="wpt.replayed") == 1
    denied = {"result": "deny", "reason": "policy.denied"}
    assert value(after, "wimse_authz_decisions_total", **denied) == 1
    checks = "wimse_authz_check_duration_seconds_count"
    assert value(after, checks) - value(before, checks) >= 6
    # A microsecond-range first bucket exists, and real checks land under a second.
    assert value(after, "wimse_authz_check_duration_seconds_bucket", le="5e-05") >= 0
    assert value(after, "wimse_authz_check_duration_seconds_bucket", le="1.0") >= 6
    assert value(after, "wimse_authz_replay_cache_entries") >= 5
    assert value(after, "wimse_authz_policy_reloads_total", result="success") == 1
    [revision] = [
        dict(labels)
        for (name, labels), v in after.items()
        if name == "wimse_authz_policy_revision_info"
    ]
    assert revision["revision"]
    assert revision["trust_revision"]


def test_health_and_readiness(stack: RunningStack) -> None:
    status, body = get(stack, "/healthz")
    assert status == 200
    assert json.loads(body) == {"status": "ok"}
    status, body = get(stack, "/readyz")
    assert status == 200
    detail = json.loads(body)["detail"]
    assert detail["policy_revision"]
    assert detail["last_reload"]["ok"] is True
    assert detail["last_reload"]["trigger"] == "start"
