"""The gRPC server over real sockets: ext_authz, health, reflection, listeners, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from authz.config import parse_config
from authz.devtools.stack import Ports, free_port, gateway_config
from authz.server.app import AUTHORIZATION_SERVICE, GatewayServer
from tests.e2e.inprocess import run
from tests.support import ORIGIN, GatewayHarness, check_request, hook_engine

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_for(harness: GatewayHarness, listeners: list[str]) -> GatewayServer:
    document = gateway_config(
        harness.directory, Ports(443, 1, 2, 3), listeners=listeners, origins=[ORIGIN]
    )
    return GatewayServer(parse_config(document, "test", harness.directory), harness.clock)


async def health(channel: grpc.aio.Channel, service: str = AUTHORIZATION_SERVICE) -> Any:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    return response.status


async def check(channel: grpc.aio.Channel, request: Any) -> CheckResponse:
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    response: CheckResponse = await stub.Check(request)
    return response


def test_health_is_not_serving_until_keys_and_policies_load(harness: GatewayHarness) -> None:
    address = f"127.0.0.1:{free_port()}"

    async def scenario() -> None:
        server = server_for(harness, [address])
        await server.bind()
        async with grpc.aio.insecure_channel(address) as channel:
            assert await health(channel) == NOT_SERVING
            assert await health(channel, "") == NOT_SERVING
            early = await check(channel, check_request("/healthz"))
            assert early.denied_response.status.code == 503, "never a 403 before we can decide"
            await server.load()
            assert await health(channel) == SERVING
            ready = await check(channel, check_request("/healthz"))
            assert ready.status.code == code_pb2.OK
        await server.stop()

    run(scenario, timeout=30)


def test_checks_over_tcp_and_unix_socket(harness: GatewayHarness, tmp_path: Path) -> None:
    tcp = f"127.0.0.1:{free_port()}"
    unix = f"unix:{tmp_path / 'authz.sock'}"

    async def scenario() -> None:
        server = server_for(harness, [tcp, unix])
        await server.start()
        for address in (tcp, unix):
            async with grpc.aio.insecure_channel(address) as channel:
                allowed = await check(
                    channel, check_request("/api/hello", harness.signed_headers())
                )
                assert allowed.status.code == code_pb2.OK
                denied = await check(channel, check_request("/api/hello"))
                assert denied.denied_response.status.code == 401
        await server.stop()

    run(scenario, timeout=30)


def test_stale_unix_socket_file_is_replaced(harness: GatewayHarness, tmp_path: Path) -> None:
    import socket

    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()

    async def scenario() -> None:
        server = server_for(harness, [f"unix:{path}"])
        await server.start()
        async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
            assert await health(channel) == SERVING
        await server.stop()

    run(scenario, timeout=30)


def test_reflection_lists_the_services(harness: GatewayHarness) -> None:
    address = f"127.0.0.1:{free_port()}"

    async def scenario() -> None:
        server = server_for(harness, [address])
        await server.start()
        async with grpc.aio.insecure_channel(address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            async for response in stub.ServerReflectionInfo(iter([request])):
                names = {s.name for s in response.list_services_response.service}
                assert {AUTHORIZATION_SERVICE, "grpc.health.v1.Health"} <= names
        await server.stop()

    run(scenario, timeout=30)


def test_a_second_gateway_cannot_share_a_port(harness: GatewayHarness) -> None:
    address = f"127.0.0.1:{free_port()}"

    async def scenario() -> None:
        first = server_for(harness, [address])
        await first.start()
        second = server_for(harness, [address])
        with pytest.raises(OSError, match="cannot listen"):
            await second.bind()
        await first.stop()

    run(scenario, timeout=30)


def test_stop_drains_in_flight_checks(harness: GatewayHarness) -> None:
    address = f"127.0.0.1:{free_port()}"

    async def scenario() -> None:
        server = server_for(harness, [address])
        await server.start()
        assert server.gateway is not None

        evaluating = asyncio.Event()

        async def slow(document: dict[str, Any]) -> None:
            evaluating.set()
            await asyncio.sleep(0.5)

        hook_engine(server.gateway.pipeline, slow)
        async with grpc.aio.insecure_channel(address) as channel:
            in_flight = asyncio.ensure_future(
                check(channel, check_request("/api/hello", harness.signed_headers()))
            )
            await evaluating.wait()  # the check is inside the gateway when stop begins
            await server.stop()
            response = await in_flight
            assert response.status.code == code_pb2.OK, "the in-flight check completed"
            with pytest.raises(grpc.aio.AioRpcError):
                await check(channel, check_request("/healthz"))

    run(scenario, timeout=30)


def test_sigterm_stops_the_served_process_cleanly(harness: GatewayHarness, tmp_path: Path) -> None:
    port = free_port()
    config = gateway_config(harness.directory, Ports(443, 1, port, 3))
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "authz", "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20

        async def wait_serving() -> None:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                while time.monotonic() < deadline:
                    try:
                        if await health(channel) == SERVING:
                            return
                    except grpc.aio.AioRpcError:
                        pass
                    await asyncio.sleep(0.1)
                raise TimeoutError("gateway never became SERVING")

        asyncio.run(wait_serving())
        os.kill(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "draining in-flight checks" in output
    assert "stopped" in output


def test_a_bad_configuration_exits_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("server: {listeners: [{address: nowhere}]}\n")
    result = subprocess.run(
        [sys.executable, "-m", "authz", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "server.listeners.0.address" in result.stderr


def test_a_live_unix_socket_is_never_taken_over(harness: GatewayHarness, tmp_path: Path) -> None:
    path = tmp_path / "live.sock"

    async def scenario() -> None:
        first = server_for(harness, [f"unix:{path}"])
        await first.start()
        second = server_for(harness, [f"unix:{path}"])
        with pytest.raises(OSError, match="cannot listen"):
            await second.bind()
        async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
            assert await health(channel) == SERVING, "the first gateway still answers"
        await first.stop()

    run(scenario, timeout=30)
