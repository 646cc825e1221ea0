"""A policy author's day one, as docs/policies.md walks through it, against the real gateway:

1. "Let frontend GET /api/orders/* only with Txn-Token scope orders.read and affirming
   attestation": one route rule in the data file (`callers` names whom it applies to), no
   Rego edited.
2. A team's own requirement as an extension package (docs/examples/extensions/), with its own
   tests, beside the shipped policies: `policy test` runs them all, and its failures refuse.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from authz.cli import main
from authz.devtools.mint import ear_claims, mint_ear
from authz.devtools.stack import ATTESTATION_HEADER, POLICY_DIR, REPO_ROOT
from tests.support import ORIGIN, GatewayHarness, expect_allowed, expect_denied

EXAMPLE = REPO_ROOT / "docs" / "examples" / "extensions"
USER_TASK_RULE = {
    "methods": ["GET"],
    "path_prefixes": [["api", "orders"]],
    "callers": ["spiffe://demo.example/frontend"],
    "txn": {"required": True, "scope": "orders.read"},
    "attestation": {},
}


def team_policies(directory: Path, *, user_task: bool = True) -> Path:
    """The shipped policies and the example extension; with `user_task`, the user task's
    route rule in the data file too."""
    shutil.copytree(POLICY_DIR, directory)
    if user_task:
        data_file = directory / "mesh" / "data.json"
        data = json.loads(data_file.read_text())
        data["services"]["orders"]["routes"].append(USER_TASK_RULE)
        data_file.write_text(json.dumps(data, indent=2))
    (directory / "extensions").mkdir()
    for example in EXAMPLE.glob("*.rego"):
        shutil.copy(example, directory / "extensions" / example.name)
    return directory


@pytest.fixture
def orders(harness: GatewayHarness, tmp_path: Path) -> GatewayHarness:
    policies = team_policies(tmp_path / "policies")
    return harness.rebuild(
        policy={"directory": str(policies), "decision": "envoy/authz/decision"},
        services={"orders": {"id": "spiffe://demo.example/orders", "origins": [ORIGIN]}},
        default_service="orders",
    )


def call(
    h: GatewayHarness,
    workload: str,
    *,
    scope: str | None = None,
    attestation: str | None = None,
    method: str = "GET",
    path: str = "/api/orders/7",
    tctx: dict[str, Any] | None = None,
) -> Any:
    headers: dict[str, str] = {}
    bound: dict[str, str] = {}
    txn = None
    if scope is not None:
        txn = h.txn_token(scope=scope, tctx=tctx)
        headers["txn-token"] = txn
    if attestation is not None:
        claims = ear_claims(
            {"platform": (attestation, {"hardware": 2, "instance-identity": 2})},
            subject=h.identities.workload_id(workload),
            now=h.clock.now,
        )
        bound[ATTESTATION_HEADER] = mint_ear(h.identities.attestation_verifier, claims)
    wit = h.wit(workload)
    wpt = h.wpt(wit, path, workload, txn_token=txn, other_tokens=bound or None)
    headers |= {"workload-identity-token": wit, "authorization": f"WPT {wpt}", **bound}
    return h.check_path(path, headers, method=method, service="orders")


def test_the_extension_and_the_shipped_policies_pass_their_tests_together(tmp_path: Path) -> None:
    policies = team_policies(tmp_path / "policies", user_task=False)
    assert main(["policy", "test", str(policies)]) == 0


def test_the_new_rule_fails_exactly_the_shipped_test_that_pinned_the_old_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As docs/policies.md says: that test is then updated, and the set reloads."""
    assert main(["policy", "test", str(team_policies(tmp_path / "policies"))]) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL ")]
    assert len(failed) == 1
    assert "test_orders_readable_by_frontend_ops_and_reseller" in failed[0]


def test_frontend_reads_orders_with_an_orders_read_transaction_and_affirming_attestation(
    orders: GatewayHarness,
) -> None:
    expect_allowed(call(orders, "frontend", scope="orders.read", attestation="affirming"))


@pytest.mark.parametrize(
    ("scope", "attestation"),
    [
        (None, "affirming"),  # no Txn-Token
        ("checkout", "affirming"),  # another purpose
        ("orders.read", None),  # no attestation
        ("orders.read", "warning"),  # not affirming
    ],
)
def test_frontend_reads_no_orders_without_either(
    orders: GatewayHarness, scope: str | None, attestation: str | None
) -> None:
    expect_denied(call(orders, "frontend", scope=scope, attestation=attestation), "policy.denied")


def test_the_rule_names_its_callers_so_ops_reads_as_before(orders: GatewayHarness) -> None:
    expect_allowed(call(orders, "ops"))


def test_an_extension_failure_refuses_with_its_reason(
    orders: GatewayHarness, tmp_path: Path
) -> None:
    decisions = tmp_path / "decisions.jsonl"
    logged = orders.rebuild(decision_log={"output": str(decisions)})
    verdict = call(
        logged,
        "frontend",
        scope="orders.read",
        attestation="affirming",
        tctx={"currency": "USD"},
        method="POST",
        path="/api/orders",
    )
    expect_denied(verdict, "policy.denied")
    logged.gateway.runtime.close()
    reasons = json.loads(decisions.read_text().splitlines()[-1])["policy_reasons"]
    assert "orders are placed in EUR, not USD" in reasons
