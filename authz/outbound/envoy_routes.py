"""Lint an egress Envoy's configuration for outbound mode.

In outbound mode the gateway mints a WPT whose `aud` is the callee's origin plus the path
Envoy will send. ext_authz runs before the router: it sees the path before any rewrite and
never sees which cluster the route picks. So every route the gateway mints for must send the
request where the WPT says, along a path the gateway can compute. `egress_route_problems`
checks that statically; a WPT minted for callee X must never be delivered to Y.

Only inline configuration is checked (`static_resources`, inline `route_config`): what
arrives over xDS cannot be.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from authz.config import SERVICE_CONTEXT_KEY, Config, worker_address
from authz.outbound.callee import PATH_PREFIX_KEY, PREFIX_REWRITE_KEY

__all__ = ["Callee", "authz_clusters_for", "egress_envoy_problems", "egress_route_problems"]

_HCM = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
_EXT_AUTHZ = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
_DYNAMIC_FORWARD_PROXY = (
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig"
)
_ORIGINAL_DST = "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
_FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
_UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"

_DEFAULT_PORTS = {"http": 80, "https": 443}
_FIXED_CLUSTER = "outbound needs a fixed cluster"
_UNDECLARED_REWRITE = (
    "the gateway cannot compute the path Envoy sends; "
    "apply the rewrite with prefix_rewrite and declare it"
)


@dataclass(frozen=True, slots=True)
class Callee:
    """What the linter needs to know of a configured callee."""

    name: str
    origin: str
    """`scheme://host[:port]`, e.g. `https://payments.shop.svc:8443`."""


def egress_route_problems(
    envoy: Mapping[str, Any],
    *,
    authz_clusters: Collection[str],
    callees: Mapping[str, Callee],
) -> list[str]:
    """Why routes of `envoy` (a bootstrap loaded from YAML) could deliver a WPT to the wrong
    callee or for the wrong path; empty if none.

    Only HTTP connection managers whose ext_authz filter calls one of `authz_clusters` (the
    clusters leading to the gateway's outbound listeners) are checked. Each problem is one
    line, `<where>: <what>`, e.g. `listener egress, virtual host callees, route 2 (prefix
    /pay/): cluster_header routes by a request header; outbound needs a fixed cluster`.
    Routes are counted from 0 within their virtual host.
    """
    static = envoy.get("static_resources", {})
    clusters = {cluster["name"]: cluster for cluster in static.get("clusters", [])}
    problems: list[str] = []
    for listener in static.get("listeners", []):
        chains = [*listener.get("filter_chains", [])]
        if "default_filter_chain" in listener:
            chains.append(listener["default_filter_chain"])
        for index, chain in enumerate(chains):
            where = f"listener {listener.get('name', '?')}"
            if len(chains) > 1:
                where += f", filter chain {index}"
            for network_filter in chain.get("filters", []):
                manager = _typed(network_filter, _HCM)
                authz_filters = [
                    http_filter
                    for http_filter in (manager or {}).get("http_filters", [])
                    if _calls(http_filter, authz_clusters)
                ]
                if manager is None or not authz_filters:
                    continue
                problems += _listener_problems(listener, where)
                problems += _manager_problems(manager, authz_filters, where)
                for authz_filter in authz_filters:
                    problems += _routes_problems(manager, authz_filter, clusters, callees, where)
    return problems


def authz_clusters_for(envoy: Mapping[str, Any], addresses: Collection[str]) -> set[str]:
    """Names of the clusters with an endpoint at one of `addresses`, written as the gateway's
    configuration writes listener addresses: `unix:/path/x.sock` or `host:port`.

    Addresses are compared as written, nothing is resolved: `localhost` is not `127.0.0.1`.
    Raises ValueError for an address that is neither form."""
    wanted = {_gateway_address(address) for address in addresses}
    return {
        cluster["name"]
        for cluster in envoy.get("static_resources", {}).get("clusters", [])
        if any(_envoy_address(address) in wanted for address in _endpoint_addresses(cluster))
    }


def _listener_problems(listener: Mapping[str, Any], where: str) -> list[str]:
    # The app's connection would be handed on, or sent, to wherever it was headed: not
    # necessarily the routes checked here.
    problems = []
    if listener.get("use_original_dst"):
        problems.append(f"{where}: use_original_dst hands connections to other listeners")
    if any(
        f.get("name") == "envoy.filters.listener.original_dst" or _typed(f, _ORIGINAL_DST)
        for f in listener.get("listener_filters", [])
    ):
        problems.append(f"{where}: the original_dst listener filter keeps the app's destination")
    return problems


def _manager_problems(
    manager: Mapping[str, Any], authz_filters: list[Mapping[str, Any]], where: str
) -> list[str]:
    problems = []
    # The path ext_authz sees (and the WPT names) must be the one the upstream serves.
    if manager.get("normalize_path") is not True:
        problems.append(f"{where}: normalize_path must be true, as on ingress")
    if manager.get("merge_slashes") is not True:
        problems.append(f"{where}: merge_slashes must be true, as on ingress")
    if manager.get("path_with_escaped_slashes_action") != "REJECT_REQUEST":
        problems.append(f"{where}: path_with_escaped_slashes_action must be REJECT_REQUEST")
    for authz_filter in authz_filters:
        config = authz_filter["typed_config"]
        if config.get("failure_mode_allow", False) is not False:
            problems.append(
                f"{where}: ext_authz failure_mode_allow sends requests out uncredentialed "
                "whenever the gateway fails"
            )
        if config.get("status_on_error", {}).get("code") not in ("ServiceUnavailable", 503):
            problems.append(
                f"{where}: ext_authz status_on_error must be {{code: ServiceUnavailable}}; "
                "Envoy's default 403 makes a gateway failure look like a denial"
            )
    if any(
        f.get("name") == "envoy.filters.http.dynamic_forward_proxy"
        or _typed(f, _DYNAMIC_FORWARD_PROXY)
        for f in manager.get("http_filters", [])
    ):
        problems.append(
            f"{where}: dynamic_forward_proxy sends requests where their Host says; {_FIXED_CLUSTER}"
        )
    if "route_config" not in manager:
        problems.append(f"{where}: routes from RDS cannot be checked; inline the route_config")
    return problems


def _routes_problems(
    manager: Mapping[str, Any],
    authz_filter: Mapping[str, Any],
    clusters: Mapping[str, Mapping[str, Any]],
    callees: Mapping[str, Callee],
    where: str,
) -> list[str]:
    route_config = manager.get("route_config", {})
    problems = []
    for host in route_config.get("virtual_hosts", []):
        for index, route in enumerate(host.get("routes", [])):
            # Per-filter config is keyed by the filter's name in http_filters.
            disabled, context = _ext_authz_settings(authz_filter["name"], route_config, host, route)
            # Routes without a `route` action (direct_response, redirect) send nothing out.
            if disabled or "route" not in route:
                continue
            route_where = (
                f"{where}, virtual host {host.get('name', '?')}, "
                f"route {index} ({_describe(route.get('match', {}))})"
            )
            problems += [
                f"{route_where}: {problem}"
                for problem in _route_problems(route, context, clusters, callees)
            ]
            # Copies carry the credentials ext_authz set; any level may ask for them.
            if any(
                level.get("request_mirror_policies")
                for level in (route_config, host, route["route"])
            ):
                problems.append(
                    f"{route_where}: request_mirror_policies copy the request, credentials "
                    "included, to another cluster"
                )
    return problems


def _route_problems(
    route: Mapping[str, Any],
    context: Mapping[str, str],
    clusters: Mapping[str, Mapping[str, Any]],
    callees: Mapping[str, Callee],
) -> Iterator[str]:
    action = route["route"]
    callee = callees.get(context.get(SERVICE_CONTEXT_KEY, ""))
    if SERVICE_CONTEXT_KEY not in context:
        yield (
            f"no {SERVICE_CONTEXT_KEY} context extension: the gateway cannot tell whom it mints for"
        )
    elif callee is None:
        yield f"{SERVICE_CONTEXT_KEY} {context[SERVICE_CONTEXT_KEY]!r} is not a configured callee"

    if "cluster" not in action:
        yield _cluster_specifier_problem(action)
    elif action["cluster"] not in clusters:
        yield f"cluster {action['cluster']} is not in static_resources.clusters: not checkable"
    else:
        cluster = clusters[action["cluster"]]
        problem = _unfixed_cluster_problem(cluster)
        if problem is None and callee is not None:
            problem = _destination_problem(cluster, action, callee)
        if problem is not None:
            yield problem

    # Host derived from the request: the callee would be named by what the app sent.
    if "host_rewrite_header" in action:
        yield "host_rewrite_header sets the Host from a request header"
    if "host_rewrite_path_regex" in action:
        yield "host_rewrite_path_regex sets the Host from the path"

    yield from _path_rewrite_problems(route, context)

    # The redirected request keeps the headers ext_authz set; the route it lands on may not
    # mint new ones.
    if "internal_redirect_policy" in action:
        yield "internal_redirect_policy re-sends the credentials to wherever the callee redirects"


def _cluster_specifier_problem(action: Mapping[str, Any]) -> str:
    if "cluster_header" in action:
        return f"cluster_header routes by a request header; {_FIXED_CLUSTER}"
    if "weighted_clusters" in action:
        return f"weighted_clusters spreads requests over clusters; {_FIXED_CLUSTER}"
    for plugin in ("cluster_specifier_plugin", "inline_cluster_specifier_plugin"):
        if plugin in action:
            return f"{plugin} picks the cluster per request; {_FIXED_CLUSTER}"
    return f"no route.cluster; {_FIXED_CLUSTER}"


def _unfixed_cluster_problem(cluster: Mapping[str, Any]) -> str | None:
    """Why `cluster` picks its destination per request, if it does."""
    name = cluster["name"]
    if cluster.get("type") == "ORIGINAL_DST":
        return f"cluster {name} is ORIGINAL_DST: it connects wherever the app was headed"
    if "cluster_type" in cluster:
        kind = cluster["cluster_type"].get("name", "?")
        return f"cluster {name} is a custom cluster ({kind}): its destination is not fixed"
    if cluster.get("lb_policy") == "CLUSTER_PROVIDED":
        return f"cluster {name} has lb_policy CLUSTER_PROVIDED: its destination is not fixed"
    return None


def _destination_problem(
    cluster: Mapping[str, Any], action: Mapping[str, Any], callee: Callee
) -> str | None:
    """Why `cluster` may not lead to `callee`'s origin, if it may not.

    A TLS `sni` naming the origin's host, or a `host_rewrite_literal` naming its host (or
    host:port), is taken as the operator's statement of the destination; otherwise every
    endpoint must be the origin's host and port."""
    name = cluster["name"]
    origin = _parse_origin(callee.origin)
    if origin is None:
        return f"callee {callee.name}'s origin {callee.origin!r} is not scheme://host[:port]"
    host, port, authority = origin
    if str(action.get("host_rewrite_literal", "")).lower() in (host, authority):
        return None
    tls = _typed(cluster.get("transport_socket", {}), _UPSTREAM_TLS) or {}
    if str(tls.get("sni", "")).lower() == host:
        return None
    endpoints = [address.get("socket_address", {}) for address in _endpoint_addresses(cluster)]
    if endpoints and all(
        str(endpoint.get("address", "")).lower() == host
        and (port is None or _port(endpoint) == port)
        for endpoint in endpoints
    ):
        return None
    return (
        f"cluster {name} may not lead to {callee.name} ({callee.origin}): its endpoints, "
        "TLS sni and the route's host_rewrite_literal all fail to name that host and port"
    )


def _path_rewrite_problems(route: Mapping[str, Any], context: Mapping[str, str]) -> Iterator[str]:
    action = route["route"]
    for unfollowable in ("regex_rewrite", "path_rewrite_policy"):
        if unfollowable in action:
            yield f"{unfollowable}: {_UNDECLARED_REWRITE}"
    # Envoy treats an empty prefix_rewrite as none.
    rewrite = action.get("prefix_rewrite") or None
    declared = PATH_PREFIX_KEY in context or PREFIX_REWRITE_KEY in context
    if rewrite is None:
        if declared:
            yield (
                f"{PATH_PREFIX_KEY}/{PREFIX_REWRITE_KEY} declared without a prefix_rewrite: "
                "the gateway would mint for a path Envoy does not send"
            )
        return
    prefix = route.get("match", {}).get("prefix")
    if prefix is None:
        yield "prefix_rewrite without match.prefix: the gateway cannot tell what it replaces"
    elif context.get(PATH_PREFIX_KEY) != prefix or context.get(PREFIX_REWRITE_KEY) != rewrite:
        yield (
            f"prefix_rewrite is not declared: set context_extensions {PATH_PREFIX_KEY}: "
            f"{prefix!r} and {PREFIX_REWRITE_KEY}: {rewrite!r}"
        )


def _ext_authz_settings(
    filter_name: str, *levels: Mapping[str, Any]
) -> tuple[bool, dict[str, str]]:
    """Whether ext_authz is disabled on a route, and the context extensions it sends, from
    the route's levels, least specific first: Envoy merges context extensions (the more
    specific level wins a key) and takes `disabled` from the most specific level."""
    disabled = False
    context: dict[str, str] = {}
    for level in levels:
        settings = level.get("typed_per_filter_config", {}).get(filter_name)
        if settings is None:
            continue
        if settings.get("@type") == _FILTER_CONFIG:
            if settings.get("disabled", False):
                disabled = True
                continue
            settings = settings.get("config", {})
        disabled = bool(settings.get("disabled", False))
        context |= settings.get("check_settings", {}).get("context_extensions", {})
    return disabled, context


def _calls(http_filter: Mapping[str, Any], clusters: Collection[str]) -> bool:
    config = _typed(http_filter, _EXT_AUTHZ) or {}
    return config.get("grpc_service", {}).get("envoy_grpc", {}).get("cluster_name") in clusters


def _typed(node: Mapping[str, Any], type_url: str) -> Mapping[str, Any] | None:
    config: Mapping[str, Any] = node.get("typed_config", {})
    return config if config.get("@type") == type_url else None


def _describe(match: Mapping[str, Any]) -> str:
    for key in ("prefix", "path", "path_separated_prefix"):
        if key in match:
            return f"{key} {match[key]}"
    if "safe_regex" in match:
        return f"safe_regex {match['safe_regex'].get('regex', '?')}"
    return ", ".join(match) or "no match"


def _endpoint_addresses(cluster: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every address of every inline endpoint, happy-eyeballs alternatives included."""
    addresses = []
    for locality in cluster.get("load_assignment", {}).get("endpoints", []):
        for lb_endpoint in locality.get("lb_endpoints", []):
            endpoint = lb_endpoint.get("endpoint", {})
            addresses.append(endpoint.get("address", {}))
            addresses += [
                extra.get("address", {}) for extra in endpoint.get("additional_addresses", [])
            ]
    return addresses


def _port(socket_address: Mapping[str, Any]) -> int | None:
    try:
        return int(socket_address["port_value"])
    except (KeyError, TypeError, ValueError):
        return None


def _parse_origin(origin: str) -> tuple[str, int | None, str] | None:
    """An origin's host, port (the scheme's default if none is written) and authority."""
    try:
        parts = urlsplit(origin)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    return (parts.hostname, port, parts.netloc.lower()) if parts.hostname else None


def _gateway_address(address: str) -> tuple[str, str, int | None]:
    if address.startswith("unix:"):
        return ("pipe", address.removeprefix("unix:").removeprefix("//"), None)
    host, _, port = address.rpartition(":")
    return ("tcp", host.removeprefix("[").removesuffix("]").lower(), int(port))


def _envoy_address(address: Mapping[str, Any]) -> tuple[str, str, int | None]:
    if "pipe" in address:
        return ("pipe", str(address["pipe"].get("path", "")), None)
    socket_address = address.get("socket_address", {})
    return ("tcp", str(socket_address.get("address", "")).lower(), _port(socket_address))


def egress_envoy_problems(config: Config, envoy: Mapping[str, Any]) -> list[str]:
    """`egress_route_problems` for the gateway configured by `config`: the clusters that
    lead to its outbound listeners (each worker's endpoint included) and its callees. That
    no cluster leads there is a problem too: nothing would be checked."""
    addresses = {
        worker_address(listener.address, index) if config.server.workers > 1 else listener.address
        for listener in config.server.listeners
        if listener.mode == "outbound"
        for index in range(config.server.workers)
    }
    clusters = authz_clusters_for(envoy, addresses)
    if not clusters:
        return [
            "no cluster's endpoints are the gateway's outbound listeners "
            f"({', '.join(sorted(addresses)) or 'none configured'}): nothing can be checked"
        ]
    callees = (
        {name: Callee(name, callee.origin) for name, callee in config.outbound.callees.items()}
        if config.outbound is not None
        else {}
    )
    return egress_route_problems(envoy, authz_clusters=clusters, callees=callees)
