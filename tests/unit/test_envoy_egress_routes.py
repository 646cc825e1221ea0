"""The outbound linter: an egress Envoy must send each request where its WPT says."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from string import Template
from typing import Any

import pytest
import yaml

from authz.devtools.stack import envoy_binary, write_yaml
from authz.outbound.envoy_routes import Callee, authz_clusters_for, egress_route_problems

OUTBOUND_SOCKET = "unix:/run/wimse/outbound.sock"
CALLEES = {
    callee.name: callee
    for callee in (
        Callee("payments", "https://payments.shop.svc:8443"),
        Callee("inventory", "http://127.0.0.1:18080"),
        Callee("ledger", "https://ledger.shop.svc"),
        Callee("reports", "http://reports.shop.svc"),
    )
}

HCM = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"

# An app's egress Envoy calling the gateway's outbound listener on a Unix socket; an
# ingress listener beside it asks another gateway listener, and is none of this linter's
# business.
GOOD_EGRESS = Template("""
static_resources:
  listeners:
  - name: egress
    address: {socket_address: {address: 127.0.0.1, port_value: 15001}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": $HCM
          stat_prefix: egress
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST
          route_config:
            name: callees
            virtual_hosts:
            - name: callees
              domains: ["*"]
              routes:
              - match: {safe_regex: {regex: ".*(;|%3[Bb]).*"}}
                direct_response: {status: 400}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": $PER_ROUTE
                    disabled: true
              - match: {prefix: /pay/}
                route: {cluster: payments, prefix_rewrite: /v1/}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": $PER_ROUTE
                    check_settings:
                      context_extensions:
                        wimse.service: payments
                        wimse.path_prefix: /pay/
                        wimse.prefix_rewrite: /v1/
              - match: {prefix: /inventory/}
                route: {cluster: inventory}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": $PER_ROUTE
                    check_settings: {context_extensions: {wimse.service: inventory}}
              - match: {prefix: /ledger/}
                route: {cluster: ledger, host_rewrite_literal: ledger.shop.svc}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": $PER_ROUTE
                    check_settings: {context_extensions: {wimse.service: ledger}}
              # No credentials minted here, so the request may go wherever it likes.
              - match: {prefix: /public/}
                route: {cluster_header: x-upstream}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": $PER_ROUTE
                    disabled: true
            - name: reports
              domains: [reports.shop.svc]
              typed_per_filter_config:
                envoy.filters.http.ext_authz:
                  "@type": $PER_ROUTE
                  check_settings: {context_extensions: {wimse.service: reports}}
              routes:
              - match: {prefix: /}
                route: {cluster: reports}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              status_on_error: {code: ServiceUnavailable}
              grpc_service: {envoy_grpc: {cluster_name: wimse_outbound}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": $HCM
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: {prefix: /}
                route: {cluster_header: x-upstream}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              status_on_error: {code: ServiceUnavailable}
              grpc_service: {envoy_grpc: {cluster_name: wimse_inbound}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: wimse_outbound
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: wimse_outbound
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {pipe: {path: /run/wimse/outbound.sock}}}
  - name: wimse_inbound
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: wimse_inbound
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9191}}}
  # Only the TLS name says this is the payments callee.
  - name: payments
    type: STRICT_DNS
    load_assignment:
      cluster_name: payments
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {address: payments.shop.svc.cluster.local, port_value: 8443}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: payments.shop.svc
  - name: inventory
    type: STATIC
    load_assignment:
      cluster_name: inventory
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 18080}}}
  - name: ledger
    type: STATIC
    load_assignment:
      cluster_name: ledger
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {pipe: {path: /run/ledger/envoy.sock}}}
  - name: reports
    type: STRICT_DNS
    load_assignment:
      cluster_name: reports
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: reports.shop.svc, port_value: 80}}}
""").substitute(HCM=HCM, PER_ROUTE=PER_ROUTE)

EXT_AUTHZ = "envoy.filters.http.ext_authz"
INVENTORY = "listener egress, virtual host callees, route 2 (prefix /inventory/)"
PAYMENTS = "listener egress, virtual host callees, route 1 (prefix /pay/)"

Breakage = Callable[[dict[str, Any]], object]


def good_egress() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(GOOD_EGRESS)
    return document


def problems(document: dict[str, Any]) -> list[str]:
    return egress_route_problems(
        document,
        authz_clusters=authz_clusters_for(document, [OUTBOUND_SOCKET]),
        callees=CALLEES,
    )


def envoy_validates(document: dict[str, Any], directory: Path) -> subprocess.CompletedProcess[str]:
    path = write_yaml(directory / "envoy.yaml", document)
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def listener(document: dict[str, Any], name: str = "egress") -> dict[str, Any]:
    found: dict[str, Any] = next(
        item for item in document["static_resources"]["listeners"] if item["name"] == name
    )
    return found


def manager(document: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = listener(document)["filter_chains"][0]["filters"][0]["typed_config"]
    return config


def ext_authz(document: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = manager(document)["http_filters"][0]["typed_config"]
    return config


def host(document: dict[str, Any], name: str = "callees") -> dict[str, Any]:
    hosts = manager(document)["route_config"]["virtual_hosts"]
    found: dict[str, Any] = next(item for item in hosts if item["name"] == name)
    return found


def route(document: dict[str, Any], prefix: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        item for item in host(document)["routes"] if item["match"].get("prefix") == prefix
    )
    return found


def action(document: dict[str, Any], prefix: str) -> dict[str, Any]:
    found: dict[str, Any] = route(document, prefix)["route"]
    return found


def context(document: dict[str, Any], prefix: str) -> dict[str, str]:
    settings = route(document, prefix)["typed_per_filter_config"][EXT_AUTHZ]
    extensions: dict[str, str] = settings["check_settings"]["context_extensions"]
    return extensions


def cluster(document: dict[str, Any], name: str) -> dict[str, Any]:
    clusters = document["static_resources"]["clusters"]
    found: dict[str, Any] = next(item for item in clusters if item["name"] == name)
    return found


def endpoint_address(document: dict[str, Any], name: str) -> dict[str, Any]:
    lb_endpoint = cluster(document, name)["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    address: dict[str, Any] = lb_endpoint["endpoint"]["address"]["socket_address"]
    return address


def replace_cluster_with(document: dict[str, Any], name: str, **cluster_fields: Any) -> None:
    found = cluster(document, name)
    found.clear()
    found.update(name=name, **cluster_fields)


def assert_only_problem(breakage: Breakage, expected: str) -> None:
    document = good_egress()
    assert problems(document) == []
    breakage(document)
    found = problems(document)
    assert len(found) == 1, found
    assert expected in found[0]


# The settings below each break one rule; test_envoy_accepts_every_breakage shows that
# Envoy takes them all, so only this linter stands in their way.


def no_normalize_path(document: dict[str, Any]) -> None:
    manager(document)["normalize_path"] = False


def no_merge_slashes(document: dict[str, Any]) -> None:
    del manager(document)["merge_slashes"]


def unescaped_slashes_redirected(document: dict[str, Any]) -> None:
    manager(document)["path_with_escaped_slashes_action"] = "UNESCAPE_AND_REDIRECT"


NORMALISATION = [
    pytest.param(no_normalize_path, "listener egress: normalize_path must be true", id="normalize"),
    pytest.param(no_merge_slashes, "listener egress: merge_slashes must be true", id="merge"),
    pytest.param(
        unescaped_slashes_redirected,
        "listener egress: path_with_escaped_slashes_action must be REJECT_REQUEST",
        id="escaped-slashes",
    ),
]


@pytest.mark.parametrize(("breakage", "expected"), NORMALISATION)
def test_egress_that_does_not_normalise_paths_as_ingress_does_is_refused(
    breakage: Breakage, expected: str
) -> None:
    assert_only_problem(breakage, expected)


def fails_open(document: dict[str, Any]) -> None:
    ext_authz(document)["failure_mode_allow"] = True


def answers_403_on_error(document: dict[str, Any]) -> None:
    del ext_authz(document)["status_on_error"]


FAILURE = [
    pytest.param(fails_open, "ext_authz failure_mode_allow sends requests out", id="fails-open"),
    pytest.param(answers_403_on_error, "status_on_error must be", id="403-on-error"),
]


@pytest.mark.parametrize(("breakage", "expected"), FAILURE)
def test_ext_authz_that_fails_open_or_hides_outages_is_refused(
    breakage: Breakage, expected: str
) -> None:
    assert_only_problem(breakage, expected)


def cluster_header(document: dict[str, Any]) -> None:
    action(document, "/inventory/").update(cluster_header="x-upstream")
    del action(document, "/inventory/")["cluster"]


def weighted_clusters(document: dict[str, Any]) -> None:
    action(document, "/inventory/")["weighted_clusters"] = {
        "clusters": [{"name": "inventory", "weight": 1}, {"name": "ledger", "weight": 1}]
    }
    del action(document, "/inventory/")["cluster"]


LUA_SPECIFIER = {
    "name": "envoy.router.cluster_specifier_plugin.lua",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.router.cluster_specifiers.lua.v3.LuaConfig",
        "source_code": {
            "inline_string": (
                "function envoy_on_route(route_handle)\n"
                "  return route_handle:headers():get('x-upstream')\n"
                "end\n"
            )
        },
        "default_cluster": "inventory",
    },
}


def cluster_specifier_plugin(document: dict[str, Any]) -> None:
    manager(document)["route_config"]["cluster_specifier_plugins"] = [
        {"extension": {**LUA_SPECIFIER, "name": "pick"}}
    ]
    action(document, "/inventory/")["cluster_specifier_plugin"] = "pick"
    del action(document, "/inventory/")["cluster"]


def inline_cluster_specifier_plugin(document: dict[str, Any]) -> None:
    action(document, "/inventory/")["inline_cluster_specifier_plugin"] = {
        "extension": LUA_SPECIFIER
    }
    del action(document, "/inventory/")["cluster"]


UNFIXED_CLUSTER = [
    pytest.param(
        cluster_header,
        f"{INVENTORY}: cluster_header routes by a request header; outbound needs a fixed cluster",
        id="cluster_header",
    ),
    pytest.param(weighted_clusters, "weighted_clusters spreads requests", id="weighted_clusters"),
    pytest.param(
        cluster_specifier_plugin,
        "cluster_specifier_plugin picks the cluster per request",
        id="cluster_specifier_plugin",
    ),
    pytest.param(
        inline_cluster_specifier_plugin,
        "inline_cluster_specifier_plugin picks the cluster per request",
        id="inline_cluster_specifier_plugin",
    ),
]


@pytest.mark.parametrize(("breakage", "expected"), UNFIXED_CLUSTER)
def test_route_without_a_fixed_cluster_is_refused_for_outbound(
    breakage: Breakage, expected: str
) -> None:
    assert_only_problem(breakage, expected)


def no_service(document: dict[str, Any]) -> None:
    del context(document, "/inventory/")["wimse.service"]


def unknown_service(document: dict[str, Any]) -> None:
    context(document, "/inventory/")["wimse.service"] = "invetory"


def route_service_overrides_the_hosts(document: dict[str, Any]) -> None:
    host(document, "reports")["routes"][0]["typed_per_filter_config"] = {
        EXT_AUTHZ: {
            "@type": PER_ROUTE,
            "check_settings": {"context_extensions": {"wimse.service": "billing"}},
        }
    }


def host_disabled_route_enabled(document: dict[str, Any]) -> None:
    """The most specific level decides whether ext_authz runs: the route's check_settings
    turn it back on, and the disabled virtual host gives it no callee."""
    reports = host(document, "reports")
    reports["typed_per_filter_config"][EXT_AUTHZ] = {"@type": PER_ROUTE, "disabled": True}
    reports["routes"][0]["typed_per_filter_config"] = {
        EXT_AUTHZ: {"@type": PER_ROUTE, "check_settings": {}}
    }


UNKNOWN_CALLEE = [
    pytest.param(no_service, f"{INVENTORY}: no wimse.service context extension", id="none"),
    pytest.param(unknown_service, "wimse.service 'invetory' is not a configured", id="unknown"),
    pytest.param(
        route_service_overrides_the_hosts,
        "virtual host reports, route 0 (prefix /): wimse.service 'billing' is not a configured",
        id="route-wins-over-virtual-host",
    ),
]


@pytest.mark.parametrize(("breakage", "expected"), UNKNOWN_CALLEE)
def test_route_that_names_no_configured_callee_is_refused(
    breakage: Breakage, expected: str
) -> None:
    assert_only_problem(breakage, expected)


def unknown_cluster(document: dict[str, Any]) -> None:
    manager(document)["route_config"]["validate_clusters"] = False
    action(document, "/inventory/")["cluster"] = "inventory-cds"


def original_dst(document: dict[str, Any]) -> None:
    replace_cluster_with(document, "inventory", type="ORIGINAL_DST", lb_policy="CLUSTER_PROVIDED")


def dynamic_forward_proxy_cluster(document: dict[str, Any]) -> None:
    replace_cluster_with(
        document,
        "inventory",
        lb_policy="CLUSTER_PROVIDED",
        cluster_type={
            "name": "envoy.clusters.dynamic_forward_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig",
                "dns_cache_config": {"name": "anywhere", "dns_lookup_family": "V4_ONLY"},
            },
        },
    )


def aggregate_cluster(document: dict[str, Any]) -> None:
    replace_cluster_with(
        document,
        "inventory",
        lb_policy="CLUSTER_PROVIDED",
        cluster_type={
            "name": "envoy.clusters.aggregate",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
                "clusters": ["ledger", "payments"],
            },
        },
    )


def cluster_provided(document: dict[str, Any]) -> None:
    cluster(document, "inventory")["lb_policy"] = "CLUSTER_PROVIDED"


def another_host(document: dict[str, Any]) -> None:
    endpoint_address(document, "inventory")["address"] = "127.0.0.2"


def another_port(document: dict[str, Any]) -> None:
    endpoint_address(document, "inventory")["port_value"] = 18081


def one_endpoint_elsewhere(document: dict[str, Any]) -> None:
    endpoints = cluster(document, "inventory")["load_assignment"]["endpoints"][0]["lb_endpoints"]
    elsewhere = {"address": "10.0.0.9", "port_value": 18080}
    endpoints.append({"endpoint": {"address": {"socket_address": elsewhere}}})


def not_the_schemes_default_port(document: dict[str, Any]) -> None:
    endpoint_address(document, "reports")["port_value"] = 8080


def sni_names_another_host(document: dict[str, Any]) -> None:
    cluster(document, "payments")["transport_socket"]["typed_config"]["sni"] = "pay.other.svc"


def pipe_without_a_name(document: dict[str, Any]) -> None:
    del action(document, "/ledger/")["host_rewrite_literal"]


WRONG_DESTINATION = [
    pytest.param(
        unknown_cluster,
        f"{INVENTORY}: cluster inventory-cds is not in static_resources.clusters",
        id="not-static",
    ),
    pytest.param(original_dst, "cluster inventory is ORIGINAL_DST", id="original_dst"),
    pytest.param(
        dynamic_forward_proxy_cluster,
        "cluster inventory is a custom cluster (envoy.clusters.dynamic_forward_proxy)",
        id="dynamic-forward-proxy-cluster",
    ),
    pytest.param(
        aggregate_cluster,
        "cluster inventory is a custom cluster (envoy.clusters.aggregate)",
        id="aggregate-cluster",
    ),
    pytest.param(cluster_provided, "lb_policy CLUSTER_PROVIDED", id="cluster-provided"),
    pytest.param(
        another_host,
        f"{INVENTORY}: cluster inventory may not lead to inventory (http://127.0.0.1:18080)",
        id="another-host",
    ),
    pytest.param(another_port, "cluster inventory may not lead to", id="another-port"),
    pytest.param(one_endpoint_elsewhere, "cluster inventory may not lead to", id="one-elsewhere"),
    pytest.param(
        not_the_schemes_default_port,
        "cluster reports may not lead to reports (http://reports.shop.svc)",
        id="not-the-default-port",
    ),
    pytest.param(sni_names_another_host, "cluster payments may not lead to", id="sni"),
    pytest.param(pipe_without_a_name, "cluster ledger may not lead to", id="pipe"),
]


@pytest.mark.parametrize(("breakage", "expected"), WRONG_DESTINATION)
def test_route_whose_cluster_may_not_lead_to_the_callee_is_refused(
    breakage: Breakage, expected: str
) -> None:
    assert_only_problem(breakage, expected)


def host_from_header(document: dict[str, Any]) -> None:
    action(document, "/inventory/")["host_rewrite_header"] = "x-target"


def host_from_path(document: dict[str, Any]) -> None:
    action(document, "/inventory/")["host_rewrite_path_regex"] = {
        "pattern": {"regex": "^/inventory/([^/]+)/.*$"},
        "substitution": "\\1",
    }


HOST_FROM_REQUEST = [
    pytest.param(host_from_header, f"{INVENTORY}: host_rewrite_header", id="header"),
    pytest.param(host_from_path, f"{INVENTORY}: host_rewrite_path_regex", id="path"),
]


@pytest.mark.parametrize(("breakage", "expected"), HOST_FROM_REQUEST)
def test_host_derived_from_the_request_is_refused(breakage: Breakage, expected: str) -> None:
    assert_only_problem(breakage, expected)


def regex_rewrite(document: dict[str, Any]) -> None:
    action(document, "/inventory/")["regex_rewrite"] = {
        "pattern": {"regex": "^/inventory/"},
        "substitution": "/",
    }


def uri_template_rewrite(document: dict[str, Any]) -> None:
    inventory = route(document, "/inventory/")
    inventory["match"] = {
        "path_match_policy": {
            "name": "envoy.path.match.uri_template.uri_template_matcher",
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
                "path_template": "/inventory/{item}",
            },
        }
    }
    inventory["route"]["path_rewrite_policy"] = {
        "name": "envoy.path.rewrite.uri_template.uri_template_rewriter",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.path.rewrite.uri_template.v3.UriTemplateRewriteConfig",
            "path_template_rewrite": "/items/{item}",
        },
    }


def undeclared_prefix_rewrite(document: dict[str, Any]) -> None:
    action(document, "/inventory/")["prefix_rewrite"] = "/items/"


def misdeclared_prefix_rewrite(document: dict[str, Any]) -> None:
    context(document, "/pay/")["wimse.prefix_rewrite"] = "/v2/"


def prefix_rewrite_without_a_prefix(document: dict[str, Any]) -> None:
    route(document, "/pay/")["match"] = {"path": "/pay/charges"}


def declared_without_a_rewrite(document: dict[str, Any]) -> None:
    del action(document, "/pay/")["prefix_rewrite"]


PATH_REWRITES = [
    pytest.param(
        regex_rewrite,
        f"{INVENTORY}: regex_rewrite: the gateway cannot compute the path Envoy sends; "
        "apply the rewrite with prefix_rewrite and declare it",
        id="regex_rewrite",
    ),
    pytest.param(uri_template_rewrite, "path_rewrite_policy: the gateway cannot", id="template"),
    pytest.param(
        undeclared_prefix_rewrite,
        f"{INVENTORY}: prefix_rewrite is not declared: set context_extensions "
        "wimse.path_prefix: '/inventory/' and wimse.prefix_rewrite: '/items/'",
        id="undeclared",
    ),
    pytest.param(
        misdeclared_prefix_rewrite, f"{PAYMENTS}: prefix_rewrite is not declared", id="mismatch"
    ),
    pytest.param(
        prefix_rewrite_without_a_prefix,
        "(path /pay/charges): prefix_rewrite without match.prefix",
        id="no-match-prefix",
    ),
    pytest.param(
        declared_without_a_rewrite,
        f"{PAYMENTS}: wimse.path_prefix/wimse.prefix_rewrite declared without a prefix_rewrite",
        id="declared-only",
    ),
]


@pytest.mark.parametrize(("breakage", "expected"), PATH_REWRITES)
def test_path_rewrites_the_gateway_cannot_follow_are_refused(
    breakage: Breakage, expected: str
) -> None:
    assert_only_problem(breakage, expected)


def dynamic_forward_proxy_filter(document: dict[str, Any]) -> None:
    manager(document)["http_filters"].insert(
        1,
        {
            "name": "envoy.filters.http.dynamic_forward_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig",
                "dns_cache_config": {"name": "anywhere", "dns_lookup_family": "V4_ONLY"},
            },
        },
    )


def use_original_dst(document: dict[str, Any]) -> None:
    listener(document)["use_original_dst"] = True


def original_dst_listener_filter(document: dict[str, Any]) -> None:
    listener(document)["listener_filters"] = [
        {
            "name": "envoy.filters.listener.original_dst",
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
            },
        }
    ]


DESTINATION_FROM_THE_APP = [
    pytest.param(
        dynamic_forward_proxy_filter,
        "listener egress: dynamic_forward_proxy sends requests where their Host says",
        id="dynamic-forward-proxy-filter",
    ),
    pytest.param(use_original_dst, "listener egress: use_original_dst", id="use_original_dst"),
    pytest.param(
        original_dst_listener_filter,
        "listener egress: the original_dst listener filter",
        id="original-dst-listener-filter",
    ),
]


@pytest.mark.parametrize(("breakage", "expected"), DESTINATION_FROM_THE_APP)
def test_egress_that_keeps_the_apps_destination_is_refused(
    breakage: Breakage, expected: str
) -> None:
    assert_only_problem(breakage, expected)


def mirrored_route(document: dict[str, Any]) -> None:
    action(document, "/inventory/")["request_mirror_policies"] = [{"cluster": "ledger"}]


def mirrored_virtual_host(document: dict[str, Any]) -> None:
    host(document, "reports")["request_mirror_policies"] = [{"cluster": "ledger"}]


def internal_redirects(document: dict[str, Any]) -> None:
    action(document, "/inventory/")["internal_redirect_policy"] = {}


RESENT = [
    pytest.param(mirrored_route, f"{INVENTORY}: request_mirror_policies copy", id="mirror"),
    pytest.param(
        mirrored_virtual_host,
        "virtual host reports, route 0 (prefix /): request_mirror_policies copy",
        id="mirror-virtual-host",
    ),
    pytest.param(internal_redirects, f"{INVENTORY}: internal_redirect_policy", id="redirect"),
]


@pytest.mark.parametrize(("breakage", "expected"), RESENT)
def test_route_that_copies_or_resends_credentials_is_refused(
    breakage: Breakage, expected: str
) -> None:
    assert_only_problem(breakage, expected)


def from_rds(document: dict[str, Any]) -> None:
    del manager(document)["route_config"]
    manager(document)["rds"] = {
        "route_config_name": "callees",
        "config_source": {"ads": {}, "resource_api_version": "V3"},
    }
    document["node"] = {"id": "app", "cluster": "app"}  # Envoy needs them to ask for routes


def test_routes_from_rds_cannot_be_checked() -> None:
    assert_only_problem(from_rds, "listener egress: routes from RDS cannot be checked")


def test_ext_authz_disabled_on_the_host_is_turned_back_on_by_route_check_settings() -> None:
    assert_only_problem(
        host_disabled_route_enabled,
        "virtual host reports, route 0 (prefix /): no wimse.service context extension",
    )


def test_ext_authz_disabled_on_the_virtual_host_leaves_its_routes_unchecked() -> None:
    document = good_egress()
    reports = host(document, "reports")
    reports["typed_per_filter_config"][EXT_AUTHZ] = {"@type": PER_ROUTE, "disabled": True}
    reports["routes"][0]["route"] = {"cluster_header": "x-upstream"}
    assert problems(document) == []


BREAKAGES = [
    *[
        pytest.param(case.values[0], id=case.id)
        for case in (
            *NORMALISATION,
            *FAILURE,
            *UNFIXED_CLUSTER,
            *UNKNOWN_CALLEE,
            *WRONG_DESTINATION,
            *HOST_FROM_REQUEST,
            *PATH_REWRITES,
            *DESTINATION_FROM_THE_APP,
            *RESENT,
        )
        # Envoy refuses CLUSTER_PROVIDED on a STATIC cluster; the linter must not rely on it.
        if case.id != "cluster-provided"
    ],
    pytest.param(from_rds, id="rds"),
    pytest.param(host_disabled_route_enabled, id="host-disabled-route-enabled"),
]


def test_the_good_egress_config_has_no_problems() -> None:
    assert problems(good_egress()) == []


def test_the_good_egress_config_passes_envoy_validation(tmp_path: Path) -> None:
    result = envoy_validates(good_egress(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_envoy_accepts_every_breakage(breakage: Breakage, tmp_path: Path) -> None:
    """Envoy takes each of them, so only the linter stands in their way."""
    document = good_egress()
    breakage(document)
    result = envoy_validates(document, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_validation_catches_a_broken_config(tmp_path: Path) -> None:
    """The validation above can fail."""
    document = good_egress()
    cluster(document, "inventory")["type"] = "NOT_A_TYPE"
    assert envoy_validates(document, tmp_path).returncode != 0


def test_routes_with_ext_authz_disabled_may_route_anywhere() -> None:
    """The good config's /public/ route picks its cluster from a header: nothing is minted
    there. With ext_authz on, the same route is refused."""
    document = good_egress()
    route(document, "/public/")["typed_per_filter_config"][EXT_AUTHZ] = {
        "@type": PER_ROUTE,
        "check_settings": {"context_extensions": {"wimse.service": "inventory"}},
    }
    assert [problem.split(": ", 1)[1] for problem in problems(document)] == [
        "cluster_header routes by a request header; outbound needs a fixed cluster"
    ]


def test_connection_managers_asking_other_gateway_listeners_are_not_checked() -> None:
    document = good_egress()
    checked = egress_route_problems(
        document, authz_clusters={"wimse_outbound", "wimse_inbound"}, callees=CALLEES
    )
    assert checked
    assert all(problem.startswith("listener ingress") for problem in checked)


def test_a_route_keeps_the_callee_its_virtual_host_names() -> None:
    """Envoy merges context extensions from the virtual host and the route."""
    document = good_egress()
    reports = host(document, "reports")["routes"][0]
    reports["route"]["prefix_rewrite"] = "/api/"
    declared = {"wimse.path_prefix": "/", "wimse.prefix_rewrite": "/api/"}
    reports["typed_per_filter_config"] = {
        EXT_AUTHZ: {"@type": PER_ROUTE, "check_settings": {"context_extensions": declared}}
    }
    assert problems(document) == []


def test_host_rewrite_literal_may_name_the_origins_host_and_port() -> None:
    document = good_egress()
    action(document, "/pay/")["host_rewrite_literal"] = "payments.shop.svc:8443"
    cluster(document, "payments")["transport_socket"]["typed_config"]["sni"] = "pay.other.svc"
    endpoint_address(document, "payments")["address"] = "pay.other.svc"
    assert problems(document) == []


def test_authz_clusters_are_found_by_the_gateway_listener_address() -> None:
    document = good_egress()
    assert authz_clusters_for(document, [OUTBOUND_SOCKET]) == {"wimse_outbound"}
    assert authz_clusters_for(document, ["unix:///run/wimse/outbound.sock"]) == {"wimse_outbound"}
    assert authz_clusters_for(document, ["127.0.0.1:9191"]) == {"wimse_inbound"}
    assert authz_clusters_for(document, ["127.0.0.1:9192", "unix:/run/other.sock"]) == set()
