"""What a worker of `wimse-authz serve --workers N` is told by its supervisor, and how the
supervisor reaches it.

The supervisor owns a private directory (mode 0700) holding, for its workers:
- `settings.json`: the settings that need a restart to change (`RESTART_ONLY`) as the
  supervisor started with them. A worker started later (a restart after a crash) applies
  them over the configuration file it reads, so every worker listens, logs and records
  proofs the same way whatever the file says by then; a reload warns about the difference,
  as it does in a single process.
- `replay.table`: the replay table they share (`authz.replay.shared_memory`), unless
  `replay.redis` is the store.
- `worker-<i>.sock`: worker i's diagnostics (`/metrics`, `/healthz`, `/readyz`) on a Unix
  socket only the gateway's user can reach.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from authz.config import (
    RESTART_ONLY,
    Config,
    DecisionLogConfig,
    DenyListConfig,
    DiagnosticsConfig,
    ReplayConfig,
    ServerConfig,
    TracingConfig,
)
from authz.errors import ConfigError

log = logging.getLogger("authz.workers")

_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "diagnostics": DiagnosticsConfig,
    "decision_log": DecisionLogConfig,
    "deny_list": DenyListConfig,
    "replay": ReplayConfig,
    "tracing": TracingConfig,
}
assert set(_SECTIONS) == set(RESTART_ONLY)


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """Worker `index` of a supervisor whose private directory is `directory`; `lifeline_fd`
    is the read end of a pipe whose write end only the supervisor holds (end of file: the
    supervisor is gone)."""

    index: int
    directory: Path
    lifeline_fd: int | None = None

    @property
    def diagnostics_socket(self) -> Path:
        return diagnostics_socket(self.directory, self.index)

    @property
    def replay_table(self) -> Path:
        return replay_table(self.directory)

    def apply(self, config: Config) -> Config:
        """`config` with the supervisor's restart-only settings in place of its own
        (except `server.workers`, which a worker does not use: keeping the file's value
        spares every reload a warning when `--workers` overrode it)."""
        settings = read_settings(self.directory)
        settings["server"] = settings["server"].model_copy(
            update={"workers": config.server.workers}
        )
        changed = [name for name in RESTART_ONLY if getattr(config, name) != settings[name]]
        for name in changed:
            log.warning(
                "%s changed since the server started: this worker keeps the running value "
                "(it takes effect after a restart)",
                name,
            )
        return config.model_copy(update=settings) if changed else config


def diagnostics_socket(directory: Path, index: int) -> Path:
    return directory / f"worker-{index}.sock"


def replay_table(directory: Path) -> Path:
    return directory / "replay.table"


def write_settings(directory: Path, config: Config) -> None:
    """Record `config`'s restart-only settings for the workers (mode 0600)."""
    document = {name: _dump(getattr(config, name)) for name in RESTART_ONLY}
    path = directory / "settings.json"
    path.touch(mode=0o600, exist_ok=False)
    path.write_text(json.dumps(document), encoding="utf-8")


def read_settings(directory: Path) -> dict[str, Any]:
    """The restart-only settings the supervisor recorded; `ConfigError` if unreadable."""
    path = directory / "settings.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return {
            name: None if document[name] is None else _SECTIONS[name].model_validate(document[name])
            for name in RESTART_ONLY
        }
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path}: the supervisor's settings cannot be read: {exc}") from None


def _dump(section: Any) -> Any:
    return None if section is None else section.model_dump(mode="json")


class WorkerDiagnostics:
    """An HTTP client for one worker's diagnostics socket; `close()` when done."""

    def __init__(self, socket_path: Path, timeout: float) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(socket_path)),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def get(self, path: str) -> tuple[int, bytes]:
        """Status and body of `GET path`; raises `aiohttp.ClientError` or `TimeoutError`
        when the worker does not answer."""
        async with self._session.get(f"http://worker{path}") as response:
            return response.status, await response.read()

    async def json(self, path: str) -> tuple[int, Any]:
        status, body = await self.get(path)
        return status, json.loads(body)

    async def close(self) -> None:
        await self._session.close()
