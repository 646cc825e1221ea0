"""Checking a configuration before anything serves: what `config check` reports, and what
`serve --workers N` runs (`python -m authz.preflight CONFIG WORKERS`, in a process of its
own) before it starts a worker, so a configuration error stops it with one message instead
of N failing workers."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from authz.clock import system_clock
from authz.config import Config, load_config
from authz.errors import ConfigError
from authz.gateway import Runtime, build_gateway
from authz.policy.sources import load_configured_policy_set
from authz.policy.validation import validate
from authz.server.listeners import load_credentials


def check_configuration(config: Config, *, fetched_bundle_ok: bool = False) -> str | None:
    """Read every file the configuration names (listener certificates, keys, deny-list,
    Redis password), compile the policies and run their Rego tests, and build the gateway
    once; `ConfigError` for the first problem. Returns the policy revision that would serve.

    A policy bundle at a URL is fetched by the server: with `fetched_bundle_ok` everything
    but the policy is checked (None is returned), else it is refused (check a downloaded
    copy with `policy.bundle.file`).
    """
    load_credentials(config.server)
    policy = config.policy
    bundle = policy.bundle
    if policy.backend == "embedded" and bundle is not None and bundle.url is not None:
        if not fetched_bundle_ok:
            raise ConfigError(
                f"policy.bundle.url {bundle.url}: the server fetches it; "
                "check a downloaded copy with policy.bundle.file"
            )
        Runtime.create(config, system_clock).close()
        return None
    policy_set = None
    if policy.backend == "embedded":
        policy_set = load_configured_policy_set(policy)
        report = validate(policy_set, policy.decision, policy.reload.run_policy_tests)
        if not report.ok:
            raise ConfigError(f"{policy_set.origin}: {report.describe()}")
    gateway = build_gateway(config, policy_set=policy_set)
    gateway.runtime.close()
    revision: str = gateway.pipeline.engine.revision
    return revision


def main(argv: Sequence[str]) -> int:
    """`CONFIG WORKERS`: exit 0 when the configuration can serve with that many workers,
    else 2 with the problem on stderr."""
    config_path, workers = argv
    try:
        config = load_config(Path(config_path)).with_workers(int(workers))
        check_configuration(config, fetched_bundle_ok=True)
    except ConfigError as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
