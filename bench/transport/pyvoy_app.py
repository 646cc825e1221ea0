"""The gateway's Check and gRPC health as an ASGI app that pyvoy runs inside Envoy.

PROTOTYPE (issue 12, lever 1). Envoy terminates HTTP/2 and gRPC framing is done by
connect-python (`connectrpc`) with the standard protobuf types; the decision is the same
`Pipeline` and the same `encoded_answer` the grpc.aio server uses. pyvoy imports this
module by name inside the Envoy process, so everything comes from the environment
`serve.py` sets:

  WIMSE_AUTHZ_CONFIG    the gateway configuration file (as for `wimse-authz serve`)
  WIMSE_AUTHZ_APP_MODE  `gateway` (default) or `noop` (answer OK without deciding:
                        the transport's own cost, for the benchmark)
  WIMSE_AUTHZ_PYTHON    the interpreter of the environment: Python embedded in Envoy
                        reports whatever `python3` is first on PATH as sys.executable,
                        and policy validation runs a subprocess with it

Every request carries `x-wimse-authz-listener`: the name of the listener it came in on,
which the generated bootstrap (bootstrap.py) sets after removing any client-sent value, so
a call knows its listener (what listener modes need; gRPC never told us).

Threading (pyvoy 1.3.0, worker_threads=1): Envoy worker threads hand requests to one
Rust thread that holds the GIL to build the ASGI scope, which schedules the app on ONE
asyncio (uvloop) thread. Lifespan startup, every request and every background task of the
gateway run on that thread, so the regorus engine built at load serves every check.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

if _python := os.environ.get("WIMSE_AUTHZ_PYTHON"):
    sys.executable = _python

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.rpc import code_pb2
from grpc_health.v1.health_pb2 import (
    HealthCheckRequest,
    HealthCheckResponse,
    HealthListRequest,
    HealthListResponse,
)
from prometheus_client import disable_created_metrics
from stubs.external_auth_connect import AuthorizationASGIApplication
from stubs.health_connect import HealthASGIApplication

from authz.answers import Answers, Failed, Verdict
from authz.clock import system_clock
from authz.config import Config, load_config
from authz.errors import ConfigError
from authz.gateway import Gateway, Runtime
from authz.observability.diagnostics import DiagnosticsServer, Readiness
from authz.pipeline import Pipeline, new_decision_id
from authz.reasons import Reason
from authz.server.app import _status_detail
from authz.server.authorization import encoded_answer, record_answer
from authz.server.reloader import Reloader

log = logging.getLogger("authz.server.pyvoy")

AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization"
LISTENER_HEADER = "x-wimse-authz-listener"
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class GatewayState:
    """What `GatewayServer` holds, minus gRPC: runtime, reloader, the serving pipeline."""

    def __init__(self, config: Config, config_path: Path | None) -> None:
        self._config = config
        self.runtime = Runtime.create(config, system_clock)
        self.metrics = self.runtime.metrics
        self.answers = Answers(config.responses, config.upstream)
        self.pipeline: Pipeline | None = None
        self.draining = False
        self.reloader = Reloader(config, config_path, system_clock, self.runtime, self._install)
        self.diagnostics: DiagnosticsServer | None = None

    async def _install(self, gateway: Gateway) -> None:
        self.pipeline = gateway.pipeline
        log.info("serving (pyvoy transport)")

    async def start(self) -> None:
        """Load keys and policies (retrying what is only unreachable), then watch."""
        if self._config.diagnostics is not None:
            self.diagnostics = DiagnosticsServer(
                self._config.diagnostics.address, self.metrics.registry, self.readiness
            )
            await self.diagnostics.start()
        if not await self.reloader.load("start"):
            retrying = self.reloader.awaiting_anchors or (
                self._config.policy.bundle is not None
                and self._config.policy.bundle.url is not None
            )
            if not retrying:
                status = self.reloader.last
                raise ConfigError(status.error if status and status.error else "load failed")
            log.warning("not ready yet: keys or policy bundle unreachable, retrying")
        self.reloader.start_watching()

    def readiness(self) -> Readiness:
        """What `GatewayServer.readiness` reports (adoption would share one function)."""
        gateway = self.reloader.gateway
        detail: dict[str, object] = {
            "policy_revision": gateway.pipeline.engine.revision if gateway else None,
            "trust_revision": gateway.trust_store.revision if gateway else None,
            "last_reload": _status_detail(self.reloader.last),
            "last_good_reload": _status_detail(self.reloader.last_good),
            "deny_list": {
                "entries": len(self.runtime.deny_list.current),
                "error": self.runtime.deny_list.error,
            },
            "trust_sources": self.runtime.live_keys.describe(),
        }
        return Readiness(ready=self.pipeline is not None and not self.draining, detail=detail)

    async def stop(self) -> None:
        self.draining = True
        await self.reloader.close()
        self.pipeline = None  # the engine is released on the thread that built it
        if self.diagnostics is not None:
            await self.diagnostics.stop()
        await self.runtime.aclose()


class Authorization:
    """`envoy.service.auth.v3.Authorization` over connect-python; answers exactly what
    `authz.server.authorization.AuthorizationService` answers."""

    def __init__(self, state: GatewayState) -> None:
        self._state = state

    async def check(
        self, request: CheckRequest, ctx: RequestContext[CheckRequest, CheckResponse]
    ) -> CheckResponse:
        started = time.perf_counter()
        state = self._state
        verdict: Verdict
        pipeline = state.pipeline
        if ctx.request_headers().get(LISTENER_HEADER) is None:
            # Only the generated bootstrap's listeners set it: anything else reaching the
            # app is a configuration error, answered as our own unavailability.
            verdict = state.answers.unavailable(new_decision_id(), Reason.INTERNAL_ERROR)
        elif pipeline is None:
            verdict = state.answers.unavailable(new_decision_id(), Reason.GATEWAY_NOT_READY)
        else:
            verdict = await pipeline.check(request.attributes)
        if isinstance(verdict, Failed) and verdict.as_envoy_error:
            record_answer(state.metrics, verdict, started)
            raise ConnectError(Code.UNAVAILABLE, verdict.reason.value)
        verdict, response = encoded_answer(verdict, state.answers)
        record_answer(state.metrics, verdict, started)
        return response


class NoopAuthorization:
    """OK for every Check, nothing decided: what the transport alone costs."""

    _ALLOW = CheckResponse()
    _ALLOW.status.code = code_pb2.OK

    async def check(
        self, request: CheckRequest, ctx: RequestContext[CheckRequest, CheckResponse]
    ) -> CheckResponse:
        return self._ALLOW


class Health:
    """grpc.health.v1: SERVING once a pipeline is installed and until draining starts."""

    def __init__(self, ready: Callable[[], bool]) -> None:
        self._ready = ready

    async def check(
        self,
        request: HealthCheckRequest,
        ctx: RequestContext[HealthCheckRequest, HealthCheckResponse],
    ) -> HealthCheckResponse:
        if request.service not in ("", AUTHORIZATION_SERVICE):
            raise ConnectError(Code.NOT_FOUND, "unknown service")
        status = HealthCheckResponse.SERVING if self._ready() else HealthCheckResponse.NOT_SERVING
        return HealthCheckResponse(status=status)

    async def list(
        self,
        request: HealthListRequest,
        ctx: RequestContext[HealthListRequest, HealthListResponse],
    ) -> HealthListResponse:
        raise ConnectError(Code.UNIMPLEMENTED, "not implemented")

    def watch(
        self,
        request: HealthCheckRequest,
        ctx: RequestContext[HealthCheckRequest, HealthCheckResponse],
    ) -> Any:
        raise ConnectError(Code.UNIMPLEMENTED, "not implemented")


class GatewayApp:
    """The ASGI entry point: lifespan starts and stops the gateway; requests go to the
    Authorization or Health application by path."""

    def __init__(self) -> None:
        self._mode = os.environ.get("WIMSE_AUTHZ_APP_MODE", "gateway")
        self._state: GatewayState | None = None
        if self._mode == "noop":
            authorization: Any = NoopAuthorization()
            health = Health(lambda: True)
        else:
            config_path = Path(os.environ["WIMSE_AUTHZ_CONFIG"])
            config = load_config(config_path)
            logging.basicConfig(
                level=getattr(logging, config.logging.level.upper()),
                format="%(asctime)s %(levelname)s %(name)s %(message)s",
                stream=sys.stderr,
            )
            disable_created_metrics()  # type: ignore[no-untyped-call]
            self._state = GatewayState(config, config_path)
            state = self._state
            authorization = Authorization(state)
            health = Health(lambda: state.pipeline is not None and not state.draining)
        self._authorization = AuthorizationASGIApplication(authorization)
        self._health = HealthASGIApplication(health)
        self._routes: dict[str, Any] = {
            self._authorization.path: self._authorization,
            self._health.path: self._health,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        service = scope["path"].rpartition("/")[0]
        target = self._routes.get(service)
        if target is None:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await target(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self._state is not None:
                        await self._state.start()
                except Exception as exc:
                    log.exception("gateway failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._state is not None:
                    await self._state.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


app = GatewayApp()
