"""A real Envoy reaching a real gateway process over TLS, mutual TLS and a Unix socket,
each with its deploy/envoy example file (ports and certificate paths rewritten)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authz.devtools.certs import CertificateAuthority, write_pem
from authz.devtools.stack import REPO_ROOT, Identities
from tests.e2e.stack import RunningStack, start_stack, wait_until

pytestmark = pytest.mark.e2e

ENVOY_DIR = REPO_ROOT / "deploy" / "envoy"
SERVER_NAME = "wimse-authz.internal"
"""The name the example files make Envoy expect in the gateway's certificate."""
KUBERNETES_NAME = "wimse-authz-headless.wimse-authz.svc.cluster.local"
"""The name gateway-kubernetes.yaml expects: deploy/kubernetes's headless Service."""
ENVOY_ID = "spiffe://demo.example/ns/edge/sa/envoy"


@dataclass(frozen=True)
class Certificates:
    """Envoy's files under the names the examples use (ca.pem, envoy.pem, envoy-key.pem)
    and the gateway's, side by side in one directory."""

    directory: Path

    def gateway_tls(self, *, mutual: bool) -> dict[str, Any]:
        tls: dict[str, Any] = {
            "cert_file": str(self.directory / "gateway.pem"),
            "key_file": str(self.directory / "gateway-key.pem"),
        }
        if mutual:
            tls["client_ca_file"] = str(self.directory / "clients.pem")
            tls["allowed_clients"] = [ENVOY_ID]
        return tls

    def client_tls(self) -> dict[str, Any]:
        """How the test itself reaches the gateway: as Envoy does."""
        return {
            "ca_file": self.directory / "ca.pem",
            "cert_file": self.directory / "envoy.pem",
            "key_file": self.directory / "envoy-key.pem",
            "server_name": SERVER_NAME,
        }


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("tls")
    gateway_ca = CertificateAuthority.create("wimse-authz ca")
    edge_ca = CertificateAuthority.create("edge ca", trust_domain_uri="spiffe://demo.example")
    gateway = gateway_ca.issue("wimse-authz", dns_names=[SERVER_NAME, KUBERNETES_NAME])
    envoy = edge_ca.issue("envoy", uris=[ENVOY_ID], server=False, client=True)
    write_pem(directory / "ca.pem", gateway_ca.cert_pem)
    write_pem(directory / "envoy.pem", envoy.chain_pem)
    write_pem(directory / "envoy-key.pem", envoy.key_pem)
    write_pem(directory / "gateway.pem", gateway.chain_pem)
    write_pem(directory / "gateway-key.pem", gateway.key_pem)
    write_pem(directory / "clients.pem", edge_ca.cert_pem)
    return Certificates(directory)


def assert_allowed_through_envoy(stack: RunningStack) -> None:
    response = stack.request("/api/hello", stack.signed("/api/hello"))
    assert response.status == 200, response.body
    assert response.upstream_headers()["x-wimse-caller"] == "spiffe://demo.example/frontend"
    denied = stack.request("/api/hello")
    assert denied.status == 401, "the gateway decided, over the secured channel"


def test_envoy_reaches_the_gateway_over_tls(
    certificates: Certificates, tmp_path: Path, identity_dir: Path, identities: Identities
) -> None:
    client = certificates.client_tls()
    stack = start_stack(
        tmp_path,
        identity_dir,
        identities,
        envoy_template=ENVOY_DIR / "gateway-tls.yaml",
        envoy_tls_dir=certificates.directory,
        gateway_tls=certificates.gateway_tls(mutual=False),
        gateway_client_tls={"ca_file": client["ca_file"], "server_name": SERVER_NAME},
    )
    try:
        assert_allowed_through_envoy(stack)
    finally:
        stack.stop()


@pytest.mark.parametrize("example", ["gateway-mtls.yaml", "gateway-kubernetes.yaml"])
def test_envoy_reaches_the_gateway_over_mutual_tls(
    example: str,
    certificates: Certificates,
    tmp_path: Path,
    identity_dir: Path,
    identities: Identities,
) -> None:
    """gateway-kubernetes.yaml's STRICT_DNS cluster resolves a literal 127.0.0.1 here (there
    is no cluster DNS); its SNI and certificate check are the Kubernetes name's."""
    stack = start_stack(
        tmp_path,
        identity_dir,
        identities,
        envoy_template=ENVOY_DIR / example,
        envoy_tls_dir=certificates.directory,
        gateway_tls=certificates.gateway_tls(mutual=True),
        gateway_client_tls=certificates.client_tls(),
    )
    try:
        assert_allowed_through_envoy(stack)
    finally:
        stack.stop()


def test_envoy_reaches_the_gateway_over_its_unix_socket(
    tmp_path: Path, identity_dir: Path, identities: Identities
) -> None:
    socket_path = tmp_path / "authz.sock"
    stack = start_stack(
        tmp_path,
        identity_dir,
        identities,
        envoy_template=ENVOY_DIR / "gateway-uds.yaml",
        envoy_gateway_address={"pipe": {"path": str(socket_path)}},
        gateway_listeners=[f"unix:{socket_path}"],
    )
    try:
        assert_allowed_through_envoy(stack)
    finally:
        stack.stop()


def test_envoy_without_a_client_certificate_fails_closed_with_503(
    certificates: Certificates, tmp_path: Path, identity_dir: Path, identities: Identities
) -> None:
    """The gateway wants mutual TLS; Envoy runs the server-TLS-only example. The handshake
    fails, so the check fails, and Envoy's status_on_error answers: never a pass."""
    stack = start_stack(
        tmp_path,
        identity_dir,
        identities,
        envoy_template=ENVOY_DIR / "gateway-tls.yaml",
        envoy_tls_dir=certificates.directory,
        gateway_tls=certificates.gateway_tls(mutual=True),
        gateway_client_tls=certificates.client_tls(),
        expect_healthz=False,
    )
    try:
        response = stack.request("/api/hello", stack.signed("/api/hello"))
        assert response.status == 503, response.body
        assert "x-wimse-caller" not in response.body.decode(errors="replace")
        wait_until(lambda: stack.envoy_stats().get("http.ingress.ext_authz.error", 0) >= 1)
    finally:
        stack.stop()
