"""The gRPC server: listeners, ext_authz, health, reflection, graceful shutdown.

Start-up order: listeners (and the diagnostics port) bind and health reports NOT_SERVING;
keys and policies load and are validated; health turns SERVING. Checks that arrive before
that are answered as unavailable. Afterwards the reloader swaps in new gateways as files
change or on SIGHUP. On SIGTERM or SIGINT health turns NOT_SERVING, new calls are refused
and in-flight checks are given `shutdown_grace_seconds` to finish.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import disable_created_metrics

from authz.answers import Answers
from authz.clock import Clock, system_clock
from authz.config import Config, ListenerConfig, ServerConfig
from authz.errors import ConfigError
from authz.gateway import Gateway, Runtime
from authz.observability.diagnostics import DiagnosticsServer, Readiness
from authz.server.authorization import AuthorizationService, Checks
from authz.server.listeners import (
    SERVER_OPTIONS,
    BoundListener,
    ClientAllowList,
    bind_listeners,
    client_interceptors,
    load_credentials,
    restrict_outbound_sockets,
)
from authz.server.reloader import Reloader, ReloadStatus
from authz.server.workers import WorkerRole
from authz.tts.endpoint import TokenExchangeServer

log = logging.getLogger("authz.server")

AUTHORIZATION_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name


class GatewayServer:
    def __init__(
        self,
        config: Config,
        clock: Clock = system_clock,
        config_path: Path | None = None,
        worker: WorkerRole | None = None,
    ) -> None:
        """`worker`: this server is one of the workers of `serve --workers N` (its own
        listeners, diagnostics socket and the shared replay table; see `authz.server.workers`).
        """
        self._config = config
        self._clock = clock
        self._worker = worker
        shared_table = worker.replay_table if worker and config.replay.redis is None else None
        self.runtime = Runtime.create(config, clock, shared_replay_table=shared_table)
        self.metrics = self.runtime.metrics
        self._health = health_aio.HealthServicer()
        answers = Answers(config.responses, config.upstream)
        listeners = config.server
        if worker is not None:
            listeners = listeners.for_worker(worker.index)
        self._listeners = listeners
        # gRPC does not tell a call which listener it came in on, so the listener's mode is
        # kept by the server it is bound to: one for the inbound listeners, and one for each
        # outbound or edge listener (answering only in its role, with its own client list).
        self._served = [
            _Served(
                grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors),
                AuthorizationService(answers, self.metrics),
                group,
                role,
            )
            for role, group, interceptors in _server_groups(listeners)
        ]
        # The token-exchange endpoint is HTTP, not ext_authz: a server of its own each.
        self._token_exchange = [
            TokenExchangeServer(listener)
            for listener in listeners.listeners
            if listener.mode == "tts"
        ]
        self.reloader = Reloader(config, config_path, clock, self.runtime, self._install)
        self.diagnostics: DiagnosticsServer | None = None
        self.listeners: list[BoundListener] = []

    @property
    def gateway(self) -> Gateway | None:
        return self.reloader.gateway

    async def start(self) -> None:
        """Bind every listener, then load keys and policies, report SERVING and watch."""
        await self.bind()
        await self.load()
        self.reloader.start_watching()

    async def bind(self) -> None:
        """Listen and answer: health NOT_SERVING, checks unavailable until `load`."""
        for name in ("", AUTHORIZATION_SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        # Every certificate is read and checked before anything binds.
        loaded = load_credentials(self._listeners)
        credentials = {
            id(listener): tls
            for listener, tls in zip(self._listeners.listeners, loaded, strict=True)
        }
        for served in self._served:
            server = served.server
            external_auth_pb2_grpc.add_AuthorizationServicer_to_server(served.authorization, server)
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            if self._config.server.reflection:
                reflection.enable_server_reflection(
                    (AUTHORIZATION_SERVICE, "grpc.health.v1.Health", reflection.SERVICE_NAME),
                    server,
                )
            self.listeners += bind_listeners(
                server,
                served.listeners,
                [credentials[id(listener)] for listener in served.listeners],
            )
        self.metrics.watch_tls_listeners(
            {bound.address: bound.credentials for bound in self.listeners if bound.credentials}
        )
        for served in self._served:
            await served.server.start()
            restrict_outbound_sockets(served.listeners)
        endpoint = self._config.tts.endpoint if self._config.tts is not None else None
        for exchange in self._token_exchange:
            assert endpoint is not None  # by Config's validation: tts listeners need it
            await exchange.start(endpoint.max_body_bytes)
        diagnostics = self._config.diagnostics
        if self._worker is not None:
            address: str | None = f"unix:{self._worker.diagnostics_socket}"
        else:
            address = diagnostics.address if diagnostics is not None else None
        if address is not None:
            self.diagnostics = DiagnosticsServer(address, self.metrics.registry, self.readiness)
            await self.diagnostics.start()

    async def load(self) -> None:
        """Load trust anchors and compile policies; then report SERVING.

        A policy bundle or trust anchors served over HTTP may not be reachable yet: the
        gateway then stays NOT_SERVING and keeps trying. Anything else that fails to load is
        fatal at start.
        """
        if await self.reloader.load("start"):
            return
        if self.reloader.awaiting_anchors:
            waiting = ", ".join(source.where for source in self.runtime.live_keys.pending())
            log.warning("no trust anchors yet from %s: retrying until they answer", waiting)
            return
        bundle = self._config.policy.bundle
        if bundle is not None and bundle.url is not None:
            log.warning("no policy yet: retrying %s until a valid bundle arrives", bundle.url)
            return
        status = self.reloader.last
        raise ConfigError(status.error if status is not None and status.error else "load failed")

    async def _install(self, gateway: Gateway) -> None:
        for served in self._served:
            served.authorization.pipeline = _pipeline_for(gateway, served.role)
        for exchange in self._token_exchange:
            exchange.exchange = gateway.token_exchange
        for name in ("", AUTHORIZATION_SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving on %s", ", ".join(map(str, self.listeners)))

    def readiness(self) -> Readiness:
        """Ready once keys and policies are loaded; the detail says what serves and how
        the last reload went."""
        gateway = self.gateway
        last, good = self.reloader.last, self.reloader.last_good
        detail: dict[str, object] = {
            "policy_revision": gateway.pipeline.engine.revision if gateway else None,
            "trust_revision": gateway.trust_store.revision if gateway else None,
            "last_reload": _status_detail(last),
            "last_good_reload": _status_detail(good),
            "deny_list": {
                "entries": len(self.runtime.deny_list.current),
                "error": self.runtime.deny_list.error,
            },
            "trust_sources": self.runtime.live_keys.describe(),
        }
        return Readiness(ready=gateway is not None, detail=detail)

    async def stop(self) -> None:
        """Stop taking new checks; let in-flight ones finish within the grace period."""
        await self._health.enter_graceful_shutdown()
        grace = self._config.server.shutdown_grace_seconds
        await asyncio.gather(*(served.server.stop(grace) for served in self._served))
        for exchange in self._token_exchange:
            await exchange.stop()
            exchange.exchange = None
        await self.reloader.close()
        # The engine was built on this (the serving) thread and must be dropped here too:
        # regorus engines cannot be released from another thread.
        for served in self._served:
            served.authorization.pipeline = None
        if self.diagnostics is not None:
            await self.diagnostics.stop()
        await self.runtime.aclose()
        log.info("stopped")


@dataclass(frozen=True, slots=True)
class _Served:
    """One gRPC server: the listeners it binds, and whose Checks it answers."""

    server: grpc.aio.Server
    authorization: AuthorizationService
    listeners: list[ListenerConfig]
    role: str
    """`inbound` (the inbound listeners), `edge`, or `outbound:<workload>`."""


def _server_groups(
    config: ServerConfig,
) -> list[tuple[str, list[ListenerConfig], list[grpc.aio.ServerInterceptor]]]:
    """The ext_authz listeners by server: the inbound ones together, every outbound and
    edge listener alone (each with its own client allow-list)."""
    inbound = config.inbound_listeners
    groups: list[tuple[str, list[ListenerConfig], list[grpc.aio.ServerInterceptor]]] = []
    if inbound:
        groups.append(("inbound", inbound, client_interceptors(config)))
    for listener in config.listeners:
        if listener.mode in ("outbound", "edge"):
            allowed = listener.tls.allowed_clients if listener.tls is not None else []
            interceptors = [ClientAllowList(frozenset(allowed))] if allowed else []
            role = f"outbound:{listener.workload}" if listener.mode == "outbound" else "edge"
            groups.append((role, [listener], interceptors))
    return groups


def _pipeline_for(gateway: Gateway, role: str) -> Checks | None:
    if role == "inbound":
        return gateway.pipeline
    if role == "edge":
        return gateway.edge
    return gateway.outbound[role.removeprefix("outbound:")]


def _status_detail(status: ReloadStatus | None) -> dict[str, object] | None:
    if status is None:
        return None
    return {"ok": status.ok, "at": status.at, "trigger": status.trigger, "error": status.error}


async def serve(
    config: Config, config_path: Path | None = None, worker: WorkerRole | None = None
) -> None:
    """Run until SIGTERM or SIGINT, then drain and return. SIGHUP reloads. A `worker` also
    drains when its supervisor is gone."""
    # One `_created` series per counter doubles what every scrape carries, for nothing.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    server = GatewayServer(config, config_path=config_path, worker=worker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reloader.request_reload)
    if worker is not None and worker.lifeline_fd is not None:
        _stop_when_closed(loop, worker.lifeline_fd, stop)
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


def _stop_when_closed(loop: asyncio.AbstractEventLoop, fd: int, stop: asyncio.Event) -> None:
    """Set `stop` when the pipe at `fd` reaches end of file: nothing is ever written to it,
    so that is its writer (the supervisor) gone, however it ended."""

    def readable() -> None:
        if os.read(fd, 64):
            return
        loop.remove_reader(fd)
        log.warning("supervisor gone: draining and stopping")
        stop.set()

    loop.add_reader(fd, readable)
