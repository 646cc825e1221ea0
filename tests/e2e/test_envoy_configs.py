"""Every Envoy configuration in the repository passes `envoy --mode validate`."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

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
VARIANTS = ("gateway-uds.yaml", "gateway-tls.yaml", "gateway-mtls.yaml")
"""gateway.yaml reaching the gateway another way; each is tested through Envoy too."""


def envoy_yamls() -> list[Path]:
    found = []
    for path in sorted(REPO_ROOT.rglob("*.yaml")):
        if any(part in (".venv", ".demo", "results") for part in path.parts):
            continue
        document = yaml.safe_load(path.read_text())
        if isinstance(document, dict) and "static_resources" in document:
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


@pytest.mark.parametrize("name", ["gateway-tls.yaml", "gateway-mtls.yaml"])
def test_tls_variants_verify_the_gateways_certificate_and_name(name: str) -> None:
    cluster = gateway_cluster(yaml.safe_load((ENVOY_DIR / name).read_text()))
    tls = cluster["transport_socket"]["typed_config"]
    validation = tls["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"]["filename"]
    assert validation["match_typed_subject_alt_names"][0]["matcher"]["exact"] == tls["sni"]
    assert tls["common_tls_context"]["alpn_protocols"] == ["h2"]
    client_certificates = tls["common_tls_context"].get("tls_certificates")
    assert bool(client_certificates) == (name == "gateway-mtls.yaml")


def test_validation_catches_a_broken_config(tmp_path: Path) -> None:
    document = envoy_config(Ports.free())
    document["static_resources"]["clusters"][0]["type"] = "NOT_A_TYPE"
    assert validate(write_yaml(tmp_path / "broken.yaml", document)).returncode != 0


@pytest.mark.parametrize("path", envoy_yamls(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_config_answers_503_when_the_gateway_fails(path: Path) -> None:
    """Envoy's default status_on_error is 403, which would make an outage look like a denial."""
    text = path.read_text()
    if "envoy.filters.http.ext_authz" not in text:
        pytest.skip("no ext_authz filter")
    document = yaml.safe_load(text)
    filters = [
        f
        for listener in document["static_resources"]["listeners"]
        for chain in listener["filter_chains"]
        for network in chain["filters"]
        for f in network["typed_config"].get("http_filters", [])
        if f["name"] == "envoy.filters.http.ext_authz"
    ]
    assert filters
    for ext_authz in filters:
        config = ext_authz["typed_config"]
        assert config["status_on_error"]["code"] == "ServiceUnavailable"
        assert config.get("failure_mode_allow", False) is False


def connection_managers(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        network["typed_config"]
        for listener in document["static_resources"]["listeners"]
        for chain in listener["filter_chains"]
        for network in chain["filters"]
        if network["name"] == "envoy.filters.network.http_connection_manager"
    ]


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
            per_filter = first["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
            assert per_filter["disabled"] is True
