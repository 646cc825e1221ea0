"""Outbound mode end to end, real Envoys only: the caller app → its egress Envoy (the gateway's
outbound listener attaches the workload's WIT and a fresh proof) → the callee's ingress
Envoy (the same gateway's inbound listener verifies them) → the callee app.

The apps hold no key: the caller is this test sending plain HTTP to the egress Envoy, the
callee the echo upstream, which shows what reached it. The callee's gateway keeps proof
headers (`upstream.strip_proof_headers: false`) so the echo shows the WIT and WPT that
arrived, for the replay test. One gateway process serves the inbound listener and two
outbound ones (frontend, whose credential files exist, and batch, whose do not): the
strongest form of "an inbound listener never mints", since both share one process.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authz.credentials.jose import b64url_decode
from authz.devtools.check import (
    GatewayAddress,
    answer_from_response,
    build_check_request,
    send_check,
)
from authz.devtools.egress import (
    CredentialFiles,
    egress_envoy_config,
    outbound_listener,
    outbound_section,
    socket_directory,
    write_workload_credentials,
)
from authz.devtools.keys import generate_private_jwk
from authz.devtools.mint import mint_user_token
from authz.devtools.stack import (
    POLICY_DIR,
    USER_TOKEN_AUDIENCE,
    USER_TOKEN_ISSUER,
    Identities,
    ManagedProcess,
    Ports,
    checkout_txn_token,
    envoy_config,
    envoy_process,
    free_port,
    gateway_config,
    gateway_process,
    wait_for_http,
    write_yaml,
)
from authz.devtools.upstream import EchoServer
from tests.e2e.stack import (
    Response,
    ext_authz_checks,
    ext_authz_stats,
    wait_for_gateway,
    wait_until,
)

pytestmark = pytest.mark.e2e

FRONTEND = "spiffe://demo.example/frontend"


@dataclass
class EgressMesh:
    identities: Identities
    ingress: Ports
    egress_port: int
    batch_port: int
    egress_admin: int
    frontend_files: CredentialFiles
    sockets: Path
    processes: list[ManagedProcess]
    upstream: EchoServer

    def call(
        self,
        path: str,
        headers: Mapping[str, str] | None = None,
        *,
        method: str = "GET",
        body: bytes | None = None,
        port: int | None = None,
    ) -> Response:
        """The caller app's plain request to its egress Envoy."""
        return _request(port or self.egress_port, method, path, headers or {}, body)

    def call_callee_directly(self, path: str, headers: Mapping[str, str]) -> Response:
        return _request(self.ingress.envoy, "GET", path, headers, None)

    def ingress_checks(self) -> int:
        return ext_authz_checks(ext_authz_stats(self.ingress.admin))

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.upstream.stop()


def _request(
    port: int, method: str, path: str, headers: Mapping[str, str], body: bytes | None
) -> Response:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=dict(headers))
        answer = connection.getresponse()
        return Response(
            answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
        )
    finally:
        connection.close()


def egress_config(
    mesh_dir: Path, egress_port: int, batch_port: int, admin: int, ingress_port: int
) -> dict[str, Any]:
    """egress.yaml for the frontend app, plus a listener for the batch app (its own
    outbound socket) and a route to a callee that takes HTTP signatures."""
    config = egress_envoy_config(
        listener_port=egress_port,
        admin_port=admin,
        gateway_socket=mesh_dir / "egress" / "frontend.sock",
        callee_port=ingress_port,
    )
    resources = config["static_resources"]
    listener = resources["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    signed = copy.deepcopy(routes[1])
    signed["match"] = {"prefix": "/signed/"}
    signed["route"]["prefix_rewrite"] = "/api/"
    signed["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["check_settings"][
        "context_extensions"
    ] = {
        "wimse.service": "echo_signed",
        "wimse.path_prefix": "/signed/",
        "wimse.prefix_rewrite": "/api/",
        "wimse.body": "forwarded",
    }
    routes.insert(1, signed)

    batch = copy.deepcopy(listener)
    batch["name"] = "egress-batch"
    batch["address"]["socket_address"]["port_value"] = batch_port
    batch_manager = batch["filter_chains"][0]["filters"][0]["typed_config"]
    batch_manager["stat_prefix"] = "egress_batch"
    for http_filter in batch_manager["http_filters"]:
        if http_filter["name"] == "envoy.filters.http.ext_authz":
            http_filter["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] = (
                "wimse_authz_batch"
            )
    resources["listeners"].append(batch)
    cluster = copy.deepcopy(
        next(c for c in resources["clusters"] if c["name"] == "wimse_authz_egress")
    )
    cluster["name"] = cluster["load_assignment"]["cluster_name"] = "wimse_authz_batch"
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] = {
        "pipe": {"path": str(mesh_dir / "egress" / "batch.sock")}
    }
    resources["clusters"].append(cluster)
    return config


@pytest.fixture(scope="module")
def mesh(
    tmp_path_factory: pytest.TempPathFactory, identity_dir: Path, identities: Identities
) -> Iterator[EgressMesh]:
    directory = tmp_path_factory.mktemp("egress")
    ingress = Ports.free()
    egress_port, batch_port, egress_admin = free_port(), free_port(), free_port()
    sockets = socket_directory(directory / "egress")
    frontend_files = write_workload_credentials(
        directory / "credentials" / "frontend", identities, "frontend"
    )
    batch_files = CredentialFiles(
        directory / "missing" / "wit.jwt", directory / "missing" / "key.jwk.json"
    )
    callee = {"origin": ingress.origin, "bound_headers": []}
    config = gateway_config(
        identity_dir,
        ingress,
        policy_dir=policies_granting_signed_calls(directory / "policies"),
        overrides={
            "server": {
                "listeners": [
                    {"address": f"127.0.0.1:{ingress.gateway}"},
                    outbound_listener(sockets / "frontend.sock", "frontend"),
                    outbound_listener(sockets / "batch.sock", "batch"),
                ]
            },
            "outbound": outbound_section(
                {
                    "frontend": (FRONTEND, frontend_files),
                    "batch": (identities.workload_id("batch"), batch_files),
                },
                {"echo": callee, "echo_signed": {**callee, "proof": "http_signature"}},
                poll_seconds=0.2,
            ),
            "upstream": {"strip_proof_headers": False},
        },
    )
    upstream = EchoServer("127.0.0.1", ingress.upstream).start()
    gateway = gateway_process(
        write_yaml(directory / "gateway.yaml", config), directory / "gateway.log"
    )
    processes = [gateway.start()]
    mesh = EgressMesh(
        identities,
        ingress,
        egress_port,
        batch_port,
        egress_admin,
        frontend_files,
        sockets,
        processes,
        upstream,
    )
    try:
        wait_for_gateway(f"127.0.0.1:{ingress.gateway}", timeout=30)
        processes.append(
            envoy_process(
                write_yaml(directory / "ingress.yaml", envoy_config(ingress)),
                directory / "ingress.log",
            ).start()
        )
        egress_yaml = write_yaml(
            directory / "egress.yaml",
            egress_config(directory, egress_port, batch_port, egress_admin, ingress.envoy),
        )
        processes.append(envoy_process(egress_yaml, directory / "egress-envoy.log").start())
        wait_for_http(f"{ingress.origin}/healthz", timeout=30)
        wait_until(lambda: mesh.call("/api/hello").status == 200, timeout=30)
    except (TimeoutError, AssertionError, OSError) as exc:
        logs = "\n".join(f"--- {p.name} ---\n{p.log_tail(40)}" for p in processes)
        mesh.stop()
        raise RuntimeError(f"egress mesh did not come up: {exc}\n{logs}") from None
    yield mesh
    mesh.stop()


def policies_granting_signed_calls(directory: Path) -> Path:
    """The sample policies, with the frontend also granted the HTTP-signature callee."""
    shutil.copytree(POLICY_DIR, directory)
    data_file = directory / "mesh" / "data.json"
    data = json.loads(data_file.read_text())
    grant = {"callee": "echo_signed", "methods": ["POST"], "path_prefixes": [["api"]]}
    data["egress"][FRONTEND].append(grant)
    data_file.write_text(json.dumps(data, indent=2))
    return directory


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(b64url_decode(token.split(".")[1]))
    return decoded


def current_wit(mesh: EgressMesh) -> str:
    return mesh.frontend_files.wit_file.read_text().strip()


def test_the_callee_sees_the_callers_identity_and_the_app_holds_no_key(mesh: EgressMesh) -> None:
    response = mesh.call("/api/hello")
    assert response.status == 200, response.body
    received = response.upstream_headers()
    assert received["x-wimse-caller"] == FRONTEND
    assert received["x-wimse-authenticated-by"] == "wpt"
    assert received["workload-identity-token"] == current_wit(mesh)
    wpt = claims(received["authorization"].removeprefix("WPT "))
    assert wpt["aud"] == mesh.ingress.origin + "/api/hello"


def test_headers_the_app_sent_are_overwritten_and_never_take_the_gateways_place(
    mesh: EgressMesh,
) -> None:
    user = mint_user_token(
        mesh.identities.user_issuer,
        issuer=USER_TOKEN_ISSUER,
        subject="user-4711",
        audience=USER_TOKEN_AUDIENCE,
    )
    app = {
        "authorization": f"Bearer {user}",
        "workload-identity-token": "forged",
        "signature": "wimse=:AAAA:",
        "signature-input": 'wimse=("@method");created=1',
    }
    response = mesh.call("/api/hello", app)
    assert response.status == 200, response.body
    received = response.upstream_headers()
    assert received["workload-identity-token"] == current_wit(mesh)
    assert received["authorization"].startswith("WPT ")
    assert received["x-user-token"] == user
    assert "signature" not in received
    assert "signature-input" not in received
    assert set(claims(received["authorization"][4:])["oth"]) == {"x-user-token"}


def test_a_txn_token_sent_by_the_caller_app_arrives_bound_by_tth(mesh: EgressMesh) -> None:
    txn = checkout_txn_token(mesh.identities)
    response = mesh.call("/api/hello", {"txn-token": txn})
    assert response.status == 200, response.body
    received = response.upstream_headers()
    assert received["txn-token"] == txn
    assert "tth" in claims(received["authorization"][4:])


def test_a_captured_request_replayed_at_the_callee_is_refused(mesh: EgressMesh) -> None:
    response = mesh.call("/api/hello")
    assert response.status == 200, response.body
    received = response.upstream_headers()
    captured = {
        "workload-identity-token": received["workload-identity-token"],
        "authorization": received["authorization"],
    }
    replayed = mesh.call_callee_directly("/api/hello", captured)
    assert replayed.status == 401, replayed.body
    assert replayed.headers["x-wimse-authz-reason"] == "wpt.replayed"


def test_a_call_the_egress_policy_forbids_is_403_at_the_callers_side(mesh: EgressMesh) -> None:
    before = mesh.ingress_checks()
    response = mesh.call("/api/hello", method="DELETE")
    assert response.status == 403, response.body
    assert response.headers["x-wimse-authz-reason"] == "policy.denied"
    assert mesh.ingress_checks() == before, "the callee never saw the request"


def test_a_rewrite_route_sends_a_wpt_for_the_rewritten_path(mesh: EgressMesh) -> None:
    response = mesh.call("/echo/hello")
    assert response.status == 200, response.body
    assert response.json()["path"] == "/api/hello"
    assert claims(response.upstream_headers()["authorization"][4:])["aud"].endswith("/api/hello")


def test_an_http_signature_callee_gets_a_signed_request_with_its_body(mesh: EgressMesh) -> None:
    body = b'{"order": "o-1", "amount": 250}'
    response = mesh.call(
        "/signed/orders", {"content-type": "application/json"}, method="POST", body=body
    )
    assert response.status == 200, response.body
    received = response.upstream_headers()
    assert received["x-wimse-authenticated-by"] == "http_signature"
    assert received["content-digest"].startswith("sha-256=:")
    assert response.json()["body_bytes"] == len(body)


def test_missing_credential_files_are_503_at_egress(mesh: EgressMesh) -> None:
    before = mesh.ingress_checks()
    response = mesh.call("/api/hello", port=mesh.batch_port)
    assert response.status == 503, response.body
    assert response.headers["x-wimse-authz-reason"] == "outbound.credentials_unavailable"
    assert mesh.ingress_checks() == before


def test_credential_rotation_mid_traffic_loses_no_request(mesh: EgressMesh) -> None:
    statuses: list[int] = []
    wits: set[str] = set()
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            response = mesh.call("/api/hello")
            statuses.append(response.status)
            if response.status == 200:
                wits.add(response.upstream_headers()["workload-identity-token"])

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        time.sleep(0.5)
        new_key = generate_private_jwk("EdDSA", kid="frontend-rotated")
        write_workload_credentials(
            mesh.frontend_files.wit_file.parent, mesh.identities, "frontend", key=new_key
        )
        rotated = current_wit(mesh)
        wait_until(lambda: rotated in wits, timeout=10)
        time.sleep(0.5)
    finally:
        stop.set()
        sender.join()
    assert len(statuses) > 10
    assert set(statuses) == {200}, statuses
    assert len(wits) >= 2


def test_an_outbound_looking_check_on_the_inbound_listener_gets_no_credentials(
    mesh: EgressMesh,
) -> None:
    """Sent straight to the inbound listener, as anyone who reaches it could."""
    for headers in ({}, {"authorization": "Bearer x"}, {"x-user-token": "x"}):
        request = build_check_request(
            host=f"127.0.0.1:{mesh.ingress.envoy}",
            scheme="http",
            path="/api/hello",
            method="GET",
            headers=headers,
            context={
                "wimse.service": "echo",
                "wimse.path_prefix": "/",
                "wimse.prefix_rewrite": "/",
            },
        )
        answer = answer_from_response(
            send_check(request, GatewayAddress(f"127.0.0.1:{mesh.ingress.gateway}"))
        )
        assert not answer.allowed
        names = {name for name, _ in answer.headers}
        assert "workload-identity-token" not in names
        assert "authorization" not in names


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
def test_a_client_on_the_outbound_socket_that_is_not_the_egress_envoy_is_refused(
    mesh: EgressMesh,
) -> None:
    """The socket's directory is closed to others: a process of another user (not in its
    group) cannot even connect. Run as root in CI, the test drops to `nobody` in a child."""
    path = mesh.sockets / "frontend.sock"
    probe = (
        "import os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(path)!r})\n"
        "except PermissionError:\n"
        "    sys.exit(3)\n"
        "sys.exit(0)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], check=False, timeout=30)
    assert result.returncode == 3
    with socket.socket(socket.AF_UNIX) as own:
        own.connect(str(path))  # the egress Envoy's user (here: the test's) may
