"""Helpers for tests that run a `GatewayServer` on this process's event loop and talk to it
over real gRPC: running a scenario, waiting for a condition, reading an answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from google.rpc import code_pb2

from authz.server.app import GatewayServer


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 60) -> None:
    """Run an async scenario, bounded in time."""
    asyncio.run(asyncio.wait_for(scenario(), timeout=timeout))


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    """Wait, without blocking the loop the server runs on, until `condition()` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


def outcome(response: CheckResponse) -> str:
    """`allow`, or the HTTP status Envoy would answer with (`"403"`)."""
    if response.status.code == code_pb2.OK:
        return "allow"
    return str(response.denied_response.status.code)


def reloads(server: GatewayServer, result: str) -> float:
    """How many loads ended with `result` (`success`/`failure`), from the server's metrics."""
    value = server.metrics.registry.get_sample_value(
        "wimse_authz_policy_reloads_total", {"result": result}
    )
    return value or 0.0
