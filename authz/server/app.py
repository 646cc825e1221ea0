"""The gRPC server: listeners, ext_authz, health, reflection, graceful shutdown.

Start-up order: listeners bind and health reports NOT_SERVING; keys and policies load;
health turns SERVING. Checks that arrive before that are answered as unavailable. On
SIGTERM or SIGINT health turns NOT_SERVING, new calls are refused and in-flight checks are
given `shutdown_grace_seconds` to finish.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import stat
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from authz.answers import Answers
from authz.clock import Clock, system_clock
from authz.config import Config, ListenerConfig
from authz.gateway import Gateway, build_gateway
from authz.observability.metrics import Metrics
from authz.server.authorization import AuthorizationService

log = logging.getLogger("authz.server")

AUTHORIZATION_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name

_SERVER_OPTIONS = [
    # gRPC turns SO_REUSEPORT on by default; a second gateway on the same port must fail
    # to start rather than silently share (and split) Envoy's traffic.
    ("grpc.so_reuseport", 0),
]


def _grpc_address(listener: ListenerConfig) -> str:
    if listener.address.startswith("unix:"):
        path = Path(listener.address.removeprefix("unix:").removeprefix("//"))
        _refuse_live_socket(path)
        return f"unix:{path}"
    return listener.address


def _refuse_live_socket(path: Path) -> None:
    """gRPC unlinks whatever socket file is at the path before binding, which would silently
    take over a running gateway's socket: refuse if something answers there."""
    try:
        if not stat.S_ISSOCK(path.lstat().st_mode):
            return
    except FileNotFoundError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return  # stale: nothing listens, gRPC may replace it
    raise OSError(f"cannot listen on unix:{path}: another server is answering there")


class GatewayServer:
    def __init__(self, config: Config, clock: Clock = system_clock) -> None:
        self._config = config
        self._clock = clock
        self.metrics = Metrics()
        self._server = grpc.aio.server(options=_SERVER_OPTIONS)
        self._health = health_aio.HealthServicer()
        self._authorization = AuthorizationService(
            Answers(config.responses, config.upstream), self.metrics
        )
        self.gateway: Gateway | None = None
        self.bound: list[str] = []

    async def start(self) -> None:
        """Bind every listener, then load keys and policies and report SERVING."""
        await self.bind()
        await self.load()

    async def bind(self) -> None:
        """Listen and answer: health NOT_SERVING, checks unavailable until `load`."""
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
            self._authorization, self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        if self._config.server.reflection:
            reflection.enable_server_reflection(
                (AUTHORIZATION_SERVICE, "grpc.health.v1.Health", reflection.SERVICE_NAME),
                self._server,
            )
        for name in ("", AUTHORIZATION_SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        for listener in self._config.server.listeners:
            address = _grpc_address(listener)
            try:
                port = self._server.add_insecure_port(address)
            except RuntimeError:  # grpc reports a failed bind this way
                port = 0
            if port == 0:
                raise OSError(f"cannot listen on {listener.address} (in use, or no permission)")
            self.bound.append(
                address if address.startswith("unix:") else f"{address.rpartition(':')[0]}:{port}"
            )
        await self._server.start()

    async def load(self) -> None:
        """Load trust anchors and compile policies; then report SERVING."""
        self.gateway = build_gateway(self._config, self._clock, self.metrics)
        self._authorization.pipeline = self.gateway.pipeline
        for name in ("", AUTHORIZATION_SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving on %s (policy revision %s, trust anchors %s)",
            ", ".join(self.bound),
            self.gateway.pipeline.engine.revision,
            self.gateway.trust_store.revision,
        )

    async def stop(self) -> None:
        """Stop taking new checks; let in-flight ones finish within the grace period."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self._config.server.shutdown_grace_seconds)
        log.info("stopped")


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT, then drain and return."""
    server = GatewayServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
    except BaseException:
        # Configuration that cannot load: release the listeners before reporting it.
        await server.stop()
        raise
    log.info("pid %d ready", os.getpid())
    await stop.wait()
    log.info("shutting down: draining in-flight checks")
    await server.stop()
