"""Two gateway replicas sharing one Redis replay cache, each behind its own real Envoy.

Each stack (Envoy + gateway process + echo upstream) is the usual one; both gateways name the
same origin, so a WPT made for it is valid at either replica, and the test knows which
replica answered from the Envoy it asked. The gateways allow exactly the 60 s the minted
WPTs live, with a one-second skew: after Redis comes back empty, fresh WPTs are accepted
again within about two seconds (`replay.state_lost` before), not minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.devtools.mint import mint_wpt
from authz.devtools.redis import RedisServer
from authz.devtools.stack import SERVICE_ID, Identities
from tests.e2e.stack import Response, RunningStack, start_stack, wait_until

pytestmark = pytest.mark.e2e

ORIGIN = "https://echo.demo.example"
PATH = "/api/hello"
REASON = "x-wimse-authz-reason"


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        server.put_in_service()
        yield server


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory,
    identity_dir: Path,
    identities: Identities,
    redis: RedisServer,
) -> Iterator[tuple[RunningStack, RunningStack]]:
    overrides = {
        "services": {"echo": {"id": SERVICE_ID, "origins": [ORIGIN]}},
        # Below Envoy's 1 s ext_authz timeout, so the gateway's own 503 is what Envoy sends.
        "replay": {"redis": {"url": redis.url, "timeout_seconds": 0.5}},
        "clock_skew_seconds": 1,
        "wpt": {"max_lifetime_seconds": 60},
    }
    started: list[RunningStack] = []
    try:
        for name in ("replica-1", "replica-2"):
            directory = tmp_path_factory.mktemp(name)
            started.append(
                start_stack(directory, identity_dir, identities, gateway_overrides=overrides)
            )
        yield started[0], started[1]
    finally:
        for stack in started:
            stack.stop()


def fresh_proof(stack: RunningStack) -> dict[str, str]:
    """A WIT and a new WPT for `ORIGIN + PATH`: valid at either replica, once."""
    wit = stack.wit()
    wpt = mint_wpt(stack.identities.workloads["frontend"], wit, ORIGIN + PATH)
    return {"workload-identity-token": wit, "authorization": f"WPT {wpt}"}


def answer(response: Response) -> tuple[int, str | None]:
    return response.status, response.headers.get(REASON)


def test_a_wpt_used_at_one_replica_is_refused_at_the_other(
    replicas: tuple[RunningStack, RunningStack],
) -> None:
    first, second = replicas
    for used_at, replayed_at in ((first, second), (second, first)):
        proof = fresh_proof(used_at)
        accepted = used_at.request(PATH, proof)
        assert accepted.status == 200, accepted.body
        assert answer(replayed_at.request(PATH, proof)) == (401, "wpt.replayed")


def test_both_replicas_fail_closed_while_redis_is_down_and_recover_without_restart(
    replicas: tuple[RunningStack, RunningStack], redis: RedisServer
) -> None:
    first, second = replicas
    accepted_before = fresh_proof(first)
    assert first.request(PATH, accepted_before).status == 200
    redis.stop()
    try:
        for stack in replicas:
            response = stack.request(PATH, fresh_proof(stack))
            assert answer(response) == (503, "replay.store_unavailable"), response.body
    finally:
        redis.start()

    for stack in replicas:
        wait_until(lambda stack=stack: stack.request(PATH, fresh_proof(stack)).status == 200)
    # Redis came back empty: it no longer knows the WPT, the replicas still refuse it.
    for stack in replicas:
        assert answer(stack.request(PATH, accepted_before)) == (401, "replay.state_lost")
    proof = fresh_proof(first)
    assert first.request(PATH, proof).status == 200
    assert answer(second.request(PATH, proof)) == (401, "wpt.replayed")
    assert all(stack.gateway.running() for stack in replicas), "no replica restarted"
