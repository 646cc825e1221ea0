"""Policy bundles served over HTTP to a running gateway: a real `aiohttp` bundle server on
loopback (with ETags, as OPA's bundle servers answer), a gateway server in this process,
checks over real gRPC."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.config import load_config
from authz.devtools.bundle import build_bundle
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.stack import Ports, free_port, gateway_config, write_yaml
from authz.server.app import AUTHORIZATION_SERVICE, GatewayServer
from tests.e2e.inprocess import outcome, reloads, run, until
from tests.support import ORIGIN, GatewayHarness, check_request

ALLOW = 'package envoy.authz\n\nimport rego.v1\n\ndecision := {"allowed": true}\n'
DENY = (
    "package envoy.authz\n\nimport rego.v1\n\n"
    'decision := {"allowed": false, "reasons": ["bundle says no"]}\n'
)


class BundleServer:
    """Serves one bundle at /bundles/authz.tar.gz with a strong ETag; counts requests."""

    def __init__(self) -> None:
        self.body = b""
        self.requests: list[str | None] = []
        self.not_modified = 0
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bundles/authz.tar.gz"

    async def _bundle(self, request: web.Request) -> web.Response:
        etag = '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'
        self.requests.append(request.headers.get("If-None-Match"))
        if request.headers.get("If-None-Match") == etag:
            self.not_modified += 1
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(
            body=self.body, headers={"ETag": etag, "Content-Type": "application/gzip"}
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/bundles/authz.tar.gz", self._bundle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def bundle(tmp_path: Path, policy: str, revision: str, **signing: Any) -> bytes:
    directory = tmp_path / f"src-{revision}"
    directory.mkdir()
    (directory / "authz.rego").write_text(policy, encoding="utf-8")
    return build_bundle(directory, revision=revision, **signing)


def config_file(
    harness: GatewayHarness, tmp_path: Path, address: str, bundle_settings: dict[str, Any]
) -> Path:
    document = gateway_config(
        harness.directory,
        Ports(443, 1, 2, 3),
        listeners=[address],
        origins=[ORIGIN],
        overrides={"policy": {"directory": None, "bundle": bundle_settings}},
    )
    return write_yaml(tmp_path / "gateway.yaml", document)


async def check(address: str, harness: GatewayHarness) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        response: CheckResponse = await stub.Check(
            check_request("/api/hello", harness.signed_headers()), timeout=10
        )
    return outcome(response)


async def health(address: str) -> Any:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=AUTHORIZATION_SERVICE)
        return (await stub.Check(request, timeout=5)).status


@contextlib.asynccontextmanager
async def serving(
    harness: GatewayHarness, config_path: Path, bundles: BundleServer
) -> AsyncIterator[GatewayServer]:
    """The bundle server, then a gateway loading from it; both stopped afterwards."""
    await bundles.start()
    server = GatewayServer(load_config(config_path), harness.clock, config_path=config_path)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
        await bundles.stop()


def serving_revision(server: GatewayServer) -> object:
    return server.readiness().detail["policy_revision"]


def test_a_bundle_served_over_http_is_picked_up_when_it_changes(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    bundles = BundleServer()
    bundles.body = bundle(tmp_path, ALLOW, "v1")
    config_path = config_file(harness, tmp_path, address, {"url": bundles.url, "poll_seconds": 0.2})

    async def scenario() -> None:
        async with serving(harness, config_path, bundles) as server:
            assert serving_revision(server) == "v1"
            assert await check(address, harness) == "allow"
            await until(lambda: bundles.not_modified >= 2)  # polled, unchanged: 304s

            bundles.body = bundle(tmp_path, DENY, "v2")
            await until(lambda: serving_revision(server) == "v2")
            assert await check(address, harness) == "403"
            assert bundles.requests[0] is None, "the first fetch is unconditional"
            assert all(tag is not None for tag in bundles.requests[1:])

    run(scenario)


def test_an_unsigned_bundle_is_refused_when_signing_is_configured(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    signer = generate_private_jwk("ES256", "bundle-signer")
    jwks = tmp_path / "bundle-signer.jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(signer)]}), encoding="utf-8")
    bundles = BundleServer()
    bundles.body = bundle(tmp_path, ALLOW, "signed-v1", signing_key=signer)
    signing = {"keys": {"bundle-signer": {"algorithms": ["ES256"], "jwks_file": str(jwks)}}}
    config_path = config_file(
        harness, tmp_path, address, {"url": bundles.url, "poll_seconds": 0.2, "signing": signing}
    )

    async def scenario() -> None:
        async with serving(harness, config_path, bundles) as server:
            assert serving_revision(server) == "signed-v1"
            bundles.body = bundle(tmp_path, DENY, "unsigned-v2")
            await until(lambda: server.reloader.last is not None and not server.reloader.last.ok)
            assert "signature" in (server.reloader.last.error or "").lower()  # type: ignore[union-attr]
            assert serving_revision(server) == "signed-v1"
            assert await check(address, harness) == "allow"

            forged_key = generate_private_jwk("ES256", "bundle-signer")
            bundles.body = bundle(tmp_path, DENY, "forged-v3", signing_key=forged_key)
            await until(lambda: reloads(server, "failure") >= 2)
            assert "signature" in (server.reloader.last.error or "").lower()  # type: ignore[union-attr]
            assert serving_revision(server) == "signed-v1"

            bundles.body = bundle(tmp_path, DENY, "signed-v4", signing_key=signer)
            await until(lambda: serving_revision(server) == "signed-v4")
            assert await check(address, harness) == "403"

    run(scenario)


def test_the_gateway_is_not_ready_until_its_first_bundle_arrives(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    bundles = BundleServer()
    config_path = config_file(harness, tmp_path, address, {"url": bundles.url, "poll_seconds": 0.2})

    async def scenario() -> None:
        server = GatewayServer(load_config(config_path), harness.clock, config_path=config_path)
        await server.start()  # the bundle server is down: the gateway starts, not ready
        try:
            assert not server.readiness().ready
            assert await health(address) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await check(address, harness) == "503"

            bundles.body = bundle(tmp_path, ALLOW, "late-v1")
            await bundles.start()
            await until(lambda: server.readiness().ready)
            assert await health(address) == health_pb2.HealthCheckResponse.SERVING
            assert await check(address, harness) == "allow"
        finally:
            await server.stop()
            await bundles.stop()

    run(scenario)
