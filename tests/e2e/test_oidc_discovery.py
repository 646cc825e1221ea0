"""Access-token issuer keys by OpenID Connect discovery, served by real HTTPS servers: the
edge finds the issuer's JWKS through its configuration document, and refuses a document
that is not the configured issuer's."""

from __future__ import annotations

from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

from authz.config import parse_config
from authz.devtools.keys import public_jwk
from authz.devtools.mint import mint_user_token
from authz.devtools.stack import Ports, free_port, gateway_config
from authz.devtools.tts import tts_section
from authz.server.app import GatewayServer
from tests.e2e.inprocess import outcome, run
from tests.key_server import KeyServer, https_context
from tests.support import ORIGIN, GatewayHarness, check_request

WELL_KNOWN = "/.well-known/openid-configuration"


def scenario(harness: GatewayHarness, tmp_path: Path, *, wrong_issuer: bool = False) -> str:
    """The edge's answer to a checkout with an access token of the discovered issuer."""
    ca_file, context = https_context(tmp_path)
    keys = KeyServer({"keys": [public_jwk(harness.identities.user_issuer)]}, ssl_context=context)
    discovery = KeyServer({}, path=WELL_KNOWN, ssl_context=context)
    issuer = discovery.url.removesuffix(WELL_KNOWN)
    discovery.document = {
        "issuer": "https://idp.elsewhere.example" if wrong_issuer else issuer,
        "jwks_uri": keys.url,
    }
    section = tts_section(harness.directory, endpoint=False)
    section["access_token_issuers"] = {
        issuer: {
            "algorithms": ["ES256"],
            "openid_configuration_url": discovery.url,
            "fetch": {"ca_file": str(ca_file)},
        }
    }
    socket = tmp_path / "edge.sock"
    document = gateway_config(
        harness.directory,
        Ports(443, 1, 2, 3),
        origins=[ORIGIN],
        overrides={
            "server": {
                "listeners": [
                    {"address": f"127.0.0.1:{free_port()}"},
                    {"address": f"unix:{socket}", "mode": "edge"},
                ]
            },
            "tts": section,
        },
    )
    config = parse_config(document, "test", harness.directory)
    token = mint_user_token(
        harness.identities.user_issuer,
        issuer=issuer,
        subject="user-4711",
        audience="https://api.demo.example",
        scope="checkout",
        now=harness.clock.now,
    )
    answer: list[str] = []

    async def run_it() -> None:
        await keys.start()
        await discovery.start()
        server = GatewayServer(config, harness.clock)
        try:
            await server.bind()
            await server.load()
            request = check_request(
                "/api/orders",
                {"authorization": f"Bearer {token}", "content-type": "application/json"},
                method="POST",
                raw_body=b'{"amount": 1}',
                service=None,
            )
            async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
                stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                response: CheckResponse = await stub.Check(request, timeout=10)
            answer.append(outcome(response))
        finally:
            await server.stop()
            await keys.stop()
            await discovery.stop()

    run(run_it, timeout=60)
    return answer[0]


def test_the_edge_finds_an_issuers_keys_by_openid_connect_discovery(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    assert scenario(harness, tmp_path) == "allow"


def test_a_discovery_document_of_another_issuer_gives_no_keys(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    # Without keys the edge cannot decide: unavailable, never an allow.
    assert scenario(harness, tmp_path, wrong_issuer=True) == "503"
