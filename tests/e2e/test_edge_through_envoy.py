"""The three-hop transaction, starting at the edge, through real Envoys only:

user ──access token──► edge Envoy (frontend) ──► orders' Envoy ──► orders app
                         wimse.edge: Txn-Token      inbound            │ (no key, no token code)
                         wimse.egress: WIT + WPT                        ▼
                                          payments' Envoy ◄── orders' egress Envoy
                                             inbound              outbound: WIT + WPT
                                                ▼
                                          payments app (echo)

Two gateway processes, as two deployments would have them: the edge's (edge and outbound
listeners for the frontend, and the Transaction Token Service's endpoint over TLS) and the
mesh's (inbound for orders and payments, outbound for orders), whose Txn-Token keys come
from the TTS's published JWKS by URL. The sample policies, with one change: orders' POST
rule asks for no end-user token, since the edge keeps the user's token at the edge.
"""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.credentials.jose import b64url_decode
from authz.devtools.certs import CertificateAuthority, write_pem
from authz.devtools.egress import (
    egress_envoy_config,
    outbound_listener,
    outbound_section,
    socket_directory,
    write_workload_credentials,
)
from authz.devtools.keys import generate_private_jwk
from authz.devtools.mint import mint_user_token, mint_wit, mint_wpt
from authz.devtools.stack import (
    POLICY_DIR,
    Identities,
    ManagedProcess,
    Ports,
    envoy_process,
    free_port,
    gateway_config,
    gateway_process,
    wait_for_http,
    write_yaml,
)
from authz.devtools.tts import TTS_URL, access_token, edge_envoy_config, tts_section
from authz.devtools.upstream import EchoServer
from authz.tts.exchange import GRANT_TYPE, TXN_TOKEN_TYPE
from tests.e2e.stack import Response, wait_for_gateway, wait_until
from tests.e2e.test_three_hops import sidecar_config

pytestmark = pytest.mark.e2e

FRONTEND = "spiffe://demo.example/frontend"
ORDERS = "spiffe://demo.example/orders"


class _OrdersApp(ThreadingHTTPServer):
    """orders: on any request, POSTs a payment through its egress Envoy with the Txn-Token
    it received, and answers with what it received and what payments answered."""

    def __init__(self, egress_port: int) -> None:
        super().__init__(("127.0.0.1", 0), _OrdersHandler)
        self.egress_port = egress_port
        self.daemon_threads = True


class _OrdersHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        server: _OrdersApp = self.server  # type: ignore[assignment]
        length = int(self.headers.get("content-length") or 0)
        order = json.loads(self.rfile.read(length) or b"{}")
        received = {name.lower(): value for name, value in self.headers.items()}
        headers = {"content-type": "application/json"}
        if "txn-token" in received:
            headers["txn-token"] = received["txn-token"]
        egress = http.client.HTTPConnection("127.0.0.1", server.egress_port, timeout=10)
        try:
            body = json.dumps({"amount": order.get("amount", 0)})
            egress.request("POST", "/api/payments", body=body, headers=headers)
            answer = egress.getresponse()
            payments = {"status": answer.status, "body": answer.read().decode()}
        finally:
            egress.close()
        payload = json.dumps({"received": received, "payments": payments}).encode()
        self.send_response(answer.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@dataclass
class Edge:
    identities: Identities
    edge_port: int
    tts_port: int
    ca: CertificateAuthority
    payments: Ports
    edge_config_path: Path
    mesh_decisions: Path
    processes: list[ManagedProcess]
    servers: list[Any]

    def checkout(self, token: str | None, amount: int = 250, path: str = "/api/orders") -> Response:
        headers = {"content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        connection = http.client.HTTPConnection("127.0.0.1", self.edge_port, timeout=10)
        try:
            connection.request("POST", path, body=json.dumps({"amount": amount}), headers=headers)
            answer = connection.getresponse()
            return Response(
                answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
            )
        finally:
            connection.close()

    def exchange(self, form: Mapping[str, str], workload: str) -> dict[str, Any]:
        """A Txn-Token Request to the TTS endpoint, as `workload` (WIT + WPT)."""
        key = self.identities.workloads[workload]
        wit = mint_wit(self.identities.issuer, self.identities.workload_id(workload), key)
        wpt = mint_wpt(key, wit, TTS_URL)
        context = ssl.create_default_context(cafile=None, cadata=self.ca.cert_pem.decode())
        connection = http.client.HTTPSConnection(
            "localhost", self.tts_port, timeout=10, context=context
        )
        try:
            connection.request(
                "POST",
                "/token",
                body=urllib.parse.urlencode(form),
                headers={
                    "content-type": "application/x-www-form-urlencoded",
                    "workload-identity-token": wit,
                    "authorization": f"WPT {wpt}",
                },
            )
            answer = connection.getresponse()
            document: dict[str, Any] = json.loads(answer.read())
            return document
        finally:
            connection.close()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        for server in self.servers:
            server.shutdown()
            server.server_close()


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(b64url_decode(token.split(".")[1]))
    return decoded


def mesh_policies(directory: Path) -> Path:
    """The sample policies; orders' checkout rule without its end-user token requirement."""
    shutil.copytree(POLICY_DIR, directory)
    data_file = directory / "mesh" / "data.json"
    data = json.loads(data_file.read_text())
    for rule in data["services"]["orders"]["routes"]:
        rule.pop("user", None)
    data_file.write_text(json.dumps(data, indent=2))
    # Its tests pin the rule as shipped.
    (directory / "envoy" / "authz_test.rego").unlink()
    return directory


@pytest.fixture(scope="module")
def edge(
    tmp_path_factory: pytest.TempPathFactory, identity_dir: Path, identities: Identities
) -> Iterator[Edge]:
    directory = tmp_path_factory.mktemp("edge")
    sockets = socket_directory(directory / "sockets")
    ca = CertificateAuthority.create("tts test ca")
    tts_cert = ca.issue("tts", dns_names=["localhost"])
    write_pem(directory / "ca.pem", ca.cert_pem)
    write_pem(directory / "tts.pem", tts_cert.chain_pem)
    write_pem(directory / "tts-key.pem", tts_cert.key_pem)
    shutil.copy(identity_dir / "keys" / "tts.jwk.json", directory / "tts-key.jwk.json")

    orders, payments = Ports.free(), Ports.free()
    edge_port, edge_admin, tts_port = free_port(), free_port(), free_port()
    egress_port, egress_admin, mesh_port = free_port(), free_port(), free_port()
    payments = Ports(payments.envoy, payments.admin, mesh_port, payments.upstream)

    # The edge's gateway: edge + outbound (frontend) + the TTS endpoint over TLS.
    frontend_files = write_workload_credentials(directory / "frontend", identities, "frontend")
    tts = tts_section(identity_dir)
    tts["signing"]["key_file"] = str(directory / "tts-key.jwk.json")
    edge_config = gateway_config(
        identity_dir,
        orders,
        overrides={
            "server": {
                "listeners": [
                    {"address": f"unix:{sockets}/edge.sock", "mode": "edge"},
                    outbound_listener(sockets / "frontend.sock", "frontend"),
                    {
                        "address": f"127.0.0.1:{tts_port}",
                        "mode": "tts",
                        "tls": {
                            "cert_file": str(directory / "tts.pem"),
                            "key_file": str(directory / "tts-key.pem"),
                        },
                    },
                ]
            },
            "outbound": outbound_section(
                {"frontend": (FRONTEND, frontend_files)}, {"orders": {"origin": orders.origin}}
            ),
            "tts": tts,
            "policy": {"reload": {"poll_seconds": 0.2}},
        },
    )
    edge_config_path = write_yaml(directory / "edge-gateway.yaml", edge_config)

    # The mesh's gateway: inbound for orders and payments, outbound for orders; Txn-Token
    # keys from the TTS's JWKS by URL, refreshed every second.
    orders_files = write_workload_credentials(directory / "orders", identities, "orders")
    services = {
        name: {"id": identities.workload_id(name), "origins": [ports.origin]}
        for name, ports in (("orders", orders), ("payments", payments))
    }
    mesh_config = gateway_config(
        identity_dir,
        payments,
        policy_dir=mesh_policies(directory / "policies"),
        overrides={
            "server": {
                "listeners": [
                    {"address": f"127.0.0.1:{mesh_port}"},
                    outbound_listener(sockets / "orders.sock", "orders"),
                ]
            },
            "outbound": outbound_section(
                {"orders": (ORDERS, orders_files)}, {"payments": {"origin": payments.origin}}
            ),
            "decision_log": {"output": str(directory / "mesh-decisions.jsonl")},
        },
    )
    mesh_config["services"] = services
    mesh_config["default_service"] = None
    mesh_config["trust_domains"]["demo.example"]["txn_token_service"] = {
        "algorithms": ["ES256"],
        "jwks_url": f"https://localhost:{tts_port}/.well-known/jwks.json",
        "fetch": {
            "ca_file": str(directory / "ca.pem"),
            "refresh_seconds": 1,
            "min_refresh_interval_seconds": 1,
        },
    }

    echo = EchoServer("127.0.0.1", payments.upstream).start()
    orders_app = _OrdersApp(egress_port)
    threading.Thread(target=orders_app.serve_forever, daemon=True).start()
    orders = Ports(orders.envoy, orders.admin, mesh_port, orders_app.server_address[1])
    processes: list[ManagedProcess] = []
    setup = Edge(
        identities,
        edge_port,
        tts_port,
        ca,
        payments,
        edge_config_path,
        directory / "mesh-decisions.jsonl",
        processes,
        [orders_app],
    )
    try:
        processes.append(gateway_process(edge_config_path, directory / "edge-gateway.log").start())
        wait_for_gateway(f"unix:{sockets}/edge.sock", timeout=30)
        mesh_path = write_yaml(directory / "mesh-gateway.yaml", mesh_config)
        processes.append(gateway_process(mesh_path, directory / "mesh-gateway.log").start())
        wait_for_gateway(f"127.0.0.1:{mesh_port}", timeout=30)
        envoys = {
            "edge": edge_envoy_config(
                listener_port=edge_port,
                admin_port=edge_admin,
                edge_socket=sockets / "edge.sock",
                egress_socket=sockets / "frontend.sock",
                first_hop_port=orders.envoy,
            ),
            "orders": sidecar_config(orders, "orders"),
            "orders-egress": payments_egress(egress_port, egress_admin, sockets, payments.envoy),
            "payments": sidecar_config(payments, "payments"),
        }
        for name, config in envoys.items():
            path = write_yaml(directory / f"envoy-{name}.yaml", config)
            processes.append(envoy_process(path, directory / f"envoy-{name}.log").start())
        wait_for_http(f"{payments.origin}/healthz", timeout=30)
        user = access_token(identities)
        wait_until(lambda: setup.checkout(user).status == 200, timeout=30)
    except (TimeoutError, OSError, AssertionError) as exc:
        logs = "\n".join(f"--- {p.name} {p.log_path} ---\n{p.log_tail(30)}" for p in processes)
        setup.stop()
        echo.stop()
        raise RuntimeError(f"the edge mesh did not come up: {exc}\n{logs}") from None
    yield setup
    setup.stop()
    echo.stop()


def payments_egress(port: int, admin: int, sockets: Path, payments_port: int) -> dict[str, Any]:
    config = egress_envoy_config(
        listener_port=port,
        admin_port=admin,
        gateway_socket=sockets / "orders.sock",
        callee_port=payments_port,
    )
    text = json.dumps(config).replace('"wimse.service": "echo"', '"wimse.service": "payments"')
    document: dict[str, Any] = json.loads(text)
    return document


def test_a_users_access_token_becomes_the_txn_token_every_hop_checks(edge: Edge) -> None:
    user = access_token(edge.identities)
    response = edge.checkout(user, amount=250)
    assert response.status == 200, response.body
    answer = response.json()
    at_orders = answer["received"]
    assert at_orders["x-wimse-caller"] == FRONTEND
    txn = claims(at_orders["txn-token"])
    assert (txn["sub"], txn["scope"], txn["req_wl"]) == ("user-4711", "checkout", FRONTEND)
    assert txn["tctx"] == {"action": "checkout", "amount": 250}
    assert txn["rctx"]["req_ip"] == "127.0.0.1"
    at_payments = json.loads(answer["payments"]["body"])["headers"]
    assert at_payments["x-wimse-caller"] == ORDERS
    assert at_payments["txn-token"] == at_orders["txn-token"], "one token, every hop"
    # The external token never leaves the edge.
    everything = json.dumps(answer)
    assert user not in everything
    assert user.split(".")[2] not in everything


def test_the_downstream_policy_reads_the_transaction_the_edge_started(edge: Edge) -> None:
    response = edge.checkout(access_token(edge.identities), amount=5000)
    assert response.status == 403, response.body
    payments = response.json()["payments"]
    assert json.loads(payments["body"])["reason"] == "policy.denied"


@pytest.mark.parametrize(
    ("token", "status", "challenge_or_reason"),
    [
        ("another-audience", 401, 'Bearer error="invalid_token"'),
        ("unknown-issuer", 401, 'Bearer error="invalid_token"'),
        ("none", 401, "Bearer"),
        ("read-only", 403, "issuance.scope_too_wide"),
    ],
)
def test_the_edge_refuses_what_it_cannot_turn_into_a_txn_token(
    edge: Edge, token: str, status: int, challenge_or_reason: str
) -> None:
    tokens = {
        "another-audience": access_token(edge.identities, audience="https://other.example"),
        "unknown-issuer": mint_user_token(
            generate_private_jwk("ES256"),
            issuer="https://idp.evil.example",
            subject="user-4711",
            audience="https://api.demo.example",
            scope="checkout",
        ),
        "none": None,
        "read-only": access_token(edge.identities, scope="read"),
    }
    response = edge.checkout(tokens[token])
    assert response.status == status, response.body
    if status == 401:
        assert response.headers["www-authenticate"] == challenge_or_reason
    else:
        assert response.headers["x-wimse-authz-reason"] == challenge_or_reason


def test_a_replacement_keeps_txn_and_shows_the_requester_as_actor_downstream(edge: Edge) -> None:
    first = edge.checkout(access_token(edge.identities))
    original = first.json()["received"]["txn-token"]
    answer = edge.exchange(
        {
            "grant_type": GRANT_TYPE,
            "requested_token_type": TXN_TOKEN_TYPE,
            "audience": "demo.example",
            "scope": "checkout",
            "subject_token": original,
            "subject_token_type": TXN_TOKEN_TYPE,
        },
        "orders",
    )
    replacement = answer["access_token"]
    assert claims(replacement)["txn"] == claims(original)["txn"]
    assert claims(replacement)["act"] == {"sub": ORDERS}
    # orders presents the replacement to payments itself (its WIT, a WPT binding it).
    key = edge.identities.workloads["orders"]
    wit = mint_wit(edge.identities.issuer, ORDERS, key)
    wpt = mint_wpt(key, wit, f"{edge.payments.origin}/api/payments", txn_token=replacement)
    connection = http.client.HTTPConnection("127.0.0.1", edge.payments.envoy, timeout=10)
    try:
        connection.request(
            "POST",
            "/api/payments",
            body=json.dumps({"amount": 250}),
            headers={
                "content-type": "application/json",
                "workload-identity-token": wit,
                "authorization": f"WPT {wpt}",
                "txn-token": replacement,
            },
        )
        response = connection.getresponse()
        status, body = response.status, response.read()
    finally:
        connection.close()
    assert status == 200, body
    txn_id = claims(replacement)["txn"]

    def logged_chain() -> list[str] | None:
        for line in edge.mesh_decisions.read_text().splitlines():
            record = json.loads(line)
            txn = record.get("txn") or {}
            if (
                txn.get("id") == txn_id
                and record["caller"]["id"] == ORDERS
                and record["service"] == "payments"
                and ORDERS in record["chain"][:-1]
            ):
                chain: list[str] = record["chain"]
                return chain
        return None

    wait_until(lambda: logged_chain() is not None, timeout=10)
    assert logged_chain() == [FRONTEND, ORDERS, ORDERS], "origin, actor, immediate caller"


def test_the_tts_key_rotates_mid_traffic_without_a_failed_request(
    edge: Edge, tmp_path: Path
) -> None:
    statuses: list[int] = []
    kids: set[str] = set()
    stop = threading.Event()
    user = access_token(edge.identities, ttl=600)

    def traffic() -> None:
        while not stop.is_set():
            response = edge.checkout(user)
            statuses.append(response.status)
            if response.status == 200:
                token = response.json()["received"]["txn-token"]
                header = json.loads(b64url_decode(token.split(".")[0]))
                kids.add(header["kid"])

    config = yaml.safe_load(edge.edge_config_path.read_text())
    signing = config["tts"]["signing"]
    old_key = signing["key_file"]
    new_key = generate_private_jwk("ES256", kid="tts-rotated")
    new_path = edge.edge_config_path.parent / "tts-next.jwk.json"
    new_path.write_text(json.dumps(new_key))
    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        time.sleep(0.5)
        # 1. Publish the next key; verifiers refresh their copy (every second here).
        signing["next_key_file"] = str(new_path)
        write_yaml(edge.edge_config_path, config)
        time.sleep(3)
        # 2. Sign with it; the old key stays published until its tokens have expired.
        signing["key_file"], signing["next_key_file"] = str(new_path), None
        signing["retired_key_files"] = [old_key]
        write_yaml(edge.edge_config_path, config)
        wait_until(lambda: "tts-rotated" in kids, timeout=15)
        time.sleep(0.5)
    finally:
        stop.set()
        sender.join()
    assert len(statuses) > 10
    assert set(statuses) == {200}, statuses
    assert len(kids) == 2
