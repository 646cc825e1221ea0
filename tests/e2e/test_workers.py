"""`wimse-authz serve --workers 2` as a real supervisor process with two real workers, each
asked straight over gRPC on its own TCP port and Unix socket, and through a real Envoy
listing both.

The module's supervisor serves the sample policies from a private copy, a deny-list file and
the diagnostics port; tests that change its state restore it, and the one that kills a
worker runs last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from prometheus_client.parser import text_string_to_metric_families

from authz.config import worker_address
from authz.devtools.httpsig import sign_request
from authz.devtools.redis import RedisServer
from authz.devtools.stack import (
    POLICY_DIR,
    REPO_ROOT,
    Identities,
    ManagedProcess,
    Ports,
    free_port,
    free_ports_in_a_row,
    gateway_config,
    gateway_process,
    wait_for_http,
    write_yaml,
)
from tests.e2e.stack import RunningStack, start_stack, wait_for_gateway, wait_until
from tests.support import ORIGIN, GatewayHarness, MutableClock, check_request

pytestmark = pytest.mark.e2e

WORKERS = 2
REASON = "x-wimse-authz-reason"
ROUNDS = 50


@dataclass
class Supervised:
    """A running `serve --workers N` and how to reach each of its workers."""

    process: ManagedProcess
    config_path: Path
    tcp: list[str]
    """Worker i's TCP listener."""
    unix: list[str]
    """Worker i's Unix socket listener (empty when configured without one)."""
    diagnostics: str
    """The supervisor's diagnostics base URL."""

    def endpoints(self) -> list[str]:
        """Every worker's every endpoint."""
        return [*self.tcp, *self.unix]

    def get(self, path: str) -> tuple[int, Any]:
        """Status and JSON body (or text) of the supervisor's diagnostics `path`."""
        try:
            with urllib.request.urlopen(self.diagnostics + path, timeout=10) as answer:
                status, body = answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode()

    def workers(self) -> dict[str, Any]:
        """The `/readyz` detail of each worker (pid, running, restarts, ready)."""
        workers: dict[str, Any] = self.get("/readyz")[1]["detail"]["workers"]
        return workers

    def metric(self, name: str, **labels: str) -> float | None:
        _, text = self.get("/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return sample.value
        return None

    def signal(self, signum: int) -> None:
        assert self.process.process is not None
        self.process.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        assert self.process.process is not None
        return self.process.process.wait(timeout)


def start_supervised(
    directory: Path,
    identity_dir: Path,
    *,
    unix: bool = True,
    workers: int = WORKERS,
    overrides: dict[str, Any] | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
    wait_ready: bool = True,
) -> Supervised:
    """Write a configuration and start `serve --workers N` on it."""
    first = free_ports_in_a_row(workers)
    listeners = [f"127.0.0.1:{first}"]
    if unix:
        listeners.append(f"unix:{directory}/authz.sock")
    diagnostics = f"127.0.0.1:{free_port()}"
    document = gateway_config(
        identity_dir,
        Ports(443, 1, first, 3),
        listeners=listeners,
        origins=[ORIGIN],
        overrides={"diagnostics": {"address": diagnostics}, **(overrides or {})},
    )
    if edit is not None:
        edit(document)
    config_path = write_yaml(directory / "gateway.yaml", document)
    process = gateway_process(config_path, directory / "gateway.log", workers).start()
    supervised = Supervised(
        process,
        config_path,
        [worker_address(listeners[0], i) for i in range(workers)],
        [worker_address(listeners[1], i) for i in range(workers)] if unix else [],
        f"http://{diagnostics}",
    )
    if wait_ready:
        try:
            for endpoint in supervised.endpoints():
                wait_for_gateway(endpoint, 60)
            wait_for_http(supervised.diagnostics + "/readyz", timeout=30)
        except TimeoutError as exc:
            process.stop()
            raise RuntimeError(f"workers did not come up: {exc}\n{process.log_tail(60)}") from None
    return supervised


def live_harness(identity_dir: Path, identities: Identities) -> GatewayHarness:
    """Credentials minted on wall time, for gateway processes on the system clock."""
    return GatewayHarness(identity_dir, identities, MutableClock(time.time()))


def answer(response: CheckResponse) -> str:
    """`allow`, or `<status> <reason>`."""
    if response.status.code == 0:
        return "allow"
    headers = {h.header.key: h.header.value for h in response.denied_response.headers}
    return f"{response.denied_response.status.code} {headers.get(REASON, '')}"


async def send_everywhere(endpoints: list[str], request: CheckRequest) -> list[str]:
    """The same CheckRequest to every endpoint at once."""
    channels = [grpc.aio.insecure_channel(endpoint) for endpoint in endpoints]
    try:
        for channel in channels:
            await channel.channel_ready()
        stubs = [external_auth_pb2_grpc.AuthorizationStub(channel) for channel in channels]
        responses = await asyncio.gather(*(stub.Check(request, timeout=10) for stub in stubs))
    finally:
        for channel in channels:
            await channel.close()
    return [answer(response) for response in responses]


def ask(endpoint: str, request: CheckRequest) -> str:
    with grpc.insecure_channel(endpoint) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        return answer(stub.Check(request, timeout=10))


@pytest.fixture(scope="module")
def supervised(
    tmp_path_factory: pytest.TempPathFactory, identity_dir: Path, identities: Identities
) -> Iterator[Supervised]:
    directory = tmp_path_factory.mktemp("workers")
    policy_dir = directory / "policies"
    shutil.copytree(POLICY_DIR, policy_dir)
    deny_list = directory / "deny-list.yaml"
    deny_list.write_text("workloads: []\n", encoding="utf-8")
    running = start_supervised(
        directory,
        identity_dir,
        overrides={
            "policy": {"directory": str(policy_dir), "reload": {"poll_seconds": 0.2}},
            "deny_list": {"file": str(deny_list), "poll_seconds": 0.1},
        },
    )
    yield running
    running.process.stop()


def policy_dir(supervised: Supervised) -> Path:
    """The module supervisor's private copy of the sample policies."""
    return supervised.config_path.parent / "policies"


# --- endpoints, readiness ---------------------------------------------------------------


def test_each_worker_serves_on_its_own_port_and_socket(
    supervised: Supervised, identity_dir: Path, identities: Identities
) -> None:
    first_port = int(supervised.tcp[0].rpartition(":")[2])
    assert supervised.tcp == [f"127.0.0.1:{first_port}", f"127.0.0.1:{first_port + 1}"]
    directory = supervised.config_path.parent
    assert supervised.unix == [f"unix:{directory}/authz-0.sock", f"unix:{directory}/authz-1.sock"]
    live = live_harness(identity_dir, identities)
    for endpoint in supervised.endpoints():
        assert ask(endpoint, check_request("/api/hello", live.signed_headers())) == "allow"
    assert not (directory / "authz.sock").exists(), "only the workers' sockets"


def test_the_supervisor_is_ready_and_alive_with_every_worker(supervised: Supervised) -> None:
    status, body = supervised.get("/readyz")
    assert status == 200
    workers = body["detail"]["workers"]
    assert sorted(workers) == ["0", "1"]
    for worker in workers.values():
        assert worker["ready"] is True
        assert worker["detail"]["policy_revision"]
    pids = {worker["pid"] for worker in workers.values()}
    assert len(pids) == WORKERS
    assert supervised.process.process is not None
    assert supervised.process.process.pid not in pids
    status, body = supervised.get("/healthz")
    assert status == 200
    assert all(worker["alive"] for worker in body["detail"]["workers"].values())


# --- replay protection across workers ------------------------------------------------------


def test_the_same_wpt_sent_to_every_worker_at_once_is_allowed_exactly_once(
    supervised: Supervised, identity_dir: Path, identities: Identities
) -> None:
    live = live_harness(identity_dir, identities)
    endpoints = supervised.endpoints()  # two per worker: its port and its socket

    async def rounds() -> list[list[str]]:
        results = []
        for _ in range(ROUNDS):
            request = check_request("/api/hello", live.signed_headers())
            results.append(await send_everywhere(endpoints, request))
        return results

    for answers in asyncio.run(rounds()):
        assert Counter(answers) == {"allow": 1, "401 wpt.replayed": len(endpoints) - 1}, answers


def test_the_same_signature_nonce_sent_to_every_worker_at_once_is_allowed_exactly_once(
    supervised: Supervised, identity_dir: Path, identities: Identities
) -> None:
    live = live_harness(identity_dir, identities)
    endpoints = supervised.endpoints()

    def signed() -> CheckRequest:
        headers = {"workload-identity-token": live.wit()}
        headers |= sign_request(
            identities.workloads["frontend"],
            method="GET",
            path="/api/hello",
            audience=ORIGIN + "/api/hello",
            headers=headers,
        )
        return check_request("/api/hello", headers, context={"wimse.body": "forwarded"})

    async def rounds() -> list[list[str]]:
        return [await send_everywhere(endpoints, signed()) for _ in range(ROUNDS)]

    for answers in asyncio.run(rounds()):
        expected = {"allow": 1, "400 httpsig.replayed": len(endpoints) - 1}
        assert Counter(answers) == expected, answers


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_are_labelled_by_the_worker_that_answered(
    supervised: Supervised, identity_dir: Path, identities: Identities
) -> None:
    live = live_harness(identity_dir, identities)

    def decisions(worker: str) -> float:
        value = supervised.metric(
            "wimse_authz_decisions_total", worker=worker, result="allow", reason="policy.allowed"
        )
        return value or 0.0

    before = {worker: decisions(worker) for worker in ("0", "1")}
    for _ in range(3):
        assert ask(supervised.tcp[1], check_request("/api/hello", live.signed_headers())) == "allow"
    assert decisions("1") == before["1"] + 3
    assert decisions("0") == before["0"]
    for worker in ("0", "1"):
        assert supervised.metric("wimse_authz_worker_up", worker=worker) == 1
        assert supervised.metric("wimse_authz_worker_restarts_total", worker=worker) == 0
    _, text = supervised.get("/metrics")
    families = [f.name for f in text_string_to_metric_families(text)]
    assert len(families) == len(set(families)), "each family once, with every worker's samples"


# --- reloads and the deny-list reach every worker --------------------------------------------


def test_a_deny_list_edit_reaches_every_worker(
    supervised: Supervised, identity_dir: Path, identities: Identities
) -> None:
    live = live_harness(identity_dir, identities)
    deny_list = supervised.config_path.parent / "deny-list.yaml"

    def answers() -> list[str]:
        return [
            ask(endpoint, check_request("/api/hello", live.signed_headers()))
            for endpoint in supervised.tcp
        ]

    assert answers() == ["allow", "allow"]
    deny_list.write_text("workloads: [spiffe://demo.example/frontend]\n", encoding="utf-8")
    try:
        wait_until(lambda: answers() == ["403 denylist.workload"] * WORKERS, timeout=20)
    finally:
        deny_list.write_text("workloads: []\n", encoding="utf-8")
    wait_until(lambda: answers() == ["allow", "allow"], timeout=20)


def test_a_policy_change_reaches_every_worker(
    supervised: Supervised, identity_dir: Path, identities: Identities
) -> None:
    live = live_harness(identity_dir, identities)
    data = policy_dir(supervised) / "mesh" / "data.json"
    original = data.read_text(encoding="utf-8")

    def answers() -> list[str]:
        return [
            ask(endpoint, check_request("/maintenance", live.signed_headers("/maintenance")))
            for endpoint in supervised.tcp
        ]

    before = answers()
    assert before == [before[0]] * WORKERS
    assert before[0].startswith("403 ")
    document = json.loads(original)
    document["services"]["echo"]["callers"][0]["path_prefixes"].append(["maintenance"])
    data.write_text(json.dumps(document), encoding="utf-8")
    try:
        wait_until(lambda: answers() == ["allow"] * WORKERS, timeout=30)
    finally:
        data.write_text(original, encoding="utf-8")
    wait_until(lambda: answers() == before, timeout=30)


def test_sighup_reaches_every_worker(supervised: Supervised) -> None:
    supervised.signal(signal.SIGHUP)

    def reloaded_by_sighup() -> bool:
        workers = supervised.workers()
        return all(w["detail"]["last_reload"]["trigger"] == "sighup" for w in workers.values())

    wait_until(reloaded_by_sighup, timeout=30)


# --- lifecycle -----------------------------------------------------------------------------


def test_the_supervisor_is_not_ready_while_a_worker_does_not_answer(
    supervised: Supervised,
) -> None:
    """A stopped (SIGSTOP) worker answers nothing: the supervisor reports neither ready nor
    alive until it answers again."""
    pid = supervised.workers()["1"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        status, body = supervised.get("/readyz")
        assert status == 503
        assert body["detail"]["workers"]["1"]["ready"] is False
        assert body["detail"]["workers"]["0"]["ready"] is True
        assert supervised.get("/healthz")[0] == 503
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: supervised.get("/readyz")[0] == 200, timeout=20)
    assert supervised.get("/healthz")[0] == 200


def test_a_killed_worker_is_restarted_and_still_refuses_proofs_used_before(
    supervised: Supervised, identity_dir: Path, identities: Identities
) -> None:
    live = live_harness(identity_dir, identities)
    used = check_request("/api/hello", live.signed_headers())
    assert ask(supervised.tcp[1], used) == "allow"
    pid = supervised.workers()["1"]["pid"]
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        worker = supervised.workers()["1"]
        return worker["pid"] != pid and worker["ready"] is True

    wait_until(restarted, timeout=30)
    wait_for_gateway(supervised.tcp[1], 30)
    assert ask(supervised.tcp[1], used) == "401 wpt.replayed", "the shared table outlived it"
    assert ask(supervised.tcp[1], check_request("/api/hello", live.signed_headers())) == "allow"
    assert supervised.metric("wimse_authz_worker_restarts_total", worker="1") == 1
    assert supervised.get("/readyz")[0] == 200


def test_with_replay_redis_the_workers_share_redis_and_fail_closed_without_it(
    tmp_path: Path, identity_dir: Path, identities: Identities
) -> None:
    """`replay.redis` is the store for workers as for replicas: proofs are claimed there
    (a Redis outage is a 503 at every worker, which the shared table would not cause)."""
    live = live_harness(identity_dir, identities)
    with RedisServer(tmp_path / "redis") as redis:
        redis.put_in_service()
        # Below Envoy's 1 s ext_authz timeout, as the deploy configs expect.
        replay = {"redis": {"url": redis.url, "timeout_seconds": 0.5}}
        supervised = start_supervised(
            tmp_path, identity_dir, unix=False, overrides={"replay": replay}
        )
        try:

            async def rounds() -> list[list[str]]:
                results = []
                for _ in range(10):
                    request = check_request("/api/hello", live.signed_headers())
                    results.append(await send_everywhere(supervised.tcp * 2, request))
                return results

            for answers in asyncio.run(rounds()):
                assert Counter(answers) == {"allow": 1, "401 wpt.replayed": 3}, answers
            redis.stop()
            for endpoint in supervised.tcp:
                request = check_request("/api/hello", live.signed_headers())
                assert ask(endpoint, request) == "503 replay.store_unavailable"
        finally:
            supervised.process.stop()


# --- start and stop, each with its own supervisor -------------------------------------------


def test_sigterm_drains_every_workers_in_flight_checks_and_exits_0(
    tmp_path: Path, identity_dir: Path, identities: Identities
) -> None:
    """A stand-in for an OPA server holds each decision until released (no OPA binary can
    be installed here): both workers have a check in flight when SIGTERM arrives."""
    held = HeldDecisions()
    opa = ThreadingHTTPServer(("127.0.0.1", 0), held.handler())
    threading.Thread(target=opa.serve_forever, daemon=True).start()

    def remote_policy(document: dict[str, Any]) -> None:
        url = f"http://127.0.0.1:{opa.server_address[1]}"
        document["policy"] = {"backend": "opa", "opa": {"url": url, "timeout_seconds": 20}}

    supervised = start_supervised(tmp_path, identity_dir, unix=False, edit=remote_policy)
    live = live_harness(identity_dir, identities)
    try:
        answers: list[str] = []

        def check_at(endpoint: str) -> None:
            answers.append(ask(endpoint, check_request("/api/hello", live.signed_headers())))

        checks = [threading.Thread(target=check_at, args=(e,)) for e in supervised.tcp]
        for thread in checks:
            thread.start()
        wait_until(lambda: held.arrived == WORKERS, timeout=20)
        supervised.signal(signal.SIGTERM)
        wait_until(
            lambda: all(
                f"worker-{i} authz.server shutting down" in supervised.process.log_tail(200)
                for i in range(WORKERS)
            ),
            timeout=20,
        )
        held.release.set()
        for thread in checks:
            thread.join(timeout=20)
        assert supervised.wait(30) == 0, supervised.process.log_tail(60)
        assert answers == ["allow", "allow"]
    finally:
        held.release.set()
        supervised.process.stop()
        opa.shutdown()
    log = supervised.process.log_tail(200)
    assert re.search(r"worker 0 \(pid \d+\) exited with 0", log)
    assert re.search(r"worker 1 \(pid \d+\) exited with 0", log)


class HeldDecisions:
    """An OPA Data API stand-in answering `{"result": true}` once `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.arrived = 0

    def handler(self) -> type[BaseHTTPRequestHandler]:
        held = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                with held._lock:
                    held.arrived += 1
                held.release.wait(30)
                body = b'{"result": true}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.mark.usefixtures("identities")
def test_a_worker_that_keeps_failing_to_start_stops_everything_with_its_error(
    tmp_path: Path, identity_dir: Path
) -> None:
    supervised = start_supervised(tmp_path, identity_dir, unix=False)
    try:
        # The running workers refuse this reload and serve on; a restarted worker cannot start.
        supervised.config_path.write_text("server: [\n", encoding="utf-8")
        os.kill(supervised.workers()["1"]["pid"], signal.SIGKILL)
        assert supervised.wait(60) == 2
    finally:
        supervised.process.stop()
    log = supervised.process.log_tail(200)
    assert "not valid YAML" in log
    assert "worker 1 exited 3 times in a row before becoming ready" in log
    assert "worker 0 (pid" in log
    assert re.search(r"worker 0 \(pid \d+\) exited with 0", log), "drained, not killed"


def serve_two_workers_to_the_end(config: Path) -> subprocess.CompletedProcess[str]:
    """`serve --workers 2` with `config`, for a start that must fail: run until it exits."""
    return subprocess.run(
        [sys.executable, "-m", "authz", "serve", "--config", str(config), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.usefixtures("identities")
def test_a_workers_port_in_use_stops_the_start_before_any_worker_runs(
    tmp_path: Path, identity_dir: Path
) -> None:
    first = free_ports_in_a_row(WORKERS)
    config = gateway_config(identity_dir, Ports(443, 1, first, 3), origins=[ORIGIN])
    path = write_yaml(tmp_path / "gateway.yaml", config)
    with socket_listening(first + 1):
        result = serve_two_workers_to_the_end(path)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{first + 1}: in use (worker 1 of 2)" in result.stderr
    assert "worker-0" not in result.stderr


@pytest.mark.usefixtures("identities")
def test_a_configuration_error_stops_the_start_before_any_worker_runs(
    tmp_path: Path, identity_dir: Path
) -> None:
    broken = tmp_path / "policies"
    broken.mkdir()
    (broken / "authz.rego").write_text("package envoy.authz\n\ndecision := {\n")
    config = gateway_config(
        identity_dir, Ports(443, 1, free_ports_in_a_row(2), 3), policy_dir=broken
    )
    path = write_yaml(tmp_path / "gateway.yaml", config)
    result = serve_two_workers_to_the_end(path)
    assert result.returncode == 2
    assert result.stderr.startswith("wimse-authz: ")
    assert "worker" not in result.stderr


@contextlib.contextmanager
def socket_listening(port: int) -> Iterator[None]:
    """A plain TCP socket listening on a loopback port, as another server would."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", port))
        listening.listen()
        yield


# --- through Envoy -----------------------------------------------------------------------


def test_envoy_spreads_checks_over_every_worker(
    tmp_path: Path, identity_dir: Path, identities: Identities
) -> None:
    """Envoy runs deploy/envoy/gateway-workers.yaml (both workers' ports in the gateway
    cluster); every request is allowed, and each worker answers some of them."""
    diagnostics = f"127.0.0.1:{free_port()}"
    stack = start_stack(
        tmp_path,
        identity_dir,
        identities,
        envoy_template=REPO_ROOT / "deploy" / "envoy" / "gateway-workers.yaml",
        gateway_workers=WORKERS,
        gateway_overrides={"diagnostics": {"address": diagnostics}},
    )
    supervisor = Supervised(
        stack.gateway, tmp_path / "gateway.yaml", [], [], f"http://{diagnostics}"
    )

    def allowed_by(worker: str) -> float:
        value = supervisor.metric(
            "wimse_authz_decisions_total", worker=worker, result="allow", reason="policy.allowed"
        )
        return value or 0.0

    def request_until_both_answered() -> bool:
        # Envoy passes a host's new health to its workers within update_merge_window (1 s).
        response = stack.request("/api/hello", stack.signed("/api/hello"))
        assert response.status == 200, response.body
        return all(allowed_by(worker) > 0 for worker in ("0", "1"))

    try:
        hosts = gateway_hosts(stack)
        assert sorted(hosts) == [stack.ports.gateway, stack.ports.gateway + 1]
        # A worker still loading at Envoy's first health check is checked again within
        # no_traffic_interval (2 s), or interval (5 s) once checks flow.
        wait_until(lambda: set(gateway_hosts(stack).values()) == {"healthy"}, timeout=30)
        wait_until(request_until_both_answered, timeout=30)
    finally:
        stack.stop()


def gateway_hosts(stack: RunningStack) -> dict[int, str]:
    """Port → health flags of each host of Envoy's gateway cluster."""
    url = f"http://127.0.0.1:{stack.ports.admin}/clusters"
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    found = re.findall(r"^wimse_authz::[^:]+:(\d+)::health_flags::(\S+)$", text, re.M)
    return {int(port): flags for port, flags in found}
