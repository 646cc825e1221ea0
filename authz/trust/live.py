"""Key sets fetched from the network (`jwks_url`, `spiffe_bundle_url`) and kept current.

A `LiveKeySource` is the holder verifiers read (`current`, an attribute read and a clock
comparison: no network, no lock) and the task that keeps it current. Fetched documents go
through the same parsers as configured keys (`parse_jwks`, `parse_spiffe_bundle`,
`build_key_set`); a refresh that brings different keys swaps the whole `KeySet` in one
assignment, without a reload.

- Refresh: one task per source on the serving loop fetches with `If-None-Match` /
  `If-Modified-Since`, every `fetch.refresh_seconds`, sooner when the server's
  `Cache-Control: max-age` or the bundle's `spiffe_refresh_hint` asks, never more often
  than `fetch.min_refresh_interval_seconds`. Failures retry with exponential backoff (from
  1 s, at most a minute). Nothing stops the task but `close()`: every failure is logged and
  counted, and the last good keys stay.
- Unknown `kid`: a token naming a `kid` the current set lacks triggers one fetch
  (`refresh_for_unknown_kid`), shared by every request waiting for it and rate-limited by
  the same minimum interval; the token is then verified once more.
- Staleness: keys last confirmed (a 200 or a 304) more than `fetch.max_stale_seconds` ago,
  or never loaded, make `current` raise `UnavailableError` (`trust.anchors_unavailable`,
  503): an outage of the key server is our unavailability, never an invalid token.
- `LiveKeyRegistry` keeps sources across reloads, keyed by their configuration key and
  settings: a reload that keeps a source's settings keeps its keys, validators and schedule;
  one that changes them starts a new source, and the old one stops once the new gateway
  serves.
- SPIFFE bundles: a trust domain's source keeps the bundle's `wit-svid` keys (they verify
  its WITs), any other signer's source its `jwt-svid` keys (`JwtKeyUse`, part of the
  settings).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from authz import strict_json
from authz.errors import ConfigError, UnavailableError
from authz.http_fetch import BoundedFetcher, display_url
from authz.reasons import Reason
from authz.trust.discovery import DiscoveredJwksFetcher
from authz.trust.key_sets import (
    KeyHolder,
    KeySet,
    TrustStore,
    build_key_set,
    build_key_sets,
    key_sources,
    parse_jwks,
)
from authz.trust.spiffe_bundle import JwtKeyUse, parse_spiffe_bundle

if TYPE_CHECKING:
    from cryptography import x509

    from authz.config import Config, KeySetConfig
    from authz.observability.metrics import Metrics

log = logging.getLogger("authz.trust")

MAX_BACKOFF_SECONDS = 60.0
"""Longest wait between retries of a failing source."""

Monotonic = Callable[[], float]


@dataclass(frozen=True, slots=True)
class LiveSourceSettings:
    """Everything that decides what a source fetches and how: part of its registry key."""

    url: str
    bundle_use: JwtKeyUse | None
    """Which keys of a SPIFFE bundle to keep; None: the URL serves a JWKS."""
    discovery: bool
    """The URL is an OpenID configuration document naming the JWKS."""
    algorithms: frozenset[str]
    ca_file: Path | None
    timeout: float
    max_bytes: int
    refresh: float
    min_interval: float
    max_stale: float

    @classmethod
    def of(cls, key_set: KeySetConfig, bundle_use: JwtKeyUse) -> LiveSourceSettings:
        """The settings of `key_set`; `bundle_use` says which keys a SPIFFE bundle at its
        URL gives (`wit-svid` for a trust domain's WIT anchors, else `jwt-svid`)."""
        url = key_set.url
        if url is None:
            raise ValueError("a live key source needs jwks_url or spiffe_bundle_url")
        fetch = key_set.fetch
        return cls(
            url=url,
            bundle_use=bundle_use if key_set.spiffe_bundle_url is not None else None,
            discovery=key_set.openid_configuration_url is not None,
            algorithms=frozenset(key_set.algorithms),
            ca_file=fetch.ca_file,
            timeout=fetch.timeout_seconds,
            max_bytes=fetch.max_bytes,
            refresh=fetch.refresh_seconds,
            min_interval=fetch.min_refresh_interval_seconds,
            max_stale=fetch.max_stale_seconds,
        )

    @property
    def spiffe(self) -> bool:
        """True when the URL serves a SPIFFE bundle, not a plain JWKS."""
        return self.bundle_use is not None


class LiveKeySource:
    """One key set at a URL: what verifiers read (`current`) and the task refreshing it.

    Construct it anywhere; `start()` (on the serving loop) begins fetching, `close()` (on
    that loop) stops it. `on_update(first)` is called after each change of keys, with
    `first` true when the source had never had keys before.
    """

    def __init__(
        self,
        name: str,
        where: str,
        settings: LiveSourceSettings,
        *,
        metrics: Metrics | None = None,
        monotonic: Monotonic = time.monotonic,
        on_update: Callable[[bool], None] | None = None,
    ) -> None:
        self.name = name
        self.where = where
        self.settings = settings
        self._metrics = metrics
        self._monotonic = monotonic
        self._on_update = on_update
        self._fetcher: BoundedFetcher | DiscoveredJwksFetcher
        if settings.discovery:
            self._fetcher = DiscoveredJwksFetcher(
                settings.url,
                timeout=settings.timeout,
                max_bytes=settings.max_bytes,
                ca_file=settings.ca_file,
                setting=f"{where}.fetch",
            )
        else:
            self._fetcher = BoundedFetcher(
                settings.url,
                timeout=settings.timeout,
                max_bytes=settings.max_bytes,
                ca_file=settings.ca_file,
                what="SPIFFE bundle" if settings.spiffe else "JWKS",
                setting=f"{where}.fetch",
            )
        self.display = self._fetcher.where
        """`JWKS https://host/path` (no credentials or query): for logs and errors."""
        self._keys: KeySet | None = None
        self._confirmed_at = -math.inf
        self._last_started = -math.inf
        self._hint: float | None = None
        self._document_hint: float | None = None
        self._failures = 0
        self._inflight: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()
        self.revision = "unloaded"
        """Changes whenever the keys do (a digest of the document); `unloaded` before."""
        self.sequence: int | None = None
        """The bundle's `spiffe_sequence`, for SPIFFE bundles that give one."""
        self.error: str | None = None
        """Why the last fetch failed; None after a good one."""

    # -- what verifiers read --------------------------------------------------------------

    @property
    def current(self) -> KeySet:
        """The last good keys; `UnavailableError` if there are none or they are stale."""
        keys = self._keys
        if keys is None:
            raise UnavailableError(
                Reason.TRUST_ANCHORS_UNAVAILABLE, f"{self.where}: no keys from {self.display} yet"
            )
        if self._monotonic() - self._confirmed_at > self.settings.max_stale:
            raise UnavailableError(
                Reason.TRUST_ANCHORS_UNAVAILABLE,
                f"{self.where}: keys from {self.display} are older than max_stale_seconds",
            )
        return keys

    @property
    def loaded(self) -> bool:
        return self._keys is not None

    @property
    def started(self) -> bool:
        return self._task is not None

    def age(self) -> float | None:
        """Seconds since the keys were last confirmed by the server; None if never."""
        return None if self._keys is None else self._monotonic() - self._confirmed_at

    async def refresh_for_unknown_kid(self) -> bool:
        """Fetch now (or join the fetch in flight) unless one started less than
        `min_refresh_interval_seconds` ago; True when a fetch was made or joined."""
        if self._inflight is None and (
            self._monotonic() - self._last_started < self.settings.min_interval
        ):
            return False
        await self._refresh()
        return True

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Begin fetching (now) and refreshing, on the running loop; idempotent."""
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), name=f"keys {self.where}")

    async def first_attempt(self) -> None:
        """Return once the first fetch has ended, well or not (bounded by its timeout)."""
        try:
            async with asyncio.timeout(self.settings.timeout + 1.0):
                await self._attempted.wait()
        except TimeoutError:
            return

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._inflight is not None:
            self._inflight.cancel()
            await asyncio.gather(self._inflight, return_exceptions=True)
        await self._fetcher.close()

    def describe(self) -> dict[str, object]:
        """This source's state, as the readiness detail shows it."""
        age = self.age()
        stale = age is None or age > self.settings.max_stale
        return {
            "source": self.where,
            "url": display_url(self.settings.url),
            "loaded": self.loaded,
            "stale": stale,
            "revision": self.revision,
            "age_seconds": None if age is None else round(age, 1),
            "sequence": self.sequence,
            "error": self.error,
        }

    # -- fetching -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._refresh()
            except Exception:
                # `_fetch` records every failure itself; this is a bug, and the task must
                # not die of it: the keys would silently stop being refreshed.
                log.exception("%s: unexpected error refreshing %s", self.where, self.display)
            # Sleep until the next fetch is due, counted from the latest fetch of any kind
            # (an unknown-kid refresh in between moves the schedule).
            while (remaining := self._last_started + self._delay() - self._monotonic()) > 0:
                await asyncio.sleep(remaining)

    def _delay(self) -> float:
        settings = self.settings
        if self._failures:
            return min(2.0 ** (self._failures - 1), settings.refresh, MAX_BACKOFF_SECONDS)
        hint = settings.refresh if self._hint is None else min(self._hint, settings.refresh)
        return max(hint, settings.min_interval)

    async def _refresh(self) -> None:
        """Fetch now, or wait for the fetch already in flight: concurrent callers share one."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch())
            self._inflight.add_done_callback(self._fetch_done)
        # Shielded: a check that gives up waiting (Envoy's timeout) must not cancel the
        # fetch other checks are waiting for.
        await asyncio.shield(self._inflight)

    def _fetch_done(self, future: asyncio.Future[None]) -> None:
        self._inflight = None
        if not future.cancelled() and future.exception() is not None:
            log.error("%s: refresh failed: %r", self.where, future.exception())

    async def _fetch(self) -> None:
        self._last_started = self._monotonic()
        try:
            fetched = await self._fetcher.get()
            if fetched.data is None:
                result = "not_modified"
            else:
                result = "success"
                self._install(fetched.data)
            hints = [h for h in (self._document_hint, fetched.max_age) if h is not None]
            self._hint = min(hints, default=None)
        except ConfigError as exc:
            self._failed(str(exc))
        except Exception as exc:
            log.exception("%s: unexpected error fetching %s", self.where, self.display)
            self._failed(f"unexpected error: {type(exc).__name__}")
        else:
            self._confirmed_at = self._monotonic()
            if self._failures:
                log.warning("%s: %s answers again", self.where, self.display)
            self._failures = 0
            self.error = None
            self._count(result)
        finally:
            self._attempted.set()

    def _failed(self, error: str) -> None:
        self._failures += 1
        self.error = error
        self._count("failure")
        if self._metrics is not None:
            self._metrics.record_key_refresh(success=False)
        state = "keeping the last good keys" if self._keys is not None else "no keys yet"
        log.warning("%s: refresh failed (%s): %s", self.where, state, error)

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.record_key_source_fetch(self.where, result)

    def _install(self, data: bytes) -> None:
        """Parse a fetched document and swap it in if its keys differ; ConfigError if it is
        not usable (the validators are then forgotten, so the next fetch is a full one)."""
        try:
            document = self._parse(data)
        except ConfigError:
            self._fetcher.etag = self._fetcher.last_modified = None
            raise
        self._document_hint = document.refresh_hint
        self.sequence = document.sequence
        key_set = document.key_set
        if key_set is None:
            return
        first = self._keys is None
        self._keys = key_set
        self.revision = document.revision
        if self._metrics is not None:
            self._metrics.record_key_refresh(success=True)
        log.info(
            "%s: keys from %s %s: revision %s, %d JWT key(s)%s",
            self.where,
            self.display,
            "loaded" if first else "changed",
            document.revision,
            len(key_set.keys),
            f", {len(key_set.x509_authorities)} X.509 authorities" if self.settings.spiffe else "",
        )
        if self._on_update is not None:
            self._on_update(first)

    def _parse(self, data: bytes) -> _Document:
        try:
            document = strict_json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"{self.display}: not JSON: {exc}") from None
        algorithms = self.settings.algorithms
        bundle_use = self.settings.bundle_use
        authorities: tuple[x509.Certificate, ...] = ()
        hint: float | None = None
        sequence: int | None = None
        if bundle_use is not None:
            bundle = parse_spiffe_bundle(document, algorithms, self.display, bundle_use)
            keys, authorities = bundle.jwt_keys, bundle.x509_authorities
            revision, hint, sequence = bundle.digest[:16], bundle.refresh_hint, bundle.sequence
            if sequence is not None and self.sequence is not None and sequence < self.sequence:
                # The specification's sequence only grows: an older bundle is a replay.
                raise ConfigError(
                    f"{self.display}: spiffe_sequence went back from {self.sequence} to {sequence}"
                )
        else:
            keys = tuple(parse_jwks(document, algorithms, self.display))
            canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
            revision = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        if revision == self.revision:
            return _Document(None, revision, hint, sequence)
        try:
            key_set = build_key_set(
                self.name,
                algorithms,
                keys,
                x509_authorities=authorities,
                bundle_use=bundle_use,
                origin=self,
            )
        except ValueError as exc:
            raise ConfigError(f"{self.display}: {exc}") from None
        return _Document(key_set, revision, hint, sequence)


@dataclass(frozen=True, slots=True)
class _Document:
    """A fetched document, parsed: `key_set` is None when its keys are those serving."""

    key_set: KeySet | None
    revision: str
    refresh_hint: float | None
    sequence: int | None


LiveKeySetConfig = tuple[str, str, "KeySetConfig", JwtKeyUse]
"""`(where, name, key set, bundle use)`: one key set of a configuration fetched from a URL."""


def live_key_set_configs(config: Config) -> Iterator[LiveKeySetConfig]:
    """Every key set of `config` that is fetched from a URL: trust domains' WIT anchors
    (`wit-svid` bundle keys), and every other signer (`jwt-svid` bundle keys)."""
    wit, jwt = JwtKeyUse.WIT_SVID, JwtKeyUse.JWT_SVID
    candidates: list[LiveKeySetConfig] = []
    for name, domain in config.trust_domains.items():
        candidates.append((f"trust_domains.{name}", name, domain, wit))
        if domain.txn_token_service is not None:
            where = f"trust_domains.{name}.txn_token_service"
            candidates.append((where, name, domain.txn_token_service, jwt))
    if config.user_token is not None:
        for issuer, issuer_keys in config.user_token.issuers.items():
            candidates.append((f"user_token.issuers.{issuer}", issuer, issuer_keys, jwt))
    if config.attestation is not None:
        for name, verifier_keys in config.attestation.verifiers.items():
            candidates.append((f"attestation.verifiers.{name}", name, verifier_keys, jwt))
    if config.tts is not None:
        for issuer, access_keys in config.tts.access_token_issuers.items():
            where = f"tts.access_token_issuers.{issuer}"
            candidates.append((where, issuer, access_keys, jwt))
    return (candidate for candidate in candidates if candidate[2].url is not None)


class LiveKeyRegistry:
    """Every live key source of this process, kept across reloads (it lives in the
    gateway's `Runtime`). `on_first_load` is called when a source gets keys for the first
    time; `on_change` after any change of keys."""

    def __init__(
        self, metrics: Metrics | None = None, monotonic: Monotonic = time.monotonic
    ) -> None:
        self._metrics = metrics
        self._monotonic = monotonic
        self._sources: dict[tuple[str, LiveSourceSettings], LiveKeySource] = {}
        self.on_first_load: Callable[[], None] | None = None
        self.on_change: Callable[[], None] | None = None

    def source(
        self, where: str, name: str, key_set: KeySetConfig, bundle_use: JwtKeyUse
    ) -> LiveKeySource:
        """The source for this configuration key and settings, created if new (not
        started: `prepare` starts sources, on the serving loop)."""
        settings = LiveSourceSettings.of(key_set, bundle_use)
        key = (where, settings)
        source = self._sources.get(key)
        if source is None:
            source = LiveKeySource(
                name,
                where,
                settings,
                metrics=self._metrics,
                monotonic=self._monotonic,
                on_update=self._updated,
            )
            self._sources[key] = source
            if self._metrics is not None:
                self._metrics.watch_key_source_age(where, source.age)
        return source

    def key_sets(
        self, configs: Mapping[str, KeySetConfig], where: str, suffix: str = ""
    ) -> dict[str, KeyHolder]:
        """A holder per configured key set of a signer other than a trust domain's WIT
        issuer (a SPIFFE bundle gives its `jwt-svid` keys): the parsed `KeySet` for configured
        keys (files read now), the live source for keys at a URL."""
        jwt = JwtKeyUse.JWT_SVID
        static = {name: c for name, c in configs.items() if c.url is None}
        sources = key_sources(static, where, suffix, bundle_use=jwt)
        holders: dict[str, KeyHolder] = dict(build_key_sets(sources)[0])
        for name, key_set in configs.items():
            if key_set.url is not None:
                holders[name] = self.source(f"{where}.{name}{suffix}", name, key_set, jwt)
        return holders

    def trust_store(self, domains: Mapping[str, KeySetConfig]) -> TrustStore:
        """The trust domains' WIT issuer keys (a SPIFFE bundle gives its `wit-svid` keys);
        its revision follows live sources."""
        wit = JwtKeyUse.WIT_SVID
        static = {name: c for name, c in domains.items() if c.url is None}
        built, revision = build_key_sets(key_sources(static, "trust_domains", bundle_use=wit))
        holders: dict[str, KeyHolder] = dict(built)
        live: list[LiveKeySource] = []
        digest = hashlib.sha256(revision.encode())
        for name in sorted(domains):
            key_set = domains[name]
            if key_set.url is not None:
                source = self.source(f"trust_domains.{name}", name, key_set, wit)
                holders[name] = source
                live.append(source)
                digest.update(f"\0{name}\0{key_set.url}".encode())
        configured = digest.hexdigest()[:16] if live else revision
        return TrustStore(holders, configured, live)

    async def prepare(self, config: Config) -> None:
        """Start every live source `config` names and wait for the first fetch of those
        that never had keys; `ConfigError` naming those that still have none."""
        sources = [self.source(*configured) for configured in live_key_set_configs(config)]
        for source in sources:
            source.start()
        waiting = [source.first_attempt() for source in sources if not source.loaded]
        await asyncio.gather(*waiting)
        missing = [source for source in sources if not source.loaded]
        if missing:
            raise ConfigError(
                "trust anchors not loaded yet: "
                + "; ".join(f"{s.where} ({s.error or 'no answer yet'})" for s in missing)
            )

    def pending(self) -> list[LiveKeySource]:
        """Started sources that have never had keys."""
        return [s for s in self._sources.values() if s.started and not s.loaded]

    async def retain(self, config: Config) -> None:
        """Stop the sources `config` no longer names (after it serves)."""
        keep = {(w, LiveSourceSettings.of(k, u)) for w, _, k, u in live_key_set_configs(config)}
        for key in [key for key in self._sources if key not in keep]:
            source = self._sources.pop(key)
            await source.close()
            if self._metrics is not None and not any(w == key[0] for w, _ in self._sources):
                self._metrics.forget_key_source(key[0])
            log.info("%s: no longer configured; stopped fetching %s", source.where, source.display)

    def describe(self) -> list[dict[str, object]]:
        return [source.describe() for source in self._sources.values()]

    async def close(self) -> None:
        sources, self._sources = list(self._sources.values()), {}
        await asyncio.gather(*(source.close() for source in sources))

    def _updated(self, first: bool) -> None:
        callback = self.on_first_load if first else self.on_change
        if callback is not None:
            callback()
        if first and self.on_change is not None:
            self.on_change()
