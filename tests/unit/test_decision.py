from __future__ import annotations

from typing import Any

import pytest

from authz.policy.decision import InvalidDecision, PolicyDecision, decision_from_result

MANAGED = frozenset({"x-wimse-caller", "x-wimse-authz-reason"})


def decide(result: object) -> PolicyDecision:
    return decision_from_result(result, MANAGED)


def test_undefined_rule_denies() -> None:
    decision = decide(None)
    assert not decision.allowed
    assert not decision.defined


@pytest.mark.parametrize("value", [True, False])
def test_boolean_rules(value: bool) -> None:
    assert decide(value).allowed is value


def test_full_decision_object_is_read() -> None:
    decision = decide(
        {
            "allowed": False,
            "headers": {"x-a": "1", "x-b": ["2", "3"]},
            "response_headers_to_add": [{"x-r": "r"}],
            "request_headers_to_remove": ["cookie"],
            "body": "nope",
            "http_status": 429,
            "dynamic_metadata": {"rule": "r1", "tags": {"b", "a"}},
            "query_parameters_to_set": {"q": "1"},
            "query_parameters_to_remove": ["debug"],
            "reasons": {"z", "a"},
            "ignored": "unknown members are ignored, as OPA-Envoy does",
        }
    )
    assert decision.headers == (("x-a", "1"), ("x-b", "2"), ("x-b", "3"))
    assert decision.response_headers_to_add == (("x-r", "r"),)
    assert decision.request_headers_to_remove == ("cookie",)
    assert (decision.body, decision.http_status) == ("nope", 429)
    assert decision.dynamic_metadata == {"rule": "r1", "tags": ["a", "b"]}
    assert decision.query_parameters_to_set == (("q", "1"),)
    assert decision.query_parameters_to_remove == ("debug",)
    assert decision.reasons == ("a", "z")


def test_a_single_reason_string_is_accepted() -> None:
    assert decide({"allowed": False, "reasons": "because"}).reasons == ("because",)


def test_integral_float_status_is_accepted() -> None:
    assert decide({"allowed": False, "http_status": 401.0}).http_status == 401


@pytest.mark.parametrize(
    "result",
    [
        "yes",
        1,
        ["allowed"],
        {},
        {"allowed": "true"},
        {"allowed": 1},
        {"allowed": True, "headers": "x"},
        {"allowed": True, "headers": {"x-a": 1}},
        {"allowed": True, "headers": {"bad header": "v"}},
        {"allowed": True, "headers": {"x-a": "line\r\nx-injected: 1"}},
        {"allowed": True, "headers": {"x-wimse-caller": "spiffe://evil/x"}},
        {"allowed": True, "headers": {"X-Wimse-Caller": "spiffe://evil/x"}},
        {"allowed": False, "headers": {"x-wimse-authz-reason": "fine"}},
        {"allowed": True, "request_headers_to_remove": "cookie"},
        {"allowed": True, "request_headers_to_remove": ["bad name"]},
        {"allowed": False, "body": {"json": "object"}},
        {"allowed": False, "http_status": 299},
        {"allowed": False, "http_status": True},
        {"allowed": False, "http_status": "403"},
        {"allowed": True, "dynamic_metadata": ["x"]},
        {"allowed": True, "query_parameters_to_set": {"q": 1}},
        {"allowed": True, "reasons": [1]},
    ],
)
def test_malformed_decisions_are_invalid_not_guessed(result: Any) -> None:
    with pytest.raises(InvalidDecision):
        decide(result)
