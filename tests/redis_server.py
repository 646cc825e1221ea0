"""A real redis-server per test (`authz.devtools.redis`): loopback, no persistence, stopped
at the end of the test whatever happens, and put in service (`RedisServer.put_in_service`:
its loss sentinel is a day old, under the default key prefix). A test module uses it with
`pytest_plugins = ("tests.redis_server",)`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.devtools.redis import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running redis-server in service; `stop()` and `start()` it again (same port, its
    records gone) for faults."""
    with RedisServer(tmp_path / "redis") as server:
        server.put_in_service()
        yield server
