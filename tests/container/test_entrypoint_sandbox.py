"""The image's entrypoint as a real process under the image's constraints, without a container
runtime (none runs here): the image's virtual environment at its path, the configuration
mounted at /etc/wimse-authz, the root filesystem read-only but for the paths the Dockerfile
declares writable, as the image's non-root uid with no capabilities (see `image.py` for what
stands in for what, and `sandbox.py` for how). Then a real Envoy sends it Checks.

Needs root (mounts in a private mount namespace); skipped without, except under CI=true, where
it fails (CI runs as root).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.devtools.mint import mint_wit, mint_wpt
from authz.devtools.redis import RedisServer
from authz.devtools.stack import (
    ENVOY_TEMPLATE,
    POLICY_DIR,
    REPO_ROOT,
    Identities,
    ManagedProcess,
    Ports,
    envoy_config,
    envoy_process,
    free_port,
    free_ports_in_a_row,
    wait_for_http,
    write_yaml,
)
from tests.container.image import (
    ImageFacts,
    SandboxRefused,
    build_image_venv,
    image_facts,
    image_spec,
    sandbox_command,
    sandbox_unavailable,
    skip_or_fail,
)

pytestmark = pytest.mark.e2e
pytest_plugins = ("tests.redis_server",)  # the `redis_server` fixture

COMPOSE_DIR = REPO_ROOT / "deploy" / "compose"
WORKERS_TEMPLATE = REPO_ROOT / "deploy" / "envoy" / "gateway-workers.yaml"


@pytest.fixture(scope="module")
def facts() -> ImageFacts:
    return image_facts()


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory, facts: ImageFacts) -> Path:
    reason = sandbox_unavailable()
    if reason is not None:
        skip_or_fail(reason)
    try:
        return build_image_venv(tmp_path_factory.mktemp("image"), facts)
    except SandboxRefused as exc:
        skip_or_fail(f"the sandbox's mounts are not permitted here: {exc}")


def image_etc(directory: Path, config: Mapping[str, Any], identity_dir: Path) -> Path:
    """What is mounted at /etc/wimse-authz: the configuration, the demo trust domain's public
    keys and the sample policies (as the Compose example mounts them)."""
    etc = directory / "etc"
    etc.mkdir(mode=0o755, parents=True)
    etc.chmod(0o755)
    write_yaml(etc / "gateway.yaml", config)
    shutil.copytree(identity_dir / "trust", etc / "trust")
    shutil.copytree(POLICY_DIR, etc / "policies")
    return etc


def compose_gateway_config(
    ports: Ports, diagnostics_port: int, redis_url: str | None
) -> dict[str, Any]:
    """deploy/compose/gateway.yaml with this machine's loopback addresses in place of the
    Compose network's (and no Redis when `redis_url` is None)."""
    config: dict[str, Any] = yaml.safe_load((COMPOSE_DIR / "gateway.yaml").read_text())
    config["server"]["listeners"][0]["address"] = f"127.0.0.1:{ports.gateway}"
    config["diagnostics"]["address"] = f"127.0.0.1:{diagnostics_port}"
    config["services"]["echo"]["origins"] = [ports.origin]
    if redis_url is None:
        del config["replay"]
    else:
        config["replay"]["redis"]["url"] = redis_url
    return config


def compose_upstream_command(port: int) -> list[str]:
    """The Compose example's upstream command, on loopback and `port`."""
    compose = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    command = [str(word) for word in compose["services"]["upstream"]["entrypoint"]]
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    return command


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


def get(url: str, headers: Mapping[str, str]) -> Answer:
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return Answer(
                answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
            )
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def signed_headers(identities: Identities, ports: Ports, path: str) -> dict[str, str]:
    key = identities.workloads["frontend"]
    wit = mint_wit(identities.issuer, identities.workload_id("frontend"), key)
    return {
        "workload-identity-token": wit,
        "authorization": f"WPT {mint_wpt(key, wit, ports.origin + path)}",
    }


def process_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {name: value.strip() for name, _, value in (line.partition(":") for line in lines)}


def process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(p for child in children for p in process_tree(int(child)))]


def wait_while_running(url: str, processes: list[ManagedProcess], timeout: float = 60) -> None:
    """Until `url` answers 200; TimeoutError at once when one of `processes` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exited = [process.name for process in processes if not process.running()]
        if exited:
            raise TimeoutError(f"{', '.join(exited)} exited")
        try:
            wait_for_http(url, timeout=1)
        except TimeoutError:
            continue
        return
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s")


@dataclass
class ImageStack:
    ports: Ports
    gateway: ManagedProcess
    processes: list[ManagedProcess]

    @property
    def gateway_pid(self) -> int:
        assert self.gateway.process is not None
        return self.gateway.process.pid

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail(40)}" for p in self.processes)


def sandboxed(
    name: str, directory: Path, facts: ImageFacts, venv: Path, etc: Path, argv: list[str]
) -> ManagedProcess:
    spec = image_spec(directory / name, facts, venv, etc, argv)
    command = sandbox_command(spec, directory / f"{name}.json")
    return ManagedProcess(name, command, directory / f"{name}.log")


StartImage = Callable[[Ports, Mapping[str, Any], list[str], Path], ImageStack]
"""(ports, gateway configuration, arguments after the entrypoint, Envoy template) → stack."""


@pytest.fixture
def start_image(
    tmp_path: Path, facts: ImageFacts, image_venv: Path, identity_dir: Path, identities: Identities
) -> Iterator[StartImage]:
    """Starts the upstream (the Compose example's command) and the gateway (the entrypoint,
    with extra arguments) under the image's constraints, then Envoy in front of them."""
    started: list[ImageStack] = []

    def start(
        ports: Ports, config: Mapping[str, Any], arguments: list[str], envoy_template: Path
    ) -> ImageStack:
        diagnostics_port = int(config["diagnostics"]["address"].rpartition(":")[2])
        etc = image_etc(tmp_path, config, identity_dir)
        upstream = sandboxed(
            "upstream", tmp_path, facts, image_venv, etc, compose_upstream_command(ports.upstream)
        )
        gateway = sandboxed(
            "gateway", tmp_path, facts, image_venv, etc, [*facts.command, *arguments]
        )
        stack = ImageStack(ports, gateway, [upstream.start(), gateway.start()])
        started.append(stack)
        envoy_yaml = write_yaml(
            tmp_path / "envoy.yaml", envoy_config(ports, template=envoy_template)
        )
        try:
            wait_while_running(f"http://127.0.0.1:{diagnostics_port}/readyz", stack.processes)
            stack.processes.append(envoy_process(envoy_yaml, tmp_path / "envoy.log").start())
            wait_for_http(f"http://127.0.0.1:{ports.admin}/ready", timeout=30)
            wait_for_http(f"{ports.origin}/healthz", timeout=30)
        except TimeoutError as exc:
            pytest.fail(f"the image's processes did not come up: {exc}\n{stack.logs()}")
        return stack

    yield start
    for stack in started:
        for process in reversed(stack.processes):
            process.stop()


def test_the_image_user_can_write_only_to_the_declared_paths(
    tmp_path: Path, facts: ImageFacts, image_venv: Path
) -> None:
    """The constraints the other tests run under hold: read-only root, the declared paths
    writable, the image's uid without groups or capabilities, the project from the image's
    virtual environment (not this checkout)."""
    probe = (
        "import json, os, sys, tempfile, authz\n"
        "def writable(d):\n"
        "    try:\n"
        "        fd, p = tempfile.mkstemp(dir=d)\n"
        "    except OSError:\n"
        "        return False\n"
        "    os.close(fd); os.unlink(p)\n"
        "    return True\n"
        "status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines())\n"
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups(),\n"
        "    'no_new_privs': status['NoNewPrivs'], 'capabilities': status['CapEff'],\n"
        "    'prefix': sys.prefix, 'authz': authz.__file__,\n"
        "    'writable': {d: writable(d) for d in sys.argv[1:]}}))\n"
    )
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755)
    candidates = ["/", "/etc", str(facts.config_path.parent), str(facts.venv), "/var/tmp"]
    candidates += [str(REPO_ROOT), *(str(p) for p in facts.writable)]
    spec = image_spec(tmp_path, facts, image_venv, etc, ["python", "-c", probe, *candidates])
    result = subprocess.run(
        sandbox_command(spec, tmp_path / "probe.json"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert (seen["uid"], seen["gid"], seen["groups"]) == (facts.uid, facts.gid, [])
    assert seen["no_new_privs"] == "1"
    assert int(seen["capabilities"], 16) == 0
    assert seen["prefix"] == str(facts.venv)
    assert seen["authz"].startswith(f"{facts.venv}/")
    assert [d for d, ok in seen["writable"].items() if ok] == [str(p) for p in facts.writable]


def test_entrypoint_serves_checks_through_envoy_as_the_image_user_with_a_read_only_root(
    start_image: StartImage, facts: ImageFacts, identities: Identities, redis_server: RedisServer
) -> None:
    """One process, sharing Redis as in the Compose example: ready, allows the demo's signed
    request, and refuses the same proof again (the replay record is in Redis)."""
    ports = Ports.free()
    diagnostics = free_port()
    stack = start_image(
        ports, compose_gateway_config(ports, diagnostics, redis_server.url), [], ENVOY_TEMPLATE
    )
    status = process_status(stack.gateway_pid)
    assert status["Uid"].split() == [str(facts.uid)] * 4
    assert status["Gid"].split() == [str(facts.gid)] * 4
    assert status["NoNewPrivs"] == "1"

    headers = signed_headers(identities, ports, "/api/hello")
    first = get(f"{ports.origin}/api/hello", headers)
    assert first.status == 200, (first, stack.logs())
    echoed = json.loads(first.body)["headers"]
    assert echoed["x-wimse-caller"] == identities.workload_id("frontend")
    assert "authorization" not in echoed
    again = get(f"{ports.origin}/api/hello", headers)
    assert (again.status, again.headers.get("x-wimse-authz-reason")) == (401, "wpt.replayed")
    assert redis_server.client().dbsize() >= 1


def test_entrypoint_with_two_workers_shares_its_replay_table_in_dev_shm(
    start_image: StartImage, facts: ImageFacts, identities: Identities
) -> None:
    """`--workers 2` after the entrypoint (as `docker run IMAGE --workers 2` passes it): the
    supervisor keeps its private directory with the shared replay table in the writable
    /dev/shm, every process runs as the image's user, and Envoy's checks are answered."""
    first_port = free_ports_in_a_row(2)
    free = Ports.free()
    ports = Ports(free.envoy, free.admin, first_port, free.upstream)
    diagnostics = free_port()
    stack = start_image(
        ports,
        compose_gateway_config(ports, diagnostics, None),
        ["--workers", "2"],
        WORKERS_TEMPLATE,
    )
    tree = process_tree(stack.gateway_pid)
    assert len(tree) == 3, tree
    for pid in tree:
        assert process_status(pid)["Uid"].split() == [str(facts.uid)] * 4
    # The sandbox's /dev/shm, seen through the supervisor's own root.
    shm = Path(f"/proc/{stack.gateway_pid}/root/dev/shm")
    private = [p for p in shm.iterdir() if p.name.startswith("wimse-authz-")]
    assert len(private) == 1
    assert (private[0] / "replay.table").is_file()

    headers = signed_headers(identities, ports, "/api/hello")
    first = get(f"{ports.origin}/api/hello", headers)
    assert first.status == 200, (first, stack.logs())
    again = get(f"{ports.origin}/api/hello", headers)
    assert (again.status, again.headers.get("x-wimse-authz-reason")) == (401, "wpt.replayed")
