"""The gateway's own log lines as a log pipeline reads them: `serve --log-format json` (or
`WIMSE_AUTHZ_LOG_FORMAT=json`) writes one JSON object a line, and a line written while a
check was decided carries that check's decision id, the one its answer carries."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from authz.devtools.check import GatewayAddress, answer_from_response, send_check
from authz.devtools.stack import (
    Identities,
    ManagedProcess,
    Ports,
    free_port,
    gateway_config,
    gateway_process,
    write_yaml,
)
from tests.e2e.stack import wait_for_gateway
from tests.support import check_request

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_json_log_lines_carry_the_decision_id_of_their_check(
    identity_dir: Path, identities: Identities, tmp_path: Path, how: str
) -> None:
    port = free_port()
    config = gateway_config(identity_dir, Ports(443, 1, port, 3), listeners=[f"127.0.0.1:{port}"])
    path = write_yaml(tmp_path / "gateway.yaml", config)
    log = tmp_path / "gateway.log"
    process = gateway_process(path, log)
    if how == "flag":
        process.args += ["--log-format", "json", "--log-level", "info"]
    else:
        process = ManagedProcess(
            "gateway", process.args, log, env={"WIMSE_AUTHZ_LOG_FORMAT": "json"}
        )
    process.start()
    try:
        wait_for_gateway(f"127.0.0.1:{port}", timeout=30)
        # No credentials and not a public path: denied, and the denial is logged.
        request = check_request("/api/hello", {"workload-identity-token": "not-a-jwt"})
        answer = answer_from_response(send_check(request, GatewayAddress(f"127.0.0.1:{port}")))
        assert not answer.allowed
        decision_id = answer.decision_id
        assert decision_id is not None
        deadline = time.monotonic() + 10
        while decision_id not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        process.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert lines, log.read_text()
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    about_the_check = [line for line in lines if line.get("decision_id") == decision_id]
    assert about_the_check, lines
    assert about_the_check[0]["logger"] == "authz.pipeline"
    # Never the token: the WIT was logged by its hash only.
    assert "not-a-jwt" not in log.read_text()
