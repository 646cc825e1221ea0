"""`service_selection: destination_principal` through a real Envoy configured as Istio's
`envoyExtAuthzGrpc` provider configures its sidecars: the ext_authz filter sets no per-route
`context_extensions`, and the listener terminates mutual TLS with a server certificate
carrying the callee's SPIFFE id.

Measured on Envoy 1.40 (what these tests pin): on a TLS listener Envoy reports the URI SAN
of the listener's own certificate as `destination.principal`, even when the certificate
also has DNS and IP SANs; with a certificate without URI SAN it reports the first DNS SAN;
on a plaintext listener it reports nothing. The gateway logs the principal it could not
match (a SPIFFE id or host name, never a credential), which is how the last two are read.

Four listeners share one route table: the echo service's sidecar (its SVID), another
workload's sidecar (an SVID of an unconfigured workload), an ingress with a public
certificate (DNS SAN only), and a plaintext ingress where one service opted in to
`select_by_host`."""

from __future__ import annotations

import copy
import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authz.devtools.certs import CertificateAuthority, write_pem
from authz.devtools.mint import mint_wpt
from authz.devtools.stack import (
    SERVICE_ID,
    TRUST_DOMAIN,
    Identities,
    Ports,
    envoy_config,
    free_port,
    gateway_config,
)
from authz.devtools.upstream import EchoServer
from tests.e2e.stack import Response, RunningStack, downstream_mtls, launch_stack

pytestmark = pytest.mark.e2e

ROOT = CertificateAuthority.create("demo.example root", trust_domain_uri=f"spiffe://{TRUST_DOMAIN}")
OTHER_WORKLOAD = f"spiffe://{TRUST_DOMAIN}/inventory"
PUBLIC_NAME = "api.demo.example"
ORDERS_ORIGIN = "http://orders.demo.example"
"""The plaintext ingress's opted-in service (`select_by_host`); the sample policy lets the
frontend GET /api/orders there."""
ECHO_PLAIN_ORIGIN = "http://echo.demo.example"
"""An origin of the echo service, which did not opt in: Host must never select it."""


def without_context_extensions(value: Any) -> Any:
    """`value` (an Envoy config) with every route's ext_authz `context_extensions` removed,
    as Istio's provider leaves them."""
    if isinstance(value, dict):
        return {
            k: without_context_extensions(v) for k, v in value.items() if k != "context_extensions"
        }
    if isinstance(value, list):
        return [without_context_extensions(item) for item in value]
    return value


def istio_like_envoy(directory: Path, ports: Ports, extra: dict[str, int]) -> dict[str, Any]:
    envoy: dict[str, Any] = without_context_extensions(envoy_config(ports))
    listeners = envoy["static_resources"]["listeners"]
    template = listeners[0]
    certificates = {
        "echo-sidecar": ROOT.issue(
            "", uris=[SERVICE_ID], dns_names=["echo.demo.example"], ip_addresses=["127.0.0.1"]
        ),
        "other-sidecar": ROOT.issue("", uris=[OTHER_WORKLOAD], ip_addresses=["127.0.0.1"]),
        "public-ingress": ROOT.issue(PUBLIC_NAME, dns_names=[PUBLIC_NAME, "localhost"]),
    }
    listeners.clear()
    for name, port in {"echo-sidecar": ports.envoy, **extra}.items():
        listener = copy.deepcopy(template)
        listener["name"] = name
        listener["address"]["socket_address"]["port_value"] = port
        if name in certificates:
            listener["filter_chains"][0]["transport_socket"] = downstream_mtls(
                directory, name, certificates[name], ROOT.cert_pem
            )
        listeners.append(listener)
    assert "context_extensions" not in json.dumps(envoy)
    return envoy


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, identity_dir: Path, identities: Identities
) -> Iterator[tuple[RunningStack, dict[str, int]]]:
    directory = tmp_path_factory.mktemp("istio")
    ports = Ports.free()
    extra = {name: free_port() for name in ("other-sidecar", "public-ingress", "plain-ingress")}
    upstream = EchoServer("127.0.0.1", ports.upstream).start()
    config = gateway_config(
        identity_dir,
        ports,
        overrides={
            "service_selection": "destination_principal",
            "services": {
                "echo": {
                    "id": SERVICE_ID,
                    "origins": [f"https://127.0.0.1:{ports.envoy}", ECHO_PLAIN_ORIGIN],
                },
                "orders": {
                    "id": f"spiffe://{TRUST_DOMAIN}/orders",
                    "origins": [ORDERS_ORIGIN],
                    "select_by_host": True,
                },
            },
        },
    )
    envoy = istio_like_envoy(directory, ports, extra)
    running = launch_stack(directory, ports, identities, upstream, config, envoy)
    yield running, extra
    running.stop()


def signed_for(stack: RunningStack, origin: str, path: str = "/api/hello") -> dict[str, str]:
    wit = stack.wit()
    wpt = mint_wpt(stack.identities.workloads["frontend"], wit, origin + path)
    return {"workload-identity-token": wit, "authorization": f"WPT {wpt}"}


def over_mtls(
    stack: RunningStack, port: int, headers: dict[str, str], path: str = "/api/hello"
) -> Response:
    """GET `path` on `port` over mutual TLS, presenting the frontend's client SVID."""
    client = ROOT.issue("", uris=[f"spiffe://{TRUST_DOMAIN}/frontend"], server=False, client=True)
    context = ssl.create_default_context(
        cafile=str(write_pem(stack.directory / "root.pem", ROOT.cert_pem))
    )
    context.check_hostname = False  # the listeners' names are SPIFFE ids, not 127.0.0.1
    context.load_cert_chain(
        write_pem(stack.directory / "client.pem", client.chain_pem),
        write_pem(stack.directory / "client.key", client.key_pem),
    )
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        answer = connection.getresponse()
        return Response(
            answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
        )
    finally:
        connection.close()


def plain(port: int, host: str, headers: dict[str, str], path: str = "/api/hello") -> Response:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"host": host, **headers})
        answer = connection.getresponse()
        return Response(
            answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
        )
    finally:
        connection.close()


def reason(response: Response) -> str | None:
    return response.headers.get("x-wimse-authz-reason")


def test_the_sidecars_svid_selects_its_service_without_context_extensions(
    stack: tuple[RunningStack, dict[str, int]],
) -> None:
    running, _ = stack
    origin = f"https://127.0.0.1:{running.ports.envoy}"
    response = over_mtls(running, running.ports.envoy, signed_for(running, origin))
    assert response.status == 200, (response.body, running.logs())
    assert response.upstream_headers()["x-wimse-caller"] == f"spiffe://{TRUST_DOMAIN}/frontend"


def test_an_svid_naming_no_configured_service_is_503_service_unknown(
    stack: tuple[RunningStack, dict[str, int]],
) -> None:
    running, ports = stack
    origin = f"https://127.0.0.1:{running.ports.envoy}"
    response = over_mtls(running, ports["other-sidecar"], signed_for(running, origin))
    assert (response.status, reason(response)) == (503, "service.unknown"), running.logs()
    assert f"destination principal {OTHER_WORKLOAD!r}" in running.gateway.log_tail(200)


def test_a_certificate_without_uri_san_reports_its_dns_name_which_selects_nothing(
    stack: tuple[RunningStack, dict[str, int]],
) -> None:
    running, ports = stack
    origin = f"https://127.0.0.1:{running.ports.envoy}"
    response = over_mtls(running, ports["public-ingress"], signed_for(running, origin))
    assert (response.status, reason(response)) == (503, "service.unknown"), running.logs()
    assert f"destination principal {PUBLIC_NAME!r}" in running.gateway.log_tail(200)


def test_host_never_selects_a_service_that_did_not_opt_in(
    stack: tuple[RunningStack, dict[str, int]],
) -> None:
    running, ports = stack
    host = ECHO_PLAIN_ORIGIN.removeprefix("http://")
    response = plain(ports["plain-ingress"], host, signed_for(running, ECHO_PLAIN_ORIGIN))
    assert (response.status, reason(response)) == (503, "service.unknown"), running.logs()
    assert "Envoy reported no destination principal" in running.gateway.log_tail(200)


def test_an_opted_in_service_is_selected_by_its_exact_origin_on_a_plaintext_ingress(
    stack: tuple[RunningStack, dict[str, int]],
) -> None:
    running, ports = stack
    host, path = ORDERS_ORIGIN.removeprefix("http://"), "/api/orders"
    response = plain(ports["plain-ingress"], host, signed_for(running, ORDERS_ORIGIN, path), path)
    assert response.status == 200, (response.body, running.logs())
    near_miss = plain(
        ports["plain-ingress"], host + ":80", signed_for(running, ORDERS_ORIGIN, path), path
    )
    assert (near_miss.status, reason(near_miss)) == (503, "service.unknown")
