"""Trust anchors fetched over HTTPS by a running gateway: a real aiohttp JWKS server with a
test CA on 127.0.0.1, a gateway server in this process, checks over real gRPC, readiness
over its real diagnostics port."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.config import load_config
from authz.devtools.certs import CertificateAuthority
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import mint_wit, mint_wpt
from authz.devtools.spiffe import authority_jwk, spiffe_bundle
from authz.devtools.stack import TRUST_DOMAIN, Ports, free_port, gateway_config, write_yaml
from authz.server.app import AUTHORIZATION_SERVICE, GatewayServer
from tests.e2e.inprocess import outcome, reloads, run, until
from tests.key_server import KeyServer, https_context
from tests.support import ORIGIN, GatewayHarness, check_request

ROTATED = generate_private_jwk("ES256", kid="rotated-2026-12")


def jwks(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": [public_jwk(key) for key in keys]}


class Scenario:
    """A gateway whose trust domain's keys come from `keys` (HTTPS), with diagnostics."""

    def __init__(
        self,
        harness: GatewayHarness,
        tmp_path: Path,
        *,
        bundle: dict[str, Any] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        """`bundle`: serve this SPIFFE bundle (`spiffe_bundle_url`) instead of a JWKS of
        the demo issuer's key (`jwks_url`)."""
        self.harness = harness
        self.address = f"127.0.0.1:{free_port()}"
        self.diagnostics = free_port()
        ca_file, context = https_context(tmp_path)
        document = jwks(harness.identities.issuer) if bundle is None else bundle
        self.keys = KeyServer(document, ssl_context=context)
        domain = {
            "algorithms": ["ES256"],
            "jwks_url" if bundle is None else "spiffe_bundle_url": self.keys.url,
            "fetch": {"ca_file": str(ca_file), "min_refresh_interval_seconds": 0.2},
        }
        document = gateway_config(
            harness.directory,
            Ports(443, 1, 2, 3),
            listeners=[self.address],
            origins=[ORIGIN],
            overrides={
                "trust_domains": {TRUST_DOMAIN: domain},
                "diagnostics": {"address": f"127.0.0.1:{self.diagnostics}"},
                **(overrides or {}),
            },
        )
        self.config_path = write_yaml(tmp_path / "gateway.yaml", document)

    @contextlib.asynccontextmanager
    async def gateway(self) -> AsyncIterator[GatewayServer]:
        config = load_config(self.config_path)
        server = GatewayServer(config, self.harness.clock, config_path=self.config_path)
        try:
            await server.start()
            yield server
        finally:
            await server.stop()
            await self.keys.stop()

    def signed_by(self, issuer: dict[str, Any]) -> dict[str, str]:
        workload = self.harness.identities.workloads["frontend"]
        subject = self.harness.identities.workload_id("frontend")
        now = self.harness.clock.now
        token = mint_wit(issuer, subject, workload, now=now)
        proof = mint_wpt(workload, token, ORIGIN + "/api/hello", now=now)
        return {"workload-identity-token": token, "authorization": f"WPT {proof}"}

    async def check(self, headers: dict[str, str], certificate: str = "") -> tuple[str, str]:
        """(`allow` or the status, the reason header). `certificate`: a client certificate
        as Envoy forwards it (URL-encoded PEM), with its URI SAN as the principal."""
        request = check_request("/api/hello", headers)
        if certificate:
            request.attributes.source.certificate = certificate
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            response: CheckResponse = await stub.Check(request, timeout=10)
        reason = {
            option.header.key: option.header.value for option in response.denied_response.headers
        }.get("x-wimse-authz-reason", "")
        return outcome(response), reason

    async def health(self) -> Any:
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=AUTHORIZATION_SERVICE)
            return (await stub.Check(request, timeout=5)).status

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.diagnostics}/readyz"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            body: dict[str, Any] = await response.json()
            return response.status, body


def test_the_gateway_is_not_ready_until_its_jwks_answers_and_readyz_names_the_source(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    scenario = Scenario(harness, tmp_path)

    async def run_it() -> None:
        async with scenario.gateway() as server:  # the key server is not up yet
            assert await scenario.health() == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await scenario.check(harness.signed_headers()) == ("503", "gateway.not_ready")
            status, body = await scenario.readyz()
            assert status == 503
            (source,) = body["detail"]["trust_sources"]
            assert source["source"] == f"trust_domains.{TRUST_DOMAIN}"
            assert source["loaded"] is False
            assert "cannot connect" in source["error"]

            await scenario.keys.start()
            await until(lambda: server.readiness().ready)
            assert await scenario.health() == health_pb2.HealthCheckResponse.SERVING
            assert await scenario.check(harness.signed_headers()) == ("allow", "")
            status, body = await scenario.readyz()
            assert status == 200
            assert body["detail"]["trust_sources"][0]["loaded"] is True
            assert body["detail"]["trust_revision"] == server.gateway.trust_store.revision  # type: ignore[union-attr]

    run(run_it)


def test_rotated_keys_serve_without_a_reload_and_a_reload_keeps_them(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    scenario = Scenario(harness, tmp_path)
    keys = scenario.keys

    async def run_it() -> None:
        await keys.start()
        async with scenario.gateway() as server:
            before = server.readiness().detail["trust_revision"]
            assert await scenario.check(scenario.signed_by(ROTATED)) == ("401", "wit.kid_unknown")

            keys.document = jwks(harness.identities.issuer, ROTATED)
            await eventually(scenario, ROTATED, ("allow", ""))
            assert reloads(server, "success") == 1, "new keys, and no reload"
            assert server.readiness().detail["trust_revision"] != before

            fetched = len(keys.requests)
            server.reloader.request_reload("test")
            await until(lambda: reloads(server, "success") == 2)
            assert len(keys.requests) == fetched, "a reload does not fetch the keys again"
            assert await scenario.check(scenario.signed_by(ROTATED)) == ("allow", "")

    run(run_it)


def test_a_spiffe_bundle_endpoint_verifies_wits_with_wit_svid_keys_and_svids_with_its_cas(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """The bundle also carries the rotated key, but as an `x509-svid` entry, and another
    key as `jwt-svid`: neither ever verifies a WIT, even one naming its kid."""
    root = CertificateAuthority.create("demo root", trust_domain_uri=f"spiffe://{TRUST_DOMAIN}")
    # ROTATED's public key and kid, marked as an X.509 authority.
    x509_only = {**authority_jwk(root.certificate), **public_jwk(ROTATED)}
    jwt_only = generate_private_jwk("ES256", kid="jwt-svid-2026-12")
    bundle = spiffe_bundle(
        wit_keys=[harness.identities.issuer],
        jwt_keys=[jwt_only],
        authorities=[root.certificate],
        sequence=1,
    )
    bundle["keys"].append(x509_only)
    harness.clock.now = time.time()  # the client certificate is valid around now
    mtls = {"mtls": {"authenticate": True, "verify_peer_certificate": True}}
    scenario = Scenario(harness, tmp_path, bundle=bundle, overrides=mtls)
    svid = root.issue("ops", uris=[f"spiffe://{TRUST_DOMAIN}/ops"], server=False, client=True)
    forwarded = quote(svid.cert_pem.decode(), safe="")

    async def run_it() -> None:
        await scenario.keys.start()
        async with scenario.gateway() as server:
            assert await scenario.check(harness.signed_headers()) == ("allow", "")
            assert await scenario.check(scenario.signed_by(ROTATED)) == ("401", "wit.kid_unknown")
            assert await scenario.check(scenario.signed_by(jwt_only)) == ("401", "wit.kid_unknown")
            assert await scenario.check({}, forwarded) == ("allow", "")
            sources: Any = server.readiness().detail["trust_sources"]
            assert [source["sequence"] for source in sources] == [1]

    run(run_it)


async def eventually(
    scenario: Scenario, issuer: dict[str, Any], expected: tuple[str, str], timeout: float = 15
) -> None:
    """Until a fresh WIT from `issuer` gets `expected` (unknown-kid refreshes are
    rate-limited, so the first check after a change may still see the old keys)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (got := await scenario.check(scenario.signed_by(issuer))) != expected:
        if loop.time() > deadline:
            raise AssertionError(f"still {got}, expected {expected}")
        await asyncio.sleep(0.1)
