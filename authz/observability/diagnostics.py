"""The diagnostics HTTP port: Prometheus `/metrics`, liveness `/healthz`, readiness `/readyz`.

It runs on the gateway's asyncio loop, the thread that serves gRPC, so the readiness
callback and the metrics' size functions read gateway state without locks. Plain HTTP with
no authentication: bind it to loopback or a private pod address, never a public one. (The
workers of `serve --workers N` serve theirs on Unix sockets in the supervisor's private
directory; the supervisor's own answers for them all.)

The handlers never echo request data: bodies are fixed text, metrics or the readiness
detail. Only GET and HEAD are answered (405 otherwise), unknown paths are 404. A request
aiohttp cannot parse gets aiohttp's own 400, whose text/plain body quotes the parser's
complaint (up to about 100 bytes of the bad line).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import cast

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

log = logging.getLogger("authz.diagnostics")

# Probes and scrapes send no body and a handful of headers; anything larger is not one.
_MAX_BODY_BYTES = 1024
_MAX_LINE_BYTES = 4096
_MAX_HEADERS = 32
# Prometheus and kubelet reuse connections between scrapes and probes (default 10-60 s
# apart); idle ones beyond this are closed and simply reopened.
_KEEPALIVE_SECONDS = 30.0
_SHUTDOWN_SECONDS = 2.0

_NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class Readiness:
    """Whether the gateway should receive traffic, and why (shown as JSON on `/readyz`)."""

    ready: bool
    detail: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    """JSON-serialisable: e.g. policy and trust revisions, last reload result, time, error."""


ReadinessCheck = Callable[[], Readiness | Awaitable[Readiness]]
"""Readiness now, or a coroutine finding it out (the supervisor asks its workers)."""

LivenessCheck = Callable[[], Awaitable[Readiness]]
"""For `/healthz` when answering is not proof enough: `ready` there means alive."""


def parse_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port); port 0 picks a free one."""
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"diagnostics address {address!r}: expected host:port")
    return host, int(port)


class DiagnosticsServer:
    """`/metrics`, `/healthz` and `/readyz` on one address, served on the running loop.

    `address` is `host:port`, or `unix:/path` for a Unix socket. `start()` binds (raising
    `OSError` that names the address if it cannot) and returns once the port answers;
    `stop()` closes it and may be called more than once, or before start. `liveness`, when
    given, decides `/healthz`; `before_scrape` runs before each `/metrics` answer is built
    from `registry` (to gather what its collectors report).
    """

    def __init__(
        self,
        address: str,
        registry: CollectorRegistry,
        readiness: ReadinessCheck,
        *,
        liveness: LivenessCheck | None = None,
        before_scrape: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.address = address
        self._unix_path = address.removeprefix("unix:") if address.startswith("unix:") else None
        self._host, self._port = ("", 0) if self._unix_path else parse_address(address)
        self._registry = registry
        self._readiness = readiness
        self._liveness = liveness
        self._before_scrape = before_scrape
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The bound TCP port (the chosen one when the address asked for port 0)."""
        if self._runner is None:
            raise RuntimeError("diagnostics server is not started")
        port: int = self._runner.addresses[0][1]
        return port

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("diagnostics server is already started")
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=_SHUTDOWN_SECONDS,
            keepalive_timeout=_KEEPALIVE_SECONDS,
            lingering_time=1.0,
            max_line_size=_MAX_LINE_BYTES,
            max_field_size=_MAX_LINE_BYTES,
            max_headers=_MAX_HEADERS,
        )
        await runner.setup()
        site: web.BaseSite
        if self._unix_path is not None:
            site = web.UnixSite(runner, self._unix_path)
        else:
            site = web.TCPSite(runner, self._host, self._port, reuse_port=False)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            reason = exc.strerror or str(exc)
            raise OSError(
                exc.errno, f"cannot listen on {self.address} for diagnostics: {reason}"
            ) from exc
        self._runner = runner
        if self._unix_path is None:
            log.info("diagnostics listening on %s (port %d)", self.address, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._before_scrape is not None:
            await self._before_scrape()
        if _wants_openmetrics(request.headers.get("Accept", "")):
            # prometheus_client leaves the OpenMetrics encoder unannotated.
            generate = cast(Callable[[CollectorRegistry], bytes], openmetrics.generate_latest)
            body, content_type = generate(self._registry), openmetrics.CONTENT_TYPE_LATEST
        else:
            body, content_type = generate_latest(self._registry), CONTENT_TYPE_PLAIN_0_0_4
        return web.Response(body=body, headers={**_NO_STORE, "Content-Type": content_type})

    async def _healthz(self, request: web.Request) -> web.Response:
        if self._liveness is None:
            # Answering at all is the check: the loop that also serves gRPC is turning.
            return web.json_response({"status": "ok"}, headers=_NO_STORE)
        try:
            alive = await self._liveness()
        except Exception:
            log.exception("liveness check failed")
            alive = Readiness(False, {"error": "liveness check failed"})
        body = {"status": "ok" if alive.ready else "failing", "detail": dict(alive.detail)}
        return web.json_response(body, status=200 if alive.ready else 503, headers=_NO_STORE)

    async def _readyz(self, request: web.Request) -> web.Response:
        try:
            answer = self._readiness()
            readiness = await answer if inspect.isawaitable(answer) else answer
            status = "ready" if readiness.ready else "not_ready"
            body = json.dumps({"status": status, "detail": dict(readiness.detail)})
        except Exception:
            # A broken check must not report ready: fail closed, say so in the log.
            log.exception("readiness check failed")
            return web.json_response(
                {"status": "not_ready", "detail": {"error": "readiness check failed"}},
                status=503,
                headers=_NO_STORE,
            )
        return web.Response(
            text=body,
            status=200 if readiness.ready else 503,
            content_type="application/json",
            headers=_NO_STORE,
        )


def _wants_openmetrics(accept: str) -> bool:
    """True when the client lists OpenMetrics (as Prometheus does) with a non-zero q."""
    for media_range in accept.split(","):
        media_type, *parameters = (part.strip() for part in media_range.split(";"))
        if media_type.lower() != "application/openmetrics-text":
            continue
        if not any(_is_zero_q(parameter) for parameter in parameters):
            return True
    return False


def _is_zero_q(parameter: str) -> bool:
    name, _, value = parameter.partition("=")
    if name.strip().lower() != "q":
        return False
    try:
        return float(value) == 0
    except ValueError:
        return True  # an unreadable q is not a request for this type
