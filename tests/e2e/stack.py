"""A running stack for end-to-end tests: echo upstream, gateway process, real Envoy.

Envoy runs `deploy/envoy/gateway.yaml`, or a variant there (ports and file paths
rewritten); the gateway runs as its own process with the sample policy. Requests go over
real HTTP through Envoy.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.config import worker_address
from authz.devtools.certs import IssuedCertificate, write_pem
from authz.devtools.check import GatewayAddress, open_channel
from authz.devtools.mint import mint_wit, mint_wpt
from authz.devtools.stack import (
    ENVOY_TEMPLATE,
    Identities,
    ManagedProcess,
    Ports,
    checkout_txn_token,
    envoy_config,
    envoy_process,
    free_ports_in_a_row,
    gateway_config,
    gateway_process,
    wait_for_http,
    write_yaml,
)
from authz.devtools.upstream import EchoServer


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def upstream_headers(self) -> Mapping[str, str]:
        """What the echo upstream says it received (only for proxied 200 answers)."""
        headers: Mapping[str, str] = self.json()["headers"]
        return headers


@dataclass
class RunningStack:
    directory: Path
    ports: Ports
    identities: Identities
    upstream: EchoServer
    gateway: ManagedProcess
    envoy: ManagedProcess

    def request(
        self,
        path: str,
        headers: Sequence[tuple[str, str]] | Mapping[str, str] = (),
        *,
        method: str = "GET",
        body: bytes | None = None,
        chunked: bool = False,
    ) -> Response:
        """One HTTP/1.1 request through Envoy; repeated header names are sent repeatedly.
        A `body` goes with its `content-length`, or with `chunked` in chunked encoding."""
        connection = http.client.HTTPConnection("127.0.0.1", self.ports.envoy, timeout=10)
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            items = headers.items() if isinstance(headers, Mapping) else headers
            for name, value in items:
                connection.putheader(name, value)
            if body is not None and chunked:
                connection.putheader("transfer-encoding", "chunked")
            elif body is not None:
                connection.putheader("content-length", str(len(body)))
            connection.endheaders(body, encode_chunked=chunked)
            answer = connection.getresponse()
            return Response(
                answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
            )
        finally:
            connection.close()

    def wit(self, workload: str = "frontend") -> str:
        return mint_wit(
            self.identities.issuer,
            self.identities.workload_id(workload),
            self.identities.workloads[workload],
        )

    def wpt(self, wit: str, path: str, workload: str = "frontend", **kwargs: Any) -> str:
        return mint_wpt(
            self.identities.workloads[workload], wit, self.ports.origin + path, **kwargs
        )

    def txn_token(self, **kwargs: Any) -> str:
        """A Txn-Token from the demo TTS: a checkout started by the frontend, by default."""
        return checkout_txn_token(self.identities, **kwargs)

    def signed(self, path: str, workload: str = "frontend", **kwargs: Any) -> dict[str, str]:
        wit = self.wit(workload)
        audience_path = path.partition("?")[0]
        return {
            "workload-identity-token": wit,
            "authorization": f"WPT {self.wpt(wit, audience_path, workload, **kwargs)}",
        }

    def envoy_stats(self) -> dict[str, int]:
        return ext_authz_stats(self.ports.admin)

    def stop(self) -> None:
        self.envoy.stop()
        self.gateway.stop()
        self.upstream.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail(40)}" for p in (self.gateway, self.envoy))


def ext_authz_stats(admin_port: int) -> dict[str, int]:
    """The ext_authz counters of the Envoy whose admin listener is on `admin_port`."""
    url = f"http://127.0.0.1:{admin_port}/stats?filter=ext_authz"
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    stats: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            stats[name] = int(value)
    return stats


def ext_authz_checks(stats: Mapping[str, int]) -> int:
    """How many requests Envoy asked ext_authz about (whatever the answer)."""
    return sum(stats.get(f"http.ingress.ext_authz.{kind}", 0) for kind in ("ok", "denied", "error"))


def wait_for_gateway(address: str | GatewayAddress, timeout: float) -> None:
    """Until the gateway's gRPC health service reports SERVING; a `GatewayAddress` carries
    TLS settings for a TLS listener."""
    deadline = time.monotonic() + timeout
    gateway = address if isinstance(address, GatewayAddress) else GatewayAddress(address)
    with open_channel(gateway) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"gateway at {gateway.address} never reported SERVING")


def start_stack(
    directory: Path,
    identity_dir: Path,
    identities: Identities,
    *,
    gateway_overrides: Mapping[str, Any] | None = None,
    gateway_listeners: list[str] | None = None,
    envoy_gateway_address: Mapping[str, Any] | None = None,
    envoy_template: Path = ENVOY_TEMPLATE,
    envoy_tls_dir: Path | None = None,
    gateway_tls: Mapping[str, Any] | None = None,
    gateway_client_tls: Mapping[str, Any] | None = None,
    expect_healthz: bool = True,
    gateway_workers: int = 1,
) -> RunningStack:
    """Start upstream, gateway and Envoy; return once all three answer.

    `envoy_template` is one of the files in deploy/envoy; `envoy_tls_dir` holds the
    certificate files it names. `gateway_tls` is the `tls` section of the gateway's first
    listener; `gateway_client_tls` (`GatewayAddress` TLS settings: `ca_file`, `cert_file`,
    `key_file`, `server_name`) then says how to reach it, to wait for it.

    `expect_healthz=False` is for gateway configurations under which the public health
    path cannot be allowed (the test then checks what is answered instead).

    `gateway_workers` above 1 runs `serve --workers N` on consecutive ports from
    `ports.gateway` (with the `gateway-workers.yaml` template, Envoy lists them all).
    """
    ports = Ports.free()
    if gateway_workers > 1:
        first = free_ports_in_a_row(gateway_workers)
        ports = Ports(ports.envoy, ports.admin, first, ports.upstream)
    upstream = EchoServer("127.0.0.1", ports.upstream).start()
    config = gateway_config(
        identity_dir, ports, listeners=gateway_listeners, overrides=gateway_overrides
    )
    if gateway_tls is not None:
        config["server"]["listeners"][0]["tls"] = dict(gateway_tls)
    gateway_yaml = write_yaml(directory / "gateway.yaml", config)
    envoy_yaml = write_yaml(
        directory / "envoy.yaml",
        envoy_config(
            ports,
            template=envoy_template,
            gateway_address=envoy_gateway_address,
            tls_dir=envoy_tls_dir,
        ),
    )
    stack = RunningStack(
        directory,
        ports,
        identities,
        upstream,
        gateway_process(gateway_yaml, directory / "gateway.log", gateway_workers).start(),
        envoy_process(envoy_yaml, directory / "envoy.log").start(),
    )
    gateway_address = (gateway_listeners or [f"127.0.0.1:{ports.gateway}"])[0]
    try:
        for index in range(gateway_workers):
            address = worker_address(gateway_address, index) if gateway_workers > 1 else None
            wait_for_gateway(
                GatewayAddress(address or gateway_address, **(gateway_client_tls or {})), 30
            )
        wait_for_http(f"http://127.0.0.1:{ports.admin}/ready", timeout=30)
        if expect_healthz:
            wait_for_http(f"{ports.origin}/healthz", timeout=30)
    except TimeoutError as exc:
        logs = stack.logs()
        stack.stop()
        raise RuntimeError(f"stack did not come up: {exc}\n{logs}") from None
    return stack


def launch_stack(
    directory: Path,
    ports: Ports,
    identities: Identities,
    upstream: EchoServer,
    gateway: Mapping[str, Any],
    envoy: Mapping[str, Any],
) -> RunningStack:
    """Start a gateway and an Envoy from configurations a test built itself (beside an
    upstream it started); return once the gateway's health service answers and Envoy is
    ready, else stop both and raise with their logs."""
    stack = RunningStack(
        directory,
        ports,
        identities,
        upstream,
        gateway_process(write_yaml(directory / "gateway.yaml", gateway), directory / "gateway.log"),
        envoy_process(write_yaml(directory / "envoy.yaml", envoy), directory / "envoy.log"),
    )
    stack.gateway.start()
    stack.envoy.start()
    try:
        wait_for_gateway(f"127.0.0.1:{ports.gateway}", timeout=30)
        wait_for_http(f"http://127.0.0.1:{ports.admin}/ready", timeout=30)
    except TimeoutError as exc:
        logs = stack.logs()
        stack.stop()
        raise RuntimeError(f"stack did not come up: {exc}\n{logs}") from None
    return stack


def wait_until(condition: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise TimeoutError("condition not met in time")


def downstream_mtls(
    directory: Path, name: str, server: IssuedCertificate, *client_roots: bytes
) -> dict[str, Any]:
    """An Envoy listener's `transport_socket`: TLS with `server` as its certificate, client
    certificates required and validated against `client_roots` (PEM), the files written
    under `directory` as `<name>.pem`, `<name>.key` and `<name>-clients.pem`."""
    chain = write_pem(directory / f"{name}.pem", server.chain_pem)
    key = write_pem(directory / f"{name}.key", server.key_pem)
    roots = write_pem(directory / f"{name}-clients.pem", *client_roots)
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
            "DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(chain)},
                        "private_key": {"filename": str(key)},
                    }
                ],
                "validation_context": {"trusted_ca": {"filename": str(roots)}},
            },
        },
    }
