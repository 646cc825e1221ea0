"""Which protected service a check is for: the route's `wimse.service` (the default), or,
under Istio, the destination principal Envoy reports; `Host` only where a service opted in.
Driven through the in-process pipeline with real CheckRequests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from authz.config import parse_config
from authz.devtools.stack import SERVICE_ID
from authz.reasons import Reason
from tests.support import (
    ORIGIN,
    GatewayHarness,
    expect_allowed,
    expect_denied,
    expect_failed,
)
from tests.unit.test_config import error_for, minimal
from tests.unit.test_http_signature import BODY_ROUTE, signed

BILLING_ID = "spiffe://demo.example/billing"
ECHO = {"id": SERVICE_ID, "origins": [ORIGIN], "proofs": ["wpt", "http_signature"]}
BILLING = {"id": BILLING_ID, "origins": ["https://billing.demo.example"]}


def by_principal(harness: GatewayHarness, **echo: Any) -> GatewayHarness:
    """Two services chosen by destination principal; `echo` adds keys to the echo service."""
    return harness.rebuild(
        service_selection="destination_principal",
        services={"echo": {**ECHO, **echo}, "billing": BILLING},
    )


def check(harness: GatewayHarness, **kwargs: Any) -> Any:
    """A WPT-signed GET /api/hello for the harness origin, with no route service unless
    given."""
    kwargs.setdefault("service", None)
    return harness.check_path("/api/hello", harness.signed_headers(), **kwargs)


# --- service_selection: route (the default) --------------------------------------------------


def test_route_selection_ignores_the_destination_principal(harness: GatewayHarness) -> None:
    two = harness.rebuild(services={"billing": BILLING})
    expect_allowed(check(two, service="echo", destination_principal=BILLING_ID))


def test_route_selection_without_a_route_service_or_default_is_503_even_on_a_matching_host(
    harness: GatewayHarness,
) -> None:
    two = harness.rebuild(services={"billing": BILLING})
    expect_failed(check(two), Reason.SERVICE_UNKNOWN)


def test_route_selection_takes_an_opted_in_host_when_the_route_names_no_service(
    harness: GatewayHarness,
) -> None:
    two = harness.rebuild(services={"echo": {**ECHO, "select_by_host": True}, "billing": BILLING})
    expect_allowed(check(two))
    expect_allowed(check(two, service="echo"))
    # The route still decides when it names a service: billing's origins are not the aud's.
    expect_denied(check(two, service="billing"), Reason.WPT_AUD_MISMATCH, 401)


# --- service_selection: destination_principal --------------------------------------------------


def test_the_destination_principal_selects_the_service_whose_id_it_is(
    harness: GatewayHarness,
) -> None:
    mesh = by_principal(harness)
    expect_allowed(check(mesh, destination_principal=SERVICE_ID))
    # Billing is chosen for its principal, so a WPT for echo's origin does not fit it.
    expect_denied(check(mesh, destination_principal=BILLING_ID), Reason.WPT_AUD_MISMATCH, 401)


def test_a_missing_destination_principal_is_503_service_unknown_even_with_one_service(
    harness: GatewayHarness,
) -> None:
    single = harness.rebuild(service_selection="destination_principal")
    assert single.config().default_service is None, "no implicit default under this rule"
    expect_failed(check(single), Reason.SERVICE_UNKNOWN)
    # A route's wimse.service alone does not choose either.
    expect_failed(check(single, service="echo"), Reason.SERVICE_UNKNOWN)


@pytest.mark.parametrize(
    "principal",
    [
        "spiffe://demo.example/unknown",
        SERVICE_ID + "/",
        SERVICE_ID + "x",
        SERVICE_ID.upper(),
        "spiffe://demo.example/ech",
        "spiffe://other.example/echo",
        " " + SERVICE_ID,
        "echo.demo.example",
    ],
)
def test_an_unknown_destination_principal_is_503_service_unknown(
    harness: GatewayHarness, principal: str
) -> None:
    expect_failed(check(by_principal(harness), destination_principal=principal), "service.unknown")


def test_a_route_naming_another_service_than_the_principal_is_503_route_config_invalid(
    harness: GatewayHarness,
) -> None:
    mesh = by_principal(harness)
    verdict = check(mesh, destination_principal=SERVICE_ID, service="billing")
    assert expect_failed(verdict, Reason.ROUTE_CONFIG_INVALID).status == 503
    expect_failed(
        check(mesh, destination_principal=SERVICE_ID, service="nope"), "route.config_invalid"
    )
    expect_allowed(check(mesh, destination_principal=SERVICE_ID, service="echo"))


def test_host_never_selects_under_destination_principal_unless_a_service_opts_in(
    harness: GatewayHarness,
) -> None:
    # The request's authority is exactly echo's origin, but echo did not opt in.
    expect_failed(check(by_principal(harness)), Reason.SERVICE_UNKNOWN)
    expect_failed(
        check(by_principal(harness), destination_principal="spiffe://demo.example/ingress"),
        Reason.SERVICE_UNKNOWN,
    )


def test_an_opted_in_host_selects_when_no_principal_names_a_service(
    harness: GatewayHarness,
) -> None:
    """An ingress gateway: no principal, or its own public certificate's DNS name."""
    ingress = by_principal(harness, select_by_host=True)
    expect_allowed(check(ingress))
    expect_allowed(check(ingress, destination_principal="ingress.demo.example"))


def test_a_workload_principal_no_service_has_is_never_resolved_by_host(
    harness: GatewayHarness,
) -> None:
    """A mesh callee this gateway does not protect stays unknown: its Host, which the
    client writes, must not have it judged as an opted-in service."""
    ingress = by_principal(harness, select_by_host=True)
    verdict = check(ingress, destination_principal="spiffe://demo.example/unprotected")
    expect_failed(verdict, Reason.SERVICE_UNKNOWN)


@pytest.mark.parametrize(
    ("scheme", "host"),
    [
        ("https", "echo.demo.example:443"),
        ("https", "ECHO.demo.example"),
        ("https", "echo.demo.example."),
        ("https", "echo.demo.example.evil.example"),
        ("https", "evil.echo.demo.example"),
        ("https", "echo.demo.exampl"),
        ("http", "echo.demo.example"),
        ("", "echo.demo.example"),
        ("https", ""),
    ],
)
def test_an_opted_in_host_selects_only_on_an_exact_origin_match(
    harness: GatewayHarness, scheme: str, host: str
) -> None:
    verdict = check(by_principal(harness, select_by_host=True), scheme=scheme, host=host)
    expect_failed(verdict, Reason.SERVICE_UNKNOWN)


def test_a_principal_naming_a_service_wins_over_an_opted_in_host(
    harness: GatewayHarness,
) -> None:
    ingress = by_principal(harness, select_by_host=True)
    expect_denied(check(ingress, destination_principal=BILLING_ID), Reason.WPT_AUD_MISMATCH, 401)


def test_http_signatures_stay_refused_unless_bodies_are_declared_forwarded(
    harness: GatewayHarness,
) -> None:
    """Istio's provider sets no `wimse.body: forwarded`: selecting the service by principal
    does not make a route forward bodies (docs/operations.md, "Under Istio")."""
    mesh = by_principal(harness)
    verdict = mesh.check_path(
        "/api/hello", signed(mesh), service=None, destination_principal=SERVICE_ID
    )
    expect_denied(verdict, Reason.HTTPSIG_NOT_ACCEPTED, 400)
    forwarded = mesh.check_path(
        "/api/hello",
        signed(mesh),
        service=None,
        destination_principal=SERVICE_ID,
        context=BODY_ROUTE,
    )
    expect_allowed(forwarded)


# --- configuration -----------------------------------------------------------------------------


ORDERS = {"id": "spiffe://example.org/orders", "origins": ["https://orders.example.org"]}
REFUNDS = {"id": "spiffe://example.org/refunds", "origins": ["https://refunds.example.org"]}


def test_service_selection_defaults_to_route(tmp_path: Path) -> None:
    config = parse_config(minimal(), "gateway.yaml", tmp_path)
    assert config.service_selection == "route"
    assert config.services["orders"].select_by_host is False


def test_default_service_is_refused_with_destination_principal() -> None:
    text = error_for(minimal(service_selection="destination_principal", default_service="orders"))
    assert "default_service cannot be used with service_selection: destination_principal" in text


def test_two_services_with_one_id_are_refused_with_destination_principal(tmp_path: Path) -> None:
    services = {"orders": ORDERS, "orders-admin": {**ORDERS, "txn_token": "required"}}
    # Under route selection, one workload may be two services with their own route settings.
    parse_config(minimal(services=services), "gateway.yaml", tmp_path)
    text = error_for(minimal(service_selection="destination_principal", services=services))
    assert "'orders' and 'orders-admin' have the same id" in text


def test_two_services_selected_by_one_host_are_refused() -> None:
    services = {
        "orders": {**ORDERS, "select_by_host": True},
        "refunds": {**REFUNDS, "origins": ORDERS["origins"], "select_by_host": True},
    }
    text = error_for(minimal(services=services))
    assert "both select_by_host 'https://orders.example.org'" in text


def test_an_unknown_service_selection_is_refused() -> None:
    text = error_for(minimal(service_selection="host"))
    assert "service_selection" in text
    assert "'route' or 'destination_principal'" in text


def test_a_service_declaring_forwarded_bodies_accepts_signatures_on_every_route(
    harness: GatewayHarness,
) -> None:
    """Under Istio (`includeRequestBodyInCheck` with `packAsBytes`), the service says what no
    route can: Envoy forwards its bodies. A body the signature leaves out is then seen."""
    mesh = by_principal(harness, body="forwarded")
    headers = signed(mesh)
    expect_allowed(
        mesh.check_path("/api/hello", headers, service=None, destination_principal=SERVICE_ID)
    )
    smuggled = mesh.check_path(
        "/api/hello",
        {**signed(mesh), "x-envoy-auth-partial-body": "false"},
        service=None,
        destination_principal=SERVICE_ID,
        raw_body=b'{"unsigned": true}',
    )
    expect_denied(smuggled, Reason.HTTPSIG_DIGEST_MISSING, 400)


def test_a_route_saying_nothing_else_keeps_the_services_body_setting_and_a_typo_fails(
    harness: GatewayHarness,
) -> None:
    mesh = by_principal(harness, body="forwarded")
    typo = mesh.check_path(
        "/api/hello",
        signed(mesh),
        service=None,
        destination_principal=SERVICE_ID,
        context={"wimse.body": "forwarding"},
    )
    expect_failed(typo, Reason.ROUTE_CONFIG_INVALID)
