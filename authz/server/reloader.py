"""Hot reload: configuration, policies, data and trust anchors change without a restart.

A reload is triggered by a change to any watched file (the configuration, the policy
directory or bundle file, every JWKS or SPIFFE bundle file), by a new bundle at the bundle
URL, or by SIGHUP. (Keys at a URL are refreshed without a reload: `trust/live.py`;
a reload waits for those it has never had keys from.) It then:

1. reads the configuration and the policy set (directory, bundle file or fetched bundle);
2. validates the set in a separate process: compile, decision rule defined, Rego tests;
3. builds the new gateway on the serving thread (regorus engines are bound to the thread
   that built them) with the state that must survive: replay cache, deny-list, metrics;
4. swaps it in with one assignment. Checks already running finish on the gateway they
   started with; the old engine is dropped, on this thread, when the last of them ends.

A step that fails leaves the last good gateway serving; the error is logged and shown in
metrics and in the readiness detail. Reloads never overlap. Settings that cannot change
under a running server (listeners, the diagnostics port, the decision log, the replay
cache size, the deny-list file) keep their running values until a restart, with a warning.

The deny-list file is watched on its own, faster, and swapped without a reload.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz.clock import Clock
from authz.config import RESTART_ONLY, Config, KeySetConfig, load_config
from authz.deny_list import file_fingerprint, read_deny_list
from authz.errors import ConfigError
from authz.gateway import Gateway, Runtime, build_gateway
from authz.policy.bundle_fetch import BundleFetcher
from authz.policy.loader import PolicySet, policy_files
from authz.policy.sources import load_configured_policy_set, policy_set_from_bundle
from authz.policy.validation import validate_in_subprocess

log = logging.getLogger("authz.reload")


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    """The last reload attempt, as readiness detail and logs show it."""

    ok: bool
    at: float
    trigger: str
    error: str | None = None


def _key_set_files(config: Config) -> Iterator[Path]:
    key_sets: list[KeySetConfig] = []
    for domain in config.trust_domains.values():
        key_sets.append(domain)
        if domain.txn_token_service is not None:
            key_sets.append(domain.txn_token_service)
    if config.user_token is not None:
        key_sets.extend(config.user_token.issuers.values())
    if config.attestation is not None:
        key_sets.extend(config.attestation.verifiers.values())
    if config.policy.bundle is not None and config.policy.bundle.signing is not None:
        key_sets.extend(config.policy.bundle.signing.keys.values())
    if config.tts is not None:
        key_sets.extend(config.tts.access_token_issuers.values())
    for key_set in key_sets:
        if key_set.jwks_file is not None:
            yield key_set.jwks_file
        if key_set.spiffe_bundle_file is not None:
            yield key_set.spiffe_bundle_file


def watched_files(config: Config, config_path: Path | None) -> list[Path]:
    """Every file whose change calls for a reload."""
    files = [config_path] if config_path is not None else []
    files.extend(_key_set_files(config))
    policy = config.policy
    if policy.directory is not None and policy.directory.is_dir():
        files.extend(policy_files(policy.directory))
        files.append(policy.directory)  # catches files added or removed
    if policy.bundle is not None and policy.bundle.file is not None:
        files.append(policy.bundle.file)
    if (tts := config.tts) is not None:
        # A rotation is a new key_file (and next_key_file): reloaded like any key file.
        signing = tts.signing
        files.append(signing.key_file)
        files.extend(path for path in (signing.next_key_file,) if path is not None)
        files.extend(signing.retired_key_files)
    return files


def fingerprint(paths: list[Path]) -> tuple[Any, ...]:
    return tuple((str(path), file_fingerprint(path)) for path in paths)


class Reloader:
    """Owns the serving gateway's lifecycle after start: loads, validates, swaps, watches."""

    def __init__(
        self,
        config: Config,
        config_path: Path | None,
        clock: Clock,
        runtime: Runtime,
        install: Callable[[Gateway], Awaitable[None]],
    ) -> None:
        self.config = config
        self._config_path = config_path
        self._clock = clock
        self._runtime = runtime
        self._install = install
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._bundle_fetcher: BundleFetcher | None = None
        self._bundle_bytes: bytes | None = None
        self._fingerprint: tuple[Any, ...] = ()
        self.gateway: Gateway | None = None
        self.last: ReloadStatus | None = None
        self.last_good: ReloadStatus | None = None
        self.awaiting_anchors = False
        """The last load was refused because keys at a URL had not answered yet: it is tried
        again as soon as one does."""
        runtime.live_keys.on_first_load = self._anchors_loaded
        runtime.live_keys.on_change = self._anchors_changed

    # -- loading --------------------------------------------------------------------------

    async def load(self, trigger: str) -> bool:
        """Load, validate and install; True when the new gateway serves."""
        async with self._lock:
            try:
                gateway = await self._build(trigger)
            except ConfigError as exc:
                self._finish(trigger, str(exc))
                return False
            except Exception as exc:
                log.exception("reload (%s) failed unexpectedly", trigger)
                self._finish(trigger, f"unexpected error: {type(exc).__name__}")
                return False
            previous = self.gateway
            self.gateway = gateway
            await self._install(gateway)
            self._finish(trigger, None)
            await self._runtime.live_keys.retain(gateway.config)
            metrics = self._runtime.metrics
            trust = gateway.trust_store.revision
            if previous is not None and previous.trust_store.revision != trust:
                metrics.record_key_refresh(success=True)
            metrics.set_revision(gateway.pipeline.engine.revision, trust)
            if previous is not None:
                await _close_engine_later(previous)
            return True

    async def _build(self, trigger: str) -> Gateway:
        config = self._read_config()
        self.awaiting_anchors = False
        try:
            await self._runtime.live_keys.prepare(config)
        except ConfigError:
            self.awaiting_anchors = True
            raise
        policy_set = await self._policy_set(config)
        if policy_set is not None:
            reload = config.policy.reload
            report = await validate_in_subprocess(
                policy_set,
                config.policy.decision,
                run_tests=reload.run_policy_tests,
                timeout=reload.validation_timeout_seconds,
            )
            if not report.ok:
                raise ConfigError(
                    f"{policy_set.origin} (revision {policy_set.revision}): {report.describe()}"
                )
        # On the serving thread, by design: see the module docstring.
        gateway = build_gateway(config, self._clock, runtime=self._runtime, policy_set=policy_set)
        self.config = config
        self._fingerprint = fingerprint(watched_files(config, self._config_path))
        log.info(
            "serving policy revision %s, trust anchors %s (%s)",
            gateway.pipeline.engine.revision,
            gateway.trust_store.revision,
            trigger,
        )
        return gateway

    def _read_config(self) -> Config:
        if self._config_path is None:
            return self.config
        config = load_config(self._config_path)
        kept = {}
        for section in RESTART_ONLY:
            if getattr(config, section) != getattr(self.config, section):
                log.warning("%s changed: it takes effect after a restart", section)
                kept[section] = getattr(self.config, section)
        if config.wpt.replay_cache_entries != self.config.wpt.replay_cache_entries:
            log.warning("wpt.replay_cache_entries changed: it takes effect after a restart")
        return config.model_copy(update=kept) if kept else config

    async def _policy_set(self, config: Config) -> PolicySet | None:
        """The set to validate and serve; None for the remote OPA backend."""
        policy = config.policy
        if policy.backend == "opa":
            return None
        bundle = policy.bundle
        if bundle is not None and bundle.url is not None:
            if self._bundle_bytes is None or self._bundle_url_changed(config):
                await self._fetch_bundle(config)
            if self._bundle_bytes is None:
                raise ConfigError(f"bundle {bundle.url}: not fetched yet")
            return policy_set_from_bundle(self._bundle_bytes, bundle, f"bundle {bundle.url}")
        return await asyncio.to_thread(load_configured_policy_set, policy)

    def _finish(self, trigger: str, error: str | None) -> None:
        status = ReloadStatus(ok=error is None, at=time.time(), trigger=trigger, error=error)
        self.last = status
        self._runtime.metrics.record_reload(success=error is None)
        if error is None:
            self.last_good = status
        elif self.gateway is not None:
            log.error("reload (%s) refused; the last good policy keeps serving: %s", trigger, error)
        else:
            log.error("load (%s) failed: %s", trigger, error)

    # -- trust anchors over HTTP ----------------------------------------------------------

    def _anchors_loaded(self) -> None:
        """A key source at a URL answered for the first time: a load waiting for it goes on."""
        if self.awaiting_anchors:
            self.request_reload("trust anchors")

    def _anchors_changed(self) -> None:
        """A key source's keys changed without a reload: the exported revision follows."""
        gateway = self.gateway
        if gateway is not None:
            revision = gateway.trust_store.revision
            self._runtime.metrics.set_revision(gateway.pipeline.engine.revision, revision)

    # -- bundles over HTTP ----------------------------------------------------------------

    def _bundle_url_changed(self, config: Config) -> bool:
        fetcher = self._bundle_fetcher
        return fetcher is None or fetcher.config != config.policy.bundle

    async def _fetch_bundle(self, config: Config) -> bool:
        """Fetch the bundle URL; True when new bytes arrived."""
        bundle = config.policy.bundle
        assert bundle is not None
        assert bundle.url is not None
        if self._bundle_url_changed(config):
            if self._bundle_fetcher is not None:
                await self._bundle_fetcher.close()
            self._bundle_fetcher = BundleFetcher(bundle)
            self._bundle_bytes = None
        fetcher = self._bundle_fetcher
        assert fetcher is not None
        result = await fetcher.fetch()
        if result.data is None:
            return False
        self._bundle_bytes = result.data
        return True

    # -- watching -------------------------------------------------------------------------

    def start_watching(self) -> None:
        policy = self.config.policy
        if policy.reload.watch:
            self._spawn(self._watch_files(), "watch-files")
        if policy.bundle is not None and policy.bundle.url is not None:
            self._spawn(self._poll_bundle(), "poll-bundle")
        if self.config.deny_list is not None:
            self._spawn(self._watch_deny_list(), "watch-deny-list")

    def request_reload(self, trigger: str = "sighup") -> None:
        self._spawn(self.load(trigger), f"reload-{trigger}")

    def _spawn(self, coroutine: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _watch_files(self) -> None:
        while True:
            await asyncio.sleep(self.config.policy.reload.poll_seconds)
            try:
                current = await asyncio.to_thread(
                    lambda: fingerprint(watched_files(self.config, self._config_path))
                )
            except OSError:
                log.exception("could not check watched files")
                continue
            if current != self._fingerprint:
                # Editors and deploy tools write several files: let them settle first.
                await asyncio.sleep(0.2)
                self._fingerprint = current
                await self.load("file change")

    async def _poll_bundle(self) -> None:
        while True:
            bundle = self.config.policy.bundle
            if bundle is None or bundle.url is None:
                return
            # Until a first bundle serves, retry sooner than the regular poll.
            delay = bundle.poll_seconds if self.gateway else min(bundle.poll_seconds, 1.0)
            await asyncio.sleep(delay)
            try:
                changed = await self._fetch_bundle(self.config)
            except ConfigError as exc:
                log.warning("bundle %s: %s", bundle.url, exc)
                if self.gateway is None:
                    self._finish("bundle", str(exc))
                continue
            except Exception:
                # Whatever went wrong, polling must go on: a dead task would freeze policy.
                log.exception("bundle %s: unexpected error while fetching", bundle.url)
                continue
            if changed or self.gateway is None:
                await self.load("bundle")

    async def _watch_deny_list(self) -> None:
        settings = self.config.deny_list
        assert settings is not None
        holder = self._runtime.deny_list
        metrics = self._runtime.metrics
        seen = file_fingerprint(settings.file)
        while True:
            await asyncio.sleep(settings.poll_seconds)
            current = file_fingerprint(settings.file)
            if current == seen:
                continue
            seen = current
            try:
                holder.current = await asyncio.to_thread(read_deny_list, settings.file)
            except Exception as exc:  # noqa: BLE001 - logged; the watch must go on
                # Any failure, expected or not, keeps the last list and the watch going.
                holder.error = str(exc) if isinstance(exc, ConfigError) else type(exc).__name__
                metrics.record_deny_list_reload(success=False)
                log.error(  # noqa: TRY400 - the message says all; no stack to show
                    "deny-list not reloaded, the previous one stays in force: %s", holder.error
                )
                continue
            holder.error = None
            metrics.record_deny_list_reload(success=True)
            log.warning("deny-list reloaded: %d entries", len(holder.current))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._bundle_fetcher is not None:
            await self._bundle_fetcher.close()
        if self.gateway is not None:
            await _close_engine(self.gateway)
            self.gateway = None


async def _close_engine(gateway: Gateway) -> None:
    for engine in gateway.engines:
        close = getattr(engine, "close", None)
        if close is not None:
            await close()


async def _close_engine_later(gateway: Gateway, delay: float = 5.0) -> None:
    """A remote engine's connections close once in-flight checks on it are done."""
    if not any(getattr(engine, "close", None) is not None for engine in gateway.engines):
        return

    async def later() -> None:
        await asyncio.sleep(delay)
        await _close_engine(gateway)

    task = asyncio.get_running_loop().create_task(later())
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)


_PENDING: set[asyncio.Task[None]] = set()
