"""HTTP Message Signatures end to end: real Envoy (deploy/envoy/gateway.yaml), a real
gateway process, requests signed by the demo workloads' keys.

What only a real Envoy shows: the exact body bytes it forwards per route (the whole body,
as bytes, on the catch-all route, which declares `wimse.body: forwarded`; none on
`/api/canary/`, which does not and so accepts no signature), what it does with a body over
its buffer, with a client-sent `x-envoy-auth-partial-body`, with HTTP/1.1 chunked and
HTTP/2 bodies that no `content-length` announces, and the path and query it reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.devtools.httpsig import sign_request
from authz.devtools.stack import Identities
from tests.e2e.h2c import h2c_request
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


def signature_headers(
    stack: RunningStack,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    workload: str = "frontend",
) -> dict[str, str]:
    """A WIT and a WIMSE signature for this request (a Content-Digest when `body`)."""
    target, _, query = path.partition("?")
    headers = {"workload-identity-token": stack.wit(workload)}
    if body is not None:
        headers["content-type"] = "application/json"
    return headers | sign_request(
        stack.identities.workloads[workload],
        method=method,
        path=target,
        query=query,
        body=body,
        audience=stack.ports.origin + target,
        headers=headers,
    )


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
    headers = signature_headers(stack, path, method=method, body=body, workload=workload)
    return stack.request(path, headers, method=method, body=tamper if tamper else body)


def reached_upstream(stack: RunningStack, path: str) -> bool:
    return any(seen == path for _, seen in stack.upstream.received())


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


def test_a_body_over_envoys_buffer_is_refused_by_envoy(stack: RunningStack) -> None:
    """`allow_partial_message: false`: Envoy answers 413 itself, nothing is checked in part."""
    path = "/api/orders/too-large"
    body = json.dumps({"pad": "x" * (BUFFER_LIMIT + 100)}).encode()
    response = signed_request(stack, path, method="POST", body=body)
    assert response.status == 413, (response.status, reason(response))
    assert not reached_upstream(stack, path)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_signed_request_on_a_route_without_wimse_body_is_refused(
    stack: RunningStack, method: str
) -> None:
    path = f"/api/canary/signed-{method.lower()}"
    body = b'{"item":"cone"}' if method == "POST" else None
    response = signed_request(stack, path, method=method, body=body)
    assert (response.status, reason(response)) == (400, "httpsig.not_accepted")
    assert not reached_upstream(stack, path)


def test_a_client_sent_partial_body_flag_does_not_open_a_route_without_wimse_body(
    stack: RunningStack,
) -> None:
    path = "/api/canary/client-flag"
    headers = signature_headers(stack, path) | {"x-envoy-auth-partial-body": "false"}
    response = stack.request(path, headers)
    assert (response.status, reason(response)) == (400, "httpsig.not_accepted")
    assert not reached_upstream(stack, path)


@pytest.mark.parametrize(
    ("method", "body"), [("GET", None), ("POST", b'{"item":"cone","amount":1}')]
)
def test_envoy_replaces_a_client_sent_partial_body_flag(
    stack: RunningStack, method: str, body: bytes | None
) -> None:
    """Measured on Envoy 1.40, on a route that buffers bodies: the check never carries the
    client's flag. Envoy sets its own when it forwarded a body and removes the client's
    when there was none. Had `true` reached the gateway, it would refuse the request as
    httpsig.body_partial."""
    path = f"/api/flag-{method.lower()}"
    headers = signature_headers(stack, path, method=method, body=body)
    response = stack.request(
        path, headers | {"x-envoy-auth-partial-body": "true"}, method=method, body=body
    )
    assert response.status == 200, (response.status, reason(response))


SMUGGLED = b'{"item":"cone","amount":1000}'
"""A body sent with a request signed as having none (no Content-Digest)."""

SMUGGLING_ROUTES = [
    pytest.param("/api/canary/smuggle", "httpsig.not_accepted", id="route-without-wimse-body"),
    pytest.param("/api/smuggle", "httpsig.digest_missing", id="route-forwarding-bodies"),
]


@pytest.mark.parametrize(("prefix", "refusal"), SMUGGLING_ROUTES)
def test_a_chunked_body_under_a_bodyless_signature_is_refused(
    stack: RunningStack, prefix: str, refusal: str
) -> None:
    """HTTP/1.1 `Transfer-Encoding: chunked`: Envoy removes the header from what ext_authz
    sees, so nothing in the check announces the body."""
    path = f"{prefix}/chunked"
    headers = signature_headers(stack, path)
    response = stack.request(path, headers, body=SMUGGLED, chunked=True)
    assert (response.status, reason(response)) == (400, refusal)
    assert not reached_upstream(stack, path)


@pytest.mark.parametrize(("prefix", "refusal"), SMUGGLING_ROUTES)
def test_an_http2_body_under_a_bodyless_signature_is_refused(
    stack: RunningStack, prefix: str, refusal: str
) -> None:
    """HTTP/2 DATA frames after the HEADERS, and no `content-length`."""
    path = f"{prefix}/h2"
    headers = signature_headers(stack, path)
    response = h2c_request(stack.ports.envoy, path, headers, body=SMUGGLED)
    assert (response.status, reason(response)) == (400, refusal)
    assert not reached_upstream(stack, path)


def test_a_signed_http2_post_is_verified_over_its_data_frames(stack: RunningStack) -> None:
    path = "/api/orders/h2"
    headers = signature_headers(stack, path, method="POST", body=SMUGGLED)
    response = h2c_request(stack.ports.envoy, path, headers, method="POST", body=SMUGGLED)
    assert response.status == 200, (response.status, reason(response))
    assert response.json()["body_bytes"] == len(SMUGGLED)


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
