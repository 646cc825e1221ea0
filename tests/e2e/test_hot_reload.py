"""Hot reload over real gRPC: a gateway server in this process, its configuration and policy
on disk, checks flowing while files change. Validation runs in its real separate process."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse

from authz.config import load_config
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import mint_wit
from authz.devtools.stack import (
    POLICY_DIR,
    Ports,
    free_port,
    gateway_config,
    gateway_process,
    write_yaml,
)
from authz.errors import ConfigError
from authz.server.app import GatewayServer
from tests.e2e.inprocess import outcome, reloads, run, until
from tests.e2e.stack import wait_for_gateway, wait_until
from tests.support import ORIGIN, GatewayHarness, MutableClock, check_request

ALLOW_ALL = 'package envoy.authz\n\nimport rego.v1\n\ndecision := {"allowed": true}\n'
DENY_WITH_MARKER = (
    "package envoy.authz\n\nimport rego.v1\n\n"
    'decision := {"allowed": false, "reasons": ["maintenance window"]}\n'
)
BROKEN = "package envoy.authz\n\ndecision := {\n"
ALLOW_TEST = (
    "package envoy.authz_test\n\nimport rego.v1\n\n"
    "test_allows if data.envoy.authz.decision.allowed\n"
)
DENY_TEST = (
    "package envoy.authz_test\n\nimport rego.v1\n\n"
    'test_denies_for_maintenance if "maintenance window" in data.envoy.authz.decision.reasons\n'
)


def own_policy(policy_dir: Path, policy: str, test: str) -> None:
    """Replace the sample policies by one module and its test."""
    shutil.rmtree(policy_dir)
    policy_dir.mkdir()
    (policy_dir / "authz.rego").write_text(policy, encoding="utf-8")
    (policy_dir / "authz_test.rego").write_text(test, encoding="utf-8")


def setup(harness: GatewayHarness, tmp_path: Path, **overrides: Any) -> tuple[Path, Path, str]:
    """A config file and a private copy of the sample policies; returns (config, policy
    directory, gRPC address)."""
    policy_dir = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, policy_dir)
    address = f"127.0.0.1:{free_port()}"
    document = gateway_config(
        harness.directory,
        Ports(443, 1, 2, 3),
        listeners=[address],
        origins=[ORIGIN],
        policy_dir=policy_dir,
        overrides={
            "policy": {
                "directory": str(policy_dir),
                "reload": {"poll_seconds": 0.1},
            },
            **overrides,
        },
    )
    return write_yaml(tmp_path / "gateway.yaml", document), policy_dir, address


async def started(harness: GatewayHarness, config_path: Path) -> GatewayServer:
    server = GatewayServer(load_config(config_path), harness.clock, config_path=config_path)
    await server.start()
    return server


async def check(channel: grpc.aio.Channel, harness: GatewayHarness, **kwargs: Any) -> CheckResponse:
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    request = check_request("/api/hello", harness.signed_headers(**kwargs))
    response: CheckResponse = await stub.Check(request, timeout=10)
    return response


def test_a_broken_policy_pushed_under_load_keeps_the_last_good_one_serving(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    config_path, policy_dir, address = setup(harness, tmp_path)
    own_policy(policy_dir, ALLOW_ALL, ALLOW_TEST)
    policy_file = policy_dir / "authz.rego"

    async def scenario() -> None:
        server = await started(harness, config_path)
        first_revision = server.readiness().detail["policy_revision"]
        answers: Counter[str] = Counter()
        stop = asyncio.Event()

        async with grpc.aio.insecure_channel(address) as channel:

            async def load() -> None:
                while not stop.is_set():
                    answers[outcome(await check(channel, harness))] += 1

            workers = [asyncio.create_task(load()) for _ in range(8)]
            await until(lambda: answers.total() >= 50)

            policy_file.write_text(BROKEN, encoding="utf-8")
            await until(lambda: reloads(server, "failure") >= 1)
            assert server.reloader.last is not None
            assert not server.reloader.last.ok
            assert "does not compile" in (server.reloader.last.error or "")
            served_during_failure = answers.total()
            await until(lambda: answers.total() >= served_during_failure + 50)
            readiness = server.readiness()
            assert readiness.ready, "the last good policy still serves: still ready"
            assert readiness.detail["policy_revision"] == first_revision
            assert readiness.detail["last_reload"]["ok"] is False  # type: ignore[index]

            # The fix, with its test updated: both files change before the next poll.
            (policy_dir / "authz_test.rego").write_text(DENY_TEST, encoding="utf-8")
            policy_file.write_text(DENY_WITH_MARKER, encoding="utf-8")
            await until(lambda: reloads(server, "success") >= 2)
            await until(lambda: answers["403"] >= 20)
            stop.set()
            await asyncio.gather(*workers)

            denied = await check(channel, harness)
            assert denied.denied_response.status.code == 403
        assert set(answers) == {"allow", "403"}, f"only allows, then denials: {answers}"
        assert server.readiness().detail["policy_revision"] != first_revision
        await server.stop()

    run(scenario)


def test_a_policy_whose_rego_tests_fail_is_refused(harness: GatewayHarness, tmp_path: Path) -> None:
    config_path, policy_dir, address = setup(harness, tmp_path)

    async def scenario() -> None:
        server = await started(harness, config_path)
        (policy_dir / "envoy" / "authz.rego").write_text(DENY_WITH_MARKER, encoding="utf-8")
        await until(lambda: reloads(server, "failure") >= 1)
        status = server.reloader.last
        assert status is not None
        assert "Rego tests failed" in (status.error or "")
        async with grpc.aio.insecure_channel(address) as channel:
            assert outcome(await check(channel, harness)) == "allow"
        await server.stop()

    run(scenario)


def test_sighup_reloads_when_file_watching_is_off(harness: GatewayHarness, tmp_path: Path) -> None:
    config_path, policy_dir, address = setup(harness, tmp_path)
    config = yaml.safe_load(config_path.read_text())
    config["policy"]["reload"] = {"watch": False}
    write_yaml(config_path, config)
    own_policy(policy_dir, ALLOW_ALL, ALLOW_TEST)

    async def scenario() -> None:
        server = await started(harness, config_path)
        async with grpc.aio.insecure_channel(address) as channel:
            own_policy(policy_dir, DENY_WITH_MARKER, DENY_TEST)
            await asyncio.sleep(0.5)
            assert outcome(await check(channel, harness)) == "allow", "not watching"
            server.reloader.request_reload("sighup")
            await until(lambda: reloads(server, "success") >= 2)
            assert outcome(await check(channel, harness)) == "403"
        await server.stop()

    run(scenario)


def test_rotated_trust_anchors_are_picked_up_without_restart(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """The issuer adds a key to its JWKS file: WITs signed with it verify after reload,
    and WITs signed with the old key keep verifying while that key stays listed."""
    config_path, _, address = setup(harness, tmp_path)
    jwks_path = tmp_path / "issuer.jwks.json"
    trust = harness.directory / "trust"
    shutil.copy(next(trust.glob("demo.example.jwks.json")), jwks_path)
    config = yaml.safe_load(config_path.read_text())
    config["trust_domains"]["demo.example"]["jwks_file"] = str(jwks_path)
    write_yaml(config_path, config)
    new_key = generate_private_jwk("ES256", "issuer-2")

    def wit_signed_by(key: dict[str, Any]) -> str:
        return mint_wit(
            key,
            harness.identities.workload_id("frontend"),
            harness.identities.workloads["frontend"],
            now=harness.clock.now,
        )

    async def ask(channel: grpc.aio.Channel, wit: str) -> str:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        headers = {
            "workload-identity-token": wit,
            "authorization": "WPT " + harness.wpt(wit),
        }
        response: CheckResponse = await stub.Check(check_request("/api/hello", headers))
        return outcome(response)

    async def scenario() -> None:
        server = await started(harness, config_path)
        async with grpc.aio.insecure_channel(address) as channel:
            assert await ask(channel, wit_signed_by(new_key)) == "401"
            jwks = json.loads(jwks_path.read_text())
            jwks["keys"].append(public_jwk(new_key))
            jwks_path.write_text(json.dumps(jwks), encoding="utf-8")
            await until(lambda: reloads(server, "success") >= 2)
            assert await ask(channel, wit_signed_by(new_key)) == "allow"
            assert await ask(channel, wit_signed_by(harness.identities.issuer)) == "allow"
        refreshes = server.metrics.registry.get_sample_value(
            "wimse_authz_key_set_refreshes_total", {"result": "success"}
        )
        assert refreshes == 1
        await server.stop()

    run(scenario)


def test_a_broken_policy_at_start_is_fatal(harness: GatewayHarness, tmp_path: Path) -> None:
    config_path, policy_dir, _ = setup(harness, tmp_path)
    (policy_dir / "envoy" / "authz.rego").write_text(BROKEN, encoding="utf-8")

    async def scenario() -> None:
        server = GatewayServer(load_config(config_path), harness.clock, config_path=config_path)
        try:
            with pytest.raises(ConfigError, match="does not compile"):
                await server.start()
        finally:
            await server.stop()

    run(scenario)


def test_sighup_reloads_a_running_gateway_process(harness: GatewayHarness, tmp_path: Path) -> None:
    """The real `wimse-authz serve` process, its own clock: SIGHUP is wired to a reload."""
    config_path, policy_dir, address = setup(harness, tmp_path)
    config = yaml.safe_load(config_path.read_text())
    config["policy"]["reload"] = {"watch": False}
    write_yaml(config_path, config)
    own_policy(policy_dir, ALLOW_ALL, ALLOW_TEST)
    gateway = gateway_process(config_path, tmp_path / "gateway.log").start()
    # A separate process on wall time: tokens minted now, not at the harness's fixed time.
    live = GatewayHarness(harness.directory, harness.identities, MutableClock(time.time()))

    def ask() -> str:
        with grpc.insecure_channel(address) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            request = check_request("/api/hello", live.signed_headers())
            return outcome(stub.Check(request, timeout=10))

    try:
        wait_for_gateway(address, timeout=30)
        assert ask() == "allow"
        own_policy(policy_dir, DENY_WITH_MARKER, DENY_TEST)
        assert gateway.process is not None
        gateway.process.send_signal(signal.SIGHUP)
        wait_until(lambda: ask() == "403", timeout=20)
    finally:
        gateway.stop()
    assert "(sighup)" in gateway.log_tail(60)


def test_a_deny_list_edit_takes_effect_in_seconds_and_a_bad_one_keeps_the_last(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    deny_list = tmp_path / "deny-list.yaml"
    deny_list.write_text("workloads: []\n", encoding="utf-8")
    config_path, _, address = setup(
        harness, tmp_path, deny_list={"file": str(deny_list), "poll_seconds": 0.1}
    )

    async def reason(channel: grpc.aio.Channel) -> str:
        response = await check(channel, harness)
        headers = {h.header.key: str(h.header.value) for h in response.denied_response.headers}
        return outcome(response) + " " + headers.get("x-wimse-authz-reason", "")

    async def scenario() -> None:
        server = await started(harness, config_path)
        async with grpc.aio.insecure_channel(address) as channel:
            assert outcome(await check(channel, harness)) == "allow"
            deny_list.write_text("workloads: [spiffe://demo.example/frontend]\n")
            await until(lambda: len(server.runtime.deny_list.current) == 1, timeout=5)
            assert await reason(channel) == "403 denylist.workload"

            # Nested too deeply to parse: refused, the watch goes on, the list stays.
            deny_list.write_text("workloads: " + "[" * 5000 + "]" * 5000 + "\n")
            await until(lambda: server.runtime.deny_list.error is not None, timeout=5)
            assert "nested too deeply" in (server.runtime.deny_list.error or "")
            assert await reason(channel) == "403 denylist.workload"

            deny_list.write_text("workloads: []\n")
            await until(lambda: not server.runtime.deny_list.current, timeout=5)
            assert outcome(await check(channel, harness)) == "allow"
        await server.stop()

    run(scenario)
