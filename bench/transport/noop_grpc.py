"""A do-nothing ext_authz server on grpc.aio: OK for every Check, health SERVING.

The grpc.aio side of the transport comparison: the same server options as the gateway
(`SERVER_OPTIONS`), one process, nothing decided.

    .venv/bin/python bench/transport/noop_grpc.py 127.0.0.1:9191
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from authz.server.listeners import SERVER_OPTIONS

ALLOW = CheckResponse()
ALLOW.status.code = code_pb2.OK


class NoopAuthorization(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    async def Check(self, request: CheckRequest, context: Any) -> CheckResponse:
        return ALLOW


async def serve(address: str) -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(NoopAuthorization(), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", "envoy.service.auth.v3.Authorization"):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"cannot listen on {address}")
    await server.start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
