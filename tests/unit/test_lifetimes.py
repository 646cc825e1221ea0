"""Every lifetime ends at its `exp`: a token is accepted only while now is *before* it.

RFC 7519 4.1.4 ("on or after which the JWT MUST NOT be accepted"), as the gateway's own
`io.jwt.decode_verify` already had it: `now == exp` is expired, `now == exp - 1` is not;
with clock skew, `now == exp + skew` is expired. The same holds for an HTTP signature's
`expires`, for a cached WIT or Txn-Token (the cache must not outlive the token), and for an
attestation result's freshness. Each case runs through the in-process pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from authz.devtools.stack import ATTESTATION_HEADER, USER_TOKEN_HEADER
from authz.reasons import Reason
from tests.security.forgery import Forge, expect_refused, write_policy
from tests.support import GatewayHarness, expect_allowed, hook_engine
from tests.unit.test_http_signature import accepting, refused, send, signed

ALLOW_ALL = 'package envoy.authz\n\nimport rego.v1\n\ndecision := {"allowed": true}\n'


@pytest.fixture(params=[0, 30], ids=["no-skew", "skew-30"])
def gateway(harness: GatewayHarness, tmp_path: Path, request: pytest.FixtureRequest) -> Forge:
    """The demo gateway with a permissive policy and `clock_skew_seconds` 0 or 30."""
    policy = write_policy(tmp_path / "allow-all", ALLOW_ALL)
    return Forge(harness.rebuild(clock_skew_seconds=request.param, policy=policy))


def skew(forge: Forge) -> int:
    return int(forge.harness.config().clock_skew_seconds)


def check(forge: Forge, headers: dict[str, str]) -> Any:
    return forge.harness.check_path("/api/hello", headers)


def test_a_wit_is_expired_at_exp_plus_skew_and_valid_a_second_before(gateway: Forge) -> None:
    end = gateway.now - skew(gateway)
    expect_refused(
        check(gateway, gateway.headers(wit=gateway.wit(claims={"exp": end}))), Reason.WIT_EXPIRED
    )
    expect_allowed(check(gateway, gateway.headers(wit=gateway.wit(claims={"exp": end + 1}))))


def test_a_cached_wit_expires_at_the_same_instant(gateway: Forge) -> None:
    wit = gateway.wit(claims={"exp": gateway.now + 1 - skew(gateway)})
    expect_allowed(check(gateway, gateway.headers(wit=wit)))
    gateway.harness.clock.now += 1
    expect_refused(check(gateway, gateway.headers(wit=wit)), Reason.WIT_EXPIRED)


def test_a_wpt_is_expired_at_exp_plus_skew(gateway: Forge) -> None:
    end = gateway.now - skew(gateway)
    expect_refused(check(gateway, gateway.headers(wpt_claims={"exp": end})), Reason.WPT_EXPIRED)
    expect_allowed(check(gateway, gateway.headers(wpt_claims={"exp": end + 1})))


def test_a_txn_token_and_its_cached_verification_expire_at_exp_plus_skew(gateway: Forge) -> None:
    end = gateway.now - skew(gateway)
    expired = gateway.txn_token(claims={"exp": end, "iat": end - 60})
    expect_refused(check(gateway, gateway.bound_headers(expired)), Reason.TXN_EXPIRED)
    txn = gateway.txn_token(claims={"exp": end + 1, "iat": end - 60})
    expect_allowed(check(gateway, gateway.bound_headers(txn)))
    gateway.harness.clock.now += 1
    expect_refused(check(gateway, gateway.bound_headers(txn)), Reason.TXN_EXPIRED)


def test_a_user_token_is_expired_at_exp_plus_skew(gateway: Forge) -> None:
    end = gateway.now - skew(gateway)
    expired = gateway.user_token(claims={"exp": end, "iat": end - 60})
    headers = gateway.bound_headers(others={USER_TOKEN_HEADER: expired})
    expect_refused(check(gateway, headers), Reason.USER_EXPIRED)
    valid = gateway.user_token(claims={"exp": end + 1, "iat": end - 60})
    expect_allowed(check(gateway, gateway.bound_headers(others={USER_TOKEN_HEADER: valid})))


def test_an_attestation_result_is_stale_from_exp_plus_skew(gateway: Forge) -> None:
    end = gateway.now - skew(gateway)

    def status(exp: int) -> tuple[str, bool]:
        seen: list[dict[str, Any]] = []

        async def record(document: dict[str, Any]) -> None:
            seen.append(document["wimse"]["attestation"])

        harness = gateway.harness.rebuild()
        forge = Forge(harness)
        hook_engine(harness.gateway.pipeline, record)
        ear = forge.ear(claims={"exp": exp, "iat": end - 60})
        expect_allowed(check(forge, forge.bound_headers(others={ATTESTATION_HEADER: ear})))
        [result] = seen[0]["results"]
        return result["status"], result["fresh"]

    assert status(end) == ("none", False)
    assert status(end + 1) == ("affirming", True)


def test_an_http_signature_is_expired_at_expires_plus_skew(harness: GatewayHarness) -> None:
    gateway = accepting(harness, "http_signature")
    skew_seconds = int(gateway.config().clock_skew_seconds)
    now = int(gateway.clock.now)
    # `expires` = now - skew: created 60 s before that.
    at_limit = signed(gateway, now=now - skew_seconds - 60, ttl=60)
    refused(send(gateway, at_limit), "httpsig.expired")
    before_limit = signed(gateway, now=now - skew_seconds - 59, ttl=60)
    expect_allowed(send(gateway, before_limit))
