"""`wimse-authz demo` (what `make run` starts): gateway + Envoy + echo upstream, and a
caller: the frontend app, which calls the echo service through its own egress Envoy.

On first run it creates a demo trust domain under `.demo/` (issuer key, workload keys);
each run mints fresh tokens and prints one request the sample policy allows and one it
denies. The frontend app holds no key and has no WIMSE code: the gateway's outbound
listener attaches the frontend's WIT (written to `.demo/credentials/frontend`, as SPIRE
would, and rewritten every 20 minutes) and a fresh WPT to every request it sends.
Ctrl-C stops the Envoys, then the gateway (which drains), then the apps.
"""

from __future__ import annotations

import shlex
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from authz.devtools.caller_app import CallerApp
from authz.devtools.egress import (
    CredentialFiles,
    egress_envoy_config,
    outbound_listener,
    outbound_section,
    socket_directory,
    write_workload_credentials,
)
from authz.devtools.mint import ear_claims, mint_ear, mint_wit, mint_wpt
from authz.devtools.stack import (
    ATTESTATION_HEADER,
    POLICY_DIR,
    Identities,
    ManagedProcess,
    Ports,
    checkout_txn_token,
    ensure_identities,
    envoy_config,
    envoy_process,
    gateway_config,
    gateway_process,
    wait_for_http,
    write_yaml,
)
from authz.devtools.tts import access_token, edge_envoy_config, tts_section
from authz.devtools.upstream import EchoServer
from authz.server.endpoints import refuse_listening_port

WPT_TTL = 290  # the gateway's default WPT limit is 300 s
CREDENTIAL_TTL = 3600
CREDENTIAL_REFRESH = 1200  # as an issuer would: well before the WIT expires


def _curl(origin: str, path: str, headers: dict[str, str]) -> str:
    options = [f"-H {shlex.quote(f'{name}: {value}')}" for name, value in headers.items()]
    return " \\\n    ".join([f"curl -si {shlex.quote(origin + path)}", *options])


def _signed_request(
    identities: Identities,
    ports: Ports,
    workload: str,
    path: str,
    context: dict[str, str] | None = None,
) -> str:
    """A curl for `workload` calling `path` with a fresh WIT and WPT; `context` headers
    (a Txn-Token, an attestation result) are sent too, bound by the WPT."""
    key = identities.workloads[workload]
    wit = mint_wit(identities.issuer, identities.workload_id(workload), key, ttl=3600)
    context = dict(context or {})
    txn = context.pop("Txn-Token", None)
    wpt = mint_wpt(
        key,
        wit,
        ports.origin + path,
        ttl=WPT_TTL,
        txn_token=txn,
        other_tokens={name.lower(): value for name, value in context.items()} or None,
    )
    headers = {"Workload-Identity-Token": wit, "Authorization": f"WPT {wpt}"}
    if txn is not None:
        headers["Txn-Token"] = txn
    return _curl(ports.origin, path, headers | context)


def _context_example(identities: Identities, ports: Ports) -> str:
    """A request carrying a Txn-Token (bound by tth) and an attestation result (bound by
    oth), as a checkout that entered at the frontend would."""
    txn = checkout_txn_token(identities, ttl=590)  # txn_token.max_lifetime_seconds: 600
    claims = ear_claims(
        {"platform": ("affirming", {"hardware": 2, "instance-identity": 2})},
        subject=identities.workload_id("frontend"),
    )
    ear = mint_ear(identities.attestation_verifier, claims)
    return _signed_request(
        identities,
        ports,
        "frontend",
        "/api/hello",
        {"Txn-Token": txn, ATTESTATION_HEADER: ear},
    )


def _print_banner(
    directory: Path,
    ports: Ports,
    identities: Identities,
    diagnostics_port: int,
    *,
    app_port: int,
    edge_port: int,
    policy_dir: Path,
) -> None:
    user = access_token(identities, scope="checkout read", ttl=3600)
    edge = f"http://127.0.0.1:{edge_port}"
    frontend = identities.workload_id("frontend")
    app = f"http://127.0.0.1:{app_port}"
    print(
        f"""
wimse-authz demo is running
  Envoy     {ports.origin}  (admin http://127.0.0.1:{ports.admin})
  gateway   127.0.0.1:{ports.gateway}  config {directory / "gateway.yaml"}
  policies  {policy_dir}
  upstream  http://127.0.0.1:{ports.upstream}  (echoes the request it receives)
  metrics   http://127.0.0.1:{diagnostics_port}/metrics  (and /healthz, /readyz)
  logs      {directory / "logs"}  (decisions.jsonl: one line per decision)

Edit a policy under {policy_dir}: the gateway validates and reloads it without a restart
(a broken one is refused and the last good one keeps serving).

ALLOWED: {frontend} calls GET /api/hello with a fresh WIT + WPT
  (the echo shows x-wimse-caller set by the gateway and the WPT stripped):

{_signed_request(identities, ports, "frontend", "/api/hello")}

DENIED (403, x-wimse-authz-reason: policy.denied): the same workload calls GET /admin/users:

{_signed_request(identities, ports, "frontend", "/admin/users")}

OUTBOUND: the frontend app ({app}, plain HTTP, no key, no WIMSE code) calls the echo
service through its egress Envoy; the gateway's outbound listener attaches the frontend's
WIT and a fresh WPT on the way out (docs/outbound.md):

curl -s {app}/api/hello            # the echo shows x-wimse-caller: {frontend}
curl -s {app}/echo/hello           # a rewrite route: the WPT names /api/hello, the path sent
curl -si -X DELETE {app}/api/hello # 403 at the caller's side: the egress policy grants GET, POST

EDGE: a user's access token at the edge (the frontend's public Envoy, {edge}) becomes the
Txn-Token the next hop checks (docs/tts.md); the echo shows txn-token, and no Authorization:

curl -s -X POST {edge}/api/orders -H 'content-type: application/json' -d '{{"amount": 250}}' \\
    -H {shlex.quote("Authorization: Bearer " + user)}

CONTEXT: the same call with a Txn-Token (header Txn-Token, bound by the WPT's tth) and an
attestation result (header {ATTESTATION_HEADER}, bound by its oth); policies read them as
input.wimse.txn and input.wimse.attestation:

{_context_example(identities, ports)}

Each WPT works once and for {WPT_TTL} s. A check straight to the gateway, minting its own:

.venv/bin/wimse-authz check --gateway 127.0.0.1:{ports.gateway} --url {ports.origin}/api/hello \\
    --issuer-key {directory}/keys/issuer.jwk.json --sub {frontend} \\
    --workload-key {directory}/keys/frontend.jwk.json

Press Ctrl-C to stop.""",
        flush=True,
    )


def _port_in_use(flags: dict[str, tuple[int, ...]]) -> str | None:
    """Which flag names a port something already listens on (checked before anything
    starts: a port found taken by Envoy would only show as the demo not coming up)."""
    for flag, ports in flags.items():
        for port in ports:
            try:
                refuse_listening_port(f"127.0.0.1:{port}")
            except OSError:
                what = "its port" if port == ports[0] else f"port {port} (the port after it)"
                return f"{flag} {ports[0]}: {what} is in use; choose another with {flag}"
    return None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _write_frontend_credentials(directory: Path, identities: Identities) -> CredentialFiles:
    """The frontend's WIT and key, where its outbound listener reads them."""
    return write_workload_credentials(
        directory / "credentials" / "frontend", identities, "frontend", ttl=CREDENTIAL_TTL
    )


@dataclass(frozen=True, slots=True)
class DemoFiles:
    """What `write_demo_files` wrote: the demo trust domain's keys and each process's
    configuration."""

    identities: Identities
    gateway: Path
    envoy: Path
    egress: Path
    edge: Path


def write_demo_files(
    directory: Path,
    ports: Ports,
    *,
    diagnostics_port: int,
    egress_port: int,
    edge_port: int,
    policy_dir: Path = POLICY_DIR,
) -> DemoFiles:
    """The demo's keys (kept from an earlier run), the frontend's credential files, and
    the configurations of the gateway (`gateway.yaml`: ingress, the frontend's outbound
    listener, the edge listener), the ingress, egress and edge Envoys, under `directory`.
    Nothing is started."""
    identities = ensure_identities(directory)
    egress_socket = socket_directory(directory / "egress") / "frontend.sock"
    edge_socket = socket_directory(directory / "edge") / "edge.sock"
    credentials = _write_frontend_credentials(directory, identities)
    operations = {
        "server": {
            "listeners": [
                {"address": f"127.0.0.1:{ports.gateway}"},
                outbound_listener(egress_socket, "frontend"),
                {"address": f"unix:{edge_socket}", "mode": "edge"},
            ]
        },
        "outbound": outbound_section(
            {"frontend": (identities.workload_id("frontend"), credentials)},
            # The edge's first hop is the same echo service, named as edge.yaml names it.
            {"echo": {"origin": ports.origin}, "orders": {"origin": ports.origin}},
        ),
        "tts": tts_section(directory, endpoint=False),
        "diagnostics": {"address": f"127.0.0.1:{diagnostics_port}"},
        "decision_log": {"output": str(directory / "logs" / "decisions.jsonl")},
    }
    gateway_yaml = write_yaml(
        directory / "gateway.yaml",
        gateway_config(directory, ports, policy_dir=policy_dir.resolve(), overrides=operations),
    )
    envoy_yaml = write_yaml(directory / "envoy.yaml", envoy_config(ports))
    egress_yaml = write_yaml(
        directory / "egress.yaml",
        egress_envoy_config(
            listener_port=egress_port,
            admin_port=egress_port + 1,
            gateway_socket=egress_socket,
            callee_port=ports.envoy,
        ),
    )

    edge_yaml = write_yaml(
        directory / "edge.yaml",
        edge_envoy_config(
            listener_port=edge_port,
            admin_port=edge_port + 1,
            edge_socket=edge_socket,
            egress_socket=egress_socket,
            first_hop_port=ports.envoy,
        ),
    )
    return DemoFiles(identities, gateway_yaml, envoy_yaml, egress_yaml, edge_yaml)


def run_demo(
    directory: Path,
    envoy_port: int,
    gateway_port: int,
    upstream_port: int,
    diagnostics_port: int,
    *,
    egress_port: int = 15001,
    app_port: int = 8082,
    edge_port: int = 8443,
    policy_dir: Path = POLICY_DIR,
) -> int:
    # SIGTERM (or a closed terminal) stops the demo as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    directory = directory.resolve()
    taken = _port_in_use(
        {
            "--envoy-port": (envoy_port, envoy_port + 1),
            "--gateway-port": (gateway_port,),
            "--upstream-port": (upstream_port,),
            "--diagnostics-port": (diagnostics_port,),
            "--egress-port": (egress_port, egress_port + 1),
            "--app-port": (app_port,),
            "--edge-port": (edge_port, edge_port + 1),
        }
    )
    if taken is not None:
        print(f"wimse-authz demo: {taken}")
        return 2
    ports = Ports(
        envoy=envoy_port, admin=envoy_port + 1, gateway=gateway_port, upstream=upstream_port
    )
    files = write_demo_files(
        directory,
        ports,
        diagnostics_port=diagnostics_port,
        egress_port=egress_port,
        edge_port=edge_port,
        policy_dir=policy_dir,
    )
    identities = files.identities
    upstream = EchoServer("127.0.0.1", ports.upstream).start()
    app = CallerApp("127.0.0.1", app_port, egress_port).start()
    processes: list[ManagedProcess] = []
    logs = directory / "logs"
    try:
        processes.append(gateway_process(files.gateway, logs / "gateway.log").start())
        processes.append(envoy_process(files.envoy, logs / "envoy.log").start())
        processes.append(envoy_process(files.egress, logs / "egress-envoy.log").start())
        processes.append(envoy_process(files.edge, logs / "edge-envoy.log").start())
        return _serve_until_interrupted(
            directory,
            ports,
            identities,
            processes,
            diagnostics_port,
            app_port=app_port,
            edge_port=edge_port,
            policy_dir=policy_dir.resolve(),
        )
    except KeyboardInterrupt:
        print("\nstopping: the Envoys, then the gateway (draining), then the apps")
        return 0
    finally:
        for process in reversed(processes):
            process.stop()
        app.stop()
        upstream.stop()


def _serve_until_interrupted(
    directory: Path,
    ports: Ports,
    identities: Identities,
    processes: list[ManagedProcess],
    diagnostics_port: int,
    *,
    app_port: int,
    edge_port: int,
    policy_dir: Path,
) -> int:
    try:
        wait_for_http(f"{ports.origin}/healthz", timeout=30)
        wait_for_http(f"http://127.0.0.1:{app_port}/api/hello", timeout=30)
    except TimeoutError as exc:
        print(f"demo did not come up: {exc}")
        for process in processes:
            print(f"--- {process.name} ({process.log_path}) ---\n{process.log_tail()}")
        return 1
    _print_banner(
        directory,
        ports,
        identities,
        diagnostics_port,
        app_port=app_port,
        edge_port=edge_port,
        policy_dir=policy_dir,
    )
    rewritten = time.monotonic()
    while all(process.running() for process in processes):
        time.sleep(0.5)
        if time.monotonic() - rewritten > CREDENTIAL_REFRESH:
            # What SPIRE does for a workload: a new WIT well before the old one expires.
            _write_frontend_credentials(directory, identities)
            rewritten = time.monotonic()
    for process in processes:
        if not process.running():
            print(f"{process.name} exited unexpectedly; see {process.log_path}")
    return 1
