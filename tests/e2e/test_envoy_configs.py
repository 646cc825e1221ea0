"""Every Envoy configuration in the repository passes `envoy --mode validate`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from authz.devtools.stack import REPO_ROOT, Ports, envoy_binary, envoy_config, write_yaml


def envoy_yamls() -> list[Path]:
    found = []
    for path in sorted(REPO_ROOT.rglob("*.yaml")):
        if any(part in (".venv", ".demo", "results") for part in path.parts):
            continue
        document = yaml.safe_load(path.read_text())
        if isinstance(document, dict) and "static_resources" in document:
            found.append(path)
    return found


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
def test_envoy_config_validates(path: Path) -> None:
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_stack_configs_validate(tmp_path: Path) -> None:
    tcp = write_yaml(tmp_path / "tcp.yaml", envoy_config(Ports.free()))
    unix = write_yaml(
        tmp_path / "unix.yaml",
        envoy_config(Ports.free(), gateway_address={"pipe": {"path": "/run/wimse/authz.sock"}}),
    )
    for path in (tcp, unix):
        result = validate(path)
        assert result.returncode == 0, result.stdout + result.stderr


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
