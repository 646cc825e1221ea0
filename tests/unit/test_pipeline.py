"""Pipeline outcomes other than credential attacks (those live in tests/security)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext

from authz.answers import Allowed
from authz.devtools.stack import POLICY_DIR
from authz.policy.engine import PolicyEngineError
from authz.reasons import Reason
from tests.support import (
    GatewayHarness,
    check_request,
    expect_allowed,
    expect_denied,
    expect_failed,
    header,
    hook_engine,
)
from tests.unit.test_embedded_engine import capture_panic


def test_valid_caller_on_a_granted_path_is_allowed(harness: GatewayHarness) -> None:
    allowed = expect_allowed(harness.check_path("/api/hello", harness.signed_headers()))
    assert header(allowed, "x-wimse-caller") == "spiffe://demo.example/frontend"
    assert header(allowed, "x-authz-policy") == "envoy.authz", "policy headers are passed on"
    assert allowed.dynamic_metadata["reason"] == "policy.allowed"


@pytest.mark.parametrize("workload", ["ops", "batch"])
def test_each_workload_key_algorithm_works_end_to_end(
    harness: GatewayHarness, workload: str
) -> None:
    verdict = harness.check_path("/api/hello", harness.signed_headers(workload=workload))
    if workload == "ops":
        expect_allowed(verdict)
    else:
        expect_denied(verdict, Reason.POLICY_DENIED, 403)


def test_policy_denial_of_a_verified_caller_is_403(harness: GatewayHarness) -> None:
    denied = expect_denied(
        harness.check_path("/admin/users", harness.signed_headers("/admin/users")),
        Reason.POLICY_DENIED,
        403,
    )
    assert header(denied, "www-authenticate") is None


def test_no_credentials_go_to_policy(harness: GatewayHarness) -> None:
    expect_allowed(harness.check_path("/healthz"))
    expect_denied(harness.check_path("/api/hello"), Reason.POLICY_UNAUTHENTICATED, 401)


def test_request_without_http_attributes_is_a_bad_request(harness: GatewayHarness) -> None:
    verdict = asyncio.run(harness.gateway.pipeline.check(AttributeContext()))
    expect_denied(verdict, Reason.REQUEST_MALFORMED, 400)


def test_malformed_path_is_a_bad_request(harness: GatewayHarness) -> None:
    expect_denied(harness.check_path("/api/%zz"), Reason.REQUEST_PATH_INVALID, 400)


NON_CANONICAL_PATHS = [
    pytest.param("//api/hello", id="leading-double-slash"),
    pytest.param("/api//hello", id="inner-double-slash"),
    pytest.param("/api/hello;x", id="path-parameter"),
    pytest.param("/api/hello%3Bx", id="encoded-semicolon"),
    pytest.param("/api/./hello", id="dot-segment"),
    pytest.param("/api/../api/hello", id="dotdot-segment"),
    pytest.param("/api/%2e%2e/api/hello", id="encoded-dotdot"),
    pytest.param("/api%2Fhello", id="encoded-slash"),
    pytest.param("/api\\hello", id="backslash"),
]


@pytest.mark.parametrize("path", NON_CANONICAL_PATHS)
def test_non_canonical_path_is_a_bad_request_even_with_a_proof_for_it(
    harness: GatewayHarness, path: str
) -> None:
    verdict = harness.check_path(path, harness.signed_headers(path))
    expect_denied(verdict, Reason.REQUEST_PATH_NOT_CANONICAL, 400)


def test_non_canonical_path_is_refused_before_any_credential_is_read(
    harness: GatewayHarness,
) -> None:
    headers = {"workload-identity-token": "not.a.jwt", "authorization": "WPT not.a.jwt"}
    verdict = harness.check_path("/api//hello", headers)
    expect_denied(verdict, Reason.REQUEST_PATH_NOT_CANONICAL, 400)


def test_the_query_is_not_part_of_the_canonical_path_rule(harness: GatewayHarness) -> None:
    verdict = harness.check_path("/api/hello?a=b;c&d=//..%2F%3B", harness.signed_headers())
    expect_allowed(verdict)


def test_percent_encoded_unreserved_characters_keep_passing(harness: GatewayHarness) -> None:
    expect_allowed(harness.check_path("/api/%68ello", harness.signed_headers("/api/%68ello")))


def test_malformed_json_body_is_a_bad_request(harness: GatewayHarness) -> None:
    verdict = harness.check_path(
        "/api/hello", {"content-type": "application/json"}, method="POST", body="{oops"
    )
    expect_denied(verdict, Reason.REQUEST_BODY_INVALID, 400)


def test_unknown_service_on_a_route_is_unavailable_not_denied(harness: GatewayHarness) -> None:
    expect_failed(harness.check_path("/api/hello", service="billing"), Reason.SERVICE_UNKNOWN)


def test_route_without_service_uses_the_default(harness: GatewayHarness) -> None:
    expect_allowed(harness.check_path("/api/hello", harness.signed_headers(), service=None))


def test_wpt_audience_comes_from_configuration_not_host(harness: GatewayHarness) -> None:
    request = check_request("/api/hello", harness.signed_headers())
    request.attributes.request.http.host = "attacker.example"
    request.attributes.request.http.headers[":authority"] = "attacker.example"
    expect_allowed(harness.check(request))


def _failing_engine(harness: GatewayHarness, error: BaseException) -> None:
    async def fail(document: dict[str, Any]) -> None:
        raise error

    hook_engine(harness.gateway.pipeline, fail)


def test_policy_engine_failure_is_503(harness: GatewayHarness) -> None:
    _failing_engine(harness, PolicyEngineError("boom"))
    failed = expect_failed(
        harness.check_path("/api/hello", harness.signed_headers()), Reason.POLICY_ERROR
    )
    assert failed.status == 503


def test_unexpected_exceptions_fail_closed_as_unavailable(harness: GatewayHarness) -> None:
    _failing_engine(harness, KeyError("bug"))
    expect_failed(harness.check_path("/api/hello", harness.signed_headers()), Reason.INTERNAL_ERROR)


def test_malformed_policy_decision_is_503(harness: GatewayHarness, tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text(
        'package envoy.authz\nimport rego.v1\ndecision := {"allowed": "yes"}\n'
    )
    broken = harness.rebuild(
        policy={"directory": str(tmp_path), "decision": "envoy/authz/decision"}
    )
    expect_failed(broken.check_path("/api/hello"), Reason.POLICY_INVALID_DECISION)


def test_boolean_decision_rule(harness: GatewayHarness) -> None:
    boolean = harness.rebuild(
        policy={"directory": str(POLICY_DIR), "decision": "envoy/authz/allow"}
    )
    verdict = boolean.check_path("/api/hello", boolean.signed_headers())
    assert isinstance(verdict, Allowed)
    assert header(verdict, "x-authz-policy") is None


def test_a_rust_panic_outside_the_engine_is_answered_unavailable(harness: GatewayHarness) -> None:
    _failing_engine(harness, capture_panic())
    failed = expect_failed(
        harness.check_path("/api/hello", harness.signed_headers()), Reason.INTERNAL_ERROR
    )
    assert failed.status == 503
