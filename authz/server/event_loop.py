"""The event loop `serve` runs on.

grpc.aio integrates with any asyncio loop; on uvloop (libuv) the same server spends about a
fifth less CPU per Check here (measured with `bench/run.py`'s do-nothing and full-check
setups, side by side), so uvloop is the default. `server.event_loop: asyncio` falls back to
the standard library's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

EventLoopKind = Literal["uvloop", "asyncio"]


def run(main: Coroutine[Any, Any, T], kind: EventLoopKind) -> T:
    """Run `main` to completion on a new loop of `kind`."""
    if kind == "uvloop":
        import uvloop  # noqa: PLC0415 - only when chosen

        return uvloop.run(main)
    return asyncio.run(main)
