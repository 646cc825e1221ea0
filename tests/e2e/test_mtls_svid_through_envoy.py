"""mTLS callers through a real Envoy with a real client certificate: Envoy terminates mutual
TLS and forwards the leaf (`include_peer_certificate`); the gateway process verifies it as an
X.509-SVID against the trust domain's SPIFFE bundle instead of trusting Envoy's principal.

Envoy here trusts two CAs (as a mesh edge trusting several trust domains' roots does); only
one of them is the demo trust domain's authority, so a certificate the other CA issued for
a demo.example identity passes Envoy's handshake and must be refused by the gateway."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.devtools.certs import CertificateAuthority, IssuedCertificate, write_pem
from authz.devtools.spiffe import spiffe_bundle
from authz.devtools.stack import (
    TRUST_DOMAIN,
    Identities,
    Ports,
    envoy_config,
    gateway_config,
)
from authz.devtools.upstream import EchoServer
from tests.e2e.stack import Response, RunningStack, downstream_mtls, launch_stack

pytestmark = pytest.mark.e2e

OPS = f"spiffe://{TRUST_DOMAIN}/ops"
ROOT = CertificateAuthority.create("demo.example root", trust_domain_uri=f"spiffe://{TRUST_DOMAIN}")
ROGUE = CertificateAuthority.create("partner root", trust_domain_uri="spiffe://partner.example")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, identity_dir: Path, identities: Identities
) -> Iterator[RunningStack]:
    directory = tmp_path_factory.mktemp("mtls")
    bundle = directory / "demo.example.bundle.json"
    bundle.write_text(
        json.dumps(spiffe_bundle(wit_keys=[identities.issuer], authorities=[ROOT.certificate]))
    )
    ports = Ports.free()
    upstream = EchoServer("127.0.0.1", ports.upstream).start()
    config = gateway_config(
        identity_dir,
        ports,
        origins=[f"https://127.0.0.1:{ports.envoy}"],
        overrides={"mtls": {"authenticate": True, "verify_peer_certificate": True}},
    )
    domain = config["trust_domains"][TRUST_DOMAIN]
    del domain["jwks_file"]
    domain["spiffe_bundle_file"] = str(bundle)
    envoy = envoy_config(ports)
    # Envoy's downstream TLS: client certificates required and validated against both roots.
    server = ROOT.issue("envoy", ip_addresses=["127.0.0.1"])
    envoy["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"] = (
        downstream_mtls(directory, "envoy", server, ROOT.cert_pem, ROGUE.cert_pem)
    )
    running = launch_stack(directory, ports, identities, upstream, config, envoy)
    yield running
    running.stop()


def request_with(
    stack: RunningStack, client: IssuedCertificate, path: str = "/api/hello"
) -> Response:
    """GET `path` over mutual TLS, presenting `client`."""
    directory = stack.directory
    name = client.certificate.serial_number
    context = ssl.create_default_context(
        cafile=str(write_pem(directory / "root.pem", ROOT.cert_pem))
    )
    context.load_cert_chain(
        write_pem(directory / f"client-{name}.pem", client.chain_pem),
        write_pem(directory / f"client-{name}.key", client.key_pem),
    )
    connection = http.client.HTTPSConnection(
        "127.0.0.1", stack.ports.envoy, context=context, timeout=10
    )
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return Response(
            answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
        )
    finally:
        connection.close()


def test_a_client_svid_from_the_trust_domains_authority_is_the_caller(
    stack: RunningStack,
) -> None:
    response = request_with(stack, ROOT.issue("ops", uris=[OPS], server=False, client=True))
    assert response.status == 200, (response.body, stack.logs())
    upstream = response.upstream_headers()
    assert upstream["x-wimse-caller"] == OPS
    assert upstream["x-wimse-authenticated-by"] == "mtls"


def test_a_certificate_envoy_accepts_but_the_bundle_does_not_vouch_for_is_refused(
    stack: RunningStack,
) -> None:
    forged = ROGUE.issue("ops", uris=[OPS], server=False, client=True)
    response = request_with(stack, forged)
    assert response.status == 401
    assert response.headers["x-wimse-authz-reason"] == "mtls.certificate_invalid"
