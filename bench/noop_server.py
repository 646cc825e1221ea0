"""A do-nothing ext_authz server on grpc.aio: every Check is answered OK, nothing else.

`bench/run.py` puts it behind Envoy as the `noop_grpc` setup, so the bench shows what the
serving transport alone costs (gRPC framing, protobuf (de)serialization, the asyncio loop
and gRPC's threads) next to the full check, which pays the same transport plus the work.
It is built the way the gateway builds its server (`grpc.aio.server` with the same
`SERVER_OPTIONS`, the standard health service reporting SERVING for the ext_authz service,
which Envoy's health check asks for), minus everything the gateway does per check.

    .venv/bin/python bench/noop_server.py --port 9191

Listens on 127.0.0.1 only. SIGTERM or SIGINT stops it (in-flight calls get one second).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from authz.server import event_loop
from authz.server.listeners import SERVER_OPTIONS

AUTHORIZATION_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
STOP_GRACE_SECONDS = 1.0


class NoopAuthorization(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Allows every request; reads nothing from it."""

    def __init__(self) -> None:
        # One answer for every call: building it is not part of the transport's cost.
        self._ok = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: Any
    ) -> external_auth_pb2.CheckResponse:
        return self._ok


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:`port` until SIGTERM or SIGINT."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(NoopAuthorization(), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", AUTHORIZATION_SERVICE):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise SystemExit(f"noop_server: cannot listen on 127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(STOP_GRACE_SECONDS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the loop, as the gateway's server.event_loop (default: uvloop, as it does)",
    )
    args = parser.parse_args(argv)
    event_loop.run(serve(args.port), args.event_loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
