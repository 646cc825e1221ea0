"""The caller's side of the local stack: a workload's egress Envoy (`deploy/envoy/egress.yaml`
with its ports and socket rewritten), the gateway's outbound section for it, and the WIT and
key files an issuer such as SPIRE would write for the workload. Shared by `make run`, the
end-to-end tests and the benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz.devtools.mint import mint_wit
from authz.devtools.stack import REPO_ROOT, Identities, envoy_template
from authz.files import replace_file

EGRESS_TEMPLATE = REPO_ROOT / "deploy" / "envoy" / "egress.yaml"
EGRESS_AUTHZ_CLUSTER = "wimse_authz_egress"


@dataclass(frozen=True, slots=True)
class CredentialFiles:
    wit_file: Path
    key_file: Path


def write_workload_credentials(
    directory: Path,
    identities: Identities,
    workload: str,
    *,
    ttl: float = 3600,
    key: Mapping[str, Any] | None = None,
) -> CredentialFiles:
    """`workload`'s WIT (from the demo issuer) and private key as files in `directory`, as
    its issuer writes them: the key first, then the WIT. `key` replaces the demo key."""
    directory.mkdir(parents=True, exist_ok=True)
    private = dict(key if key is not None else identities.workloads[workload])
    files = CredentialFiles(directory / "wit.jwt", directory / "key.jwk.json")
    replace_file(files.key_file, json.dumps(private) + "\n", mode=0o600)
    wit = mint_wit(identities.issuer, identities.workload_id(workload), private, ttl=ttl)
    replace_file(files.wit_file, wit + "\n", mode=0o644)
    return files


def socket_directory(path: Path) -> Path:
    """A directory for outbound sockets, closed to others (the gateway refuses any other)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o750)
    return path


def outbound_section(
    workloads: Mapping[str, tuple[str, CredentialFiles]],
    callees: Mapping[str, Mapping[str, Any]],
    *,
    poll_seconds: float = 1.0,
) -> dict[str, Any]:
    """The gateway's `outbound` section: name → (workload id, its credential files)."""
    return {
        "workloads": {
            name: {
                "id": workload_id,
                "credentials": {
                    "wit_file": str(files.wit_file),
                    "key_file": str(files.key_file),
                    "poll_seconds": poll_seconds,
                },
            }
            for name, (workload_id, files) in workloads.items()
        },
        "callees": {name: dict(callee) for name, callee in callees.items()},
    }


def outbound_listener(socket_path: Path, workload: str) -> dict[str, Any]:
    return {"address": f"unix:{socket_path}", "mode": "outbound", "workload": workload}


def egress_envoy_config(
    *, listener_port: int, admin_port: int, gateway_socket: Path, callee_port: int
) -> dict[str, Any]:
    """`deploy/envoy/egress.yaml` listening on `listener_port`, asking the outbound listener
    at `gateway_socket`, sending to the callee's Envoy on 127.0.0.1:`callee_port`."""
    config = envoy_template(EGRESS_TEMPLATE, listener_port=listener_port, admin_port=admin_port)
    for cluster in config["static_resources"]["clusters"]:
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        if cluster["name"] == EGRESS_AUTHZ_CLUSTER:
            endpoint["address"] = {"pipe": {"path": str(gateway_socket)}}
        else:
            endpoint["address"]["socket_address"]["port_value"] = callee_port
    return config
