"""Sustained mixed traffic through a real Envoy and gateway while Redis and the JWKS server
fail and come back: does anything that must be denied ever get a 200?

One stack on loopback: redis-server (the shared replay cache, `on_unavailable:
fail_closed`), an HTTPS JWKS server holding the demo trust domain's WIT issuer keys (the
gateway's `jwks_url`), one `wimse-authz serve` process, Envoy running
deploy/envoy/gateway.yaml, and the echo upstream. For `--duration` seconds, `--concurrency`
clients send a mix of request classes through Envoy while a schedule stops and restarts
Redis once and the JWKS server twice (once for less than `max_stale_seconds`, once for
longer). The report counts answers per class and per fault window, and "wrongful allows":
any 200 for a request that must be denied. See bench/README.md.

    .venv/bin/python bench/load_fault.py [--duration 60] [--concurrency 8] [--json]

Exit status: 0 clean run; 1 wrongful allows; 3 a fault window did not show its expected
effect (or a process exited); 2 the run could not start or complete; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from authz.devtools import stack
from authz.devtools.certs import CertificateAuthority, write_pem
from authz.devtools.httpsig import sign_request
from authz.devtools.jwks_server import JwksServer
from authz.devtools.keys import generate_private_jwk
from authz.devtools.mint import mint_wit, mint_wpt
from authz.devtools.redis import RedisServer, redis_server_binary
from authz.devtools.upstream import EchoServer

MIN_DURATION = 24
"""Room for three fault windows, each with a little traffic before and after it."""
MAX_DURATION = 300
MAX_CONCURRENCY = 64
REQUEST_TIMEOUT = 5.0
"""Per request, client side; Envoy's own ext_authz timeout (1 s) comes first."""
STARTUP_TIMEOUT = 45.0
SHUTDOWN_MARGIN = 60.0
"""The load phase, fault actions included, is cancelled this long after `duration`."""

GRANTED_PATH = "/api/hello"  # the sample policy lets the frontend workload GET /api/*
DENIED_PATH = "/admin/users"  # ... and nothing under /admin
CALLER = "frontend"
WIT_HEADER = "workload-identity-token"
REASON_HEADER = "x-wimse-authz-reason"

# Live trust anchors: refreshed every second, so an outage of the JWKS server shows within
# a second; `max_stale_seconds` is set per run (see `plan_faults`).
JWKS_REFRESH_SECONDS = 1.0
JWKS_MIN_REFRESH_INTERVAL_SECONDS = 0.5
JWKS_FETCH_TIMEOUT_SECONDS = 1.0

# Proofs live PROOF_TTL seconds (the minting tools' default) and the gateway allows exactly
# that, with a small skew: after Redis comes back empty, proofs that could have been used
# before it are refused (replay.state_lost), and with these settings fresh ones are again
# accepted within about two seconds (docs/operations.md, "When Redis loses its records").
PROOF_TTL = 60
CLOCK_SKEW_SECONDS = 1.0

RequestClass = Literal["valid", "http_signature", "replay", "forged", "policy_denied", "anonymous"]
CLASS_WEIGHTS: dict[RequestClass, int] = {
    "valid": 45,
    "http_signature": 10,
    "replay": 15,
    "forged": 10,
    "policy_denied": 10,
    "anonymous": 10,
}
ALLOWED_CLASSES: frozenset[str] = frozenset({"valid", "http_signature"})
"""Classes that must be answered 200 (or 503 during an outage); all others must be denied."""
EXPECTED_STATUSES: dict[str, frozenset[int]] = {
    "valid": frozenset({200}),
    "http_signature": frozenset({200}),
    # 401 wpt.replayed, 400 httpsig.replayed; after Redis restarted, proofs from before it:
    # 401/400 replay.state_lost.
    "replay": frozenset({400, 401}),
    "forged": frozenset({400, 401}),  # 400 for a bad HTTP signature, 401 for a bad token
    "policy_denied": frozenset({403}),
    "anonymous": frozenset({401}),
}
REPLAY_POOL = 1024
"""Accepted proofs kept for replaying (the newest are replayed first, long before expiry)."""


class RunAborted(Exception):
    """The stack did not come up, its first requests were not answered as expected, or the
    load did not complete."""


# --- settings and schedule -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    duration: int
    concurrency: int
    json: bool


def parse_settings(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--duration",
        type=int,
        default=60,
        help=f"seconds of load, {MIN_DURATION} to {MAX_DURATION} (default 60)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help=f"requests in flight, 1 to {MAX_CONCURRENCY} (default 8)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON on stdout (the rest on stderr)",
    )
    args = parser.parse_args(argv)
    if not MIN_DURATION <= args.duration <= MAX_DURATION:
        parser.error(f"--duration must be from {MIN_DURATION} to {MAX_DURATION}")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        parser.error(f"--concurrency must be from 1 to {MAX_CONCURRENCY}")
    return Settings(args.duration, args.concurrency, args.json)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """One outage: `target` stopped `start` seconds into the load, started again after
    `length` seconds. Its effects may outlast the restart by up to `grace` seconds."""

    name: str
    target: Literal["redis", "jwks"]
    start: float
    length: float
    grace: float
    expect: str


@dataclass(frozen=True, slots=True)
class Schedule:
    faults: tuple[FaultPlan, ...]
    max_stale_seconds: float


def plan_faults(duration: float) -> Schedule:
    """Three non-overlapping outages, placed by fractions of `duration`.

    `max_stale_seconds` is a fifth of the run (at least 5 s): the short JWKS outage lasts
    3 s less than that (the keys were confirmed at most one refresh before it began, and
    are confirmed again within a second after it ends), the long one outlasts it by a tenth
    of the run (at least 3 s), so trust.anchors_unavailable must show near its end.
    """
    max_stale = max(5.0, round(0.2 * duration, 1))
    redis_down = min(5.0, max(2.0, round(0.1 * duration, 1)))
    jwks_grace = JWKS_REFRESH_SECONDS + JWKS_FETCH_TIMEOUT_SECONDS
    return Schedule(
        (
            FaultPlan(
                "redis",
                "redis",
                round(0.15 * duration, 1),
                redis_down,
                1.0 + CLOCK_SKEW_SECONDS + 1.0,  # whole seconds in `exp` and `created`
                "503 replay.store_unavailable while down; once back, proofs that could have "
                "been used before it refused (replay.state_lost) and replays refused again",
            ),
            FaultPlan(
                "jwks_short",
                "jwks",
                round(0.3 * duration, 1),
                max(2.0, max_stale - 3.0),
                jwks_grace,
                "keys served from the last good fetch: no trust.anchors_unavailable",
            ),
            FaultPlan(
                "jwks_long",
                "jwks",
                round(0.5 * duration, 1),
                max_stale + max(3.0, round(0.1 * duration, 1)),
                jwks_grace,
                "503 trust.anchors_unavailable once the keys are older than max_stale_seconds",
            ),
        ),
        max_stale,
    )


# --- the stack -----------------------------------------------------------------------------


@dataclass
class Stack:
    """Everything the run starts; `ExitStack` in `run` stops it all, in reverse order."""

    workdir: Path
    identities: stack.Identities
    ports: stack.Ports
    diagnostics_port: int
    redis: RedisServer
    jwks: JwksServer
    processes: list[stack.ManagedProcess] = field(default_factory=list)

    def log_tails(self) -> str:
        tails = [f"--- {p.name} ({p.log_path}) ---\n{p.log_tail()}" for p in self.processes]
        tails.append(f"--- redis ---\n{self.redis.log_tail()}")
        return "\n".join(tails)


def jwks_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A new CA and a server certificate for 127.0.0.1: (ca, chain, key) files."""
    ca = CertificateAuthority.create("wimse-authz load-fault test CA")
    leaf = ca.issue("jwks.load-fault.test", ip_addresses=["127.0.0.1"], dns_names=["localhost"])
    return (
        write_pem(directory / "ca.pem", ca.cert_pem),
        write_pem(directory / "jwks.pem", leaf.chain_pem),
        write_pem(directory / "jwks-key.pem", leaf.key_pem),
    )


def gateway_yaml(s: Stack, ca_file: Path, schedule: Schedule) -> Path:
    """The demo gateway configuration with a shared Redis replay cache and the trust
    domain's WIT issuer keys fetched from the JWKS server."""
    config = stack.gateway_config(
        s.workdir,
        s.ports,
        overrides={
            "logging": {"level": "warning"},
            "diagnostics": {"address": f"127.0.0.1:{s.diagnostics_port}"},
            "replay": {"redis": {"url": s.redis.url, "on_unavailable": "fail_closed"}},
            "clock_skew_seconds": CLOCK_SKEW_SECONDS,
            "wpt": {"max_lifetime_seconds": PROOF_TTL},
            "http_signature": {"max_lifetime_seconds": PROOF_TTL},
        },
    )
    domain = config["trust_domains"][stack.TRUST_DOMAIN]
    del domain["jwks_file"]
    domain["jwks_url"] = s.jwks.url
    domain["fetch"] = {
        "ca_file": str(ca_file),
        "timeout_seconds": JWKS_FETCH_TIMEOUT_SECONDS,
        "refresh_seconds": JWKS_REFRESH_SECONDS,
        "min_refresh_interval_seconds": JWKS_MIN_REFRESH_INTERVAL_SECONDS,
        "max_stale_seconds": schedule.max_stale_seconds,
    }
    return stack.write_yaml(s.workdir / "gateway.yaml", config)


def wait_until_answering(url: str, processes: Iterable[stack.ManagedProcess]) -> None:
    """Poll `url` for a 200 until STARTUP_TIMEOUT; give up early if a process exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        dead = [p.name for p in processes if not p.running()]
        if dead:
            raise RunAborted(f"{', '.join(dead)} exited during startup")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RunAborted(f"{url} did not answer 200 within {STARTUP_TIMEOUT:.0f} s")
        with contextlib.suppress(TimeoutError):
            stack.wait_for_http(url, timeout=min(1.0, remaining))
            return


def new_stack(workdir: Path) -> tuple[Stack, Path]:
    """Keys, certificates and ports for a stack (nothing started); also the CA file that
    verifies the JWKS server."""
    ca_file, cert_file, key_file = jwks_certificate(workdir / "tls")
    identities = stack.ensure_identities(workdir)
    issuer_jwks = json.loads(
        (workdir / "trust" / f"{stack.TRUST_DOMAIN}.jwks.json").read_text(encoding="utf-8")
    )
    s = Stack(
        workdir,
        identities,
        stack.Ports.free(),
        stack.free_port(),
        RedisServer(workdir / "redis"),
        JwksServer(issuer_jwks, cert_file, key_file),
    )
    return s, ca_file


def start_stack(exits: contextlib.ExitStack, s: Stack, ca_file: Path, schedule: Schedule) -> None:
    """Start Redis, the JWKS server, the upstream, the gateway and Envoy (in that order;
    each registered with `exits` as soon as it runs) and wait until Envoy answers its
    public path through the gateway."""
    exits.callback(s.redis.stop)
    s.redis.start()
    s.redis.put_in_service()  # a store replicas have used: its first claim finds no loss
    exits.callback(s.jwks.stop)
    s.jwks.start()
    upstream = EchoServer("127.0.0.1", s.ports.upstream).start()
    exits.callback(upstream.stop)
    envoy_yaml = stack.write_yaml(s.workdir / "envoy.yaml", stack.envoy_config(s.ports))
    for process in (
        stack.gateway_process(gateway_yaml(s, ca_file, schedule), s.workdir / "gateway.log"),
        stack.envoy_process(envoy_yaml, s.workdir / "envoy.log"),
    ):
        exits.callback(process.stop)
        s.processes.append(process.start())
    wait_until_answering(f"http://127.0.0.1:{s.ports.admin}/ready", s.processes)
    wait_until_answering(f"{s.ports.origin}/healthz", s.processes)


# --- traffic -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    kind: RequestClass
    variant: str
    path: str
    headers: dict[str, str]
    replayable: bool = False
    """A proof whose acceptance makes it a candidate for the `replay` class."""


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str
    variant: str
    started: float
    """Seconds since the load started."""
    ended: float
    status: int | None
    reason: str | None
    error: str | None = None

    @property
    def label(self) -> str:
        """`200`, `401 wpt.replayed`, `503 (no reason header)`, `timeout`, ..."""
        if self.status is None:
            return self.error or "error"
        if self.reason:
            return f"{self.status} {self.reason}"
        return f"{self.status} (no reason header)" if self.status >= 500 else str(self.status)

    @property
    def is_error(self) -> bool:
        return self.status is None or self.status >= 500

    def overlaps(self, start: float, end: float) -> bool:
        return self.started < end and self.ended > start


class Traffic:
    """Builds each class's requests, and remembers accepted proofs to replay.

    Proofs accepted before Redis restarted are kept: Redis has forgotten them, and the
    gateway must refuse them all the same (`replay.state_lost`), never accept them again.
    """

    def __init__(self, identities: stack.Identities, origin: str) -> None:
        self.origin = origin
        self._key = identities.workloads[CALLER]
        subject = identities.workload_id(CALLER)
        self._wit = mint_wit(identities.issuer, subject, self._key)
        attacker = generate_private_jwk("EdDSA", kid="attacker")
        rogue_issuer = generate_private_jwk("ES256", kid="rogue-issuer")
        # Signed by a key the trust domain never published, once under an unknown kid and
        # once under the real issuer's kid.
        impostor = {**rogue_issuer, "kid": identities.issuer["kid"]}
        self._attacker = attacker
        self._forged_wits = {
            UNKNOWN_ISSUER_KEY: mint_wit(rogue_issuer, subject, attacker),
            "wit_wrong_key_for_kid": mint_wit(impostor, subject, attacker),
        }
        self._accepted: deque[Request] = deque(maxlen=REPLAY_POOL)

    def settle(self, request: Request, status: int | None) -> None:
        """Keep an accepted proof for replaying."""
        if request.replayable and status == 200:
            self._accepted.append(request)

    def build(self, kind: RequestClass, rng: random.Random) -> Request:
        if kind == "replay":
            if self._accepted:
                original = self._accepted.pop()
                return Request("replay", original.variant, original.path, original.headers)
            kind = "valid"  # nothing accepted to replay yet
        if kind == "valid":
            return Request(
                "valid",
                "wpt",
                GRANTED_PATH,
                self._wpt_headers(self._wit, self._key, GRANTED_PATH),
                replayable=True,
            )
        if kind == "http_signature":
            return Request(
                "http_signature",
                "http_signature",
                GRANTED_PATH,
                self._signed_headers(self._key),
                replayable=True,
            )
        if kind == "policy_denied":
            headers = self._wpt_headers(self._wit, self._key, DENIED_PATH)
            return Request("policy_denied", "wpt", DENIED_PATH, headers)
        if kind == "anonymous":
            return Request("anonymous", "none", GRANTED_PATH, {})
        return self._forged(rng.choice(FORGED_VARIANTS))

    def _forged(self, variant: str) -> Request:
        if variant == "wpt_wrong_key":
            headers = self._wpt_headers(self._wit, self._attacker, GRANTED_PATH)
        elif variant == "http_signature_wrong_key":
            headers = self._signed_headers(self._attacker)
        else:
            headers = self._wpt_headers(self._forged_wits[variant], self._attacker, GRANTED_PATH)
        return Request("forged", variant, GRANTED_PATH, headers)

    def _wpt_headers(self, wit: str, key: dict[str, Any], path: str) -> dict[str, str]:
        wpt = mint_wpt(key, wit, self.origin + path, ttl=PROOF_TTL)
        return {WIT_HEADER: wit, "authorization": f"WPT {wpt}"}

    def _signed_headers(self, key: dict[str, Any]) -> dict[str, str]:
        headers = {WIT_HEADER: self._wit}
        return headers | sign_request(
            key,
            method="GET",
            path=GRANTED_PATH,
            audience=self.origin + GRANTED_PATH,
            headers=headers,
            ttl=PROOF_TTL,
        )


UNKNOWN_ISSUER_KEY = "wit_unknown_issuer_key"
"""A WIT naming a `kid` the JWKS lacks: while the JWKS server cannot be reached the gateway
cannot tell it from a rotation it missed, so it answers 503 `trust.anchors_unavailable`."""

FORGED_VARIANTS = (
    "wpt_wrong_key",
    "http_signature_wrong_key",
    UNKNOWN_ISSUER_KEY,
    "wit_wrong_key_for_kid",
)


async def send(
    session: aiohttp.ClientSession, origin: str, request: Request, clock: Callable[[], float]
) -> Outcome:
    started = clock()
    status: int | None = None
    reason: str | None = None
    error: str | None = None
    try:
        async with session.get(
            origin + request.path, headers=request.headers, allow_redirects=False
        ) as response:
            await response.read()
            status, reason = response.status, response.headers.get(REASON_HEADER)
    except TimeoutError:
        error = "timeout"
    except aiohttp.ClientError:
        error = "connection error"
    return Outcome(request.kind, request.variant, started, clock(), status, reason, error)


# --- faults --------------------------------------------------------------------------------


@dataclass
class Window:
    """A fault as it happened: `start` when the stop began, `end` when the restarted
    component answered again (seconds since the load started)."""

    plan: FaultPlan
    start: float
    end: float | None = None

    @property
    def effect_end(self) -> float:
        """Until when requests may still see this fault's effect."""
        return (self.end if self.end is not None else self.start + self.plan.length) + (
            self.plan.grace
        )


@dataclass
class Timeline:
    clock: Callable[[], float]
    out: TextIO
    events: list[tuple[float, str]] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)

    def log(self, event: str) -> float:
        at = self.clock()
        self.events.append((round(at, 2), event))
        print(f"  t={at:6.2f} s  {event}", file=self.out, flush=True)
        return at


async def run_faults(schedule: Schedule, s: Stack, traffic: Traffic, timeline: Timeline) -> None:
    """Stop and restart each target on schedule. Cancelled (Ctrl-C), it leaves the target
    as it is: `run` stops everything anyway."""
    for plan in schedule.faults:
        await asyncio.sleep(max(0.0, plan.start - timeline.clock()))
        window = Window(plan, timeline.log(f"{plan.name}: stopping {plan.target}"))
        timeline.windows.append(window)
        if plan.target == "redis":
            await asyncio.to_thread(s.redis.stop)
        else:
            await asyncio.to_thread(s.jwks.stop)
        timeline.log(f"{plan.name}: {plan.target} down")
        await asyncio.sleep(max(0.0, window.start + plan.length - timeline.clock()))
        timeline.log(f"{plan.name}: starting {plan.target}")
        if plan.target == "redis":
            await asyncio.to_thread(s.redis.start)
        else:
            await asyncio.to_thread(s.jwks.start)
        window.end = timeline.log(f"{plan.name}: {plan.target} answering again")


# --- the load ------------------------------------------------------------------------------


async def worker(
    index: int,
    *,
    session: aiohttp.ClientSession,
    traffic: Traffic,
    clock: Callable[[], float],
    until: float,
    outcomes: list[Outcome],
) -> None:
    rng = random.Random(index)  # noqa: S311 - picks request classes, not secrets
    kinds, weights = list(CLASS_WEIGHTS), list(CLASS_WEIGHTS.values())
    while clock() < until:
        request = traffic.build(rng.choices(kinds, weights)[0], rng)
        outcome = await send(session, traffic.origin, request, clock)
        traffic.settle(request, outcome.status)
        outcomes.append(outcome)


async def sanity_check(session: aiohttp.ClientSession, traffic: Traffic) -> None:
    """One valid and one anonymous request must be answered 200 and 401 before the run."""
    rng = random.Random(0)  # noqa: S311 - picks request classes, not secrets
    first: tuple[tuple[RequestClass, int], ...] = (("valid", 200), ("anonymous", 401))
    for kind, expected in first:
        outcome = await send(session, traffic.origin, traffic.build(kind, rng), time.monotonic)
        if outcome.status != expected:
            raise RunAborted(f"sanity check: a {kind} request was answered {outcome.label}")


async def load(
    settings: Settings, schedule: Schedule, s: Stack, out: TextIO
) -> tuple[list[Outcome], Timeline, float]:
    """Run the traffic and the fault schedule; (outcomes, timeline, seconds of load)."""
    traffic = Traffic(s.identities, s.ports.origin)
    connector = aiohttp.TCPConnector(limit=settings.concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await sanity_check(session, traffic)
        started = time.monotonic()

        def clock() -> float:
            return time.monotonic() - started

        timeline = Timeline(clock, out)
        outcomes: list[Outcome] = []
        print(
            f"\nload: {settings.duration} s, {settings.concurrency} in flight; fault timeline:",
            file=out,
            flush=True,
        )
        backstop = asyncio.timeout(settings.duration + SHUTDOWN_MARGIN)
        try:
            async with backstop:
                faults = asyncio.create_task(run_faults(schedule, s, traffic, timeline))
                workers = [
                    worker(
                        i,
                        session=session,
                        traffic=traffic,
                        clock=clock,
                        until=settings.duration,
                        outcomes=outcomes,
                    )
                    for i in range(settings.concurrency)
                ]
                try:
                    await asyncio.gather(*workers)
                except BaseException:
                    faults.cancel()
                    raise
                # The schedule ends before the load; this waits for its last restart.
                await faults
        except TimeoutError:
            if backstop.expired():
                raise RunAborted(
                    f"the load did not end within {settings.duration + SHUTDOWN_MARGIN:.0f} s"
                ) from None
            raise
        return outcomes, timeline, clock()


# --- report --------------------------------------------------------------------------------


def histogram(outcomes: Iterable[Outcome]) -> dict[str, int]:
    counts = Counter(o.label for o in outcomes)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def by_class(outcomes: Iterable[Outcome]) -> dict[str, list[Outcome]]:
    grouped: dict[str, list[Outcome]] = {kind: [] for kind in CLASS_WEIGHTS}
    for outcome in outcomes:
        grouped[outcome.kind].append(outcome)
    return grouped


def wrongful(outcome: Outcome) -> bool:
    """A request that must be denied was let through."""
    return (
        outcome.kind not in ALLOWED_CLASSES
        and outcome.status is not None
        and 200 <= outcome.status < 300
    )


def unexpected(outcome: Outcome, in_fault: bool) -> bool:
    """Neither the class's expected answer nor, during a fault window, an outage answer or
    a proof refused because Redis came back empty (`replay.state_lost`)."""
    if outcome.status in EXPECTED_STATUSES[outcome.kind]:
        return False
    return not (in_fault and (outcome.is_error or outcome.reason == "replay.state_lost"))


def window_report(window: Window, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    during = [o for o in outcomes if o.overlaps(window.start, window.effect_end)]
    observed = {kind: histogram(group) for kind, group in by_class(during).items() if group}
    # Keys gone stale (not an unknown kid that could not be looked up during the outage).
    stale = [
        o
        for o in during
        if o.label == "503 trust.anchors_unavailable" and o.variant != UNKNOWN_ISSUER_KEY
    ]
    return {
        "name": window.plan.name,
        "target": window.plan.target,
        "planned_start": window.plan.start,
        "planned_length": window.plan.length,
        "start": round(window.start, 2),
        "end": None if window.end is None else round(window.end, 2),
        "grace": window.plan.grace,
        "expect": window.plan.expect,
        "requests": len(during),
        "observed": observed,
        "first_anchors_unavailable_after": (
            round(min(o.ended for o in stale) - window.start, 2) if stale else None
        ),
    }


def checks(windows: Sequence[Window], outcomes: Sequence[Outcome]) -> dict[str, bool]:
    """What each fault window must have shown; all True in a good run."""
    named = {w.plan.name: w for w in windows}

    def in_window(name: str) -> list[Outcome]:
        w = named.get(name)
        return [] if w is None else [o for o in outcomes if o.overlaps(w.start, w.effect_end)]

    result = {"every_fault_window_happened": all(w.end is not None for w in windows)}
    result["no_wrongful_allows"] = not any(wrongful(o) for o in outcomes)
    result["redis_down_answered_503_replay_store_unavailable"] = any(
        o.label == "503 replay.store_unavailable" for o in in_window("redis")
    )
    redis_back = named["redis"].end if "redis" in named else None
    result["replays_refused_as_wpt_replayed_after_redis_came_back"] = (
        redis_back is not None
        and any(
            o.kind == "replay" and o.label == "401 wpt.replayed" and o.started > redis_back
            for o in outcomes
        )
    )
    short = named.get("jwks_short")
    short_end = short.end if short is not None else None
    result["short_jwks_outage_served_from_last_good_keys"] = (
        short is not None
        and short_end is not None
        and any(
            o.kind == "valid" and o.status == 200 and short.start < o.started < short_end
            for o in outcomes
        )
        and not any(
            o.label == "503 trust.anchors_unavailable" and o.variant != UNKNOWN_ISSUER_KEY
            for o in in_window("jwks_short")
        )
    )
    result["long_jwks_outage_answered_503_anchors_unavailable"] = any(
        o.label == "503 trust.anchors_unavailable" for o in in_window("jwks_long")
    )
    last_effect = max((w.effect_end for w in windows), default=0.0)
    result["valid_requests_answered_200_after_the_last_fault"] = any(
        o.kind == "valid" and o.status == 200 and o.started > last_effect for o in outcomes
    )
    return result


def build_report(
    settings: Settings,
    schedule: Schedule,
    outcomes: Sequence[Outcome],
    timeline: Timeline,
    seconds: float,
) -> dict[str, Any]:
    windows = timeline.windows

    def in_fault(o: Outcome) -> bool:
        return any(o.overlaps(w.start, w.effect_end) for w in windows)

    classes: dict[str, Any] = {}
    for kind, group in by_class(outcomes).items():
        classes[kind] = {
            "count": len(group),
            "statuses": histogram(group),
            "errors": histogram(o for o in group if o.is_error),
            "unexpected": histogram(o for o in group if unexpected(o, in_fault(o))),
        }
        if kind == "forged" and group:
            classes[kind]["variants"] = dict(sorted(Counter(o.variant for o in group).items()))
    wrong = [o for o in outcomes if wrongful(o)]
    outside = [o for o in outcomes if o.kind in ALLOWED_CLASSES and not in_fault(o)]
    redis_back = next((w.end for w in windows if w.plan.name == "redis"), None)
    after_redis = [
        o
        for o in outcomes
        if o.kind == "replay" and redis_back is not None and o.started > redis_back
    ]
    return {
        "settings": asdict(settings),
        "gateway_settings": {
            "replay.redis.on_unavailable": "fail_closed",
            "clock_skew_seconds": CLOCK_SKEW_SECONDS,
            "wpt.max_lifetime_seconds": PROOF_TTL,
            "http_signature.max_lifetime_seconds": PROOF_TTL,
            "fetch.refresh_seconds": JWKS_REFRESH_SECONDS,
            "fetch.min_refresh_interval_seconds": JWKS_MIN_REFRESH_INTERVAL_SECONDS,
            "fetch.timeout_seconds": JWKS_FETCH_TIMEOUT_SECONDS,
            "fetch.max_stale_seconds": schedule.max_stale_seconds,
        },
        "requests": len(outcomes),
        "seconds": round(seconds, 2),
        "requests_per_second": round(len(outcomes) / seconds, 1) if seconds else 0.0,
        "classes": classes,
        "timeline": [{"t": t, "event": event} for t, event in timeline.events],
        "windows": [window_report(w, outcomes) for w in windows],
        "wrongful_allows": len(wrong),
        "wrongful_allow_samples": [asdict(o) for o in wrong[:20]],
        "valid_503_outside_fault_windows": sum(o.status == 503 for o in outside),
        "valid_not_200_outside_fault_windows": histogram(o for o in outside if o.status != 200),
        "replays_after_redis_came_back": histogram(after_redis),
        "checks": checks(windows, outcomes),
    }


def exit_status(report: Mapping[str, Any]) -> int:
    if report["wrongful_allows"]:
        return 1
    return 0 if all(report["checks"].values()) else 3


def _counts(histogram_: Mapping[str, int]) -> str:
    return ", ".join(f"{label}: {count}" for label, count in histogram_.items()) or "-"


def print_report(report: Mapping[str, Any], out: TextIO) -> None:
    def line(text: str = "") -> None:
        print(text, file=out)

    line(
        f"\nrequests: {report['requests']} in {report['seconds']:.1f} s "
        f"= {report['requests_per_second']:.1f} req/s"
    )
    line(f"\n{'class':<15} {'count':>7}  statuses")
    for kind, c in report["classes"].items():
        line(f"{kind:<15} {c['count']:>7}  {_counts(c['statuses'])}")
    forged = report["classes"]["forged"].get("variants")
    if forged:
        line(f"  forged variants: {_counts(forged)}")
    line("\nerrors by class (5xx, timeouts, connection errors):")
    for kind, c in report["classes"].items():
        line(f"  {kind:<15} {_counts(c['errors'])}")
    line("\nanswers outside the class's expected one and not an outage during a fault:")
    for kind, c in report["classes"].items():
        line(f"  {kind:<15} {_counts(c['unexpected'])}")
    # The timeline itself was printed as it happened; each window repeats its times.
    line("\nobserved during each fault window (stop .. answering again + grace, in s):")
    for w in report["windows"]:
        end = "?" if w["end"] is None else f"{w['end']:.2f}"
        line(
            f"  {w['name']}: {w['start']:.2f} .. {end} (+{w['grace']:.0f} s), "
            f"{w['requests']} requests; expected: {w['expect']}"
        )
        for kind, counts in w["observed"].items():
            line(f"    {kind:<15} {_counts(counts)}")
        if w["first_anchors_unavailable_after"] is not None:
            line(
                f"    first 503 trust.anchors_unavailable "
                f"{w['first_anchors_unavailable_after']:.2f} s after the stop"
            )
    line(f"\nreplays after Redis came back: {_counts(report['replays_after_redis_came_back'])}")
    line(
        "valid/http_signature answered 503 outside fault windows: "
        f"{report['valid_503_outside_fault_windows']}"
        f" (all non-200: {_counts(report['valid_not_200_outside_fault_windows'])})"
    )
    gateway = report.get("gateway_metrics")
    if gateway:
        line(f"gateway /metrics: {_counts(gateway)}")
    jwks = report.get("jwks_answers")
    if jwks:
        line(f"JWKS server answers: {_counts(jwks)}")
    line("\nchecks:")
    for name, ok in report["checks"].items():
        line(f"  {'ok  ' if ok else 'FAIL'}  {name}")
    line(f"\nwrongful allows: {report['wrongful_allows']}")
    for sample in report["wrongful_allow_samples"]:
        line(f"  {sample}")


# --- main ----------------------------------------------------------------------------------


def _version(argv: list[str], pattern: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    match = re.search(pattern, result.stdout + result.stderr)
    return match.group(1) if match else "unknown"


def versions() -> dict[str, str]:
    return {
        "envoy": _version([stack.envoy_binary(), "--version"], r"version: (\S+)"),
        "redis": _version([redis_server_binary(), "--version"], r"v=(\S+)"),
        "python": sys.version.split()[0],
    }


def gateway_metrics(port: int) -> dict[str, int]:
    """The gateway's own account of the outages: replay store errors, key fetches."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    found: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "wimse_authz_replay_store_errors_total":
                found["replay_store_errors"] += int(sample.value)
            elif sample.name == "wimse_authz_key_source_fetches_total":
                found[f"key_fetch_{sample.labels.get('result', '')}"] += int(sample.value)
    return dict(sorted(found.items()))


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="wimse-load-fault-") as name:
        yield Path(name)


def run(settings: Settings, out: TextIO) -> dict[str, Any]:
    """Start the stack, run the load and the faults, stop everything; the report.

    Raises RunAborted, with the processes' log tails, if the run could not be completed.
    """
    schedule = plan_faults(settings.duration)
    with _workdir() as workdir, contextlib.ExitStack() as exits:
        s, ca_file = new_stack(workdir)
        try:
            print("starting redis-server, JWKS server, echo upstream, gateway, envoy...", file=out)
            start_stack(exits, s, ca_file, schedule)
            outcomes, timeline, seconds = asyncio.run(load(settings, schedule, s, out))
            metrics = gateway_metrics(s.diagnostics_port)
        except Exception as exc:
            cause = str(exc) if isinstance(exc, RunAborted) else traceback.format_exc()
            raise RunAborted(f"{cause}\n{s.log_tails()}") from exc
        report = build_report(settings, schedule, outcomes, timeline, seconds)
        report["gateway_metrics"] = metrics
        report["jwks_answers"] = {str(k): v for k, v in sorted(s.jwks.answers.items())}
        exited = [p.name for p in s.processes if not p.running()]
        report["checks"]["no_process_exited_during_the_run"] = not exited
        if exited:
            print(f"\nexited during the run: {exited}\n{s.log_tails()}", file=out)
    return report


def _aborted(settings: Settings, why: str, status: int) -> int:
    if settings.json:
        json.dump({"aborted": why, "exit_status": status}, sys.stdout)
        print()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    # With --json the report document is the only thing on stdout.
    out = sys.stderr if settings.json else sys.stdout
    schedule = plan_faults(settings.duration)
    try:
        info = versions()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"ABORTED: {exc}", file=out)  # redis-server or Envoy missing
        return _aborted(settings, str(exc), 2)
    print(
        f"wimse-authz load-and-fault run: envoy {info['envoy']}, redis {info['redis']}, "
        f"python {info['python']}; max_stale_seconds {schedule.max_stale_seconds:g}, "
        f"refresh_seconds {JWKS_REFRESH_SECONDS:g}",
        file=out,
        flush=True,
    )
    planned = "; ".join(f"{f.name} at {f.start:g} s for {f.length:g} s" for f in schedule.faults)
    print(f"fault schedule: {planned}", file=out, flush=True)
    try:
        report = run(settings, out)
    except RunAborted as exc:
        print(f"\nABORTED: {exc}", file=out)
        return _aborted(settings, str(exc).splitlines()[0], 2)
    except KeyboardInterrupt:
        print("\ninterrupted; every process stopped", file=out)
        return _aborted(settings, "interrupted", 130)
    report["versions"] = info
    status = exit_status(report)
    report["exit_status"] = status
    print_report(report, out)
    if settings.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    return status


if __name__ == "__main__":
    sys.exit(main())
