"""Do grpc.aio and pyvoy answer the same CheckRequests identically? A differential run.

Starts the gateway twice from the same configuration (same keys, policies, settings; own
ports, own replay caches): once as `wimse-authz serve` (grpc.aio), once through
`serve.py` (pyvoy inside Envoy 1.39.3). Sends every request of a corpus to both over
real gRPC (grpcio client, HTTP/2) and compares the answers field by field: the gRPC
status, and the whole CheckResponse (status, headers to set and remove, denial status,
headers and body, dynamic metadata). Decision ids, random by design, are replaced by a
placeholder before comparing. Prints one line per case; exit status 0 when every answer
is identical, 1 otherwise.

    .venv/bin/python bench/transport/equivalence.py
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from google.protobuf import text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.devtools import stack
from authz.devtools.check import build_check_request
from authz.devtools.httpsig import sign_request
from authz.devtools.mint import mint_wit, mint_wpt

REPO = stack.REPO_ROOT
PYVOY_PYTHON = REPO / ".venv-pyvoy" / "bin" / "python"
SERVE = REPO / "bench" / "transport" / "serve.py"
DECISION_ID = re.compile(r"\b[0-9a-f]{32}\b")


@dataclass(frozen=True, slots=True)
class Answer:
    code: grpc.StatusCode
    details: str
    response: str
    summary: str = ""

    def show(self) -> str:
        if self.code != grpc.StatusCode.OK:
            return f"gRPC {self.code.name} {self.details}"
        return self.summary


def ask(stub: external_auth_pb2_grpc.AuthorizationStub, request: CheckRequest) -> Answer:
    try:
        response = stub.Check(request, timeout=5)
    except grpc.RpcError as error:
        return Answer(error.code(), error.details() or "", "")
    text = text_format.MessageToString(response, as_utf8=True)
    reason = response.dynamic_metadata.fields["reason"].string_value
    if response.status.code == 0:
        summary = f"allowed ({reason})"
    else:
        summary = f"denied {response.denied_response.status.code} {reason}"
    return Answer(grpc.StatusCode.OK, "", DECISION_ID.sub("<decision-id>", text), summary)


def wait_serving(address: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"{address} never reported SERVING")


class Corpus:
    """Requests as Envoy sends them for the demo stack's routes; fresh proofs each call."""

    def __init__(self, identities: stack.Identities, origin: str) -> None:
        self.identities = identities
        self.origin = origin
        self.host = origin.removeprefix("http://")

    def wit(self, workload: str = "frontend") -> str:
        return mint_wit(
            self.identities.issuer,
            self.identities.workload_id(workload),
            self.identities.workloads[workload],
        )

    def wpt_headers(
        self, path: str, workload: str = "frontend", audience_path: str | None = None, **kw: str
    ) -> dict[str, str]:
        wit = self.wit(workload)
        key = self.identities.workloads[workload]
        wpt = mint_wpt(key, wit, self.origin + (audience_path or path), **kw)  # type: ignore[arg-type]
        return {"workload-identity-token": wit, "authorization": f"WPT {wpt}"}

    def request(
        self,
        path: str,
        headers: dict[str, str] | None = None,
        *,
        method: str = "GET",
        context: dict[str, str] | None = None,
        raw_body: bytes = b"",
    ) -> CheckRequest:
        return build_check_request(
            host=self.host,
            path=path,
            method=method,
            scheme="http",
            headers={":authority": self.host, ":method": method, ":path": path, **(headers or {})},
            raw_body=raw_body,
            context={"wimse.service": "echo", "wimse.body": "forwarded"}
            if context is None
            else context,
            source_address=("127.0.0.1", 50000),
            destination_address=("127.0.0.1", 10000),
            request_id="equivalence",
        )

    def cases(self) -> list[tuple[str, Callable[[], CheckRequest]]]:
        def tampered_wit() -> CheckRequest:
            headers = self.wpt_headers("/api/hello")
            wit = headers["workload-identity-token"]
            headers["workload-identity-token"] = wit[:-4] + (
                "AAAA" if wit[-4:] != "AAAA" else "BBBB"
            )
            return self.request("/api/hello", headers)

        def txn_bound() -> CheckRequest:
            txn = stack.checkout_txn_token(self.identities)
            headers = self.wpt_headers("/api/orders", txn_token=txn)
            return self.request("/api/orders", {**headers, "txn-token": txn}, method="POST")

        def http_signature() -> CheckRequest:
            body = b'{"item": 1}'
            wit = self.wit()
            base = {
                "workload-identity-token": wit,
                "content-type": "application/json",
                "@authority": self.host,
            }
            signed = sign_request(
                self.identities.workloads["frontend"],
                method="POST",
                path="/api/orders",
                audience=self.origin + "/api/orders",
                headers={k: v for k, v in base.items() if not k.startswith("@")},
            )
            base.pop("@authority")
            return self.request("/api/orders", {**base, **signed}, method="POST", raw_body=body)

        return [
            (
                "allowed: frontend GET /api/hello (EdDSA WPT)",
                lambda: self.request("/api/hello", self.wpt_headers("/api/hello")),
            ),
            (
                "allowed: ops GET /api/hello (ES256 WPT)",
                lambda: self.request("/api/hello", self.wpt_headers("/api/hello", "ops")),
            ),
            (
                "policy denial: frontend GET /admin/users",
                lambda: self.request("/admin/users", self.wpt_headers("/admin/users")),
            ),
            ("no credentials on /api/hello", lambda: self.request("/api/hello")),
            ("public path /healthz without credentials", lambda: self.request("/healthz")),
            (
                "WPT for another path",
                lambda: self.request(
                    "/api/hello", self.wpt_headers("/api/hello", audience_path="/api/other")
                ),
            ),
            ("WIT with a broken signature", tampered_wit),
            ("Txn-Token bound by the WPT, POST /api/orders", txn_bound),
            ("HTTP message signature with Content-Digest", http_signature),
            (
                "dry-run route, policy would deny",
                lambda: self.request(
                    "/admin/users",
                    self.wpt_headers("/admin/users"),
                    context={"wimse.service": "echo", "wimse.dry_run": "true"},
                ),
            ),
            (
                "unknown service in context_extensions",
                lambda: self.request(
                    "/api/hello", self.wpt_headers("/api/hello"), context={"wimse.service": "nope"}
                ),
            ),
            (
                "no service in context_extensions",
                lambda: self.request("/api/hello", self.wpt_headers("/api/hello"), context={}),
            ),
            (
                "oversized WIT header",
                lambda: self.request("/api/hello", {"workload-identity-token": "x" * 20_000}),
            ),
            (
                "path that is not canonical",
                lambda: self.request(
                    "/api/../admin/users", self.wpt_headers("/api/../admin/users")
                ),
            ),
        ]


SETTINGS: dict[str, dict[str, object]] = {
    "default settings": {},
    # Our own failures then fail the RPC (UNAVAILABLE) instead of answering a 503.
    "unavailable as_envoy_error": {"responses": {"unavailable": {"as_envoy_error": True}}},
}


def compare(workdir: Path, identities: stack.Identities, overrides: dict[str, object]) -> int:
    """Both servers with one configuration, every case twice; the number of differences."""
    ports = stack.Ports.free()
    aio_port, pyvoy_port = stack.free_port(), stack.free_port()
    processes = []
    for name, port in (("aio", aio_port), ("pyvoy", pyvoy_port)):
        config = stack.gateway_config(
            workdir,
            ports,
            listeners=[f"127.0.0.1:{port}"],
            overrides={"logging": {"level": "warning"}, **overrides},
        )
        path = stack.write_yaml(workdir / f"gateway-{name}-{port}.yaml", config)
        if name == "aio":
            process = stack.gateway_process(path, workdir / f"aio-{port}.log")
        else:
            process = stack.ManagedProcess(
                "pyvoy",
                [str(PYVOY_PYTHON), str(SERVE), "--config", str(path), "--workdir", str(workdir)],
                workdir / f"pyvoy-{port}.log",
            )
        processes.append(process.start())
    failures = 0
    try:
        for port in (aio_port, pyvoy_port):
            wait_serving(f"127.0.0.1:{port}")
        corpus = Corpus(identities, ports.origin)
        with (
            grpc.insecure_channel(f"127.0.0.1:{aio_port}") as aio_channel,
            grpc.insecure_channel(f"127.0.0.1:{pyvoy_port}") as pyvoy_channel,
        ):
            aio = external_auth_pb2_grpc.AuthorizationStub(aio_channel)
            pyvoy = external_auth_pb2_grpc.AuthorizationStub(pyvoy_channel)
            for label, make in corpus.cases():
                request = make()
                # Each case twice: the second is a replay for each server's own cache.
                for attempt in ("first", "again"):
                    a, p = ask(aio, request), ask(pyvoy, request)
                    failures += a != p
                    print(f"{'SAME' if a == p else 'DIFF'}  {label} ({attempt}): {a.show()}")
                    if a != p:
                        print(f"      grpc.aio: {a}\n      pyvoy:    {p}")
    finally:
        for process in processes:
            process.stop()
            if "Traceback" in process.log_tail(20):
                print(f"--- {process.name} log ---\n{process.log_tail(20)}")
    return failures


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="wimse-equivalence-"))
    identities = stack.ensure_identities(workdir)
    failures = 0
    for title, overrides in SETTINGS.items():
        print(f"== {title}")
        failures += compare(workdir, identities, overrides)
    print(f"\n{failures} differing answers")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
