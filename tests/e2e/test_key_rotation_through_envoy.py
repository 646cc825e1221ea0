"""Issuer key rotation and key-server outages, end to end: a real HTTPS JWKS server (aiohttp,
test CA), a real `wimse-authz serve` process fetching its trust domain's keys from it, and a
real Envoy in front, requests over real HTTP."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import mint_wit
from authz.devtools.stack import TRUST_DOMAIN, Identities
from tests.e2e.stack import Response, RunningStack, start_stack
from tests.key_server import KeyServer, ServerThread, https_context

pytestmark = pytest.mark.e2e

PATH = "/api/hello"
OLD = generate_private_jwk("ES256", kid="issuer-2026-11")
NEW = generate_private_jwk("ES256", kid="issuer-2026-12")
STRANGER = generate_private_jwk("ES256", kid="never-published")


def jwks(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": [public_jwk(key) for key in keys]}


@contextlib.contextmanager
def stack_with_jwks_url(
    directory: Path, identity_dir: Path, identities: Identities, **fetch: Any
) -> Iterator[tuple[RunningStack, ServerThread]]:
    """The JWKS server (serving OLD), then the gateway and Envoy; all stopped afterwards."""
    ca_file, context = https_context(directory)
    keys = KeyServer(jwks(OLD), ssl_context=context)
    with ServerThread(keys) as server:
        domain = {
            "algorithms": ["ES256"],
            "jwks_url": keys.url,
            "fetch": {"ca_file": str(ca_file), "timeout_seconds": 1, **fetch},
        }
        overrides = {"trust_domains": {TRUST_DOMAIN: domain}}
        stack = start_stack(directory, identity_dir, identities, gateway_overrides=overrides)
        try:
            yield stack, server
        finally:
            stack.stop()


def wit(stack: RunningStack, issuer: dict[str, Any]) -> str:
    workload = stack.identities.workloads["frontend"]
    return mint_wit(issuer, stack.identities.workload_id("frontend"), workload)


def call(stack: RunningStack, token: str) -> Response:
    """One request with `token` and a fresh WPT for it."""
    proof = stack.wpt(token, PATH)
    return stack.request(PATH, {"workload-identity-token": token, "authorization": f"WPT {proof}"})


def answer(response: Response) -> tuple[int, str]:
    return response.status, response.headers.get("x-wimse-authz-reason", "")


def until_answer(
    stack: RunningStack, attempt: Any, expected: tuple[int, str], timeout: float = 30
) -> None:
    """Repeat `attempt()` (which makes requests and returns the answer that matters) until
    it gives `expected`; fail with the last answer and the gateway's log otherwise."""
    deadline = time.monotonic() + timeout
    got: tuple[int, str] = (0, "")
    while time.monotonic() < deadline:
        got = attempt()
        if got == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"still {got}, expected {expected}\n{stack.logs()}")


def test_issuer_key_rotation_through_envoy(
    tmp_path: Path, identity_dir: Path, identities: Identities
) -> None:
    with stack_with_jwks_url(
        tmp_path,
        identity_dir,
        identities,
        refresh_seconds=3600,  # no background refresh: every change below is kid-driven
        min_refresh_interval_seconds=0.5,
    ) as (stack, keys):
        old_wit = wit(stack, OLD)
        assert answer(call(stack, old_wit)) == (200, "")
        assert answer(call(stack, wit(stack, NEW))) == (401, "wit.kid_unknown")

        # The issuer publishes its next key next to the current one: a token naming it
        # triggers a refresh (at most one per 0.5 s), then verifies.
        keys.update(document=jwks(OLD, NEW))
        until_answer(stack, lambda: answer(call(stack, wit(stack, NEW))), (200, ""))
        assert answer(call(stack, old_wit)) == (200, ""), "the old key is still published"
        assert answer(call(stack, wit(stack, OLD))) == (200, "")

        # The old key is withdrawn. Once a refresh happens (a token naming a kid nobody
        # publishes brings one), even the WIT that verified before is refused.
        keys.update(document=jwks(NEW))

        def after_a_refresh() -> tuple[int, str]:
            call(stack, wit(stack, STRANGER))
            return answer(call(stack, old_wit))

        until_answer(stack, after_a_refresh, (401, "wit.kid_unknown"))
        assert answer(call(stack, wit(stack, OLD))) == (401, "wit.kid_unknown")
        assert answer(call(stack, wit(stack, NEW))) == (200, "")


def test_keys_serve_through_an_outage_until_max_stale_then_503_then_recover(
    tmp_path: Path, identity_dir: Path, identities: Identities
) -> None:
    with stack_with_jwks_url(
        tmp_path,
        identity_dir,
        identities,
        refresh_seconds=1,
        min_refresh_interval_seconds=0.5,
        max_stale_seconds=8,
    ) as (stack, keys):
        assert answer(call(stack, wit(stack, OLD))) == (200, "")

        keys.run(keys.server.stop)  # the JWKS server goes away
        assert answer(call(stack, wit(stack, OLD))) == (200, ""), "the last good keys serve"
        until_answer(
            stack, lambda: answer(call(stack, wit(stack, OLD))), (503, "trust.anchors_unavailable")
        )

        keys.run(keys.server.start)  # back, on the same port, with the same keys
        until_answer(stack, lambda: answer(call(stack, wit(stack, OLD))), (200, ""))
