"""The Transaction Token Service of the local stack: the demo trust domain's TTS key signs,
the demo identity provider's access tokens are exchanged, and the frontend is the edge.
Shared by the end-to-end tests, the in-process tests and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from authz.devtools.mint import mint_user_token
from authz.devtools.stack import (
    REPO_ROOT,
    TRUST_DOMAIN,
    USER_TOKEN_AUDIENCE,
    USER_TOKEN_ISSUER,
    Identities,
    envoy_template,
)

EDGE_WORKLOAD = f"spiffe://{TRUST_DOMAIN}/frontend"
"""The demo's edge: the frontend, whose Envoy takes the users' requests."""
TTS_URL = f"https://tts.{TRUST_DOMAIN}/token"


def tts_section(
    identity_dir: Path, *, edge: bool = True, endpoint: bool = True, **extra: Any
) -> dict[str, Any]:
    """The gateway's `tts` section over the demo keys (`ensure_identities(identity_dir)`)."""
    section: dict[str, Any] = {
        "trust_domain": TRUST_DOMAIN,
        "signing": {"key_file": str(identity_dir / "keys" / "tts.jwk.json")},
        "access_token_issuers": {
            USER_TOKEN_ISSUER: {
                "algorithms": ["ES256"],
                "jwks_file": str(identity_dir / "trust" / "idp.jwks.json"),
            }
        },
        **extra,
    }
    if edge:
        section["edge"] = {"workload": EDGE_WORKLOAD, "resource": [USER_TOKEN_AUDIENCE]}
    if endpoint:
        section["endpoint"] = {"url": TTS_URL}
    return section


def access_token(
    identities: Identities,
    *,
    scope: str = "checkout read",
    audience: str = USER_TOKEN_AUDIENCE,
    subject: str = "user-4711",
    **kwargs: Any,
) -> str:
    """An RFC 9068 access token from the demo identity provider."""
    return mint_user_token(
        identities.user_issuer,
        issuer=USER_TOKEN_ISSUER,
        subject=subject,
        audience=audience,
        scope=scope,
        **kwargs,
    )


EDGE_TEMPLATE = REPO_ROOT / "deploy" / "envoy" / "edge.yaml"


def edge_envoy_config(
    *,
    listener_port: int,
    admin_port: int,
    edge_socket: Path,
    egress_socket: Path,
    first_hop_port: int,
) -> dict[str, Any]:
    """`deploy/envoy/edge.yaml` on loopback `listener_port`, asking the gateway's edge and
    outbound listeners at those sockets, sending to the first hop's Envoy."""
    config = envoy_template(EDGE_TEMPLATE, listener_port=listener_port, admin_port=admin_port)
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"]["address"] = "127.0.0.1"
    addresses = {
        "wimse_authz_edge": {"pipe": {"path": str(edge_socket)}},
        "wimse_authz_egress": {"pipe": {"path": str(egress_socket)}},
        "orders": {"socket_address": {"address": "127.0.0.1", "port_value": first_hop_port}},
    }
    for cluster in config["static_resources"]["clusters"]:
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        endpoint["address"] = addresses[cluster["name"]]
    return config
