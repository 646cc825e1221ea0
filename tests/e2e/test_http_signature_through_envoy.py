"""HTTP Message Signatures end to end: real Envoy (deploy/envoy/gateway.yaml), a real
gateway process, requests signed by the demo workloads' keys.

What only a real Envoy shows: the exact body bytes it forwards per route
(`with_request_body` with `pack_as_bytes` on the catch-all route, none on `/api/canary/`),
its partial-body flag for a body over the buffer limit, and the path and query it reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.devtools.httpsig import sign_request
from authz.devtools.stack import Identities
from tests.e2e.stack import Response, RunningStack, start_stack

pytestmark = pytest.mark.e2e

BUFFER_LIMIT = 65536
"""`max_request_bytes` of the catch-all route in deploy/envoy/gateway.yaml."""


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, identity_dir: Path, identities: Identities
) -> Iterator[RunningStack]:
    running = start_stack(tmp_path_factory.mktemp("httpsig"), identity_dir, identities)
    yield running
    running.stop()


def signed_request(
    stack: RunningStack,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    workload: str = "frontend",
    tamper: bytes | None = None,
) -> Response:
    """Sign and send one request through Envoy; `tamper` replaces the body after signing."""
    target, _, query = path.partition("?")
    headers = {"workload-identity-token": stack.wit(workload)}
    if body is not None:
        headers["content-type"] = "application/json"
    headers |= sign_request(
        stack.identities.workloads[workload],
        method=method,
        path=target,
        query=query,
        body=body,
        audience=stack.ports.origin + target,
        headers=headers,
    )
    return stack.request(path, headers, method=method, body=tamper if tamper else body)


def reason(response: Response) -> str:
    return response.headers.get("x-wimse-authz-reason", "")


def test_a_signed_get_with_a_query_reaches_the_upstream(stack: RunningStack) -> None:
    response = signed_request(stack, "/api/hello?flavor=vanilla&n=1")
    assert response.status == 200, (response.status, reason(response), stack.logs())
    upstream = response.upstream_headers()
    assert upstream["x-wimse-authenticated-by"] == "http_signature"
    assert "signature" not in upstream
    assert "signature-input" not in upstream


def test_a_signed_post_is_verified_over_the_exact_body_bytes(stack: RunningStack) -> None:
    body = json.dumps({"item": "cone", "note": "caf\u00e9 \u2615"}, ensure_ascii=False).encode()
    response = signed_request(stack, "/api/orders", method="POST", body=body)
    assert response.status == 200, (response.status, reason(response))
    assert response.json()["body_bytes"] == len(body)


def test_a_body_changed_after_signing_is_refused(stack: RunningStack) -> None:
    body = b'{"item":"cone","amount":1}'
    response = signed_request(
        stack, "/api/orders", method="POST", body=body, tamper=body.replace(b"1", b"9")
    )
    assert (response.status, reason(response)) == (400, "httpsig.digest_mismatch")


def test_a_body_over_envoys_buffer_is_refused_as_partial(stack: RunningStack) -> None:
    body = json.dumps({"pad": "x" * (BUFFER_LIMIT + 100)}).encode()
    response = signed_request(stack, "/api/orders", method="POST", body=body)
    assert (response.status, reason(response)) == (400, "httpsig.body_partial")


def test_a_signed_body_on_a_route_without_body_forwarding_is_not_let_through(
    stack: RunningStack,
) -> None:
    body = b'{"item":"cone"}'
    response = signed_request(stack, "/api/canary/orders", method="POST", body=body)
    assert (response.status, reason(response)) == (503, "httpsig.body_not_forwarded")


def test_a_signed_get_on_a_route_without_body_forwarding_is_verified(
    stack: RunningStack,
) -> None:
    response = signed_request(stack, "/api/canary/hello")
    assert response.status == 200, (response.status, reason(response))


def test_a_replayed_signed_request_is_refused(stack: RunningStack) -> None:
    target = "/api/hello"
    headers = {"workload-identity-token": stack.wit()}
    headers |= sign_request(
        stack.identities.workloads["frontend"],
        method="GET",
        path=target,
        audience=stack.ports.origin + target,
        headers=headers,
    )
    assert stack.request(target, headers).status == 200
    replayed = stack.request(target, headers)
    assert (replayed.status, reason(replayed)) == (400, "httpsig.replayed")
