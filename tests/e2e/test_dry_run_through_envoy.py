"""Dry-run through a real Envoy: the shipped config's `/api/canary/` route sets
`wimse.dry_run: "true"`; the rest of the service is enforced. The gateway writes its
decision log to a file, which the tests read back."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from authz.devtools.stack import Identities
from tests.e2e.stack import RunningStack, start_stack, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, identity_dir: Path, identities: Identities
) -> Iterator[RunningStack]:
    directory = tmp_path_factory.mktemp("dry-run")
    running = start_stack(
        directory,
        identity_dir,
        identities,
        gateway_overrides={"decision_log": {"output": str(directory / "decisions.jsonl")}},
    )
    yield running
    running.stop()


def logged(stack: RunningStack, matches: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The one decision log line `matches` picks. The writer is asynchronous: wait for the
    line, reading only complete lines (one may be half written)."""
    path = stack.directory / "decisions.jsonl"
    found: list[dict[str, Any]] = []

    def written() -> bool:
        if not path.exists():
            return False
        complete = path.read_text(encoding="utf-8").split("\n")[:-1]
        found[:] = [entry for entry in map(json.loads, complete) if matches(entry)]
        return bool(found)

    wait_until(written, timeout=10)
    [line] = found
    return line


def decision(stack: RunningStack, decision_id: str) -> dict[str, Any]:
    """The decision log line for one decision."""
    return logged(stack, lambda entry: entry["decision_id"] == decision_id)


def test_a_policy_denial_on_a_dry_run_route_is_let_through_and_logged(
    stack: RunningStack,
) -> None:
    # `batch` holds no grant on the echo service: the enforced route refuses it.
    enforced = stack.request("/api/hello", stack.signed("/api/hello", "batch"))
    assert enforced.status == 403
    assert enforced.headers["x-wimse-authz-reason"] == "policy.denied"

    tried = stack.request("/api/canary/hello", stack.signed("/api/canary/hello", "batch"))
    assert tried.status == 200, tried.body
    upstream = tried.upstream_headers()
    assert upstream["x-wimse-caller"] == "spiffe://demo.example/batch"
    assert "authorization" not in upstream

    decision_id = json.loads(enforced.body)["decision_id"]
    assert decision(stack, decision_id)["dry_run"] is False
    line = logged(stack, lambda entry: entry["request"]["path"] == "/api/canary/hello")
    assert line["result"] == "allow"
    assert line["reason"] == "policy.dry_run_denied"
    assert line["dry_run"] is True
    assert line["policy_reasons"], "the would-be denial's reasons are logged"
    assert line["caller"]["id"] == "spiffe://demo.example/batch"
    assert line["route"] == {"wimse.service": "echo", "wimse.dry_run": "true"}


def test_dry_run_never_lets_a_forged_or_unproven_caller_through(stack: RunningStack) -> None:
    headers = stack.signed("/api/canary/hello", "batch")
    wrong_audience = stack.signed("/api/elsewhere", "batch")
    forged = {**headers, "authorization": wrong_audience["authorization"]}
    response = stack.request("/api/canary/hello", forged)
    assert response.status == 401
    assert response.headers["x-wimse-authz-reason"].startswith("wpt.")

    anonymous = stack.request("/api/canary/hello")
    assert anonymous.status == 401
    assert anonymous.headers["x-wimse-authz-reason"] == "policy.unauthenticated"

    replayed = stack.request("/api/canary/hello", headers)
    assert replayed.status == 200
    again = stack.request("/api/canary/hello", headers)
    assert again.status == 401
    assert again.headers["x-wimse-authz-reason"] == "wpt.replayed"


def test_an_allowed_request_on_a_dry_run_route_is_a_plain_allow(stack: RunningStack) -> None:
    response = stack.request("/api/canary/hello", stack.signed("/api/canary/hello"))
    assert response.status == 200
    assert response.upstream_headers()["x-wimse-caller"] == "spiffe://demo.example/frontend"
