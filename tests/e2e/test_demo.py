"""`make run` as a user runs it (`wimse-authz demo`), on free ports in a fresh directory: it
comes up, the printed requests answer as the banner says, outbound included, and Ctrl-C
stops everything cleanly."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from authz.devtools.stack import REPO_ROOT, free_port, free_ports_in_a_row

pytestmark = pytest.mark.e2e


def _get(url: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def printed_command(banner: str, marker: str, nth: int = 0) -> str:
    """The `nth` command of the banner starting with `marker`, with its continuation lines."""
    lines = banner.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(marker)]
    first = starts[nth]
    end = first
    while lines[end].rstrip().endswith("\\"):
        end += 1
    return "\n".join(lines[first : end + 1])


def readme_check_command(ports: dict[str, int], demo: Path) -> str:
    """The README's `wimse-authz check` example, with this demo's ports and directory."""
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split("wimse-authz check --gateway", 1)[1]
    lines = ["wimse-authz check --gateway" + block.split("\n", 1)[0]]
    for line in block.split("\n")[1:]:
        lines.append(line)
        if not line.rstrip().endswith("\\"):
            break
    command = "\n".join(line.split("#")[0].rstrip() for line in lines)
    return (
        command.replace("127.0.0.1:9191", f"127.0.0.1:{ports['gateway']}")
        .replace("127.0.0.1:10000", f"127.0.0.1:{ports['envoy']}")
        .replace(".demo/", f"{demo}/")
        .replace("wimse-authz ", f"{sys.executable} -m authz ", 1)
    )


def test_the_demo_shows_inbound_and_outbound_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("envoy", "gateway", "upstream", "diagnostics", "app")}
    egress = free_ports_in_a_row(2)  # the egress Envoy's admin listener is egress + 1
    edge = free_ports_in_a_row(2)  # and the edge Envoy's edge + 1
    log = tmp_path / "demo.out"
    # A policy tried without editing the repository: a copy, served as is.
    policies = shutil.copytree(REPO_ROOT / "policies", tmp_path / "my-policies")
    args = [sys.executable, "-m", "authz", "demo", "--dir", str(tmp_path / "demo")]
    args += ["--policy", str(policies)]
    for name, port in ports.items():
        args += [f"--{name}-port", str(port)]
    args += ["--egress-port", str(egress), "--edge-port", str(edge)]
    with log.open("wb") as output:
        demo = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while "Press Ctrl-C" not in log.read_text(errors="replace"):
                assert demo.poll() is None, log.read_text(errors="replace")
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.2)
            banner = log.read_text()
            assert f"policies  {policies}" in banner
            config = yaml.safe_load((tmp_path / "demo" / "gateway.yaml").read_text())
            assert config["policy"]["directory"] == str(policies)
            app = f"http://127.0.0.1:{ports['app']}"
            assert f"curl -s {app}/api/hello" in banner

            status, body = _get(f"{app}/api/hello")
            assert status == 200, body
            received = json.loads(body)["headers"]
            assert received["x-wimse-caller"] == "spiffe://demo.example/frontend"
            assert received["x-wimse-authenticated-by"] == "wpt"
            status, body = _get(f"{app}/echo/hello")
            assert (status, json.loads(body)["path"]) == (200, "/api/hello")
            status, _ = _get(f"{app}/api/hello", method="DELETE")
            assert status == 403
            # The edge: the printed curl, run as printed.
            lines = banner.splitlines()
            first = next(i for i, text in enumerate(lines) if text.startswith("curl -s -X POST"))
            command = "\n".join(lines[first : first + 2])  # a shell continuation line
            answer = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, timeout=30, check=True
            )
            at_echo = json.loads(answer.stdout)["headers"]
            assert at_echo["x-wimse-caller"] == "spiffe://demo.example/frontend"
            assert "txn-token" in at_echo
            assert "authorization" not in at_echo
            # The README's `check` example, against this demo (its ports and directory).
            verdict = subprocess.run(
                ["bash", "-c", readme_check_command(ports, tmp_path / "demo")],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert verdict.returncode == 0, verdict.stdout + verdict.stderr
            assert "allow" in verdict.stdout.lower()
            # The banner's own commands: the check straight to the gateway, and the call
            # with a Txn-Token and an attestation result.
            for marker in (".venv/bin/wimse-authz check", "curl -si"):
                command = printed_command(banner, marker, nth=-1)
                command = command.replace(".venv/bin/wimse-authz", f"{sys.executable} -m authz")
                ran = subprocess.run(
                    ["bash", "-c", command], capture_output=True, text=True, timeout=60, check=False
                )
                assert ran.returncode == 0, ran.stdout + ran.stderr
                assert "allow" in ran.stdout.lower() or " 200 " in ran.stdout, ran.stdout
        finally:
            demo.send_signal(signal.SIGINT)
            code = demo.wait(timeout=60)
    assert code == 0, log.read_text(errors="replace")
    assert "stopping" in log.read_text()


def test_a_demo_port_in_use_is_named_with_the_flag_to_change(tmp_path: Path) -> None:
    """Checked before anything starts, so the answer does not wait for the demo's own
    start-up timeout."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        demo = [sys.executable, "-m", "authz", "demo", "--dir", str(tmp_path)]
        result = subprocess.run(
            [*demo, "--envoy-port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert f"--envoy-port {port}: its port is in use; choose another with --envoy-port" in (
        result.stdout + result.stderr
    )
