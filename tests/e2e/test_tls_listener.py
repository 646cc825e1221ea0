"""TLS and mutual TLS on the gateway's gRPC listeners, over real sockets and real handshakes:
who is let in, and certificates and client CAs rotated while the server runs."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography import x509
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.cli import main
from authz.config import load_config, parse_config
from authz.devtools.certs import CertificateAuthority, IssuedCertificate, write_pem
from authz.devtools.egress import (
    outbound_listener,
    outbound_section,
    socket_directory,
    write_workload_credentials,
)
from authz.devtools.stack import Ports, free_port, gateway_config
from authz.errors import ConfigError
from authz.server.app import GatewayServer
from tests.e2e.inprocess import run
from tests.support import ORIGIN, GatewayHarness, check_request

SERVER_NAME = "wimse-authz.internal"
ENVOY_ID = "spiffe://demo.example/ns/edge/sa/envoy"
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class Pki:
    """The gateway's CA and certificate, Envoy's CA and certificate, and a stranger's."""

    directory: Path
    server_ca: CertificateAuthority = field(
        default_factory=lambda: CertificateAuthority.create("gw")
    )
    client_ca: CertificateAuthority = field(
        default_factory=lambda: CertificateAuthority.create(
            "edge", trust_domain_uri="spiffe://demo.example"
        )
    )
    other_ca: CertificateAuthority = field(
        default_factory=lambda: CertificateAuthority.create("stranger")
    )

    def gateway_cert(self, name: str = "gateway") -> IssuedCertificate:
        return self.server_ca.issue(name, dns_names=[SERVER_NAME])

    def client_cert(
        self, ca: CertificateAuthority | None = None, uri: str = ENVOY_ID
    ) -> IssuedCertificate:
        return (ca or self.client_ca).issue("envoy", uris=[uri], server=False, client=True)

    def install(self, issued: IssuedCertificate) -> None:
        write_pem(self.directory / "gateway.pem", issued.chain_pem)
        write_pem(self.directory / "gateway-key.pem", issued.key_pem)

    def trust_clients_of(self, *cas: CertificateAuthority) -> None:
        write_pem(self.directory / "clients.pem", *(ca.cert_pem for ca in cas))

    def tls(self, *, mutual: bool, allowed: Sequence[str] = ()) -> dict[str, Any]:
        section: dict[str, Any] = {
            "cert_file": str(self.directory / "gateway.pem"),
            "key_file": str(self.directory / "gateway-key.pem"),
        }
        if mutual:
            section["client_ca_file"] = str(self.directory / "clients.pem")
        if allowed:
            section["allowed_clients"] = list(allowed)
        return section


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    pki = Pki(tmp_path / "tls")
    pki.install(pki.gateway_cert())
    pki.trust_clients_of(pki.client_ca)
    return pki


def server_with(harness: GatewayHarness, listeners: list[dict[str, Any]]) -> GatewayServer:
    document = gateway_config(
        harness.directory,
        Ports(443, 1, 2, 3),
        origins=[ORIGIN],
        overrides={"server": {"listeners": listeners}},
    )
    return GatewayServer(parse_config(document, "test", harness.directory), harness.clock)


def channel(
    address: str, trust: CertificateAuthority | None, client: IssuedCertificate | None = None
) -> grpc.aio.Channel:
    """Plaintext without `trust`; else TLS trusting that CA, with `client`'s certificate."""
    if trust is None:
        return grpc.aio.insecure_channel(address)
    credentials = grpc.ssl_channel_credentials(
        trust.cert_pem,
        client.key_pem if client else None,
        client.chain_pem if client else None,
    )
    options = [("grpc.ssl_target_name_override", SERVER_NAME)]
    return grpc.aio.secure_channel(address, credentials, options=options)


async def health(
    address: str, trust: CertificateAuthority | None, client: IssuedCertificate | None = None
) -> Any:
    """The health status, or the gRPC status code when the call fails."""
    async with channel(address, trust, client) as opened:
        try:
            response = await health_pb2_grpc.HealthStub(opened).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return response.status


def served_certificate(port: int, pki: Pki, client: IssuedCertificate | None = None) -> str:
    """The subject CN of the certificate the listener presents to a new connection, read
    with the standard library's TLS client."""
    context = ssl.create_default_context(cadata=pki.server_ca.cert_pem.decode())
    context.set_alpn_protocols(["h2"])
    if client is not None:
        certs = write_pem(pki.directory / "peek.pem", client.chain_pem)
        key = write_pem(pki.directory / "peek-key.pem", client.key_pem)
        context.load_cert_chain(certs, key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    return name.removeprefix("CN=")


def test_tls_listener_answers_clients_that_trust_its_ca_and_no_other(
    harness: GatewayHarness, pki: Pki
) -> None:
    address = f"127.0.0.1:{free_port()}"

    async def scenario() -> None:
        server = server_with(harness, [{"address": address, "tls": pki.tls(mutual=False)}])
        await server.start()
        try:
            assert await health(address, pki.server_ca) == SERVING
            async with channel(address, pki.server_ca) as opened:
                allowed = await check(opened, harness.signed_headers())
                assert allowed.status.code == code_pb2.OK
            assert await health(address, pki.other_ca) == grpc.StatusCode.UNAVAILABLE
            assert await health(address, None) == grpc.StatusCode.UNAVAILABLE, "no plaintext"
        finally:
            await server.stop()

    run(scenario, timeout=60)


async def check(opened: grpc.aio.Channel, headers: dict[str, str]) -> Any:
    stub = external_auth_pb2_grpc.AuthorizationStub(opened)
    return await stub.Check(check_request("/api/hello", headers), timeout=10)


def test_mutual_tls_lets_in_only_certificates_from_the_client_ca(
    harness: GatewayHarness, pki: Pki
) -> None:
    address = f"127.0.0.1:{free_port()}"

    async def scenario() -> None:
        server = server_with(harness, [{"address": address, "tls": pki.tls(mutual=True)}])
        await server.start()
        try:
            assert await health(address, pki.server_ca, pki.client_cert()) == SERVING
            intermediate = pki.client_ca.intermediate("edge issuing")
            via_intermediate = pki.client_cert(intermediate)
            assert await health(address, pki.server_ca, via_intermediate) == SERVING
            assert await health(address, pki.server_ca) == grpc.StatusCode.UNAVAILABLE
            stranger = pki.client_cert(pki.other_ca)
            assert await health(address, pki.server_ca, stranger) == grpc.StatusCode.UNAVAILABLE
            # The gateway's own CA vouches for servers, not for callers.
            own_ca = pki.client_cert(pki.server_ca)
            assert await health(address, pki.server_ca, own_ca) == grpc.StatusCode.UNAVAILABLE
        finally:
            await server.stop()

    run(scenario, timeout=60)


def test_allowed_clients_refuses_other_certificates_of_the_client_ca(
    harness: GatewayHarness, pki: Pki, tmp_path: Path
) -> None:
    mtls = f"127.0.0.1:{free_port()}"
    plain = f"unix:{tmp_path / 'authz.sock'}"
    tls = pki.tls(mutual=True, allowed=[ENVOY_ID, "envoy-2.edge.internal"])

    async def scenario() -> None:
        server = server_with(harness, [{"address": mtls, "tls": tls}, {"address": plain}])
        await server.start()
        try:
            assert await health(mtls, pki.server_ca, pki.client_cert()) == SERVING
            by_dns = pki.client_ca.issue(
                "envoy-2", dns_names=["Envoy-2.edge.internal"], server=False, client=True
            )
            assert await health(mtls, pki.server_ca, by_dns) == SERVING
            workload = pki.client_cert(uri="spiffe://demo.example/ns/shop/sa/orders")
            assert await health(mtls, pki.server_ca, workload) == grpc.StatusCode.PERMISSION_DENIED
            async with channel(mtls, pki.server_ca, workload) as opened:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await check(opened, harness.signed_headers())
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert await health(plain, None) == SERVING, "the unix socket has no client cert"
        finally:
            await server.stop()

    run(scenario, timeout=60)


def test_plain_unix_tls_and_mutual_tls_listeners_serve_side_by_side(
    harness: GatewayHarness, pki: Pki, tmp_path: Path
) -> None:
    tcp = f"127.0.0.1:{free_port()}"
    unix = f"unix:{tmp_path / 'authz.sock'}"
    tls = f"127.0.0.1:{free_port()}"
    mtls = f"127.0.0.1:{free_port()}"
    listeners: list[dict[str, Any]] = [
        {"address": tcp},
        {"address": unix},
        {"address": tls, "tls": pki.tls(mutual=False)},
        {"address": mtls, "tls": pki.tls(mutual=True)},
    ]

    async def scenario() -> None:
        server = server_with(harness, listeners)
        await server.start()
        try:
            assert [str(bound) for bound in server.listeners] == [
                f"{tcp} (plaintext)",
                f"{unix} (plaintext)",
                f"{tls} (tls)",
                f"{mtls} (mtls)",
            ]
            for address, trust, client in (
                (tcp, None, None),
                (unix, None, None),
                (tls, pki.server_ca, None),
                (mtls, pki.server_ca, pki.client_cert()),
            ):
                async with channel(address, trust, client) as opened:
                    allowed = await check(opened, harness.signed_headers())
                    assert allowed.status.code == code_pb2.OK, address
        finally:
            await server.stop()

    run(scenario, timeout=60)


def test_a_rotated_certificate_is_served_to_new_connections(
    harness: GatewayHarness, pki: Pki
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    client = pki.client_cert()

    async def scenario() -> None:
        server = server_with(harness, [{"address": address, "tls": pki.tls(mutual=True)}])
        await server.start()
        try:
            assert await asyncio.to_thread(served_certificate, port, pki, client) == "gateway"
            async with channel(address, pki.server_ca, client) as existing:
                assert (await check(existing, harness.signed_headers())).status.code == 0
                pki.install(pki.gateway_cert("gateway-rotated"))
                await until_served(port, pki, client, "gateway-rotated")
                # The connection opened before the rotation goes on working.
                assert (await check(existing, harness.signed_headers())).status.code == 0
            assert await health(address, pki.server_ca, client) == SERVING
            credentials = server.listeners[0].credentials
            assert credentials is not None
            assert (credentials.reloads, credentials.failures) == (1, 0)
        finally:
            await server.stop()

    run(scenario, timeout=60)


async def until_served(port: int, pki: Pki, client: IssuedCertificate | None, name: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while (served := await asyncio.to_thread(served_certificate, port, pki, client)) != name:
        if loop.time() > deadline:
            raise TimeoutError(f"still serving {served}, not {name}")
        await asyncio.sleep(0.05)


def test_a_half_written_certificate_keeps_the_previous_one_serving(
    harness: GatewayHarness, pki: Pki
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"

    async def scenario() -> None:
        server = server_with(harness, [{"address": address, "tls": pki.tls(mutual=False)}])
        await server.start()
        credentials = server.listeners[0].credentials
        assert credentials is not None
        try:
            rotated = pki.gateway_cert("gateway-rotated")
            half = rotated.chain_pem[: len(rotated.chain_pem) // 2]
            write_pem(pki.directory / "gateway.pem", half)
            assert await asyncio.to_thread(served_certificate, port, pki) == "gateway"
            assert credentials.failures == 1
            # The whole certificate, but the key not yet replaced: still refused.
            write_pem(pki.directory / "gateway.pem", rotated.chain_pem)
            assert await asyncio.to_thread(served_certificate, port, pki) == "gateway"
            assert credentials.failures == 2
            assert await health(address, pki.server_ca) == SERVING
            write_pem(pki.directory / "gateway-key.pem", rotated.key_pem)
            await until_served(port, pki, None, "gateway-rotated")
            assert (credentials.reloads, credentials.failures) == (1, 2)
        finally:
            await server.stop()

    run(scenario, timeout=60)


def test_a_rotated_client_ca_admits_its_clients_and_no_longer_the_old_ones(
    harness: GatewayHarness, pki: Pki
) -> None:
    address = f"127.0.0.1:{free_port()}"
    old_client = pki.client_cert()
    new_ca = CertificateAuthority.create("edge 2027")
    new_client = pki.client_cert(new_ca)

    async def scenario() -> None:
        server = server_with(harness, [{"address": address, "tls": pki.tls(mutual=True)}])
        await server.start()
        try:
            assert await health(address, pki.server_ca, new_client) == grpc.StatusCode.UNAVAILABLE
            async with channel(address, pki.server_ca, old_client) as existing:
                assert (await check(existing, harness.signed_headers())).status.code == 0
                # Overlap while clients move to the new CA: both are trusted.
                pki.trust_clients_of(pki.client_ca, new_ca)
                await until_status(address, pki, new_client, SERVING)
                assert await health(address, pki.server_ca, old_client) == SERVING
                pki.trust_clients_of(new_ca)
                await until_status(address, pki, old_client, grpc.StatusCode.UNAVAILABLE)
                assert await health(address, pki.server_ca, new_client) == SERVING
                # Already connected, the old client keeps its connection until it closes.
                assert (await check(existing, harness.signed_headers())).status.code == 0
        finally:
            await server.stop()

    run(scenario, timeout=60)


async def until_status(address: str, pki: Pki, client: IssuedCertificate, status: Any) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while (seen := await health(address, pki.server_ca, client)) != status:
        if loop.time() > deadline:
            raise TimeoutError(f"health is {seen}, not {status}")
        await asyncio.sleep(0.05)


def test_certificate_content_changes_need_no_reload_and_listener_changes_wait_for_restart(
    harness: GatewayHarness, pki: Pki, tmp_path: Path
) -> None:
    """A config reload keeps the running listeners; rotating files is not a config change."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    document = gateway_config(
        harness.directory,
        Ports(443, 1, 2, 3),
        origins=[ORIGIN],
        overrides={"server": {"listeners": [{"address": address, "tls": pki.tls(mutual=False)}]}},
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))

    async def scenario() -> None:
        server = GatewayServer(load_config(path), harness.clock, config_path=path)
        await server.start()
        try:
            running = server.reloader.config.server
            pki.install(pki.gateway_cert("gateway-rotated"))
            await until_served(port, pki, None, "gateway-rotated")
            assert await server.reloader.load("test")
            assert server.reloader.config.server == running, "same files, same listener"
            elsewhere = tmp_path / "elsewhere"
            other = Pki(elsewhere, server_ca=pki.server_ca)
            other.install(other.gateway_cert("gateway-elsewhere"))
            document["server"]["listeners"][0]["tls"] = other.tls(mutual=False)
            path.write_text(yaml.safe_dump(document))
            assert await server.reloader.load("test")
            assert server.reloader.config.server == running, "listeners change on restart"
            assert await asyncio.to_thread(served_certificate, port, pki) == "gateway-rotated"
        finally:
            await server.stop()

    run(scenario, timeout=60)


def test_a_bad_certificate_at_start_stops_the_start(harness: GatewayHarness, pki: Pki) -> None:
    write_pem(pki.directory / "gateway-key.pem", pki.gateway_cert("another").key_pem)
    address = f"127.0.0.1:{free_port()}"

    async def scenario() -> None:
        server = server_with(harness, [{"address": address, "tls": pki.tls(mutual=False)}])
        with pytest.raises(ConfigError, match="does not belong"):
            await server.start()
        await server.stop()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", int(address.rpartition(":")[2])), 1).close()

    run(scenario, timeout=60)


def test_cli_check_reaches_a_mutual_tls_listener_with_its_certificate(
    harness: GatewayHarness, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    client = pki.client_cert()
    ca = write_pem(pki.directory / "ca.pem", pki.server_ca.cert_pem)
    cert = write_pem(pki.directory / "envoy.pem", client.chain_pem)
    key = write_pem(pki.directory / "envoy-key.pem", client.key_pem)
    request = ("--url", f"{ORIGIN}/healthz", "--server-name", SERVER_NAME, "--timeout", "10")

    async def scenario() -> None:
        server = server_with(harness, [{"address": address, "tls": pki.tls(mutual=True)}])
        await server.start()
        try:
            with_certificate = [
                *("check", "--gateway", address, "--ca-file", str(ca)),
                *("--cert-file", str(cert), "--key-file", str(key), *request),
            ]
            assert await asyncio.to_thread(main, with_certificate) == 0
            assert capsys.readouterr().out.splitlines()[0] == "ALLOW"
            without = ["check", "--gateway", address, "--ca-file", str(ca), *request]
            assert await asyncio.to_thread(main, without) == 2
            assert "gRPC status UNAVAILABLE" in capsys.readouterr().err
        finally:
            await server.stop()

    run(scenario, timeout=60)


def test_serve_exits_2_naming_the_file_when_a_key_does_not_match(
    harness: GatewayHarness, pki: Pki, tmp_path: Path
) -> None:
    write_pem(pki.directory / "gateway-key.pem", pki.gateway_cert("another").key_pem)
    port = free_port()
    document = gateway_config(
        harness.directory,
        Ports(443, 1, port, 3),
        overrides={
            "server": {
                "listeners": [{"address": f"127.0.0.1:{port}", "tls": pki.tls(mutual=False)}]
            }
        },
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))
    result = subprocess.run(
        [sys.executable, "-m", "authz", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "server.listeners.0.tls.key_file" in result.stderr
    assert "does not belong to the certificate" in result.stderr


def test_an_outbound_mtls_listener_answers_only_its_egress_envoy(
    harness: GatewayHarness, pki: Pki, tmp_path: Path
) -> None:
    """An outbound listener's own allow-list: the egress Envoy gets the workload's
    credentials attached; another client of the same CA is refused before any Check runs,
    and the inbound listener keeps its own list."""
    inbound, outbound = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    egress_envoy = "spiffe://demo.example/ns/shop/sa/frontend-egress"
    files = write_workload_credentials(tmp_path / "frontend", harness.identities, "frontend")
    listeners = [
        {"address": inbound, "tls": pki.tls(mutual=True, allowed=[ENVOY_ID])},
        {
            "address": outbound,
            "tls": pki.tls(mutual=True, allowed=[egress_envoy]),
            "mode": "outbound",
            "workload": "frontend",
        },
    ]
    document = gateway_config(
        harness.directory,
        Ports(443, 1, 2, 3),
        origins=[ORIGIN],
        overrides={
            "server": {"listeners": listeners},
            "outbound": outbound_section(
                {"frontend": ("spiffe://demo.example/frontend", files)},
                {"echo": {"origin": ORIGIN}},
            ),
        },
    )
    config = parse_config(document, "test", harness.directory)

    async def scenario() -> None:
        server = GatewayServer(config)  # the system clock: the WIT file is minted now
        await server.start()
        try:
            envoy = pki.client_cert(uri=egress_envoy)
            async with channel(outbound, pki.server_ca, envoy) as opened:
                answer = await check(opened, {})
                assert answer.status.code == code_pb2.OK
                set_headers = {option.header.key for option in answer.ok_response.headers}
                assert "workload-identity-token" in set_headers
            for stranger in (pki.client_cert(), pki.client_cert(uri="spiffe://demo.example/x")):
                async with channel(outbound, pki.server_ca, stranger) as opened:
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await check(opened, {})
                    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # The ingress Envoy's identity opens the inbound listener, where nothing is minted.
            async with channel(inbound, pki.server_ca, pki.client_cert()) as opened:
                answer = await check(opened, {})
                assert answer.status.code != code_pb2.OK
            async with channel(inbound, pki.server_ca, envoy) as opened:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await check(opened, {})
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            await server.stop()

    run(scenario, timeout=60)


def test_an_outbound_listener_is_refused_on_plaintext_tcp_or_tls_without_a_client_list(
    harness: GatewayHarness, pki: Pki
) -> None:
    for listener in (
        {"address": "127.0.0.1:9300"},
        {"address": "127.0.0.1:9300", "tls": pki.tls(mutual=False)},
        {"address": "127.0.0.1:9300", "tls": pki.tls(mutual=True)},
    ):
        document = {
            "server": {"listeners": [{**listener, "mode": "outbound", "workload": "frontend"}]}
        }
        with pytest.raises(ConfigError, match="outbound listener is a unix socket"):
            parse_config(
                gateway_config(harness.directory, Ports(443, 1, 2, 3), overrides=document),
                "test",
                harness.directory,
            )


def test_an_outbound_socket_in_a_directory_open_to_others_is_refused_at_start(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    sockets = tmp_path / "open"
    sockets.mkdir(mode=0o755)
    sockets.chmod(0o755)
    files = write_workload_credentials(tmp_path / "frontend", harness.identities, "frontend")
    document = gateway_config(
        harness.directory,
        Ports(443, 1, 2, 3),
        origins=[ORIGIN],
        overrides={
            "server": {"listeners": [outbound_listener(sockets / "egress.sock", "frontend")]},
            "outbound": outbound_section(
                {"frontend": ("spiffe://demo.example/frontend", files)},
                {"echo": {"origin": ORIGIN}},
            ),
        },
    )
    config = parse_config(document, "test", harness.directory)

    async def scenario() -> None:
        server = GatewayServer(config, harness.clock)
        with pytest.raises(ConfigError, match="open to others"):
            await server.bind()
        await server.stop()
        socket_directory(sockets)
        server = GatewayServer(config, harness.clock)
        await server.start()
        try:
            mode = (sockets / "egress.sock").stat().st_mode & 0o777
            assert mode == 0o660
        finally:
            await server.stop()

    run(scenario, timeout=60)
