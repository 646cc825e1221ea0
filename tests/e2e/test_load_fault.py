"""The load-and-fault script (bench/load_fault.py), run once, short and with few clients:
real redis-server, real HTTPS JWKS server, real gateway process, real Envoy and the echo
upstream, with Redis and the JWKS server stopped and restarted under load.

Only what must hold on any machine is asserted: nothing that must be denied is allowed,
every fault happened and showed its effect. Never throughput or timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from authz.devtools.stack import REPO_ROOT

pytestmark = pytest.mark.e2e

SCRIPT = REPO_ROOT / "bench" / "load_fault.py"
DURATION = 24  # the script's shortest run: room for its three fault windows
RUN_TIMEOUT = 240


@pytest.fixture(scope="module")
def run() -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--duration", str(DURATION), "--concurrency", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
        cwd=REPO_ROOT,
    )
    try:
        report: dict[str, Any] = json.loads(completed.stdout)
    except ValueError:
        pytest.fail(f"no JSON report (exit {completed.returncode}):\n{completed.stderr[-4000:]}")
    return completed, report


@pytest.fixture(scope="module")
def report(run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> dict[str, Any]:
    return run[1]


def window(report: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(w for w in report["windows"] if w["name"] == name)
    return found


def test_the_run_completes_with_exit_status_0(
    run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    completed, report = run
    assert completed.returncode == 0, (report.get("checks"), completed.stderr[-4000:])
    assert report["requests"] > 0


def test_nothing_that_must_be_denied_is_ever_allowed(report: dict[str, Any]) -> None:
    assert report["wrongful_allows"] == 0, report["wrongful_allow_samples"]
    for kind in ("replay", "forged", "policy_denied", "anonymous"):
        assert report["classes"][kind]["count"] > 0, f"no {kind} requests were sent"
        assert "200" not in report["classes"][kind]["statuses"]


def test_every_fault_window_happened(report: dict[str, Any]) -> None:
    assert [w["name"] for w in report["windows"]] == ["redis", "jwks_short", "jwks_long"]
    assert all(w["end"] is not None and w["end"] > w["start"] for w in report["windows"])
    events = [event["event"] for event in report["timeline"]]
    for name, target in (("redis", "redis"), ("jwks_short", "jwks"), ("jwks_long", "jwks")):
        assert f"{name}: {target} down" in events
        assert f"{name}: {target} answering again" in events


def test_requests_are_answered_503_replay_store_unavailable_while_redis_is_down(
    report: dict[str, Any],
) -> None:
    observed = window(report, "redis")["observed"]
    assert observed["valid"].get("503 replay.store_unavailable", 0) > 0, observed


def test_replays_are_refused_as_wpt_replayed_after_redis_came_back(report: dict[str, Any]) -> None:
    assert report["replays_after_redis_came_back"].get("401 wpt.replayed", 0) > 0


def test_keys_older_than_max_stale_are_answered_503_anchors_unavailable(
    report: dict[str, Any],
) -> None:
    observed = window(report, "jwks_long")["observed"]
    assert observed["valid"].get("503 trust.anchors_unavailable", 0) > 0, observed
    assert report["checks"]["short_jwks_outage_served_from_last_good_keys"]
