"""`wimse-authz serve --workers N`: a supervisor and N gateway processes on one machine.

One Python process serves on one core, and Envoy keeps one HTTP/2 connection per worker
thread per endpoint, so several processes share the load only on separate endpoints. Each
worker is a complete gateway (`serve` with a `WorkerRole`) on its own endpoint per
configured listener (`authz.config.worker_address`: TCP ports `port .. port+N-1`, Unix
sockets `name-0.sock ..`); the Envoy cluster lists them all.

The supervisor:
- checks the configuration as `config check` does and refuses any endpoint already in use,
  before starting a worker (`ConfigError`, `OSError`);
- creates a private directory (0700) with the restart-only settings, the shared replay
  table (unless `replay.redis` is the store) and the workers' diagnostics sockets, and
  removes it when it stops;
- restarts a worker that exits, after a backoff (0.5 s doubling to 30 s; back to 0.5 s
  after a run of 30 s or more); a worker that exits `START_FAILURES` times in a row
  without becoming ready stops everything, and the supervisor exits with its exit code;
- forwards SIGHUP to every worker (each reloads); on SIGTERM or SIGINT sends every worker
  SIGTERM (each drains its in-flight checks) and returns 0 once they have exited;
- answers `diagnostics.address` for all of them: `/readyz` ready only when every worker
  is, `/healthz` alive only while every worker is, `/metrics` every worker's metrics
  labelled `worker="<i>"` (`authz.observability.worker_metrics`).

Workers run in their own session, so a terminal's Ctrl-C reaches only the supervisor, and
hold the read end of a pipe only the supervisor writes to: when the supervisor ends, however
it ends, each worker drains and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import disable_created_metrics

from authz.config import Config
from authz.errors import ConfigError
from authz.observability.diagnostics import DiagnosticsServer, Readiness
from authz.observability.worker_metrics import SupervisorMetrics
from authz.replay.shared_memory import create_replay_table, slots_for
from authz.server.endpoints import refuse_listeners_in_use
from authz.server.workers import (
    WorkerDiagnostics,
    diagnostics_socket,
    replay_table,
    write_settings,
)

log = logging.getLogger("authz.supervisor")

START_FAILURES = 3
"""Consecutive exits before becoming ready after which a worker is given up on."""

BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
STABLE_SECONDS = 30.0
"""A worker that ran this long before exiting is restarted after the first backoff again."""

ANSWER_SECONDS = 1.0
"""How long a worker may take to answer a readiness, liveness or metrics request."""

_READY_POLL_SECONDS = 0.1
_DRAIN_MARGIN_SECONDS = 10.0

WorkerCommand = Callable[[int, Path, int], Sequence[str]]
"""(index, private directory, lifeline fd) → the worker's command line."""


def serve_command(config_path: Path) -> WorkerCommand:
    """Workers run `wimse-authz serve` on the same configuration file, as workers."""

    def command(index: int, directory: Path, lifeline: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "authz",
            "serve",
            "--config",
            str(config_path),
            "--worker-index",
            str(index),
            "--worker-dir",
            str(directory),
            "--lifeline-fd",
            str(lifeline),
        ]

    return command


def private_directory() -> Path:
    """A new directory only this user can enter: in /dev/shm when there is one (the replay
    table is then in memory only), else the temporary directory."""
    shm = Path("/dev/shm")  # noqa: S108 - a fresh mkdtemp directory, mode 0700, inside it
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None
    return Path(tempfile.mkdtemp(prefix="wimse-authz-", dir=parent))


@dataclass
class _Worker:
    index: int
    diagnostics: WorkerDiagnostics
    process: asyncio.subprocess.Process | None = None
    ready: bool = False
    """This run of the worker has reported ready."""
    start_failures: int = 0
    runs: int = 0
    """How often it was started."""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


class Supervisor:
    """Runs `config.server.workers` workers until stopped; see the module docstring."""

    def __init__(self, config: Config, command: WorkerCommand) -> None:
        self._config = config
        self._command = command
        self._count = config.server.workers
        self._metrics = SupervisorMetrics(self._count)
        self._workers: list[_Worker] = []
        self._stopping = asyncio.Event()
        self._exit_code = 0
        self._all_ready_logged = False

    def stop(self) -> None:
        """Drain every worker and return from `run` (what SIGTERM and SIGINT do)."""
        self._stopping.set()

    def reload(self) -> None:
        """Ask every worker to reload (what SIGHUP does)."""
        for worker in self._workers:
            if worker.process is not None and worker.running:
                worker.process.send_signal(signal.SIGHUP)

    async def run(self) -> int:
        """Start the workers and keep them running until `stop`; the exit code."""
        server = self._config.server
        for index in range(self._count):
            try:
                refuse_listeners_in_use(server.for_worker(index))
            except OSError as exc:
                raise OSError(f"{exc} (worker {index} of {self._count})") from None
        directory = private_directory()
        try:
            write_settings(directory, self._config)
            if self._config.replay.redis is None:
                entries = self._config.wpt.replay_cache_entries
                try:
                    create_replay_table(replay_table(directory), slots_for(entries))
                except OSError as exc:
                    raise ConfigError(
                        f"cannot create the workers' replay table in {directory} for "
                        f"wpt.replay_cache_entries {entries}: {exc.strerror}"
                    ) from None
            return await self._supervise(directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    async def _supervise(self, directory: Path) -> int:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()
        lifeline, lifeline_writer = os.pipe()
        diagnostics: DiagnosticsServer | None = None
        self._workers = [
            _Worker(i, WorkerDiagnostics(diagnostics_socket(directory, i), ANSWER_SECONDS))
            for i in range(self._count)
        ]
        try:
            if self._config.diagnostics is not None:
                diagnostics = DiagnosticsServer(
                    self._config.diagnostics.address,
                    self._metrics.registry,
                    self.readiness,
                    liveness=self.liveness,
                    before_scrape=self.scrape,
                )
                await diagnostics.start()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            keepers = [
                asyncio.create_task(self._keep(worker, directory, lifeline), name=f"worker-{i}")
                for i, worker in enumerate(self._workers)
            ]
            log.info("pid %d supervising %d workers", os.getpid(), self._count)
            await self._stopping.wait()
            await self._drain(keepers)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            if diagnostics is not None:
                await diagnostics.stop()
            for worker in self._workers:
                await worker.diagnostics.close()
            os.close(lifeline)
            os.close(lifeline_writer)
        log.info("stopped")
        return self._exit_code

    async def _drain(self, keepers: list[asyncio.Task[None]]) -> None:
        log.info("shutting down: draining %d workers", self._count)
        for worker in self._workers:
            if worker.process is not None and worker.running:
                worker.process.send_signal(signal.SIGTERM)
        grace = self._config.server.shutdown_grace_seconds + _DRAIN_MARGIN_SECONDS
        _, late = await asyncio.wait(keepers, timeout=grace)
        for worker in self._workers:
            if worker.process is not None and worker.running:
                log.error("worker %d did not stop within %.0f s: killed", worker.index, grace)
                worker.process.kill()
        await asyncio.gather(*late, return_exceptions=True)

    # -- one worker -------------------------------------------------------------------------

    async def _keep(self, worker: _Worker, directory: Path, lifeline: int) -> None:
        try:
            await self._run_worker(worker, directory, lifeline)
        except Exception:
            # Nothing would restart this worker any more: stop rather than run short of one.
            log.exception("supervising worker %d failed: stopping", worker.index)
            self._exit_code = self._exit_code or 1
            self._stopping.set()

    async def _run_worker(self, worker: _Worker, directory: Path, lifeline: int) -> None:
        """Run the worker, and again after each exit, until stopping or giving up on it."""
        loop = asyncio.get_running_loop()
        delay = BACKOFF_FIRST_SECONDS
        while not self._stopping.is_set():
            started = loop.time()
            worker.ready = False
            process = await asyncio.create_subprocess_exec(
                *self._command(worker.index, directory, lifeline),
                stdin=subprocess.DEVNULL,
                pass_fds=(lifeline,),
                start_new_session=True,
            )
            worker.process = process
            worker.runs += 1
            if self._stopping.is_set():  # stopped while it was being started
                process.send_signal(signal.SIGTERM)
            watch = asyncio.create_task(self._watch_ready(worker))
            code = await process.wait()
            watch.cancel()
            if self._stopping.is_set():
                log.info("worker %d (pid %d) exited with %d", worker.index, process.pid, code)
                return
            worker.start_failures = 0 if worker.ready else worker.start_failures + 1
            log.error(
                "worker %d (pid %d) exited with %d%s",
                worker.index,
                process.pid,
                code,
                "" if worker.ready else " before becoming ready",
            )
            if worker.start_failures >= START_FAILURES:
                log.error(
                    "worker %d exited %d times in a row before becoming ready: stopping",
                    worker.index,
                    worker.start_failures,
                )
                self._exit_code = code if code > 0 else 1
                self._stopping.set()
                return
            if loop.time() - started >= STABLE_SECONDS:
                delay = BACKOFF_FIRST_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)
            if not self._stopping.is_set():
                self._metrics.restarts.labels(str(worker.index)).inc()
                log.info("restarting worker %d", worker.index)

    async def _watch_ready(self, worker: _Worker) -> None:
        while worker.running:
            ready, _ = await self._ask(worker, "/readyz")
            if ready:
                worker.ready = True
                assert worker.process is not None
                log.info("worker %d (pid %d) ready", worker.index, worker.process.pid)
                if not self._all_ready_logged and all(w.ready for w in self._workers):
                    self._all_ready_logged = True
                    log.info("all %d workers ready", self._count)
                return
            await asyncio.sleep(_READY_POLL_SECONDS)

    async def _ask(self, worker: _Worker, path: str) -> tuple[bool, Any]:
        """Whether the worker answers `path` with 200, and the detail it gives."""
        if not worker.running:
            return False, {"error": "not running"}
        try:
            status, body = await worker.diagnostics.json(path)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False, {"error": "no answer"}
        detail = body.get("detail") if isinstance(body, dict) else None
        return status == 200, detail

    # -- diagnostics for all workers -------------------------------------------------------

    def describe(self) -> dict[str, dict[str, Any]]:
        """Each worker's process: pid, whether it runs, how often it was restarted."""
        return {
            str(worker.index): {
                "pid": worker.process.pid if worker.process is not None else None,
                "running": worker.running,
                "restarts": max(worker.runs - 1, 0),
            }
            for worker in self._workers
        }

    async def readiness(self) -> Readiness:
        """Ready when every worker answers its `/readyz` with ready, and not stopping."""
        return await self._every_worker("/readyz", "ready")

    async def liveness(self) -> Readiness:
        """Alive while every worker runs and answers its `/healthz`."""
        return await self._every_worker("/healthz", "alive")

    async def _every_worker(self, path: str, key: str) -> Readiness:
        answers = await asyncio.gather(*(self._ask(worker, path) for worker in self._workers))
        workers = self.describe()
        for worker, (ok, detail) in zip(self._workers, answers, strict=True):
            workers[str(worker.index)].update({key: ok, "detail": detail})
        ok = all(ok for ok, _ in answers) and not self._stopping.is_set()
        return Readiness(ok, {"workers": workers})

    async def scrape(self) -> None:
        """Read every worker's metrics for the supervisor's `/metrics` answer."""

        async def one(worker: _Worker) -> str | None:
            if not worker.running:
                return None
            try:
                status, body = await worker.diagnostics.get("/metrics")
            except (aiohttp.ClientError, TimeoutError):
                return None
            return body.decode("utf-8", "replace") if status == 200 else None

        texts = await asyncio.gather(*(one(worker) for worker in self._workers))
        for worker, text in zip(self._workers, texts, strict=True):
            self._metrics.up.labels(str(worker.index)).set(0 if text is None else 1)
        self._metrics.collector.update(dict(enumerate(texts)))


async def supervise(config: Config, config_path: Path) -> int:
    """`serve --workers N`: check the configuration, then run until SIGTERM or SIGINT; the
    exit code. Raises `ConfigError` for a configuration that cannot serve."""
    await check_in_subprocess(config_path, config.server.workers)
    return await Supervisor(config, serve_command(config_path)).run()


async def check_in_subprocess(config_path: Path, workers: int) -> None:
    """`authz.preflight` on the configuration file, in a process of its own: the supervisor
    then never holds a policy engine, keys or their memory. `ConfigError` with its message."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "authz.preflight",
        str(config_path),
        str(workers),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        message = stderr.decode("utf-8", "replace").strip()
        raise ConfigError(message or f"configuration check exited with {process.returncode}")
