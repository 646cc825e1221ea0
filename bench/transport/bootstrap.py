"""The Envoy bootstrap that serves the gateway's gRPC API from pyvoy: generated from the
gateway's own configuration, so operators keep writing `server.listeners` as today.

PROTOTYPE: one plain listener (TCP, or a Unix socket). What TLS would map to (README.md,
"Today's server properties"): a `DownstreamTlsContext` whose certificates come from
SDS-from-file (`path_config_source` with `watched_directory`, so a swapped certificate is
picked up without a restart), and `allowed_clients` an RBAC network filter on the SANs.

Decisions made here, each for a property of today's server:
- `enable_reuse_port: false`: Envoy turns SO_REUSEPORT on by default, and a second
  gateway on the same port must fail to start instead of silently splitting the traffic.
- The listener's name is set as `x-wimse-authz-listener` on every request after removing
  any client-sent value: a call then knows which listener it arrived on.
- `codec_type: HTTP2`: the API is gRPC only; HTTP/1 is refused at the codec.
- The admin listener is on loopback with a port chosen by Envoy (written to
  `admin_address_path`): the supervisor needs it to drain (`/drain_listeners`) and to
  stop (`/quitquitquit`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from authz.config import ListenerConfig
from authz.errors import ConfigError

LISTENER_HEADER = "x-wimse-authz-listener"
APP = "pyvoy_app:app"


def module_path() -> str:
    """Where the installed pyvoy keeps its dynamic module (the `.so` Envoy loads)."""
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec("pyvoy._pyvoy")
    if spec is None or spec.origin is None:
        raise ConfigError("pyvoy is not installed in this environment")
    return spec.origin


def _socket_address(listener: ListenerConfig) -> dict[str, Any]:
    if listener.tls is not None:
        raise ConfigError(f"{listener.address}: the prototype bootstrap serves no TLS listener")
    if listener.is_unix:
        # No `mode`: the socket gets the umask's permissions, as grpc.aio's does today.
        return {"pipe": {"path": listener.address.removeprefix("unix:").removeprefix("//")}}
    host, _, port = listener.address.rpartition(":")
    return {"socket_address": {"address": host.strip("[]"), "port_value": int(port)}}


def _pyvoy_filter(app: str, worker_threads: int) -> dict[str, Any]:
    settings = {"app": app, "interface": "asgi", "root_path": "", "worker_threads": worker_threads}
    return {
        "name": "pyvoy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3"
            ".DynamicModuleFilter",
            "dynamic_module_config": {"module": {"local": {"filename": module_path()}}},
            "filter_name": "pyvoy",
            "terminal_filter": True,
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": json.dumps(settings),
            },
        },
    }


def _listener_name_filter(name: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3"
            ".HeaderMutation",
            "mutations": {
                "request_mutations": [
                    {
                        "append": {
                            "header": {"key": LISTENER_HEADER, "value": name},
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                        }
                    }
                ]
            },
        },
    }


def _listener(name: str, listener: ListenerConfig, app: str, worker_threads: int) -> dict[str, Any]:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": name,
        "codec_type": "HTTP2",
        "generate_request_id": False,
        "route_config": {"virtual_hosts": [{"name": "gateway", "domains": ["*"]}]},
        "http_filters": [_listener_name_filter(name), _pyvoy_filter(app, worker_threads)],
    }
    return {
        "name": name,
        "address": _socket_address(listener),
        "enable_reuse_port": False,
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def bootstrap(
    listeners: Sequence[ListenerConfig], *, app: str = APP, worker_threads: int = 1
) -> dict[str, Any]:
    """The Envoy bootstrap serving the gateway's `server.listeners` from pyvoy.

    One listener only: each listener's filter chain would create its own pyvoy filter
    configuration, and with it its own asyncio loop thread running the same app, which the
    gateway's loop-bound state (reloader, Redis client, regorus engines) does not allow.
    """
    if len(listeners) != 1:
        raise ConfigError("the prototype bootstrap serves exactly one listener")
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [_listener("listener-0", listeners[0], app, worker_threads)]
        },
    }


def write_bootstrap(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path
