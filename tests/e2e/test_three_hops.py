"""A transaction across three workloads, each hop through its own real Envoy sidecar.

frontend → (Envoy of orders) → orders → (Envoy of payments) → payments. The TTS mints one
Txn-Token for the checkout the frontend starts; every hop presents it unmodified, bound by
that hop's own WPT (`tth`). Both Envoys ask one gateway process, which protects both services
(`wimse.service` names the service on each Envoy's route) with the sample policies in
`policies/`. The test plays each workload: it mints that workload's WIT and WPTs with the
demo keys, as the workload's own credential agent would.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from authz.devtools.check import (
    CheckAnswer,
    GatewayAddress,
    answer_from_response,
    build_check_request,
    send_check,
)
from authz.devtools.mint import ear_claims, mint_ear, mint_user_token, mint_wit, mint_wpt
from authz.devtools.stack import (
    ATTESTATION_HEADER,
    USER_TOKEN_AUDIENCE,
    USER_TOKEN_HEADER,
    USER_TOKEN_ISSUER,
    Identities,
    ManagedProcess,
    Ports,
    checkout_txn_token,
    envoy_config,
    envoy_process,
    free_port,
    gateway_config,
    gateway_process,
    wait_for_http,
    write_yaml,
)
from authz.devtools.upstream import EchoServer
from tests.e2e.stack import (
    Response,
    ext_authz_checks,
    ext_authz_stats,
    wait_for_gateway,
    wait_until,
)

pytestmark = pytest.mark.e2e

SERVICES = ("orders", "payments")


@dataclass
class Mesh:
    identities: Identities
    ports: Mapping[str, Ports]
    """Per service: its Envoy's listener and admin ports (gateway and upstream shared)."""
    processes: list[ManagedProcess]
    upstream: EchoServer
    gateway_log: Path

    def origin(self, service: str) -> str:
        return self.ports[service].origin

    def credentials(
        self,
        service: str,
        signed_path: str,
        caller: str,
        *,
        txn_token: str | None = None,
        bound: Mapping[str, str] | None = None,
        unbound: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """`caller`'s headers for a request to `service`: a fresh WIT, a WPT naming
        `signed_path`, and the context tokens (`bound` ones bound by the WPT)."""
        key = self.identities.workloads[caller]
        wit = mint_wit(self.identities.issuer, self.identities.workload_id(caller), key)
        wpt = mint_wpt(
            key, wit, self.origin(service) + signed_path, txn_token=txn_token, other_tokens=bound
        )
        headers = {"workload-identity-token": wit, "authorization": f"WPT {wpt}"}
        if txn_token is not None:
            headers["txn-token"] = txn_token
        return headers | dict(bound or {}) | dict(unbound or {})

    def call(
        self,
        service: str,
        path: str,
        caller: str,
        *,
        txn_token: str | None = None,
        bound: Mapping[str, str] | None = None,
        unbound: Mapping[str, str] | None = None,
        method: str = "POST",
        signed_path: str | None = None,
    ) -> Response:
        """`caller` calls `service` through the service's Envoy with a fresh WIT and WPT;
        the WPT names `path`, or `signed_path` (the path as Envoy will forward it)."""
        headers = self.credentials(
            service,
            path if signed_path is None else signed_path,
            caller,
            txn_token=txn_token,
            bound=bound,
            unbound=unbound,
        )
        connection = http.client.HTTPConnection("127.0.0.1", self.ports[service].envoy, timeout=10)
        try:
            connection.request(method, path, body=b"{}", headers=headers)
            answer = connection.getresponse()
            return Response(
                answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
            )
        finally:
            connection.close()

    def check_directly(
        self, service: str, path: str, headers: Mapping[str, str], method: str = "POST"
    ) -> CheckAnswer:
        """One CheckRequest straight to the gateway, as an Envoy that normalises nothing
        would send it for `service`'s route."""
        origin = urlsplit(self.origin(service))
        request = build_check_request(
            host=origin.netloc,
            scheme=origin.scheme,
            path=path,
            method=method,
            headers=headers,
            context={"wimse.service": service},
        )
        gateway = GatewayAddress(f"127.0.0.1:{self.ports[service].gateway}")
        return answer_from_response(send_check(request, gateway))

    def ext_authz_checks(self, service: str) -> int:
        return ext_authz_checks(ext_authz_stats(self.ports[service].admin))

    def txn_token(self, **claims: Any) -> str:
        claims.setdefault("tctx", {"action": "checkout", "amount": 250})
        return checkout_txn_token(self.identities, **claims)

    def user_token(self, roles: list[str]) -> str:
        return mint_user_token(
            self.identities.user_issuer,
            issuer=USER_TOKEN_ISSUER,
            subject="user-4711",
            audience=USER_TOKEN_AUDIENCE,
            roles=roles,
        )

    def attestation(self, status: str, hardware: int, workload: str = "orders") -> str:
        claims = ear_claims(
            {"platform": (status, {"hardware": hardware, "instance-identity": 2})},
            subject=self.identities.workload_id(workload),
        )
        return mint_ear(self.identities.attestation_verifier, claims)

    def denial_log(self) -> str:
        return self.gateway_log.read_text(errors="replace")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.upstream.stop()


def sidecar_config(ports: Ports, service: str) -> dict[str, Any]:
    """The shipped Envoy config, its protected route naming `service`."""
    config = envoy_config(ports)
    routes = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]["route_config"]["virtual_hosts"][0]["routes"]
    for route in routes:
        per_filter = route["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
        if "check_settings" in per_filter:
            per_filter["check_settings"]["context_extensions"] = {"wimse.service": service}
    return config


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, identity_dir: Path, identities: Identities
) -> Iterator[Mesh]:
    directory = tmp_path_factory.mktemp("mesh")
    gateway_port, upstream_port = free_port(), free_port()
    ports = {
        service: Ports(free_port(), free_port(), gateway_port, upstream_port)
        for service in SERVICES
    }
    services = {
        service: {
            "id": identities.workload_id(service),
            "origins": [ports[service].origin],
        }
        for service in SERVICES
    }
    config = gateway_config(
        identity_dir, ports["orders"], overrides={"services": services, "default_service": None}
    )
    config["services"] = services  # replace the demo's echo service, not merge into it
    upstream = EchoServer("127.0.0.1", upstream_port).start()
    gateway_log = directory / "gateway.log"
    processes = [gateway_process(write_yaml(directory / "gateway.yaml", config), gateway_log)]
    processes[0].start()
    for service in SERVICES:
        path = write_yaml(
            directory / f"envoy-{service}.yaml", sidecar_config(ports[service], service)
        )
        processes.append(envoy_process(path, directory / f"envoy-{service}.log").start())
    mesh = Mesh(identities, ports, processes, upstream, gateway_log)
    try:
        wait_for_gateway(f"127.0.0.1:{gateway_port}", timeout=30)
        for service in SERVICES:
            wait_for_http(f"{ports[service].origin}/healthz", timeout=30)
    except TimeoutError as exc:
        logs = "\n".join(f"--- {p.name} ---\n{p.log_tail(40)}" for p in processes)
        mesh.stop()
        raise RuntimeError(f"mesh did not come up: {exc}\n{logs}") from None
    yield mesh
    mesh.stop()


def expect_policy_denial(mesh: Mesh, response: Response, reason: str) -> None:
    assert (response.status, response.headers.get("x-wimse-authz-reason")) == (
        403,
        "policy.denied",
    ), response.body
    decision_id = response.json()["decision_id"]
    wait_until(lambda: decision_id in mesh.denial_log())
    line = next(line for line in mesh.denial_log().splitlines() if decision_id in line)
    assert reason in line, line


def test_checkout_flows_frontend_to_orders_to_payments(mesh: Mesh) -> None:
    txn = mesh.txn_token()
    user = mesh.user_token(["customer"])
    first = mesh.call(
        "orders", "/api/orders", "frontend", txn_token=txn, bound={USER_TOKEN_HEADER: user}
    )
    assert first.status == 200, first.body
    upstream = first.upstream_headers()
    assert upstream["x-wimse-caller"] == "spiffe://demo.example/frontend"
    assert upstream["txn-token"] == txn, "the Txn-Token travels unmodified"

    second = mesh.call("payments", "/api/payments", "orders", txn_token=upstream["txn-token"])
    assert second.status == 200, second.body
    assert second.upstream_headers()["x-wimse-caller"] == "spiffe://demo.example/orders"


def test_payments_refuses_a_transaction_that_did_not_enter_at_the_frontend(mesh: Mesh) -> None:
    txn = mesh.txn_token(requesting_workload=mesh.identities.workload_id("batch"))
    response = mesh.call("payments", "/api/payments", "orders", txn_token=txn)
    expect_policy_denial(mesh, response, "origin in entry list")


def test_payments_refuses_a_current_actor_from_an_untrusted_domain(mesh: Mesh) -> None:
    txn = mesh.txn_token(actor={"sub": "spiffe://partner.example/reseller"})
    response = mesh.call("payments", "/api/payments", "orders", txn_token=txn)
    expect_policy_denial(mesh, response, "current actor in actors list")


def test_payments_ignores_prior_actors_as_rfc_8693_requires(mesh: Mesh) -> None:
    actor = {"sub": "spiffe://demo.example/orders", "act": {"sub": "spiffe://evil.example/x"}}
    response = mesh.call(
        "payments", "/api/payments", "orders", txn_token=mesh.txn_token(actor=actor)
    )
    assert response.status == 200, response.body


def test_the_frontend_cannot_skip_orders(mesh: Mesh) -> None:
    response = mesh.call("payments", "/api/payments", "frontend", txn_token=mesh.txn_token())
    expect_policy_denial(mesh, response, "requires caller in via list")


def test_a_transaction_without_the_checkout_scope_is_refused_at_every_hop(mesh: Mesh) -> None:
    txn = mesh.txn_token(scope="browse")
    user = mesh.user_token(["customer"])
    orders = mesh.call(
        "orders", "/api/orders", "frontend", txn_token=txn, bound={USER_TOKEN_HEADER: user}
    )
    expect_policy_denial(mesh, orders, "transaction scope lacks checkout")
    payments = mesh.call("payments", "/api/payments", "orders", txn_token=txn)
    expect_policy_denial(mesh, payments, "transaction scope lacks checkout")


def test_an_amount_over_the_ceiling_is_refused(mesh: Mesh) -> None:
    txn = mesh.txn_token(tctx={"action": "checkout", "amount": 5000})
    response = mesh.call("payments", "/api/payments", "orders", txn_token=txn)
    expect_policy_denial(mesh, response, "amount 5000 exceeds 1000")


def test_a_missing_txn_token_is_refused_where_the_policy_needs_one(mesh: Mesh) -> None:
    response = mesh.call("payments", "/api/payments", "orders")
    expect_policy_denial(mesh, response, "requires a transaction token")


def test_refunds_need_an_affirming_hardware_attestation(mesh: Mesh) -> None:
    txn = mesh.txn_token()
    good = {ATTESTATION_HEADER: mesh.attestation("affirming", hardware=2)}
    allowed = mesh.call("payments", "/api/payments/refunds", "orders", txn_token=txn, bound=good)
    assert allowed.status == 200, allowed.body

    bad = {ATTESTATION_HEADER: mesh.attestation("contraindicated", hardware=96)}
    denied = mesh.call("payments", "/api/payments/refunds", "orders", txn_token=txn, bound=bad)
    expect_policy_denial(mesh, denied, "attestation")

    missing = mesh.call("payments", "/api/payments/refunds", "orders", txn_token=txn)
    expect_policy_denial(mesh, missing, "attestation")

    # The TTS's attestation of the transaction's origin says nothing about this caller.
    origin = ear_claims({"platform": ("affirming", {"hardware": 2})})
    txn_with_origin_ear = mesh.txn_token(rctx={"ear": origin})
    origin_only = mesh.call(
        "payments", "/api/payments/refunds", "orders", txn_token=txn_with_origin_ear
    )
    expect_policy_denial(mesh, origin_only, "attestation does not cover the immediate caller")


def test_an_attestation_about_another_workload_is_refused(mesh: Mesh) -> None:
    ear = {ATTESTATION_HEADER: mesh.attestation("affirming", hardware=2, workload="frontend")}
    response = mesh.call(
        "payments", "/api/payments/refunds", "orders", txn_token=mesh.txn_token(), bound=ear
    )
    assert (response.status, response.headers["x-wimse-authz-reason"]) == (
        401,
        "ear.subject_mismatch",
    )


def test_orders_needs_a_customer_user_token(mesh: Mesh) -> None:
    txn = mesh.txn_token()
    clerk = mesh.user_token(["clerk"])
    response = mesh.call(
        "orders", "/api/orders", "frontend", txn_token=txn, bound={USER_TOKEN_HEADER: clerk}
    )
    expect_policy_denial(mesh, response, "user lacks any of roles")


def test_an_unbound_user_token_is_refused_before_policy(mesh: Mesh) -> None:
    user = mesh.user_token(["customer"])
    response = mesh.call(
        "orders",
        "/api/orders",
        "frontend",
        txn_token=mesh.txn_token(),
        unbound={USER_TOKEN_HEADER: user},
    )
    assert (response.status, response.headers["x-wimse-authz-reason"]) == (401, "user.unbound")


def test_a_txn_token_for_another_trust_domain_is_refused(mesh: Mesh) -> None:
    txn = mesh.txn_token(audience="partner.example")
    response = mesh.call("payments", "/api/payments", "orders", txn_token=txn)
    assert (response.status, response.headers["x-wimse-authz-reason"]) == (401, "txn.aud_mismatch")


# --- One path: Envoy forwards it canonical, and the gateway decides on no other -----------

REFUNDS = "/api/payments/refunds"


def test_a_double_slash_does_not_skip_the_refunds_rule(mesh: Mesh) -> None:
    # merge_slashes: `/api/payments//refunds` is `/api/payments/refunds` for routing, the
    # WPT audience, policy and the upstream alike, so the refunds rule applies.
    txn = mesh.txn_token()
    doubled = "/api/payments//refunds"
    missing = mesh.call("payments", doubled, "orders", txn_token=txn, signed_path=REFUNDS)
    expect_policy_denial(mesh, missing, "attestation")

    good = {ATTESTATION_HEADER: mesh.attestation("affirming", hardware=2)}
    allowed = mesh.call(
        "payments", doubled, "orders", txn_token=txn, bound=good, signed_path=REFUNDS
    )
    assert allowed.status == 200, allowed.body
    assert allowed.json()["path"] == REFUNDS, "the upstream gets the path policy matched"

    # A WPT names the path as Envoy forwards it, never the one the client typed.
    as_typed = mesh.call("payments", doubled, "orders", txn_token=txn, bound=good)
    assert (as_typed.status, as_typed.headers["x-wimse-authz-reason"]) == (
        401,
        "wpt.aud_mismatch",
    )


@pytest.mark.parametrize("path", [f"{REFUNDS};x", f"{REFUNDS}%3Bx", "/api;x/payments/refunds"])
def test_a_path_parameter_is_refused_by_envoy_before_the_gateway(mesh: Mesh, path: str) -> None:
    good = {ATTESTATION_HEADER: mesh.attestation("affirming", hardware=2)}
    asked_before = mesh.ext_authz_checks("payments")
    response = mesh.call("payments", path, "orders", txn_token=mesh.txn_token(), bound=good)
    assert response.status == 400, response.body
    assert "x-wimse-authz-reason" not in response.headers, "Envoy answered, not the gateway"
    assert mesh.ext_authz_checks("payments") == asked_before


@pytest.mark.parametrize("path", ["/api/payments//refunds", f"{REFUNDS};x", f"{REFUNDS}%3Bx"])
def test_the_gateway_refuses_a_non_canonical_path_an_envoy_did_not_normalise(
    mesh: Mesh, path: str
) -> None:
    # Not every Envoy is configured like deploy/envoy (Istio, hand-written configs): the
    # gateway refuses these itself, even with every credential in order for that path.
    good = {ATTESTATION_HEADER: mesh.attestation("affirming", hardware=2)}
    headers = mesh.credentials("payments", path, "orders", txn_token=mesh.txn_token(), bound=good)
    answer = mesh.check_directly("payments", path, headers)
    assert (answer.allowed, answer.http_status, answer.reason) == (
        False,
        400,
        "request.path_not_canonical",
    )
