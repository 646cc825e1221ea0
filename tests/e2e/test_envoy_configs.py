"""Every Envoy configuration in the repository passes `envoy --mode validate`."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.config import worker_address
from authz.devtools.certs import CertificateAuthority, write_pem
from authz.devtools.stack import (
    ENVOY_TEMPLATE,
    REPO_ROOT,
    Ports,
    envoy_binary,
    envoy_config,
    relocate_files,
    write_yaml,
)

ENVOY_DIR = REPO_ROOT / "deploy" / "envoy"
VARIANTS = (
    "gateway-uds.yaml",
    "gateway-tls.yaml",
    "gateway-mtls.yaml",
    "gateway-workers.yaml",
    "gateway-kubernetes.yaml",
)
"""gateway.yaml reaching the gateway another way; each is tested through Envoy too."""


def envoy_yamls() -> list[Path]:
    found = []
    for path in sorted(REPO_ROOT.rglob("*.yaml")):
        if any(part in (".venv", ".demo", "results") for part in path.parts):
            continue
        # Kubernetes manifests hold several documents; an Envoy bootstrap is one.
        documents = list(yaml.safe_load_all(path.read_text()))
        if (
            len(documents) == 1
            and isinstance(documents[0], dict)
            and "static_resources" in documents[0]
        ):
            found.append(path)
    return found


@pytest.fixture(scope="module")
def envoy_certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files under the names the examples give Envoy: Envoy loads them while validating."""
    directory = tmp_path_factory.mktemp("envoy-tls")
    ca = CertificateAuthority.create("wimse-authz ca")
    envoy = ca.issue("envoy", uris=["spiffe://demo.example/envoy"], server=False, client=True)
    write_pem(directory / "ca.pem", ca.cert_pem)
    write_pem(directory / "envoy.pem", envoy.chain_pem)
    write_pem(directory / "envoy-key.pem", envoy.key_pem)
    # The system's CA bundle, which the sidecar's egress cluster trusts for its callee.
    write_pem(directory / "ca-certificates.crt", ca.cert_pem)
    return directory


def names_files(node: Any) -> bool:
    if isinstance(node, dict):
        return "filename" in node or any(names_files(value) for value in node.values())
    if isinstance(node, list):
        return any(names_files(item) for item in node)
    return False


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_repository_ships_envoy_configs() -> None:
    assert envoy_yamls(), "no Envoy configuration found under deploy/"


@pytest.mark.parametrize("path", envoy_yamls(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_envoy_config_validates(path: Path, envoy_certificates: Path, tmp_path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    if names_files(document):
        # Envoy reads every certificate file it names while validating: give it real ones.
        relocate_files(document, envoy_certificates)
        path = write_yaml(tmp_path / path.name, document)
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_stack_configs_validate(tmp_path: Path, envoy_certificates: Path) -> None:
    tcp = write_yaml(tmp_path / "tcp.yaml", envoy_config(Ports.free()))
    unix = write_yaml(
        tmp_path / "unix.yaml",
        envoy_config(Ports.free(), gateway_address={"pipe": {"path": "/run/wimse/authz.sock"}}),
    )
    variants = [
        write_yaml(
            tmp_path / name,
            envoy_config(
                Ports.free(),
                template=ENVOY_DIR / name,
                gateway_address={"pipe": {"path": "/run/authz.sock"}} if "uds" in name else None,
                tls_dir=envoy_certificates,
            ),
        )
        for name in VARIANTS
    ]
    for path in (tcp, unix, *variants):
        result = validate(path)
        assert result.returncode == 0, result.stdout + result.stderr


def gateway_cluster(document: dict[str, Any]) -> dict[str, Any]:
    clusters = document["static_resources"]["clusters"]
    cluster: dict[str, Any] = next(c for c in clusters if c["name"] == "wimse_authz")
    return cluster


@pytest.mark.parametrize("name", VARIANTS)
def test_variants_differ_from_gateway_yaml_only_in_the_gateway_cluster(name: str) -> None:
    """What gateway.yaml gets right (routes, status_on_error, header stripping) holds in
    every variant; only how Envoy reaches the gateway differs."""
    base = yaml.safe_load(ENVOY_TEMPLATE.read_text())
    variant = yaml.safe_load((ENVOY_DIR / name).read_text())
    for document in (base, variant):
        document["static_resources"]["clusters"].remove(gateway_cluster(document))
    assert variant == base, f"apply gateway.yaml's change to {name} too"
    protocol = "typed_extension_protocol_options"
    assert (
        gateway_cluster(yaml.safe_load((ENVOY_DIR / name).read_text()))[protocol]
        == (gateway_cluster(yaml.safe_load(ENVOY_TEMPLATE.read_text()))[protocol])
    ), "HTTP/2 to the gateway"


def test_the_workers_variant_lists_every_workers_port() -> None:
    """`serve --workers N` listens on the configured port and the N-1 after it."""
    cluster = gateway_cluster(yaml.safe_load((ENVOY_DIR / "gateway-workers.yaml").read_text()))
    addresses = [
        lb["endpoint"]["address"]["socket_address"]
        for lb in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    listener = f"{addresses[0]['address']}:{addresses[0]['port_value']}"
    assert len(addresses) == 2
    assert [f"{a['address']}:{a['port_value']}" for a in addresses] == [
        worker_address(listener, index) for index in range(len(addresses))
    ]
    ports = Ports.free()
    generated = gateway_cluster(envoy_config(ports, template=ENVOY_DIR / "gateway-workers.yaml"))[
        "load_assignment"
    ]["endpoints"][0]["lb_endpoints"]
    assert [lb["endpoint"]["address"]["socket_address"]["port_value"] for lb in generated] == [
        ports.gateway,
        ports.gateway + 1,
    ]


@pytest.mark.parametrize("path", envoy_yamls(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_idle_gateway_endpoints_are_health_checked_within_seconds(path: Path) -> None:
    """Envoy's default no_traffic_interval is 60 s: an endpoint NOT_SERVING at the first
    check (a worker still loading) would otherwise be left out for a minute."""
    document = yaml.safe_load(path.read_text())
    if not any(c["name"] == "wimse_authz" for c in document["static_resources"]["clusters"]):
        pytest.skip("no gateway cluster")
    checks = gateway_cluster(document)["health_checks"]
    assert checks
    for check in checks:
        interval = check.get("no_traffic_interval", "60s")
        assert interval.endswith("s")
        assert float(interval.removesuffix("s")) <= 5


MUTUAL_TLS_VARIANTS = ("gateway-mtls.yaml", "gateway-kubernetes.yaml")


@pytest.mark.parametrize("name", ["gateway-tls.yaml", *MUTUAL_TLS_VARIANTS])
def test_tls_variants_verify_the_gateways_certificate_and_name(name: str) -> None:
    cluster = gateway_cluster(yaml.safe_load((ENVOY_DIR / name).read_text()))
    tls = cluster["transport_socket"]["typed_config"]
    validation = tls["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"]["filename"]
    assert validation["match_typed_subject_alt_names"][0]["matcher"]["exact"] == tls["sni"]
    assert tls["common_tls_context"]["alpn_protocols"] == ["h2"]
    client_certificates = tls["common_tls_context"].get("tls_certificates")
    assert bool(client_certificates) == (name in MUTUAL_TLS_VARIANTS)


def test_validation_catches_a_broken_config(tmp_path: Path) -> None:
    document = envoy_config(Ports.free())
    document["static_resources"]["clusters"][0]["type"] = "NOT_A_TYPE"
    assert validate(write_yaml(tmp_path / "broken.yaml", document)).returncode != 0


@pytest.mark.parametrize("path", envoy_yamls(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_config_answers_503_when_the_gateway_fails(path: Path) -> None:
    """Envoy's default status_on_error is 403, which would make an outage look like a denial."""
    text = path.read_text()
    if "ext_authz.v3.ExtAuthz" not in text:
        pytest.skip("no ext_authz filter")
    document = yaml.safe_load(text)
    filters = [
        f
        for listener in document["static_resources"]["listeners"]
        for chain in listener["filter_chains"]
        for network in chain["filters"]
        for f in network["typed_config"].get("http_filters", [])
        if f.get("typed_config", {}).get("@type", "").endswith("ext_authz.v3.ExtAuthz")
    ]
    assert filters
    for ext_authz in filters:
        config = ext_authz["typed_config"]
        assert config["status_on_error"]["code"] == "ServiceUnavailable"
        assert config.get("failure_mode_allow", False) is False


EXT_AUTHZ = "envoy.filters.http.ext_authz"
BODY_KEY = "wimse.body"


def connection_managers(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every HTTP connection manager's config in a static Envoy configuration."""
    return [
        network["typed_config"]
        for listener in document.get("static_resources", {}).get("listeners", [])
        for chain in listener.get("filter_chains", [])
        for network in chain.get("filters", [])
        if "http_filters" in network.get("typed_config", {})
    ]


def ext_authz_filter_names(manager: dict[str, Any]) -> list[str]:
    """The names the ext_authz filters of a connection manager go by (per-route settings
    are keyed by them)."""
    return [
        f["name"]
        for f in manager["http_filters"]
        if f.get("typed_config", {}).get("@type", "").endswith("ext_authz.v3.ExtAuthz")
    ]


def route_ext_authz(*levels: dict[str, Any]) -> tuple[dict[str, str], bool, list[Any]]:
    """A route's ext_authz settings from its virtual host and itself: its context
    extensions (the route's win), whether any level turns body buffering off, and the
    `with_request_body` settings any level sets."""
    context: dict[str, str] = {}
    no_buffering = False
    bodies: list[Any] = []
    for level in levels:
        settings = level.get("typed_per_filter_config", {}).get(EXT_AUTHZ, {})
        check = settings.get("check_settings", {})
        context |= check.get("context_extensions", {})
        no_buffering |= bool(check.get("disable_request_body_buffering", False))
        if "with_request_body" in check:
            bodies.append(check["with_request_body"])
    return context, no_buffering, bodies


def forwards_whole_bytes(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and body.get("pack_as_bytes") is True
        and body.get("allow_partial_message", False) is False
        and int(body.get("max_request_bytes", 0)) > 0
    )


def body_forwarding_problems(document: dict[str, Any]) -> list[str]:
    """Why a route declaring `wimse.body: forwarded` might not get its body whole and as
    bytes (the gateway then accepts signatures over a body it may not see); empty if none."""
    problems = []
    for manager in connection_managers(document):
        filters = [f for f in manager["http_filters"] if f["name"] == EXT_AUTHZ]
        filter_body = filters[0]["typed_config"].get("with_request_body") if filters else None
        for host in manager.get("route_config", {}).get("virtual_hosts", []):
            for route in host.get("routes", []):
                where = f"{host['name']} {route.get('match')}"
                context, no_buffering, bodies = route_ext_authz(host, route)
                if BODY_KEY not in context:
                    continue
                if context[BODY_KEY] != "forwarded":
                    problems.append(f"{where}: {BODY_KEY} is {context[BODY_KEY]!r}")
                if no_buffering:
                    problems.append(f"{where}: declares {BODY_KEY} but disables buffering")
                # Measured on Envoy 1.40: a per-route with_request_body ignores
                # pack_as_bytes, so the filter's own settings must forward bytes.
                if not forwards_whole_bytes(filter_body):
                    problems.append(f"{where}: the ext_authz filter does not forward bodies")
                problems.extend(
                    f"{where}: its with_request_body may cut or re-encode the body"
                    for body in bodies
                    if not forwards_whole_bytes(body)
                )
    return problems


@pytest.mark.parametrize("path", envoy_yamls(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_routes_declaring_wimse_body_get_whole_bodies_as_bytes(path: Path) -> None:
    assert body_forwarding_problems(yaml.safe_load(path.read_text())) == []


def test_some_shipped_route_accepts_http_signatures() -> None:
    """The check above is not vacuous: the demo's catch-all route declares it."""
    declaring = [
        path
        for path in envoy_yamls()
        for manager in connection_managers(yaml.safe_load(path.read_text()))
        for host in manager.get("route_config", {}).get("virtual_hosts", [])
        for route in host.get("routes", [])
        if route_ext_authz(host, route)[0].get(BODY_KEY) == "forwarded"
    ]
    assert ENVOY_TEMPLATE in declaring


def test_a_route_that_needs_no_body_does_not_declare_wimse_body() -> None:
    """`/api/canary/` turns buffering off, so HTTP signatures must be refused there."""
    manager = connection_managers(yaml.safe_load(ENVOY_TEMPLATE.read_text()))[0]
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    canary = next(r for r in routes if r["match"] == {"prefix": "/api/canary/"})
    context, no_buffering, _ = route_ext_authz(canary)
    assert no_buffering
    assert BODY_KEY not in context


def _catch_all(document: dict[str, Any]) -> dict[str, Any]:
    routes = connection_managers(document)[0]["route_config"]["virtual_hosts"][0]["routes"]
    route: dict[str, Any] = next(r for r in routes if r["match"] == {"prefix": "/"})
    return route


def _filter(document: dict[str, Any]) -> dict[str, Any]:
    http_filters = connection_managers(document)[0]["http_filters"]
    ext_authz = next(f for f in http_filters if f["name"] == EXT_AUTHZ)
    config: dict[str, Any] = ext_authz["typed_config"]
    return config


def _partial_allowed(document: dict[str, Any]) -> None:
    _filter(document)["with_request_body"]["allow_partial_message"] = True


def _text_bodies(document: dict[str, Any]) -> None:
    del _filter(document)["with_request_body"]["pack_as_bytes"]


def _no_filter_body(document: dict[str, Any]) -> None:
    del _filter(document)["with_request_body"]


def _buffering_off(document: dict[str, Any]) -> None:
    check = _catch_all(document)["typed_per_filter_config"][EXT_AUTHZ]["check_settings"]
    check["disable_request_body_buffering"] = True


def _route_partial_body(document: dict[str, Any]) -> None:
    check = _catch_all(document)["typed_per_filter_config"][EXT_AUTHZ]["check_settings"]
    check["with_request_body"] = {"max_request_bytes": 1024, "allow_partial_message": True}


def _typo(document: dict[str, Any]) -> None:
    check = _catch_all(document)["typed_per_filter_config"][EXT_AUTHZ]["check_settings"]
    check["context_extensions"][BODY_KEY] = "forward"


def _declared_on_the_host(document: dict[str, Any]) -> None:
    host = connection_managers(document)[0]["route_config"]["virtual_hosts"][0]
    per_route = {"check_settings": {"context_extensions": {BODY_KEY: "forwarded"}}}
    host["typed_per_filter_config"] = {EXT_AUTHZ: per_route}


@pytest.mark.parametrize(
    "breakage",
    [
        _partial_allowed,
        _text_bodies,
        _no_filter_body,
        _buffering_off,
        _route_partial_body,
        _typo,
        _declared_on_the_host,  # so the canary route, which turns buffering off, inherits it
    ],
)
def test_the_body_forwarding_check_catches_a_broken_config(breakage: Any) -> None:
    document = yaml.safe_load(ENVOY_TEMPLATE.read_text())
    assert body_forwarding_problems(document) == []
    breakage(document)
    assert body_forwarding_problems(document) != []


@pytest.mark.parametrize("path", envoy_yamls(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_config_forwards_only_canonical_paths(path: Path) -> None:
    """Slashes merged, dot segments resolved, escaped slashes and `;` path parameters
    refused (by a first route, before ext_authz): the path the policy matches is the one
    the upstream serves. See deploy/envoy/README.md."""
    managers = connection_managers(yaml.safe_load(path.read_text()))
    assert managers
    for manager in managers:
        assert manager["normalize_path"] is True
        assert manager["merge_slashes"] is True
        assert manager["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
        for host in manager["route_config"]["virtual_hosts"]:
            first = host["routes"][0]
            assert first["match"] == {"safe_regex": {"regex": ".*(;|%3[Bb]).*"}}
            assert first["direct_response"]["status"] == 400
            # Every ext_authz filter of the chain (an edge has two) is off on that route.
            for name in ext_authz_filter_names(manager):
                assert first["typed_per_filter_config"][name]["disabled"] is True
