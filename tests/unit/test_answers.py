"""The outcome → answer table, and its encoding as Envoy CheckResponse messages."""

from __future__ import annotations

from google.protobuf import json_format
from google.rpc import code_pb2

from authz.answers import Allowed, Answers, Denied, Failed
from authz.config import ResponsesConfig, UnavailableConfig, UpstreamConfig
from authz.credentials.authenticator import Authentication, AuthnMethod, Caller
from authz.credentials.identifiers import parse_workload_id
from authz.credentials.presentation import PresentedCredentials, ProofStyle
from authz.policy.decision import PolicyDecision
from authz.reasons import Reason
from authz.server.authorization import encoded_answer
from authz.server.envoy_response import check_response

ANSWERS = Answers(ResponsesConfig(), UpstreamConfig())
CALLER = Caller(parse_workload_id("spiffe://demo.example/frontend"), AuthnMethod.WPT)
WPT_PRESENTED = PresentedCredentials("wit", "wpt", False, None, False, False)
NOTHING_PRESENTED = PresentedCredentials(None, None, False, None, False, False)


def headers_of(verdict: Allowed | Denied | Failed) -> dict[str, str]:
    return dict(verdict.headers)


def test_invalid_wpt_credentials_are_401_with_www_authenticate() -> None:
    denied = ANSWERS.invalid_credentials("d1", Reason.WPT_EXPIRED, ProofStyle.WPT)
    assert denied.status == 401
    assert headers_of(denied)["www-authenticate"] == "WPT"
    assert headers_of(denied)["x-wimse-authz-reason"] == "wpt.expired"
    assert '"reason": "wpt.expired"' in denied.body


def test_invalid_signature_credentials_are_400() -> None:
    denied = ANSWERS.invalid_credentials(
        "d1", Reason.HTTPSIG_SIGNATURE_INVALID, ProofStyle.HTTP_SIGNATURE
    )
    assert denied.status == 400
    assert "www-authenticate" not in headers_of(denied)


def test_policy_denial_of_an_authenticated_caller_is_403() -> None:
    denied = ANSWERS.policy_denied(
        "d1", PolicyDecision(allowed=False), Authentication(CALLER, WPT_PRESENTED)
    )
    assert (denied.status, denied.reason) == (403, Reason.POLICY_DENIED)
    assert denied.dynamic_metadata["caller"] == CALLER.id.uri


def test_policy_denial_without_credentials_is_401() -> None:
    denied = ANSWERS.policy_denied(
        "d1", PolicyDecision(allowed=False), Authentication(None, NOTHING_PRESENTED)
    )
    assert (denied.status, denied.reason) == (401, Reason.POLICY_UNAUTHENTICATED)
    assert headers_of(denied)["www-authenticate"] == "WPT"


def test_policy_status_body_and_headers_win() -> None:
    decision = PolicyDecision(
        allowed=False, http_status=429, body="slow down", headers=(("retry-after", "5"),)
    )
    denied = ANSWERS.policy_denied("d1", decision, Authentication(None, NOTHING_PRESENTED))
    assert (denied.status, denied.body) == (429, "slow down")
    assert headers_of(denied)["retry-after"] == "5"


def test_unavailable_is_503_never_403() -> None:
    failed = ANSWERS.unavailable("d1", Reason.POLICY_ERROR)
    assert failed.status == 503
    assert not failed.as_envoy_error


def test_allow_sets_identity_headers_and_strips_the_wpt() -> None:
    allowed = ANSWERS.allowed(
        "d1", PolicyDecision(allowed=True), Authentication(CALLER, WPT_PRESENTED)
    )
    assert headers_of(allowed) == {
        "x-wimse-caller": "spiffe://demo.example/frontend",
        "x-wimse-caller-trust-domain": "demo.example",
        "x-wimse-authenticated-by": "wpt",
    }
    assert allowed.headers_to_remove == ("authorization",)
    assert allowed.dynamic_metadata["decision_id"] == "d1"


def test_allow_without_caller_removes_every_identity_header() -> None:
    allowed = ANSWERS.allowed(
        "d1", PolicyDecision(allowed=True), Authentication(None, NOTHING_PRESENTED)
    )
    assert allowed.headers == ()
    assert set(allowed.headers_to_remove) == {
        "x-wimse-caller",
        "x-wimse-caller-trust-domain",
        "x-wimse-authenticated-by",
    }


def test_legacy_proof_header_is_stripped_but_the_bearer_token_kept() -> None:
    legacy = PresentedCredentials("wit", "wpt", True, "token", False, False)
    allowed = ANSWERS.allowed("d1", PolicyDecision(allowed=True), Authentication(CALLER, legacy))
    assert "workload-proof-token" in allowed.headers_to_remove
    assert "authorization" not in allowed.headers_to_remove


def test_disabled_identity_headers_and_kept_proofs() -> None:
    config = UpstreamConfig.model_validate(
        {
            "identity_headers": {"trust_domain": None, "authenticated_by": None},
            "strip_proof_headers": False,
        }
    )
    allowed = Answers(ResponsesConfig(), config).allowed(
        "d1", PolicyDecision(allowed=True), Authentication(CALLER, WPT_PRESENTED)
    )
    assert headers_of(allowed) == {"x-wimse-caller": "spiffe://demo.example/frontend"}
    assert allowed.headers_to_remove == ()


def test_allowed_encodes_headers_with_append_false() -> None:
    decision = PolicyDecision(
        allowed=True,
        response_headers_to_add=(("x-r", "1"),),
        query_parameters_to_set=(("q", "v"),),
        query_parameters_to_remove=("debug",),
        dynamic_metadata={"rule": "r1"},
    )
    allowed = ANSWERS.allowed("d1", decision, Authentication(CALLER, WPT_PRESENTED))
    response = check_response(allowed)
    assert response.status.code == code_pb2.OK
    options = response.ok_response.headers
    assert options[0].header.key == "x-wimse-caller"
    assert options[0].HasField("append")
    assert options[0].append.value is False
    assert list(response.ok_response.headers_to_remove) == ["authorization"]
    assert response.ok_response.query_parameters_to_set[0].key == "q"
    assert list(response.ok_response.query_parameters_to_remove) == ["debug"]
    assert json_format.MessageToDict(response.dynamic_metadata) == {
        "rule": "r1",
        "decision_id": "d1",
        "reason": "policy.allowed",
        "caller": "spiffe://demo.example/frontend",
    }


def test_denied_encodes_status_headers_and_body() -> None:
    response = check_response(ANSWERS.invalid_credentials("d1", Reason.WIT_EXPIRED, ProofStyle.WPT))
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert response.denied_response.status.code == 401
    assert {o.header.key: o.header.value for o in response.denied_response.headers}[
        "x-wimse-authz-reason"
    ] == "wit.expired"
    assert "wit.expired" in response.denied_response.body


def test_unavailable_is_a_503_denial_by_default() -> None:
    response = check_response(ANSWERS.unavailable("d1", Reason.REPLAY_CAPACITY))
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert response.denied_response.status.code == 503


def test_unavailable_can_be_marked_for_envoy_to_answer() -> None:
    answers = Answers(
        ResponsesConfig(unavailable=UnavailableConfig(as_envoy_error=True)), UpstreamConfig()
    )
    assert answers.unavailable("d1", Reason.POLICY_ERROR).as_envoy_error


def test_an_ignored_pre02_proof_header_is_not_forwarded_either() -> None:
    stray = PresentedCredentials("wit", "wpt", False, None, True, False)
    allowed = ANSWERS.allowed("d1", PolicyDecision(allowed=True), Authentication(CALLER, stray))
    assert set(allowed.headers_to_remove) == {"authorization", "workload-proof-token"}


def test_an_answer_envoy_cannot_carry_becomes_a_503_internal_error() -> None:
    decision = PolicyDecision(allowed=True, dynamic_metadata={"opaque": object()})
    allowed = ANSWERS.allowed("d1", decision, Authentication(CALLER, WPT_PRESENTED))
    verdict, response = encoded_answer(allowed, ANSWERS)
    assert isinstance(verdict, Failed)
    assert verdict.reason is Reason.INTERNAL_ERROR
    assert response.status.code == code_pb2.PERMISSION_DENIED
    assert response.denied_response.status.code == 503
    assert Reason.INTERNAL_ERROR.value in response.denied_response.body
