"""The remote OPA backend against a real HTTP server on 127.0.0.1.

No OPA binary can be installed on these machines, so this server stands in for OPA and
speaks its documented Data API shape: `POST /v1/data/<path>` with `{"input": ...}` is
answered 200 `{"result": <value>}`, 200 `{}` when the document is undefined, and 4xx/5xx
with an `{"code", "message"}` error object.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from authz.config import RemoteOpaConfig
from authz.errors import ConfigError
from authz.policy.engine import PolicyBackendUnavailable, PolicyEngineError
from authz.policy.remote import MAX_RESPONSE_BYTES, RemoteOpaEngine
from authz.reasons import Reason

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECRET = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ3aW1zZSJ9.c2lnbmF0dXJl"
INPUT: dict[str, Any] = {
    "attributes": {
        "request": {"http": {"method": "GET", "headers": {"workload-identity-token": SECRET}}}
    },
    "parsed_path": ["v1", "items"],
}


@dataclass
class FakeOpa:
    """What the stand-in server saw: one entry per request."""

    port: int
    paths: list[str] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    peers: list[tuple[str, int]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


SEEN = web.AppKey("seen", FakeOpa)


def answer(document: object, status: int = 200) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.json_response(document, status=status)

    return handle


@asynccontextmanager
async def fake_opa(
    handler: Handler, listener: socket.socket | None = None
) -> AsyncIterator[FakeOpa]:
    seen = FakeOpa(port=0)

    async def record(request: web.Request) -> web.StreamResponse:
        seen.paths.append(request.path)
        seen.bodies.append(await request.json())
        seen.authorizations.append(request.headers.get("Authorization"))
        seen.peers.append(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        return await handler(request)

    app = web.Application()
    app[SEEN] = seen
    app.router.add_post("/v1/data/{path:.+}", record)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site: web.BaseSite = (
        web.TCPSite(runner, "127.0.0.1", 0) if listener is None else web.SockSite(runner, listener)
    )
    await site.start()
    seen.port = runner.addresses[0][1]
    try:
        yield seen
    finally:
        seen.release.set()
        await runner.cleanup()


def engine_for(
    server: FakeOpa, rule: str = "data.envoy.authz.allow", **config: Any
) -> RemoteOpaEngine:
    return RemoteOpaEngine(RemoteOpaConfig(url=server.url(), **config), rule)


async def decide(handler: Handler, **config: Any) -> tuple[object, FakeOpa]:
    async with fake_opa(handler) as server:
        engine = engine_for(server, **config)
        try:
            return await engine.evaluate(INPUT), server
        finally:
            await engine.close()


async def refusal(handler: Handler, **config: Any) -> PolicyBackendUnavailable:
    with pytest.raises(PolicyBackendUnavailable) as caught:
        await decide(handler, **config)
    assert caught.value.reason == Reason.POLICY_BACKEND_UNAVAILABLE
    assert SECRET not in str(caught.value)
    return caught.value


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("allowed", [True, False])
def test_boolean_decision_is_returned_as_is(allowed: bool) -> None:
    result, _ = asyncio.run(decide(answer({"result": allowed})))
    assert result is allowed


def test_decision_object_is_returned_as_is() -> None:
    decision = {"allowed": True, "headers": {"x-subject": "spiffe://example.org/a"}}
    result, _ = asyncio.run(decide(answer({"result": decision, "decision_id": "d-1"})))
    assert result == decision


@pytest.mark.parametrize("document", [{}, {"decision_id": "d-2"}])
def test_undefined_document_is_none(document: dict[str, str]) -> None:
    result, _ = asyncio.run(decide(answer(document)))
    assert result is None


def test_evaluation_error_is_unavailable_with_opa_code_but_not_its_message() -> None:
    error = {"code": "internal_error", "message": f"object.get: got {SECRET}"}
    refused = asyncio.run(refusal(answer(error, status=500)))
    assert refused.message == "OPA answered 500 (internal_error)"


def test_missing_policy_404_is_unavailable_not_a_denial() -> None:
    error = {"code": "resource_not_found", "message": "document missing"}
    refused = asyncio.run(refusal(answer(error, status=404)))
    assert refused.message == "OPA answered 404 (resource_not_found)"


def test_error_status_without_json_body_still_names_the_status() -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, text="<html>bad gateway</html>")

    assert asyncio.run(refusal(handle)).message == "OPA answered 502"


def test_non_json_body_is_unavailable() -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(text="allow", content_type="application/json")

    assert "not JSON" in asyncio.run(refusal(handle)).message


@pytest.mark.parametrize("document", [[True], True, "allow", None])
def test_json_that_is_not_an_object_is_unavailable(document: object) -> None:
    assert "not an object" in asyncio.run(refusal(answer(document))).message


def test_slow_server_is_unavailable_within_the_timeout() -> None:
    async def scenario() -> PolicyBackendUnavailable:
        async def handle(request: web.Request) -> web.StreamResponse:
            await asyncio.wait_for(request.app[SEEN].release.wait(), 5)
            return web.json_response({"result": True})

        started = time.monotonic()
        refused = await refusal(handle, timeout_seconds=0.2)
        assert time.monotonic() - started < 1.5
        return refused

    assert "did not answer within 0.2s" in asyncio.run(scenario()).message


def test_body_that_stalls_after_the_headers_is_unavailable_within_the_timeout() -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        await response.write(b'{"result": ')
        await asyncio.wait_for(request.app[SEEN].release.wait(), 5)
        await response.write(b"true}")
        return response

    started = time.monotonic()
    refused = asyncio.run(refusal(handle, timeout_seconds=0.2))
    assert "did not answer" in refused.message
    assert time.monotonic() - started < 1.5


def test_unreachable_server_is_unavailable() -> None:
    engine = RemoteOpaEngine(
        RemoteOpaConfig(url=f"http://127.0.0.1:{closed_port()}"), "data.envoy.authz.allow"
    )

    async def scenario() -> None:
        try:
            await engine.evaluate(INPUT)
        finally:
            await engine.close()

    with pytest.raises(PolicyBackendUnavailable, match="request to OPA failed") as caught:
        asyncio.run(scenario())
    assert caught.value.reason == Reason.POLICY_BACKEND_UNAVAILABLE


def test_bearer_token_is_sent() -> None:
    _, server = asyncio.run(decide(answer({"result": True}), token="opa-s3cret"))
    assert server.authorizations == ["Bearer opa-s3cret"]


def test_no_authorization_header_without_a_token() -> None:
    _, server = asyncio.run(decide(answer({"result": True})))
    assert server.authorizations == [None]


def test_input_arrives_intact_under_input() -> None:
    _, server = asyncio.run(decide(answer({"result": True})))
    assert server.bodies == [{"input": INPUT}]


@pytest.mark.parametrize(
    "rule", ["data.envoy.authz.allow", "envoy/authz/allow", "envoy.authz.allow"]
)
def test_rule_is_asked_at_its_data_api_path(rule: str) -> None:
    async def scenario() -> list[str]:
        async with fake_opa(answer({"result": True})) as server:
            engine = engine_for(server, rule)
            await engine.evaluate(INPUT)
            await engine.close()
            return server.paths

    assert asyncio.run(scenario()) == ["/v1/data/envoy/authz/allow"]


def test_evaluations_reuse_one_kept_alive_connection() -> None:
    async def scenario() -> FakeOpa:
        async with fake_opa(answer({"result": True})) as server:
            engine = engine_for(server)
            for _ in range(5):
                assert await engine.evaluate(INPUT) is True
            await engine.close()
            return server

    server = asyncio.run(scenario())
    assert len(server.peers) == 5
    assert len(set(server.peers)) == 1


def test_connection_survives_an_error_answer() -> None:
    answers = iter([({"code": "internal_error", "message": "x"}, 500), ({"result": True}, 200)])

    async def handle(request: web.Request) -> web.StreamResponse:
        document, status = next(answers)
        return web.json_response(document, status=status)

    async def scenario() -> FakeOpa:
        async with fake_opa(handle) as server:
            engine = engine_for(server)
            with pytest.raises(PolicyBackendUnavailable):
                await engine.evaluate(INPUT)
            assert await engine.evaluate(INPUT) is True
            await engine.close()
            return server

    assert len(set(asyncio.run(scenario()).peers)) == 1


def test_concurrent_first_evaluations_share_one_session() -> None:
    async def scenario() -> list[object]:
        async with fake_opa(answer({"result": True})) as server:
            engine = engine_for(server)
            results = await asyncio.gather(*(engine.evaluate(INPUT) for _ in range(8)))
            await engine.close()
            return list(results)

    assert asyncio.run(scenario()) == [True] * 8


def oversize_document() -> dict[str, str]:
    return {"result": "x" * MAX_RESPONSE_BYTES}


def test_oversize_answer_with_content_length_is_refused() -> None:
    refused = asyncio.run(refusal(answer(oversize_document())))
    assert "larger than" in refused.message


def test_oversize_chunked_answer_is_refused() -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(json.dumps(oversize_document()).encode())
        return response

    assert "larger than" in asyncio.run(refusal(handle)).message


def test_oversize_answer_is_measured_after_decompression() -> None:
    compressed = gzip.compress(json.dumps(oversize_document()).encode())
    assert len(compressed) < MAX_RESPONSE_BYTES // 100

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=compressed,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )

    assert "larger than" in asyncio.run(refusal(handle)).message


def test_engine_built_before_the_event_loop_runs_opens_its_session_inside_it() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    engine = RemoteOpaEngine(RemoteOpaConfig(url=f"http://127.0.0.1:{port}"), "envoy/authz/allow")

    async def scenario() -> object:
        async with fake_opa(answer({"result": True}), listener):
            try:
                return await engine.evaluate(INPUT)
            finally:
                await engine.close()

    assert asyncio.run(scenario()) is True


def test_evaluation_after_close_is_unavailable() -> None:
    async def scenario() -> None:
        async with fake_opa(answer({"result": True})) as server:
            engine = engine_for(server)
            assert await engine.evaluate(INPUT) is True
            await engine.close()
            await engine.close()
            await engine.evaluate(INPUT)

    with pytest.raises(PolicyBackendUnavailable, match="closed"):
        asyncio.run(scenario())


def test_input_that_is_not_json_is_an_engine_error() -> None:
    engine = RemoteOpaEngine(RemoteOpaConfig(url="http://127.0.0.1:8181"), "envoy/authz/allow")
    with pytest.raises(PolicyEngineError, match="not JSON") as caught:
        asyncio.run(engine.evaluate({"ratio": float("nan")}))
    assert caught.value.reason == Reason.POLICY_ERROR


@pytest.mark.parametrize(
    ("url", "revision"),
    [
        ("http://opa.internal:8181", "opa:opa.internal:8181"),
        ("https://opa.internal", "opa:opa.internal:443"),
        ("http://opa.internal", "opa:opa.internal:80"),
        ("http://[::1]:8181", "opa:[::1]:8181"),
    ],
)
def test_revision_names_the_server(url: str, revision: str) -> None:
    engine = RemoteOpaEngine(RemoteOpaConfig(url=url), "envoy/authz/allow")
    assert engine.revision == revision


@pytest.mark.parametrize(
    "url", ["http://user:pw@opa.internal:8181", "http://opa.internal:8181?x=1", "http://opa:99999"]
)
def test_url_the_client_cannot_honour_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match=r"policy\.opa\.url"):
        RemoteOpaEngine(RemoteOpaConfig(url=url), "envoy/authz/allow")


@pytest.mark.parametrize("rule", ["envoy/authz/../allow", "envoy/authz/allow?x", "allow now"])
def test_rule_that_is_not_a_path_is_refused(rule: str) -> None:
    with pytest.raises(ConfigError, match="not a path"):
        RemoteOpaEngine(RemoteOpaConfig(url="http://127.0.0.1:8181"), rule)
