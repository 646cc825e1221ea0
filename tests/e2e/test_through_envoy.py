"""End to end through a real Envoy (deploy/envoy/gateway.yaml) and a real gateway process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.credentials.claims import token_hash
from authz.devtools.mint import mint_wpt
from authz.devtools.stack import Identities
from tests.e2e.stack import RunningStack, ext_authz_checks, start_stack, wait_until

pytestmark = pytest.mark.e2e

IDENTITY_HEADERS = ("x-wimse-caller", "x-wimse-caller-trust-domain", "x-wimse-authenticated-by")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, identity_dir: Path, identities: Identities
) -> Iterator[RunningStack]:
    running = start_stack(tmp_path_factory.mktemp("stack"), identity_dir, identities)
    yield running
    running.stop()


def test_verified_caller_reaches_the_upstream_with_identity_and_without_its_proof(
    stack: RunningStack,
) -> None:
    headers = stack.signed("/api/hello")
    response = stack.request("/api/hello", headers)
    assert response.status == 200, response.body
    upstream = response.upstream_headers()
    assert upstream["x-wimse-caller"] == "spiffe://demo.example/frontend"
    assert upstream["x-wimse-caller-trust-domain"] == "demo.example"
    assert upstream["x-wimse-authenticated-by"] == "wpt"
    assert "authorization" not in upstream, "the WPT is stripped before the upstream"
    assert upstream["workload-identity-token"] == headers["workload-identity-token"]


def test_txn_token_bound_by_the_wpt_is_passed_on_unmodified(stack: RunningStack) -> None:
    txn_token = stack.txn_token()
    wit = stack.wit()
    wpt = stack.wpt(wit, "/api/orders", txn_token=txn_token)
    response = stack.request(
        "/api/orders",
        {"workload-identity-token": wit, "authorization": f"WPT {wpt}", "txn-token": txn_token},
        method="POST",
    )
    assert response.status == 200, response.body
    assert response.upstream_headers()["txn-token"] == txn_token


def test_forged_identity_headers_never_reach_the_upstream(stack: RunningStack) -> None:
    forged = {name: "spiffe://demo.example/ops" for name in IDENTITY_HEADERS}
    authenticated = stack.request("/api/hello", {**forged, **stack.signed("/api/hello")})
    assert authenticated.upstream_headers()["x-wimse-caller"] == "spiffe://demo.example/frontend"
    assert authenticated.upstream_headers()["x-wimse-authenticated-by"] == "wpt"

    anonymous = stack.request("/healthz", forged)
    assert anonymous.status == 200
    assert not set(IDENTITY_HEADERS) & set(anonymous.upstream_headers())

    # No ext_authz on /public/: Envoy's own header_mutation strips the prefix there.
    unchecked = stack.request("/public/logo.svg", forged)
    assert unchecked.status == 200
    assert not set(IDENTITY_HEADERS) & set(unchecked.upstream_headers())


def test_missing_credentials_are_401_from_policy(stack: RunningStack) -> None:
    response = stack.request("/api/hello")
    assert response.status == 401
    assert response.headers["www-authenticate"] == "WPT"
    assert response.headers["x-wimse-authz-reason"] == "policy.unauthenticated"
    assert json.loads(response.body)["reason"] == "policy.unauthenticated"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h: h.pop("authorization"), "wpt.missing"),
        (lambda h: h.pop("workload-identity-token"), "wit.missing"),
        (
            lambda h: h.update(authorization=h["authorization"][:-6] + "AAAAAA"),
            "wpt.signature_invalid",
        ),
        (lambda h: h.update({"workload-identity-token": "not.a.jwt"}), "wit.malformed"),
    ],
)
def test_invalid_credentials_are_401_with_their_reason(
    stack: RunningStack, mutate: object, reason: str
) -> None:
    headers = stack.signed("/api/hello")
    assert callable(mutate)
    mutate(headers)
    response = stack.request("/api/hello", headers)
    assert response.status == 401, response.body
    assert response.headers["x-wimse-authz-reason"] == reason
    assert response.headers["www-authenticate"] == "WPT"


def test_replayed_wpt_is_refused(stack: RunningStack) -> None:
    headers = stack.signed("/api/hello")
    assert stack.request("/api/hello", headers).status == 200
    replay = stack.request("/api/hello", headers)
    assert (replay.status, replay.headers["x-wimse-authz-reason"]) == (401, "wpt.replayed")


def test_two_authorization_headers_are_refused(stack: RunningStack) -> None:
    headers = stack.signed("/api/hello")
    second = stack.signed("/api/hello")["authorization"]
    response = stack.request(
        "/api/hello",
        [
            ("workload-identity-token", headers["workload-identity-token"]),
            ("authorization", headers["authorization"]),
            ("authorization", second),
        ],
    )
    assert (response.status, response.headers["x-wimse-authz-reason"]) == (401, "wpt.multiple")


def test_wpt_audience_is_not_taken_from_host(stack: RunningStack) -> None:
    wit = stack.wit()
    evil = mint_wpt(stack.identities.workloads["frontend"], wit, "http://evil.example/api/hello")
    response = stack.request(
        "/api/hello",
        {"host": "evil.example", "workload-identity-token": wit, "authorization": f"WPT {evil}"},
    )
    assert (response.status, response.headers["x-wimse-authz-reason"]) == (401, "wpt.aud_mismatch")


def test_policy_denial_is_403(stack: RunningStack) -> None:
    response = stack.request("/admin/users", stack.signed("/admin/users"))
    assert response.status == 403
    assert response.headers["x-wimse-authz-reason"] == "policy.denied"
    assert "www-authenticate" not in response.headers


def test_double_slashes_are_merged_before_the_wpt_and_policy_see_the_path(
    stack: RunningStack,
) -> None:
    # merge_slashes: //admin/users is /admin/users for the WPT audience and for policy, so
    # it is not mistaken for anything under /api and gets the admin rules.
    admin = stack.request("//admin/users", stack.signed("/admin/users"))
    assert (admin.status, admin.headers["x-wimse-authz-reason"]) == (403, "policy.denied")
    as_typed = stack.request("//admin/users", stack.signed("//admin/users"))
    assert (as_typed.status, as_typed.headers["x-wimse-authz-reason"]) == (
        401,
        "wpt.aud_mismatch",
    )
    hello = stack.request("/api//hello", stack.signed("/api/hello"))
    assert hello.status == 200, hello.body
    assert hello.json()["path"] == "/api/hello"


def test_path_parameters_are_refused_by_envoy_on_every_route(stack: RunningStack) -> None:
    asked_before = ext_authz_checks(stack.envoy_stats())
    for path in ("/public/logo.svg;x", "/api/hello;jsessionid=1", "/api/hello%3b"):
        response = stack.request(path, stack.signed(path))
        assert response.status == 400, (path, response.body)
        assert "x-wimse-authz-reason" not in response.headers, "Envoy answered"
    assert ext_authz_checks(stack.envoy_stats()) == asked_before
    in_query = stack.request("/api/hello?a=1;b=2", stack.signed("/api/hello"))
    assert in_query.status == 200, "the query is not part of the path"


def test_unparseable_json_body_is_400(stack: RunningStack) -> None:
    response = stack.request(
        "/api/orders",
        {**stack.signed("/api/orders"), "content-type": "application/json"},
        method="POST",
        body=b"{not json",
    )
    assert (response.status, response.headers["x-wimse-authz-reason"]) == (
        400,
        "request.body_invalid",
    )


def test_json_body_reaches_policy_and_upstream(stack: RunningStack) -> None:
    body = json.dumps({"amount": 5}).encode()
    response = stack.request(
        "/api/orders",
        {**stack.signed("/api/orders"), "content-type": "application/json"},
        method="POST",
        body=body,
    )
    assert response.status == 200
    assert response.json()["body_bytes"] == len(body)


def test_envoy_counts_the_gateway_decisions(stack: RunningStack) -> None:
    before = stack.envoy_stats()
    stack.request("/api/hello", stack.signed("/api/hello"))
    stack.request("/admin/users", stack.signed("/admin/users"))
    after = stack.envoy_stats()
    assert after["http.ingress.ext_authz.ok"] == before["http.ingress.ext_authz.ok"] + 1
    assert after["http.ingress.ext_authz.denied"] == before["http.ingress.ext_authz.denied"] + 1
    assert after.get("http.ingress.ext_authz.error", 0) == before.get(
        "http.ingress.ext_authz.error", 0
    )


def test_wth_binding_hash_matches_what_the_draft_specifies(stack: RunningStack) -> None:
    wit = stack.wit()
    wpt = stack.wpt(wit, "/api/hello")
    from authz.credentials.jose import b64url_decode

    claims = json.loads(b64url_decode(wpt.split(".")[1]))
    assert claims["wth"] == token_hash(wit)
    assert (
        stack.request(
            "/api/hello", {"workload-identity-token": wit, "authorization": f"WPT {wpt}"}
        ).status
        == 200
    )


def test_gateway_down_is_503_from_envoy_status_on_error(
    tmp_path: Path, identity_dir: Path, identities: Identities
) -> None:
    own = start_stack(tmp_path, identity_dir, identities)
    try:
        assert own.request("/api/hello", own.signed("/api/hello")).status == 200
        own.gateway.stop()
        response = own.request("/api/hello", own.signed("/api/hello"))
        assert response.status == 503, "an outage must never look like a denial (403)"
        wait_until(lambda: own.envoy_stats().get("http.ingress.ext_authz.error", 0) >= 1)
    finally:
        own.stop()


def test_gateway_over_a_unix_socket(
    tmp_path: Path, identity_dir: Path, identities: Identities
) -> None:
    socket_path = tmp_path / "authz.sock"
    own = start_stack(
        tmp_path,
        identity_dir,
        identities,
        gateway_listeners=[f"unix:{socket_path}"],
        envoy_gateway_address={"pipe": {"path": str(socket_path)}},
    )
    try:
        response = own.request("/api/hello", own.signed("/api/hello"))
        assert response.status == 200, response.body
        assert response.upstream_headers()["x-wimse-caller"] == "spiffe://demo.example/frontend"
    finally:
        own.stop()


def _fill_the_replay_cache(own: RunningStack) -> None:
    """With room for one proof, the first WPT is accepted and fills the replay cache."""
    assert own.request("/api/hello", own.signed("/api/hello")).status == 200


def test_our_own_unavailability_is_503_with_its_reason(
    tmp_path: Path, identity_dir: Path, identities: Identities
) -> None:
    overrides = {"wpt": {"replay_cache_entries": 1}}
    own = start_stack(tmp_path, identity_dir, identities, gateway_overrides=overrides)
    try:
        _fill_the_replay_cache(own)
        response = own.request("/api/hello", own.signed("/api/hello"))
        assert response.status == 503, "capacity is an outage, never a denial"
        assert response.headers["x-wimse-authz-reason"] == "replay.capacity"
    finally:
        own.stop()


def test_unavailable_as_envoy_error_lets_status_on_error_answer(
    tmp_path: Path, identity_dir: Path, identities: Identities
) -> None:
    overrides = {
        "wpt": {"replay_cache_entries": 1},
        "responses": {"unavailable": {"as_envoy_error": True}},
    }
    own = start_stack(tmp_path, identity_dir, identities, gateway_overrides=overrides)
    try:
        _fill_the_replay_cache(own)
        errors_before = own.envoy_stats().get("http.ingress.ext_authz.error", 0)
        response = own.request("/api/hello", own.signed("/api/hello"))
        assert response.status == 503
        assert "x-wimse-authz-reason" not in response.headers, "Envoy answered, not the gateway"
        assert own.envoy_stats()["http.ingress.ext_authz.error"] == errors_before + 1
    finally:
        own.stop()
